//! The agent's command line and how it starts: `outpost agent FLAGS` and
//! `outpost-agent FLAGS` take the same flags and run the same code.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

/// The flags of the edge agent of one host.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The control plane's agent address, or its replicas' as a list
    /// (URL1,URL2,...: the agent moves to another when its replica goes);
    /// needed to enroll, and replaces the stored one when given later
    #[arg(long, value_name = "URL[,URL...]")]
    pub server: Option<String>,
    /// Single-use token from `outpost token create` (only for the first start)
    #[arg(
        long,
        value_name = "TOKEN",
        env = "OUTPOST_JOIN_TOKEN",
        hide_env_values = true
    )]
    pub join_token: Option<String>,
    /// Where the agent keeps its key, certificate and local store
    #[arg(long, value_name = "DIR", default_value = "/var/lib/outpost-agent")]
    pub data_dir: PathBuf,
    /// This host's name in its site [default: the machine's host name]
    #[arg(long, value_name = "NAME")]
    pub host_name: Option<String>,
    /// The container runtime
    #[arg(long, value_enum, default_value_t = RuntimeKind::Docker)]
    pub runtime: RuntimeKind,
    /// Registry credentials for pulls, as a Docker config.json
    /// [default: $DOCKER_CONFIG/config.json or ~/.docker/config.json, if present]
    #[arg(long, value_name = "FILE")]
    pub registry_auth: Option<PathBuf>,
    /// The most disk the queue of events, logs and metrics waiting for the
    /// control plane may use; past it the oldest are dropped (and counted)
    #[arg(long, value_name = "SIZE", default_value = "64Mi")]
    pub queue_size: outpost_api::quantity::Size,
    /// Where to serve Prometheus metrics at /metrics (keep it on loopback
    /// or a management network; there is no authentication)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7802")]
    pub metrics_listen: std::net::SocketAddr,
    /// How often CPU and memory of the host and its instances are sampled
    /// and sent (each sample is one record; mind a metered link)
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub sample_every: outpost_api::quantity::Duration,
    /// stream: one long-lived session; poll: a short call every --interval
    /// and no connection in between (changes wait for the next poll)
    #[arg(long, value_enum, default_value_t = AgentMode::Stream)]
    pub mode: AgentMode,
    /// Polling mode: how often to poll (the control plane may ask for another)
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub interval: outpost_api::quantity::Duration,
    /// The disk the images this agent pulled may take; past it, the
    /// oldest that no current or previous version needs are removed
    #[arg(long, value_name = "SIZE", default_value = "20Gi")]
    pub image_budget: outpost_api::quantity::Size,
    /// Where secret files are written: the agent mounts a tmpfs at
    /// DIR/SITE.HOST (it needs root for that, unless one is there)
    #[arg(long, value_name = "DIR", default_value = outpost_agent::DEFAULT_SECRETS_DIR)]
    pub secrets_dir: PathBuf,
    /// Listen here for the other hosts of this site (mutual TLS with the
    /// hosts' own certificates): they fetch images from each other
    /// before they ask the registry
    #[arg(long, value_name = "ADDR")]
    pub site_listen: Option<std::net::SocketAddr>,
    /// Where the other hosts of the site reach this one [default: the
    /// --site-listen address, which then must not be 0.0.0.0 or [::]]
    #[arg(long, value_name = "HOST:PORT", requires = "site_listen")]
    pub site_address: Option<String>,
    /// Where containers reach their application's streams: ADDR:PORT,
    /// or bridge:PORT for the gateway of the engine's default bridge
    #[arg(long, value_name = "ADDR", default_value = outpost_agent::streams::endpoint::DEFAULT_LISTEN)]
    pub streams_listen: outpost_agent::streams::endpoint::Listen,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AgentMode {
    Stream,
    Poll,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RuntimeKind {
    /// The Docker Engine API (also Podman's compatible socket), via DOCKER_HOST or the default socket
    Docker,
    /// Native processes (each container's command), for hosts without a container engine
    Process,
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(args: AgentArgs) -> Result<()> {
    crate::process::init_logging();
    crate::process::raise_open_file_limit();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::process::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let config = outpost_agent::Config {
        data_dir: args.data_dir,
        server: args.server,
        join_token: args.join_token,
        host_name: args.host_name,
        registry_auth: args.registry_auth,
        queue_limit: args.queue_size.0,
        metrics_listen: Some(args.metrics_listen),
        sample_every: args.sample_every.as_std().max(std::time::Duration::from_secs(1)),
        mode: match args.mode {
            AgentMode::Stream => outpost_agent::session::Mode::Stream,
            AgentMode::Poll => outpost_agent::session::Mode::Poll(
                args.interval.as_std().max(std::time::Duration::from_secs(1)),
            ),
        },
        runtime: match args.runtime {
            RuntimeKind::Docker => outpost_agent::RuntimeKind::Docker,
            RuntimeKind::Process => outpost_agent::RuntimeKind::Process,
        },
        secrets_dir: args.secrets_dir,
        image_budget: args.image_budget.0,
        site: outpost_agent::peers::listening(args.site_listen, args.site_address.as_deref())?,
        streams_listen: Some(args.streams_listen),
    };
    outpost_agent::run(config, stopped).await
}
