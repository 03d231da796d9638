//! The control plane's periodic work: stepping rollouts, retention
//! pruning and scheduled site-key rotation (on the leader only), and
//! writing down what sessions heard (on every replica).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::Retention;
use crate::fleet::Fleet;
use crate::store::Storage;

/// How often records past their retention are deleted.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The rollout engine: one step of every running rollout each second,
/// while this control plane leads.
pub(crate) async fn run_rollouts(
    fleet: Arc<Fleet>,
    leading: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !*leading.borrow() {
                    continue;
                }
                if let Err(err) = fleet.advance().await {
                    tracing::warn!(%err, "rollout step failed; trying again");
                }
            }
            () = &mut shutdown => return,
        }
    }
}

/// How often heartbeats and bytes counted are written down.
const WRITE_HEARD_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes down, every `WRITE_HEARD_EVERY` and in one transaction, which
/// hosts sent a heartbeat and the bytes their sessions carried: heartbeats
/// never write to the store one by one.
pub(crate) async fn write_heard(
    store: Arc<dyn Storage>,
    fleet: Arc<Fleet>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(WRITE_HEARD_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut shutdown => return,
        }
        let heard = fleet.presence.take_heard();
        if let Err(err) = store.record_heard(&heard).await {
            tracing::warn!(
                err = err.detail(),
                "writing down the hosts' heartbeats and bytes; trying again"
            );
            fleet.presence.keep_heard(heard);
        }
    }
}

/// Deletes events, logs, metrics and stream records past their retention,
/// every `PRUNE_EVERY` while this control plane leads (at once when it
/// starts leading).
pub(crate) async fn prune(
    store: Arc<dyn Storage>,
    retention: Retention,
    mut leading: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Ok(()) = leading.changed() => tick.reset_immediately(),
            () = &mut shutdown => return,
        }
        if !*leading.borrow_and_update() {
            continue;
        }
        let before = |keep: std::time::Duration| {
            (time::OffsetDateTime::now_utc() - keep)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        match store
            .prune(
                &before(retention.events),
                &before(retention.logs),
                &before(retention.metrics),
            )
            .await
        {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(
                deleted,
                "deleted events, log lines and samples past their retention"
            ),
            Err(err) => {
                tracing::warn!(%err, "deleting records past their retention failed; trying again later")
            }
        }
        let streams_before = std::time::SystemTime::now()
            .checked_sub(retention.streams)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        match store.prune_streams(streams_before).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted stream records past their retention"),
            Err(err) => {
                tracing::warn!(%err, "deleting stream records past their retention failed; trying again later")
            }
        }
    }
}

/// How often the schedule of `--site-key-rotation` is looked at.
const ROTATION_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Rotates the underlay keys of each site whose last rotation is `every`
/// old (`--site-key-rotation`), gracefully: the old keys work until every
/// host has new ones.
pub(crate) async fn rotate_site_keys(
    store: Arc<dyn Storage>,
    fleet: Arc<Fleet>,
    every: std::time::Duration,
    leading: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(ROTATION_CHECK_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !*leading.borrow() {
                    continue;
                }
                let now = time::OffsetDateTime::now_utc();
                let keys = match store.site_keys().await {
                    Ok(keys) => keys,
                    Err(err) => {
                        tracing::warn!(%err, "reading the sites' keys for their rotation; trying again later");
                        continue;
                    }
                };
                for (site, keys) in keys {
                    let rotated = time::OffsetDateTime::parse(
                        &keys.rotated_at,
                        &time::format_description::well_known::Rfc3339,
                    );
                    if rotated.is_ok_and(|at| now - at < every) {
                        continue;
                    }
                    match store.rotate_site_keys(&site, false, now).await {
                        Ok(keys) => tracing::info!(%site, epoch = keys.epoch, "rotating the site's underlay keys on schedule"),
                        Err(err) => {
                            tracing::warn!(%site, %err, "rotating the site's underlay keys; trying again later");
                            continue;
                        }
                    }
                    if let Err(err) = fleet.recompute_site(&site).await {
                        tracing::warn!(%site, %err, "recomputing the site after its keys changed");
                    }
                }
            }
            () = &mut shutdown => return,
        }
    }
}
