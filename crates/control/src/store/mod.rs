//! The control plane's storage, behind a trait so PostgreSQL can join
//! SQLite (the default, embedded in the data directory).
//!
//! **Architecture Invariant:** an apply is one transaction: either every
//! object of the batch is stored or none is, and checks that span objects
//! (a deployment naming an application) run inside it.

mod access;
mod engine;
mod fleet;
mod objects;
mod replicas;
mod secrets;
mod streams;
mod telemetry;
mod url;

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use outpost_api::Diagnostics;
use outpost_api::manifest::Kind;
use outpost_api::validate::Document;
use outpost_api::wire::{ApplicationVersion, ApplyResult, LabelChange, StoredObject};
use outpost_api::workload::SiteState;
use serde::Serialize;

pub use access::{AccessStore, AuditQuery};
pub use engine::{Engine, SqlStore};
pub use replicas::{
    Announcement, CHANGES_CHANNEL, Change, FleetLock, ReplicaRecord, ReplicaStore, SealedAuthority,
};
pub use secrets::{Encrypted, NewSecretVersion, SecretStore};
pub use streams::{StreamQuery, StreamStore};
pub use url::{StoreUrl, open_store};

/// The current time as the store writes it (RFC 3339, UTC).
pub fn now_rfc3339() -> String {
    engine::now()
}

/// How many versions of each application are kept (plus any a deployment pins).
pub const KEPT_VERSIONS: i64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The batch conflicts with what is stored; nothing was changed.
    #[error("the manifests are not valid")]
    Invalid(Diagnostics),
    #[error("{kind} {name:?} not found")]
    NotFound { kind: Kind, name: String },
    #[error("host {host:?} not found in site {site:?}")]
    HostNotFound { site: String, host: String },
    #[error("secret {name:?}{} not found", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    SecretNotFound { name: String, version: Option<u64> },
    #[error("{0}")]
    Conflict(String),
    #[error("the database failed")]
    Database(#[from] sqlx::Error),
    #[error("migrating the database failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored JSON is damaged")]
    Damaged(#[from] serde_json::Error),
    /// The store holds something this build cannot read.
    #[error("{0}")]
    Unreadable(String),
}

impl StoreError {
    /// The error with every source, for the log.
    pub fn detail(&self) -> String {
        crate::error_chain(self)
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or updates every object of the batch, all or nothing.
    async fn apply(
        &self,
        documents: &[Document],
        actor: &str,
        options: ApplyOptions<'_>,
    ) -> Result<Vec<ApplyResult>, StoreError>;

    async fn get(&self, kind: Kind, name: &str) -> Result<Option<StoredObject>, StoreError>;

    async fn list(&self, kind: Kind) -> Result<Vec<StoredObject>, StoreError>;

    /// Deletes an object; refuses an application that a deployment uses,
    /// and a site that has hosts unless `cascade`, which removes them and
    /// revokes their certificates in the same transaction.
    async fn delete(&self, kind: Kind, name: &str, cascade: bool) -> Result<Deleted, StoreError>;

    /// Changes an object's labels (a new generation), as `outpost label` does.
    async fn update_labels(
        &self,
        kind: Kind,
        name: &str,
        change: &LabelChange,
    ) -> Result<StoredObject, StoreError>;

    /// The kept versions of an application, newest first.
    async fn application_history(&self, name: &str) -> Result<Vec<ApplicationVersion>, StoreError>;

    /// Flushes and closes; called on shutdown.
    async fn close(&self);
}

/// How an apply runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions<'a> {
    /// Report what would change and store nothing.
    pub dry_run: bool,
    /// The client's key for this request (`Idempotency-Key`): the outcome is
    /// stored with the apply, and a repeated key gets that outcome back
    /// instead of a second apply.
    pub request_key: Option<&'a str>,
}

/// What a delete removed: the object, and the serials of the host
/// certificates it revoked (a site deleted with `cascade`).
#[derive(Debug, Clone)]
pub struct Deleted {
    pub object: StoredObject,
    pub revoked: Vec<RevokedCertificate>,
}

/// A host certificate that may never connect again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCertificate {
    pub serial: String,
    pub site: String,
    pub host: String,
}

/// An enrolled host and what its agent last said.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostRecord {
    pub site: String,
    pub name: String,
    /// Discovered facts (arch, cpus, memory, camera…), read-only.
    pub facts: BTreeMap<String, String>,
    /// The operator's labels; never the name of a fact.
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub applied_revision: i64,
    pub enrolled_at: String,
    pub last_seen: Option<String>,
    /// Records its agent dropped because its queue was full.
    pub dropped: i64,
    /// Bytes of its sessions, counted at the control plane's socket (TLS
    /// included): from the agent, and to it.
    pub bytes_received: i64,
    pub bytes_sent: i64,
    /// The serial of the certificate it was issued (none for hosts enrolled
    /// before serials were recorded).
    #[serde(skip)]
    pub cert_serial: Option<String>,
    /// The serial before its last renewal, still accepted until it expires.
    #[serde(skip)]
    pub previous_serial: Option<String>,
    /// Where the other hosts of its site reach it (empty: it serves none).
    pub site_address: String,
}

/// A digest an agent reported for an image of an application version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDigest {
    pub application: String,
    pub version: String,
    pub image: String,
    pub digest: String,
}

/// (application, version) → image → digest.
pub type ImageDigests = HashMap<(String, String), BTreeMap<String, String>>;

/// The last reported state of one instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    pub site: String,
    pub host: String,
    pub instance: String,
    pub application: String,
    pub service: String,
    pub spec_hash: String,
    pub state: outpost_api::instance::InstanceState,
    pub exit_code: Option<i32>,
    pub reason: String,
    pub updated_at: String,
}

/// What one host reports of an image it is to fetch ahead of a switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostImage {
    pub site: String,
    pub host: String,
    pub application: String,
    pub version: String,
    pub image: String,
    pub present: bool,
    pub fetched: u64,
    pub total: u64,
    pub error: String,
}

/// Hosts, join tokens and what each site should run.
#[async_trait]
pub trait FleetStore: Send + Sync + 'static {
    /// Stores the hash of a join token for `site`, valid until `expires_at`.
    async fn create_join_token(
        &self,
        token_hash: &str,
        site: &str,
        expires_at: time::OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Uses up a join token and records `host` as enrolled at its site with
    /// the serial of the certificate it is about to be issued. Unknown
    /// tokens are `NotFound`; used or expired ones, and a host name already
    /// enrolled at the site, are `Conflict` (and the token stays unused).
    async fn redeem_join_token(
        &self,
        token_hash: &str,
        host: &str,
        cert_serial: &str,
    ) -> Result<String, StoreError>;

    /// Records a renewed host certificate: `new_serial` becomes the host's,
    /// `old_serial` (the one it renewed with) the one before. `Conflict` if
    /// the host holds no certificate with `old_serial`.
    async fn renew_host_certificate(
        &self,
        site: &str,
        host: &str,
        old_serial: &str,
        new_serial: &str,
    ) -> Result<(), StoreError>;

    /// Records which CA (by name) signed the host certificate `serial`.
    async fn record_issuer(&self, serial: &str, issuer: &str) -> Result<(), StoreError>;

    /// The hosts (`SITE/HOST`) whose current certificate another CA than
    /// `issuer` signed.
    async fn hosts_not_issued_by(&self, issuer: &str) -> Result<Vec<String>, StoreError>;

    /// Every revoked certificate, for the deny list kept in memory.
    async fn revoked_certificates(&self) -> Result<Vec<RevokedCertificate>, StoreError>;

    async fn hosts(&self) -> Result<Vec<HostRecord>, StoreError>;

    /// Changes a host's operator labels; a discovered fact cannot be set.
    async fn update_host_labels(
        &self,
        site: &str,
        host: &str,
        change: &LabelChange,
    ) -> Result<HostRecord, StoreError>;

    async fn host(&self, site: &str, host: &str) -> Result<Option<HostRecord>, StoreError>;

    /// Records an agent's hello; returns whether its facts changed.
    async fn record_hello(
        &self,
        site: &str,
        host: &str,
        facts: &BTreeMap<String, String>,
        agent_version: &str,
        applied_revision: i64,
    ) -> Result<bool, StoreError>;

    /// Records where the other hosts of its site reach a host; returns
    /// whether that changed.
    async fn record_site_address(&self, site: &str, host: &str, address: &str) -> Result<bool, StoreError>;

    /// Marks a host as heard from, with the revision it has applied if known.
    async fn record_seen(
        &self,
        site: &str,
        host: &str,
        applied_revision: Option<i64>,
    ) -> Result<(), StoreError>;

    /// Records the digests a site reported for application versions' images;
    /// the first report of each wins. Returns how many were new.
    async fn record_digests(&self, site: &str, digests: &[ImageDigest]) -> Result<usize, StoreError>;

    /// Every recorded digest: (application, version) → image → digest.
    async fn image_digests(&self) -> Result<ImageDigests, StoreError>;

    /// Replaces what is known about one host's instances and the images it
    /// pre-stages.
    async fn record_status(
        &self,
        site: &str,
        host: &str,
        instances: &[InstanceRecord],
        images: &[HostImage],
    ) -> Result<(), StoreError>;

    async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError>;

    /// What every host last reported of the images it pre-stages.
    async fn host_images(&self) -> Result<Vec<HostImage>, StoreError>;

    /// The stored desired state of every site, with its revision.
    async fn site_states(&self) -> Result<BTreeMap<String, (i64, SiteState)>, StoreError>;

    /// The stored desired state of one site, with its revision.
    async fn site_state(&self, site: &str) -> Result<Option<(i64, SiteState)>, StoreError>;

    /// The hosts of one site.
    async fn site_hosts(&self, site: &str) -> Result<Vec<HostRecord>, StoreError>;

    /// The underlay keys of every site that has any (a site gets its first,
    /// epoch 1, when a host first asks for one).
    async fn site_keys(&self) -> Result<BTreeMap<String, outpost_api::wire::SiteKeys>, StoreError>;

    /// Begins a rotation of `site`'s underlay keys at `now`: a new epoch,
    /// with the current one accepted until every host holds the new one
    /// (`at_once`: not at all).
    async fn rotate_site_keys(
        &self,
        site: &str,
        at_once: bool,
        now: time::OffsetDateTime,
    ) -> Result<outpost_api::wire::SiteKeys, StoreError>;

    /// Records that `host` of `site` holds a key of `epoch`, which must be
    /// one the site accepts (`Conflict` otherwise; the site's first epoch
    /// is made here). Ends a rotation every host has followed. The site's
    /// keys after it.
    async fn record_host_key(
        &self,
        site: &str,
        host: &str,
        epoch: u64,
        now: time::OffsetDateTime,
    ) -> Result<outpost_api::wire::SiteKeys, StoreError>;

    /// The rollout of every deployment that has one.
    async fn rollouts(&self) -> Result<BTreeMap<String, outpost_api::rollout::RolloutState>, StoreError>;

    /// Stores a deployment's rollout; a new one (`started`) also starts a
    /// line in the deployment's history, and every save updates its outcome.
    /// Returns the rollouts' counter, which every save and delete raises
    /// (see `ReplicaStore::lock_fleet`).
    async fn save_rollout(
        &self,
        deployment: &str,
        rollout: &outpost_api::rollout::RolloutState,
        started: bool,
    ) -> Result<i64, StoreError>;

    /// Deletes a deployment's rollout; returns the rollouts' counter.
    async fn delete_rollout(&self, deployment: &str) -> Result<i64, StoreError>;

    /// A deployment's rollouts, oldest first: (version, started at, outcome).
    async fn rollout_history(&self, deployment: &str) -> Result<Vec<(String, String, String)>, StoreError>;

    /// Stores the states that differ from the stored ones, each with the next
    /// revision; returns the sites that changed and their new revisions.
    async fn save_site_states(
        &self,
        states: &BTreeMap<String, SiteState>,
    ) -> Result<Vec<(String, i64)>, StoreError>;
}

/// Which events or log lines to read: all filters optional.
#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    pub site: Option<String>,
    pub application: Option<String>,
    /// Only records of this application owner's applications.
    pub tenant: Option<String>,
    /// Only records of these sites.
    pub sites: Option<Vec<String>>,
    pub service: Option<String>,
    /// Only what happened at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only ids above this one (to follow).
    pub after: i64,
    /// At most this many, the newest ones (oldest first in the answer).
    pub limit: i64,
}

/// What agents send up besides status: events, logs, metrics, and the
/// traffic of their sessions.
#[async_trait]
pub trait TelemetryStore: Send + Sync + 'static {
    /// Stores the records of a batch (consecutive sequence numbers from
    /// `first_seq`) that the host has not sent before, and its count of
    /// dropped records, in one transaction; returns the last stored
    /// sequence number, which the agent may forget.
    async fn store_records(
        &self,
        site: &str,
        host: &str,
        first_seq: u64,
        records: &[outpost_api::telemetry::Record],
        dropped: u64,
    ) -> Result<u64, StoreError>;

    /// Stores an event of the control plane itself (no host, no sequence).
    async fn record_event(&self, site: &str, event: &outpost_api::telemetry::Event)
    -> Result<(), StoreError>;

    async fn events(
        &self,
        query: &RecordQuery,
    ) -> Result<Vec<outpost_api::telemetry::StoredEvent>, StoreError>;

    async fn log_lines(
        &self,
        query: &RecordQuery,
    ) -> Result<Vec<outpost_api::telemetry::StoredLogLine>, StoreError>;

    /// The newest metric sample of each host that sent one: (site, host, sample).
    async fn latest_samples(
        &self,
    ) -> Result<Vec<(String, String, outpost_api::telemetry::MetricSample)>, StoreError>;

    /// Adds to the bytes a host's sessions have carried.
    async fn add_traffic(&self, site: &str, host: &str, received: u64, sent: u64) -> Result<(), StoreError>;

    /// Writes down in one transaction what sessions heard since the last
    /// time: hosts seen now, and bytes to add to hosts' totals
    /// (`crate::presence::Heard`).
    async fn record_heard(&self, heard: &crate::presence::Heard) -> Result<(), StoreError>;

    /// Deletes events, log lines and metric samples received before the
    /// given times; returns how many rows went.
    async fn prune(&self, events: &str, logs: &str, metrics: &str) -> Result<u64, StoreError>;
}

/// Everything the control plane keeps.
pub trait Storage:
    Store + FleetStore + TelemetryStore + SecretStore + StreamStore + AccessStore + ReplicaStore
{
}

impl<T: Store + FleetStore + TelemetryStore + SecretStore + StreamStore + AccessStore + ReplicaStore> Storage
    for T
{
}

/// One stored version of a secret: what it holds and where it may go, and
/// its values encrypted (never in clear).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSecret {
    pub name: String,
    pub version: u64,
    pub keys: Vec<String>,
    pub sites: Option<String>,
    pub images: Vec<String>,
    pub size: u64,
    pub encrypted: Encrypted,
    pub created_at: String,
    /// When its first kept version was made.
    pub first_created_at: String,
    pub created_by: String,
}

impl HostRecord {
    /// What host selectors see: the facts and the operator's labels.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.extend(self.facts.clone());
        labels
    }
}
