//! `outpost events` and `outpost logs`: what sites reported, read from the
//! control plane, once or followed.

use std::time::Duration;

use anyhow::Result;
use outpost_api::telemetry::{StoredEvent, StoredLogLine};

use crate::client::Client;
use crate::output::{self, Table};

/// How often `--follow` asks for more.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// What to read: the filters of `outpost events` and `outpost logs`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub site: Option<String>,
    pub application: Option<String>,
    pub service: Option<String>,
    /// `1h`, `10m`… back from now, or an RFC 3339 time.
    pub since: Option<String>,
    /// Logs only: ask the site's connected hosts now instead of reading
    /// what they uploaded.
    pub live: bool,
}

impl Filter {
    pub(crate) fn query(&self, after: i64) -> Result<Vec<(&'static str, String)>> {
        let mut query = Vec::new();
        for (name, value) in [
            ("site", &self.site),
            ("application", &self.application),
            ("service", &self.service),
        ] {
            if let Some(value) = value {
                query.push((name, value.clone()));
            }
        }
        if let Some(since) = &self.since {
            query.push(("since", since_time(since)?));
        }
        if after > 0 {
            query.push(("after", after.to_string()));
        }
        if self.live {
            query.push(("live", "true".to_string()));
        }
        Ok(query)
    }
}

/// `--since 1h` as the RFC 3339 time an hour ago; an RFC 3339 time as is.
pub(crate) fn since_time(since: &str) -> Result<String> {
    use time::format_description::well_known::Rfc3339;
    if time::OffsetDateTime::parse(since, &Rfc3339).is_ok() {
        return Ok(since.to_string());
    }
    let ago: outpost_api::quantity::Duration = since.parse().map_err(|_| {
        anyhow::anyhow!("--since: {since:?} is neither a duration (10m, 1h, 7d) nor an RFC 3339 time")
    })?;
    let at = time::OffsetDateTime::now_utc() - time::Duration::milliseconds(ago.0 as i64);
    Ok(at.format(&Rfc3339)?)
}

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Text,
    /// One JSON object per line.
    Json,
}

fn where_(site: &str, host: &str) -> String {
    if host.is_empty() {
        site.to_string()
    } else {
        format!("{site}/{host}")
    }
}

fn event_rows(events: &[StoredEvent], header: bool) -> String {
    let mut table = Table::new(&["TIME", "SITE", "APPLICATION", "INSTANCE", "EVENT", "MESSAGE"]);
    for e in events {
        table.row(vec![
            e.at.clone(),
            where_(&e.site, &e.host),
            if e.application.is_empty() {
                "-".into()
            } else {
                e.application.clone()
            },
            if e.instance.is_empty() {
                "-".into()
            } else {
                e.instance.clone()
            },
            e.kind.as_str().to_string(),
            e.message.clone(),
        ]);
    }
    let text = table.render();
    if header {
        text
    } else {
        text.split_once('\n')
            .map(|(_, rows)| rows.to_string())
            .unwrap_or_default()
    }
}

fn json_lines<T: serde::Serialize>(items: &[T]) -> Result<String> {
    let mut text = String::new();
    for item in items {
        text.push_str(&serde_json::to_string(item)?);
        text.push('\n');
    }
    Ok(text)
}

fn log_text(lines: &[StoredLogLine]) -> String {
    let mut text = String::new();
    for l in lines {
        text.push_str(&format!(
            "{} {}/{} {}/{} {}\n",
            l.line.at, l.site, l.host, l.instance, l.container, l.line.text
        ));
    }
    text
}

/// Prints what `fetch` returns (newest first page, then pages after the
/// last id), once or, with `follow`, until interrupted. `render` gets each
/// page and whether it is the first.
pub(crate) async fn show<T: serde::Serialize>(
    fetch: impl AsyncFn(i64) -> Result<Vec<T>>,
    id: impl Fn(&T) -> i64,
    render: impl Fn(&[T], bool) -> String,
    style: Style,
    follow: bool,
) -> Result<()> {
    let first = fetch(0).await?;
    match style {
        Style::Json if !follow => output::print(&output::json(&serde_json::json!({ "items": first }))?)?,
        Style::Json => output::print(&json_lines(&first)?)?,
        Style::Text => output::print(&render(&first, true))?,
    }
    if !follow {
        return Ok(());
    }
    // The first page may be empty: keep asking for the newest until one
    // arrives, then only for those after it.
    let mut last = first.last().map_or(0, &id);
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let more = fetch(last).await?;
        let Some(newest) = more.last() else { continue };
        last = id(newest);
        match style {
            Style::Json => output::print(&json_lines(&more)?)?,
            Style::Text => output::print(&render(&more, false))?,
        }
    }
}

/// Prints the matching events, then with `follow` new ones as they arrive.
pub async fn events(client: &Client, filter: &Filter, style: Style, follow: bool) -> Result<()> {
    let render = |events: &[StoredEvent], first: bool| match events {
        [] if first && !follow => "no events\n".to_string(),
        _ => event_rows(events, first),
    };
    let fetch = async |after| client.events(&filter.query(after)?).await;
    show(fetch, |e| e.id, render, style, follow).await
}

/// Prints an application's uploaded log lines, then with `follow` new ones.
pub async fn logs(client: &Client, filter: &Filter, style: Style, follow: bool) -> Result<()> {
    let fetch = async |after| client.logs(&filter.query(after)?).await;
    show(fetch, |l| l.id, |lines, _| log_text(lines), style, follow).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        assert_eq!(
            since_time("2026-11-21T10:00:00Z").unwrap(),
            "2026-11-21T10:00:00Z"
        );
        let hour_ago = time::OffsetDateTime::parse(
            &since_time("1h").unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let ago = time::OffsetDateTime::now_utc() - hour_ago;
        assert!((ago.whole_seconds() - 3600).abs() < 5, "{ago}");
        let err = since_time("yesterday").unwrap_err().to_string();
        assert!(err.contains("--since") && err.contains("yesterday"), "{err}");
    }
}
