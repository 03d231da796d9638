//! Collects what the containers of this host write and queues it for the
//! control plane, every `COLLECT_EVERY`. Bounded per container: at most
//! `MAX_LINES` lines of at most `MAX_LINE` bytes each per collection, the
//! newest kept and the rest counted as skipped, so one chatty container
//! cannot fill the queue or the metered link.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use outpost_api::telemetry::{LogChunk, LogLine, Record, now};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

use crate::outbox::Outbox;
use crate::plan::Observed;
use crate::runtime::Runtime;

pub const COLLECT_EVERY: Duration = Duration::from_secs(10);
/// Lines per container per collection.
const MAX_LINES: usize = 200;
/// Bytes per line; longer lines are cut.
const MAX_LINE: usize = 2048;

fn parse(at: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(at, &Rfc3339).ok()
}

/// Keeps the lines written after `after`, the newest `MAX_LINES` of them,
/// each cut to `MAX_LINE` bytes; returns them and how many were skipped.
fn bound(lines: Vec<LogLine>, after: Option<OffsetDateTime>) -> (Vec<LogLine>, u64) {
    let mut fresh: Vec<LogLine> = lines
        .into_iter()
        .filter(|l| after.is_none_or(|after| parse(&l.at).is_none_or(|at| at > after)))
        .collect();
    let skipped = fresh.len().saturating_sub(MAX_LINES);
    fresh.drain(..skipped);
    for line in &mut fresh {
        if line.text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.text.is_char_boundary(cut) {
                cut -= 1;
            }
            line.text.truncate(cut);
        }
    }
    (fresh, skipped as u64)
}

/// The manifest's name of a container, from its Docker name
/// (`outpost.SITE.INSTANCE.CONTAINER`, with `.next` while it takes over).
fn container_name(docker_name: &str) -> &str {
    let name = docker_name.trim_start_matches('/');
    let name = name.strip_suffix(".next").unwrap_or(name);
    name.rsplit('.').next().unwrap_or(name)
}

fn chunk(o: &Observed, lines: Vec<LogLine>, skipped: u64) -> LogChunk {
    LogChunk {
        at: now(),
        application: o.application.clone(),
        service: o.service.clone(),
        instance: o.instance.clone(),
        container: container_name(&o.name).to_string(),
        lines,
        skipped,
    }
}

/// What the containers of `application` (of `service`, unless empty)
/// wrote since `since` (UNIX seconds), at most `tail` lines each: for an
/// operator asking live.
pub async fn read(
    runtime: &dyn Runtime,
    application: &str,
    service: &str,
    since: i64,
    tail: usize,
) -> anyhow::Result<Vec<LogChunk>> {
    let mut chunks = Vec::new();
    for o in runtime.observe().await? {
        if o.application != application || !(service.is_empty() || o.service == service) {
            continue;
        }
        let lines = runtime.logs(&o.id, since, tail.clamp(1, MAX_LINES * 5)).await?;
        chunks.push(chunk(&o, lines, 0));
    }
    Ok(chunks)
}

/// Runs until `shutdown`. Lines written before the agent started are not
/// collected (they were, by the agent that ran then, or are history).
pub async fn collect(
    runtime: Arc<dyn Runtime>,
    outbox: Arc<dyn Outbox>,
    mut shutdown: watch::Receiver<bool>,
) {
    let started = OffsetDateTime::now_utc();
    // The time of the last line taken from each container.
    let mut taken: HashMap<String, OffsetDateTime> = HashMap::new();
    let mut tick = tokio::time::interval(COLLECT_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let Ok(observed) = runtime.observe().await else {
            continue;
        };
        taken.retain(|id, _| observed.iter().any(|o| &o.id == id));
        let mut records = Vec::new();
        for o in &observed {
            let after = *taken.get(&o.id).unwrap_or(&started);
            // Docker's `since` is whole seconds: ask from the second before
            // and drop what was already taken.
            let lines = match runtime.logs(&o.id, after.unix_timestamp(), MAX_LINES * 5).await {
                Ok(lines) => lines,
                Err(err) => {
                    tracing::debug!(container = %o.name, err = format!("{err:#}"), "cannot read logs");
                    continue;
                }
            };
            let (lines, skipped) = bound(lines, Some(after));
            if let Some(last) = lines.iter().rev().find_map(|l| parse(&l.at)) {
                taken.insert(o.id.clone(), last);
            }
            if lines.is_empty() {
                continue;
            }
            records.push(Record::Log(chunk(o, lines, skipped)));
        }
        if let Err(err) = outbox.push(&records).await {
            tracing::warn!(err = format!("{err:#}"), "cannot queue container logs");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(second: u32, text: &str) -> LogLine {
        LogLine {
            at: format!("2026-11-21T10:00:{second:02}.5Z"),
            stream: "stdout".into(),
            text: text.into(),
        }
    }

    #[test]
    fn container_names_come_from_docker_names() {
        assert_eq!(container_name("/outpost.shop-1.web-www-0.httpd"), "httpd");
        assert_eq!(container_name("outpost.shop-1.web-www-0.httpd.next"), "httpd");
    }

    #[test]
    fn only_new_lines_the_newest_and_cut() {
        let after = parse("2026-11-21T10:00:01.5Z");
        let (kept, skipped) = bound(vec![line(0, "old"), line(1, "taken"), line(2, "new")], after);
        assert_eq!((kept, skipped), (vec![line(2, "new")], 0));

        let many: Vec<LogLine> = (0..MAX_LINES + 50).map(|n| line(5, &n.to_string())).collect();
        let (kept, skipped) = bound(many, None);
        assert_eq!((kept.len(), skipped), (MAX_LINES, 50));
        assert_eq!(kept[0].text, "50", "the newest are kept");

        let long = "é".repeat(MAX_LINE);
        let (kept, _) = bound(vec![line(3, &long)], None);
        assert!(kept[0].text.len() <= MAX_LINE && kept[0].text.starts_with('é'));
    }
}
