//! The fleet: what each site should run.
//!
//! `recompute` compiles sites × deployments × application versions into one
//! `SiteState` per site (see `outpost_api::workload`), stores the states
//! that changed with the next revision, and wakes the sessions of those
//! sites. It runs after an apply or delete (only for the sites concerned
//! when only sites changed) and whenever a host enrolls or its facts
//! change. `rollouts` starts and steps rollouts; who is connected is
//! `crate::presence`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use outpost_api::manifest::{ApplicationSpec, Deployment, Kind, Manifest, Site, TenantSpec};
use outpost_api::rollout::RolloutState;
use outpost_api::secret::SecretPolicy;
use outpost_api::workload::{Peer, SiteState, assign_hosts, compile_site};
use tokio::sync::watch;

use crate::presence::Presence;
use crate::store::{Change, FleetLock, ImageDigests, Storage, StoreError};

mod pins;
mod rollouts;

use rollouts::RolloutCache;

/// Past this many changed sites, an apply recomputes every site at once.
const MAX_SITES_ONE_BY_ONE: usize = 32;

/// Everything what sites run is compiled from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub sites: Vec<Site>,
    pub deployments: Vec<Deployment>,
    /// Per application: its current version and every kept version's spec.
    pub versions: HashMap<String, (String, HashMap<String, ApplicationSpec>)>,
    /// Per site: its hosts and what host selectors see of each.
    pub hosts: HashMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    /// Per deployment: its rollout, which says which version each site runs.
    pub rollouts: Arc<BTreeMap<String, RolloutState>>,
    /// Per secret: its newest version and where it may go.
    pub secrets: BTreeMap<String, SecretPolicy>,
    /// Per application version: the digest each of its images resolved to.
    pub digests: ImageDigests,
    /// Per site: its hosts that listen for each other, and where.
    pub peers: HashMap<String, Vec<Peer>>,
    /// Per site that has underlay keys: the epochs its hosts accept (a
    /// site without: the first).
    pub key_epochs: HashMap<String, Vec<u64>>,
    /// The application owners, by name.
    pub tenants: BTreeMap<String, TenantSpec>,
}

impl Inputs {
    /// An application owner's deployment as it runs: on its own selector's
    /// sites that its tenant's `spec.sites` also selects; `None` (nowhere)
    /// once its tenant is gone.
    pub fn confined(&self, mut deployment: Deployment) -> Option<Deployment> {
        deployment.spec.sites = outpost_api::tenancy::confine(
            deployment.metadata.name.as_str(),
            &deployment.spec.sites,
            |tenant| self.tenants.get(tenant).map(|spec| &spec.sites),
        )?;
        Some(deployment)
    }

    /// Each site where a tenant's instances would go past its quotas, as
    /// `(tenant, "site S: cpu 3 > 2")`, for the tenants named.
    pub fn over_quota(&self, tenants: &BTreeSet<String>) -> Vec<(String, String)> {
        let limited: Vec<(&String, &TenantSpec)> = self
            .tenants
            .iter()
            .filter(|(name, spec)| tenants.contains(*name) && !spec.quotas.is_unlimited())
            .collect();
        if limited.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (site, state) in self.compile() {
            for (tenant, spec) in &limited {
                let exceeded = spec.quotas.exceeded(&outpost_api::tenancy::usage(&state, tenant));
                if !exceeded.is_empty() {
                    out.push((
                        tenant.to_string(),
                        format!("site {site}: {}", exceeded.join(", ")),
                    ));
                }
            }
        }
        out
    }

    /// The release a deployment is headed for: its pinned version, or its
    /// application's current one, with the newest version of each secret
    /// that version uses (`outpost_api::secret::release`).
    fn target(&self, deployment: &Deployment) -> Option<String> {
        let version = deployment.spec.version.clone().or_else(|| {
            self.versions
                .get(deployment.spec.application.as_str())
                .map(|(current, _)| current.clone())
        })?;
        let secrets: BTreeMap<String, u64> = self
            .deployment_spec(deployment)
            .into_iter()
            .flat_map(ApplicationSpec::secret_uses)
            .filter_map(|used| Some((used.secret.to_string(), self.secrets.get(used.secret)?.version)))
            .collect();
        Some(outpost_api::secret::release(&version, &secrets))
    }

    /// The application spec a deployment runs: its pinned version, or its
    /// application's current one.
    pub fn deployment_spec(&self, deployment: &Deployment) -> Option<&ApplicationSpec> {
        let (current, specs) = self.versions.get(deployment.spec.application.as_str())?;
        specs.get(deployment.spec.version.as_deref().unwrap_or(current))
    }

    /// The deployments whose application refers to `secret`, with the spec.
    pub fn deployments_using<'a>(
        &'a self,
        secret: &'a str,
    ) -> impl Iterator<Item = (&'a Deployment, &'a ApplicationSpec)> + 'a {
        self.deployments.iter().filter_map(move |deployment| {
            let spec = self.deployment_spec(deployment)?;
            spec.uses_secret(secret).then_some((deployment, spec))
        })
    }

    /// Whether every deployment's rollout is headed for its target, so that
    /// a change to some sites can only make them join a rollout, never start
    /// one (which needs every site).
    fn rollouts_on_target(&self) -> bool {
        self.deployments.iter().all(|deployment| {
            self.target(deployment).is_none_or(|target| {
                self.rollouts
                    .get(deployment.metadata.name.as_str())
                    .is_some_and(|rollout| rollout.to == target)
            })
        })
    }

    /// What every site runs.
    pub fn compile(&self) -> BTreeMap<String, SiteState> {
        let no_hosts = BTreeMap::new();
        // What each rollout assigns, worked out once per deployment for many
        // sites (one site asks its rollouts directly): compiling N sites
        // stays O(N log N).
        let assigned: HashMap<&str, BTreeMap<String, Option<String>>> = if self.sites.len() > 1 {
            self.rollouts
                .iter()
                .map(|(name, rollout)| (name.as_str(), rollout.assigned()))
                .collect()
        } else {
            HashMap::new()
        };
        let assigned_to = |deployment: &str, site: &str| match assigned.get(deployment) {
            Some(sites) => sites.get(site).cloned(),
            None => self.rollouts.get(deployment)?.assigned_to(site),
        };
        self.sites
            .iter()
            .map(|site| {
                let name = site.metadata.name.to_string();
                // Each deployment at the version its rollout gives this site.
                let deployments: Vec<Deployment> = self
                    .deployments
                    .iter()
                    .filter_map(|d| match assigned_to(d.metadata.name.as_str(), &name) {
                        Some(Some(version)) => {
                            let mut d = d.clone();
                            d.spec.version = Some(version);
                            Some(d)
                        }
                        Some(None) => None,
                        None => Some(d.clone()),
                    })
                    .collect();
                let hosts = self.hosts.get(&name).unwrap_or(&no_hosts);
                let mut state = self.compile_placed(site, &deployments, hosts);
                state.peers = self.peers.get(&name).cloned().unwrap_or_default();
                state.peers.sort();
                state.key_epochs = self.key_epochs.get(&name).cloned().unwrap_or_else(|| vec![1]);
                // What the site is to fetch ahead of a switch: the releases
                // its pre-staging rollouts have not switched it to, placed
                // as they will run once every one of them has.
                let staging: Vec<&str> = self
                    .rollouts
                    .iter()
                    .filter(|(_, rollout)| rollout.stages(&name))
                    .map(|(deployment, _)| deployment.as_str())
                    .collect();
                if !staging.is_empty() {
                    let next: Vec<Deployment> = deployments
                        .iter()
                        .filter(|d| !staging.contains(&d.metadata.name.as_str()))
                        .cloned()
                        .chain(
                            self.deployments
                                .iter()
                                .filter(|d| staging.contains(&d.metadata.name.as_str()))
                                .filter_map(|d| {
                                    let rollout = self.rollouts.get(d.metadata.name.as_str())?;
                                    let mut d = d.clone();
                                    d.spec.version = Some(rollout.to.clone());
                                    Some(d)
                                }),
                        )
                        .collect();
                    state.staged = self
                        .compile_placed(site, &next, hosts)
                        .workloads
                        .into_iter()
                        .filter(|w| staging.contains(&w.deployment.as_str()))
                        .collect();
                }
                (name, state)
            })
            .collect()
    }
}

impl Inputs {
    /// What `site` runs of `deployments` (each at the version it names),
    /// with the recorded image digests, placed on its hosts.
    fn compile_placed(
        &self,
        site: &Site,
        deployments: &[Deployment],
        hosts: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> SiteState {
        let lookup = |application: &str, version: Option<&str>| {
            let (current, specs) = self.versions.get(application)?;
            specs.get(version.unwrap_or(current)).cloned()
        };
        let mut state = compile_site(site, deployments, lookup, &self.secrets);
        for workload in &mut state.workloads {
            let key = (workload.application.clone(), workload.version.clone());
            if let Some(digests) = self.digests.get(&key) {
                workload.digests = digests
                    .iter()
                    .filter(|(image, _)| workload.containers.iter().any(|c| c.image.as_str() == *image))
                    .map(|(image, digest)| (image.clone(), digest.clone()))
                    .collect();
            }
        }
        assign_hosts(&mut state, hosts);
        state
    }
}

pub struct Fleet {
    store: Arc<dyn Storage>,
    revisions: Mutex<HashMap<String, watch::Sender<i64>>>,
    /// Which hosts are connected.
    pub presence: Arc<Presence>,
    /// Where sites moved lost hosts' instances, for central placement.
    pins: pins::Pins,
    /// The witness of 2-host sites' singleton moves.
    pub witness: crate::witness::Witness,
    /// What waits on application streams: sessions for publishes, readers
    /// and NATS for stored records.
    pub streams: Arc<crate::streams::Signals>,
    /// Held by everything that writes rollouts or site states (with the
    /// store's fleet lock: see `exclusive`).
    recompute: tokio::sync::Mutex<()>,
    /// The stored rollouts, parsed: a rollout names every site it covers,
    /// and enrolling a host must not parse that each time.
    rollouts: Mutex<RolloutCache>,
}

impl Fleet {
    pub fn new(store: Arc<dyn Storage>) -> Arc<Fleet> {
        Arc::new(Fleet {
            store,
            revisions: Mutex::new(HashMap::new()),
            presence: Arc::new(Presence::default()),
            pins: pins::Pins::default(),
            witness: crate::witness::Witness::default(),
            streams: Arc::default(),
            recompute: tokio::sync::Mutex::new(()),
            rollouts: Mutex::new(RolloutCache::default()),
        })
    }

    /// Held by everything that writes rollouts or site states: this
    /// process's mutex, then the store's fleet lock, which the writers of
    /// other replicas take too. Rollouts held in memory that another
    /// replica wrote since are forgotten here, so nothing is computed from
    /// a stale step.
    async fn exclusive(&self) -> Result<(tokio::sync::MutexGuard<'_, ()>, FleetLock), StoreError> {
        let local = self.recompute.lock().await;
        let shared = self.store.lock_fleet().await?;
        if let Some(counter) = shared.rollouts {
            let mut cache = self.rollout_cache();
            if cache.counter != Some(counter) {
                cache.forget();
                cache.counter = Some(counter);
            }
        }
        Ok((local, shared))
    }

    /// Wakes this replica's sessions of sites whose states were stored at
    /// these revisions (here or by another replica).
    pub fn wake(&self, revisions: &[(String, i64)]) {
        let senders = self.revisions.lock();
        for (site, revision) in revisions {
            if let Some(sender) = senders.get(site) {
                sender.send_if_modified(|current| {
                    let newer = *revision > *current;
                    if newer {
                        *current = *revision;
                    }
                    newer
                });
            }
        }
    }

    /// A receiver that changes whenever the site's revision does.
    pub fn subscribe(&self, site: &str) -> watch::Receiver<i64> {
        let mut revisions = self.revisions.lock();
        revisions
            .entry(site.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Reads everything what sites run is compiled from; with `only`, for
    /// that one site.
    pub async fn inputs(&self, only: Option<&str>) -> Result<Inputs, StoreError> {
        let typed = |kind| async move {
            let objects = self.store.list(kind).await?;
            objects
                .iter()
                .map(|o| o.manifest().map_err(StoreError::from))
                .collect::<Result<Vec<Manifest>, StoreError>>()
        };
        let sites = match only {
            None => typed(Kind::Site).await?,
            Some(site) => match self.store.get(Kind::Site, site).await? {
                Some(object) => vec![object.manifest()?],
                None => Vec::new(),
            },
        };
        let sites: Vec<Site> = sites.into_iter().filter_map(Manifest::into_site).collect();
        let tenants: BTreeMap<String, TenantSpec> = typed(Kind::Tenant)
            .await?
            .into_iter()
            .filter_map(|manifest| match manifest {
                Manifest::Tenant(tenant) => Some((tenant.metadata.name.to_string(), tenant.spec)),
                _ => None,
            })
            .collect();
        let deployments: Vec<Deployment> = typed(Kind::Deployment)
            .await?
            .into_iter()
            .filter_map(Manifest::into_deployment)
            .collect();
        let mut versions = HashMap::new();
        for name in deployments
            .iter()
            .map(|d| d.spec.application.to_string())
            .collect::<HashSet<_>>()
        {
            let history = match self.store.application_history(&name).await {
                Ok(history) => history,
                Err(StoreError::NotFound { .. }) => continue,
                Err(err) => return Err(err),
            };
            let current = history
                .iter()
                .find(|v| v.current)
                .map(|v| v.version.clone())
                .unwrap_or_default();
            let specs = history
                .into_iter()
                .filter_map(|v| serde_json::from_value(v.spec).ok().map(|spec| (v.version, spec)))
                .collect();
            versions.insert(name, (current, specs));
        }
        let mut hosts: HashMap<String, BTreeMap<String, BTreeMap<String, String>>> = HashMap::new();
        let records = match only {
            None => self.store.hosts().await?,
            Some(site) => self.store.site_hosts(site).await?,
        };
        // A host that has never said hello has no facts: nothing is known
        // of its room or devices, and it may never connect. It gets no
        // placements until it does (its hello recomputes the site).
        let mut peers: HashMap<String, Vec<Peer>> = HashMap::new();
        for host in &records {
            if !host.site_address.is_empty() {
                let labels = if host.facts.is_empty() {
                    BTreeMap::new()
                } else {
                    host.selector_labels()
                };
                peers.entry(host.site.clone()).or_default().push(Peer {
                    host: host.name.clone(),
                    address: host.site_address.clone(),
                    labels,
                });
            }
        }
        for host in records.into_iter().filter(|host| !host.facts.is_empty()) {
            let labels = host.selector_labels();
            hosts.entry(host.site).or_default().insert(host.name, labels);
        }
        let mut inputs = Inputs {
            sites,
            deployments: Vec::new(),
            versions,
            hosts,
            rollouts: self.rollouts().await?,
            secrets: self
                .store
                .secrets()
                .await?
                .iter()
                .map(|secret| Ok((secret.name.clone(), secret.policy()?)))
                .collect::<Result<_, StoreError>>()?,
            digests: self.store.image_digests().await?,
            peers,
            key_epochs: self
                .store
                .site_keys()
                .await?
                .into_iter()
                .map(|(site, keys)| (site, keys.accepted()))
                .collect(),
            tenants,
        };
        inputs.deployments = deployments
            .into_iter()
            .filter_map(|deployment| inputs.confined(deployment))
            .collect();
        Ok(inputs)
    }

    /// Compiles and stores every site's desired state; wakes changed sites.
    pub async fn recompute(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.exclusive().await?;
        self.recompute_locked().await
    }

    /// Compiles and stores one site's desired state, after something that
    /// concerns only that site (a host enrolled, its facts or labels
    /// changed): no rollout starts, no other site is read. This is what keeps
    /// enrolling thousands of hosts linear.
    pub async fn recompute_site(&self, site: &str) -> Result<(), StoreError> {
        let _one_at_a_time = self.exclusive().await?;
        self.recompute_site_locked(site, false).await
    }

    /// Recomputes after an apply, delete or label change of these objects.
    /// When only sites changed (labels, variables, a site added or
    /// deleted), every deployment and application is as it was: only those
    /// sites can run something else, and only they can join a rollout. So
    /// only they are compiled, and the work grows with the change, not with
    /// the fleet. Any other change recomputes every site.
    pub async fn recompute_changed(&self, changed: &[(Kind, &str)]) -> Result<(), StoreError> {
        if changed.is_empty() {
            return Ok(());
        }
        // Many sites at once (a batch that adds a thousand) compile faster
        // together than one by one.
        if changed.len() > MAX_SITES_ONE_BY_ONE || !changed.iter().all(|(kind, _)| *kind == Kind::Site) {
            return self.recompute().await;
        }
        let _one_at_a_time = self.exclusive().await?;
        for (_, site) in changed {
            self.recompute_site_locked(site, true).await?;
        }
        Ok(())
    }

    /// One site's desired state, for a caller that holds the lock; with
    /// `rollouts`, the site may join (or leave) a deployment's rollout.
    async fn recompute_site_locked(&self, site: &str, rollouts: bool) -> Result<(), StoreError> {
        let mut inputs = self.inputs(Some(site)).await?;
        if rollouts {
            if !inputs.rollouts_on_target() {
                return self.recompute_locked().await;
            }
            self.start_rollouts(&mut inputs).await?;
        }
        let mut states = inputs.compile();
        self.pins.apply(&mut states);
        // A deleted site runs nothing; its hosts are told so.
        if states.is_empty() && self.store.site_state(site).await?.is_some() {
            states.insert(site.to_string(), SiteState::default());
        }
        self.store_states(&states).await
    }

    /// `recompute`, for a caller that holds the lock.
    async fn recompute_locked(&self) -> Result<(), StoreError> {
        let mut inputs = self.inputs(None).await?;
        self.start_rollouts(&mut inputs).await?;
        let mut states = inputs.compile();
        self.pins.apply(&mut states);
        // A deleted site runs nothing; its hosts are told so.
        for site in self.store.site_states().await?.into_keys() {
            states.entry(site).or_insert_with(SiteState::default);
        }
        self.store_states(&states).await
    }

    /// Stores the states that changed and wakes their sessions.
    async fn store_states(&self, states: &BTreeMap<String, SiteState>) -> Result<(), StoreError> {
        // Placement failures that are new become events. Few sites have any,
        // so only theirs are read back.
        let mut new_failures = Vec::new();
        for (site, state) in states.iter().filter(|(_, s)| !s.failures.is_empty()) {
            let before = self
                .store
                .site_state(site)
                .await?
                .map(|(_, s)| s.failures)
                .unwrap_or_default();
            new_failures.extend(
                state
                    .failures
                    .iter()
                    .filter(|f| !before.contains(f))
                    .map(|f| (site.clone(), f.clone())),
            );
        }
        let changed = self.store.save_site_states(states).await?;
        for (site, failure) in new_failures {
            let event = outpost_api::telemetry::Event {
                at: outpost_api::telemetry::now(),
                kind: outpost_api::telemetry::EventKind::PlacementFailed,
                application: failure.application,
                service: String::new(),
                instance: String::new(),
                message: format!("deployment {}: {}", failure.deployment, failure.reason),
                exit_code: None,
            };
            if let Err(err) = self.store.record_event(&site, &event).await {
                tracing::warn!(%site, %err, "recording a placement failure");
            }
        }
        for (site, revision) in &changed {
            tracing::info!(%site, revision, "site desired state changed");
        }
        self.wake(&changed);
        if !changed.is_empty() {
            self.store.announce(&Change::sites(changed)).await;
        }
        Ok(())
    }
}

impl Fleet {
    /// What every site `deployment` selects would run with it at
    /// `version` (default: the one it is headed for), and each site's
    /// current revision: the contents of an offline bundle. Stores nothing.
    pub async fn bundle(
        &self,
        deployment: &str,
        version: Option<&str>,
    ) -> Result<(String, BTreeMap<String, (i64, SiteState)>), StoreError> {
        let mut inputs = self.inputs(None).await?;
        let found = inputs
            .deployments
            .iter()
            .find(|d| d.metadata.name.as_str() == deployment)
            .ok_or_else(|| StoreError::NotFound {
                kind: Kind::Deployment,
                name: deployment.to_string(),
            })?;
        let application = found.spec.application.to_string();
        let selector = found.spec.sites.clone();
        let (current, specs) = inputs.versions.get(&application).cloned().unwrap_or_default();
        let version = version
            .map(str::to_string)
            .or_else(|| found.spec.version.clone())
            .unwrap_or(current);
        if !specs.contains_key(&version) {
            let mut known: Vec<&String> = specs.keys().collect();
            known.sort();
            return Err(StoreError::Conflict(format!(
                "application {application:?} has no version {version:?} (kept: {})",
                known.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        for d in inputs
            .deployments
            .iter_mut()
            .filter(|d| d.metadata.name.as_str() == deployment)
        {
            d.spec.version = Some(version.clone());
        }
        Arc::make_mut(&mut inputs.rollouts).remove(deployment);
        inputs
            .sites
            .retain(|site| selector.matches(&site.metadata.labels));
        let revisions = self.store.site_states().await?;
        let states = inputs
            .compile()
            .into_iter()
            .map(|(site, state)| {
                let revision = revisions.get(&site).map_or(0, |(revision, _)| *revision);
                (site, (revision, state))
            })
            .collect();
        Ok((version, states))
    }
}

/// The engine's clock: milliseconds since the Unix epoch, so stored
/// rollouts keep their timing across restarts.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
