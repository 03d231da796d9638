//! The Outpost control plane: store, certificate authority, admin
//! credentials and the operator REST API over HTTPS.

pub mod agent_listener;
pub mod api;
pub mod auth;
mod chores;
pub mod console;
pub mod enrollment;
pub mod fleet;
pub mod gateway;
pub mod oidc;
pub mod pki;
pub mod plan;
pub mod presence;
pub mod replicas;
pub mod revocation;
pub mod secrets;
pub mod server;
pub mod status;
pub mod store;
pub mod streams;
pub mod witness;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use outpost_api::client_config::ClientConfig;
use tokio::net::TcpListener;

use crate::enrollment::Enrollments;
use crate::fleet::Fleet;
use crate::pki::Pki;
use crate::revocation::Revocations;
use crate::secrets::Secrets;
pub use crate::store::StoreUrl;
use crate::store::{Storage, open_store};

/// Where the admin credentials are written, inside the data directory.
pub const ADMIN_CONFIG: &str = "admin.yaml";

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Where agents connect (gRPC over mutual TLS).
    pub agent_listen: SocketAddr,
    /// Extra names (DNS or IP) for the server certificate.
    pub tls_san: Vec<String>,
    /// Where other replicas reach this one's REST API (`None`: `url`).
    pub advertise: Option<String>,
    pub retention: Retention,
    /// The interval polling agents are told to use (`None`: their own).
    pub poll_interval: Option<std::time::Duration>,
    /// Connections one address may hold on the agent port before they
    /// present a host certificate.
    pub max_unauthenticated_per_source: usize,
    /// The key-encryption key file of secrets (`None`: `secrets.key` in
    /// the data directory).
    pub secrets_key_file: Option<PathBuf>,
    /// A PostgreSQL database for the store (`None`: SQLite, `outpost.db`
    /// in the data directory).
    pub store: Option<StoreUrl>,
    /// A NATS server whose JetStream gets every stored up-record.
    pub streams_nats: Option<String>,
    /// Rotate every site's underlay keys this long after their last
    /// rotation (`None`: only when the operator asks).
    pub site_key_rotation: Option<std::time::Duration>,
    pub host_certificates: HostCertificates,
    /// The OpenID Connect provider users sign in with (`outpost login`).
    pub oidc: Option<oidc::OidcConfig>,
}

/// How long host certificates live, and how long after expiry a host may
/// still renew with its old key (after that it must enroll again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCertificates {
    pub lifetime: std::time::Duration,
    pub grace: std::time::Duration,
}

impl Default for HostCertificates {
    fn default() -> Self {
        HostCertificates {
            lifetime: std::time::Duration::from_secs(30 * 86_400),
            grace: std::time::Duration::from_secs(7 * 86_400),
        }
    }
}

/// How long what agents send up is kept, counted from its arrival.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub events: std::time::Duration,
    pub logs: std::time::Duration,
    pub metrics: std::time::Duration,
    /// Application stream records (up: from arrival; down: from publishing).
    pub streams: std::time::Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
        Retention {
            events: DAY * 30,
            logs: DAY * 7,
            metrics: DAY * 30,
            streams: DAY * 7,
        }
    }
}

/// `outpost control rotate-secrets-key`: a new key-encryption key, every
/// data key re-wrapped with it, the old key dropped. Safe while the control
/// plane runs (it reads the new key when it first meets it). Returns the
/// new key's id and how many versions were re-wrapped.
pub async fn rotate_secrets_key(
    data_dir: &Path,
    store: Option<&StoreUrl>,
    key_file: Option<&Path>,
) -> Result<(String, usize)> {
    if store.is_none() && !data_dir.join("outpost.db").exists() {
        anyhow::bail!("{} holds no control plane (no outpost.db)", data_dir.display());
    }
    let store = open_store(data_dir, store).await?;
    let keyring = secrets::open_keyring(data_dir, key_file).context("opening the secrets key")?;
    let rotated = Secrets::new(store.clone(), keyring).rotate_key().await;
    store.close().await;
    rotated
}

/// A control plane that is listening; `serve` runs it until shutdown.
pub struct ControlPlane {
    pub local_addr: SocketAddr,
    /// The URL written into `admin.yaml`.
    pub url: String,
    /// Where agents connect: `https://…:7801`.
    pub agent_url: String,
    pub admin_config: PathBuf,
    listener: TcpListener,
    agent_listener: TcpListener,
    store: Arc<dyn Storage>,
    fleet: Arc<Fleet>,
    pki: Arc<Pki>,
    tls: Arc<rustls::ServerConfig>,
    agent_tls: Arc<rustls::ServerConfig>,
    revocations: Arc<Revocations>,
    secrets: Arc<Secrets>,
    retention: Retention,
    poll_interval: Option<std::time::Duration>,
    streams_nats: Option<String>,
    site_key_rotation: Option<std::time::Duration>,
    host_certificates: HostCertificates,
    oidc: Option<Arc<oidc::Oidc>>,
    max_unauthenticated_per_source: usize,
    /// The PostgreSQL database other replicas may share (`None`: SQLite,
    /// where this control plane is the only one).
    shared_store: Option<StoreUrl>,
    /// Where the other replicas reach this one's REST API.
    advertised: String,
}

impl ControlPlane {
    /// Prepares the data directory (store, CA, admin credentials) and binds
    /// the listener; nothing is served until `serve`.
    pub async fn start(config: &Config) -> Result<ControlPlane> {
        outpost_files::create_private_dir(&config.data_dir)?;
        let store = open_store(&config.data_dir, config.store.as_ref()).await?;
        let listener = bind(config.listen, "--listen").await?;
        let agent_listener = bind(config.agent_listen, "--agent-listen").await?;
        let local_addr = listener.local_addr()?;
        let url = local_url(local_addr);
        let agent_url = local_url(agent_listener.local_addr()?);

        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        if let Some(host) = host_name() {
            names.push(host);
        }
        if !local_addr.ip().is_unspecified() {
            names.push(local_addr.ip().to_string());
        }
        names.extend(config.tls_san.iter().cloned());
        names.dedup();
        let keyring = secrets::open_keyring(&config.data_dir, config.secrets_key_file.as_deref())
            .context("opening the secrets key")?;
        let secrets = Arc::new(Secrets::new(store.clone(), keyring));
        // Replicas sharing a store share its CA: the files in `tls` are a
        // copy of what the store holds.
        let tls_dir = config.data_dir.join("tls");
        let pulled = if store.shared() {
            replicas::pull_authority(store.as_ref(), &secrets, &tls_dir)
                .await
                .context("reading the CA the store holds")?
        } else {
            replicas::Pulled::Same
        };
        let pki = Arc::new(Pki::load_or_create(&tls_dir, &names).context("preparing certificates")?);
        if pulled == replicas::Pulled::Nothing {
            replicas::share_authority(store.as_ref(), &secrets, &pki)
                .await
                .context("storing the CA for the other replicas")?;
        }
        let tls = server::tls_config(&pki)?;
        let agent_tls = agent_listener::tls_config(&pki, config.host_certificates.grace)?;
        let revocations = Revocations::load(store.as_ref())
            .await
            .context("loading revoked certificates")?;

        let admin_config = config.data_dir.join(ADMIN_CONFIG);
        write_admin_config(&admin_config, &url, &pki, store.as_ref()).await?;
        let fleet = Fleet::new(store.clone());
        fleet.recompute().await.context("computing what each site runs")?;
        let shared_store = config.store.clone().filter(|_| store.shared());
        let advertised = config.advertise.clone().unwrap_or_else(|| url.clone());
        Ok(ControlPlane {
            local_addr,
            url,
            agent_url,
            admin_config,
            listener,
            agent_listener,
            store,
            fleet,
            pki,
            tls,
            agent_tls,
            revocations,
            secrets,
            retention: config.retention,
            poll_interval: config.poll_interval,
            streams_nats: config.streams_nats.clone(),
            site_key_rotation: config.site_key_rotation,
            host_certificates: config.host_certificates,
            oidc: config
                .oidc
                .clone()
                .map(oidc::Oidc::new)
                .transpose()
                .context("preparing sign-in")?
                .map(Arc::new),
            max_unauthenticated_per_source: config.max_unauthenticated_per_source,
            shared_store,
            advertised,
        })
    }

    /// Serves the REST API and the agent gateway until `shutdown` completes,
    /// then drains both and closes the store.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let enrollments = Arc::new(Enrollments::default());
        let router = api::router(api::AppState {
            store: self.store.clone(),
            fleet: self.fleet.clone(),
            pki: self.pki.clone(),
            revocations: self.revocations.clone(),
            enrollments: enrollments.clone(),
            secrets: self.secrets.clone(),
            oidc: self.oidc.clone(),
            refusals: Arc::default(),
        });
        // The console calls the API's router (and its policy layer) in-process.
        let router = router.clone().merge(console::router(router));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let signal = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        tracing::info!(url = %self.url, agents = %self.agent_url, admin = %self.admin_config.display(), "control plane listening");
        // Every session holds a sender: when all are gone, so are the sessions.
        let (live, mut sessions_ended) = tokio::sync::mpsc::channel::<()>(1);
        let gateway = gateway::Gateway {
            store: self.store.clone(),
            fleet: self.fleet.clone(),
            pki: self.pki.clone(),
            shutdown: stopped.clone(),
            live,
            poll_interval: self.poll_interval,
            revocations: self.revocations.clone(),
            enrollments,
            secrets: self.secrets.clone(),
            certificates: self.host_certificates,
        };
        // The leader steps rollouts, prunes and rotates site keys: on
        // SQLite always this control plane, on PostgreSQL one replica.
        let (leader, leading) = tokio::sync::watch::channel(self.shared_store.is_none());
        let replicas = self.shared_store.clone().map(|url| {
            let followed = replicas::Followed {
                store: self.store.clone(),
                fleet: self.fleet.clone(),
                revocations: self.revocations.clone(),
                pki: self.pki.clone(),
                secrets: self.secrets.clone(),
            };
            [
                tokio::spawn(replicas::lead(url.clone(), leader, stopped.clone())),
                tokio::spawn(replicas::follow(url, followed, stopped.clone())),
                tokio::spawn(replicas::share_presence(
                    self.store.clone(),
                    self.fleet.clone(),
                    self.advertised.clone(),
                    leading.clone(),
                    stopped.clone(),
                )),
            ]
        });
        let engine = tokio::spawn(chores::run_rollouts(
            self.fleet.clone(),
            leading.clone(),
            signal(stopped.clone()),
        ));
        // admin.yaml trusts the CAs in force after each rotation and retirement.
        let admin_cas = {
            let (pki, store) = (self.pki.clone(), self.store.clone());
            let (path, url) = (self.admin_config.clone(), self.url.clone());
            let mut cas = pki.subscribe();
            let stop = signal(stopped.clone());
            tokio::spawn(async move {
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        Ok(()) = cas.changed() => {}
                        () = &mut stop => return,
                    }
                    if let Err(err) = write_admin_config(&path, &url, &pki, store.as_ref()).await {
                        tracing::error!(err = format!("{err:#}"), "updating admin.yaml with the new CAs");
                    }
                }
            })
        };
        let writing = tokio::spawn(chores::write_heard(
            self.store.clone(),
            self.fleet.clone(),
            signal(stopped.clone()),
        ));
        let pruning = tokio::spawn(chores::prune(
            self.store.clone(),
            self.retention,
            leading.clone(),
            signal(stopped.clone()),
        ));
        let rotating = self.site_key_rotation.map(|every| {
            tokio::spawn(chores::rotate_site_keys(
                self.store.clone(),
                self.fleet.clone(),
                every,
                leading.clone(),
                signal(stopped.clone()),
            ))
        });
        let forwarding = self.streams_nats.clone().map(|url| {
            tokio::spawn(streams::nats::forward(
                url,
                self.store.clone(),
                self.secrets.clone(),
                self.fleet.streams.clone(),
                stopped.clone(),
            ))
        });
        let incoming = agent_listener::incoming(
            self.agent_listener,
            self.agent_tls,
            self.revocations.clone(),
            self.max_unauthenticated_per_source,
        );
        let agents = tokio::spawn(serve_agents(incoming, gateway, signal(stopped.clone())));
        let api = tokio::spawn(server::serve(self.listener, self.tls, router, signal(stopped)));
        shutdown.await;
        let _ = stop.send(true);
        let _ = api.await;
        let _ = engine.await;
        let _ = admin_cas.await;
        let _ = pruning.await;
        let _ = writing.await;
        for task in replicas.into_iter().flatten() {
            let _ = task.await;
        }
        if let Some(rotating) = rotating {
            let _ = rotating.await;
        }
        if let Some(forwarding) = forwarding {
            let _ = forwarding.await;
        }
        match agents.await {
            Ok(Err(err)) => tracing::error!(%err, "the agent gateway failed"),
            Err(err) => tracing::error!(%err, "the agent gateway task failed"),
            Ok(Ok(())) => {}
        }
        // Sessions record when their host was last seen as they end.
        let drained = std::time::Duration::from_secs(10);
        if tokio::time::timeout(drained, sessions_ended.recv())
            .await
            .is_err()
        {
            tracing::warn!("agent sessions did not end within {drained:?}; closing the store anyway");
        }
        // What the sessions heard last.
        if let Err(err) = self.store.record_heard(&self.fleet.presence.take_heard()).await {
            tracing::warn!(
                err = err.detail(),
                "writing down the hosts' last heartbeats and bytes"
            );
        }
        self.store.close().await;
        tracing::info!("control plane stopped");
    }
}

async fn bind(address: SocketAddr, flag: &str) -> Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| {
        format!("listening on {address} (is another control plane running? pick another address with {flag})")
    })
}

async fn serve_agents(
    incoming: impl futures_util::Stream<Item = std::io::Result<agent_listener::AgentConnection>> + Send + 'static,
    gateway: gateway::Gateway,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    // TLS is done by the listener (deadlines, per-source limits, the deny
    // list); client certificates are optional there so that a new host can
    // call Enroll, and every other call checks the certificate itself.
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(outpost_proto::codec::KEEPALIVE))
        .add_service(outpost_proto::v1::agent_gateway_server::AgentGatewayServer::new(
            gateway,
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// An error and its sources on one line, for the log:
/// `batch 3 holds an unreadable record: expected value at line 1 column 2`.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn local_url(addr: SocketAddr) -> String {
    let port = addr.port();
    match addr.ip() {
        ip if ip.is_unspecified() => format!("https://127.0.0.1:{port}"),
        std::net::IpAddr::V6(ip) => format!("https://[{ip}]:{port}"),
        ip => format!("https://{ip}:{port}"),
    }
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    (!name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    .then_some(name)
}

/// Writes `admin.yaml` (mode 0600). On first start this issues the admin
/// token; later starts keep its token and refresh the URL and CA. If the file
/// was removed, a new admin token is issued (the old one stays valid).
async fn write_admin_config(path: &Path, url: &str, pki: &Pki, store: &dyn Storage) -> Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(
            outpost_api::yaml::from_str::<ClientConfig>(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let token = match existing.as_ref().and_then(|c| c.context(None)) {
        Some(context) => context.token.clone(),
        None => {
            let token = auth::new_token();
            let hash = auth::hash_token(&token);
            // The hash's prefix names the token in the audit trail without revealing it.
            let name = format!("admin-{}", &hash[..8]);
            let info = outpost_api::access::TokenInfo {
                name: name.clone(),
                user: "admin".to_string(),
                role: outpost_api::access::Role::Admin,
                tenant: outpost_api::access::PROVIDER.to_string(),
                sites: None,
                created_at: crate::store::now_rfc3339(),
                created_by: None,
                expires_at: None,
                revoked_at: None,
            };
            store.add_api_token(&info, &hash).await?;
            tracing::info!(token_name = %name, "issued an admin API token");
            token
        }
    };
    let config = ClientConfig::single("default", url, &pki.trusted_pem(), &token);
    let text = serde_saphyr::to_string(&config).context("writing the admin configuration")?;
    outpost_files::write_private(path, text.as_bytes())
}
