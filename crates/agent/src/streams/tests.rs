//! The topic store on a real SQLite file: budgets, drops, the uplink's
//! order, acknowledgements, down-records and consumer offsets, across a
//! reopen.

use outpost_api::workload::{SiteState, Workload};

use super::*;

fn state(streams: serde_json::Value) -> SiteState {
    let workload: Workload = serde_json::from_value(serde_json::json!({
        "application": "pos", "version": "1", "deployment": "d", "service": "till",
        "replicas": 1, "perHost": false, "containers": [], "instances": [],
        "streams": streams,
    }))
    .unwrap();
    SiteState {
        workloads: vec![workload],
        ..Default::default()
    }
}

async fn open(dir: &std::path::Path) -> Streams {
    let store = crate::store::LocalStore::open(&dir.join("agent.db"))
        .await
        .unwrap();
    let streams = Streams::open(store.pool()).await.unwrap();
    streams.configure(&state(serde_json::json!([
        { "name": "receipts", "direction": "up", "retention": "64Ki", "priority": "bulk" },
        { "name": "alarms", "direction": "up", "retention": "64Ki", "priority": "urgent" },
        { "name": "prices", "direction": "down", "retention": "64Ki" },
        { "name": "readings", "direction": "local", "retention": "64Ki" },
    ])));
    streams
}

fn kib(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i:01024}")).collect()
}

#[tokio::test]
async fn a_full_topic_drops_its_oldest_records_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let streams = open(dir.path()).await;
    let receipts = TopicKey::new("pos", "receipts");
    assert_eq!(streams.produce(&receipts, &kib(60)).await.unwrap(), (1, 60));
    assert_eq!(streams.produce(&receipts, &kib(10)).await.unwrap(), (61, 70));
    let status = streams.status(0);
    let topic = status.iter().find(|t| t.topic == "receipts").unwrap();
    assert_eq!(topic.backlog_records, 64);
    assert_eq!(topic.backlog_bytes, 64 << 10);
    assert_eq!((topic.dropped_records, topic.dropped_bytes), (6, 6 << 10));
    // The oldest left is number 7.
    let left = streams.read(&receipts, 0, 1, 1 << 20).await.unwrap();
    assert_eq!(left[0].0, 7);
    assert_eq!(topic.oldest_unsent_ms, Some(left[0].1.at));

    // What was sent is forgotten; the counters survive a reopen.
    streams.acknowledge(&receipts, 10).await.unwrap();
    drop(streams);
    let streams = open(dir.path()).await;
    let status = streams.status(0);
    let topic = status.iter().find(|t| t.topic == "receipts").unwrap();
    assert_eq!((topic.backlog_records, topic.dropped_records), (60, 6));
    assert_eq!(streams.produce(&receipts, &kib(1)).await.unwrap(), (71, 71));
}

#[tokio::test]
async fn urgent_topics_go_first_then_the_oldest_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let streams = open(dir.path()).await;
    assert_eq!(streams.next_up(0), None);
    let (receipts, alarms) = (TopicKey::new("pos", "receipts"), TopicKey::new("pos", "alarms"));
    streams.produce(&receipts, &kib(3)).await.unwrap();
    assert_eq!(streams.next_up(0), Some(receipts.clone()));
    streams.produce(&alarms, &["fire".to_string()]).await.unwrap();
    assert_eq!(streams.next_up(0), Some(alarms.clone()));
    streams.acknowledge(&alarms, 1).await.unwrap();
    assert_eq!(streams.next_up(0), Some(receipts));
    // Local and down topics never go up.
    let readings = TopicKey::new("pos", "readings");
    streams.produce(&readings, &kib(1)).await.unwrap();
    streams
        .acknowledge(&TopicKey::new("pos", "receipts"), 3)
        .await
        .unwrap();
    assert_eq!(streams.next_up(0), None);
}

#[tokio::test]
async fn down_records_are_stored_once_in_order_and_consumers_keep_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let streams = open(dir.path()).await;
    let prices = TopicKey::new("pos", "prices");
    let item = |data: &str| Item {
        at: 1,
        data: data.to_string(),
    };
    let first = vec![(2, item("a")), (5, item("b"))];
    assert_eq!(streams.receive(&prices, &first).await.unwrap(), 5);
    // A resent batch stores nothing twice.
    let again = vec![(5, item("b")), (9, item("c"))];
    assert_eq!(streams.receive(&prices, &again).await.unwrap(), 9);
    let held: Vec<u64> = streams
        .read(&prices, 0, 100, 1 << 20)
        .await
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(held, [2, 5, 9]);

    assert_eq!(streams.offset(&prices, "pricer").await.unwrap(), 1);
    streams.commit(&prices, "pricer", 6).await.unwrap();
    assert_eq!(streams.offset(&prices, "pricer").await.unwrap(), 6);
    let rest = streams.read(&prices, 6, 100, 1 << 20).await.unwrap();
    assert_eq!(rest, [(9, item("c"))]);
}

#[tokio::test]
async fn an_undeclared_topic_takes_no_records() {
    let dir = tempfile::tempdir().unwrap();
    let streams = open(dir.path()).await;
    assert!(streams.declared(&TopicKey::new("pos", "nothing")).is_none());
    assert!(
        streams
            .produce(&TopicKey::new("pos", "nothing"), &kib(1))
            .await
            .is_err()
    );
    assert_eq!(
        streams.declared(&TopicKey::new("pos", "prices")),
        Some(Direction::Down)
    );
}
