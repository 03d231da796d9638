//! Health checks run by the agent: one task per running container that has
//! a `health` probe, at its interval with its timeout. A container is
//! `starting` until its first success, `healthy` while checks pass, and
//! `unhealthy` after `failureThreshold` failures in a row (default 3).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use outpost_api::manifest::Health;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::runtime::Runtime;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_THRESHOLD: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Starting,
    Healthy,
    Unhealthy(String),
}

/// The health tasks, keyed by container ID.
pub struct Prober {
    runtime: Arc<dyn Runtime>,
    verdicts: Arc<Mutex<HashMap<String, Verdict>>>,
    tasks: HashMap<String, JoinHandle<()>>,
    changed: mpsc::Sender<()>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

impl Prober {
    /// `changed` receives a message whenever a verdict changes.
    pub fn new(runtime: Arc<dyn Runtime>, changed: mpsc::Sender<()>) -> Prober {
        Prober {
            runtime,
            verdicts: Arc::new(Mutex::new(HashMap::new())),
            tasks: HashMap::new(),
            changed,
        }
    }

    /// Keeps exactly one task per (container ID, application, probe) given.
    pub fn track<'a>(&mut self, probed: impl IntoIterator<Item = (&'a str, &'a str, &'a Health)>) {
        let mut wanted = HashMap::new();
        for (id, application, health) in probed {
            wanted.insert(id.to_string(), (application.to_string(), health.clone()));
        }
        self.tasks.retain(|id, task| {
            let keep = wanted.contains_key(id);
            if !keep {
                task.abort();
            }
            keep
        });
        let mut verdicts = self.verdicts.lock();
        verdicts.retain(|id, _| wanted.contains_key(id));
        for (id, (application, health)) in wanted {
            if self.tasks.contains_key(&id) {
                continue;
            }
            verdicts.insert(id.clone(), Verdict::Starting);
            let task = tokio::spawn(probe_loop(
                self.runtime.clone(),
                id.clone(),
                application,
                health,
                self.verdicts.clone(),
                self.changed.clone(),
            ));
            self.tasks.insert(id, task);
        }
    }

    pub fn verdict(&self, container_id: &str) -> Option<Verdict> {
        self.verdicts.lock().get(container_id).cloned()
    }
}

async fn probe_loop(
    runtime: Arc<dyn Runtime>,
    id: String,
    application: String,
    health: Health,
    verdicts: Arc<Mutex<HashMap<String, Verdict>>>,
    changed: mpsc::Sender<()>,
) {
    let interval = health.interval.map_or(DEFAULT_INTERVAL, |d| d.as_std());
    let timeout = health.timeout.map_or(DEFAULT_TIMEOUT, |d| d.as_std());
    let threshold = health.failure_threshold.unwrap_or(DEFAULT_THRESHOLD);
    let mut failures = 0;
    // The first check comes soon, so a new instance turns healthy quickly.
    let mut wait = Duration::from_millis(500).min(interval);
    loop {
        tokio::time::sleep(wait).await;
        wait = interval;
        let outcome = match tokio::time::timeout(timeout, runtime.probe(&id, &application, &health)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(format!("{err:#}")),
            Err(_) => Err(format!(
                "no answer within {}",
                outpost_api::quantity::Duration(timeout.as_millis() as u64)
            )),
        };
        let next = match outcome {
            Ok(()) => {
                failures = 0;
                Some(Verdict::Healthy)
            }
            Err(why) => {
                failures += 1;
                (failures >= threshold).then_some(Verdict::Unhealthy(why))
            }
        };
        if let Some(next) = next {
            let mut verdicts = verdicts.lock();
            let previous = verdicts.insert(id.clone(), next.clone());
            drop(verdicts);
            if previous.as_ref() != Some(&next) {
                tracing::info!(container = %id, verdict = ?next, "health changed");
                let _ = changed.try_send(());
            }
        }
    }
}
