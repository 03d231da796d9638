//! The manifests operators write: `Site`, `Application`, `Deployment` and
//! `Tenant` (`apiVersion: outpost/v1`). Serde and the JSON Schema are derived from
//! these types; the schema walker validates documents against that schema,
//! so the published schema and the validator cannot drift apart.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::quantity::{Cpu, Duration, FailureBudget, Size};
use crate::selector::Selector;

/// The one API version this build understands.
pub const API_VERSION: &str = "outpost/v1";

/// Any manifest, tagged by its `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind")]
pub enum Manifest {
    Site(Site),
    Application(Application),
    Deployment(Deployment),
    Tenant(Tenant),
}

/// The kinds of object, as they appear in manifests, URLs and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Kind {
    Site,
    Application,
    Deployment,
    Tenant,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Site, Kind::Application, Kind::Deployment, Kind::Tenant];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Site => "Site",
            Kind::Application => "Application",
            Kind::Deployment => "Deployment",
            Kind::Tenant => "Tenant",
        }
    }

    /// The plural, lower-case name used in URLs: `sites`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Site => "sites",
            Kind::Application => "applications",
            Kind::Deployment => "deployments",
            Kind::Tenant => "tenants",
        }
    }

    /// Reads a kind as an operator types it: `site`, `sites`, `apps`, `deploy`…
    pub fn from_cli(text: &str) -> Option<Kind> {
        match text.to_ascii_lowercase().as_str() {
            "site" | "sites" => Some(Kind::Site),
            "application" | "applications" | "app" | "apps" => Some(Kind::Application),
            "deployment" | "deployments" | "deploy" | "deploys" => Some(Kind::Deployment),
            "tenant" | "tenants" => Some(Kind::Tenant),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Manifest {
    pub fn kind(&self) -> Kind {
        match self {
            Manifest::Site(_) => Kind::Site,
            Manifest::Application(_) => Kind::Application,
            Manifest::Deployment(_) => Kind::Deployment,
            Manifest::Tenant(_) => Kind::Tenant,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Manifest::Site(o) => &o.metadata,
            Manifest::Application(o) => &o.metadata,
            Manifest::Deployment(o) => &o.metadata,
            Manifest::Tenant(o) => &o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_str()
    }

    pub fn into_site(self) -> Option<Site> {
        if let Manifest::Site(site) = self {
            Some(site)
        } else {
            None
        }
    }

    pub fn into_application(self) -> Option<Application> {
        if let Manifest::Application(app) = self {
            Some(app)
        } else {
            None
        }
    }

    pub fn into_deployment(self) -> Option<Deployment> {
        if let Manifest::Deployment(deployment) = self {
            Some(deployment)
        } else {
            None
        }
    }

    /// The spec alone, as JSON (what the store keeps beside the labels).
    pub fn spec_json(&self) -> serde_json::Value {
        let spec = match self {
            Manifest::Site(o) => serde_json::to_value(&o.spec),
            Manifest::Application(o) => serde_json::to_value(&o.spec),
            Manifest::Deployment(o) => serde_json::to_value(&o.spec),
            Manifest::Tenant(o) => serde_json::to_value(&o.spec),
        };
        spec.unwrap_or(serde_json::Value::Null)
    }
}

/// `apiVersion: outpost/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    #[default]
    #[serde(rename = "outpost/v1")]
    V1,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// A DNS label: lower-case letters, digits and `-`, at most 63
    /// characters. An application owner's objects are stored as
    /// `TENANT.NAME` (see `crate::tenancy`).
    pub name: ObjectName,
    /// The operator's labels, matched by selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A site: one location (a store, a plant, a vessel) with its own hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Site {
    pub api_version: ApiVersion,
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: SiteSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteSpec {
    /// Per-site values usable in application env as `${site.NAME}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// How long a host may go unheard by its peers before the site moves
    /// its instances to the other hosts (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_loss_after: Option<Duration>,
    /// The site is often offline (a ship, a field site on a schedule): the
    /// fleet overview counts it offline as expected, not as a fault.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub often_offline: bool,
}

/// A versioned set of services, each made of containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Application {
    pub api_version: ApiVersion,
    pub metadata: Metadata,
    pub spec: ApplicationSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationSpec {
    /// The application's version; a changed spec needs a new version.
    pub version: String,
    pub services: Vec<Service>,
    /// The pull secret of every container that names none itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<ObjectName>,
    /// Event streams between the application's containers and the centre:
    /// the agent keeps each topic on disk and its containers reach it at
    /// `OUTPOST_STREAMS_URL` with `OUTPOST_STREAMS_TOKEN`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<crate::stream::Topic>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    pub name: Name,
    /// Instances per site (default 1); exclusive with `mode: per-host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServiceMode>,
    /// Which hosts of a site may run this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Selector>,
    /// What the site does with the service's instances when their host is
    /// lost: `move` (the default), `singleton` or `stay` (the default for
    /// per-host services and services with devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    pub containers: Vec<Container>,
    /// Services of other applications this service may reach, by the name
    /// `SERVICE.APPLICATION` (its own application's services it reaches by
    /// `SERVICE`, and nothing else).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Egress>,
    /// Served on a port of the site's hosts, forwarded to wherever the
    /// service runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
}

/// A service of another application, which a service may reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Egress {
    pub application: ObjectName,
    pub service: Name,
}

/// A port every chosen host of a site serves a service on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ingress {
    /// The port the hosts listen on.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    /// The name clients ask for: the TLS server name, or the HTTP `Host`.
    /// Services that share a port are told apart by it; without it the
    /// port is the service's alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The service's port connections go to (default: its first TCP port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<u32>,
    /// Which hosts serve it (default: every host of the site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Selector>,
}

impl Service {
    /// The TCP ports its containers declare, in order, each once.
    pub fn tcp_ports(&self) -> impl Iterator<Item = u32> + '_ {
        tcp_ports(&self.containers)
    }

    /// The failover the service asked for, or its default.
    pub fn failover(&self) -> Failover {
        self.failover.unwrap_or_else(|| {
            let bound = self.mode == Some(ServiceMode::PerHost)
                || self.containers.iter().any(|c| !c.devices.is_empty());
            if bound { Failover::Stay } else { Failover::Move }
        })
    }
}

/// What a site's hosts may do with a lost host's instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Failover {
    /// At least one copy: move to a surviving host; a split site may run
    /// two copies for a while.
    #[default]
    Move,
    /// At most one copy: move only with a majority of the site's hosts, or
    /// the control plane as witness, behind the decision.
    Singleton,
    /// Never moved (bound to a device or to its host).
    Stay,
}

impl Failover {
    pub fn as_str(self) -> &'static str {
        match self {
            Failover::Move => "move",
            Failover::Singleton => "singleton",
            Failover::Stay => "stay",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceMode {
    /// `replicas` instances per site.
    Replicated,
    /// One instance on every matching host.
    PerHost,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    pub name: Name,
    pub image: ImageRef,
    /// Overrides the image entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Text values may use `${site.NAME}` for the site's variables; a
    /// `{secret, key}` value is one key of a secret (prefer `secrets`:
    /// environment values show in `docker inspect`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Named volumes; they survive updates of the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// Host devices passed through, such as `/dev/video0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Secrets as read-only files on tmpfs: a whole secret as a directory
    /// (each key a file), or one `key` as the file at `path`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretMount>,
    /// What follows a new version of a file secret: `restart` (the
    /// default), `signal:SIGHUP` (or another signal) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_secret_change: Option<SecretChange>,
    /// A secret whose key `config.json` is a Docker `config.json` with the
    /// credentials to pull this container's image (default: the
    /// application's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<ObjectName>,
}

/// An environment variable's value: text, or one key of a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    Text(String),
    Secret(SecretKeyRef),
}

impl fmt::Display for EnvValue {
    /// Text as it is; a secret by name and key, never its value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvValue::Text(text) => f.write_str(text),
            EnvValue::Secret(r) => write!(f, "<secret {}, key {}>", r.secret, r.key),
        }
    }
}

impl From<&str> for EnvValue {
    fn from(text: &str) -> EnvValue {
        EnvValue::Text(text.to_string())
    }
}

/// `{ secret: NAME, key: KEY }`: one value of a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    pub secret: ObjectName,
    pub key: SecretKey,
}

/// A secret as files inside a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretMount {
    pub secret: ObjectName,
    /// One key as the file at `path`; without it, `path` is a directory
    /// holding every key as a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretKey>,
    /// Absolute path inside the container.
    pub path: String,
    /// The file mode, in octal (default "0444").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    #[schemars(range(min = 1, max = 65535))]
    pub container: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub host: Option<u32>,
    #[serde(default, skip_serializing_if = "Protocol::is_tcp")]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    fn is_tcp(&self) -> bool {
        *self == Protocol::Tcp
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 64))]
    pub gpu: Option<u32>,
}

/// A health probe run by the agent: exactly one of `http`, `tcp`, `exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Consecutive failures before the instance is unhealthy (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    pub path: HttpPath,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpProbe {
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecProbe {
    pub command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    pub name: Name,
    /// Absolute path inside the container.
    pub path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// Which version of an application runs on which sites, and how changes roll out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deployment {
    pub api_version: ApiVersion,
    pub metadata: Metadata,
    pub spec: DeploymentSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    pub application: ObjectName,
    /// A version from the application's history; without it, the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Which sites run it, by their labels.
    pub sites: Selector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// An application owner: a team that deploys its own applications to the
/// sites `spec.sites` selects, within its quotas, and sees nothing of other
/// tenants. The site provider's admin applies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tenant {
    pub api_version: ApiVersion,
    pub metadata: Metadata,
    pub spec: TenantSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantSpec {
    /// The sites it may see and deploy to, by their labels.
    pub sites: Selector,
    /// What its instances may take on each site.
    #[serde(default, skip_serializing_if = "Quotas::is_unlimited")]
    pub quotas: Quotas,
}

/// The most a tenant's instances may take together on one site; a quota
/// left out is unlimited. CPU, memory and GPU count the containers'
/// `resources` (a container without them counts nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quotas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4096))]
    pub gpu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub instances: Option<u32>,
}

impl Quotas {
    pub fn is_unlimited(&self) -> bool {
        *self == Quotas::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollout {
    /// Sites updated first; the rest wait for `healthyFor` or a manual promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub canary: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<Waves>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_for: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<FailureBudget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// Every covered site fetches the new version's images first, and a
    /// wave switches a site only once it holds them all (default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prestage: Option<bool>,
    /// How long an online site of the current wave may take to fetch its
    /// images before it counts as failed (default: 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prestage_timeout: Option<Duration>,
}

impl Rollout {
    /// Whether a rollout under this policy (or none) pre-stages images.
    pub fn prestages(rollout: Option<&Rollout>) -> bool {
        rollout.and_then(|r| r.prestage).unwrap_or(true)
    }
}

/// Waves of a fixed `size`, or growing by a factor (`exponential`) from `start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Waves {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 100))]
    pub exponential: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub start: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    Rollback,
    Pause,
}

/// Declares a string newtype that is validated on parse and carries a schema
/// `format` the schema walker checks with the same function.
macro_rules! checked_string {
    ($(#[$doc:meta])* $ty:ident, $format:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $check(s).map(|()| $ty(s.to_string()))
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "format": $format })
            }
        }
    };
}

checked_string!(
    /// A DNS label (RFC 1123): the name of a site, application, service…
    Name,
    "dns-label",
    check_dns_label
);
checked_string!(
    /// The name of an object, or a reference to one: a DNS label, or
    /// `TENANT.NAME` for an application owner's object (see `crate::tenancy`).
    ObjectName,
    "object-name",
    check_object_name
);

impl ObjectName {
    /// The application owner whose object this is (`None`: the site provider's).
    pub fn tenant(&self) -> Option<&str> {
        self.0.split_once('.').map(|(tenant, _)| tenant)
    }

    /// The name within its tenant.
    pub fn local(&self) -> &str {
        self.0.split_once('.').map_or(self.0.as_str(), |(_, name)| name)
    }

    /// `TENANT.NAME`, or `NAME` for the provider.
    pub fn within(tenant: Option<&str>, name: &str) -> ObjectName {
        match tenant {
            Some(tenant) => ObjectName(format!("{tenant}.{name}")),
            None => ObjectName(name.to_string()),
        }
    }
}

impl From<Name> for ObjectName {
    fn from(name: Name) -> ObjectName {
        ObjectName(name.0)
    }
}

pub(crate) fn check_object_name(s: &str) -> Result<(), String> {
    match s.split_once('.') {
        None => check_dns_label(s),
        Some((tenant, name)) => check_dns_label(tenant)
            .and_then(|()| check_dns_label(name))
            .map_err(|_| {
                format!(
                    "{s:?} is not a name (a DNS label: lower-case letters, digits and '-'; or TENANT.NAME)"
                )
            }),
    }
}

checked_string!(
    /// A container image reference: `[registry/]path[:tag][@sha256:digest]`.
    ImageRef,
    "image",
    check_image
);

checked_string!(
    /// A key of a secret; it becomes a file name.
    SecretKey,
    "secret-key",
    crate::secret::check_secret_key
);
checked_string!(
    /// When the uplink may carry a topic: `HH:MM-HH:MM`, local time.
    Window,
    "window",
    crate::stream::check_window
);
checked_string!(
    /// A file mode in octal: `"0400"`.
    FileMode,
    "file-mode",
    check_file_mode
);
checked_string!(
    /// `restart`, `none` or `signal:SIGNAL`.
    SecretChange,
    "secret-change",
    check_secret_change
);

impl FileMode {
    /// The mode bits.
    pub fn bits(&self) -> u32 {
        u32::from_str_radix(&self.0, 8).unwrap_or(0o444)
    }
}

impl SecretChange {
    /// The signal to send, for `signal:NAME`.
    pub fn signal(&self) -> Option<&str> {
        self.0.strip_prefix("signal:")
    }
}

/// The signals `onSecretChange` may send.
pub const SECRET_CHANGE_SIGNALS: &[&str] = &[
    "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGQUIT", "SIGTERM", "SIGWINCH",
];

fn check_file_mode(s: &str) -> Result<(), String> {
    let valid = (3..=4).contains(&s.len())
        && s.bytes().all(|b| (b'0'..=b'7').contains(&b))
        && u32::from_str_radix(s, 8).is_ok_and(|m| m <= 0o777);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a file mode (octal, such as \"0400\", at most \"0777\")"
        ))
    }
}

fn check_secret_change(s: &str) -> Result<(), String> {
    match s.strip_prefix("signal:") {
        None if s == "restart" || s == "none" => Ok(()),
        Some(signal) if SECRET_CHANGE_SIGNALS.contains(&signal) => Ok(()),
        Some(signal) => Err(format!(
            "{signal:?} is not a signal onSecretChange may send (one of {})",
            SECRET_CHANGE_SIGNALS.join(", ")
        )),
        None => Err(format!(
            "{s:?} is not restart, none or signal:NAME (such as signal:SIGHUP)"
        )),
    }
}

checked_string!(
    /// The path an HTTP probe asks for: `/healthz`.
    HttpPath,
    "http-path",
    check_http_path
);

fn check_http_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        Err(format!("{s:?} must start with '/'"))
    } else if s.len() > 1024 || s.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        Err(format!(
            "{s:?} is not a request path (at most 1024 characters, no spaces)"
        ))
    } else {
        Ok(())
    }
}

/// The TCP ports `containers` declare, in order, each once.
pub fn tcp_ports(containers: &[Container]) -> impl Iterator<Item = u32> + '_ {
    let mut seen = std::collections::BTreeSet::new();
    containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter(|p| p.protocol == Protocol::Tcp)
        .map(|p| p.container)
        .filter(move |port| seen.insert(*port))
}

/// Whether `s` is a DNS name: labels joined by dots, 253 bytes at most.
pub fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|label| check_dns_label(label).is_ok())
}

pub fn check_dns_label(s: &str) -> Result<(), String> {
    let valid = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if valid {
        return Ok(());
    }
    let hint = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>();
    let hint = hint.trim_matches('-');
    if s.len() > 63 {
        Err(format!("{s:?} is longer than 63 characters"))
    } else if hint.is_empty() || hint.len() > 63 {
        Err(format!(
            "{s:?} is not a DNS label (lower-case letters, digits and '-')"
        ))
    } else {
        Err(format!(
            "{s:?} is not a DNS label (lower-case letters, digits and '-'; try {hint:?})"
        ))
    }
}

pub(crate) fn check_image(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{s:?} is not an image reference ({why})"));
    if s.is_empty() {
        return bad("it is empty");
    }
    if s.chars().any(char::is_whitespace) {
        return bad("it contains white space");
    }
    let (name, digest) = match s.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (s, None),
    };
    if let Some(digest) = digest {
        let valid = digest.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        });
        if !valid {
            return bad("a digest is sha256: and 64 lower-case hex digits");
        }
    }
    // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            && !tag.starts_with(['.', '-']);
        if !valid {
            return bad("a tag is letters, digits, '_', '.' and '-'");
        }
    }
    let mut components = path.split('/').peekable();
    let mut first = true;
    while let Some(component) = components.next() {
        let is_registry = first
            && components.peek().is_some()
            && (component.contains(['.', ':']) || component == "localhost");
        first = false;
        if is_registry {
            let valid = component
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
            if !valid || component.starts_with(['.', '-', ':']) {
                return bad("the registry host is not valid");
            }
            continue;
        }
        let valid = !component.is_empty()
            && component
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
            && component.starts_with(|c: char| c.is_ascii_alphanumeric())
            && component.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            return bad("each path part is lower-case letters and digits, separated by '.', '_' or '-'");
        }
    }
    Ok(())
}

/// Checks a value against one of the formats above; used by the schema walker.
pub(crate) fn check_format(format: &str, text: &str) -> Option<Result<(), String>> {
    Some(match format {
        "dns-label" => check_dns_label(text),
        "object-name" => check_object_name(text),
        "image" => check_image(text),
        "http-path" => check_http_path(text),
        "secret-key" => crate::secret::check_secret_key(text),
        "file-mode" => check_file_mode(text),
        "secret-change" => check_secret_change(text),
        "window" => crate::stream::check_window(text),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
