//! How a deployment's rollout policy splits its sites into waves: canary
//! sites first, then waves of a fixed size or growing by a factor. Without
//! a policy, every site is in one wave. Pure: `outpost plan` shows it, and
//! the rollout engine follows it.

use serde::{Deserialize, Serialize};

use crate::manifest::Rollout;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// `canary`, `all`, or the wave's number from 1.
    pub name: String,
    pub sites: Vec<String>,
}

/// Splits `sites` (in the order given) into the waves of `rollout`.
pub fn waves(rollout: Option<&Rollout>, sites: &[String]) -> Vec<Wave> {
    let Some(rollout) = rollout else {
        return whole(sites);
    };
    let mut rest = sites;
    let mut out = Vec::new();
    if let Some(canary) = rollout.canary {
        let n = (canary as usize).min(rest.len());
        let (first, after) = rest.split_at(n);
        if !first.is_empty() {
            out.push(Wave {
                name: "canary".to_string(),
                sites: first.to_vec(),
            });
        }
        rest = after;
    }
    let waves = rollout.waves.as_ref();
    let mut size = match waves.and_then(|w| w.size) {
        Some(size) => size as usize,
        None => waves.and_then(|w| w.start).unwrap_or(1) as usize,
    };
    let factor = waves.and_then(|w| w.exponential).map(|f| f as usize);
    if waves.is_none() {
        // A canary alone: everything else in one wave after it.
        size = rest.len().max(1);
    }
    let mut number = 1;
    while !rest.is_empty() {
        let n = size.max(1).min(rest.len());
        let (wave, after) = rest.split_at(n);
        out.push(Wave {
            name: number.to_string(),
            sites: wave.to_vec(),
        });
        rest = after;
        number += 1;
        if let Some(factor) = factor {
            size = size.saturating_mul(factor);
        }
    }
    if out.is_empty() { whole(sites) } else { out }
}

fn whole(sites: &[String]) -> Vec<Wave> {
    vec![Wave {
        name: "all".to_string(),
        sites: sites.to_vec(),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("s{i}")).collect()
    }

    fn shape(rollout: Option<serde_json::Value>, n: usize) -> Vec<(String, usize)> {
        let rollout: Option<Rollout> = rollout.map(|r| serde_json::from_value(r).unwrap());
        waves(rollout.as_ref(), &sites(n))
            .into_iter()
            .map(|w| (w.name, w.sites.len()))
            .collect()
    }

    fn names(list: &[(&str, usize)]) -> Vec<(String, usize)> {
        list.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    #[test]
    fn splits_sites_into_waves() {
        assert_eq!(shape(None, 5), names(&[("all", 5)]));
        assert_eq!(
            shape(Some(serde_json::json!({ "waves": { "size": 2 } })), 5),
            names(&[("1", 2), ("2", 2), ("3", 1)])
        );
        assert_eq!(
            shape(
                Some(serde_json::json!({ "canary": 2, "waves": { "size": 10 } })),
                25
            ),
            names(&[("canary", 2), ("1", 10), ("2", 10), ("3", 3)])
        );
        assert_eq!(
            shape(
                Some(serde_json::json!({ "waves": { "exponential": 2, "start": 1 } })),
                10
            ),
            names(&[("1", 1), ("2", 2), ("3", 4), ("4", 3)])
        );
        assert_eq!(
            shape(Some(serde_json::json!({ "canary": 1 })), 4),
            names(&[("canary", 1), ("1", 3)])
        );
        assert_eq!(
            shape(Some(serde_json::json!({ "canary": 5 })), 2),
            names(&[("canary", 2)])
        );
        assert_eq!(
            shape(Some(serde_json::json!({ "healthyFor": "2m" })), 3),
            names(&[("1", 3)])
        );
        assert_eq!(
            shape(Some(serde_json::json!({ "waves": { "size": 3 } })), 0),
            names(&[("all", 0)])
        );
    }
}

/// How one site fares with the version it was given, as the control plane
/// observes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", tag = "state", content = "reason")]
pub enum SiteHealth {
    UpToDate,
    Progressing,
    Failed(String),
    /// Offline sites never block a rollout: they are deferred and converge
    /// when they return.
    Offline,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", tag = "phase")]
pub enum Phase {
    /// Sites of waves `0..=wave` run the new version.
    Running {
        wave: usize,
        /// When the wave started (milliseconds on the engine's clock).
        started: u64,
        /// Since when every site of the wave has been up to date.
        healthy_since: Option<u64>,
        /// An operator promoted the wave: do not wait for `healthyFor`.
        promoted: bool,
    },
    /// Stopped by the operator or by `onFailure: pause`; `resume` continues.
    Paused {
        wave: usize,
        reason: String,
    },
    Succeeded,
    /// Every site was given back its previous version.
    RolledBack {
        reason: String,
    },
    /// Stopped by the operator; sites keep what they have.
    Aborted {
        wave: usize,
    },
}

/// A rollout of one deployment from the versions sites ran to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    pub to: String,
    /// The version each selected site ran before (none for a new site).
    pub from: std::collections::BTreeMap<String, Option<String>>,
    pub waves: Vec<Wave>,
    pub phase: Phase,
    /// Sites that failed with the new version, and why.
    pub failed: std::collections::BTreeMap<String, String>,
    /// Whether sites fetch the new version's images before they switch
    /// (`rollout.prestage`). Rollouts stored before pre-staging existed
    /// read as false.
    #[serde(default)]
    pub prestage: bool,
    /// The sites that held every image of the new version once their wave
    /// had come: with `prestage`, only these switch.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub staged: std::collections::BTreeSet<String>,
}

/// Operator commands on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Promote,
    Pause,
    Resume,
    Abort,
}

impl RolloutState {
    /// A rollout to `to` over `sites` (in wave order), starting at `now`.
    pub fn start(
        rollout: Option<&Rollout>,
        to: &str,
        from: std::collections::BTreeMap<String, Option<String>>,
        now: u64,
    ) -> RolloutState {
        let sites: Vec<String> = from.keys().cloned().collect();
        RolloutState {
            to: to.to_string(),
            waves: waves(rollout, &sites),
            from,
            phase: Phase::Running {
                wave: 0,
                started: now,
                healthy_since: None,
                promoted: false,
            },
            failed: Default::default(),
            prestage: Rollout::prestages(rollout),
            staged: Default::default(),
        }
    }

    /// The version each site should run now; `None`: nothing (a new site
    /// not yet reached, or one rolled back to nothing).
    pub fn assigned(&self) -> std::collections::BTreeMap<String, Option<String>> {
        let mut out = self.from.clone();
        for site in self.reached_sites().filter(|site| self.switches(site)) {
            out.insert(site.clone(), Some(self.to.clone()));
        }
        out
    }

    /// What `assigned` says of one site (`None`: the rollout does not know
    /// it), without building the whole map.
    pub fn assigned_to(&self, site: &str) -> Option<Option<String>> {
        let reached = self.reached_sites().any(|s| s == site);
        if reached && self.switches(site) {
            Some(Some(self.to.clone()))
        } else {
            self.from.get(site).cloned()
        }
    }

    /// Whether a site whose wave has come runs the new version: always,
    /// unless the rollout pre-stages and the site does not hold its images.
    fn switches(&self, site: &str) -> bool {
        !self.prestage || self.staged.contains(site)
    }

    /// The sites of the waves that have been given the new version.
    fn reached_sites(&self) -> impl Iterator<Item = &String> {
        self.waves.iter().take(self.reached()).flat_map(|w| &w.sites)
    }

    /// Whether `site` should be fetching the new version's images: the
    /// rollout pre-stages, goes on (running, paused, or done with sites
    /// still to switch), and has not switched the site yet.
    pub fn stages(&self, site: &str) -> bool {
        self.prestage
            && matches!(
                self.phase,
                Phase::Running { .. } | Phase::Paused { .. } | Phase::Succeeded
            )
            && self.from.contains_key(site)
            && !self.staged.contains(site)
    }

    /// The sites whose wave has come and that wait for their images. They
    /// switch as soon as they hold them, even after the rollout finished
    /// (a site that was offline pre-stages when it returns).
    pub fn awaiting_images(&self) -> impl Iterator<Item = &String> {
        let going = matches!(self.phase, Phase::Running { .. } | Phase::Succeeded);
        self.reached_sites()
            .filter(move |site| going && self.prestage && !self.staged.contains(*site))
    }

    /// Whether the engine still has something to do for this rollout.
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Running { .. }) || self.awaiting_images().next().is_some()
    }

    /// How many waves have been given the new version.
    fn reached(&self) -> usize {
        match &self.phase {
            Phase::Running { wave, .. } | Phase::Paused { wave, .. } | Phase::Aborted { wave } => *wave + 1,
            Phase::Succeeded => self.waves.len(),
            Phase::RolledBack { .. } => 0,
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self.phase,
            Phase::Succeeded | Phase::RolledBack { .. } | Phase::Aborted { .. }
        )
    }

    /// How many failed sites the policy tolerates.
    fn budget(&self, rollout: Option<&Rollout>) -> usize {
        let total = self.from.len();
        match rollout.and_then(|r| r.max_failures) {
            None => 0,
            Some(crate::quantity::FailureBudget::Count(n)) => n as usize,
            Some(crate::quantity::FailureBudget::Percent(p)) => total * p as usize / 100,
        }
    }

    /// One step of the engine: records failures, enforces the failure
    /// budget and the wave timeout, and advances a wave that has been
    /// healthy for `healthyFor` (or was promoted).
    ///
    /// `holds` are sites that hold every image of the new version: of
    /// those, the ones whose wave has come switch (with `prestage`).
    pub fn step(
        &self,
        rollout: Option<&Rollout>,
        health: &std::collections::BTreeMap<String, SiteHealth>,
        holds: &std::collections::BTreeSet<String>,
        now: u64,
    ) -> RolloutState {
        let mut next = self.clone();
        let ready: Vec<String> = self
            .awaiting_images()
            .filter(|site| holds.contains(*site))
            .cloned()
            .collect();
        next.staged.extend(ready);
        let Phase::Running {
            wave,
            started,
            healthy_since,
            promoted,
        } = self.phase.clone()
        else {
            return next;
        };
        // Failures anywhere the new version runs count.
        let reached: Vec<&String> = self.waves.iter().take(wave + 1).flat_map(|w| &w.sites).collect();
        for site in &reached {
            if let Some(SiteHealth::Failed(why)) = health.get(*site) {
                next.failed.entry((*site).clone()).or_insert_with(|| why.clone());
            }
        }
        let timeout = rollout.and_then(|r| r.timeout).map(|d| d.0);
        let current: &[String] = self.waves.get(wave).map_or(&[], |w| &w.sites);
        // A site is up when it runs the new version and is healthy (a site
        // that has not switched yet runs the old one), or is offline.
        let up = |site: &String| match health.get(site) {
            Some(SiteHealth::Offline) => true,
            Some(SiteHealth::UpToDate) => self.switches(site),
            _ => false,
        };
        if self.prestage {
            let limit = rollout
                .and_then(|r| r.prestage_timeout)
                .unwrap_or(crate::limits::DEFAULT_PRESTAGE_TIMEOUT);
            if now.saturating_sub(started) >= limit.0 {
                // An offline site never blocks: it pre-stages when it returns.
                let late: Vec<&String> = current
                    .iter()
                    .filter(|s| {
                        !self.staged.contains(*s)
                            && !next.failed.contains_key(*s)
                            && health.get(*s) != Some(&SiteHealth::Offline)
                    })
                    .collect();
                for site in late {
                    next.failed.insert(
                        site.clone(),
                        format!("its images were not all fetched within the prestageTimeout ({limit})"),
                    );
                }
            }
        }
        if timeout.is_some_and(|t| now.saturating_sub(started) >= t) {
            let late: Vec<&String> = current
                .iter()
                .filter(|s| !up(s) && !next.failed.contains_key(*s))
                .collect();
            for site in late {
                next.failed.insert(
                    site.clone(),
                    "not up to date before the wave's timeout".to_string(),
                );
            }
        }
        if next.failed.len() > self.budget(rollout) {
            let reason = format!(
                "{} site(s) failed, more than the {} allowed: {}",
                next.failed.len(),
                self.budget(rollout),
                next.failed
                    .iter()
                    .map(|(s, why)| format!("{s}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            next.phase = match rollout.and_then(|r| r.on_failure) {
                Some(crate::manifest::OnFailure::Pause) => Phase::Paused { wave, reason },
                _ => Phase::RolledBack { reason },
            };
            return next;
        }
        let all_up = current
            .iter()
            .all(|site| up(site) || next.failed.contains_key(site));
        if !all_up {
            next.phase = Phase::Running {
                wave,
                started,
                healthy_since: None,
                promoted,
            };
            return next;
        }
        let since = healthy_since.unwrap_or(now);
        let wait = rollout.and_then(|r| r.healthy_for).map_or(0, |d| d.0);
        next.phase = if promoted || now.saturating_sub(since) >= wait {
            if wave + 1 < self.waves.len() {
                Phase::Running {
                    wave: wave + 1,
                    started: now,
                    healthy_since: None,
                    promoted: false,
                }
            } else {
                Phase::Succeeded
            }
        } else {
            Phase::Running {
                wave,
                started,
                healthy_since: Some(since),
                promoted,
            }
        };
        next
    }

    /// Applies an operator command, or says why it does not apply.
    pub fn command(&self, command: Command, now: u64) -> Result<RolloutState, String> {
        let mut next = self.clone();
        next.phase = match (&self.phase, command) {
            (
                Phase::Running {
                    wave,
                    started,
                    healthy_since,
                    ..
                },
                Command::Promote,
            ) => Phase::Running {
                wave: *wave,
                started: *started,
                healthy_since: *healthy_since,
                promoted: true,
            },
            (Phase::Running { wave, .. }, Command::Pause) => Phase::Paused {
                wave: *wave,
                reason: "paused by an operator".to_string(),
            },
            (Phase::Paused { wave, .. }, Command::Resume) => {
                // Resuming forgives the failures seen so far.
                next.failed.clear();
                Phase::Running {
                    wave: *wave,
                    started: now,
                    healthy_since: None,
                    promoted: false,
                }
            }
            (Phase::Running { wave, .. } | Phase::Paused { wave, .. }, Command::Abort) => {
                Phase::Aborted { wave: *wave }
            }
            (phase, command) => {
                return Err(format!(
                    "cannot {} a rollout that is {}",
                    verb(command),
                    describe(phase)
                ));
            }
        };
        Ok(next)
    }
}

fn verb(command: Command) -> &'static str {
    match command {
        Command::Promote => "promote",
        Command::Pause => "pause",
        Command::Resume => "resume",
        Command::Abort => "abort",
    }
}

fn describe(phase: &Phase) -> &'static str {
    match phase {
        Phase::Running { .. } => "running",
        Phase::Paused { .. } => "paused",
        Phase::Succeeded => "finished",
        Phase::RolledBack { .. } => "rolled back",
        Phase::Aborted { .. } => "aborted",
    }
}

#[cfg(test)]
mod engine_tests;
