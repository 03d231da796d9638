//! Offline bundles on the host: `outpost bundle import FILE` checks a
//! bundle (its signature against the CA this host enrolled with, its
//! archive against the signed digest, that it is for this site and not
//! older than what the host holds), loads its images, and leaves its
//! signed head in `DATA_DIR/import/`. The agent takes heads from there
//! (checking them again), persists the state as a new revision, and runs
//! it; a running agent notices within `POLL`. A bundle is refused whole:
//! nothing is loaded or changed by one that fails a check.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use outpost_api::workload::SiteState;
use outpost_proto::bundle::{self, Header, SiteBundle};
use tokio::sync::watch;

use crate::store::DesiredStore;

/// How often the agent looks for an imported bundle.
pub const POLL: Duration = Duration::from_secs(2);

/// Where imported heads wait for the agent.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("import")
}

/// What this host holds now: its revision, and when the bundle it came
/// from was signed (if it came from one).
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub revision: u64,
    pub imported: Option<u64>,
}

/// Checks a bundle's signed head for this host; returns its header and
/// this site's part. Refuses a bundle signed by another control plane,
/// changed, for another site, or older than what the host holds.
pub fn accept(head: (&[u8], &[u8]), ca_pem: &str, site: &str, held: Held) -> Result<(Header, SiteBundle)> {
    let header = bundle::verify(head.0, head.1, ca_pem)?;
    let Some(ours) = header.sites.get(site).cloned() else {
        let sites: Vec<&str> = header.sites.keys().map(String::as_str).collect();
        anyhow::bail!(
            "this bundle of deployment {} is for site(s) {}, not this host's site {site}",
            header.deployment,
            sites.join(", ")
        );
    };
    if ours.revision < held.revision {
        anyhow::bail!(
            "this bundle is older than what this host runs: it was made at revision {} of site {site}, and the host holds revision {}",
            ours.revision,
            held.revision
        );
    }
    if let Some(imported) = held.imported
        && header.created_ms < imported
    {
        anyhow::bail!("this host already runs a bundle signed after this one");
    }
    Ok((header, ours))
}

/// Takes imported heads into the desired state until `shutdown`.
pub struct Importer {
    pub dir: PathBuf,
    pub trust: Arc<crate::trust::Trust>,
    pub site: String,
    pub store: Arc<dyn DesiredStore>,
    pub desired: Arc<watch::Sender<(u64, SiteState)>>,
}

impl Importer {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(err) = self.take().await {
                tracing::warn!(err = format!("{err:#}"), "taking an imported bundle");
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Applies each waiting head, oldest file first, then removes it.
    async fn take(&self) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        let mut heads: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "head"))
            .collect();
        heads.sort();
        for path in heads {
            match self.apply(&path).await {
                Ok(()) => {}
                Err(err) => {
                    tracing::warn!(file = %path.display(), err = format!("{err:#}"), "an imported bundle was refused")
                }
            }
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }

    async fn apply(&self, path: &Path) -> Result<()> {
        let mut file = std::fs::File::open(path)?;
        let (header, signature) = bundle::read_head(&mut file)?;
        let revision = self.desired.borrow().0;
        let held = Held {
            revision,
            imported: self.store.imported().await?,
        };
        let (header, ours) = accept((&header, &signature), &self.trust.pem(), &self.site, held)?;
        self.store
            .save_imported(ours.revision, &ours.state, header.created_ms)
            .await?;
        tracing::info!(
            deployment = %header.deployment,
            version = %header.version,
            revision = ours.revision,
            "running an imported bundle"
        );
        self.desired.send_replace((ours.revision, ours.state));
        Ok(())
    }
}
