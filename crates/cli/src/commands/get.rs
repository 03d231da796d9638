//! `get`, `history` and `delete` of sites, applications, deployments and tenants:
//! tables, wide tables, JSON and YAML.

use anyhow::Result;
use outpost_api::manifest::{Application, Deployment, Kind, Quotas, Site, Tenant};
use outpost_api::wire::{DeploymentStatus, SiteStatus, StoredObject};

use super::{labels_text, lower, selector_text, site_state, status_of, typed};
use crate::client::Client;
use crate::output::{self, Format, Table, age};

pub async fn get(
    client: &Client,
    kind: Kind,
    name: Option<&str>,
    selector: Option<&str>,
    format: Format,
) -> Result<String> {
    if let Some(name) = name {
        let object = client.get(kind, name).await?;
        return match format {
            Format::Json => output::json(&object),
            Format::Yaml => output::yaml(&object),
            Format::Table | Format::Wide => render_table(kind, &[object], format),
        };
    }
    let objects = client.list(kind, selector).await?;
    match format {
        Format::Json => output::json(&serde_json::json!({ "items": objects })),
        Format::Yaml => output::yaml(&serde_json::json!({ "items": objects })),
        Format::Table | Format::Wide if objects.is_empty() => Ok(match selector {
            Some(selector) => format!("no {} match {selector:?}\n", kind.plural()),
            None => format!("no {} yet\n", kind.plural()),
        }),
        Format::Table | Format::Wide => render_table(kind, &objects, format),
    }
}

fn render_table(kind: Kind, objects: &[StoredObject], format: Format) -> Result<String> {
    let wide = format == Format::Wide;
    let table = match kind {
        Kind::Site => {
            let mut table = if wide {
                Table::new(&[
                    "NAME",
                    "STATUS",
                    "HOSTS",
                    "REVISION",
                    "LAST-SEEN",
                    "AGENT",
                    "LABELS",
                    "GENERATION",
                    "AGE",
                ])
            } else {
                Table::new(&["NAME", "STATUS", "HOSTS", "REVISION", "LAST-SEEN", "AGE"])
            };
            for object in objects {
                let site: Site = typed(object)?;
                let status: SiteStatus = status_of(object);
                let mut row = vec![
                    site.metadata.name.to_string(),
                    site_state(&status).to_string(),
                    format!("{}/{}", status.online_hosts, status.hosts),
                    format!("{}/{}", status.applied_revision, status.revision),
                    status.last_seen.as_deref().map_or("-".to_string(), age),
                ];
                if wide {
                    row.push(if status.agent_version.is_empty() {
                        "-".to_string()
                    } else {
                        status.agent_version.clone()
                    });
                    row.push(labels_text(&site.metadata.labels));
                    row.push(object.metadata.generation.to_string());
                }
                row.push(age(&object.metadata.created_at));
                table.row(row);
            }
            table
        }
        Kind::Application => {
            let mut table = if wide {
                Table::new(&["NAME", "VERSION", "SERVICES", "GENERATION", "IMAGES", "AGE"])
            } else {
                Table::new(&["NAME", "VERSION", "SERVICES", "AGE"])
            };
            for object in objects {
                let app: Application = typed(object)?;
                let services: Vec<&str> = app.spec.services.iter().map(|s| s.name.as_str()).collect();
                let mut row = vec![
                    app.metadata.name.to_string(),
                    app.spec.version.clone(),
                    services.join(","),
                ];
                if wide {
                    row.push(object.metadata.generation.to_string());
                    let images: Vec<&str> = app
                        .spec
                        .services
                        .iter()
                        .flat_map(|s| s.containers.iter().map(|c| c.image.as_str()))
                        .collect();
                    row.push(images.join(","));
                }
                row.push(age(&object.metadata.created_at));
                table.row(row);
            }
            table
        }
        Kind::Deployment => {
            let mut table = if wide {
                Table::new(&[
                    "NAME",
                    "APPLICATION",
                    "VERSION",
                    "UP-TO-DATE",
                    "PROGRESSING",
                    "FAILED",
                    "OFFLINE",
                    "SITES",
                    "GENERATION",
                    "AGE",
                ])
            } else {
                Table::new(&[
                    "NAME",
                    "APPLICATION",
                    "VERSION",
                    "UP-TO-DATE",
                    "PROGRESSING",
                    "FAILED",
                    "OFFLINE",
                    "AGE",
                ])
            };
            for object in objects {
                let deployment: Deployment = typed(object)?;
                let status: DeploymentStatus = status_of(object);
                let mut row = vec![
                    deployment.metadata.name.to_string(),
                    deployment.spec.application.to_string(),
                    deployment
                        .spec
                        .version
                        .clone()
                        .unwrap_or_else(|| "current".to_string()),
                    status.up_to_date.to_string(),
                    status.progressing.to_string(),
                    status.failed.to_string(),
                    status.offline.to_string(),
                ];
                if wide {
                    row.push(selector_text(&deployment.spec.sites));
                    row.push(object.metadata.generation.to_string());
                }
                row.push(age(&object.metadata.created_at));
                table.row(row);
            }
            table
        }
        Kind::Tenant => {
            let mut table = Table::new(&["NAME", "SITES", "QUOTAS", "AGE"]);
            for object in objects {
                let tenant: Tenant = typed(object)?;
                table.row(vec![
                    tenant.metadata.name.to_string(),
                    tenant.spec.sites.to_string(),
                    quotas_text(&tenant.spec.quotas),
                    age(&object.metadata.created_at),
                ]);
            }
            table
        }
    };
    Ok(table.render())
}

/// `cpu=2,memory=4Gi,instances=10` per site, or `-` for none.
pub(super) fn quotas_text(quotas: &Quotas) -> String {
    let parts: Vec<String> = [
        quotas.cpu.map(|cpu| format!("cpu={cpu}")),
        quotas.memory.map(|memory| format!("memory={memory}")),
        quotas.gpu.map(|gpu| format!("gpu={gpu}")),
        quotas.instances.map(|n| format!("instances={n}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(",")
    }
}

pub async fn delete(client: &Client, kind: Kind, name: &str, cascade: bool) -> Result<String> {
    let deleted = client.delete(kind, name, cascade).await?;
    let hosts = if cascade && kind == Kind::Site {
        ", with its hosts (their certificates are revoked)"
    } else {
        ""
    };
    Ok(format!(
        "{}/{} deleted{hosts}\n",
        lower(deleted.kind),
        deleted.metadata.name
    ))
}

pub async fn history(client: &Client, application: &str, format: Format) -> Result<String> {
    let versions = client.history(application).await?;
    match format {
        Format::Json => output::json(&versions),
        Format::Yaml => output::yaml(&versions),
        Format::Table | Format::Wide => {
            let mut table = Table::new(&["VERSION", "GENERATION", "APPLIED", "CURRENT"]);
            for version in &versions {
                table.row(vec![
                    version.version.clone(),
                    version.generation.to_string(),
                    format!("{} ago", age(&version.applied_at)),
                    if version.current {
                        "*".to_string()
                    } else {
                        String::new()
                    },
                ]);
            }
            Ok(table.render())
        }
    }
}
