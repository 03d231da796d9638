//! The rollout side of the fleet: the parsed-rollout cache, starting a
//! rollout when a deployment's target changes (or sites join it), the
//! engine's step every second, and the operator's commands.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use outpost_api::manifest::{Deployment, Kind, Manifest};
use outpost_api::rollout::{Command, Phase, RolloutState, SiteHealth};
use outpost_api::wire::DeploymentSiteState;

use super::{Fleet, Inputs, now_ms};
use crate::store::{Change, StoreError};

/// Only the Fleet writes rollouts; each write empties the cache and bumps
/// the generation, so a read that raced a write never fills it. A write
/// by another replica empties it too: when it announces it, and when the
/// fleet lock finds the store's counter moved.
#[derive(Default)]
pub(super) struct RolloutCache {
    generation: u64,
    rollouts: Option<Arc<BTreeMap<String, RolloutState>>>,
    /// The store's rollouts counter the cache agrees with.
    pub(super) counter: Option<i64>,
}

impl RolloutCache {
    pub(super) fn forget(&mut self) {
        self.generation += 1;
        self.rollouts = None;
    }
}

impl Fleet {
    pub(super) fn rollout_cache(&self) -> parking_lot::MutexGuard<'_, RolloutCache> {
        self.rollouts.lock()
    }

    /// Every stored rollout (from the cache when it is filled).
    pub(super) async fn rollouts(&self) -> Result<Arc<BTreeMap<String, RolloutState>>, StoreError> {
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

    /// Forgets the rollouts held in memory (another replica wrote some).
    pub fn forget_rollouts(&self) {
        self.rollout_cache().forget();
    }

    /// Stores a rollout (`None`: deletes it), forgets the cached ones and
    /// tells the other replicas.
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
        {
            let mut cache = self.rollout_cache();
            cache.forget();
            cache.counter = saved.as_ref().ok().copied();
        }
        self.store.announce(&Change::Rollouts).await;
        saved.map(drop)
    }

    /// Starts a rollout for every deployment whose target version is not its
    /// rollout's (a new deployment, a new version, an undo), from whatever
    /// each selected site runs now; drops the rollouts of deleted deployments.
    pub(super) async fn start_rollouts(&self, inputs: &mut Inputs) -> Result<(), StoreError> {
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
            // The release a site runs: its version, and the secret
            // versions of all the deployment's workloads there.
            let running_now = |site: &str| -> Option<String> {
                assigned.get(site).cloned().unwrap_or_else(|| {
                    current.get(site).and_then(|(_, state)| {
                        let mut workloads = state.workloads.iter().filter(|w| w.deployment == name);
                        let first = workloads.next()?;
                        let mut secrets = first.secrets.clone();
                        for workload in workloads {
                            secrets.extend(workload.secrets.clone());
                        }
                        Some(outpost_api::secret::release(&first.version, &secrets))
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

    /// One engine step for every active rollout (running, or waiting for
    /// returning sites to hold their images): observes its sites, switches
    /// those that hold the new version's images, advances, pauses or rolls
    /// back, and recomputes when a site's version changes. Runs every second; every step is stored, so a restart
    /// resumes where it was.
    pub async fn advance(&self) -> Result<(), StoreError> {
        let generation = self.rollout_cache().generation;
        let rollouts = self.rollouts().await?;
        if !rollouts.values().any(RolloutState::is_active) {
            return Ok(());
        }
        // Observing the fleet reads every site's state: it is done before the
        // lock, so that applies do not wait for it.
        let snapshot = crate::status::Snapshot::take(self.store.as_ref(), &self.presence).await?;
        // The same lock as recompute: an apply starting a rollout and a step
        // of the old one must not overwrite each other. A rollout written
        // since the read above is stepped at the next tick instead.
        let _one_at_a_time = self.exclusive().await?;
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
        for (name, rollout) in rollouts.iter().filter(|(_, r)| r.is_active()) {
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
            let holds = rollout
                .awaiting_images()
                .filter(|site| snapshot.holds_images(name, site))
                .cloned()
                .collect();
            let next = rollout.step(deployment.spec.rollout.as_ref(), &health, &holds, now);
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
        let _one_at_a_time = self.exclusive().await?;
        let rollouts = self.rollouts().await?;
        let rollout = rollouts
            .get(deployment)
            .ok_or_else(|| StoreError::Conflict(format!("deployment {deployment:?} has no rollout")))?;
        let next = rollout.command(command, now_ms()).map_err(StoreError::Conflict)?;
        tracing::info!(%deployment, ?command, "rollout command");
        self.save_rollout(deployment, Some(&next), false).await?;
        Ok(next)
    }
}
