//! The REST API's bodies, shared by the control plane and the CLI.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostic;
use crate::manifest::{ApiVersion, Kind, Manifest};

/// An object as the control plane stores it: the manifest plus what the
/// server keeps about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredObject {
    pub api_version: ApiVersion,
    pub kind: Kind,
    pub metadata: ObjectMeta,
    pub spec: serde_json::Value,
    /// What the fleet reports about the object (sites and deployments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Raised by one each time the object's labels or spec change.
    pub generation: i64,
    /// RFC 3339 timestamps.
    pub created_at: String,
    pub updated_at: String,
}

impl StoredObject {
    /// The manifest as the operator wrote it, without the server's fields.
    pub fn manifest(&self) -> Result<Manifest, serde_json::Error> {
        serde_json::from_value(self.manifest_json())
    }

    /// The manifest as JSON (what `outpost diff` compares).
    pub fn manifest_json(&self) -> serde_json::Value {
        manifest_json(self.kind, &self.metadata.name, &self.metadata.labels, &self.spec)
    }
}

/// A manifest as JSON in one canonical layout, whether it comes from the
/// store or from a file, so that two of them compare field by field.
pub fn manifest_json(
    kind: Kind,
    name: &str,
    labels: &BTreeMap<String, String>,
    spec: &serde_json::Value,
) -> serde_json::Value {
    let mut metadata = serde_json::json!({ "name": name });
    if !labels.is_empty() {
        metadata["labels"] = serde_json::json!(labels);
    }
    serde_json::json!({
        "apiVersion": ApiVersion::V1,
        "kind": kind,
        "metadata": metadata,
        "spec": spec,
    })
}

impl Manifest {
    /// This manifest in the layout of [`manifest_json`].
    pub fn to_canonical_json(&self) -> serde_json::Value {
        let metadata = self.metadata();
        manifest_json(
            self.kind(),
            metadata.name.as_str(),
            &metadata.labels,
            &self.spec_json(),
        )
    }
}

/// A batch of manifest files applied together: all of it, or none of it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyRequest {
    pub files: Vec<SourceFile>,
    /// Validate and report what would change, store nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceFile {
    /// Shown in diagnostics (`pos.yaml:14:9: …`).
    pub name: String,
    pub content: String,
}

/// The request header that makes an apply safe to send twice: the control
/// plane answers a repeated key with the outcome it stored the first time.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    pub dry_run: bool,
    pub results: Vec<ApplyResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    pub kind: Kind,
    pub name: String,
    pub action: ApplyAction,
    /// The generation after the apply (or that it would have).
    pub generation: i64,
    /// The object before this apply, if it existed (for `outpost diff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<StoredObject>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

impl ApplyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
        }
    }
}

/// One stored version of an application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationVersion {
    pub version: String,
    /// The application's generation when this version was last applied.
    pub generation: i64,
    pub applied_at: String,
    pub current: bool,
    pub spec: serde_json::Value,
}

/// Every error response: a stable code, a message, and for manifests every
/// diagnostic with its position.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// Stable and machine-readable: `invalid_manifest`, `not_found`, `unauthorized`…
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
}

/// `GET /api/v1/{kind}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ObjectList {
    pub items: Vec<StoredObject>,
}

/// `POST /api/v1/sites/{site}/tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinTokenRequest {
    /// How long the token stays valid, such as `1h` (default) or `7d`.
    #[serde(default)]
    pub ttl: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    /// Single use; shown once, stored only as a hash.
    pub token: String,
    pub site: String,
    pub expires_at: String,
}

/// Live status of a site, from its hosts' agents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteStatus {
    pub online: bool,
    pub hosts: usize,
    pub online_hosts: usize,
    /// The desired state's revision.
    pub revision: i64,
    /// The lowest revision any host of the site has applied.
    pub applied_revision: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
    /// Deployments that select the site but cannot run there, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// Each host's application topics as it last reported them: backlog,
    /// the oldest unsent record (the lag is its age) and drops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<crate::stream::TopicStatus>,
    /// What each host of the site's cluster last reported: whom it hears,
    /// the placement epoch, and the instances the site moved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster: Vec<ClusterStatus>,
}

/// A site's underlay keys (the site network): the epoch of the keys its
/// hosts present, and the epoch before it while a rotation is under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteKeys {
    pub site: String,
    pub epoch: u64,
    /// Still accepted until every host of the site holds a key of `epoch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring: Option<u64>,
    /// When the last rotation began (RFC 3339).
    pub rotated_at: String,
    /// The hosts that hold a key of `epoch`, of how many.
    pub hosts_rotated: u32,
    pub hosts: u32,
}

impl SiteKeys {
    /// The epochs whose keys the site's hosts accept, oldest first.
    pub fn accepted(&self) -> Vec<u64> {
        self.retiring.into_iter().chain([self.epoch]).collect()
    }
}

/// `POST /v1/sites/{name}/rotate-keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateKeysRequest {
    /// Stop accepting the old keys at once, not when every host has new
    /// ones (for a stolen host): connections on old keys end.
    #[serde(default)]
    pub at_once: bool,
}

/// One host's view of its site cluster (hosts with `--site-listen`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub host: String,
    /// Its place in the site's Raft group (`leader`, `voter`, `learner`):
    /// none at a site of one or two hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The peers it heard within `hostLossAfter`.
    pub hears: Vec<String>,
    /// The placement epoch it holds, and the host that decided it.
    pub epoch: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    /// Instances the site moved off lost hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Value>")]
    pub moved: Vec<crate::workload::Moved>,
    /// The hosts the site lost, and since when (RFC 3339).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lost: BTreeMap<String, String>,
}

/// How one deployment fares on one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentSiteState {
    UpToDate,
    Progressing,
    Failed,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSite {
    pub site: String,
    pub state: DeploymentSiteState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// While the site pre-stages the images of the release it will switch
    /// to: how far it has come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<ImageProgress>,
}

/// How far a site has come fetching the images of a release ahead of the
/// switch, summed over its hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageProgress {
    /// Images to fetch (one per host that will run it).
    pub images: usize,
    /// Of those, the ones the hosts hold.
    pub present: usize,
    /// Bytes fetched so far by pulls under way or done.
    pub fetched: u64,
    /// Bytes the pulls under way still have to fetch (as far as known).
    pub left: u64,
    /// Why a pull failed last, if one did; it is retried.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl ImageProgress {
    pub fn complete(&self) -> bool {
        self.present == self.images
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    pub up_to_date: usize,
    pub progressing: usize,
    pub failed: usize,
    pub offline: usize,
    pub sites: Vec<DeploymentSite>,
}

/// How a site fares as a whole, most severe first: the state of the fleet
/// overview's counts and heat-map, and the site list's order. A site is up
/// to date only when every deployment that reaches it is
/// (`DeploymentSiteState::UpToDate`: every instance of the desired version
/// runs and passes its probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SiteHealth {
    Failed,
    /// No host connected, and the site does not say it is often offline.
    OfflineUnexpected,
    Progressing,
    /// No host has ever connected.
    NeverConnected,
    /// No host connected, as the site's `oftenOffline` says to expect.
    OfflineExpected,
    UpToDate,
}

impl SiteHealth {
    pub const ALL: [SiteHealth; 6] = [
        SiteHealth::Failed,
        SiteHealth::OfflineUnexpected,
        SiteHealth::Progressing,
        SiteHealth::NeverConnected,
        SiteHealth::OfflineExpected,
        SiteHealth::UpToDate,
    ];

    /// The name the API writes (`offlineExpected`).
    pub fn as_str(self) -> &'static str {
        match self {
            SiteHealth::Failed => "failed",
            SiteHealth::OfflineUnexpected => "offlineUnexpected",
            SiteHealth::Progressing => "progressing",
            SiteHealth::NeverConnected => "neverConnected",
            SiteHealth::OfflineExpected => "offlineExpected",
            SiteHealth::UpToDate => "upToDate",
        }
    }

    /// In words, for people (`offline (expected)`).
    pub fn words(self) -> &'static str {
        match self {
            SiteHealth::Failed => "failed",
            SiteHealth::OfflineUnexpected => "offline (unexpected)",
            SiteHealth::Progressing => "progressing",
            SiteHealth::NeverConnected => "never connected",
            SiteHealth::OfflineExpected => "offline (expected)",
            SiteHealth::UpToDate => "up to date",
        }
    }
}

impl std::str::FromStr for SiteHealth {
    type Err = String;

    fn from_str(text: &str) -> Result<SiteHealth, String> {
        SiteHealth::ALL
            .into_iter()
            .find(|health| health.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = SiteHealth::ALL.iter().map(|h| h.as_str()).collect();
                format!("{text:?} is not a site state (use {})", names.join(", "))
            })
    }
}

/// One site as the fleet views show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteSummary {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub health: SiteHealth,
    /// Why, for any state but up to date (`shop: web-1: starting`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub hosts: usize,
    pub online_hosts: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

/// How many sites are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCounts {
    pub failed: usize,
    pub offline_unexpected: usize,
    pub progressing: usize,
    pub never_connected: usize,
    pub offline_expected: usize,
    pub up_to_date: usize,
}

impl HealthCounts {
    pub fn add(&mut self, health: SiteHealth) {
        *self.get_mut(health) += 1;
    }

    pub fn get(&self, health: SiteHealth) -> usize {
        match health {
            SiteHealth::Failed => self.failed,
            SiteHealth::OfflineUnexpected => self.offline_unexpected,
            SiteHealth::Progressing => self.progressing,
            SiteHealth::NeverConnected => self.never_connected,
            SiteHealth::OfflineExpected => self.offline_expected,
            SiteHealth::UpToDate => self.up_to_date,
        }
    }

    fn get_mut(&mut self, health: SiteHealth) -> &mut usize {
        match health {
            SiteHealth::Failed => &mut self.failed,
            SiteHealth::OfflineUnexpected => &mut self.offline_unexpected,
            SiteHealth::Progressing => &mut self.progressing,
            SiteHealth::NeverConnected => &mut self.never_connected,
            SiteHealth::OfflineExpected => &mut self.offline_expected,
            SiteHealth::UpToDate => &mut self.up_to_date,
        }
    }

    pub fn total(&self) -> usize {
        SiteHealth::ALL.iter().map(|health| self.get(*health)).sum()
    }
}

/// `GET /api/v1/fleet/overview`: every site the caller sees, counted by
/// state and grouped by one label's values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetOverview {
    pub counts: HealthCounts,
    /// The label the sites are grouped by.
    pub group_by: String,
    /// One group per value of that label (sites without it: the group
    /// with an empty value), largest first.
    pub groups: Vec<SiteGroup>,
}

/// The sites that share one value of the overview's label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteGroup {
    pub value: String,
    pub counts: HealthCounts,
    /// Its most severe sites first, at most the overview's `perGroup`.
    pub sites: Vec<SiteSummary>,
}

/// `GET /api/v1/fleet/sites`: one page of the sites the caller sees that a
/// selector (and a state) picks, most severe first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SitePage {
    /// How many sites match, over every page.
    pub total: usize,
    pub offset: usize,
    pub items: Vec<SiteSummary>,
}

/// One instance as its host last reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDetail {
    pub instance: String,
    pub application: String,
    pub service: String,
    pub state: crate::instance::InstanceState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The application version it runs: the desired one once its spec
    /// matches, empty while it still runs an earlier one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// An enrolled host, as `GET /api/v1/hosts` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostInfo {
    pub site: String,
    pub name: String,
    pub online: bool,
    pub facts: BTreeMap<String, String>,
    pub agent_version: String,
    pub applied_revision: i64,
    pub enrolled_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Instances on this host: name → state.
    #[serde(default)]
    pub instances: BTreeMap<String, crate::instance::InstanceState>,
    /// The same instances with what they run and why they are in their
    /// state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<InstanceDetail>,
    /// The operator's labels (facts are separate and read-only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Events, logs and metrics its agent dropped because its queue was full.
    #[serde(default)]
    pub dropped: i64,
    /// Bytes its agent sessions carried, counted at the control plane's
    /// socket (TLS included): from the host, and to it.
    #[serde(default)]
    pub bytes_received: i64,
    #[serde(default)]
    pub bytes_sent: i64,
    /// In a site cluster: how many of its peers hear it, of how many
    /// report (none: no cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_by: Option<(usize, usize)>,
    /// Its role in the site's Raft group, as it last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HostList {
    pub items: Vec<HostInfo>,
}

/// `PATCH …/labels`: labels to set and labels to remove.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelChange {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl LabelChange {
    /// Reads `key=value` and `key-` arguments, the way `kubectl label` does.
    pub fn from_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<LabelChange, String> {
        let mut change = LabelChange::default();
        for arg in args {
            if let Some((key, value)) = arg.split_once('=') {
                change.set.insert(key.to_string(), value.to_string());
            } else if let Some(key) = arg.strip_suffix('-') {
                change.remove.push(key.to_string());
            } else {
                return Err(format!(
                    "{arg:?}: use key=value to set a label or key- to remove one"
                ));
            }
        }
        if change.set.is_empty() && change.remove.is_empty() {
            return Err("no labels given (key=value to set, key- to remove)".to_string());
        }
        Ok(change)
    }

    /// Every problem with the keys and values, or nothing.
    pub fn check(&self) -> Result<(), String> {
        let problems: Vec<String> = self
            .set
            .iter()
            .flat_map(|(k, v)| {
                [
                    crate::validate::check_label_key(k).err(),
                    crate::validate::check_label_value(v).err(),
                ]
            })
            .chain(
                self.remove
                    .iter()
                    .map(|k| crate::validate::check_label_key(k).err()),
            )
            .flatten()
            .chain(
                self.remove
                    .iter()
                    .filter(|k| self.set.contains_key(*k))
                    .map(|k| format!("label {k:?} is both set and removed; say one")),
            )
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The labels after this change, or why there would be too many.
    pub fn applied_to(&self, labels: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
        let mut next = labels.clone();
        for key in &self.remove {
            next.remove(key);
        }
        next.extend(self.set.clone());
        if next.len() > crate::limits::MAX_LABELS && next.len() > labels.len() {
            return Err(format!(
                "that makes {} labels; at most {} fit",
                next.len(),
                crate::limits::MAX_LABELS
            ));
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_changes() {
        let change = LabelChange::from_args(["tier=gold", "zone-", "env=prod"]).unwrap();
        assert_eq!(change.remove, ["zone"]);
        let before: BTreeMap<String, String> = [
            ("zone".to_string(), "a".to_string()),
            ("env".to_string(), "dev".to_string()),
        ]
        .into();
        let after = change.applied_to(&before).unwrap();
        assert_eq!(after.get("env").map(String::as_str), Some("prod"));
        assert_eq!(after.get("tier").map(String::as_str), Some("gold"));
        assert!(!after.contains_key("zone"));
        assert!(
            LabelChange::from_args(["tier"])
                .unwrap_err()
                .contains("key=value")
        );
        assert!(LabelChange::from_args(Vec::<&str>::new()).is_err());
        assert!(LabelChange::from_args(["bad key!=x"]).unwrap().check().is_err());
        // Issue 11: setting and removing one label in one call was silently resolved.
        let both = LabelChange::from_args(["tier=gold", "tier-"]).unwrap();
        assert_eq!(
            both.check().unwrap_err(),
            "label \"tier\" is both set and removed; say one"
        );
        let many = LabelChange::from_args(["k64=v"]).unwrap();
        let full: BTreeMap<String, String> = (0..64).map(|i| (format!("k{i}"), "v".to_string())).collect();
        assert_eq!(
            many.applied_to(&full).unwrap_err(),
            "that makes 65 labels; at most 64 fit"
        );
    }
}

/// `POST /api/v1/plan`: what applying a batch would make each site run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanResponse {
    pub deployments: Vec<DeploymentPlan>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentPlan {
    pub name: String,
    pub application: String,
    /// The version the deployment would run.
    pub version: String,
    pub selector: String,
    pub waves: Vec<WavePlan>,
    /// Sites the selector leaves out.
    pub not_selected: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WavePlan {
    pub wave: String,
    pub sites: Vec<SitePlan>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SitePlan {
    pub site: String,
    /// `install 1.4.3`, `update 1.4.2 -> 1.4.3`, `change 1.4.3` (same
    /// version, new spec), `unchanged 1.4.3`, `wait` (no host yet) or
    /// `cannot run`.
    pub action: String,
    /// `instance on host` for each instance it would run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// `GET /api/v1/deployments/{name}/rollout`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub deployment: String,
    /// The current (or last) rollout, if the deployment had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub rollout: Option<crate::rollout::RolloutState>,
    /// How the deployment fares on each selected site.
    pub sites: Vec<DeploymentSite>,
    /// Every rollout of this deployment, oldest first.
    pub history: Vec<RolloutRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    pub version: String,
    pub started_at: String,
    /// running, paused, succeeded, rolledBack or aborted.
    pub outcome: String,
}

/// `POST /api/v1/deployments/{name}/rollout/undo`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UndoRequest {
    /// The version to go back to; without it, the one before the current rollout.
    #[serde(default)]
    pub to_version: Option<String>,
}

/// `POST /api/v1/deployments/{name}/bundle`: what an offline bundle of a
/// deployment holds (without the archive's digest), or its signed header
/// (with it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleRequest {
    /// The application version; without it, the one the deployment runs.
    #[serde(default)]
    pub version: Option<String>,
    /// The SHA-256 (hex) of the image archive the bundle will carry.
    #[serde(default)]
    pub archive_sha256: Option<String>,
    #[serde(default)]
    pub archive_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleResponse {
    pub deployment: String,
    pub version: String,
    /// The images the archive must hold (pinned to recorded digests).
    pub images: Vec<String>,
    /// The sites the bundle carries a desired state for.
    pub sites: Vec<String>,
    /// With the archive's digest: the signed header (JSON) and the
    /// signature over it (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}
