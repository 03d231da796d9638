//! Secrets on the host: kept sealed in `agent.db`, opened only when a
//! container starts (or a file secret changes under a running one).
//!
//! File secrets live on a tmpfs the agent mounts (or finds) at its secrets
//! directory (`/run/outpost/secrets/SITE.HOST` by default), never on disk:
//! one directory per container generation (`NAME-SPECHASH`), which holds
//! `m0`, `m1`… (a directory per whole secret, a file per single key) and
//! a `versions` file saying what was written. Containers bind-mount `mN`
//! read-only; the parent, with `versions`, stays outside them. After a
//! reboot the tmpfs is empty, and each directory is written again from
//! the sealed store before its container starts, with no uplink needed.
//!
//! A new version under a running container is written in place: each file
//! of a directory mount is replaced by a rename (atomic); a single-file
//! mount is rewritten in place, since a bind-mounted file keeps its inode.
//! Then `onSecretChange` decides: `signal:NAME` signals the container,
//! `none` leaves it be (`restart` never gets here: the version is in the
//! spec hash, so the container is replaced).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use outpost_api::manifest::{Container, SecretMount};
use outpost_api::secret::{PULL_SECRET_KEY, UseField};
use outpost_proto::seal::{self, HostKey, Values};
use zeroize::Zeroizing;

use crate::plan::{DesiredContainer, Observed, next_name};
use crate::registry::Credential;
use crate::store::DesiredStore;

/// What a container gets of its secrets: environment values and the
/// read-only mounts of its files. Never printed.
#[derive(Clone, Default, PartialEq)]
pub struct Prepared {
    pub env: Vec<(String, Zeroizing<String>)>,
    /// (path on the host, path in the container).
    pub mounts: Vec<(PathBuf, String)>,
    /// From `imagePullSecret`: credentials for pulling its image.
    pub registry: Vec<Credential>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("mounts", &self.mounts)
            .field("registry", &self.registry)
            .finish()
    }
}

const VERSIONS: &str = "versions";

/// The credentials in a pull secret's `config.json`.
fn registry_credentials(secret: &str, values: &Values) -> Result<Vec<Credential>> {
    let config = values
        .0
        .get(PULL_SECRET_KEY)
        .with_context(|| format!("pull secret {secret:?} has no key {PULL_SECRET_KEY:?}"))?;
    let text = std::str::from_utf8(config)
        .map_err(|_| anyhow::anyhow!("pull secret {secret:?}: {PULL_SECRET_KEY} is not text"))?;
    crate::registry::parse(text)
        .with_context(|| format!("pull secret {secret:?}: reading its {PULL_SECRET_KEY}"))
}
/// The default mode of a secret file: readable by any user of the
/// container (the directory is visible to that container only).
const DEFAULT_MODE: u32 = 0o444;

pub struct Secrets {
    key: Arc<HostKey>,
    store: Arc<dyn DesiredStore>,
    root: PathBuf,
    require_tmpfs: bool,
    /// Whether `root` is ready for files (the tmpfs mounted), once the
    /// first file secret asked: a host that never gets one mounts nothing.
    ready: parking_lot::Mutex<Option<Result<(), String>>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Deletes every secret file under the secrets directory (the
    /// directory itself, a tmpfs mount point, stays).
    pub fn wipe(&self) -> Result<()> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err).with_context(|| format!("reading {}", self.root.display())),
        };
        for entry in entries {
            let path = entry?.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("deleting {}", path.display()))?;
        }
        Ok(())
    }

    /// File secrets go under `root`, which must be a tmpfs: if it is not
    /// one when the first file secret is written, one is mounted there
    /// (mode 0700). With `require_tmpfs` false (the fleet simulator only),
    /// any directory will do.
    pub fn new(
        key: Arc<HostKey>,
        store: Arc<dyn DesiredStore>,
        root: PathBuf,
        require_tmpfs: bool,
    ) -> Secrets {
        Secrets {
            key,
            store,
            root,
            require_tmpfs,
            ready: parking_lot::Mutex::new(None),
        }
    }

    /// Prepares the root on first use; a failure is kept (and logged once).
    fn root_ready(&self) -> Result<(), String> {
        let mut ready = self.ready.lock();
        ready
            .get_or_insert_with(|| {
                prepare_root(&self.root, self.require_tmpfs).map_err(|err| {
                    let reason = format!("{err:#}");
                    tracing::warn!(root = %self.root.display(), %reason, "file secrets are not available on this host");
                    reason
                })
            })
            .clone()
    }

    async fn open(&self, name: &str, version: u64) -> Result<Values> {
        let sealed = self
            .store
            .sealed_secret(name, version)
            .await?
            .with_context(|| format!("secret {name:?} version {version} is not on this host"))?;
        self.key
            .open(&seal::context(name, version), &sealed)
            .with_context(|| format!("opening secret {name:?} version {version}"))
    }

    fn dir(&self, name: &str, spec_hash: &str) -> PathBuf {
        self.root.join(format!("{name}-{spec_hash}"))
    }

    /// The registry credentials of a container's `imagePullSecret`, at the
    /// versions given (none without one): what pre-staging pulls with.
    pub async fn pull_credentials(
        &self,
        container: &Container,
        versions: &BTreeMap<String, u64>,
    ) -> Result<Vec<Credential>> {
        let Some(used) = container.secret_uses().find(|u| u.field == UseField::PullSecret) else {
            return Ok(Vec::new());
        };
        let version = versions
            .get(used.secret)
            .with_context(|| format!("the desired state names no version of secret {:?}", used.secret))?;
        registry_credentials(used.secret, &self.open(used.secret, *version).await?)
    }

    /// Opens what a container uses, writes its files, and returns its
    /// environment values and mounts. Called before the container is
    /// created or started again, so an empty tmpfs (a reboot) is refilled.
    pub async fn prepare(&self, want: &DesiredContainer) -> Result<Prepared> {
        let container = &want.container;
        let mut prepared = Prepared::default();
        let uses: Vec<_> = container.secret_uses().collect();
        if uses.is_empty() {
            return Ok(prepared);
        }
        let mut opened: BTreeMap<&str, Values> = BTreeMap::new();
        for used in &uses {
            if !opened.contains_key(used.secret) {
                let version = want.secrets.get(used.secret).with_context(|| {
                    format!("the desired state names no version of secret {:?}", used.secret)
                })?;
                opened.insert(used.secret, self.open(used.secret, *version).await?);
            }
        }
        for used in uses.iter().filter(|u| u.field == UseField::PullSecret) {
            prepared.registry = registry_credentials(used.secret, &opened[used.secret])?;
        }
        for used in &uses {
            if let UseField::Env(variable) = used.field {
                let key = used.key.unwrap_or_default();
                let bytes = opened[used.secret]
                    .0
                    .get(key)
                    .with_context(|| format!("secret {:?} has no key {key:?} on this host", used.secret))?;
                let text = std::str::from_utf8(bytes).map_err(|_| {
                    anyhow::anyhow!(
                        "env {variable}: key {key:?} of secret {:?} is not UTF-8 text; mount it as a file",
                        used.secret
                    )
                })?;
                prepared
                    .env
                    .push((variable.to_string(), Zeroizing::new(text.to_string())));
            }
        }
        if container.secrets.is_empty() {
            return Ok(prepared);
        }
        if let Err(reason) = self.root_ready() {
            bail!("file secrets cannot be written on this host: {reason}");
        }
        let dir = self.dir(&want.name, &want.spec_hash);
        create_dir(&dir, 0o700)?;
        for (i, mount) in container.secrets.iter().enumerate() {
            let source = dir.join(format!("m{i}"));
            write_mount(&source, mount, &opened[mount.secret.as_str()])?;
            prepared.mounts.push((source, mount.path.clone()));
        }
        write_versions(&dir, &file_versions(want))?;
        Ok(prepared)
    }

    /// Brings the files of running containers up to the desired versions
    /// (what a `signal` or `none` container gets instead of a restart), and
    /// returns the containers to signal: (container id, signal).
    pub async fn refresh(
        &self,
        desired: &[DesiredContainer],
        observed: &[Observed],
    ) -> Vec<(String, String)> {
        let mut signals = Vec::new();
        for want in desired.iter().filter(|w| !w.container.secrets.is_empty()) {
            let running = observed
                .iter()
                .find(|o| o.running && o.spec_hash == want.spec_hash && base_name(&o.name) == want.name);
            let Some(running) = running else { continue };
            let dir = self.dir(&want.name, &want.spec_hash);
            let wanted = file_versions(want);
            let written = read_versions(&dir);
            if written.as_ref() == Some(&wanted) {
                continue;
            }
            let had_files = written.is_some();
            match self.prepare(want).await {
                Ok(_) => {
                    let signal = want.container.on_secret_change.as_ref().and_then(|c| c.signal());
                    tracing::info!(container = %running.name, signal = signal.unwrap_or("none"), "secret files updated in place");
                    if let Some(signal) = signal
                        && had_files
                    {
                        signals.push((running.id.clone(), signal.to_string()));
                    }
                }
                Err(err) => {
                    tracing::warn!(container = %running.name, err = format!("{err:#}"), "updating secret files");
                }
            }
        }
        signals
    }

    /// Removes the directories of containers that no longer exist.
    pub fn sweep(&self, observed: &[Observed]) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        let live: BTreeSet<String> = observed
            .iter()
            .map(|o| format!("{}-{}", base_name(&o.name), o.spec_hash))
            .collect();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !live.contains(&name) {
                if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(dir = %entry.path().display(), %err, "removing old secret files");
                } else {
                    tracing::info!(dir = %name, "secret files removed");
                }
            }
        }
    }
}

/// A container's name without the `.next` of a new generation.
fn base_name(name: &str) -> &str {
    name.strip_suffix(&next_name("")).unwrap_or(name)
}

/// The versions of the secrets a container has as files.
fn file_versions(want: &DesiredContainer) -> BTreeMap<String, u64> {
    want.container
        .secrets
        .iter()
        .filter_map(|m| Some((m.secret.to_string(), *want.secrets.get(m.secret.as_str())?)))
        .collect()
}

fn read_versions(dir: &Path) -> Option<BTreeMap<String, u64>> {
    serde_json::from_slice(&std::fs::read(dir.join(VERSIONS)).ok()?).ok()
}

fn write_versions(dir: &Path, versions: &BTreeMap<String, u64>) -> Result<()> {
    replace_file(&dir.join(VERSIONS), &serde_json::to_vec(versions)?, 0o600)
}

fn prepare_root(root: &Path, require_tmpfs: bool) -> Result<()> {
    create_dir(root, 0o700)?;
    if !require_tmpfs || is_tmpfs(root)? {
        return Ok(());
    }
    use nix::mount::{MsFlags, mount};
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700,size=64m"),
    )
    .with_context(|| {
        format!(
            "{} is not a tmpfs and one cannot be mounted there (the agent needs root for that, or mount a tmpfs there yourself)",
            root.display()
        )
    })?;
    tracing::info!(root = %root.display(), "mounted a tmpfs for secret files");
    Ok(())
}

fn is_tmpfs(path: &Path) -> Result<bool> {
    let stat = nix::sys::statfs::statfs(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(stat.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

fn create_dir(dir: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

/// Writes a file under a temporary name and renames it into place.
fn replace_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let file_name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.new"));
    write_new(&temporary, contents, mode)?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)?;
    // The umask may have narrowed the mode; it must be what was asked.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// One mount: a directory with every key as a file, or one key as a file.
fn write_mount(source: &Path, mount: &SecretMount, values: &Values) -> Result<()> {
    let mode = mount.mode.as_ref().map_or(DEFAULT_MODE, |m| m.bits());
    match &mount.key {
        Some(key) => {
            let value = values.0.get(key.as_str()).with_context(|| {
                format!(
                    "secret {:?} has no key {key:?} on this host",
                    mount.secret.as_str()
                )
            })?;
            if source.is_file() {
                // A bind-mounted file keeps its inode: rewrite it in place.
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(source)
                    .with_context(|| format!("opening {}", source.display()))?;
                file.write_all(value)?;
                file.set_len(value.len() as u64)?;
                file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            } else {
                write_new(source, value, mode)?;
            }
        }
        None => {
            create_dir(source, 0o755)?;
            for (key, value) in &values.0 {
                replace_file(&source.join(key), value, mode)?;
            }
            // Keys the new version no longer has go.
            for entry in std::fs::read_dir(source)?.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if !values.0.contains_key(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    Ok(())
}
