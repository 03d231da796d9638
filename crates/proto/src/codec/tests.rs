//! Round trips of every payload, and property tests of the decoders
//! (issue 11: what comes off the wire decodes or is refused, never panics).

use proptest::prelude::*;

use super::*;

fn workload(service: &str, version: &str) -> Workload {
    serde_json::from_value(serde_json::json!({
        "application": "a", "version": version, "deployment": "d", "service": service,
        "replicas": 1, "perHost": false, "containers": [], "instances": []
    }))
    .unwrap()
}

fn state(workloads: Vec<Workload>) -> SiteState {
    SiteState {
        workloads,
        ..Default::default()
    }
}

#[test]
fn full_then_deltas_round_trip() {
    let v1 = state(vec![workload("web", "1"), workload("db", "1")]);
    let full = full_manifest(3, &v1).unwrap();
    let held = apply_manifest((0, &SiteState::default()), &full).unwrap();
    assert_eq!(held.workloads.len(), 2);

    let v2 = state(vec![workload("web", "2")]);
    let delta = delta_manifest(3, &v1, 4, &v2).unwrap();
    assert_eq!(
        (delta.workloads.len(), delta.removed.as_slice()),
        (1, &["a/db".to_string()][..])
    );
    assert_eq!(apply_manifest((3, &held), &delta).unwrap(), v2);

    // Unchanged workloads do not travel.
    let same = delta_manifest(4, &v2, 5, &v2).unwrap();
    assert!(same.workloads.is_empty() && same.removed.is_empty());

    let err = apply_manifest((9, &v2), &delta).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the update is based on revision 3, this agent holds 9"
    );
}

fn chunk(line: &str) -> LogChunk {
    LogChunk {
        at: "2026-12-02T10:00:00Z".to_string(),
        application: "a".to_string(),
        service: "s".to_string(),
        instance: "a-s-0".to_string(),
        container: "c".to_string(),
        lines: vec![serde_json::from_value(serde_json::json!({"stream": "stdout", "text": line})).unwrap()],
        skipped: 0,
    }
}

#[test]
fn batches_round_trip_and_refuse_what_they_are_not() {
    let sent = vec![Record::Log(chunk("one")), Record::Log(chunk("two"))];
    let records: Vec<String> = sent.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
    let batch = encode_batch(7, &records, 3).unwrap();
    assert_eq!((batch.first_seq, batch.count, batch.dropped), (7, 2, 3));
    assert_eq!(decode_batch(&batch).unwrap(), sent);
    let wrong_count = Batch {
        count: 5,
        ..batch.clone()
    };
    assert!(matches!(
        decode_batch(&encode_batch(7, &[], 0).unwrap()),
        Ok(records) if records.is_empty()
    ));
    let empty_but_says_five = Batch {
        records: encode_batch(7, &[], 0).unwrap().records,
        ..wrong_count
    };
    assert_eq!(
        decode_batch(&empty_but_says_five).unwrap_err().to_string(),
        "batch 7 says 5 records and holds 0"
    );
    let not_deflate = Batch {
        records: b"plain".to_vec(),
        ..batch.clone()
    };
    assert!(matches!(
        decode_batch(&not_deflate),
        Err(CodecError::NotDeflate { first_seq: 7, .. })
    ));
    let zero = Batch {
        first_seq: 0,
        ..batch
    };
    assert!(matches!(decode_batch(&zero), Err(CodecError::ZeroSequence)));
}

#[test]
fn a_compression_bomb_is_refused_at_its_bound() {
    let zeros = vec![b' '; (MAX_BATCH_INFLATED + 10) as usize];
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&zeros).unwrap();
    let batch = Batch {
        first_seq: 1,
        count: 0,
        records: encoder.finish().unwrap(),
        dropped: 0,
    };
    assert!(batch.records.len() < 100_000);
    assert!(matches!(
        decode_batch(&batch),
        Err(CodecError::TooLarge { first_seq: 1 })
    ));
}

#[test]
fn log_replies_round_trip() {
    let reply = encode_log_reply(4, Ok(vec![chunk("hello")]));
    assert_eq!(reply.id, 4);
    assert_eq!(decode_log_reply(&reply).unwrap(), vec![chunk("hello")]);
    let failed = encode_log_reply(5, Err("no such application".to_string()));
    assert_eq!(decode_log_reply(&failed).unwrap_err(), "no such application");
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

proptest! {
    /// A batch from the wire, deflated or not, JSON or not, decodes to
    /// records or to an error naming the batch.
    #[test]
    fn any_batch_decodes_or_is_refused_by_number(
        raw in prop::collection::vec(any::<u8>(), 0..400),
        json in "\\[(\\{\"[a-z]{1,5}\":(1|\"x\"|null|\\[\\]|\\{\\})\\},?){0,8}\\]",
        deflated in any::<bool>(),
        first_seq in 0u64..5,
        count in 0u32..10,
    ) {
        let records = if deflated { deflate(json.as_bytes()) } else { raw };
        let batch = Batch { first_seq, count, records, dropped: 0 };
        if let Err(why) = decode_batch(&batch) {
            let why = why.to_string();
            prop_assert!(why.contains(&format!("batch {first_seq}")) || why.contains("start at 1"), "{why}");
        }
    }

    /// A stream batch from the wire decodes to numbered records or to an
    /// error naming its topic.
    #[test]
    fn any_stream_batch_decodes_or_is_refused(
        raw in prop::collection::vec(any::<u8>(), 0..400),
        json in "\\[(\\{\"(at|data)\":(1|\"x\"|null)(,\"data\":\"y\")?\\},?){0,6}\\]",
        deflated in any::<bool>(),
        seqs in prop::collection::vec(0u64..6, 0..6),
        topic in "[a-z./]{0,6}",
    ) {
        let records = if deflated { deflate(json.as_bytes()) } else { raw };
        let batch = StreamBatch { application: "pos".into(), topic: topic.clone(), seqs, records };
        if let Err(why) = decode_stream_batch(&batch) {
            let why = why.to_string();
            prop_assert!(why.starts_with(&format!("stream batch pos/{topic}")), "{why}");
        }
    }

    #[test]
    fn any_log_reply_decodes_or_is_refused(chunks in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_log_reply(&LogReply { id: 1, chunks, error: String::new() });
    }

    /// A manifest with arbitrary workload bytes is applied or refused, and
    /// what the agent holds is never changed by it.
    #[test]
    fn any_manifest_is_applied_or_refused(
        workloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..4),
        removed in prop::collection::vec("[a-z/]{0,8}", 0..3),
        full in any::<bool>(),
        base in 0u64..3,
    ) {
        let held = state(vec![workload("web", "1")]);
        let manifest = SiteManifest { revision: 2, base_revision: base, full, workloads, removed, ..Default::default() };
        let before = held.clone();
        let _ = apply_manifest((1, &held), &manifest);
        prop_assert_eq!(held, before);
    }
}

#[test]
fn stream_batches_round_trip_and_bad_ones_are_refused() {
    let item = |data: &str| Item {
        at: 7,
        data: data.to_string(),
    };
    let records = vec![(3, item("a")), (9, item("{\"b\":1}"))];
    let batch = encode_stream_batch("pos", "receipts", &records).unwrap();
    assert_eq!(decode_stream_batch(&batch).unwrap(), records);

    let refused = |batch: &StreamBatch| decode_stream_batch(batch).unwrap_err().to_string();
    let mut falling = batch.clone();
    falling.seqs = vec![9, 3];
    assert!(refused(&falling).contains("rise from 1"), "{}", refused(&falling));
    let mut zero = batch.clone();
    zero.seqs = vec![0, 3];
    assert!(refused(&zero).contains("rise from 1"));
    let mut short = batch.clone();
    short.seqs = vec![3];
    assert!(refused(&short).contains("1 sequence numbers for 2 records"));
    let mut named = batch.clone();
    named.topic = "../x".to_string();
    assert!(refused(&named).starts_with("stream batch pos/../x"));
    let mut garbage = batch;
    garbage.records = b"not deflate".to_vec();
    assert!(refused(&garbage).contains("receipts"));
}
