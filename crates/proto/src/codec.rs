//! What the protocol's messages carry, encoded and decoded in one place so
//! that the agent and the gateway cannot drift apart: site manifests (full,
//! or the delta from a base revision), batches of queued records (a
//! deflated JSON array), log replies, and the timing both ends share.
//! An encoding that fails is an error, never empty bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::Duration;

use outpost_api::telemetry::{LogChunk, Record};
use outpost_api::wire::ClusterStatus;
use outpost_api::workload::{SiteState, Workload};

use outpost_api::stream::{Item, MAX_RECORD_BYTES, TopicStatus};

use crate::v1::{Batch, ClusterReport, LogReply, SiteManifest, StreamBatch, StreamReport};

/// How often each side says it is alive: rarely, since idle traffic is what
/// a metered link pays for (see BENCHMARKS.md).
pub const HEARTBEAT: Duration = Duration::from_secs(120);
/// How often HTTP/2 pings probe a quiet connection.
pub const KEEPALIVE: Duration = Duration::from_secs(300);
/// The most a batch may inflate to: a bound against compression bombs,
/// well above what an agent sends (512 KiB before compression).
pub const MAX_BATCH_INFLATED: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("a workload in the manifest is not readable")]
    Workload(#[source] serde_json::Error),
    #[error("the update is based on revision {base}, this agent holds {held}")]
    WrongBase { base: u64, held: u64 },
    #[error("batch {first_seq} is not deflate data")]
    NotDeflate {
        first_seq: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("batch {first_seq} inflates past {MAX_BATCH_INFLATED} bytes")]
    TooLarge { first_seq: u64 },
    #[error("batch {first_seq} holds an unreadable record")]
    Record {
        first_seq: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("batch {first_seq} says {said} records and holds {held}")]
    Count { first_seq: u64, said: u32, held: usize },
    #[error("batch sequence numbers start at 1")]
    ZeroSequence,
    #[error("stream batch {topic}: {why}")]
    Stream { topic: String, why: String },
    #[error("the cluster report is not readable: {0}")]
    Cluster(String),
}

fn encode_workload(workload: &Workload) -> Result<Vec<u8>, CodecError> {
    serde_json::to_vec(workload).map_err(|err| CodecError::Encode {
        what: "a workload",
        source: err.into(),
    })
}

/// The whole state of a site at `revision`.
pub fn full_manifest(revision: u64, state: &SiteState) -> Result<SiteManifest, CodecError> {
    Ok(SiteManifest {
        revision,
        base_revision: 0,
        full: true,
        workloads: state
            .workloads
            .iter()
            .map(encode_workload)
            .collect::<Result<_, _>>()?,
        removed: Vec::new(),
        secrets: Vec::new(),
        staged: encode_staged(state)?,
        peers: encode_peers(state),
        host_loss_after_ms: state.host_loss_after_ms,
        key_epochs: state.key_epochs.clone(),
        // Signed by the control plane, which holds the key.
        head: Vec::new(),
        head_signature: Vec::new(),
    })
}

fn encode_peers(state: &SiteState) -> Vec<crate::v1::Peer> {
    state
        .peers
        .iter()
        .map(|p| crate::v1::Peer {
            host: p.host.clone(),
            address: p.address.clone(),
            labels: p.labels.clone().into_iter().collect(),
        })
        .collect()
}

/// The staged workloads travel whole in every manifest: they are few, and
/// live only while a rollout pre-stages.
fn encode_staged(state: &SiteState) -> Result<Vec<Vec<u8>>, CodecError> {
    state.staged.iter().map(encode_workload).collect()
}

/// What changed from `base` (`previous`) to `revision` (`state`): the
/// workloads that are new or differ, and the keys of those removed.
pub fn delta_manifest(
    base: u64,
    previous: &SiteState,
    revision: u64,
    state: &SiteState,
) -> Result<SiteManifest, CodecError> {
    let before: BTreeMap<String, &Workload> = previous.workloads.iter().map(|w| (w.key(), w)).collect();
    let after: BTreeMap<String, &Workload> = state.workloads.iter().map(|w| (w.key(), w)).collect();
    Ok(SiteManifest {
        revision,
        base_revision: base,
        full: false,
        workloads: after
            .iter()
            .filter(|(key, w)| before.get(*key) != Some(*w))
            .map(|(_, w)| encode_workload(w))
            .collect::<Result<_, _>>()?,
        removed: before
            .keys()
            .filter(|key| !after.contains_key(*key))
            .cloned()
            .collect(),
        secrets: Vec::new(),
        staged: encode_staged(state)?,
        peers: encode_peers(state),
        host_loss_after_ms: state.host_loss_after_ms,
        key_epochs: state.key_epochs.clone(),
        // Signed by the control plane, which holds the key.
        head: Vec::new(),
        head_signature: Vec::new(),
    })
}

/// The secret versions a manifest taking an agent from `previous` (none: a
/// full manifest) to `state` must carry: those `state` refers to that
/// `previous` did not. The agent keeps every version its state refers to.
pub fn secrets_to_send(previous: Option<&SiteState>, state: &SiteState) -> BTreeSet<(String, u64)> {
    let held = previous.map(secret_versions).unwrap_or_default();
    secret_versions(state).difference(&held).cloned().collect()
}

/// Every secret version a state refers to (a staged workload's pull
/// secret included).
pub fn secret_versions(state: &SiteState) -> BTreeSet<(String, u64)> {
    state
        .workloads
        .iter()
        .chain(&state.staged)
        .flat_map(|w| w.secrets.iter().map(|(name, version)| (name.clone(), *version)))
        .collect()
}

/// The state a manifest makes of the one held at `current`; a delta must be
/// based on exactly that revision. What is held is never changed.
pub fn apply_manifest(current: (u64, &SiteState), manifest: &SiteManifest) -> Result<SiteState, CodecError> {
    let mut workloads: BTreeMap<String, Workload> = if manifest.full {
        BTreeMap::new()
    } else {
        if manifest.base_revision != current.0 {
            return Err(CodecError::WrongBase {
                base: manifest.base_revision,
                held: current.0,
            });
        }
        current.1.workloads.iter().map(|w| (w.key(), w.clone())).collect()
    };
    for bytes in &manifest.workloads {
        let workload: Workload = serde_json::from_slice(bytes).map_err(CodecError::Workload)?;
        workloads.insert(workload.key(), workload);
    }
    for key in &manifest.removed {
        workloads.remove(key);
    }
    let staged = manifest
        .staged
        .iter()
        .map(|bytes| serde_json::from_slice(bytes).map_err(CodecError::Workload))
        .collect::<Result<_, _>>()?;
    Ok(SiteState {
        workloads: workloads.into_values().collect(),
        failures: Vec::new(),
        staged,
        peers: manifest
            .peers
            .iter()
            .map(|p| outpost_api::workload::Peer {
                host: p.host.clone(),
                address: p.address.clone(),
                labels: p.labels.clone().into_iter().collect(),
            })
            .collect(),
        host_loss_after_ms: manifest.host_loss_after_ms,
        key_epochs: manifest.key_epochs.clone(),
    })
}

/// A batch of queued records, each already JSON, numbered from `first_seq`.
pub fn encode_batch(first_seq: u64, records: &[String], dropped: u64) -> Result<Batch, CodecError> {
    let deflate = || -> std::io::Result<Vec<u8>> {
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"[")?;
        for (i, record) in records.iter().enumerate() {
            if i > 0 {
                encoder.write_all(b",")?;
            }
            encoder.write_all(record.as_bytes())?;
        }
        encoder.write_all(b"]")?;
        encoder.finish()
    };
    Ok(Batch {
        first_seq,
        count: records.len() as u32,
        records: deflate().map_err(|source| CodecError::Encode {
            what: "a batch",
            source,
        })?,
        dropped,
    })
}

/// The records of a batch, or why it cannot be read.
pub fn decode_batch(batch: &Batch) -> Result<Vec<Record>, CodecError> {
    let first_seq = batch.first_seq;
    if first_seq == 0 {
        return Err(CodecError::ZeroSequence);
    }
    let mut json = Vec::new();
    flate2::read::DeflateDecoder::new(batch.records.as_slice())
        .take(MAX_BATCH_INFLATED + 1)
        .read_to_end(&mut json)
        .map_err(|source| CodecError::NotDeflate { first_seq, source })?;
    if json.len() as u64 > MAX_BATCH_INFLATED {
        return Err(CodecError::TooLarge { first_seq });
    }
    let records: Vec<Record> =
        serde_json::from_slice(&json).map_err(|source| CodecError::Record { first_seq, source })?;
    if records.len() != batch.count as usize {
        return Err(CodecError::Count {
            first_seq,
            said: batch.count,
            held: records.len(),
        });
    }
    Ok(records)
}

/// Records of one topic, each with its sequence number, oldest first.
pub fn encode_stream_batch(
    application: &str,
    topic: &str,
    records: &[(u64, Item)],
) -> Result<StreamBatch, CodecError> {
    let items: Vec<&Item> = records.iter().map(|(_, item)| item).collect();
    let deflate = || -> std::io::Result<Vec<u8>> {
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        serde_json::to_writer(&mut encoder, &items)?;
        encoder.finish()
    };
    Ok(StreamBatch {
        application: application.to_string(),
        topic: topic.to_string(),
        seqs: records.iter().map(|(seq, _)| *seq).collect(),
        records: deflate().map_err(|source| CodecError::Encode {
            what: "a stream batch",
            source,
        })?,
    })
}

/// The records of a stream batch with their sequence numbers, or why it
/// cannot be read: its names must be names, its numbers must rise from 1
/// up, and each record must fit `MAX_RECORD_BYTES`.
pub fn decode_stream_batch(batch: &StreamBatch) -> Result<Vec<(u64, Item)>, CodecError> {
    let topic = format!("{}/{}", batch.application, batch.topic);
    let refuse = |why: String| CodecError::Stream {
        topic: topic.clone(),
        why,
    };
    for name in [&batch.application, &batch.topic] {
        name.parse::<outpost_api::manifest::Name>().map_err(&refuse)?;
    }
    if batch.seqs.first() == Some(&0) || batch.seqs.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(refuse("sequence numbers must rise from 1".to_string()));
    }
    let mut json = Vec::new();
    flate2::read::DeflateDecoder::new(batch.records.as_slice())
        .take(MAX_BATCH_INFLATED + 1)
        .read_to_end(&mut json)
        .map_err(|err| refuse(format!("not deflate data: {err}")))?;
    if json.len() as u64 > MAX_BATCH_INFLATED {
        return Err(refuse(format!("inflates past {MAX_BATCH_INFLATED} bytes")));
    }
    let items: Vec<Item> =
        serde_json::from_slice(&json).map_err(|err| refuse(format!("unreadable records: {err}")))?;
    if items.len() != batch.seqs.len() {
        return Err(refuse(format!(
            "{} sequence numbers for {} records",
            batch.seqs.len(),
            items.len()
        )));
    }
    if let Some(large) = items.iter().find(|item| item.data.len() > MAX_RECORD_BYTES) {
        return Err(refuse(format!(
            "a record of {} bytes (at most {MAX_RECORD_BYTES})",
            large.data.len()
        )));
    }
    Ok(batch.seqs.iter().copied().zip(items).collect())
}

/// An agent's topics as it reports them.
pub fn encode_stream_report(topics: &[TopicStatus]) -> Result<StreamReport, CodecError> {
    Ok(StreamReport {
        topics: serde_json::to_vec(topics).map_err(|err| CodecError::Encode {
            what: "a stream report",
            source: err.into(),
        })?,
    })
}

/// The topics of a stream report; an unreadable one is refused whole.
pub fn decode_stream_report(report: &StreamReport) -> Result<Vec<TopicStatus>, CodecError> {
    serde_json::from_slice(&report.topics).map_err(|err| CodecError::Stream {
        topic: "report".to_string(),
        why: err.to_string(),
    })
}

pub fn encode_cluster_report(status: &ClusterStatus) -> Result<ClusterReport, CodecError> {
    Ok(ClusterReport {
        status: serde_json::to_vec(status).map_err(|err| CodecError::Encode {
            what: "a cluster report",
            source: err.into(),
        })?,
    })
}

/// A host's view of its site cluster; an unreadable one is refused whole.
pub fn decode_cluster_report(report: &ClusterReport) -> Result<ClusterStatus, CodecError> {
    serde_json::from_slice(&report.status).map_err(|err| CodecError::Cluster(err.to_string()))
}

/// The answer to log request `id`: the chunks, or why they could not be read.
pub fn encode_log_reply(id: u64, chunks: Result<Vec<LogChunk>, String>) -> LogReply {
    let encoded = chunks.and_then(|chunks| {
        serde_json::to_vec(&chunks).map_err(|err| format!("encoding the log reply: {err}"))
    });
    match encoded {
        Ok(chunks) => LogReply {
            id,
            chunks,
            error: String::new(),
        },
        Err(error) => LogReply {
            id,
            chunks: Vec::new(),
            error,
        },
    }
}

/// The chunks of a log reply, or the agent's own reason it has none.
pub fn decode_log_reply(reply: &LogReply) -> Result<Vec<LogChunk>, String> {
    if !reply.error.is_empty() {
        return Err(reply.error.clone());
    }
    serde_json::from_slice(&reply.chunks).map_err(|err| format!("the agent's log reply is unreadable: {err}"))
}

#[cfg(test)]
mod tests;
