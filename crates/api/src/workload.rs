//! What a site runs: the deployments that select a site, compiled into one
//! `Workload` per application service, with `${site.NAME}` substituted.
//! Pure functions; the control plane stores the result per site with a
//! revision, and agents reconcile to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::{ApplicationSpec, Container, Deployment, EnvValue, Failover, ServiceMode, Site};
use crate::quantity::{Cpu, Size};
use crate::secret::SecretPolicy;
use crate::selector::Selector;
use crate::validate::site_references;

/// One service of one application, as a site must run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub application: String,
    pub version: String,
    pub deployment: String,
    pub service: String,
    /// Instances per site; ignored when `per_host`.
    pub replicas: u32,
    pub per_host: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Selector>,
    /// Containers with site variables already substituted.
    pub containers: Vec<Container>,
    /// Which host runs which instance (filled by [`assign_hosts`]).
    #[serde(default)]
    pub instances: Vec<Instance>,
    /// The version of each secret its containers refer to. Only names and
    /// versions: the values travel sealed beside the manifest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, u64>,
    /// The digest (`sha256:…`) recorded for each image its containers name
    /// by tag: every site of this version runs the same bytes. Not part of
    /// the spec hash, so recording a digest replaces no container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, String>,
    /// The application's event-stream topics (every service of it carries
    /// them), and the site's time zone their windows are read in (an IANA
    /// name; none: UTC). Not part of the spec hash: they change with the
    /// version, and a time zone changes no container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<crate::stream::Topic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// What the site may do with an instance whose host it lost (the
    /// service's `failover`, or its default). Not part of the spec hash.
    #[serde(default, skip_serializing_if = "is_move")]
    pub failover: Failover,
}

fn is_move(failover: &Failover) -> bool {
    *failover == Failover::Move
}

/// The reference a container runs: its image, pinned to the recorded
/// digest (`repository@sha256:…`) when there is one and the image names
/// none itself.
pub fn pinned_image(image: &str, digests: &BTreeMap<String, String>) -> String {
    match digests.get(image) {
        Some(digest) if !image.contains('@') => format!("{}@{digest}", repository(image)),
        _ => image.to_string(),
    }
}

/// An image reference without its tag or digest.
pub fn repository(image: &str) -> &str {
    let name = image.split_once('@').map_or(image, |(name, _)| name);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    }
}

/// One running copy of a workload on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// `application-service-N`, or `application-service-HOST` for per-host services.
    pub name: String,
    pub host: String,
    /// The lost host the site moved it off (`apply_moves`), while the move
    /// holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
}

impl Workload {
    /// `application/service`: unique within a site.
    pub fn key(&self) -> String {
        format!("{}/{}", self.application, self.service)
    }

    /// A hash of everything that, when changed, needs new containers: the
    /// spec, and the versions of the secrets a container must restart for
    /// (env values, and files whose `onSecretChange` is `restart`). An
    /// instance reports it, so the control plane knows it is up to date.
    pub fn spec_hash(&self) -> String {
        self.hash_with(|name| self.containers.iter().any(|c| c.restarts_for(name)))
    }

    /// The hash one container of an instance runs under: the spec, and the
    /// secrets *it* must restart for, so that a new secret version leaves
    /// a container that is only signalled (`onSecretChange`) running.
    pub fn container_hash(&self, container: &Container) -> String {
        self.hash_with(|name| container.restarts_for(name))
    }

    fn hash_with(&self, restarts_for: impl Fn(&str) -> bool) -> String {
        let restart: BTreeMap<&str, u64> = self
            .secrets
            .iter()
            .filter(|(name, _)| restarts_for(name))
            .map(|(name, version)| (name.as_str(), *version))
            .collect();
        // Without secrets the hash is what it was before secrets existed,
        // so an upgrade replaces no container.
        let json = if restart.is_empty() {
            serde_json::to_vec(&(&self.version, &self.containers))
        } else {
            serde_json::to_vec(&(&self.version, &self.containers, &restart))
        };
        hex::encode(&Sha256::digest(json.unwrap_or_default())[..8])
    }
}

/// A deployment that selects a site but cannot run there, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementFailure {
    pub deployment: String,
    pub application: String,
    pub reason: String,
}

/// The compiled desired state of one site.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteState {
    pub workloads: Vec<Workload>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<PlacementFailure>,
    /// The workloads of releases a rollout will switch this site to, placed
    /// as they would run: each host fetches their images ahead of the
    /// switch, and runs nothing of them (pre-staging).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub staged: Vec<Workload>,
    /// The site's hosts that listen for each other (`--site-listen`), and
    /// where: a host asks them for an image before its registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    /// How long a host may go unheard by its peers before the site moves
    /// its instances (the site's `hostLossAfter`; 0: the default).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub host_loss_after_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SiteState {
    /// `hostLossAfter`, or its default.
    pub fn host_loss_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(match self.host_loss_after_ms {
            0 => crate::limits::DEFAULT_HOST_LOSS_AFTER_MS,
            ms => ms,
        })
    }
}

/// A host of a site, where the other hosts reach it, and its labels (facts
/// and the operator's), which the site places moved instances by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Peer {
    pub host: String,
    /// `host:port`.
    pub address: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Compiles what `site` runs. `application_spec(name, version)` looks up a
/// stored application version (`None` for the version means the current);
/// `secrets` are the policies of the secrets that exist. An application
/// that refers to a secret this site or its image may not have is a
/// placement failure, and the site gets nothing of that secret.
pub fn compile_site<'a>(
    site: &Site,
    deployments: impl IntoIterator<Item = &'a Deployment>,
    application_spec: impl Fn(&str, Option<&str>) -> Option<ApplicationSpec>,
    secrets: &BTreeMap<String, SecretPolicy>,
) -> SiteState {
    let mut state = SiteState {
        host_loss_after_ms: site.spec.host_loss_after.map_or(0, |d| d.0),
        ..SiteState::default()
    };
    let mut deployments: Vec<&Deployment> = deployments
        .into_iter()
        .filter(|d| d.spec.sites.matches(&site.metadata.labels))
        .collect();
    deployments.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut taken: BTreeMap<String, String> = BTreeMap::new();
    for deployment in deployments {
        let application = deployment.spec.application.as_str();
        let failure = |reason: String| PlacementFailure {
            deployment: deployment.metadata.name.to_string(),
            application: application.to_string(),
            reason,
        };
        // A rollout's label may pin secret versions beside the version.
        let (version, pinned) = match deployment.spec.version.as_deref() {
            Some(label) => {
                let (version, pinned) = crate::secret::split_release(label);
                (Some(version), pinned)
            }
            None => (None, BTreeMap::new()),
        };
        let Some(spec) = application_spec(application, version).map(ApplicationSpec::with_pull_secrets)
        else {
            state.failures.push(failure(format!(
                "application {application:?} has no version {:?}",
                version.unwrap_or("current")
            )));
            continue;
        };
        if let Some(other) = taken.get(application) {
            state.failures.push(failure(format!(
                "deployment {other:?} already runs application {application:?} on this site"
            )));
            continue;
        }
        let versions = match secret_versions(&spec, site, secrets, &pinned) {
            Ok(versions) => versions,
            Err(reason) => {
                state.failures.push(failure(reason));
                continue;
            }
        };
        match substitute(&spec, &site.spec.variables) {
            Ok(spec) => {
                taken.insert(application.to_string(), deployment.metadata.name.to_string());
                let windowed = spec.streams.iter().any(|t| t.window.is_some());
                let time_zone = if windowed { site_time_zone(site) } else { None };
                for service in spec.services {
                    let secrets = versions
                        .iter()
                        .filter(|(name, _)| {
                            service
                                .containers
                                .iter()
                                .any(|c| c.secret_uses().any(|u| u.secret == name.as_str()))
                        })
                        .map(|(name, version)| (name.clone(), *version))
                        .collect();
                    let failover = service.failover();
                    state.workloads.push(Workload {
                        failover,
                        application: application.to_string(),
                        version: spec.version.clone(),
                        deployment: deployment.metadata.name.to_string(),
                        service: service.name.to_string(),
                        replicas: service.replicas.unwrap_or(1),
                        per_host: service.mode == Some(ServiceMode::PerHost),
                        hosts: service.hosts,
                        containers: service.containers,
                        instances: Vec::new(),
                        secrets,
                        digests: BTreeMap::new(),
                        streams: spec.streams.clone(),
                        time_zone: time_zone.clone(),
                    });
                }
            }
            Err(reason) => state.failures.push(failure(reason)),
        }
    }
    state
}

/// The time zone a site's stream windows are read in: its `timezone`
/// variable, else its `timezone` label.
fn site_time_zone(site: &Site) -> Option<String> {
    let key = crate::stream::TIME_ZONE_KEY;
    site.spec
        .variables
        .get(key)
        .or_else(|| site.metadata.labels.get(key))
        .cloned()
}

/// What a host can give, from its facts (`cpus`, `memory`, `gpu`); a fact
/// the host does not report does not limit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Room {
    cpu: Option<u64>,
    memory: Option<u64>,
    gpu: u64,
}

/// What one instance of a workload asks for: the sum of its containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Request {
    cpu: u64,
    memory: u64,
    gpu: u64,
}

fn room(labels: &BTreeMap<String, String>) -> Room {
    Room {
        cpu: labels
            .get("cpus")
            .and_then(|c| c.parse::<u64>().ok())
            .map(|c| c * 1000),
        memory: labels
            .get("memory")
            .and_then(|m| m.parse::<Size>().ok())
            .map(|m| m.0),
        gpu: labels.get("gpu").and_then(|g| g.parse().ok()).unwrap_or(0),
    }
}

fn request(workload: &Workload) -> Request {
    workload.containers.iter().fold(Request::default(), |sum, c| {
        let r = c.resources.as_ref();
        Request {
            cpu: sum.cpu + r.and_then(|r| r.cpu).map_or(0, |c| u64::from(c.0)),
            memory: sum.memory + r.and_then(|r| r.memory).map_or(0, |m| m.0),
            gpu: sum.gpu + r.and_then(|r| r.gpu).map_or(0, u64::from),
        }
    })
}

/// Why `want` does not fit in `free`, if it does not.
fn shortfall(free: &Room, want: &Request) -> Option<String> {
    if let Some(cpu) = free.cpu
        && want.cpu > cpu
    {
        return Some(format!(
            "cpu {} free < {} requested",
            Cpu(cpu as u32),
            Cpu(want.cpu as u32)
        ));
    }
    if let Some(memory) = free.memory
        && want.memory > memory
    {
        return Some(format!(
            "memory {} free < {} requested",
            Size(memory),
            Size(want.memory)
        ));
    }
    if want.gpu > free.gpu {
        return Some(format!("gpu {} free < {} requested", free.gpu, want.gpu));
    }
    None
}

fn take(free: &mut Room, want: &Request) {
    free.cpu = free.cpu.map(|c| c - want.cpu);
    free.memory = free.memory.map(|m| m - want.memory);
    free.gpu -= want.gpu;
}

/// Places instances on hosts, workloads in order. A host is a candidate
/// when the service's host selector matches its labels (discovered facts
/// and the operator's labels) and it has room for the requested cpu,
/// memory and gpus beside what is already placed. A per-host service gets
/// an instance on every candidate; `replicas` go one by one to the candidate
/// running the fewest of them (then by name). What cannot be placed is a
/// placement failure that says why, host by host. A site with no host yet
/// places nothing and fails nothing: it waits.
pub fn assign_hosts(state: &mut SiteState, hosts: &BTreeMap<String, BTreeMap<String, String>>) {
    if hosts.is_empty() {
        return;
    }
    let mut free: BTreeMap<&str, Room> = hosts
        .iter()
        .map(|(name, labels)| (name.as_str(), room(labels)))
        .collect();
    let mut placed = Vec::new();
    for mut workload in std::mem::take(&mut state.workloads) {
        let want = request(&workload);
        let prefix = format!("{}-{}", workload.application, workload.service);
        let matching: Vec<&str> = hosts
            .iter()
            .filter(|(_, labels)| workload.hosts.as_ref().is_none_or(|s| s.matches(labels)))
            .map(|(name, _)| name.as_str())
            .collect();
        let wanted = if workload.per_host {
            matching.len()
        } else {
            workload.replicas as usize
        };
        let mut instances: Vec<Instance> = Vec::new();
        for n in 0..wanted {
            let fits = |host: &str| shortfall(&free[host], &want).is_none();
            let host = if workload.per_host {
                Some(matching[n]).filter(|h| fits(h))
            } else {
                matching
                    .iter()
                    .copied()
                    .filter(|h| fits(h))
                    .min_by_key(|h| instances.iter().filter(|i| i.host == *h).count())
            };
            let Some(host) = host else { continue };
            if let Some(room) = free.get_mut(host) {
                take(room, &want);
            }
            let name = if workload.per_host {
                format!("{prefix}-{host}")
            } else {
                format!("{prefix}-{n}")
            };
            instances.push(Instance {
                name,
                host: host.to_string(),
                moved_from: None,
            });
        }
        if instances.len() < wanted || wanted == 0 {
            let why: Vec<String> = hosts
                .iter()
                .filter(|(name, _)| !instances.iter().any(|i| i.host == **name))
                .map(|(name, labels)| {
                    let reason = workload
                        .hosts
                        .as_ref()
                        .and_then(|s| s.explain(labels))
                        .or_else(|| shortfall(&free[name.as_str()], &want))
                        .unwrap_or_else(|| "full".to_string());
                    format!("{name}: {reason}")
                })
                .collect();
            let reason = if instances.is_empty() {
                format!(
                    "service {}: no host can run it ({})",
                    workload.service,
                    why.join("; ")
                )
            } else {
                let placed = instances.len();
                format!(
                    "service {}: {placed} of {wanted} replicas placed ({})",
                    workload.service,
                    why.join("; ")
                )
            };
            state.failures.push(PlacementFailure {
                deployment: workload.deployment.clone(),
                application: workload.application.clone(),
                reason,
            });
        }
        if !instances.is_empty() {
            workload.instances = instances;
            placed.push(workload);
        }
    }
    state.workloads = placed;
}

/// An instance a site moved off a host it lost.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Moved {
    /// The workload's `application/service`.
    pub workload: String,
    pub instance: String,
    pub from: String,
    pub to: String,
}

/// What a site does about the hosts it lost: the instances it moves, and
/// those it cannot, with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rescheduled {
    pub moved: Vec<Moved>,
    pub stranded: Vec<(String, String)>,
}

/// Where the instances of `lost` hosts go, decided at the site. `hosts`
/// holds the labels of every host of the site (lost ones too); a survivor
/// takes an instance when the service's host selector matches it and it
/// has room beside what already runs there, the fewest of the service's
/// instances first (then by name), as [`assign_hosts`] places. `stay`
/// services and per-host ones never move; a `singleton` moves only with
/// `majority` (a majority of the site's hosts, or the control plane as
/// witness, behind the decision).
pub fn reschedule(
    state: &SiteState,
    hosts: &BTreeMap<String, BTreeMap<String, String>>,
    lost: &std::collections::BTreeSet<String>,
    majority: bool,
) -> Rescheduled {
    let mut free: BTreeMap<&str, Room> = hosts
        .iter()
        .filter(|(name, _)| !lost.contains(*name))
        .map(|(name, labels)| (name.as_str(), room(labels)))
        .collect();
    for workload in &state.workloads {
        let want = request(workload);
        for instance in &workload.instances {
            if let Some(room) = free.get_mut(instance.host.as_str()) {
                take_up_to(room, &want);
            }
        }
    }
    let mut out = Rescheduled::default();
    for workload in &state.workloads {
        let want = request(workload);
        let mut running: Vec<&str> = workload
            .instances
            .iter()
            .filter(|i| !lost.contains(&i.host))
            .map(|i| i.host.as_str())
            .collect();
        for instance in workload.instances.iter().filter(|i| lost.contains(&i.host)) {
            let why = match workload.failover {
                _ if workload.per_host => Some("per-host: it runs on every host, and stays".to_string()),
                Failover::Stay => Some("failover: stay".to_string()),
                Failover::Singleton if !majority => Some(
                    "failover: singleton, and no majority of the site's hosts (or the control plane) is behind a move"
                        .to_string(),
                ),
                Failover::Move | Failover::Singleton => None,
            };
            if let Some(why) = why {
                out.stranded.push((instance.name.clone(), why));
                continue;
            }
            let host = free
                .iter()
                .filter(|(name, room)| {
                    workload.hosts.as_ref().is_none_or(|s| s.matches(&hosts[**name]))
                        && shortfall(room, &want).is_none()
                })
                .map(|(name, _)| *name)
                .min_by_key(|name| (running.iter().filter(|h| *h == name).count(), *name));
            let Some(host) = host else {
                out.stranded.push((
                    instance.name.clone(),
                    "no surviving host matches its selector and has room".to_string(),
                ));
                continue;
            };
            if let Some(room) = free.get_mut(host) {
                take(room, &want);
            }
            running.push(host);
            out.moved.push(Moved {
                workload: workload.key(),
                instance: instance.name.clone(),
                from: instance.host.clone(),
                to: host.to_string(),
            });
        }
    }
    out
}

/// Takes what an instance already running uses, but no more than is left
/// (the control plane may have placed beyond a host's room before its
/// facts changed).
fn take_up_to(free: &mut Room, want: &Request) {
    free.cpu = free.cpu.map(|c| c.saturating_sub(want.cpu));
    free.memory = free.memory.map(|m| m.saturating_sub(want.memory));
    free.gpu = free.gpu.saturating_sub(want.gpu);
}

/// `state` with `moved` applied: each moved instance runs on its new host.
/// A move whose instance no longer runs where it was moved from (the
/// control plane placed it anew) is void.
pub fn apply_moves(state: &mut SiteState, moved: &[Moved]) {
    for workload in &mut state.workloads {
        let key = workload.key();
        for instance in &mut workload.instances {
            if let Some(m) = moved
                .iter()
                .find(|m| m.workload == key && m.instance == instance.name && m.from == instance.host)
            {
                instance.host = m.to.clone();
                instance.moved_from = Some(m.from.clone());
            }
        }
    }
}

/// Replaces `${site.NAME}` in every env value; `$$` becomes `$`.
/// The version of every secret the application refers to (the newest, or
/// the one a rollout pins), or why this site may not have one of them.
fn secret_versions(
    spec: &ApplicationSpec,
    site: &Site,
    secrets: &BTreeMap<String, SecretPolicy>,
    pinned: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, u64>, String> {
    let mut versions = BTreeMap::new();
    for service in &spec.services {
        for container in &service.containers {
            for used in container.secret_uses() {
                let Some(policy) = secrets.get(used.secret) else {
                    return Err(format!("secret {:?} does not exist", used.secret));
                };
                if let Some(key) = used.key
                    && !policy.keys.contains(key)
                {
                    return Err(format!("secret {:?} has no key {key:?}", used.secret));
                }
                let refusal = policy
                    .refuses_site(used.secret, site.metadata.name.as_str(), &site.metadata.labels)
                    .or_else(|| policy.refuses_image(used.secret, container.image.as_str()));
                if let Some(reason) = refusal {
                    return Err(reason);
                }
                let version = pinned.get(used.secret).copied().unwrap_or(policy.version);
                versions.insert(used.secret.to_string(), version);
            }
        }
    }
    Ok(versions)
}

fn substitute(
    spec: &ApplicationSpec,
    variables: &BTreeMap<String, String>,
) -> Result<ApplicationSpec, String> {
    let mut spec = spec.clone();
    for service in &mut spec.services {
        for container in &mut service.containers {
            for (name, value) in &mut container.env {
                let EnvValue::Text(value) = value else {
                    continue;
                };
                *value = substitute_value(value, variables)
                    .map_err(|missing| format!("env {name} of {}/{} needs site variable {missing:?}, which this site does not define", service.name, container.name))?;
            }
        }
    }
    Ok(spec)
}

fn substitute_value(value: &str, variables: &BTreeMap<String, String>) -> Result<String, String> {
    // Validation already refused malformed references.
    let names = site_references(value).map_err(|_| value.to_string())?;
    if let Some(missing) = names.iter().find(|n| !variables.contains_key(**n)) {
        return Err(missing.to_string());
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix("{site.")
            && let Some(end) = body.find('}')
        {
            out.push_str(
                variables
                    .get(&body[..end])
                    .map(String::as_str)
                    .unwrap_or_default(),
            );
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
