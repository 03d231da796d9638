//! `describe`: one object in full, with what it concerns.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use outpost_api::manifest::{Application, Container, Deployment, Kind, ServiceMode, Site, Tenant};
use outpost_api::wire::{DeploymentStatus, SiteStatus};

use super::{labels_text, selector_text, site_state, status_of, typed, write_times};
use crate::client::Client;
use crate::output::Table;
use outpost_api::quantity::approximate_bytes;

/// A traffic counter (never negative) for people.
fn traffic(bytes: i64) -> String {
    approximate_bytes(bytes.max(0) as u64)
}

/// Each host's topics: backlog, lag (the age of the oldest unsent up-record)
/// and drops, as the hosts last reported them.
fn streams_table(topics: &[outpost_api::stream::TopicStatus]) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut table = Table::new(&["HOST", "TOPIC", "DIRECTION", "BACKLOG", "LAG", "DROPPED", "NOTE"]);
    for t in topics {
        let lag = match t.oldest_unsent_ms {
            Some(_) => format!("{}s", t.lag_ms(now_ms) / 1000),
            None => "-".to_string(),
        };
        let dropped = if t.dropped_records == 0 {
            "0".to_string()
        } else {
            format!("{} ({})", t.dropped_records, approximate_bytes(t.dropped_bytes))
        };
        table.row(vec![
            t.host.clone(),
            format!("{}/{}", t.application, t.topic),
            t.direction.as_str().to_string(),
            format!("{} ({})", t.backlog_records, approximate_bytes(t.backlog_bytes)),
            lag,
            dropped,
            if t.note.is_empty() {
                "-".to_string()
            } else {
                t.note.clone()
            },
        ]);
    }
    table.render()
}

/// Each host of the site cluster: the peers it hears and the placement
/// epoch it holds; then the instances the site moved, and why.
fn cluster_text(hosts: &[outpost_api::wire::ClusterStatus]) -> String {
    let mut table = Table::new(&["HOST", "ROLE", "HEARS", "EPOCH"]);
    for h in hosts {
        table.row(vec![
            h.host.clone(),
            h.role.clone().unwrap_or_else(|| "-".to_string()),
            if h.hears.is_empty() {
                "nobody".to_string()
            } else {
                h.hears.join(",")
            },
            if h.author.is_empty() {
                h.epoch.to_string()
            } else {
                format!("{} (by {})", h.epoch, h.author)
            },
        ]);
    }
    let mut out = table.render();
    // The newest ledger is the site's (they agree once the hosts hear each other).
    if let Some(newest) = hosts.iter().max_by_key(|h| h.epoch)
        && !newest.moved.is_empty()
    {
        out.push_str("Moved by the site:\n");
        for m in &newest.moved {
            let since = newest.lost.get(&m.from).map_or("", String::as_str);
            let _ = writeln!(
                out,
                "  {} ({}) {} -> {}: host {} lost{}",
                m.instance,
                m.workload,
                m.from,
                m.to,
                m.from,
                if since.is_empty() {
                    String::new()
                } else {
                    format!(" at {since}")
                }
            );
        }
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

pub async fn describe(client: &Client, kind: Kind, name: &str) -> Result<String> {
    let object = client.get(kind, name).await?;
    let mut out = String::new();
    let meta = &object.metadata;
    let _ = writeln!(out, "Name:        {}", meta.name);
    let _ = writeln!(out, "Kind:        {}", object.kind);
    let _ = writeln!(out, "Labels:      {}", labels_text(&meta.labels));
    let _ = writeln!(out, "Generation:  {}", meta.generation);
    write_times(&mut out, &meta.created_at, &meta.updated_at);
    match kind {
        Kind::Site => {
            let site: Site = typed(&object)?;
            out.push_str("Variables:");
            if site.spec.variables.is_empty() {
                out.push_str("   <none>\n");
            } else {
                out.push('\n');
                for (key, value) in &site.spec.variables {
                    let _ = writeln!(out, "  {key} = {value}");
                }
            }
            let status: SiteStatus = status_of(&object);
            let _ = writeln!(
                out,
                "Status:      {} ({} of {} hosts online), revision {} applied of {}",
                site_state(&status),
                status.online_hosts,
                status.hosts,
                status.applied_revision,
                status.revision
            );
            for failure in &status.failures {
                let _ = writeln!(out, "  cannot run: {failure}");
            }
            let hosts = client.hosts(Some(&meta.name)).await?;
            out.push_str("Hosts:");
            if hosts.is_empty() {
                let _ = writeln!(
                    out,
                    "       <none> (outpost token create --site {} enrolls one)",
                    meta.name
                );
            } else {
                out.push('\n');
                for host in &hosts {
                    let state = if host.online { "online" } else { "offline" };
                    let _ = write!(
                        out,
                        "  {} ({state}, {} instance(s)), link: {} in, {} out",
                        host.name,
                        host.instances.len(),
                        traffic(host.bytes_received),
                        traffic(host.bytes_sent),
                    );
                    if host.dropped > 0 {
                        let _ = write!(out, ", {} record(s) dropped by its full queue", host.dropped);
                    }
                    out.push('\n');
                }
                let (received, sent) = hosts
                    .iter()
                    .fold((0, 0), |(r, s), h| (r + h.bytes_received, s + h.bytes_sent));
                let _ = writeln!(
                    out,
                    "Traffic:     {} from the site, {} to it (agent channel at the control plane's socket, TLS included)",
                    traffic(received),
                    traffic(sent)
                );
            }
            if !status.cluster.is_empty() {
                out.push_str("Cluster:\n");
                out.push_str(&indent(&cluster_text(&status.cluster)));
            }
            if !status.streams.is_empty() {
                out.push_str("Streams:\n");
                out.push_str(&indent(&streams_table(&status.streams)));
            }
            let deployments = client.list(Kind::Deployment, None).await?;
            out.push_str("Deployments:");
            let mut any = false;
            for object in &deployments {
                let deployment: Deployment = typed(object)?;
                if deployment.spec.sites.matches(&meta.labels) {
                    let _ = write!(
                        out,
                        "\n  {} ({})",
                        deployment.metadata.name, deployment.spec.application
                    );
                    any = true;
                }
            }
            out.push_str(if any { "\n" } else { " <none>\n" });
        }
        Kind::Application => {
            let app: Application = typed(&object)?;
            let _ = writeln!(out, "Version:     {}", app.spec.version);
            out.push_str("Services:\n");
            for service in &app.spec.services {
                let placement = match (service.mode, service.replicas) {
                    (Some(ServiceMode::PerHost), _) => "one per host".to_string(),
                    (_, Some(1) | None) => "1 replica".to_string(),
                    (_, Some(n)) => format!("{n} replicas"),
                };
                let hosts = service
                    .hosts
                    .as_ref()
                    .map(|h| format!(", hosts: {h}"))
                    .unwrap_or_default();
                let _ = writeln!(out, "  {} ({placement}{hosts})", service.name);
                for container in &service.containers {
                    describe_container(&mut out, container);
                }
            }
            // What each version's images resolved to, as its first site pulled them.
            let digests: BTreeMap<String, BTreeMap<String, String>> = object
                .status
                .as_ref()
                .and_then(|status| serde_json::from_value(status["imageDigests"].clone()).ok())
                .unwrap_or_default();
            if digests.is_empty() {
                out.push_str("Image digests: <none recorded yet>\n");
            } else {
                out.push_str("Image digests:\n");
                for (version, images) in digests.iter().rev() {
                    for (image, digest) in images {
                        let _ = writeln!(out, "  {version}: {image} -> {digest}");
                    }
                }
            }
            let deployments = client.list(Kind::Deployment, None).await?;
            out.push_str("Deployments:");
            let mut any = false;
            for object in &deployments {
                let deployment: Deployment = typed(object)?;
                if deployment.spec.application.as_str() == meta.name {
                    let version = deployment.spec.version.as_deref().unwrap_or("current");
                    let _ = write!(
                        out,
                        "\n  {} (version {version}, sites: {})",
                        deployment.metadata.name,
                        selector_text(&deployment.spec.sites)
                    );
                    any = true;
                }
            }
            out.push_str(if any { "\n" } else { " <none>\n" });
            let history = client.history(&meta.name).await?;
            let _ = writeln!(
                out,
                "History:     {} version(s) kept (outpost history application {})",
                history.len(),
                meta.name
            );
        }
        Kind::Deployment => {
            let deployment: Deployment = typed(&object)?;
            let spec = &deployment.spec;
            let _ = writeln!(out, "Application: {}", spec.application);
            let _ = writeln!(
                out,
                "Version:     {}",
                spec.version
                    .as_deref()
                    .unwrap_or("current (follows the application)")
            );
            let _ = writeln!(out, "Selector:    {}", selector_text(&spec.sites));
            if let Some(rollout) = &spec.rollout {
                out.push_str("Rollout:    ");
                if let Some(canary) = rollout.canary {
                    let _ = write!(out, " canary {canary} site(s);");
                }
                if let Some(waves) = &rollout.waves {
                    match (waves.size, waves.exponential) {
                        (Some(size), _) => {
                            let _ = write!(out, " waves of {size};");
                        }
                        (_, Some(factor)) => {
                            let _ =
                                write!(out, " waves growing x{factor} from {};", waves.start.unwrap_or(1));
                        }
                        _ => {}
                    }
                }
                if let Some(d) = rollout.healthy_for {
                    let _ = write!(out, " healthy for {d};");
                }
                if let Some(d) = rollout.timeout {
                    let _ = write!(out, " timeout {d};");
                }
                if let Some(m) = rollout.max_failures {
                    let _ = write!(out, " max failures {m};");
                }
                if let Some(on) = rollout.on_failure {
                    let _ = write!(
                        out,
                        " on failure {};",
                        serde_json::to_value(on)?.as_str().unwrap_or_default()
                    );
                }
                out = out.trim_end_matches(';').to_string();
                out.push('\n');
            } else {
                out.push_str("Rollout:     all at once\n");
            }
            let status: DeploymentStatus = status_of(&object);
            let _ = writeln!(
                out,
                "Sites:       {} up to date, {} progressing, {} failed, {} offline",
                status.up_to_date, status.progressing, status.failed, status.offline
            );
            let mut table = Table::new(&["  SITE", "STATE", "REASON"]);
            for site in &status.sites {
                let state = serde_json::to_value(site.state)?
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                table.row(vec![format!("  {}", site.site), state, site.reason.clone()]);
            }
            if status.sites.is_empty() {
                out.push_str("  <no site matches>\n");
            } else {
                out.push_str(&table.render());
            }
        }
        Kind::Tenant => {
            let tenant: Tenant = typed(&object)?;
            let _ = writeln!(out, "Sites:       {}", tenant.spec.sites);
            let _ = writeln!(
                out,
                "Quotas:      {} (per site)",
                super::get::quotas_text(&tenant.spec.quotas)
            );
        }
    }
    Ok(out)
}

fn describe_container(out: &mut String, container: &Container) {
    let _ = writeln!(out, "    {}: {}", container.name, container.image);
    let command: Vec<&str> = container
        .command
        .iter()
        .chain(&container.args)
        .map(String::as_str)
        .collect();
    if !command.is_empty() {
        let _ = writeln!(out, "      command:   {}", command.join(" "));
    }
    if !container.env.is_empty() {
        let env: Vec<String> = container.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "      env:       {}", env.join(" "));
    }
    if !container.ports.is_empty() {
        let ports: Vec<String> = container
            .ports
            .iter()
            .map(|p| {
                let protocol = serde_json::to_value(p.protocol)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                match p.host {
                    Some(host) => format!("{host}->{}/{protocol}", p.container),
                    None => format!("{}/{protocol}", p.container),
                }
            })
            .collect();
        let _ = writeln!(out, "      ports:     {}", ports.join(", "));
    }
    if let Some(resources) = &container.resources {
        let mut parts = Vec::new();
        if let Some(cpu) = resources.cpu {
            parts.push(format!("cpu {cpu}"));
        }
        if let Some(memory) = resources.memory {
            parts.push(format!("memory {memory}"));
        }
        if let Some(gpu) = resources.gpu {
            parts.push(format!("gpu {gpu}"));
        }
        let _ = writeln!(out, "      resources: {}", parts.join(", "));
    }
    if let Some(health) = &container.health {
        let probe = if let Some(http) = &health.http {
            format!("http GET :{}{}", http.port, http.path)
        } else if let Some(tcp) = &health.tcp {
            format!("tcp :{}", tcp.port)
        } else if let Some(exec) = &health.exec {
            format!("exec {}", exec.command.join(" "))
        } else {
            String::new()
        };
        let interval = health.interval.map(|i| format!(" every {i}")).unwrap_or_default();
        let _ = writeln!(out, "      health:    {probe}{interval}");
    }
    for volume in &container.volumes {
        let mode = if volume.read_only { " (read-only)" } else { "" };
        let _ = writeln!(out, "      volume:    {} at {}{mode}", volume.name, volume.path);
    }
    if !container.devices.is_empty() {
        let _ = writeln!(out, "      devices:   {}", container.devices.join(", "));
    }
}
