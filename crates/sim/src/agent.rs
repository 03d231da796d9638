//! One simulated site: the real agent stack (enrollment, certificate, TLS
//! session, reconciler, health prober) with its runtime and its store in
//! memory, and a fixed set of host facts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use anyhow::Result;
use outpost_agent::identity::{self, Credentials};
use outpost_agent::outbox::Outbox;
use outpost_agent::reconciler::Reconciler;
use outpost_agent::secrets::Secrets;
use outpost_agent::session::Session;
use outpost_agent::stage::Stager;
use outpost_agent::store::DesiredStore;
use outpost_agent::streams::Streams;
use outpost_api::workload::SiteState;
use outpost_proto::v1::{SealedSecret, StatusReport};
use tokio::sync::watch;

use crate::runtime::{Images, MemoryRuntime};

/// The desired state and sealed secrets, kept in memory: a simulated host
/// never reboots.
#[derive(Default)]
struct MemoryStore {
    desired: Mutex<(u64, SiteState)>,
    sealed: Mutex<BTreeMap<(String, u64), Vec<u8>>>,
}

#[async_trait::async_trait]
impl DesiredStore for MemoryStore {
    async fn desired(&self) -> Result<(u64, SiteState)> {
        Ok(self.desired.lock().clone())
    }

    async fn save_desired(&self, revision: u64, state: &SiteState, secrets: &[SealedSecret]) -> Result<()> {
        *self.desired.lock() = (revision, state.clone());
        let referenced = outpost_proto::codec::secret_versions(state);
        let mut sealed = self.sealed.lock();
        for secret in secrets {
            sealed.insert((secret.name.clone(), secret.version), secret.sealed.clone());
        }
        sealed.retain(|key, _| referenced.contains(key));
        Ok(())
    }

    async fn sealed_secret(&self, name: &str, version: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.sealed.lock().get(&(name.to_string(), version)).cloned())
    }

    async fn save_imported(&self, _revision: u64, _state: &SiteState, _created_ms: u64) -> Result<()> {
        anyhow::bail!("a simulated host imports no bundles")
    }

    async fn imported(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

fn facts(host: &str) -> BTreeMap<String, String> {
    [
        ("hostname", host),
        ("os", "linux"),
        ("arch", "amd64"),
        ("kernel", "6.1.0-sim"),
        ("cpus", "4"),
        ("memory", "8Gi"),
        ("disk", "64Gi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Enrolls one simulated host; its key and certificate go under `dir`.
pub async fn enroll(dir: &Path, server: &str, token: &str, host: &str) -> Result<Credentials> {
    std::fs::create_dir_all(dir)?;
    identity::enroll(dir, server, token, host).await
}

/// A running simulated site.
pub struct SimSite {
    pub site: String,
    pub runtime: Arc<MemoryRuntime>,
    /// True while its session with the control plane is up.
    pub connected: watch::Receiver<bool>,
    /// Its application topics, if the run measures streams.
    pub streams: Option<Arc<Streams>>,
}

impl SimSite {
    /// Starts the agent of an enrolled host; it runs until `shutdown`.
    /// Its secret files go under `secrets_dir` (a plain directory: the
    /// simulator mounts no tmpfs).
    pub fn start(
        credentials: Credentials,
        secrets_dir: PathBuf,
        start_delay: Duration,
        images: Images,
        outbox: Arc<dyn Outbox>,
        streams: Option<Arc<Streams>>,
        shutdown: watch::Receiver<bool>,
    ) -> SimSite {
        let identity = credentials.identity;
        let runtime = Arc::new(MemoryRuntime::new(start_delay, images));
        let (desired_sender, desired) = watch::channel((0, SiteState::default()));
        let desired_sender = Arc::new(desired_sender);
        let (status_sender, status) = watch::channel(StatusReport::default());
        let status_sender = Arc::new(status_sender);
        let (connected_sender, connected) = watch::channel(false);
        let store = Arc::new(MemoryStore::default());
        let secrets = Arc::new(Secrets::new(
            credentials.host_key,
            store.clone(),
            secrets_dir,
            false,
        ));
        let stager = Stager::new(
            runtime.clone(),
            &identity.host,
            desired.clone(),
            status_sender.clone(),
            secrets.clone(),
            None,
        );
        tokio::spawn(stager.run(shutdown.clone()));
        if let Some(streams) = &streams {
            tokio::spawn(outpost_agent::streams::configure(
                streams.clone(),
                desired.clone(),
                shutdown.clone(),
            ));
        }
        let reconciler = Reconciler::new(
            runtime.clone(),
            &identity.site,
            &identity.host,
            desired,
            status_sender,
            outbox.clone(),
            secrets.clone(),
        );
        tokio::spawn(reconciler.run(shutdown.clone()));
        let host = identity.host.clone();
        let session = Session {
            server: identity.server.clone(),
            tls: credentials.tls,
            store,
            runtime: runtime.clone(),
            outbox: outbox.clone(),
            discover: Box::new(move || facts(&host)),
            facts: facts(&identity.host),
            desired: desired_sender,
            status,
            connected: connected_sender,
            mode: outpost_agent::session::Mode::Stream,
            site_address: None,
            streams: streams.clone(),
            cluster: None,
            secrets,
            trust: credentials.trust.clone(),
            renew_now: Arc::new(tokio::sync::Notify::new()),
        };
        tokio::spawn(session.run(shutdown));
        SimSite {
            site: identity.site,
            runtime,
            connected,
            streams,
        }
    }

    /// Whether every container this site runs is at `version` (and it runs some).
    pub fn runs(&self, version: &str) -> bool {
        let running = self.runtime.running();
        let running = running.borrow();
        !running.is_empty() && running.values().all(|v| v == version)
    }
}
