//! Hands every stored up-record to NATS JetStream (`--streams-nats URL`),
//! on subject `outpost.APPLICATION.TOPIC.SITE`, in the order they were
//! stored, after they were stored. How far it got is kept in the store
//! (`stream_forwarded`) and moves only after JetStream acknowledged; each
//! message carries a `Nats-Msg-Id` of its host, topic and sequence number,
//! so a record handed over again after a crash is dropped by JetStream's
//! duplicate window. NATS being down holds the hand-over, never the
//! agents: records wait in the store.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use outpost_api::stream::StoredRecord;
use tokio::sync::watch;

use super::Signals;
use crate::store::Storage;

/// The stream created for Outpost's subjects when none captures them.
pub const STREAM: &str = "OUTPOST";
/// Records handed over per round.
const ROUND: i64 = 500;
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The subject a record goes to.
pub fn subject(record: &StoredRecord) -> String {
    format!("outpost.{}.{}.{}", record.application, record.topic, record.site)
}

/// Forwards until `shutdown`, reconnecting with backoff.
pub async fn forward(
    url: String,
    store: Arc<dyn Storage>,
    secrets: Arc<crate::secrets::Secrets>,
    signals: Arc<Signals>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = RETRY_MIN;
    loop {
        let result = tokio::select! {
            result = forward_once(&url, store.as_ref(), &secrets, &signals, &mut delay) => result,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        if let Err(err) = result {
            tracing::warn!(%url, err = format!("{err:#}"), "handing stream records to NATS failed; records wait in the store");
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

async fn forward_once(
    url: &str,
    store: &dyn Storage,
    secrets: &crate::secrets::Secrets,
    signals: &Signals,
    delay: &mut Duration,
) -> anyhow::Result<()> {
    let client = async_nats::ConnectOptions::new()
        .name("outpost-control")
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await?;
    let js = jetstream::new(client);
    let captured = js
        .get_or_create_stream(jetstream::stream::Config {
            name: STREAM.to_string(),
            subjects: vec!["outpost.>".to_string()],
            ..Default::default()
        })
        .await;
    if let Err(err) = captured {
        // Another stream may capture the subjects already; publishing says.
        tracing::info!(%err, "not creating the OUTPOST stream");
    }
    tracing::info!(%url, "handing stream records to NATS JetStream");
    let mut stored = signals.stored();
    loop {
        stored.borrow_and_update();
        let through = store.forwarded().await?;
        let records = store.stream_records_after(through, ROUND).await?;
        let Some(last) = records.last().map(|r| r.id) else {
            stored.changed().await?;
            continue;
        };
        let mut acks = Vec::with_capacity(records.len());
        for record in &records {
            let mut headers = async_nats::HeaderMap::new();
            let id = format!(
                "{}.{}.{}.{}.{}",
                record.site, record.host, record.application, record.topic, record.seq
            );
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert("Outpost-Host", record.host.as_str());
            headers.insert("Outpost-Seq", record.seq.to_string().as_str());
            headers.insert("Outpost-Produced-At", record.produced_at.as_str());
            // Consumers get records in clear, as they were produced.
            let context = crate::secrets::stream_context(&record.application, &record.topic);
            let data = secrets
                .open_text(&record.application, &context, &record.data)
                .await;
            let ack = js
                .publish_with_headers(subject(record), headers, data.into())
                .await?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await?;
        }
        store.record_forwarded(last).await?;
        *delay = RETRY_MIN;
    }
}
