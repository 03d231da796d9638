//! The fleet: what each site should run, and who is connected.
//!
//! `recompute` compiles sites × deployments × application versions into one
//! `SiteState` per site (see `outpost_api::workload`), stores the states
//! that changed with the next revision, and wakes the sessions of those
//! sites. It runs after every apply or delete and whenever a host enrolls or
//! its facts change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use outpost_api::manifest::{ApplicationSpec, Deployment, Kind, Manifest, Site};
use outpost_api::rollout::{Command, Phase, RolloutState, SiteHealth};
use outpost_api::wire::DeploymentSiteState;
use outpost_api::workload::{SiteState, assign_hosts, compile_site};
use tokio::sync::{mpsc, oneshot, watch};

use crate::store::{Storage, StoreError};

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
}

impl Inputs {
    /// The version a deployment is headed for: its pinned one, or its
    /// application's current one.
    fn target(&self, deployment: &Deployment) -> Option<String> {
        deployment.spec.version.clone().or_else(|| {
            self.versions
                .get(deployment.spec.application.as_str())
                .map(|(current, _)| current.clone())
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
        let lookup = |application: &str, version: Option<&str>| {
            let (current, specs) = self.versions.get(application)?;
            specs.get(version.unwrap_or(current)).cloned()
        };
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
                let mut state = compile_site(site, &deployments, lookup);
                assign_hosts(&mut state, self.hosts.get(&name).unwrap_or(&no_hosts));
                (name, state)
            })
            .collect()
    }
}

pub struct Fleet {
    store: Arc<dyn Storage>,
    revisions: Mutex<HashMap<String, watch::Sender<i64>>>,
    /// Hosts with a session, and how many: after a partition the new
    /// session may start before the control plane gives up on the old one.
    online: Mutex<HashMap<(String, String), usize>>,
    /// Where to ask each connected host for its logs: the newest session's
    /// channel, with a number that tells sessions apart.
    live: Mutex<HashMap<(String, String), LiveSender>>,
    next_session: std::sync::atomic::AtomicU64,
    /// Hosts in polling mode, and until when each counts as online.
    polled: Mutex<HashMap<(String, String), std::time::Instant>>,
    /// Held by everything that writes rollouts or site states.
    recompute: tokio::sync::Mutex<()>,
    /// The stored rollouts, parsed: a rollout names every site it covers,
    /// and enrolling a host must not parse that each time.
    rollouts: Mutex<RolloutCache>,
}

/// Only the Fleet writes rollouts; each write empties the cache and bumps
/// the generation, so a read that raced a write never fills it.
#[derive(Default)]
struct RolloutCache {
    generation: u64,
    rollouts: Option<Arc<BTreeMap<String, RolloutState>>>,
}

/// Keeps a host marked online while its session lives.
pub struct Connected {
    fleet: Arc<Fleet>,
    key: (String, String),
    session: u64,
}

/// A session's number and the channel its log requests go to.
type LiveSender = (u64, mpsc::Sender<LiveLogs>);

/// A request for a connected host's logs, answered by its session.
pub struct LiveLogs {
    pub application: String,
    /// Empty: every service.
    pub service: String,
    pub since_unix: i64,
    pub tail: u32,
    pub reply: oneshot::Sender<Result<Vec<outpost_api::telemetry::LogChunk>, String>>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        let mut live = self.fleet.live.lock().unwrap_or_else(|e| e.into_inner());
        if live
            .get(&self.key)
            .is_some_and(|(session, _)| *session == self.session)
        {
            live.remove(&self.key);
        }
        drop(live);
        let mut online = self.fleet.online.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = online.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                online.remove(&self.key);
            }
        }
    }
}

impl Fleet {
    pub fn new(store: Arc<dyn Storage>) -> Arc<Fleet> {
        Arc::new(Fleet {
            store,
            revisions: Mutex::new(HashMap::new()),
            online: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            next_session: Default::default(),
            polled: Mutex::new(HashMap::new()),
            recompute: tokio::sync::Mutex::new(()),
            rollouts: Mutex::new(RolloutCache::default()),
        })
    }

    fn rollout_cache(&self) -> std::sync::MutexGuard<'_, RolloutCache> {
        self.rollouts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every stored rollout (from the cache when it is filled).
    async fn rollouts(&self) -> Result<Arc<BTreeMap<String, RolloutState>>, StoreError> {
        let generation = {
            let cache = self.rollout_cache();
            if let Some(cached) = &cache.rollouts {
                return Ok(cached.clone());
            }
            cache.generation
        };
        let loaded = Arc::new(self.store.rollouts().await?);
        let mut cache = self.rollout_cache();
        if cache.generation == generation {
            cache.rollouts = Some(loaded.clone());
        }
        Ok(loaded)
    }

    /// Stores a rollout (`None`: deletes it) and forgets the cached ones.
    async fn save_rollout(
        &self,
        deployment: &str,
        rollout: Option<&RolloutState>,
        started: bool,
    ) -> Result<(), StoreError> {
        let saved = match rollout {
            Some(rollout) => self.store.save_rollout(deployment, rollout, started).await,
            None => self.store.delete_rollout(deployment).await,
        };
        let mut cache = self.rollout_cache();
        cache.generation += 1;
        cache.rollouts = None;
        saved
    }

    /// A receiver that changes whenever the site's revision does.
    pub fn subscribe(&self, site: &str) -> watch::Receiver<i64> {
        let mut revisions = self.revisions.lock().unwrap_or_else(|e| e.into_inner());
        revisions
            .entry(site.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Marks a host online until every guard it was given is dropped; the
    /// receiver gets the requests for its logs.
    pub fn connect(self: &Arc<Self>, site: &str, host: &str) -> (Connected, mpsc::Receiver<LiveLogs>) {
        let key = (site.to_string(), host.to_string());
        let session = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sender, requests) = mpsc::channel(4);
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), (session, sender));
        *self
            .online
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default() += 1;
        let connected = Connected {
            fleet: self.clone(),
            key,
            session,
        };
        (connected, requests)
    }

    /// Where to ask a connected host for its logs (`None`: not connected).
    pub fn live_logs(&self, site: &str, host: &str) -> Option<mpsc::Sender<LiveLogs>> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(&(site.to_string(), host.to_string()))
            .map(|(_, sender)| sender.clone())
    }

    /// A host in polling mode was heard from: it counts as online for `for`.
    pub fn polled(&self, site: &str, host: &str, r#for: std::time::Duration) {
        let mut polled = self.polled.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        polled.retain(|_, until| *until > now);
        polled.insert((site.to_string(), host.to_string()), now + r#for);
    }

    /// How many hosts have a session now, or polled recently enough.
    pub fn online_hosts(&self) -> usize {
        let now = std::time::Instant::now();
        let polled = self.polled.lock().unwrap_or_else(|e| e.into_inner());
        self.online.lock().unwrap_or_else(|e| e.into_inner()).len()
            + polled.values().filter(|until| **until > now).count()
    }

    pub fn is_online(&self, site: &str, host: &str) -> bool {
        let key = (site.to_string(), host.to_string());
        if self
            .online
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
        {
            return true;
        }
        let polled = self.polled.lock().unwrap_or_else(|e| e.into_inner());
        polled
            .get(&key)
            .is_some_and(|until| *until > std::time::Instant::now())
    }

    /// Starts a rollout for every deployment whose target version is not its
    /// rollout's (a new deployment, a new version, an undo), from whatever
    /// each selected site runs now; drops the rollouts of deleted deployments.
    async fn start_rollouts(&self, inputs: &mut Inputs) -> Result<(), StoreError> {
        // What the sites in the inputs run now (one site: only its state).
        let current = match inputs.sites.as_slice() {
            [] => BTreeMap::new(),
            [site] => {
                let name = site.metadata.name.to_string();
                self.store
                    .site_state(&name)
                    .await?
                    .map(|state| (name, state))
                    .into_iter()
                    .collect()
            }
            _ => self.store.site_states().await?,
        };
        let now = now_ms();
        for deployment in &inputs.deployments {
            let name = deployment.metadata.name.as_str();
            let Some(target) = inputs.target(deployment) else {
                continue;
            };
            let existing = inputs.rollouts.get(name);
            let assigned = existing.map(|r| r.assigned()).unwrap_or_default();
            let running_now = |site: &str| -> Option<String> {
                assigned.get(site).cloned().unwrap_or_else(|| {
                    current.get(site).and_then(|(_, state)| {
                        state
                            .workloads
                            .iter()
                            .find(|w| w.deployment == name)
                            .map(|w| w.version.clone())
                    })
                })
            };
            let selected: Vec<String> = inputs
                .sites
                .iter()
                .filter(|site| deployment.spec.sites.matches(&site.metadata.labels))
                .map(|site| site.metadata.name.to_string())
                .collect();
            if let Some(existing) = existing.filter(|r| r.to == target) {
                // Sites that came to match (a label change) go through the
                // policy too: a last wave of a running rollout, or a rollout
                // of their own.
                let joining: Vec<String> = selected
                    .iter()
                    .filter(|s| !existing.from.contains_key(*s))
                    .cloned()
                    .collect();
                if joining.is_empty() {
                    continue;
                }
                let (rollout, started) =
                    if matches!(existing.phase, Phase::Running { .. } | Phase::Paused { .. }) {
                        let mut extended = existing.clone();
                        extended
                            .from
                            .extend(joining.iter().map(|s| (s.clone(), running_now(s))));
                        extended.waves.push(outpost_api::rollout::Wave {
                            name: (existing.waves.iter().filter(|w| w.name != "canary").count() + 1)
                                .to_string(),
                            sites: joining.clone(),
                        });
                        (extended, false)
                    } else {
                        let from = joining.iter().map(|s| (s.clone(), running_now(s))).collect();
                        (
                            RolloutState::start(deployment.spec.rollout.as_ref(), &target, from, now),
                            true,
                        )
                    };
                tracing::info!(deployment = %name, sites = ?joining, "sites joined the deployment");
                self.save_rollout(name, Some(&rollout), started).await?;
                Arc::make_mut(&mut inputs.rollouts).insert(name.to_string(), rollout);
                continue;
            }
            let from = selected.iter().map(|s| (s.clone(), running_now(s))).collect();
            let rollout = RolloutState::start(deployment.spec.rollout.as_ref(), &target, from, now);
            tracing::info!(deployment = %name, version = %target, waves = rollout.waves.len(), "rollout started");
            self.save_rollout(name, Some(&rollout), true).await?;
            Arc::make_mut(&mut inputs.rollouts).insert(name.to_string(), rollout);
        }
        let gone: Vec<String> = inputs
            .rollouts
            .keys()
            .filter(|name| {
                !inputs
                    .deployments
                    .iter()
                    .any(|d| d.metadata.name.as_str() == name.as_str())
            })
            .cloned()
            .collect();
        for name in gone {
            self.save_rollout(&name, None, false).await?;
            Arc::make_mut(&mut inputs.rollouts).remove(&name);
        }
        Ok(())
    }

    /// One engine step for every running rollout: observes its sites,
    /// advances, pauses or rolls back, and recomputes when a site's version
    /// changes. Runs every second; every step is stored, so a restart
    /// resumes where it was.
    pub async fn advance(&self) -> Result<(), StoreError> {
        let generation = self.rollout_cache().generation;
        let rollouts = self.rollouts().await?;
        if rollouts
            .values()
            .all(|r| r.is_finished() || matches!(r.phase, Phase::Paused { .. }))
        {
            return Ok(());
        }
        // Observing the fleet reads every site's state: it is done before the
        // lock, so that applies do not wait for it.
        let snapshot = crate::status::Snapshot::take(self.store.as_ref(), self).await?;
        // The same lock as recompute: an apply starting a rollout and a step
        // of the old one must not overwrite each other. A rollout written
        // since the read above is stepped at the next tick instead.
        let _one_at_a_time = self.recompute.lock().await;
        if self.rollout_cache().generation != generation {
            return Ok(());
        }
        let deployments: HashMap<String, Deployment> = self
            .store
            .list(Kind::Deployment)
            .await?
            .iter()
            .filter_map(|o| o.manifest().ok().and_then(Manifest::into_deployment))
            .map(|d| (d.metadata.name.to_string(), d))
            .collect();
        let now = now_ms();
        let mut moved = false;
        for (name, rollout) in rollouts
            .iter()
            .filter(|(_, r)| matches!(r.phase, Phase::Running { .. }))
        {
            let Some(deployment) = deployments.get(name) else {
                continue;
            };
            let health = rollout
                .from
                .keys()
                .map(|site| {
                    let (state, reason) = snapshot.deployment_on(name, site);
                    let health = match state {
                        DeploymentSiteState::UpToDate => SiteHealth::UpToDate,
                        DeploymentSiteState::Progressing => SiteHealth::Progressing,
                        DeploymentSiteState::Failed => SiteHealth::Failed(reason),
                        DeploymentSiteState::Offline => SiteHealth::Offline,
                    };
                    (site.clone(), health)
                })
                .collect();
            let next = rollout.step(deployment.spec.rollout.as_ref(), &health, now);
            if next != *rollout {
                if next.phase != rollout.phase {
                    tracing::info!(deployment = %name, phase = ?next.phase, "rollout moved");
                }
                moved |= next.assigned() != rollout.assigned();
                self.save_rollout(name, Some(&next), false).await?;
            }
        }
        if moved {
            self.recompute_locked().await?;
        }
        Ok(())
    }

    /// Applies an operator command to a deployment's rollout.
    pub async fn command(&self, deployment: &str, command: Command) -> Result<RolloutState, StoreError> {
        let _one_at_a_time = self.recompute.lock().await;
        let rollouts = self.rollouts().await?;
        let rollout = rollouts
            .get(deployment)
            .ok_or_else(|| StoreError::Conflict(format!("deployment {deployment:?} has no rollout")))?;
        let next = rollout.command(command, now_ms()).map_err(StoreError::Conflict)?;
        tracing::info!(%deployment, ?command, "rollout command");
        self.save_rollout(deployment, Some(&next), false).await?;
        Ok(next)
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
        for host in records.into_iter().filter(|host| !host.facts.is_empty()) {
            let labels = host.selector_labels();
            hosts.entry(host.site).or_default().insert(host.name, labels);
        }
        Ok(Inputs {
            sites,
            deployments,
            versions,
            hosts,
            rollouts: self.rollouts().await?,
        })
    }

    /// Compiles and stores every site's desired state; wakes changed sites.
    pub async fn recompute(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.recompute.lock().await;
        self.recompute_locked().await
    }

    /// Compiles and stores one site's desired state, after something that
    /// concerns only that site (a host enrolled, its facts or labels
    /// changed): no rollout starts, no other site is read. This is what keeps
    /// enrolling thousands of hosts linear.
    pub async fn recompute_site(&self, site: &str) -> Result<(), StoreError> {
        let _one_at_a_time = self.recompute.lock().await;
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
        let _one_at_a_time = self.recompute.lock().await;
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
        let revisions = self.revisions.lock().unwrap_or_else(|e| e.into_inner());
        for (site, revision) in changed {
            tracing::info!(%site, revision, "site desired state changed");
            if let Some(sender) = revisions.get(&site) {
                sender.send_replace(revision);
            }
        }
        Ok(())
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
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_host_stays_online_while_any_of_its_sessions_lives() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("outpost.db"))
            .await
            .unwrap();
        let fleet = Fleet::new(Arc::new(store));
        // After a partition: the new session starts, then the old one ends.
        let old = fleet.connect("shop-1", "till");
        let new = fleet.connect("shop-1", "till");
        drop(old);
        assert!(fleet.is_online("shop-1", "till"));
        assert_eq!(fleet.online_hosts(), 1);
        // Requests for logs go to the newest session.
        let (new, mut requests) = new;
        let request = LiveLogs {
            application: "pos".into(),
            service: String::new(),
            since_unix: 0,
            tail: 10,
            reply: oneshot::channel().0,
        };
        fleet
            .live_logs("shop-1", "till")
            .unwrap()
            .try_send(request)
            .unwrap();
        assert!(requests.try_recv().is_ok());
        drop(new);
        assert!(!fleet.is_online("shop-1", "till"));
        assert!(fleet.live_logs("shop-1", "till").is_none());
        assert_eq!(fleet.online_hosts(), 0);
    }

    /// Issue 11: instances went to a host that enrolled but never connected
    /// (no facts), and a site whose only host never connected "could not
    /// place" and failed its rollout. Now such a host gets nothing, and such
    /// a site is offline, whatever could be placed there.
    #[tokio::test]
    async fn a_host_without_facts_gets_nothing_and_its_site_is_offline_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Storage> = Arc::new(
            crate::store::SqliteStore::open(&dir.path().join("outpost.db"))
                .await
                .unwrap(),
        );
        let manifests = "apiVersion: outpost/v1\nkind: Site\nmetadata: {name: shop}\n---\n\
            apiVersion: outpost/v1\nkind: Application\nmetadata: {name: pos}\nspec:\n  version: '1'\n  services:\n\
            \x20   - {name: api, containers: [{name: api, image: busybox}]}\n\
            \x20   - {name: cam, hosts: camera, containers: [{name: cam, image: busybox}]}\n---\n\
            apiVersion: outpost/v1\nkind: Deployment\nmetadata: {name: pos}\nspec: {application: pos, sites: ''}\n";
        let documents = outpost_api::parse_documents("t.yaml", manifests).unwrap();
        store.apply(&documents, "test", Default::default()).await.unwrap();
        let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        store.create_join_token("t", "shop", expires).await.unwrap();
        store.redeem_join_token("t", "till", "01").await.unwrap();
        let fleet = Fleet::new(store.clone());
        fleet.recompute().await.unwrap();

        let placed = |state: &SiteState| -> Vec<String> {
            state
                .workloads
                .iter()
                .flat_map(|w| w.instances.iter().map(|i| i.host.clone()))
                .collect()
        };
        let (_, state) = store.site_state("shop").await.unwrap().unwrap();
        assert!(placed(&state).is_empty(), "{state:?}");
        assert!(state.failures.is_empty(), "a site without facts waits: {state:?}");

        // Facts arrive (the host said hello): `api` is placed, `cam` cannot be.
        let facts = [("arch".to_string(), "amd64".to_string())].into();
        store.record_hello("shop", "till", &facts, "1", 0).await.unwrap();
        fleet.recompute_site("shop").await.unwrap();
        let (_, state) = store.site_state("shop").await.unwrap().unwrap();
        assert_eq!(placed(&state), ["till"]);
        assert_eq!(state.failures.len(), 1, "{state:?}");

        // Its session is gone: offline, not failed.
        let snapshot = crate::status::Snapshot::take(store.as_ref(), &fleet)
            .await
            .unwrap();
        let (status, reason) = snapshot.deployment_on("pos", "shop");
        assert_eq!(status, DeploymentSiteState::Offline, "{reason}");
        let (_online, _logs) = fleet.connect("shop", "till");
        let snapshot = crate::status::Snapshot::take(store.as_ref(), &fleet)
            .await
            .unwrap();
        assert_eq!(
            snapshot.deployment_on("pos", "shop").0,
            DeploymentSiteState::Failed
        );
    }
}
