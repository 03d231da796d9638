//! Presence: which hosts are connected now (a live session, or a poll
//! recent enough), here or at another replica, and where to ask a
//! connected host for its logs. Status and the gateway read it. Nothing
//! here touches the store: what sessions hear (heartbeats, bytes) waits
//! here until the control plane writes it down in one batch
//! (`crate::chores::write_heard`), and `crate::replicas` writes this replica's
//! sessions down in batches and tells it the others'.

use std::collections::{HashMap, HashSet};
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
    /// The hosts other replicas hold sessions of, by replica.
    remote: Mutex<HashMap<String, Remote>>,
    /// What sessions heard that is not written down yet.
    unwritten: Mutex<Heard>,
}

/// What sessions heard since it was last written down: the hosts that
/// sent a heartbeat, and the bytes of each host's sessions, received and
/// sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Heard {
    pub seen: HashSet<(String, String)>,
    pub traffic: HashMap<(String, String), (u64, u64)>,
}

impl Heard {
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.traffic.is_empty()
    }

    /// Adds what `later` heard (a write that failed is tried again with
    /// what came since).
    fn absorb(&mut self, later: Heard) {
        self.seen.extend(later.seen);
        for (host, (received, sent)) in later.traffic {
            let total = self.traffic.entry(host).or_default();
            total.0 += received;
            total.1 += sent;
        }
    }
}

/// Another replica's API (its URL) and the hosts it holds sessions of.
type Remote = (String, HashSet<(String, String)>);

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

    /// A host's heartbeat: heard now, and seen, which is written down with
    /// the next batch.
    pub fn heartbeat(&self, site: &str, host: &str) {
        self.heard(site, host);
        self.unwritten
            .lock()
            .seen
            .insert((site.to_string(), host.to_string()));
    }

    /// Bytes a host's session carried, added to its totals with the next
    /// batch.
    pub fn count_traffic(&self, site: &str, host: &str, received: u64, sent: u64) {
        let mut unwritten = self.unwritten.lock();
        let total = unwritten
            .traffic
            .entry((site.to_string(), host.to_string()))
            .or_default();
        total.0 += received;
        total.1 += sent;
    }

    /// What was heard since the last call, to write down.
    pub fn take_heard(&self) -> Heard {
        std::mem::take(&mut *self.unwritten.lock())
    }

    /// Puts back what could not be written down.
    pub fn keep_heard(&self, heard: Heard) {
        let mut unwritten = self.unwritten.lock();
        let later = std::mem::take(&mut *unwritten);
        *unwritten = heard;
        unwritten.absorb(later);
    }

    /// A host in polling mode was heard from: it counts as online for `for`.
    pub fn polled(&self, site: &str, host: &str, r#for: std::time::Duration) {
        self.heard(site, host);
        let mut polled = self.polled.lock();
        let now = std::time::Instant::now();
        polled.retain(|_, until| *until > now);
        polled.insert((site.to_string(), host.to_string()), now + r#for);
    }

    /// How many hosts have a session now, or polled recently enough, here
    /// or at another replica.
    pub fn online_hosts(&self) -> usize {
        let now = std::time::Instant::now();
        let polled = self.polled.lock();
        let here = self.online.lock().len() + polled.values().filter(|until| **until > now).count();
        here + self
            .remote
            .lock()
            .values()
            .map(|(_, hosts)| hosts.len())
            .sum::<usize>()
    }

    pub fn is_online(&self, site: &str, host: &str) -> bool {
        let key = (site.to_string(), host.to_string());
        if self.online.lock().contains_key(&key) {
            return true;
        }
        if self
            .polled
            .lock()
            .get(&key)
            .is_some_and(|until| *until > std::time::Instant::now())
        {
            return true;
        }
        self.remote.lock().values().any(|(_, hosts)| hosts.contains(&key))
    }

    /// The hosts this replica holds a session of, or that polled it
    /// recently enough.
    pub fn held(&self) -> HashSet<(String, String)> {
        let now = std::time::Instant::now();
        let mut held: HashSet<_> = self.online.lock().keys().cloned().collect();
        held.extend(
            self.polled
                .lock()
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(key, _)| key.clone()),
        );
        held
    }

    /// The hosts another replica holds, as it last wrote them down.
    pub fn held_by(&self, replica: &str, url: &str, hosts: HashSet<(String, String)>) {
        self.remote
            .lock()
            .insert(replica.to_string(), (url.to_string(), hosts));
    }

    /// Forgets the replicas that stopped (or fell silent).
    pub fn keep_replicas(&self, alive: impl Fn(&str) -> bool) {
        self.remote.lock().retain(|replica, _| alive(replica));
    }

    /// The API of the other replica that holds a host's session, if one does.
    pub fn holder(&self, site: &str, host: &str) -> Option<String> {
        let key = (site.to_string(), host.to_string());
        self.remote
            .lock()
            .values()
            .find(|(_, hosts)| hosts.contains(&key))
            .map(|(url, _)| url.clone())
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

    #[test]
    fn hosts_another_replica_holds_count_as_online_until_it_is_forgotten() {
        let presence = Arc::new(Presence::default());
        let (_here, _) = presence.connect("shop-1", "till");
        let key = |site: &str, host: &str| (site.to_string(), host.to_string());
        presence.held_by(
            "b",
            "https://10.0.0.2:7800",
            [key("shop-2", "till"), key("shop-3", "till")].into(),
        );
        assert!(presence.is_online("shop-2", "till"));
        assert_eq!(presence.online_hosts(), 3);
        // What this replica writes down is its own hosts only.
        assert_eq!(presence.held(), [key("shop-1", "till")].into());
        assert_eq!(
            presence.holder("shop-2", "till").as_deref(),
            Some("https://10.0.0.2:7800")
        );
        assert_eq!(presence.holder("shop-1", "till"), None);
        presence.keep_replicas(|replica| replica != "b");
        assert!(!presence.is_online("shop-2", "till"));
        assert_eq!(presence.online_hosts(), 1);
    }

    #[test]
    fn what_was_heard_is_taken_once_and_what_failed_comes_back_with_what_came_since() {
        let presence = Presence::default();
        presence.heartbeat("shop-1", "till");
        presence.count_traffic("shop-1", "till", 100, 10);
        presence.count_traffic("shop-1", "till", 1, 1);
        let heard = presence.take_heard();
        assert_eq!(heard.traffic[&("shop-1".into(), "till".into())], (101, 11));
        assert!(presence.take_heard().is_empty());
        presence.count_traffic("shop-1", "till", 5, 5);
        presence.keep_heard(heard);
        let again = presence.take_heard();
        assert_eq!(again.traffic[&("shop-1".into(), "till".into())], (106, 16));
        assert!(again.seen.contains(&("shop-1".into(), "till".into())));
    }
}
