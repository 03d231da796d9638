//! `rollout status`, its watch, and the operator's rollout commands.

use std::fmt::Write as _;

use anyhow::Result;

use crate::client::Client;
use crate::output::{self, Table};
use outpost_api::quantity::approximate_bytes;

/// `outpost rollout status NAME`: the rollout's phase, every wave and site,
/// and the deployment's rollout history.
pub async fn rollout_status(client: &Client, deployment: &str) -> Result<(String, bool)> {
    use outpost_api::rollout::Phase;
    let status = client.rollout(deployment).await?;
    let mut out = String::new();
    let Some(rollout) = &status.rollout else {
        return Ok((
            format!("deployment/{deployment} has not rolled out anything yet\n"),
            true,
        ));
    };
    let waves = rollout.waves.len();
    let phase = match &rollout.phase {
        Phase::Running { wave, promoted, .. } => {
            let promoted = if *promoted { ", promoted" } else { "" };
            format!("running, wave {} of {waves}{promoted}", wave + 1)
        }
        Phase::Paused { wave, reason } => format!("paused at wave {} of {waves}: {reason}", wave + 1),
        Phase::Succeeded => match rollout.awaiting_images().count() {
            0 => "succeeded".to_string(),
            n => format!("succeeded; {n} site(s) switch once they hold its images"),
        },
        Phase::RolledBack { reason } => format!("rolled back: {reason}"),
        Phase::Aborted { wave } => format!("aborted at wave {} of {waves}", wave + 1),
    };
    let _ = writeln!(out, "deployment/{deployment}: version {} ({phase})", rollout.to);
    let reached = match &rollout.phase {
        Phase::Running { wave, .. } | Phase::Paused { wave, .. } | Phase::Aborted { wave } => wave + 1,
        Phase::Succeeded => waves,
        Phase::RolledBack { .. } => 0,
    };
    let mut table = Table::new(&[
        "  WAVE", "SITE", "VERSION", "STATE", "IMAGES", "FETCHED", "LEFT", "REASON",
    ]);
    let assigned = rollout.assigned();
    for (i, wave) in rollout.waves.iter().enumerate() {
        for site in &wave.sites {
            let version = assigned
                .get(site)
                .cloned()
                .flatten()
                .unwrap_or_else(|| "-".to_string());
            let reported = status.sites.iter().find(|s| &s.site == site);
            let (state, reason) = match reported {
                Some(s) => (
                    serde_json::to_value(s.state)?
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    s.reason.clone(),
                ),
                None => ("-".to_string(), String::new()),
            };
            // While the site pre-stages its next release.
            let [images, fetched, left] = match reported.and_then(|s| s.images.as_ref()) {
                Some(p) => [
                    format!("{}/{}", p.present, p.images),
                    approximate_bytes(p.fetched),
                    approximate_bytes(p.left),
                ],
                None => ["-".to_string(), "-".to_string(), "-".to_string()],
            };
            let state = if i >= reached {
                format!("{state} (waiting)")
            } else {
                state
            };
            let reason = rollout.failed.get(site).cloned().unwrap_or(reason);
            table.row(vec![
                format!("  {}", wave.name),
                site.clone(),
                version,
                state,
                images,
                fetched,
                left,
                reason,
            ]);
        }
    }
    out.push_str(&table.render());
    if !status.history.is_empty() {
        let history: Vec<String> = status
            .history
            .iter()
            .map(|r| format!("{} ({}, {})", r.version, r.outcome, r.started_at))
            .collect();
        let _ = writeln!(out, "history: {}", history.join(", "));
    }
    Ok((out, rollout.is_finished()))
}

/// `outpost rollout promote|pause|resume|abort NAME`.
pub async fn rollout_command(client: &Client, deployment: &str, command: &str) -> Result<String> {
    client.rollout_command(deployment, command).await?;
    let (status, _) = rollout_status(client, deployment).await?;
    Ok(status)
}

/// `outpost rollout undo NAME [--to-version V]`.
pub async fn rollout_undo(client: &Client, deployment: &str, to_version: Option<&str>) -> Result<String> {
    let response = client.rollout_undo(deployment, to_version).await?;
    // An undo is never a dry run: the lines read as an apply's.
    Ok(super::input::applied_text(&response))
}

/// `rollout status --watch`: prints the status, then again each time it
/// changes (polled every second), until the rollout has finished.
pub async fn rollout_watch(client: &Client, deployment: &str) -> Result<()> {
    let (mut shown, mut finished) = rollout_status(client, deployment).await?;
    output::print(&shown)?;
    while !finished {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let (now, done) = rollout_status(client, deployment).await?;
        if now != shown {
            output::print(&format!("\n{now}"))?;
            shown = now;
        }
        finished = done;
    }
    Ok(())
}
