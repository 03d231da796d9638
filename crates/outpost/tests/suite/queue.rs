//! The agent's outbound queue on disk (the real SQLite queue and session)
//! against a real control plane process, through outages: scenario e (10,000
//! events queued while the control plane is down arrive exactly once, even
//! though it is SIGKILLed while they are being delivered) and scenario f
//! (a full queue drops its oldest records and the control plane shows how
//! many). The simulated runtime stands in for Docker: only the queue and
//! the link are under test here.

// Test-only code: a panic here is how a test reports that its setup failed.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use crate::common::{ControlPlane, eventually, unique_site};
use outpost_agent::outbox::{DiskOutbox, Outbox};
use outpost_agent::store::LocalStore;
use outpost_api::telemetry::{Event, EventKind, Record};

fn event(n: usize) -> Record {
    Record::Event(Event {
        // A fixed time, so that every record has the same size.
        at: "2026-11-21T10:00:00.000Z".into(),
        kind: EventKind::Exited,
        application: "till".into(),
        service: "pos".into(),
        instance: format!("pos-{n:05}"),
        message: format!("event {n:05}"),
        exit_code: Some(1),
    })
}

/// A host enrolled into `site`, with its queue on disk, not connected yet.
struct Host {
    runtime: tokio::runtime::Runtime,
    outbox: Arc<DiskOutbox>,
    credentials: Option<outpost_agent::identity::Credentials>,
    stop: tokio::sync::watch::Sender<bool>,
    dir: tempfile::TempDir,
}

impl Host {
    fn enroll(control: &ControlPlane, site: &str, queue_limit: u64) -> Host {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let token = control.join_token(site);
        let (credentials, outbox) = runtime.block_on(async {
            let credentials = outpost_sim::agent::enroll(dir.path(), &control.agent_url, &token, "h1")
                .await
                .unwrap();
            let store = LocalStore::open(&dir.path().join("agent.db")).await.unwrap();
            let outbox = DiskOutbox::open(store.pool(), queue_limit).await.unwrap();
            (credentials, Arc::new(outbox))
        });
        Host {
            runtime,
            outbox,
            credentials: Some(credentials),
            stop: tokio::sync::watch::channel(false).0,
            dir,
        }
    }

    fn queue(&self, from: usize, to: usize) {
        self.runtime.block_on(async {
            let all: Vec<Record> = (from..to).map(event).collect();
            for chunk in all.chunks(1000) {
                self.outbox.push(chunk).await.unwrap();
            }
        });
    }

    /// Starts the agent's session (and its simulated runtime).
    fn connect(&mut self) {
        let credentials = self.credentials.take().unwrap();
        let outbox: Arc<dyn Outbox> = self.outbox.clone();
        let shutdown = self.stop.subscribe();
        let _guard = self.runtime.enter();
        let secrets = self.dir.path().join("secrets");
        outpost_sim::agent::SimSite::start(
            credentials,
            secrets,
            Duration::from_millis(10),
            Default::default(),
            outbox,
            None,
            shutdown,
        );
    }

    fn queued(&self) -> bool {
        self.runtime
            .block_on(self.outbox.pending(0, 1, 1 << 20))
            .unwrap()
            .is_some()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The instances of a site's stored events, oldest first.
fn stored(control: &ControlPlane, site: &str) -> Vec<String> {
    let response = control.http().send(
        "GET",
        &format!("/api/v1/events?site={site}&limit=10000"),
        Some(&control.token()),
        None,
    );
    assert_eq!(response.status, 200, "{}", response.body);
    response.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["instance"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ten_thousand_events_queued_in_an_outage_arrive_exactly_once() {
    let mut control = ControlPlane::start();
    let site = unique_site("queue");
    control.apply(&crate::common::site(&site, "")).success();
    let mut host = Host::enroll(&control, &site, outpost_agent::outbox::DEFAULT_LIMIT);

    // The outage: 10,000 events are queued while the control plane is down.
    assert!(control.stop());
    host.queue(0, 10_000);
    control.restart();
    host.connect();

    // The control plane dies (SIGKILL) while the events are being delivered:
    // a batch it stored may not have been acknowledged, and is sent again.
    let before = eventually(Duration::from_secs(30), "the first events stored", || {
        Some(stored(&control, &site).len()).filter(|n| *n > 0)
    });
    control.kill();
    eprintln!("{before} of 10000 events stored when the control plane was killed");
    control.restart();

    eventually(Duration::from_secs(120), "the queue drained", || {
        (!host.queued()).then_some(())
    });
    let instances = stored(&control, &site);
    let expected: Vec<String> = (0..10_000).map(|n| format!("pos-{n:05}")).collect();
    assert_eq!(instances.len(), 10_000, "each event exactly once");
    assert_eq!(instances, expected, "in the order they were queued");
}

#[test]
fn a_full_queue_drops_the_oldest_and_the_control_plane_shows_how_many() {
    let mut control = ControlPlane::start();
    let site = unique_site("full");
    control.apply(&crate::common::site(&site, "")).success();
    // Room for exactly 100 of these events.
    let size = serde_json::to_string(&event(0)).unwrap().len() as u64;
    let mut host = Host::enroll(&control, &site, 100 * size);

    assert!(control.stop());
    host.queue(0, 1_000);
    control.restart();
    host.connect();
    eventually(Duration::from_secs(30), "the queue drained", || {
        (!host.queued()).then_some(())
    });
    let expected: Vec<String> = (900..1_000).map(|n| format!("pos-{n:05}")).collect();
    assert_eq!(stored(&control, &site), expected, "the newest 100 arrive");
    let hosts = control.cli(&["get", "hosts", "--site", &site, "-o", "json"]);
    let hosts: serde_json::Value = serde_json::from_str(hosts.success()).unwrap();
    assert_eq!(hosts["items"][0]["dropped"], 900, "{hosts}");
}
