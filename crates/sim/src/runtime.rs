//! A container runtime that lives in memory: "starting" a container takes
//! a configurable delay (a real engine's create-and-start), after which it
//! runs until the agent removes it or a crash is injected. Health probes
//! pass unless failure is injected. An image it does not hold takes the
//! pull delay to fetch (its size over the simulated link's rate), whether
//! a container's start or pre-staging asks for it.

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use async_trait::async_trait;
use outpost_agent::plan::{Action, Observed};
use outpost_agent::registry::Credential;
use outpost_agent::runtime::{Progress, Runtime};
use outpost_api::manifest::Health;
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone)]
struct Container {
    observed: Observed,
    version: String,
}

#[derive(Debug, Default)]
struct State {
    containers: BTreeMap<String, Container>,
    networks: BTreeSet<String>,
    images: BTreeSet<String>,
    next_id: u64,
}

/// What fetching an image costs a simulated host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Images {
    /// The size of every image.
    pub bytes: u64,
    /// How long one takes to fetch.
    pub pull_delay: Duration,
}

pub struct MemoryRuntime {
    state: Mutex<State>,
    start_delay: Duration,
    images: Images,
    unhealthy: AtomicBool,
    /// Containers created or started again, over the runtime's life.
    starts: AtomicU64,
    changed: Mutex<Option<mpsc::Sender<()>>>,
    /// The version of every running container, by container name.
    running: watch::Sender<BTreeMap<String, String>>,
}

impl MemoryRuntime {
    pub fn new(start_delay: Duration, images: Images) -> MemoryRuntime {
        MemoryRuntime {
            state: Mutex::new(State::default()),
            start_delay,
            images,
            unhealthy: AtomicBool::new(false),
            starts: AtomicU64::new(0),
            changed: Mutex::new(None),
            running: watch::channel(BTreeMap::new()).0,
        }
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Publishes what runs, and tells the agent something changed behind
    /// its back when `external`.
    fn publish(&self, external: bool) {
        let running = self
            .state()
            .containers
            .values()
            .filter(|c| c.observed.running)
            .map(|c| (c.observed.name.clone(), c.version.clone()))
            .collect();
        self.running.send_replace(running);
        if external && let Some(sender) = self.changed.lock().as_ref() {
            let _ = sender.try_send(());
        }
    }

    /// Name → version of every running container, updated as they change.
    pub fn running(&self) -> watch::Receiver<BTreeMap<String, String>> {
        self.running.subscribe()
    }

    /// How many times a container was started (created or restarted).
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed)
    }

    /// Makes every running container exit with `code`, as a crash would.
    pub fn crash(&self, code: i64) -> usize {
        let crashed = {
            let mut state = self.state();
            let mut crashed = 0;
            for container in state.containers.values_mut().filter(|c| c.observed.running) {
                container.observed.running = false;
                container.observed.exit_code = Some(code);
                crashed += 1;
            }
            crashed
        };
        self.publish(true);
        crashed
    }

    /// Fetches an image unless it is held: the pull delay, then it is.
    async fn pull(&self, image: &str, progress: &Progress<'_>) {
        if self.state().images.contains(image) {
            return;
        }
        progress(0, self.images.bytes);
        tokio::time::sleep(self.images.pull_delay).await;
        progress(self.images.bytes, self.images.bytes);
        self.state().images.insert(image.to_string());
    }

    /// Makes health probes fail (or pass again).
    pub fn set_unhealthy(&self, unhealthy: bool) {
        self.unhealthy.store(unhealthy, Ordering::Relaxed);
    }
}

#[async_trait]
impl Runtime for MemoryRuntime {
    async fn observe(&self) -> Result<Vec<Observed>> {
        Ok(self
            .state()
            .containers
            .values()
            .map(|c| c.observed.clone())
            .collect())
    }

    async fn networks(&self) -> Result<BTreeSet<String>> {
        Ok(self.state().networks.clone())
    }

    async fn apply(&self, action: &Action) -> Result<()> {
        match action {
            Action::EnsureNetwork { application } => {
                self.state().networks.insert(application.clone());
            }
            Action::RemoveNetwork { application } => {
                self.state().networks.remove(application);
            }
            Action::Create { name, want } => {
                self.pull(want.container.image.as_str(), &|_, _| {}).await;
                tokio::time::sleep(self.start_delay).await;
                let mut state = self.state();
                if state.containers.values().any(|c| c.observed.name == *name) {
                    bail!("a container named {name} exists");
                }
                state.next_id += 1;
                let id = format!("sim{:08x}", state.next_id);
                let observed = Observed {
                    id: id.clone(),
                    name: name.clone(),
                    instance: want.instance.clone(),
                    application: want.application.clone(),
                    service: want.service.clone(),
                    spec_hash: want.spec_hash.clone(),
                    running: true,
                    exit_code: None,
                };
                let version = want.version.clone();
                state.containers.insert(id, Container { observed, version });
                self.starts.fetch_add(1, Ordering::Relaxed);
            }
            Action::Start { id, .. } => {
                tokio::time::sleep(self.start_delay).await;
                let mut state = self.state();
                let Some(container) = state.containers.get_mut(id) else {
                    bail!("no container {id}");
                };
                container.observed.running = true;
                container.observed.exit_code = None;
                self.starts.fetch_add(1, Ordering::Relaxed);
            }
            Action::Remove { id, .. } => {
                self.state().containers.remove(id);
            }
            Action::Rename { id, to, .. } => {
                let mut state = self.state();
                let Some(container) = state.containers.get_mut(id) else {
                    bail!("no container {id}");
                };
                container.observed.name = to.clone();
            }
        }
        self.publish(false);
        Ok(())
    }

    fn has_images(&self) -> bool {
        true
    }

    async fn image_size(&self, reference: &str) -> Result<Option<(String, u64)>> {
        let held = self.state().images.contains(reference);
        Ok(held.then(|| (reference.to_string(), self.images.bytes)))
    }

    async fn fetch(&self, image: &str, _credentials: &[Credential], progress: &Progress<'_>) -> Result<()> {
        self.pull(image, progress).await;
        Ok(())
    }

    async fn probe(&self, _container_id: &str, _application: &str, _health: &Health) -> Result<()> {
        if self.unhealthy.load(Ordering::Relaxed) {
            bail!("failure injected by the simulator");
        }
        Ok(())
    }

    fn changes(&self) -> mpsc::Receiver<()> {
        let (sender, receiver) = mpsc::channel(1);
        *self.changed.lock() = Some(sender);
        receiver
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_agent::plan::DesiredContainer;

    fn want(version: &str) -> Box<DesiredContainer> {
        Box::new(DesiredContainer {
            name: "outpost.s.i.c".to_string(),
            instance: "i".to_string(),
            application: "a".to_string(),
            service: "svc".to_string(),
            deployment: "d".to_string(),
            version: version.to_string(),
            spec_hash: format!("hash-{version}"),
            instance_hash: format!("hash-{version}"),
            container: serde_json::from_value(serde_json::json!({ "name": "c", "image": "sim/app:1" }))
                .unwrap(),
            secrets: Default::default(),
            prepared: Default::default(),
            names: Vec::new(),
        })
    }

    #[tokio::test]
    async fn containers_start_run_crash_and_restart() {
        let runtime = MemoryRuntime::new(Duration::from_millis(5), Images::default());
        let mut changes = runtime.changes();
        let create = Action::Create {
            name: "outpost.s.i.c".to_string(),
            want: want("1"),
        };
        runtime.apply(&create).await.unwrap();
        assert!(runtime.apply(&create).await.is_err(), "names are unique");
        let observed = runtime.observe().await.unwrap();
        assert_eq!(observed.len(), 1);
        assert!(observed[0].running);
        assert_eq!(
            runtime
                .running()
                .borrow()
                .get("outpost.s.i.c")
                .map(String::as_str),
            Some("1")
        );

        assert_eq!(runtime.crash(3), 1);
        changes
            .try_recv()
            .expect("a crash is a change the agent hears of");
        let observed = runtime.observe().await.unwrap();
        assert_eq!((observed[0].running, observed[0].exit_code), (false, Some(3)));
        assert!(runtime.running().borrow().is_empty());

        let id = observed[0].id.clone();
        let start = Action::Start {
            id: id.clone(),
            name: "outpost.s.i.c".to_string(),
            instance: "i".to_string(),
        };
        runtime.apply(&start).await.unwrap();
        assert!(runtime.observe().await.unwrap()[0].running);
        assert_eq!(runtime.starts(), 2);

        let health: Health = serde_json::from_value(serde_json::json!({ "tcp": { "port": 1 } })).unwrap();
        runtime.probe(&id, "a", &health).await.unwrap();
        runtime.set_unhealthy(true);
        assert!(runtime.probe(&id, "a", &health).await.is_err());

        runtime
            .apply(&Action::Remove {
                id,
                name: String::new(),
                reason: "gone",
            })
            .await
            .unwrap();
        assert!(runtime.observe().await.unwrap().is_empty());
    }
}
