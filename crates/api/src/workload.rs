//! What a site runs: the deployments that select a site, compiled into one
//! `Workload` per application service, with `${site.NAME}` substituted.
//! Pure functions; the control plane stores the result per site with a
//! revision, and agents reconcile to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::{
    ApplicationSpec, Container, Deployment, Egress, EnvValue, Failover, Ingress, ServiceMode, Site,
};
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
    /// The services of other applications its containers may reach (the
    /// service's `egress`). Part of the version, so not of the spec hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Egress>,
    /// Every service of its application, which its containers reach by
    /// name wherever they run. Part of the version, so not of the spec hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub siblings: Vec<String>,
    /// The port the site's hosts serve it on (the service's `ingress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
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
    /// The epochs of underlay keys the site's hosts accept from each other
    /// (the site network), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_epochs: Vec<u64>,
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
    // Ingress ports the site serves already: port, host, application/service.
    let mut ingress_taken: Vec<(u32, Option<String>, String)> = Vec::new();
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
        if let Some(reason) = ingress_conflict(application, &spec, &ingress_taken) {
            state.failures.push(failure(reason));
            continue;
        }
        match substitute(&spec, &site.spec.variables) {
            Ok(spec) => {
                taken.insert(application.to_string(), deployment.metadata.name.to_string());
                for service in &spec.services {
                    if let Some(ingress) = &service.ingress {
                        let served = format!("{application}/{}", service.name.as_str());
                        ingress_taken.push((ingress.port, ingress.host.clone(), served));
                    }
                }
                let windowed = spec.streams.iter().any(|t| t.window.is_some());
                let time_zone = if windowed { site_time_zone(site) } else { None };
                let siblings: Vec<String> = spec.services.iter().map(|s| s.name.to_string()).collect();
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
                        egress: service.egress,
                        siblings: siblings.clone(),
                        ingress: service.ingress,
                    });
                }
            }
            Err(reason) => state.failures.push(failure(reason)),
        }
    }
    state
}

/// Why `application` cannot run on a site whose services already serve
/// the ingress ports in `taken`: one of its services wants a port another
/// application serves, and they are not told apart by different hosts.
fn ingress_conflict(
    application: &str,
    spec: &ApplicationSpec,
    taken: &[(u32, Option<String>, String)],
) -> Option<String> {
    spec.services.iter().find_map(|service| {
        let ingress = service.ingress.as_ref()?;
        let (_, _, other) = taken.iter().find(|(port, host, _)| {
            *port == ingress.port && (host.is_none() || ingress.host.is_none() || *host == ingress.host)
        })?;
        Some(format!(
            "{application}/{} wants ingress port {}, which {other} serves on this site (services share a port only with different hosts)",
            service.name.as_str(),
            ingress.port
        ))
    })
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

mod placement;

pub use placement::{Moved, Rescheduled, apply_moves, assign_hosts, reschedule};

#[cfg(test)]
mod tests;
