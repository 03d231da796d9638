//! What the fleet reports, summed up for operators: each site's hosts and
//! revisions, each deployment's state per site, each host's instances.

use outpost_api::instance::InstanceState;
use std::collections::{BTreeMap, HashMap, HashSet};

use outpost_api::quantity::approximate_bytes;
use outpost_api::wire::{
    DeploymentSite, DeploymentSiteState, DeploymentStatus, HostInfo, ImageProgress, SiteHealth, SiteStatus,
};
use outpost_api::workload::SiteState;

use crate::presence::Presence;
use crate::store::{HostImage, HostRecord, InstanceRecord, Storage, StoreError};

/// One consistent read of the fleet's state, indexed by site so that a
/// question about one site never scans the whole fleet.
pub struct Snapshot {
    /// Each site's hosts.
    hosts: BTreeMap<String, Vec<HostRecord>>,
    /// Each (site, host)'s instances.
    instances: HashMap<(String, String), Vec<InstanceRecord>>,
    /// Each (site, host)'s reports of the images it pre-stages.
    images: HashMap<(String, String), Vec<HostImage>>,
    states: BTreeMap<String, (i64, SiteState)>,
    online: HashSet<(String, String)>,
    /// What the hosts of each site cluster last reported of it.
    clusters: HashMap<String, Vec<outpost_api::wire::ClusterStatus>>,
}

impl Snapshot {
    pub async fn take(store: &dyn Storage, presence: &Presence) -> Result<Snapshot, StoreError> {
        let mut hosts: BTreeMap<String, Vec<HostRecord>> = BTreeMap::new();
        let mut online = HashSet::new();
        for host in store.hosts().await? {
            if presence.is_online(&host.site, &host.name) {
                online.insert((host.site.clone(), host.name.clone()));
            }
            hosts.entry(host.site.clone()).or_default().push(host);
        }
        let mut instances: HashMap<(String, String), Vec<InstanceRecord>> = HashMap::new();
        for instance in store.instances().await? {
            instances
                .entry((instance.site.clone(), instance.host.clone()))
                .or_default()
                .push(instance);
        }
        let mut images: HashMap<(String, String), Vec<HostImage>> = HashMap::new();
        for image in store.host_images().await? {
            images
                .entry((image.site.clone(), image.host.clone()))
                .or_default()
                .push(image);
        }
        Ok(Snapshot {
            hosts,
            instances,
            images,
            states: store.site_states().await?,
            online,
            clusters: presence.clusters(),
        })
    }

    fn site_hosts<'a>(&'a self, site: &str) -> impl Iterator<Item = &'a HostRecord> + 'a {
        self.hosts.get(site).into_iter().flatten()
    }

    fn host_instances(&self, site: &str, host: &str) -> &[InstanceRecord] {
        self.instances
            .get(&(site.to_string(), host.to_string()))
            .map_or(&[], Vec::as_slice)
    }

    /// How far `site` has come fetching the images of `deployment`'s
    /// staged workloads (each image once per host that will run it);
    /// `None` when it stages none of them.
    pub fn staging(&self, deployment: &str, site: &str) -> Option<ImageProgress> {
        let (_, state) = self.states.get(site)?;
        let staged: Vec<_> = state
            .staged
            .iter()
            .filter(|w| w.deployment == deployment)
            .collect();
        if staged.is_empty() {
            return None;
        }
        let mut wanted = std::collections::BTreeSet::new();
        for workload in staged {
            for instance in &workload.instances {
                for container in &workload.containers {
                    wanted.insert((
                        instance.host.as_str(),
                        workload.application.as_str(),
                        workload.version.as_str(),
                        container.image.as_str(),
                    ));
                }
            }
        }
        let mut progress = ImageProgress {
            images: wanted.len(),
            ..Default::default()
        };
        for (host, application, version, image) in wanted {
            let reported = self
                .images
                .get(&(site.to_string(), host.to_string()))
                .into_iter()
                .flatten()
                .find(|i| i.application == application && i.version == version && i.image == image);
            let Some(reported) = reported else { continue };
            progress.fetched += reported.fetched;
            if reported.present {
                progress.present += 1;
            } else {
                progress.left += reported.total.saturating_sub(reported.fetched);
                if !reported.error.is_empty() {
                    progress.error = format!("{host}: {image}: {}", reported.error);
                }
            }
        }
        Some(progress)
    }

    /// Whether `site` holds every image of what `deployment` stages there
    /// (nothing staged: nothing to wait for).
    pub fn holds_images(&self, deployment: &str, site: &str) -> bool {
        self.staging(deployment, site).is_none_or(|p| p.complete())
    }

    fn is_online(&self, host: &HostRecord) -> bool {
        self.online.contains(&(host.site.clone(), host.name.clone()))
    }

    pub fn site(&self, site: &str) -> SiteStatus {
        let hosts: Vec<&HostRecord> = self.site_hosts(site).collect();
        let (revision, failures) = match self.states.get(site) {
            Some((revision, state)) => (
                *revision,
                state
                    .failures
                    .iter()
                    .map(|f| format!("{}: {}", f.deployment, f.reason))
                    .collect(),
            ),
            None => (0, Vec::new()),
        };
        let mut versions: Vec<&str> = hosts
            .iter()
            .map(|h| h.agent_version.as_str())
            .filter(|v| !v.is_empty())
            .collect();
        versions.sort_unstable();
        versions.dedup();
        SiteStatus {
            online: hosts.iter().any(|h| self.is_online(h)),
            hosts: hosts.len(),
            online_hosts: hosts.iter().filter(|h| self.is_online(h)).count(),
            revision,
            applied_revision: hosts.iter().map(|h| h.applied_revision).min().unwrap_or(0),
            last_seen: hosts.iter().filter_map(|h| h.last_seen.clone()).max(),
            agent_version: versions.join(","),
            failures,
            streams: Vec::new(),
            cluster: self.clusters.get(site).cloned().unwrap_or_default(),
        }
    }

    /// How `deployment` fares on each of `sites` (the sites it selects).
    pub fn deployment(&self, deployment: &str, sites: &[String]) -> DeploymentStatus {
        let mut status = DeploymentStatus::default();
        for site in sites {
            let (state, reason) = self.deployment_on(deployment, site);
            match state {
                DeploymentSiteState::UpToDate => status.up_to_date += 1,
                DeploymentSiteState::Progressing => status.progressing += 1,
                DeploymentSiteState::Failed => status.failed += 1,
                DeploymentSiteState::Offline => status.offline += 1,
            }
            status.sites.push(DeploymentSite {
                site: site.clone(),
                state,
                reason,
                images: self.staging(deployment, site),
            });
        }
        status
    }

    /// How `deployment` fares on `site`, and why.
    pub fn deployment_on(&self, deployment: &str, site: &str) -> (DeploymentSiteState, String) {
        use DeploymentSiteState::*;
        let Some((revision, state)) = self.states.get(site) else {
            return (Progressing, "desired state not computed yet".to_string());
        };
        // Offline comes first: a site without a connected host is offline,
        // never failed, whatever could or could not be placed there.
        let hosts: Vec<&HostRecord> = self.site_hosts(site).collect();
        if hosts.is_empty() {
            return (Offline, "no host has enrolled".to_string());
        }
        if !hosts.iter().any(|h| self.is_online(h)) {
            let seen = hosts.iter().filter_map(|h| h.last_seen.clone()).max();
            return (
                Offline,
                seen.map_or("never connected".to_string(), |at| format!("last seen {at}")),
            );
        }
        // A site that fetches the images of its next release has not got
        // there yet, however its current one fares.
        if let Some(images) = self.staging(deployment, site) {
            return (Progressing, staging_reason(&images));
        }
        if let Some(failure) = state.failures.iter().find(|f| f.deployment == deployment) {
            return (Failed, failure.reason.clone());
        }
        for workload in state.workloads.iter().filter(|w| w.deployment == deployment) {
            let hash = workload.spec_hash();
            for instance in &workload.instances {
                let reported = self
                    .host_instances(site, &instance.host)
                    .iter()
                    .find(|i| i.instance == instance.name);
                match reported {
                    Some(i) if i.spec_hash != hash => {
                        return (
                            Progressing,
                            format!("{}: updating to {}", instance.name, workload.version),
                        );
                    }
                    Some(i) if i.state == InstanceState::Failed => {
                        return (Failed, format!("{}: {}", instance.name, i.reason));
                    }
                    Some(i) if i.state.is_up() => {}
                    Some(i) if i.reason.is_empty() => {
                        return (Progressing, format!("{}: {}", instance.name, i.state));
                    }
                    Some(i) => {
                        return (
                            Progressing,
                            format!("{}: {} ({})", instance.name, i.state, i.reason),
                        );
                    }
                    None => {
                        return (
                            Progressing,
                            format!("{}: waiting for {}", instance.name, instance.host),
                        );
                    }
                }
            }
        }
        if let Some(behind) = hosts.iter().find(|h| h.applied_revision < *revision) {
            return (
                Progressing,
                format!(
                    "{} has revision {} of {revision}",
                    behind.name, behind.applied_revision
                ),
            );
        }
        (UpToDate, String::new())
    }

    /// How `site` fares as a whole, and why: its worst deployment, or
    /// offline. `owner` limits the deployments that count to an
    /// application owner's (`None`: every one, and a host behind the
    /// site's revision counts too). `often_offline` is the site's own word
    /// that a site without a connected host is expected.
    pub fn site_health(&self, site: &str, owner: Option<&str>, often_offline: bool) -> (SiteHealth, String) {
        let hosts: Vec<&HostRecord> = self.site_hosts(site).collect();
        if hosts.is_empty() {
            return (SiteHealth::NeverConnected, "no host has enrolled".to_string());
        }
        if !hosts.iter().any(|h| self.is_online(h)) {
            return match hosts.iter().filter_map(|h| h.last_seen.clone()).max() {
                None => (
                    SiteHealth::NeverConnected,
                    "no host has connected yet".to_string(),
                ),
                Some(at) if often_offline => (SiteHealth::OfflineExpected, format!("last seen {at}")),
                Some(at) => (SiteHealth::OfflineUnexpected, format!("last seen {at}")),
            };
        }
        let Some((revision, state)) = self.states.get(site) else {
            return (
                SiteHealth::Progressing,
                "desired state not computed yet".to_string(),
            );
        };
        let concerns = |deployment: &str| {
            owner.is_none_or(|tenant| outpost_api::tenancy::local_name(deployment, tenant).is_some())
        };
        let deployments: std::collections::BTreeSet<&str> = state
            .workloads
            .iter()
            .chain(&state.staged)
            .map(|w| w.deployment.as_str())
            .chain(state.failures.iter().map(|f| f.deployment.as_str()))
            .filter(|deployment| concerns(deployment))
            .collect();
        let mut worst = (SiteHealth::UpToDate, String::new());
        for deployment in deployments {
            let health = match self.deployment_on(deployment, site) {
                (DeploymentSiteState::UpToDate, _) => continue,
                (DeploymentSiteState::Failed, reason) => (SiteHealth::Failed, reason),
                // A connected site: only its deployments' own words.
                (DeploymentSiteState::Progressing | DeploymentSiteState::Offline, reason) => {
                    (SiteHealth::Progressing, reason)
                }
            };
            if health.0 < worst.0 {
                let shown = owner
                    .and_then(|tenant| outpost_api::tenancy::local_name(deployment, tenant))
                    .unwrap_or(deployment);
                worst = (health.0, format!("{shown}: {}", health.1));
            }
        }
        if worst.0 == SiteHealth::UpToDate
            && owner.is_none()
            && let Some(behind) = hosts.iter().find(|h| h.applied_revision < *revision)
        {
            worst = (
                SiteHealth::Progressing,
                format!(
                    "{} has revision {} of {revision}",
                    behind.name, behind.applied_revision
                ),
            );
        }
        worst
    }

    /// A site as the fleet views list it.
    pub fn site_summary(
        &self,
        site: &outpost_api::wire::StoredObject,
        owner: Option<&str>,
    ) -> outpost_api::wire::SiteSummary {
        let name = site.metadata.name.as_str();
        let often_offline = site
            .spec
            .get("oftenOffline")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let (health, reason) = self.site_health(name, owner, often_offline);
        let hosts: Vec<&HostRecord> = self.site_hosts(name).collect();
        outpost_api::wire::SiteSummary {
            name: name.to_string(),
            labels: site.metadata.labels.clone(),
            health,
            reason,
            hosts: hosts.len(),
            online_hosts: hosts.iter().filter(|h| self.is_online(h)).count(),
            last_seen: hosts.iter().filter_map(|h| h.last_seen.clone()).max(),
        }
    }

    /// The version an instance runs, if its spec is the desired one.
    fn running_version(&self, site: &str, instance: &InstanceRecord) -> String {
        self.states
            .get(site)
            .and_then(|(_, state)| {
                state
                    .workloads
                    .iter()
                    .find(|w| w.instances.iter().any(|i| i.name == instance.instance))
            })
            .filter(|workload| workload.spec_hash() == instance.spec_hash)
            .map(|workload| workload.version.clone())
            .unwrap_or_default()
    }

    /// How many of a host's site peers hear it, of how many report: none
    /// when its site has no cluster.
    fn seen_by(&self, site: &str, host: &str) -> Option<(usize, usize)> {
        let others: Vec<_> = self
            .clusters
            .get(site)?
            .iter()
            .filter(|c| c.host != host)
            .collect();
        if others.is_empty() {
            return None;
        }
        let hearing = others
            .iter()
            .filter(|c| c.hears.iter().any(|h| h == host))
            .count();
        Some((hearing, others.len()))
    }

    pub fn hosts(&self) -> Vec<HostInfo> {
        self.hosts
            .values()
            .flatten()
            .map(|h| HostInfo {
                site: h.site.clone(),
                name: h.name.clone(),
                online: self.is_online(h),
                facts: h.facts.clone(),
                labels: h.labels.clone(),
                agent_version: h.agent_version.clone(),
                applied_revision: h.applied_revision,
                enrolled_at: h.enrolled_at.clone(),
                last_seen: h.last_seen.clone(),
                dropped: h.dropped,
                bytes_received: h.bytes_received,
                bytes_sent: h.bytes_sent,
                seen_by: self.seen_by(&h.site, &h.name),
                role: self
                    .clusters
                    .get(&h.site)
                    .and_then(|hosts| hosts.iter().find(|c| c.host == h.name))
                    .and_then(|c| c.role.clone()),
                instances: self
                    .host_instances(&h.site, &h.name)
                    .iter()
                    .map(|i| (i.instance.clone(), i.state))
                    .collect(),
                details: self
                    .host_instances(&h.site, &h.name)
                    .iter()
                    .map(|i| outpost_api::wire::InstanceDetail {
                        instance: i.instance.clone(),
                        application: i.application.clone(),
                        service: i.service.clone(),
                        state: i.state,
                        reason: i.reason.clone(),
                        version: self.running_version(&h.site, i),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// What a site pre-staging a release is doing, in words.
fn staging_reason(images: &ImageProgress) -> String {
    if images.complete() {
        return format!(
            "holds the next release's {} image(s); switches when its wave comes",
            images.images
        );
    }
    let mut reason = format!(
        "fetching the next release's images: {} of {} present, {} fetched, {} left",
        images.present,
        images.images,
        approximate_bytes(images.fetched),
        approximate_bytes(images.left)
    );
    if !images.error.is_empty() {
        reason.push_str(&format!("; last pull failed ({}), retrying", images.error));
    }
    reason
}
