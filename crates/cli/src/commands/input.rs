//! Manifests in: reading `-f` sources, validating them locally with the
//! server's own rules, and `apply`, `diff` and `plan`.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use outpost_api::manifest::Manifest;
use outpost_api::parse_files;
use outpost_api::wire::{ApplyAction, ApplyRequest, ApplyResponse, SourceFile};

use super::lower;
use crate::client::{CliError, Client};
use crate::output::{self, Table};

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

pub async fn apply(client: &Client, checked: Checked, dry_run: bool) -> Result<String> {
    let files = checked.files;
    let response = client.apply(&ApplyRequest { files, dry_run }).await?;
    Ok(applied_text(&response))
}

/// One line per object of an apply's response: `site/store-042 created`,
/// marked `(dry run)` when nothing was stored.
pub(super) fn applied_text(response: &ApplyResponse) -> String {
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
    out
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
