//! Hosts: join tokens, the host list and labels (of hosts and objects).

use std::collections::BTreeMap;

use anyhow::Result;
use outpost_api::manifest::Kind;
use outpost_api::selector::Selector;

use super::{labels_text, lower};
use crate::client::Client;
use crate::output::{self, Format, Table, age};

/// How `outpost token create` shows the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOutput {
    /// The token, then how to use it.
    Text,
    /// `{"token", "site", "expiresAt"}`.
    Json,
    /// The token alone.
    Quiet,
}

pub async fn create_join_token(
    client: &Client,
    site: &str,
    ttl: Option<&str>,
    shown: TokenOutput,
) -> Result<String> {
    let token = client.create_join_token(site, ttl).await?;
    match shown {
        TokenOutput::Quiet => Ok(format!("{}\n", token.token)),
        TokenOutput::Json => output::json(&token),
        TokenOutput::Text => Ok(format!(
            "{}\n\nSingle use, valid until {}. On the new host of site {}:\n  outpost agent --server https://CONTROL_PLANE:7801 --join-token {} --data-dir /var/lib/outpost-agent\n",
            token.token, token.expires_at, token.site, token.token
        )),
    }
}

pub async fn get_hosts(
    client: &Client,
    site: Option<&str>,
    selector: Option<&str>,
    format: Format,
) -> Result<String> {
    let selector: Option<Selector> = selector
        .map(|s| {
            s.parse()
                .map_err(|e| anyhow::anyhow!("invalid selector {s:?}: {e}"))
        })
        .transpose()?;
    let hosts: Vec<_> = client
        .hosts(site)
        .await?
        .into_iter()
        .filter(|h| selector.as_ref().is_none_or(|s| s.matches(&h.facts)))
        .collect();
    match format {
        Format::Json => output::json(&serde_json::json!({ "items": hosts })),
        Format::Yaml => output::yaml(&serde_json::json!({ "items": hosts })),
        Format::Table | Format::Wide if hosts.is_empty() => {
            Ok("no hosts yet (outpost token create --site SITE)\n".to_string())
        }
        Format::Table | Format::Wide => {
            let wide = format == Format::Wide;
            let mut table = if wide {
                Table::new(&[
                    "SITE",
                    "NAME",
                    "STATUS",
                    "ARCH",
                    "CPUS",
                    "MEMORY",
                    "INSTANCES",
                    "ROLE",
                    "PEERS",
                    "REVISION",
                    "AGENT",
                    "LAST-SEEN",
                    "LABELS",
                    "FACTS",
                ])
            } else {
                Table::new(&[
                    "SITE",
                    "NAME",
                    "STATUS",
                    "ARCH",
                    "CPUS",
                    "MEMORY",
                    "INSTANCES",
                    "ROLE",
                    "PEERS",
                    "LAST-SEEN",
                ])
            };
            for host in &hosts {
                let fact = |key: &str| host.facts.get(key).cloned().unwrap_or_else(|| "-".to_string());
                let mut row = vec![
                    host.site.clone(),
                    host.name.clone(),
                    if host.online { "online" } else { "offline" }.to_string(),
                    fact("arch"),
                    fact("cpus"),
                    fact("memory"),
                    host.instances.len().to_string(),
                    host.role.clone().unwrap_or_else(|| "-".to_string()),
                    match host.seen_by {
                        Some((hearing, of)) => format!("seen by {hearing}/{of}"),
                        None => "-".to_string(),
                    },
                ];
                if wide {
                    row.push(host.applied_revision.to_string());
                    row.push(host.agent_version.clone());
                }
                row.push(host.last_seen.as_deref().map_or("-".to_string(), age));
                if wide {
                    row.push(labels_text(&host.labels));
                    row.push(labels_text(&host.facts));
                }
                table.row(row);
            }
            Ok(table.render())
        }
    }
}

/// `outpost label KIND NAME key=value key-`; hosts are named `SITE/HOST`.
pub async fn label(client: &Client, kind: Option<Kind>, name: &str, args: &[String]) -> Result<String> {
    let change = outpost_api::wire::LabelChange::from_args(args.iter().map(String::as_str))
        .map_err(anyhow::Error::msg)?;
    change.check().map_err(anyhow::Error::msg)?;
    match kind {
        Some(kind) => {
            let object = client.label(kind, name, &change).await?;
            Ok(format!(
                "{}/{} labelled: {}\n",
                lower(kind),
                object.metadata.name,
                labels_text(&object.metadata.labels)
            ))
        }
        None => {
            let (site, host) = name
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("name hosts as SITE/HOST, such as store-042/till-1"))?;
            let record = client.label_host(site, host, &change).await?;
            let labels: BTreeMap<String, String> =
                serde_json::from_value(record["labels"].clone()).unwrap_or_default();
            Ok(format!("host/{site}/{host} labelled: {}\n", labels_text(&labels)))
        }
    }
}

/// `outpost site rotate-keys SITE [--at-once]`.
pub async fn rotate_keys(client: &Client, site: &str, at_once: bool) -> Result<String> {
    let keys = client.rotate_keys(site, at_once).await?;
    Ok(format!(
        "site {site}: rotating the underlay keys to epoch {}\n{}",
        keys.epoch,
        keys_state(&keys)
    ))
}

/// `outpost site keys SITE`.
pub async fn site_keys(client: &Client, site: &str) -> Result<String> {
    let keys = client.site_keys(site).await?;
    Ok(format!(
        "site {site}: underlay key epoch {}\n{}",
        keys.epoch,
        keys_state(&keys)
    ))
}

fn keys_state(keys: &outpost_api::wire::SiteKeys) -> String {
    let held = format!(
        "{}/{} hosts hold a key of epoch {}",
        keys.hosts_rotated, keys.hosts, keys.epoch
    );
    match keys.retiring {
        Some(old) => format!("{held}; epoch {old} is accepted until all do\n"),
        None => format!("{held}; no other epoch is accepted\n"),
    }
}
