//! The executor of the reconcile plan: runs `plan` whenever the desired
//! state changes, the runtime reports a change (a container died), a
//! backoff expires, or the periodic resync fires; applies the actions with
//! per-instance exponential backoff and jitter; and publishes the status of
//! every instance this host runs, with the digests of the images it runs
//! by tag. Around the actions it has secrets opened before a container
//! starts (`secrets.rs`) and keeps the image cache (`images.rs`).

use outpost_api::instance::InstanceState;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use outpost_api::telemetry::{Event, EventKind, Record};
use outpost_api::workload::SiteState;
use outpost_proto::v1::{InstanceStatus, StatusReport};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::health::{Prober, Verdict};
use crate::images::ImageCache;
use crate::journal::Journal;
use crate::outbox::Outbox;
use crate::plan::{Action, DesiredContainer, Observed, desired_for_host, next_name, plan};
use crate::runtime::Runtime;
use crate::secrets::Secrets;

/// How often everything is checked even when nothing reported a change.
pub const RESYNC: Duration = Duration::from_secs(10);
/// Running this long after a (re)start clears an instance's backoff.
const STABLE: Duration = Duration::from_secs(30);
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// Restarts in a row, without staying up, after which an instance is failed.
const CRASH_LOOP: u32 = 3;
const MAX_DELAY: Duration = Duration::from_secs(60);
/// How long a change of the desired state settles before it is acted on:
/// a link that heals delivers what was queued for it in one burst, and only
/// the last of it should run.
const SETTLE: Duration = Duration::from_millis(500);

/// When an instance may next be started, after how many recent attempts.
#[derive(Debug, Clone)]
struct Backoff {
    attempts: u32,
    last_attempt: Instant,
    next_allowed: Instant,
}

impl Backoff {
    /// The delay before attempt `attempts + 1`: none for the first restart,
    /// then 250 ms doubling to a minute, each ±20%.
    fn delay(attempts: u32) -> Duration {
        if attempts == 0 {
            return Duration::ZERO;
        }
        let base = FIRST_DELAY
            .saturating_mul(1 << (attempts - 1).min(16))
            .min(MAX_DELAY);
        base.mul_f64(rand::rng().random_range(0.8..1.2))
    }
}

pub struct Reconciler {
    runtime: Arc<dyn Runtime>,
    site: String,
    host: String,
    desired: watch::Receiver<(u64, SiteState)>,
    status: Arc<watch::Sender<StatusReport>>,
    backoff: HashMap<String, Backoff>,
    /// The last failure per instance, reported until it starts.
    failures: HashMap<String, String>,
    prober: Prober,
    verdict_changes: tokio::sync::mpsc::Receiver<()>,
    journal: Journal,
    outbox: Arc<dyn Outbox>,
    secrets: Arc<Secrets>,
    /// The registry digest of each image named by tag that runs here
    /// (`None`: the engine holds it from no registry), asked once.
    digests: HashMap<String, Option<String>>,
    /// The pinned image cache (none in the simulator), and the desired
    /// revision it last noted.
    images: Option<ImageCache>,
    images_seen: Option<u64>,
    /// The application streams endpoint, whose address and tokens go into
    /// new containers' environment.
    streams: Option<Arc<crate::streams::endpoint::Endpoint>>,
    /// Whether containers get the site network's names.
    site_network: bool,
}

impl Reconciler {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        site: &str,
        host: &str,
        desired: watch::Receiver<(u64, SiteState)>,
        status: Arc<watch::Sender<StatusReport>>,
        outbox: Arc<dyn Outbox>,
        secrets: Arc<Secrets>,
    ) -> Reconciler {
        let (verdict_sender, verdict_changes) = tokio::sync::mpsc::channel(1);
        Reconciler {
            prober: Prober::new(runtime.clone(), verdict_sender),
            verdict_changes,
            runtime,
            site: site.to_string(),
            host: host.to_string(),
            desired,
            status,
            backoff: HashMap::new(),
            failures: HashMap::new(),
            journal: Journal::default(),
            outbox,
            secrets,
            digests: HashMap::new(),
            images: None,
            streams: None,
            site_network: false,
            images_seen: None,
        }
    }

    /// Keeps the images this agent pulls: pinned for the current and previous
    /// versions, pruned past the budget.
    pub fn with_image_cache(mut self, cache: ImageCache) -> Reconciler {
        self.images = Some(cache);
        self
    }

    /// Gives each new container of an application with topics the
    /// endpoint's address and a token of its own.
    pub fn with_streams(mut self, endpoint: Arc<crate::streams::endpoint::Endpoint>) -> Reconciler {
        self.streams = Some(endpoint);
        self
    }

    /// Gives each new container the site network's names (`crate::network`).
    pub fn with_site_network(mut self) -> Reconciler {
        self.site_network = true;
        self
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut changes = self.runtime.changes();
        loop {
            self.reconcile().await;
            let retry = self
                .backoff
                .values()
                .map(|b| b.next_allowed)
                .filter(|t| *t > Instant::now())
                .min();
            let wake = retry
                .unwrap_or_else(|| Instant::now() + RESYNC)
                .min(Instant::now() + RESYNC);
            let mut settle = false;
            tokio::select! {
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    settle = true;
                }
                _ = changes.recv() => {}
                _ = self.verdict_changes.recv() => {}
                () = tokio::time::sleep_until(wake) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            if settle {
                tokio::time::sleep(SETTLE).await;
            }
        }
    }

    /// One pass: observe, plan, act, report.
    pub async fn reconcile(&mut self) {
        let (revision, state) = self.desired.borrow_and_update().clone();
        let desired = desired_for_host(&state, &self.site, &self.host, self.site_network);
        let (observed, networks) = match (self.runtime.observe().await, self.runtime.networks().await) {
            (Ok(observed), Ok(networks)) => (observed, networks),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(err = format!("{err:#}"), "cannot see the runtime; will retry");
                return;
            }
        };
        let mut events = self.journal.observe(&observed);
        for (id, signal) in self.secrets.refresh(&desired, &observed).await {
            if let Err(err) = self.runtime.signal(&id, &signal).await {
                tracing::warn!(container = %id, %signal, err = format!("{err:#}"), "signalling a secret change");
            }
        }
        let now = Instant::now();
        self.backoff.retain(|instance, backoff| {
            let running = observed.iter().any(|o| &o.instance == instance && o.running);
            !(running && now.duration_since(backoff.last_attempt) >= STABLE)
        });
        let ready = self.ready(&desired, &observed);
        let actions = plan(&desired, &observed, &networks, &ready, self.runtime.overlap());
        tracing::debug!(
            desired = desired.len(),
            observed = observed.len(),
            actions = actions.len(),
            "reconcile pass"
        );
        let mut pulled_now = Vec::new();
        for mut action in actions {
            let instance = match &action {
                Action::Create { want, .. } => Some(want.instance.clone()),
                Action::Start { instance, .. } => Some(instance.clone()),
                _ => None,
            };
            if let Some(instance) = &instance
                && self.backoff.get(instance).is_some_and(|b| b.next_allowed > now)
            {
                continue;
            }
            match &action {
                Action::Remove { name, reason, .. } => {
                    tracing::info!(container = %name, "removing: {reason}")
                }
                Action::Create { name, want } => {
                    tracing::info!(container = %name, version = %want.version, "creating")
                }
                Action::Rename { from, to, .. } => {
                    tracing::info!(container = %to, "update ready: {from} takes over")
                }
                Action::Start { name, .. } => tracing::info!(container = %name, "restarting"),
                _ => {}
            }
            let result = match self.prepare(&mut action, &desired).await {
                Ok(()) => self.runtime.apply(&action).await,
                Err(err) => Err(err),
            };
            if let Action::Create { want, .. } = &action {
                let pulled = self.runtime.pulled();
                events.extend(pulled.iter().map(|image| Event {
                    at: outpost_api::telemetry::now(),
                    kind: EventKind::ImagePulled,
                    application: want.application.clone(),
                    service: want.service.clone(),
                    instance: want.instance.clone(),
                    message: format!("pulled {image}"),
                    exit_code: None,
                }));
                pulled_now.extend(pulled);
            }
            if let Some(instance) = instance {
                let attempts = self.backoff.get(&instance).map_or(0, |b| b.attempts) + 1;
                self.backoff.insert(
                    instance.clone(),
                    Backoff {
                        attempts,
                        last_attempt: now,
                        next_allowed: now + Backoff::delay(attempts),
                    },
                );
                match &result {
                    Ok(()) => {
                        self.failures.remove(&instance);
                    }
                    Err(err) => {
                        self.failures.insert(instance, format!("{err:#}"));
                    }
                }
            }
            if let Err(err) = result {
                tracing::warn!(err = format!("{err:#}"), "action failed; backing off");
            }
        }
        let observed = self.runtime.observe().await.unwrap_or(observed);
        self.secrets.sweep(&observed);
        self.tend_images(revision, &desired, &pulled_now).await;
        events.extend(self.journal.observe(&observed));
        let probed = desired.iter().filter_map(|want| {
            let health = want.container.health.as_ref()?;
            let have = generation(want, &observed).filter(|o| o.running)?;
            Some((have.id.as_str(), want.application.as_str(), health))
        });
        self.prober.track(probed);
        self.learn_digests(&desired, &observed).await;
        let statuses = self.statuses(&desired, &observed);
        events.extend(self.journal.statuses(&statuses));
        let records: Vec<Record> = events.into_iter().map(Record::Event).collect();
        if let Err(err) = self.outbox.push(&records).await {
            tracing::warn!(
                err = format!("{err:#}"),
                events = records.len(),
                "cannot queue events"
            );
        }
        self.status.send_if_modified(|current| {
            let changed = current.instances != statuses;
            current.instances = statuses;
            changed
        });
    }

    /// Opens and writes the secrets of a container about to start: a new
    /// one gets its environment (with its streams token) and mounts; one
    /// started again gets its files back (after a reboot, the tmpfs is empty).
    async fn prepare(&self, action: &mut Action, desired: &[DesiredContainer]) -> anyhow::Result<()> {
        match action {
            Action::Create { want, .. } => {
                want.prepared = self.secrets.prepare(want).await?;
                if let Some(endpoint) = &self.streams {
                    let env = endpoint.env(&want.application, &want.instance);
                    want.prepared.env.extend(env);
                }
            }
            Action::Start { name, .. } => {
                let want = desired
                    .iter()
                    .find(|d| d.name == *name || next_name(&d.name) == *name);
                if let Some(want) = want {
                    self.secrets.prepare(want).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The containers of the desired generation that may serve: running,
    /// and healthy if they have a probe.
    fn ready(
        &self,
        desired: &[DesiredContainer],
        observed: &[Observed],
    ) -> std::collections::BTreeSet<String> {
        desired
            .iter()
            .filter_map(|want| {
                let have = generation(want, observed).filter(|o| o.running)?;
                let healthy = want.container.health.is_none()
                    || self.prober.verdict(&have.id) == Some(Verdict::Healthy);
                healthy.then(|| have.id.clone())
            })
            .collect()
    }

    /// Keeps the image cache: notes what each workload wants when the
    /// desired state changes, what was pulled, and prunes past the budget
    /// after either.
    async fn tend_images(&mut self, revision: u64, desired: &[DesiredContainer], pulled: &[String]) {
        let Some(cache) = &self.images else { return };
        let changed = self.images_seen != Some(revision);
        if !changed && pulled.is_empty() {
            return;
        }
        let tended = async {
            if changed {
                cache.desired(desired).await?;
            }
            cache.pulled(pulled).await?;
            cache.prune().await
        };
        match tended.await {
            Ok(_) => self.images_seen = Some(revision),
            Err(err) => tracing::warn!(err = format!("{err:#}"), "tending the image cache"),
        }
    }

    /// Asks the runtime once for the digest of each image that runs here by
    /// tag, so that the control plane can pin its version to those bytes.
    async fn learn_digests(&mut self, desired: &[DesiredContainer], observed: &[Observed]) {
        for want in desired {
            let image = want.container.image.as_str();
            if image.contains('@') || self.digests.contains_key(image) {
                continue;
            }
            if generation(want, observed).is_none_or(|o| !o.running) {
                continue;
            }
            match self.runtime.image_digest(image).await {
                Ok(digest) => {
                    self.digests.insert(image.to_string(), digest);
                }
                Err(err) => tracing::debug!(%image, err = format!("{err:#}"), "reading an image digest"),
            }
        }
    }

    /// One status per instance, from the state of its containers.
    fn statuses(&self, desired: &[DesiredContainer], observed: &[Observed]) -> Vec<InstanceStatus> {
        let mut by_instance: BTreeMap<&str, Vec<&DesiredContainer>> = BTreeMap::new();
        for want in desired {
            by_instance.entry(want.instance.as_str()).or_default().push(want);
        }
        by_instance
            .into_iter()
            .map(|(instance, containers)| {
                let first = containers[0];
                let mut status = InstanceStatus {
                    instance: instance.to_string(),
                    application: first.application.clone(),
                    service: first.service.clone(),
                    spec_hash: first.instance_hash.clone(),
                    version: first.version.clone(),
                    image_digests: containers
                        .iter()
                        .filter_map(|want| {
                            let image = want.container.image.as_str();
                            Some((image.to_string(), self.digests.get(image)?.clone()?))
                        })
                        .collect(),
                    ..Default::default()
                };
                let mut state = InstanceState::Running;
                for want in &containers {
                    let have = generation(want, observed);
                    match have {
                        Some(o) if o.running => {
                            if status.container_id.is_empty() {
                                status.container_id = o.id.clone();
                            }
                            match self.prober.verdict(&o.id) {
                                Some(Verdict::Unhealthy(why)) if state != InstanceState::Exited => {
                                    state = InstanceState::Unhealthy;
                                    status.reason = format!("{}: {why}", want.container.name);
                                }
                                Some(Verdict::Starting) if state.is_up() => state = InstanceState::Starting,
                                Some(Verdict::Healthy) if state == InstanceState::Running => {
                                    state = InstanceState::Healthy;
                                }
                                _ => {}
                            }
                        }
                        Some(o) => {
                            let code = o.exit_code.unwrap_or(-1);
                            status.exit_code = code as i32;
                            // Restarted again and again without staying up: a crash loop.
                            let restarts = self.backoff.get(instance).map_or(0, |b| b.attempts);
                            if restarts >= CRASH_LOOP {
                                state = InstanceState::Failed;
                                status.reason = format!(
                                    "{} keeps exiting (code {code}, restarted {restarts} times)",
                                    want.container.name
                                );
                            } else {
                                state = InstanceState::Exited;
                                status.reason = format!("{} exited with {code}", want.container.name);
                            }
                        }
                        None if let Some(failure) = self.failures.get(instance) => {
                            state = InstanceState::Failed;
                            status.reason = failure.clone();
                        }
                        None if state == InstanceState::Running => state = InstanceState::Pending,
                        None => {}
                    }
                }
                // The state is a word only on the wire.
                status.state = state.to_string();
                status
            })
            .collect()
    }
}

/// The container of the desired generation, under its own name or, while
/// it replaces an older one, under its `.next` name.
fn generation<'a>(want: &DesiredContainer, observed: &'a [Observed]) -> Option<&'a Observed> {
    let next = next_name(&want.name);
    observed
        .iter()
        .filter(|o| o.spec_hash == want.spec_hash)
        .find(|o| o.name == want.name || o.name == next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_once_then_doubles_to_a_minute() {
        assert_eq!(Backoff::delay(0), Duration::ZERO);
        for (attempts, base) in [(1, 250), (2, 500), (3, 1000), (9, 60_000), (40, 60_000)] {
            let delay = Backoff::delay(attempts).as_millis() as f64;
            let base = base as f64;
            assert!((base * 0.8..=base * 1.2).contains(&delay), "{attempts}: {delay}");
        }
    }
}
