//! `outpost streams`: read what sites sent up on an application's topic
//! (once, or followed), and publish records to a down topic.

use anyhow::{Context, Result};
use outpost_api::stream::StoredRecord;

use crate::client::Client;
use crate::telemetry::{Filter, Style, show};

fn record_text(records: &[StoredRecord]) -> String {
    let mut text = String::new();
    for r in records {
        text.push_str(&format!(
            "{} {}/{} #{} {}\n",
            r.produced_at, r.site, r.host, r.seq, r.data
        ));
    }
    text
}

/// Prints a topic's up-records (the newest first page, oldest first), then
/// with `follow` new ones as they arrive.
pub async fn read(
    client: &Client,
    (application, topic): (&str, &str),
    filter: &Filter,
    style: Style,
    follow: bool,
) -> Result<()> {
    let render = |records: &[StoredRecord], first: bool| match records {
        [] if first && !follow => format!("no records on {application}/{topic}\n"),
        _ => record_text(records),
    };
    let fetch = async |after| {
        client
            .stream_records(application, topic, &filter.query(after)?)
            .await
    };
    show(fetch, |r| r.id, render, style, follow).await
}

/// Publishes each non-empty line of `file` (`-`: standard input) as one
/// record of a down topic, to the sites `sites` selects.
pub async fn publish(
    client: &Client,
    (application, topic): (&str, &str),
    sites: Option<&str>,
    file: &str,
) -> Result<String> {
    let body = if file == "-" {
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut body).context("reading standard input")?;
        body
    } else {
        std::fs::read(file).with_context(|| format!("reading {file}"))?
    };
    let published = client.publish(application, topic, sites, body).await?;
    Ok(format!(
        "published {} record(s) to {application}/{topic} (#{}..#{}) for {} site(s): {}\n",
        published.records,
        published.first_seq,
        published.last_seq,
        published.sites.len(),
        published.sites.join(", ")
    ))
}
