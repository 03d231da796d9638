//! The Outpost edge agent: enrollment, the outbound channel to the control
//! plane, the local store and the reconciler.
//!
//! **Architecture Invariant:** the agent acts only on desired state it has
//! persisted, and nothing it does depends on the uplink being up: the
//! reconciler starts from the local store before any connection is tried.

pub mod cluster;
pub mod facts;
pub mod health;
pub mod identity;
pub mod images;
pub mod import;
pub mod journal;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod outbox;
pub mod peers;
pub mod plan;
pub mod reconciler;
pub mod registry;
pub mod runtime;
pub mod samples;
pub mod secrets;
pub mod session;
pub mod stage;
pub mod store;
pub mod streams;
pub mod tls;
pub mod trust;
pub mod underlay;
pub mod uplink;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::store::DesiredStore as _;

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `https://HOST:7801`; needed to enroll, optional afterwards.
    pub server: Option<String>,
    pub join_token: Option<String>,
    /// Defaults to the machine's host name.
    pub host_name: Option<String>,
    pub runtime: RuntimeKind,
    /// A Docker `config.json` with registry credentials; without it,
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` if present.
    pub registry_auth: Option<PathBuf>,
    /// The bound of the outbound queue on disk, in bytes.
    pub queue_limit: u64,
    /// Where `/metrics` is served (a loopback address by default).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How often CPU and memory are sampled and sent.
    pub sample_every: std::time::Duration,
    /// A long-lived session, or a poll every interval.
    pub mode: session::Mode,
    /// Where file secrets are written: a tmpfs per agent in a
    /// `SITE.HOST` directory below it.
    pub secrets_dir: PathBuf,
    /// The disk Outpost's own images may take before the oldest ones that
    /// no current or previous version needs are pruned.
    pub image_budget: u64,
    /// Where this host listens for the other hosts of its site, and where
    /// they reach it (none: it serves no peers, but still asks them).
    pub site: Option<peers::Listening>,
    /// Where the application streams endpoint listens (none: no endpoint;
    /// the topics still fill from the control plane).
    pub streams_listen: Option<streams::endpoint::Listen>,
}

/// Where file secrets go unless `--secrets-dir` says otherwise.
pub const DEFAULT_SECRETS_DIR: &str = "/run/outpost/secrets";

/// Which runtime runs the workloads of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeKind {
    /// The Docker Engine API (or Podman's compatible socket).
    #[default]
    Docker,
    /// Native processes, for hosts without a container engine.
    Process,
}

/// Registry credentials: `explicit`, or the Docker configuration of the
/// user running this (`$DOCKER_CONFIG` or `~/.docker/config.json`), if any.
pub fn registry_credentials(explicit: Option<&std::path::Path>) -> Result<Vec<registry::Credential>> {
    if let Some(path) = explicit {
        return registry::load(path);
    }
    let default = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))
        .map(|dir| dir.join("config.json"));
    match default {
        Some(path) if path.exists() => registry::load(&path),
        _ => Ok(Vec::new()),
    }
}

/// The machine's host name, if it is usable as an Outpost host name.
pub fn default_host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    name.parse::<outpost_api::manifest::Name>()
        .ok()
        .map(|n| n.to_string())
}

/// Runs the agent until `shutdown` becomes true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<()> {
    if let Some(server) = &config.server {
        tls::servers(server)?;
    }
    outpost_files::create_private_dir(&config.data_dir)?;
    let credentials = match identity::load(&config.data_dir)? {
        Some(mut credentials) => {
            if config.join_token.is_some() {
                tracing::info!(site = %credentials.identity.site, host = %credentials.identity.host, "already enrolled; ignoring the join token");
            }
            if let Some(server) = &config.server {
                credentials.identity.server = server.clone();
            }
            credentials
        }
        None => {
            let server = config.server.as_deref().context(
                "this host is not enrolled yet: pass --server https://CONTROL_PLANE:7801 and --join-token",
            )?;
            let token = config.join_token.as_deref().context(
                "this host is not enrolled yet: pass --join-token (from `outpost token create --site SITE`)",
            )?;
            let host = match &config.host_name {
                Some(name) => name
                    .parse::<outpost_api::manifest::Name>()
                    .map_err(|e| anyhow::anyhow!("--host-name: {e}"))?
                    .to_string(),
                None => default_host_name()
                    .context("the machine's host name is not a DNS label: pass --host-name")?,
            };
            let credentials = identity::enroll(&config.data_dir, server, token, &host).await?;
            tracing::info!(site = %credentials.identity.site, host = %credentials.identity.host, "enrolled");
            credentials
        }
    };
    let identity = credentials.identity.clone();
    let store = store::LocalStore::open(&config.data_dir.join("agent.db")).await?;
    let (revision, state) = store.desired().await?;
    // Peers are known by the keys the stored state accepts, from the start
    // (a returning host asks its peers before anything else).
    credentials.peer_tls.keys().accept(&state.key_epochs);
    tracing::info!(site = %identity.site, host = %identity.host, revision, workloads = state.workloads.len(), "starting from the local store");
    let (desired_sender, received) = watch::channel((revision, state.clone()));
    let desired_sender = Arc::new(desired_sender);
    let cluster = match &config.site {
        Some(_) => {
            let shared = cluster::state::Shared::open(
                &identity.site,
                credentials.trust.clone(),
                store.pool(),
                Arc::new(store.clone()),
                desired_sender.clone(),
            )
            .await?;
            Some(
                cluster::Cluster::open(
                    &identity.site,
                    &identity.host,
                    credentials.peer_tls.clone(),
                    store.pool(),
                    shared,
                )
                .await?,
            )
        }
        None => None,
    };
    // What this host runs: the received state (a peer's newer one, if it
    // has one) with the site's moves applied.
    if let Some(cluster) = &cluster {
        cluster.catch_up(&state).await;
    }
    let (revision, state) = received.borrow().clone();
    let effective = match &cluster {
        Some(cluster) => cluster.effective(&state),
        None => state,
    };
    let (effective_sender, desired) = watch::channel((revision, effective));
    let clustering = tokio::spawn(cluster::run(
        cluster.clone(),
        received.clone(),
        Arc::new(effective_sender),
        shutdown.clone(),
    ));
    let (status_sender, status) = watch::channel(outpost_proto::v1::StatusReport::default());
    let status_sender = Arc::new(status_sender);
    let outbox: Arc<dyn outbox::Outbox> =
        Arc::new(outbox::DiskOutbox::open(store.pool(), config.queue_limit).await?);

    let peers = Arc::new(peers::Peers::new(
        &identity.site,
        &identity.host,
        credentials.peer_tls.clone(),
        desired.clone(),
    ));
    let runtime: Arc<dyn runtime::Runtime> = match config.runtime {
        RuntimeKind::Docker => {
            let registry = registry_credentials(config.registry_auth.as_deref())?;
            let docker = runtime::Docker::connect(&identity.site, &identity.host, registry).await?;
            Arc::new(docker.with_peers(peers))
        }
        RuntimeKind::Process => Arc::new(runtime::Processes::new(config.data_dir.join("logs"))?),
    };
    // The site network: with peers to carry connections to.
    let network = config.site.as_ref().map(|_| {
        let relays =
            network::relay::Relays::new(&identity.site, credentials.peer_tls.clone(), desired.clone());
        network::Network::new(&identity.host, runtime.clone(), desired.clone(), relays)
    });
    let networking = network
        .clone()
        .map(|network| tokio::spawn(network.run(shutdown.clone())));
    // The host certificate, short-lived, renewed before it expires (and at
    // once when the control plane's CA changes: `renew_now`).
    let renew_now = Arc::new(tokio::sync::Notify::new());
    let renewing = tokio::spawn(identity::renew(
        config.data_dir.clone(),
        credentials.host_cert.clone(),
        (identity.server.clone(), credentials.tls.clone()),
        renew_now.clone(),
        shutdown.clone(),
    ));
    // The underlay keys the site's hosts know each other by.
    let keeping_keys = network.clone().map(|network| {
        tokio::spawn(underlay::keep(
            credentials.peer_tls.keys().clone(),
            received.clone(),
            (identity.server.clone(), credentials.tls.clone()),
            move || network.relays.forget(),
            shutdown.clone(),
        ))
    });
    let serving_peers = match &config.site {
        Some(listening) => {
            let listener = peers::bind(listening).await?;
            Some(tokio::spawn(peers::serve(
                (listener, listening.clone()),
                credentials.peer_tls.clone(),
                (identity.site.clone(), identity.host.clone()),
                runtime.clone(),
                received.clone(),
                (cluster.clone(), network.clone()),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let streams = Arc::new(streams::Streams::open(store.pool()).await?);
    let configuring = tokio::spawn(streams::configure(
        streams.clone(),
        desired.clone(),
        shutdown.clone(),
    ));
    let endpoint = match &config.streams_listen {
        Some(listen) => {
            streams::endpoint::start(
                listen,
                runtime.as_ref(),
                streams::endpoint::Parts {
                    streams: streams.clone(),
                    pool: &store.pool(),
                    host: &identity.host,
                    desired: desired.clone(),
                },
                shutdown.clone(),
            )
            .await?
        }
        None => None,
    };
    let importing = tokio::spawn(
        import::Importer {
            dir: import::dir(&config.data_dir),
            trust: credentials.trust.clone(),
            site: identity.site.clone(),
            store: Arc::new(store.clone()),
            desired: desired_sender.clone(),
        }
        .run(shutdown.clone()),
    );
    let collecting = tokio::spawn(logs::collect(runtime.clone(), outbox.clone(), shutdown.clone()));
    let sampling = tokio::spawn(samples::sample(
        runtime.clone(),
        outbox.clone(),
        config.sample_every,
        shutdown.clone(),
    ));
    let secrets = Arc::new(secrets::Secrets::new(
        credentials.host_key.clone(),
        Arc::new(store.clone()),
        config
            .secrets_dir
            .join(format!("{}.{}", identity.site, identity.host)),
        true,
    ));
    let cache = images::ImageCache::open(store.pool(), runtime.clone(), config.image_budget).await?;
    let stager = stage::Stager::new(
        runtime.clone(),
        &identity.host,
        desired.clone(),
        status_sender.clone(),
        secrets.clone(),
        Some(cache.clone()),
    );
    let staging = tokio::spawn(stager.run(shutdown.clone()));
    let reconciler = reconciler::Reconciler::new(
        runtime.clone(),
        &identity.site,
        &identity.host,
        desired,
        status_sender,
        outbox.clone(),
        secrets.clone(),
    )
    .with_image_cache(cache);
    let reconciler = match (&network, config.runtime) {
        (Some(_), RuntimeKind::Docker) => reconciler.with_site_network(),
        _ => reconciler,
    };
    let reconciler = match &endpoint {
        Some((endpoint, _)) => reconciler.with_streams(endpoint.clone()),
        None => reconciler,
    };
    let reconciling = tokio::spawn(reconciler.run(shutdown.clone()));
    let (connected_sender, connected) = watch::channel(false);
    let metrics = config.metrics_listen.map(|listen| {
        let sources = metrics::Sources {
            outbox: outbox.clone(),
            status: status.clone(),
            connected,
        };
        tokio::spawn(metrics::serve(listen, sources, shutdown.clone()))
    });
    let (data_dir, host) = (config.data_dir.clone(), identity.host.clone());
    let session = session::Session {
        server: identity.server.clone(),
        tls: credentials.tls,
        store: Arc::new(store.clone()),
        runtime,
        outbox,
        discover: Box::new(move || facts::discover(&data_dir, &host)),
        facts: facts::discover(&config.data_dir, &identity.host),
        desired: desired_sender,
        status,
        connected: connected_sender,
        mode: config.mode,
        site_address: config.site.as_ref().map(|l| l.address.clone()),
        streams: Some(streams),
        cluster,
        secrets,
        trust: credentials.trust.clone(),
        renew_now,
    };
    let session = tokio::spawn(session.run(shutdown));
    let _ = session.await;
    let _ = clustering.await;
    let _ = reconciling.await;
    let _ = staging.await;
    let _ = importing.await;
    let _ = configuring.await;
    for task in [networking, keeping_keys].into_iter().flatten() {
        let _ = task.await;
    }
    let _ = renewing.await;
    if let Some((_, serving)) = endpoint {
        let _ = serving.await;
    }
    if let Some(serving) = serving_peers
        && let Ok(Err(err)) = serving.await
    {
        tracing::warn!(err = format!("{err:#}"), "serving peers");
    }
    let _ = collecting.await;
    let _ = sampling.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    store.close().await;
    tracing::info!("agent stopped; its workloads keep running");
    Ok(())
}
