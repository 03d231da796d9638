//! The `outpost` binary: parses the command line, sets up logging and the
//! TLS provider, and hands over to the control plane or the CLI.

mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use outpost_api::manifest::Kind;
use outpost_cli::output::{self, Format};
use outpost_cli::{CliError, Client, commands};

/// Orchestrates container applications across thousands of edge sites.
#[derive(Debug, Parser)]
#[command(name = "outpost", version, about, propagate_version = true)]
struct Cli {
    /// The CLI configuration file [default: $OUTPOST_CONFIG or ~/.config/outpost/config.yaml]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The context to use instead of the configuration's current one
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane
    Control {
        /// Where the store, certificates and admin.yaml live
        #[arg(long, value_name = "DIR", default_value = "/var/lib/outpost")]
        data_dir: PathBuf,
        /// Address of the REST API (HTTPS)
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7800")]
        listen: std::net::SocketAddr,
        /// Address agents connect to (gRPC over mutual TLS)
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7801")]
        agent_listen: std::net::SocketAddr,
        /// Extra DNS name or IP address for the server certificate (repeatable)
        #[arg(long, value_name = "NAME")]
        tls_san: Vec<String>,
        /// How long events are kept after they arrive
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        event_retention: outpost_api::quantity::Duration,
        /// How long uploaded log lines are kept after they arrive
        #[arg(long, value_name = "DURATION", default_value = "7d")]
        log_retention: outpost_api::quantity::Duration,
        /// How long metric samples are kept after they arrive
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        metric_retention: outpost_api::quantity::Duration,
        /// Tell agents in polling mode to poll this often instead of their own --interval
        #[arg(long, value_name = "DURATION")]
        poll_interval: Option<outpost_api::quantity::Duration>,
    },
    /// Run the edge agent of one host
    Agent {
        /// The control plane's agent address; needed to enroll
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Single-use token from `outpost token create` (only for the first start)
        #[arg(
            long,
            value_name = "TOKEN",
            env = "OUTPOST_JOIN_TOKEN",
            hide_env_values = true
        )]
        join_token: Option<String>,
        /// Where the agent keeps its key, certificate and local store
        #[arg(long, value_name = "DIR", default_value = "/var/lib/outpost-agent")]
        data_dir: PathBuf,
        /// This host's name in its site [default: the machine's host name]
        #[arg(long, value_name = "NAME")]
        host_name: Option<String>,
        /// The container runtime
        #[arg(long, value_enum, default_value_t = RuntimeKind::Docker)]
        runtime: RuntimeKind,
        /// Registry credentials for pulls, as a Docker config.json
        /// [default: $DOCKER_CONFIG/config.json or ~/.docker/config.json, if present]
        #[arg(long, value_name = "FILE")]
        registry_auth: Option<PathBuf>,
        /// The most disk the queue of events, logs and metrics waiting for the
        /// control plane may use; past it the oldest are dropped (and counted)
        #[arg(long, value_name = "SIZE", default_value = "64Mi")]
        queue_size: outpost_api::quantity::Size,
        /// Where to serve Prometheus metrics at /metrics (keep it on loopback
        /// or a management network; there is no authentication)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7802")]
        metrics_listen: std::net::SocketAddr,
        /// How often CPU and memory of the host and its instances are sampled
        /// and sent (each sample is one record; mind a metered link)
        #[arg(long, value_name = "DURATION", default_value = "15m")]
        sample_every: outpost_api::quantity::Duration,
        /// stream: one long-lived session; poll: a short call every --interval
        /// and no connection in between (changes wait for the next poll)
        #[arg(long, value_enum, default_value_t = AgentMode::Stream)]
        mode: AgentMode,
        /// Polling mode: how often to poll (the control plane may ask for another)
        #[arg(long, value_name = "DURATION", default_value = "5m")]
        interval: outpost_api::quantity::Duration,
    },
    /// Quickstart: a local control plane with the example manifests applied
    Up {
        /// Where the quickstart keeps its data [default: ~/.local/share/outpost/up]
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Address of the REST API
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7800")]
        listen: std::net::SocketAddr,
        /// Address agents connect to
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7801")]
        agent_listen: std::net::SocketAddr,
    },
    /// Create or update objects from manifest files (all or nothing)
    Apply {
        /// A manifest file, a directory of them, or - for standard input (repeatable)
        #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-", required = true)]
        files: Vec<PathBuf>,
        /// Validate and report what would change; store nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Show which sites and hosts would run what, in which wave (a dry run)
    Plan {
        #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-", required = true)]
        files: Vec<PathBuf>,
    },
    /// Show what apply would change
    Diff {
        #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-", required = true)]
        files: Vec<PathBuf>,
    },
    /// Check manifest files without a control plane
    Validate {
        #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-", required = true)]
        files: Vec<PathBuf>,
    },
    /// List objects, or show one
    Get {
        /// sites, applications (apps), deployments (deploy) or hosts
        #[arg(value_parser = parse_resource)]
        kind: Resource,
        name: Option<String>,
        /// Only objects whose labels (hosts: facts) match, e.g. 'customer = acme and env = prod'
        #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
        selector: Option<String>,
        /// Hosts only: the hosts of one site
        #[arg(long, value_name = "SITE")]
        site: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Show one object in detail
    Describe {
        #[arg(value_parser = parse_kind)]
        kind: Kind,
        name: String,
    },
    /// Delete one object
    Delete {
        #[arg(value_parser = parse_kind)]
        kind: Kind,
        name: String,
        /// For a site with hosts: remove them too and revoke their certificates
        #[arg(long)]
        cascade: bool,
    },
    /// Show the kept versions of an application
    History {
        /// Only `application` has a history
        #[arg(value_parser = parse_history_kind)]
        kind: Kind,
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Set or remove the operator's labels: `outpost label site store-042 tier=gold zone-`
    Label {
        /// sites, applications, deployments or hosts (hosts are named SITE/HOST)
        #[arg(value_parser = parse_resource)]
        kind: Resource,
        name: String,
        /// key=value to set, key- to remove
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        labels: Vec<String>,
    },
    /// What happened at sites: containers started and exited (with exit
    /// codes), health changes, failures, pulls, placement failures
    Events {
        #[arg(long = "app", value_name = "APPLICATION")]
        application: Option<String>,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// An application's container logs, as its sites uploaded them
    Logs {
        application: String,
        #[arg(long, value_name = "SERVICE")]
        service: Option<String>,
        /// Ask the site's connected hosts now (needs --site) instead of
        /// reading what they uploaded
        #[arg(long, requires = "site", conflicts_with = "follow")]
        live: bool,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Follow and steer a deployment's rollout
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Manage join tokens for new hosts
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Fleet simulator: a control plane and N simulated sites, measured
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
    /// Print the JSON Schema of the manifests (for editors and CI)
    Schema,
    /// Print a shell completion script
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum SimCommand {
    /// Start a control plane, enroll N simulated sites (the real agent on an
    /// in-memory runtime), roll out an update, restart the control plane,
    /// and report the timings, memory, CPU and bytes (see BENCHMARKS.md)
    Bench {
        /// How many sites (one host each)
        #[arg(long, default_value_t = 100)]
        sites: usize,
        /// How long a simulated container takes to start
        #[arg(long, value_name = "DURATION", default_value = "200ms")]
        start_delay: outpost_api::quantity::Duration,
        /// How long the converged fleet is watched for CPU and idle bytes
        #[arg(long, value_name = "DURATION", default_value = "60s")]
        idle: outpost_api::quantity::Duration,
        /// Enrollments in flight at once
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Sites whose containers crash once after the update
        #[arg(long, default_value_t = 0)]
        crash_sites: usize,
        /// Sites whose health probes fail for a while after the update
        #[arg(long, default_value_t = 0)]
        unhealthy_sites: usize,
        /// How long any phase may take before the run fails
        #[arg(long, value_name = "DURATION", default_value = "10m")]
        timeout: outpost_api::quantity::Duration,
        /// Where the control plane's data and log go [default: a new directory under $TMPDIR, removed after a successful run]
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = SimOutput::Text)]
        output: SimOutput,
    },
}

/// What `events` and `logs` share.
#[derive(Debug, clap::Args)]
struct ReadArgs {
    #[arg(long, value_name = "SITE")]
    site: Option<String>,
    /// Only what happened since then: 10m, 1h, 7d, or an RFC 3339 time
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Keep printing as more arrives
    #[arg(short = 'f', long)]
    follow: bool,
    /// text, or json (one object per line with --follow)
    #[arg(short = 'o', long = "output", value_enum, default_value_t = StreamOutput::Text)]
    output: StreamOutput,
}

impl ReadArgs {
    fn filter(
        &self,
        application: Option<String>,
        service: Option<String>,
        live: bool,
    ) -> outpost_cli::telemetry::Filter {
        outpost_cli::telemetry::Filter {
            site: self.site.clone(),
            application,
            service,
            since: self.since.clone(),
            live,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StreamOutput {
    Text,
    Json,
}

impl From<StreamOutput> for outpost_cli::telemetry::Style {
    fn from(output: StreamOutput) -> Self {
        match output {
            StreamOutput::Text => outpost_cli::telemetry::Style::Text,
            StreamOutput::Json => outpost_cli::telemetry::Style::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SimOutput {
    /// One line per measure
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Waves, sites and their state; with --watch, until the rollout ends
    Status {
        deployment: String,
        #[arg(long)]
        watch: bool,
    },
    /// Start the next wave now, without waiting for healthyFor
    Promote { deployment: String },
    /// Stop advancing; sites keep what they have
    Pause { deployment: String },
    /// Continue a paused rollout (its failures so far are forgiven)
    Resume { deployment: String },
    /// Stop for good; sites keep what they have
    Abort { deployment: String },
    /// Roll out an earlier version: the one before the current rollout, or --to-version
    Undo {
        deployment: String,
        #[arg(long, value_name = "VERSION")]
        to_version: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a single-use join token that enrolls one host into a site
    Create {
        #[arg(long, value_name = "SITE")]
        site: String,
        /// How long the token stays valid (at most 30d)
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        ttl: String,
        /// `json`: token, site and expiry as one JSON object
        #[arg(short = 'o', long = "output", value_enum, default_value_t = StreamOutput::Text)]
        output: StreamOutput,
        /// Print the token alone, for scripts
        #[arg(short = 'q', long, conflicts_with = "output")]
        quiet: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AgentMode {
    Stream,
    Poll,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RuntimeKind {
    /// The Docker Engine API (also Podman's compatible socket), via DOCKER_HOST or the default socket
    Docker,
    /// Native processes (each container's command), for hosts without a container engine
    Process,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Wide,
    Json,
    Yaml,
}

impl From<OutputFormat> for Format {
    fn from(format: OutputFormat) -> Format {
        match format {
            OutputFormat::Table => Format::Table,
            OutputFormat::Wide => Format::Wide,
            OutputFormat::Json => Format::Json,
            OutputFormat::Yaml => Format::Yaml,
        }
    }
}

/// What `get` lists: a kind of manifest, or the enrolled hosts.
#[derive(Debug, Clone, Copy)]
enum Resource {
    Kind(Kind),
    Hosts,
}

fn parse_resource(text: &str) -> Result<Resource, String> {
    match text.to_ascii_lowercase().as_str() {
        "host" | "hosts" => Ok(Resource::Hosts),
        _ => Kind::from_cli(text)
            .map(Resource::Kind)
            .ok_or_else(|| format!("unknown kind {text:?} (use sites, applications, deployments or hosts)")),
    }
}

fn parse_kind(text: &str) -> Result<Kind, String> {
    Kind::from_cli(text)
        .ok_or_else(|| format!("unknown kind {text:?} (use sites, applications or deployments)"))
}

fn parse_history_kind(text: &str) -> Result<Kind, String> {
    match Kind::from_cli(text) {
        Some(Kind::Application) => Ok(Kind::Application),
        _ => Err(format!(
            "{text:?} has no history (use: outpost history application NAME)"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS provider for the whole process: ring (pure Rust build, no aws-lc).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The agent is small and mostly waits: one thread keeps its memory low
    // (issue: agent RSS budget). Everything else gets a thread per core.
    let builder = match cli.command {
        Command::Agent { .. } => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    let runtime = match builder {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): nothing to report.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Raises the soft limit on open files to the hard limit: the control
/// plane holds a socket per site and the agent port faces the internet,
/// and a soft limit of 1,024 would turn away the REST API long before the
/// hard limit is near.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%err, soft, hard, "could not raise the open-file limit");
            } else {
                tracing::debug!(from = soft, to = hard, "raised the open-file limit");
            }
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "could not read the open-file limit"),
    }
}

/// Prints an error; manifest problems one per line, like a compiler.
fn report(err: &anyhow::Error) {
    if let Some(cli_error) = err.downcast_ref::<CliError>() {
        for diagnostic in &cli_error.diagnostics {
            eprintln!("{diagnostic}");
        }
        eprintln!("error: {}", cli_error.message);
    } else {
        eprintln!("error: {err:#}");
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,hyper=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The simulator's thousands of agents log only errors unless RUST_LOG
/// says otherwise (each would warn when the control plane restarts).
fn init_sim_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub(crate) async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

fn client(cli: &Cli) -> Result<Client> {
    let path = outpost_cli::client::config_path(cli.config.as_deref())
        .context("no configuration file: pass --config FILE or set OUTPOST_CONFIG")?;
    let config = outpost_cli::client::load_config(&path)?;
    let context = config.context(cli.context.as_deref()).with_context(|| {
        let name = cli.context.as_deref().unwrap_or(&config.current_context);
        format!("{}: no context named {name:?}", path.display())
    })?;
    Client::new(context)
}

async fn run(cli: Cli) -> Result<()> {
    let output = match &cli.command {
        Command::Control {
            data_dir,
            listen,
            agent_listen,
            tls_san,
            event_retention,
            log_retention,
            metric_retention,
            poll_interval,
        } => {
            init_logging();
            raise_open_file_limit();
            let config = outpost_control::Config {
                data_dir: data_dir.clone(),
                listen: *listen,
                agent_listen: *agent_listen,
                tls_san: tls_san.clone(),
                poll_interval: poll_interval.map(|i| i.as_std().max(std::time::Duration::from_secs(1))),
                retention: outpost_control::Retention {
                    events: event_retention.as_std(),
                    logs: log_retention.as_std(),
                    metrics: metric_retention.as_std(),
                },
            };
            let control = outpost_control::ControlPlane::start(&config).await?;
            control.serve(shutdown_signal()).await;
            return Ok(());
        }
        Command::Agent {
            server,
            join_token,
            data_dir,
            host_name,
            runtime,
            registry_auth,
            queue_size,
            metrics_listen,
            sample_every,
            mode,
            interval,
        } => {
            init_logging();
            raise_open_file_limit();
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop.send(true);
            });
            let config = outpost_agent::Config {
                data_dir: data_dir.clone(),
                server: server.clone(),
                join_token: join_token.clone(),
                host_name: host_name.clone(),
                registry_auth: registry_auth.clone(),
                queue_limit: queue_size.0,
                metrics_listen: Some(*metrics_listen),
                sample_every: sample_every.as_std().max(std::time::Duration::from_secs(1)),
                mode: match mode {
                    AgentMode::Stream => outpost_agent::session::Mode::Stream,
                    AgentMode::Poll => outpost_agent::session::Mode::Poll(
                        interval.as_std().max(std::time::Duration::from_secs(1)),
                    ),
                },
                runtime: match runtime {
                    RuntimeKind::Docker => outpost_agent::RuntimeKind::Docker,
                    RuntimeKind::Process => outpost_agent::RuntimeKind::Process,
                },
            };
            return outpost_agent::run(config, stopped).await;
        }
        Command::Up {
            data_dir,
            listen,
            agent_listen,
        } => {
            init_logging();
            raise_open_file_limit();
            return up::run(data_dir.clone(), *listen, *agent_listen, cli.config.clone()).await;
        }
        Command::Label { kind, name, labels } => {
            let kind = match kind {
                Resource::Kind(kind) => Some(*kind),
                Resource::Hosts => None,
            };
            commands::label(&client(&cli)?, kind, name, labels).await?
        }
        Command::Rollout { command } => {
            let client = client(&cli)?;
            match command {
                RolloutCommand::Status { deployment, watch } => {
                    let (mut shown, mut finished) = commands::rollout_status(&client, deployment).await?;
                    if *watch {
                        output::print(&shown)?;
                        while !finished {
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            let (now, done) = commands::rollout_status(&client, deployment).await?;
                            if now != shown {
                                output::print(&format!("\n{now}"))?;
                                shown = now;
                            }
                            finished = done;
                        }
                        return Ok(());
                    }
                    shown
                }
                RolloutCommand::Promote { deployment } => {
                    commands::rollout_command(&client, deployment, "promote").await?
                }
                RolloutCommand::Pause { deployment } => {
                    commands::rollout_command(&client, deployment, "pause").await?
                }
                RolloutCommand::Resume { deployment } => {
                    commands::rollout_command(&client, deployment, "resume").await?
                }
                RolloutCommand::Abort { deployment } => {
                    commands::rollout_command(&client, deployment, "abort").await?
                }
                RolloutCommand::Undo {
                    deployment,
                    to_version,
                } => commands::rollout_undo(&client, deployment, to_version.as_deref()).await?,
            }
        }
        Command::Events { application, read } => {
            let filter = read.filter(application.clone(), None, false);
            return outpost_cli::telemetry::events(&client(&cli)?, &filter, read.output.into(), read.follow)
                .await;
        }
        Command::Logs {
            application,
            service,
            live,
            read,
        } => {
            let filter = read.filter(Some(application.clone()), service.clone(), *live);
            return outpost_cli::telemetry::logs(&client(&cli)?, &filter, read.output.into(), read.follow)
                .await;
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    site,
                    ttl,
                    output,
                    quiet,
                },
        } => {
            let shown = match (quiet, output) {
                (true, _) => commands::TokenOutput::Quiet,
                (false, StreamOutput::Json) => commands::TokenOutput::Json,
                (false, StreamOutput::Text) => commands::TokenOutput::Text,
            };
            commands::create_join_token(&client(&cli)?, site, ttl, shown).await?
        }
        Command::Sim {
            command:
                SimCommand::Bench {
                    sites,
                    start_delay,
                    idle,
                    concurrency,
                    crash_sites,
                    unhealthy_sites,
                    timeout,
                    work_dir,
                    output,
                },
        } => {
            init_sim_logging();
            raise_open_file_limit();
            let temporary = work_dir.is_none();
            let work_dir = work_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join(format!("outpost-sim-{}", std::process::id())));
            let options = outpost_sim::bench::Options {
                sites: *sites,
                start_delay: start_delay.as_std(),
                idle: idle.as_std(),
                concurrency: (*concurrency).max(1),
                crash_sites: *crash_sites,
                unhealthy_sites: *unhealthy_sites,
                timeout: timeout.as_std(),
                work_dir: work_dir.clone(),
            };
            let report = outpost_sim::bench::run(&options).await?;
            if temporary {
                let _ = std::fs::remove_dir_all(&work_dir);
            }
            match output {
                SimOutput::Text => format!("{report}\n"),
                SimOutput::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
            }
        }
        Command::Schema => {
            let mut text = serde_json::to_string_pretty(outpost_api::schema::manifest_schema())?;
            text.push('\n');
            text
        }
        Command::Completion { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "outpost", &mut std::io::stdout());
            return Ok(());
        }
        Command::Validate { files } => {
            let checked = commands::validate(commands::read_sources(files)?)?;
            format!("{} manifest(s) valid\n", checked.len())
        }
        Command::Apply { files, dry_run } => {
            let checked = commands::validate(commands::read_sources(files)?)?;
            commands::apply(&client(&cli)?, checked, *dry_run).await?
        }
        Command::Plan { files } => {
            let checked = commands::validate(commands::read_sources(files)?)?;
            commands::plan(&client(&cli)?, checked).await?
        }
        Command::Diff { files } => {
            let checked = commands::validate(commands::read_sources(files)?)?;
            commands::diff(&client(&cli)?, checked).await?
        }
        Command::Get {
            kind: Resource::Hosts,
            selector,
            site,
            output,
            ..
        } => {
            commands::get_hosts(
                &client(&cli)?,
                site.as_deref(),
                selector.as_deref(),
                (*output).into(),
            )
            .await?
        }
        Command::Get {
            kind: Resource::Kind(kind),
            name,
            selector,
            output,
            ..
        } => {
            commands::get(
                &client(&cli)?,
                *kind,
                name.as_deref(),
                selector.as_deref(),
                (*output).into(),
            )
            .await?
        }
        Command::Describe { kind, name } => commands::describe(&client(&cli)?, *kind, name).await?,
        Command::Delete { kind, name, cascade } => {
            commands::delete(&client(&cli)?, *kind, name, *cascade).await?
        }
        Command::History { name, output, .. } => {
            commands::history(&client(&cli)?, name, (*output).into()).await?
        }
    };
    output::print(&output)?;
    Ok(())
}
