//! The CLI's commands. Each returns the text to print, so tests can check it
//! and the binary only prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use outpost_api::manifest::{Application, Container, Deployment, Kind, Manifest, ServiceMode, Site};
use outpost_api::parse_files;
use outpost_api::selector::Selector;
use outpost_api::wire::{ApplyAction, ApplyRequest, DeploymentStatus, SiteStatus, SourceFile, StoredObject};

use crate::client::{CliError, Client};
use crate::output::{self, Format, Table, age};

/// Reads `-f` arguments: files, directories (their `.yaml`, `.yml` and
/// `.json` files, sorted) or `-` for standard input.
pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<SourceFile>> {
    let mut files = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut content = String::new();
            std::io::stdin()
                .read_to_string(&mut content)
                .context("reading standard input")?;
            files.push(SourceFile {
                name: "<stdin>".to_string(),
                content,
            });
        } else if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("yaml" | "yml" | "json")
                        )
                })
                .collect();
            entries.sort();
            if entries.is_empty() {
                anyhow::bail!("{} holds no .yaml, .yml or .json files", path.display());
            }
            for entry in entries {
                files.push(read_file(&entry)?);
            }
        } else {
            files.push(read_file(path)?);
        }
    }
    Ok(files)
}

fn read_file(path: &Path) -> Result<SourceFile> {
    let content = std::fs::read_to_string(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("{}: no such file or directory", path.display()),
        _ => anyhow::Error::new(err).context(format!("reading {}", path.display())),
    })?;
    Ok(SourceFile {
        name: path.display().to_string(),
        content,
    })
}

/// Manifest files that passed local validation, ready to send.
#[derive(Debug)]
pub struct Checked {
    files: Vec<SourceFile>,
    manifests: Vec<Manifest>,
}

impl Checked {
    pub fn len(&self) -> usize {
        self.manifests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.manifests.is_empty()
    }
}

/// Validates manifests locally, with the same rules and messages as the
/// server, so mistakes show before any control plane is contacted.
pub fn validate(files: Vec<SourceFile>) -> Result<Checked, CliError> {
    match parse_files(files.iter().map(|f| (f.name.as_str(), f.content.as_str()))) {
        Ok(documents) => Ok(Checked {
            files,
            manifests: documents.into_iter().map(|d| d.manifest).collect(),
        }),
        Err(problems) => Err(CliError {
            message: problems.summary(),
            diagnostics: problems.0,
        }),
    }
}

fn lower(kind: Kind) -> String {
    kind.as_str().to_ascii_lowercase()
}

pub async fn apply(client: &Client, checked: Checked, dry_run: bool) -> Result<String> {
    let files = checked.files;
    let response = client.apply(&ApplyRequest { files, dry_run }).await?;
    let suffix = if response.dry_run { " (dry run)" } else { "" };
    let mut out = String::new();
    for result in &response.results {
        let _ = writeln!(
            out,
            "{}/{} {}{suffix}",
            lower(result.kind),
            result.name,
            result.action.as_str()
        );
    }
    Ok(out)
}

/// What `apply` would change, as a unified diff per object.
pub async fn diff(client: &Client, checked: Checked) -> Result<String> {
    let Checked { files, manifests } = checked;
    let response = client.apply(&ApplyRequest { files, dry_run: true }).await?;
    let mut out = String::new();
    for (manifest, result) in manifests.iter().zip(&response.results) {
        if result.action == ApplyAction::Unchanged {
            continue;
        }
        let before = match &result.previous {
            Some(previous) => output::yaml(&previous.manifest_json())?,
            None => String::new(),
        };
        let after = output::yaml(&manifest.to_canonical_json())?;
        let label = format!("{}/{}", lower(result.kind), result.name);
        let diff = similar::TextDiff::from_lines(&before, &after);
        let _ = write!(
            out,
            "{}",
            diff.unified_diff().context_radius(3).header(
                &format!("{label} (stored)"),
                &format!("{label} ({})", result.action.as_str())
            )
        );
    }
    if out.is_empty() {
        out.push_str("no changes\n");
    }
    Ok(out)
}

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

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "<none>".to_string();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
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
    };
    Ok(table.render())
}

fn site_state(status: &SiteStatus) -> &'static str {
    match (status.hosts, status.online) {
        (0, _) => "no-hosts",
        (_, true) => "online",
        (_, false) => "offline",
    }
}

/// The status the server attached to an object (empty if it sent none).
fn status_of<T: serde::de::DeserializeOwned + Default>(object: &StoredObject) -> T {
    object
        .status
        .clone()
        .and_then(|status| serde_json::from_value(status).ok())
        .unwrap_or_default()
}

fn selector_text(selector: &Selector) -> String {
    if selector.as_str().is_empty() {
        "<all>".to_string()
    } else {
        selector.as_str().to_string()
    }
}

/// A stored object as its manifest type.
fn typed<T: serde::de::DeserializeOwned>(object: &StoredObject) -> Result<T> {
    let mut json = object.manifest_json();
    if let Some(map) = json.as_object_mut() {
        map.remove("kind");
    }
    serde_json::from_value(json).with_context(|| {
        format!(
            "{} {:?} from the server does not read as a manifest",
            object.kind, object.metadata.name
        )
    })
}

pub async fn describe(client: &Client, kind: Kind, name: &str) -> Result<String> {
    let object = client.get(kind, name).await?;
    let mut out = String::new();
    let meta = &object.metadata;
    let _ = writeln!(out, "Name:        {}", meta.name);
    let _ = writeln!(out, "Kind:        {}", object.kind);
    let _ = writeln!(out, "Labels:      {}", labels_text(&meta.labels));
    let _ = writeln!(out, "Generation:  {}", meta.generation);
    let _ = writeln!(
        out,
        "Created:     {} ({} ago)",
        meta.created_at,
        age(&meta.created_at)
    );
    let _ = writeln!(
        out,
        "Updated:     {} ({} ago)",
        meta.updated_at,
        age(&meta.updated_at)
    );
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
                        output::bytes(host.bytes_received),
                        output::bytes(host.bytes_sent),
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
                    output::bytes(received),
                    output::bytes(sent)
                );
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

pub async fn create_join_token(client: &Client, site: &str, ttl: &str, shown: TokenOutput) -> Result<String> {
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

/// `outpost plan -f FILE`: per deployment and wave, what each site would
/// run after an apply, or why it could not. Nothing changes.
pub async fn plan(client: &Client, checked: Checked) -> Result<String> {
    let files = checked.files;
    let response = client.plan(&ApplyRequest { files, dry_run: true }).await?;
    if response.deployments.is_empty() {
        return Ok("no deployment is concerned by these manifests\n".to_string());
    }
    let mut out = String::new();
    for deployment in &response.deployments {
        let _ = writeln!(
            out,
            "deployment/{}: {} {} on sites {:?}",
            deployment.name, deployment.application, deployment.version, deployment.selector
        );
        let mut table = Table::new(&["  WAVE", "SITE", "PLAN", "DETAIL"]);
        for wave in &deployment.waves {
            for site in &wave.sites {
                let detail = if site.reason.is_empty() {
                    site.instances.join(", ")
                } else {
                    site.reason.clone()
                };
                table.row(vec![
                    format!("  {}", wave.wave),
                    site.site.clone(),
                    site.action.clone(),
                    detail,
                ]);
            }
        }
        if deployment.waves.iter().all(|w| w.sites.is_empty()) {
            out.push_str("  no site matches\n");
        } else {
            out.push_str(&table.render());
        }
        if !deployment.not_selected.is_empty() {
            let _ = writeln!(out, "  not selected: {}", deployment.not_selected.join(", "));
        }
    }
    Ok(out)
}

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
        Phase::Succeeded => "succeeded".to_string(),
        Phase::RolledBack { reason } => format!("rolled back: {reason}"),
        Phase::Aborted { wave } => format!("aborted at wave {} of {waves}", wave + 1),
    };
    let _ = writeln!(out, "deployment/{deployment}: version {} ({phase})", rollout.to);
    let reached = match &rollout.phase {
        Phase::Running { wave, .. } | Phase::Paused { wave, .. } | Phase::Aborted { wave } => wave + 1,
        Phase::Succeeded => waves,
        Phase::RolledBack { .. } => 0,
    };
    let mut table = Table::new(&["  WAVE", "SITE", "VERSION", "STATE", "REASON"]);
    let assigned = rollout.assigned();
    for (i, wave) in rollout.waves.iter().enumerate() {
        for site in &wave.sites {
            let version = assigned
                .get(site)
                .cloned()
                .flatten()
                .unwrap_or_else(|| "-".to_string());
            let (state, reason) = match status.sites.iter().find(|s| &s.site == site) {
                Some(s) => (
                    serde_json::to_value(s.state)?
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    s.reason.clone(),
                ),
                None => ("-".to_string(), String::new()),
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
    let mut out = String::new();
    for result in &response.results {
        let _ = writeln!(
            out,
            "{}/{} {}",
            lower(result.kind),
            result.name,
            result.action.as_str()
        );
    }
    Ok(out)
}
