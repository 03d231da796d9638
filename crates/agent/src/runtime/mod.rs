//! Container runtimes behind one trait. Docker (or Podman's compatible
//! socket) through bollard today; the process runtime and WebAssembly
//! later.

mod docker;
mod process;

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use async_trait::async_trait;
use outpost_api::manifest::{Container, EnvValue, Health};
use outpost_api::telemetry::LogLine;
use tokio::sync::mpsc;

use crate::plan::{Action, Observed};
use crate::registry::Credential;
use crate::secrets::Prepared;
use zeroize::Zeroizing;

pub use docker::{Docker, local_name};
pub use process::Processes;

/// Labels that mark what this agent owns; it never touches anything else.
pub mod labels {
    pub const MANAGED: &str = "io.outpost.managed";
    pub const SITE: &str = "io.outpost.site";
    pub const HOST: &str = "io.outpost.host";
    pub const APPLICATION: &str = "io.outpost.application";
    pub const SERVICE: &str = "io.outpost.service";
    pub const INSTANCE: &str = "io.outpost.instance";
    pub const DEPLOYMENT: &str = "io.outpost.deployment";
    pub const VERSION: &str = "io.outpost.version";
    pub const CONTAINER: &str = "io.outpost.container";
    pub const SPEC_HASH: &str = "io.outpost.spec-hash";
}

/// Told how far a pull has come: bytes fetched, and bytes in all as far as
/// the registry has said.
pub type Progress<'a> = dyn Fn(u64, u64) + Send + Sync + 'a;

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The containers this agent owns, running or not.
    async fn observe(&self) -> Result<Vec<Observed>>;

    /// The applications that have a network on this host.
    async fn networks(&self) -> Result<BTreeSet<String>>;

    /// Carries out one planned action.
    async fn apply(&self, action: &Action) -> Result<()>;

    /// Runs one health check of a running container (of `application`);
    /// `Err` says why it failed.
    async fn probe(&self, container_id: &str, application: &str, health: &Health) -> Result<()>;

    /// Whether two generations of a container can run side by side while one
    /// replaces the other (not so for native processes sharing ports).
    fn overlap(&self) -> bool {
        true
    }

    /// What a container wrote since `since` (a UNIX time in seconds), oldest
    /// first, at most `tail` lines (the newest). Runtimes without logs
    /// return none.
    async fn logs(&self, container_id: &str, since: i64, tail: usize) -> Result<Vec<LogLine>> {
        let _ = (container_id, since, tail);
        Ok(Vec::new())
    }

    /// A running container's CPU time so far (ns) and memory in use
    /// (bytes); `None` where the runtime cannot tell.
    async fn usage(&self, container_id: &str) -> Result<Option<(u64, u64)>> {
        let _ = container_id;
        Ok(None)
    }

    /// The process whose network namespace a running container has
    /// (`/proc/PID/ns/net`); `None`: it shares the host's.
    async fn namespace(&self, container_id: &str) -> Result<Option<u32>> {
        let _ = container_id;
        Ok(None)
    }

    /// Where this host reaches a running container of `application`.
    async fn address(&self, container_id: &str, application: &str) -> Result<std::net::IpAddr> {
        let _ = (container_id, application);
        Ok(std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// The address containers reach their host at (the gateway of the
    /// engine's default bridge); `None`: they run on the host itself.
    async fn bridge_address(&self) -> Result<Option<std::net::IpAddr>> {
        Ok(None)
    }

    /// The digest (`sha256:…`) of the image `image` (a tag) as its
    /// registry knows it, if the engine holds it from a registry.
    async fn image_digest(&self, image: &str) -> Result<Option<String>> {
        let _ = image;
        Ok(None)
    }

    /// An image's ID and size on disk, if the engine holds it.
    async fn image_size(&self, reference: &str) -> Result<Option<(String, u64)>> {
        let _ = reference;
        Ok(None)
    }

    /// Removes an image reference (the engine refuses one a container uses).
    async fn remove_image(&self, reference: &str) -> Result<()> {
        let _ = reference;
        Ok(())
    }

    /// Sends a signal (`SIGHUP`…) to a running container.
    async fn signal(&self, container_id: &str, signal: &str) -> Result<()> {
        let _ = (container_id, signal);
        anyhow::bail!("this runtime cannot signal a container")
    }

    /// Whether this runtime runs images at all (the process runtime does
    /// not: it has nothing to pre-stage).
    fn has_images(&self) -> bool {
        false
    }

    /// Fetches an image the engine lacks, ahead of the switch that needs it
    /// (pre-staging), calling `progress(fetched, total)` as bytes arrive.
    async fn fetch(&self, image: &str, credentials: &[Credential], progress: &Progress<'_>) -> Result<()> {
        let _ = (image, credentials, progress);
        Ok(())
    }

    /// An image this host holds, as an archive (`docker save`) for a peer
    /// of its site: its ID and its bytes (`None`: not held here).
    async fn export_image(&self, reference: &str) -> Result<Option<(String, crate::peers::Archive)>> {
        let _ = reference;
        Ok(None)
    }

    /// Whether this host is pulling `reference` from its registry now.
    fn is_pulling(&self, reference: &str) -> bool {
        let _ = reference;
        false
    }

    /// The images pulled since the last call (for events).
    fn pulled(&self) -> Vec<String> {
        Vec::new()
    }

    /// A channel that receives a message whenever something this agent owns
    /// changes outside its control (a container died, was removed…).
    fn changes(&self) -> mpsc::Receiver<()>;
}

/// A container's environment: its text values, then the values of its
/// secrets (opened just before it starts).
pub(crate) fn environment(container: &Container, secrets: &Prepared) -> Vec<(String, Zeroizing<String>)> {
    let text = container.env.iter().filter_map(|(name, value)| match value {
        EnvValue::Text(text) => Some((name.clone(), Zeroizing::new(text.clone()))),
        EnvValue::Secret(_) => None,
    });
    text.chain(secrets.env.iter().cloned()).collect()
}

/// A plain HTTP/1.1 GET: a 2xx or 3xx answer is healthy.
pub(crate) async fn http_get(stream: &mut tokio::net::TcpStream, host: &str, path: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: outpost-agent\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .context("sending the check")?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        let n = stream
            .read(&mut head[read..])
            .await
            .context("reading the answer")?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let line = String::from_utf8_lossy(&head[..read]);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| {
            format!(
                "not an HTTP answer: {:?}",
                line.lines().next().unwrap_or_default()
            )
        })?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(anyhow::anyhow!("GET {path} answered {status}"))
    }
}
