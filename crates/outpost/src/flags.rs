//! The command line: every subcommand, flag and value `outpost` takes, as
//! clap derives them (ripgrep keeps its flags apart the same way). `main`
//! dispatches on what this parses.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use outpost_api::manifest::Kind;
use outpost_cli::output::Format;

/// Orchestrates container applications across thousands of edge sites.
#[derive(Debug, Parser)]
#[command(name = "outpost", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// The CLI configuration file [default: $OUTPOST_CONFIG or ~/.config/outpost/config.yaml]
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The context to use instead of the configuration's current one
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) context: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the control plane
    Control {
        /// Where the store, certificates and admin.yaml live
        #[arg(long, value_name = "DIR", default_value = "/var/lib/outpost", global = true)]
        data_dir: PathBuf,
        /// The key file that encrypts secrets at rest [default: DATA_DIR/secrets.key, made if missing]
        #[arg(long, value_name = "FILE", global = true)]
        secrets_key_file: Option<PathBuf>,
        /// Keep the store in this PostgreSQL database (postgres://USER@HOST/DB)
        /// instead of SQLite in the data directory; replicas share one
        #[arg(long, value_name = "URL", global = true, value_parser = str::parse::<outpost_control::StoreUrl>)]
        store: Option<outpost_control::StoreUrl>,
        #[command(subcommand)]
        command: Option<ControlCommand>,
        /// Address of the REST API (HTTPS)
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7800")]
        listen: std::net::SocketAddr,
        /// Address agents connect to (gRPC over mutual TLS)
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7801")]
        agent_listen: std::net::SocketAddr,
        /// Extra DNS name or IP address for the server certificate (repeatable)
        #[arg(long, value_name = "NAME")]
        tls_san: Vec<String>,
        /// Where the other replicas reach this one's REST API, for requests
        /// that need a host whose session is here (with --store postgres://)
        /// [default: https://ADDRESS:PORT of --listen; 127.0.0.1 for 0.0.0.0]
        #[arg(long, value_name = "URL", value_parser = parse_advertise)]
        advertise: Option<String>,
        /// How long events are kept after they arrive
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        event_retention: outpost_api::quantity::Duration,
        /// How long uploaded log lines are kept after they arrive
        #[arg(long, value_name = "DURATION", default_value = "7d")]
        log_retention: outpost_api::quantity::Duration,
        /// How long metric samples are kept after they arrive
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        metric_retention: outpost_api::quantity::Duration,
        /// How long application stream records are kept: up-records after
        /// they arrive, down-records after they are published
        #[arg(long, value_name = "DURATION", default_value = "7d")]
        stream_retention: outpost_api::quantity::Duration,
        /// Also publish every stored up-record to this NATS server's
        /// JetStream, on subject outpost.APPLICATION.TOPIC.SITE
        #[arg(long, value_name = "URL")]
        streams_nats: Option<String>,
        /// Rotate each site's underlay keys (the site network) this long
        /// after its last rotation, e.g. 30d [default: only on `outpost site rotate-keys`]
        #[arg(long, value_name = "DURATION")]
        site_key_rotation: Option<outpost_api::quantity::Duration>,
        /// How long a host certificate lives; agents renew theirs over the
        /// session when two thirds of it have passed (at least 10s)
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        host_cert_lifetime: outpost_api::quantity::Duration,
        /// How long after its certificate expired a host that was offline may
        /// still renew it with its old key; after that it must enroll again
        #[arg(long, value_name = "DURATION", default_value = "7d")]
        host_cert_grace: outpost_api::quantity::Duration,
        /// Let users sign in (`outpost login`) with this OpenID Connect
        /// provider, by its issuer URL
        #[arg(long, value_name = "URL", requires_all = ["oidc_client_id", "oidc_role_map"])]
        oidc_issuer: Option<String>,
        /// The client id ID tokens must be issued to
        #[arg(long, value_name = "ID", requires = "oidc_issuer")]
        oidc_client_id: Option<String>,
        /// A claim's value to a role, the first that matches wins
        /// (repeatable): 'groups: retail-ops -> operator@provider'
        #[arg(long, value_name = "MAPPING", requires = "oidc_issuer", value_parser = str::parse::<outpost_control::oidc::RoleMapping>)]
        oidc_role_map: Vec<outpost_control::oidc::RoleMapping>,
        /// Tell agents in polling mode to poll this often instead of their own --interval
        #[arg(long, value_name = "DURATION")]
        poll_interval: Option<outpost_api::quantity::Duration>,
        /// Connections one address may hold on the agent port before they
        /// present a host certificate (raise it for many hosts behind one NAT)
        #[arg(long, value_name = "N", default_value_t = outpost_control::agent_listener::MAX_UNAUTHENTICATED_PER_SOURCE)]
        max_unauthenticated_per_source: usize,
    },
    /// Run the edge agent of one host (the `outpost-agent` binary is this alone)
    Agent(outpost::agent::AgentArgs),
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
        /// sites, applications (apps), deployments (deploy), hosts or secrets
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
        /// site, application, deployment or secret
        #[arg(value_parser = parse_object)]
        kind: Object,
        name: String,
    },
    /// Delete one object
    Delete {
        /// site, application, deployment or secret
        #[arg(value_parser = parse_object)]
        kind: Object,
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
    /// Application event streams: read what sites sent up, publish down
    Streams {
        #[command(subcommand)]
        command: StreamsCommand,
    },
    /// Follow and steer a deployment's rollout
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Signed offline bundles: a release for sites without an uplink
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Keep secrets: values sealed at rest, sent only to the sites that use them
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// A site's underlay keys (the site network between its hosts)
    Site {
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// Join tokens for new hosts, and API tokens for users and robots
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Sign in with the control plane's OpenID Connect provider: an API
    /// token for your role goes into a context (--context, else the current)
    Login {
        /// Make the context: the control plane's URL (with --ca-file)
        #[arg(long, value_name = "URL", requires = "ca_file")]
        server: Option<String>,
        /// Make the context: the control plane's CA certificate (PEM)
        #[arg(long, value_name = "FILE", requires = "server")]
        ca_file: Option<PathBuf>,
    },
    /// Read the audit trail: every change, reveal of a secret and refusal
    Audit {
        #[command(subcommand)]
        command: Option<AuditCommand>,
        /// Entries since a duration ago (10m, 1h, 7d) or an RFC 3339 time
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        #[arg(long, value_name = "TENANT")]
        tenant: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Cut a host, a site or a tenant off at once: sessions end, connections and tokens are refused
    Block {
        #[command(subcommand)]
        command: BlockCommand,
    },
    /// Lift a block (a wipe stays done)
    Unblock {
        #[command(subcommand)]
        command: UnblockCommand,
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
pub(crate) enum BundleCommand {
    /// Write one file with a deployment's release for every site it covers
    /// and its images, signed by the control plane (needs Docker here, and
    /// the registry, to fetch the images)
    #[command(disable_version_flag = true)]
    Create {
        #[arg(long, value_name = "NAME")]
        deployment: String,
        /// The application version [default: the one the deployment runs]
        #[arg(long, value_name = "V")]
        version: Option<String>,
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// On an enrolled host, with or without an uplink: check a bundle
    /// against the control plane this host enrolled with, load its images
    /// and hand its release to the agent, which runs it
    Import {
        file: PathBuf,
        /// The agent's data directory
        #[arg(long, value_name = "DIR", default_value = "/var/lib/outpost-agent")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SimCommand {
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
        /// A secret of this many bytes that every site's application mounts
        /// as a file (0: none)
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        secret_bytes: usize,
        /// The size of every simulated image (0: images cost nothing to fetch)
        #[arg(long, value_name = "SIZE", default_value = "0")]
        image_size: outpost_api::quantity::Size,
        /// How fast a simulated site fetches images, per second: an image
        /// takes --image-size over this to fetch
        #[arg(long, value_name = "SIZE", default_value = "4Mi")]
        pull_rate: outpost_api::quantity::Size,
        /// Switch sites without fetching the new version's images first
        /// (`rollout.prestage: false`)
        #[arg(long)]
        no_prestage: bool,
        /// Every site produces this many 1 KiB records into an up topic at
        /// once, and the run measures how fast they are stored (0: none)
        #[arg(long, value_name = "N", default_value_t = 0)]
        stream_records: usize,
        /// Roll the update out in waves of this many sites (0: one wave)
        #[arg(long, value_name = "SITES", default_value_t = 0)]
        wave_size: u32,
        /// Where the control plane's data and log go [default: a new directory under $TMPDIR, removed after a successful run]
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// The control plane's store: this PostgreSQL database (empty, made
        /// for the run) instead of SQLite in the work directory
        #[arg(long, value_name = "URL", value_parser = str::parse::<outpost_control::StoreUrl>)]
        store: Option<outpost_control::StoreUrl>,
        /// Run this many control-plane replicas on the --store database;
        /// sites are given all of them, and the restart is one replica (the
        /// leader) killed outright instead
        #[arg(long, value_name = "N", default_value_t = 1, requires = "store", value_parser = clap::value_parser!(u16).range(1..=16))]
        replicas: u16,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = SimOutput::Text)]
        output: SimOutput,
    },
}

/// What `events` and `logs` share.
#[derive(Debug, clap::Args)]
pub(crate) struct ReadArgs {
    #[arg(long, value_name = "SITE")]
    pub(crate) site: Option<String>,
    /// Only what happened since then: 10m, 1h, 7d, or an RFC 3339 time
    #[arg(long, value_name = "WHEN")]
    pub(crate) since: Option<String>,
    /// Keep printing as more arrives
    #[arg(short = 'f', long)]
    pub(crate) follow: bool,
    /// text, or json (one object per line with --follow)
    #[arg(short = 'o', long = "output", value_enum, default_value_t = StreamOutput::Text)]
    pub(crate) output: StreamOutput,
}

impl ReadArgs {
    pub(crate) fn filter(
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
pub(crate) enum StreamOutput {
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
pub(crate) enum SimOutput {
    /// One line per measure
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RolloutCommand {
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
pub(crate) enum ControlCommand {
    /// Make a new key-encryption key and re-wrap every secret's data key
    /// with it; safe while the control plane runs
    RotateSecretsKey,
    /// Bring in a new CA in the running control plane (of --context): it
    /// signs from now on, cross-signed by the current CA, which stays
    /// trusted; hosts learn both over their sessions and renew at once.
    /// Without flags once more: where the rotation stands
    RotateCa {
        /// Stop trusting the previous CA (refused while a host still holds
        /// a certificate of it, or a site its underlay keys)
        #[arg(long)]
        retire: bool,
        /// With --retire: even so (those hosts must be enrolled again)
        #[arg(long, requires = "retire")]
        force: bool,
        /// Only show where a rotation stands
        #[arg(long, conflicts_with_all = ["retire", "force"])]
        status: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum StreamsCommand {
    /// Records sites sent up on an application's topic, each once, in the
    /// order they were stored
    Read {
        application: String,
        topic: String,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Publish records to a down topic: every selected site that runs the
    /// application receives them once, in order, now or when it comes back
    Publish {
        application: String,
        topic: String,
        /// Which sites, by their labels [default: every site that runs the application]
        #[arg(long, value_name = "SELECTOR")]
        sites: Option<String>,
        /// The records, one per line (UTF-8, such as JSON), or - for standard input
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretCommand {
    /// Store a new version of a secret (values from arguments, files or
    /// standard input; never from a manifest)
    Set {
        name: String,
        /// KEY=VALUE, or KEY=- to read the value from standard input
        #[arg(value_name = "KEY=VALUE")]
        values: Vec<String>,
        /// A value from a file (repeatable)
        #[arg(long = "from-file", value_name = "KEY=PATH")]
        from_file: Vec<String>,
        /// The only sites it may ever reach [default: the previous version's; all for the first]
        #[arg(long, value_name = "SELECTOR")]
        sites: Option<String>,
        /// The images that may receive it, `*` a wildcard; a repository
        /// without a tag allows all its tags [default: the previous version's; any for the first]
        #[arg(long, value_name = "PATTERN", num_args = 1..)]
        images: Option<Vec<String>>,
    },
    /// Print one value (written to the audit trail)
    Reveal { name: String, key: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SiteCommand {
    /// Give the site's hosts underlay keys of a new epoch; the old keys
    /// work until every host has a new one
    RotateKeys {
        site: String,
        /// Stop accepting the old keys now (a stolen or removed host):
        /// connections on them end, and hosts without a new key are cut
        /// off from their peers until they get one
        #[arg(long)]
        at_once: bool,
    },
    /// Where the site's underlay keys stand
    Keys { site: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a new token: with --site, a single-use join token that enrolls
    /// one host into a site; with --user and --role, an API token
    Create {
        /// Join token: the site the new host joins
        #[arg(
            long,
            value_name = "SITE",
            required_unless_present = "user",
            conflicts_with = "user"
        )]
        site: Option<String>,
        /// API token: the user or robot it is for
        #[arg(long, value_name = "USER", requires = "role")]
        user: Option<String>,
        /// API token: what it may do
        #[arg(long, value_name = "ROLE", requires = "user", value_parser = ["admin", "operator", "viewer", "edge-admin", "secret-admin"])]
        role: Option<String>,
        /// API token: the tenant it acts in [default: yours]
        #[arg(long, value_name = "TENANT", requires = "user")]
        tenant: Option<String>,
        /// API token: a selector of the sites it may see and act on [default: all]
        #[arg(long, value_name = "SELECTOR", requires = "user")]
        sites: Option<String>,
        /// How long the token stays valid [default: 1h for a join token, at
        /// most 30d; 90d for an API token, at most 400d]
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// `json`: the token and what it is, as one JSON object
        #[arg(short = 'o', long = "output", value_enum, default_value_t = StreamOutput::Text)]
        output: StreamOutput,
        /// Print the token alone, for scripts
        #[arg(short = 'q', long, conflicts_with = "output")]
        quiet: bool,
    },
    /// List API tokens (never the tokens themselves)
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Revoke an API token: it fails from its next request
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the audit trail's hash chain: a row changed, deleted or
    /// inserted in the database behind the control plane's back is found
    Verify,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BlockCommand {
    /// Block one host, named SITE/HOST (its site's underlay keys rotate at once)
    Host {
        #[arg(value_name = "SITE/HOST")]
        name: String,
        /// Also tell the host, if connected, to delete its secrets and stop its workloads
        #[arg(long)]
        wipe: bool,
    },
    /// Block every host of a site
    Site {
        name: String,
        /// Also tell its hosts, if connected, to delete their secrets and stop their workloads
        #[arg(long)]
        wipe: bool,
    },
    /// Block an application owner: its API tokens stop working at once
    /// and its followed streams end (its instances keep running; block its
    /// sites or hosts to stop them)
    Tenant { name: String },
    /// What is blocked
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum UnblockCommand {
    Host {
        #[arg(value_name = "SITE/HOST")]
        name: String,
    },
    Site {
        name: String,
    },
    Tenant {
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OutputFormat {
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

/// What `get` lists: a kind of manifest, the enrolled hosts, or secrets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resource {
    Kind(Kind),
    Hosts,
    Secrets,
}

pub(crate) fn parse_resource(text: &str) -> Result<Resource, String> {
    match text.to_ascii_lowercase().as_str() {
        "host" | "hosts" => Ok(Resource::Hosts),
        "secret" | "secrets" => Ok(Resource::Secrets),
        _ => Kind::from_cli(text).map(Resource::Kind).ok_or_else(|| {
            format!("unknown kind {text:?} (use sites, applications, deployments, hosts or secrets)")
        }),
    }
}

/// What `describe` and `delete` take: a kind of manifest, or a secret.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Object {
    Kind(Kind),
    Secret,
}

pub(crate) fn parse_object(text: &str) -> Result<Object, String> {
    match text.to_ascii_lowercase().as_str() {
        "secret" | "secrets" => Ok(Object::Secret),
        _ => Kind::from_cli(text)
            .map(Object::Kind)
            .ok_or_else(|| format!("unknown kind {text:?} (use site, application, deployment or secret)")),
    }
}

pub(crate) fn parse_history_kind(text: &str) -> Result<Kind, String> {
    match Kind::from_cli(text) {
        Some(Kind::Application) => Ok(Kind::Application),
        _ => Err(format!(
            "{text:?} has no history (use: outpost history application NAME)"
        )),
    }
}

/// `--advertise`: an `https://` URL with a host.
fn parse_advertise(url: &str) -> Result<String, String> {
    match url.strip_prefix("https://") {
        Some(rest) if !rest.is_empty() && !rest.contains('/') => Ok(url.to_string()),
        _ => Err(format!(
            "{url:?} is not https://HOST[:PORT] (where the other replicas reach this one's REST API)"
        )),
    }
}
