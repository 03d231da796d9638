//! Presence: which hosts are connected now (a live session, or a poll
//! recent enough), and where to ask a connected host for its logs. Status
//! and the gateway read it; nothing here touches the store.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

#[derive(Default)]
pub struct Presence {
    /// Hosts with a session, and how many: after a partition the new
    /// session may start before the control plane gives up on the old one.
    online: Mutex<HashMap<(String, String), usize>>,
    /// Where to ask each connected host for its logs: the newest session's
    /// channel, with a number that tells sessions apart.
    live: Mutex<HashMap<(String, String), LiveSender>>,
    next_session: std::sync::atomic::AtomicU64,
    /// Hosts in polling mode, and until when each counts as online.
    polled: Mutex<HashMap<(String, String), std::time::Instant>>,
    /// What each host of a site cluster last reported of it (kept in
    /// memory: hosts report again when they connect).
    clusters: Mutex<HashMap<(String, String), outpost_api::wire::ClusterStatus>>,
    /// When each host was last heard (a session message, a poll, a
    /// question to the witness), and when its newest session began.
    heard: Mutex<HashMap<(String, String), std::time::Instant>>,
    sessions: Mutex<HashMap<(String, String), (u64, std::time::Instant)>>,
}

/// Keeps a host marked online while its session lives.
pub struct Connected {
    presence: Arc<Presence>,
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
        let mut live = self.presence.live.lock();
        if live
            .get(&self.key)
            .is_some_and(|(session, _)| *session == self.session)
        {
            live.remove(&self.key);
        }
        drop(live);
        let mut sessions = self.presence.sessions.lock();
        if sessions
            .get(&self.key)
            .is_some_and(|(session, _)| *session == self.session)
        {
            sessions.remove(&self.key);
        }
        drop(sessions);
        let mut online = self.presence.online.lock();
        if let Some(count) = online.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                online.remove(&self.key);
            }
        }
    }
}

impl Presence {
    /// Keeps what a host reports of its site cluster.
    pub fn record_cluster(&self, site: &str, host: &str, status: outpost_api::wire::ClusterStatus) {
        self.clusters
            .lock()
            .insert((site.to_string(), host.to_string()), status);
    }

    /// What the hosts of every site cluster last reported, by site, each
    /// site's hosts by name.
    pub fn clusters(&self) -> HashMap<String, Vec<outpost_api::wire::ClusterStatus>> {
        let mut out: HashMap<String, Vec<_>> = HashMap::new();
        for ((site, _), status) in self.clusters.lock().iter() {
            out.entry(site.clone()).or_default().push(status.clone());
        }
        for hosts in out.values_mut() {
            hosts.sort_by(|a, b| a.host.cmp(&b.host));
        }
        out
    }

    /// Marks a host online until every guard it was given is dropped; the
    /// receiver gets the requests for its logs.
    pub fn connect(self: &Arc<Self>, site: &str, host: &str) -> (Connected, mpsc::Receiver<LiveLogs>) {
        let key = (site.to_string(), host.to_string());
        let session = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sender, requests) = mpsc::channel(4);
        self.live.lock().insert(key.clone(), (session, sender));
        let now = std::time::Instant::now();
        self.sessions.lock().insert(key.clone(), (session, now));
        self.heard.lock().insert(key.clone(), now);
        *self.online.lock().entry(key.clone()).or_default() += 1;
        let connected = Connected {
            presence: self.clone(),
            key,
            session,
        };
        (connected, requests)
    }

    /// Where to ask a connected host for its logs (`None`: not connected).
    pub fn live_logs(&self, site: &str, host: &str) -> Option<mpsc::Sender<LiveLogs>> {
        let live = self.live.lock();
        live.get(&(site.to_string(), host.to_string()))
            .map(|(_, sender)| sender.clone())
    }

    /// A host was heard from (its session carried a message, or it asked
    /// the witness).
    pub fn heard(&self, site: &str, host: &str) {
        self.heard
            .lock()
            .insert((site.to_string(), host.to_string()), std::time::Instant::now());
    }

    /// When a host was last heard, and when its live session began.
    pub fn contact(
        &self,
        site: &str,
        host: &str,
    ) -> (Option<std::time::Instant>, Option<std::time::Instant>) {
        let key = (site.to_string(), host.to_string());
        let heard = self.heard.lock().get(&key).copied();
        let session = self.sessions.lock().get(&key).map(|(_, began)| *began);
        (heard, session)
    }

    /// A host in polling mode was heard from: it counts as online for `for`.
    pub fn polled(&self, site: &str, host: &str, r#for: std::time::Duration) {
        self.heard(site, host);
        let mut polled = self.polled.lock();
        let now = std::time::Instant::now();
        polled.retain(|_, until| *until > now);
        polled.insert((site.to_string(), host.to_string()), now + r#for);
    }

    /// How many hosts have a session now, or polled recently enough.
    pub fn online_hosts(&self) -> usize {
        let now = std::time::Instant::now();
        let polled = self.polled.lock();
        self.online.lock().len() + polled.values().filter(|until| **until > now).count()
    }

    pub fn is_online(&self, site: &str, host: &str) -> bool {
        let key = (site.to_string(), host.to_string());
        if self.online.lock().contains_key(&key) {
            return true;
        }
        let polled = self.polled.lock();
        polled
            .get(&key)
            .is_some_and(|until| *until > std::time::Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_stays_online_while_any_of_its_sessions_lives() {
        let presence = Arc::new(Presence::default());
        // After a partition: the new session starts, then the old one ends.
        let old = presence.connect("shop-1", "till");
        let new = presence.connect("shop-1", "till");
        drop(old);
        assert!(presence.is_online("shop-1", "till"));
        assert_eq!(presence.online_hosts(), 1);
        // Requests for logs go to the newest session.
        let (new, mut requests) = new;
        let request = LiveLogs {
            application: "pos".into(),
            service: String::new(),
            since_unix: 0,
            tail: 10,
            reply: oneshot::channel().0,
        };
        presence
            .live_logs("shop-1", "till")
            .unwrap()
            .try_send(request)
            .unwrap();
        assert!(requests.try_recv().is_ok());
        drop(new);
        assert!(!presence.is_online("shop-1", "till"));
        assert!(presence.live_logs("shop-1", "till").is_none());
        assert_eq!(presence.online_hosts(), 0);
    }
}
