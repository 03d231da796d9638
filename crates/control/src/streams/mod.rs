//! Application event streams at the centre. A host's session hands its
//! up batches here (stored once per host, topic and sequence number, then
//! acknowledged), and asks here for the down-records its site has not
//! stored yet; an operator's publish numbers down-records for the sites
//! that run the application; `nats.rs` hands every stored up-record to
//! NATS JetStream when `--streams-nats` asks for it.

pub mod nats;

use std::collections::BTreeSet;

use outpost_api::Selector;
use outpost_api::manifest::Kind;
use outpost_api::stream::{Direction, Published};
use outpost_api::workload::SiteState;
use outpost_proto::codec;
use outpost_proto::v1::{StreamAck, StreamBatch};
use tokio::sync::watch;

use crate::secrets::Secrets;
use crate::store::{Storage, StoreError};

/// The most down-records one batch carries.
const DOWN_BATCH: i64 = 1000;

/// What sessions, readers and the NATS forwarder wait on.
#[derive(Debug)]
pub struct Signals {
    /// The id of the newest up-record stored (0 until one is).
    stored: watch::Sender<i64>,
    /// Bumped on every publish.
    published: watch::Sender<u64>,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            stored: watch::channel(0).0,
            published: watch::channel(0).0,
        }
    }
}

impl Signals {
    pub fn stored(&self) -> watch::Receiver<i64> {
        self.stored.subscribe()
    }

    pub fn published(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }
}

/// Why a batch from an agent was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("sealing records under their tenant's key: {0:#}")]
    Seal(anyhow::Error),
}

/// An application owner's records are stored sealed under its tenant's key.
async fn seal(
    secrets: &Secrets,
    application: &str,
    topic: &str,
    records: &mut [(u64, outpost_api::stream::Item)],
) -> Result<(), Refused> {
    let context = crate::secrets::stream_context(application, topic);
    for (_, item) in records {
        item.data = secrets
            .seal_text(application, &context, &item.data)
            .await
            .map_err(Refused::Seal)?;
    }
    Ok(())
}

/// Whether the site's state declares `topic` of `application` in `direction`.
fn declares(state: &SiteState, application: &str, topic: &str, direction: Direction) -> bool {
    state
        .workloads
        .iter()
        .filter(|w| w.application == application)
        .flat_map(|w| &w.streams)
        .any(|t| t.name.as_str() == topic && t.direction == direction)
}

/// Stores an up batch from a host; returns the acknowledgement. Records of
/// a topic the site's state does not declare as up (an application since
/// removed, or a host that lies) are acknowledged and not stored, with a
/// warning: an agent must not resend them forever.
pub async fn accept_up(
    store: &dyn Storage,
    secrets: &Secrets,
    signals: &Signals,
    state: &SiteState,
    (site, host): (&str, &str),
    batch: &StreamBatch,
) -> Result<StreamAck, Refused> {
    let mut records = codec::decode_stream_batch(batch)?;
    let (application, topic) = (&batch.application, &batch.topic);
    let through_seq = if declares(state, application, topic, Direction::Up) {
        seal(secrets, application, topic, &mut records).await?;
        let (through, new) = store
            .store_stream(site, host, application, topic, &records)
            .await?;
        if new > 0 {
            signals.stored.send_modify(|n| *n += 1);
        }
        through
    } else {
        tracing::warn!(%site, %host, %application, %topic, records = records.len(), "dropped records of a topic the site does not declare as up");
        records.last().map_or(0, |(seq, _)| *seq)
    };
    Ok(StreamAck {
        application: application.clone(),
        topic: topic.clone(),
        through_seq,
    })
}

/// The next down-records for a host: the first down topic of its site's
/// applications with records it has not stored.
pub async fn next_down(
    store: &dyn Storage,
    secrets: &Secrets,
    state: &SiteState,
    (site, host): (&str, &str),
) -> Result<Option<StreamBatch>, Refused> {
    let topics: BTreeSet<(&str, &str)> = state
        .workloads
        .iter()
        .flat_map(|w| {
            w.streams
                .iter()
                .filter(|t| t.direction == Direction::Down)
                .map(|t| (w.application.as_str(), t.name.as_str()))
        })
        .collect();
    for (application, topic) in topics {
        let mut records = store
            .down_records(site, host, application, topic, DOWN_BATCH)
            .await?;
        let context = crate::secrets::stream_context(application, topic);
        for (_, item) in &mut records {
            item.data = secrets.open_text(application, &context, &item.data).await;
        }
        if !records.is_empty() {
            return Ok(Some(codec::encode_stream_batch(application, topic, &records)?));
        }
    }
    Ok(None)
}

/// A host stored down-records through the acknowledged number.
pub async fn delivered(
    store: &dyn Storage,
    (site, host): (&str, &str),
    ack: &StreamAck,
) -> Result<(), StoreError> {
    store
        .record_delivered(site, host, &ack.application, &ack.topic, ack.through_seq)
        .await
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Publishes records to a down topic for every site that `sites` selects
/// and that runs the application with that topic (each receives them now,
/// or when it comes back).
pub async fn publish(
    store: &dyn Storage,
    secrets: &Secrets,
    signals: &Signals,
    (application, topic): (&str, &str),
    sites: &Selector,
    data: &[String],
    actor: &str,
) -> Result<Published, PublishError> {
    if store.get(Kind::Application, application).await?.is_none() {
        return Err(StoreError::NotFound {
            kind: Kind::Application,
            name: application.to_string(),
        }
        .into());
    }
    let labels: std::collections::HashMap<String, std::collections::BTreeMap<String, String>> = store
        .list(Kind::Site)
        .await?
        .into_iter()
        .map(|site| (site.metadata.name, site.metadata.labels))
        .collect();
    let selected: Vec<String> = store
        .site_states()
        .await?
        .into_iter()
        .filter(|(site, (_, state))| {
            declares(state, application, topic, Direction::Down)
                && labels.get(site).is_some_and(|labels| sites.matches(labels))
        })
        .map(|(site, _)| site)
        .collect();
    if selected.is_empty() {
        return Err(PublishError::Invalid(format!(
            "no selected site runs application {application:?} with a down topic {topic:?}"
        )));
    }
    let context = crate::secrets::stream_context(application, topic);
    let mut sealed = Vec::with_capacity(data.len());
    for record in data {
        sealed.push(
            secrets
                .seal_text(application, &context, record)
                .await
                .map_err(|err| PublishError::Invalid(format!("{err:#}")))?,
        );
    }
    let published = store
        .publish_stream(application, topic, &selected, &sealed, actor)
        .await?;
    signals.published.send_modify(|n| *n += 1);
    Ok(published)
}
