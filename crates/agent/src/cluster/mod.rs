//! The hosts of a site keep its work running when one of them is lost,
//! with the uplink up or down.
//!
//! Every agent started with `--site-listen` pings the site's hosts whose
//! names sort after its own (`SiteCluster/Ping`, over the same mutual TLS
//! as `crate::peers`) every `PING_EVERY`, so each pair talks once per
//! round, and each ping and answer carries the site's placement **ledger**: the
//! instances the site moved off lost hosts, at an epoch. A host takes the
//! ledger of a peer whose epoch is newer (at equal epochs, the one its
//! lowest-named author wrote), so a host that returns learns what moved
//! away from it within one ping and stops its copies.
//!
//! The instances an agent runs are those of the desired state it received
//! with the ledger's moves applied (`effective`); the reconciler, the image
//! stager and the streams endpoint all work from that.
//!
//! Who may move what:
//! - a 1-host site has nowhere to move to;
//! - a 2-host site: the survivor moves the lost host's `move` services to
//!   itself after `hostLossAfter` without a ping; a `singleton` only when
//!   the control plane, as witness, grants it (`witnessed`). A host that
//!   lost its peer and cannot reach the witness stops its own singletons
//!   only if that peer last said it could (it may be granted them); when
//!   the uplink went first, they keep running where they ran. `stay` and
//!   per-host services never move;
//! - 3 or more hosts: the hosts run Raft (`raft`, with openraft); its
//!   leader decides, with a majority behind each decision, so a
//!   `singleton` moves too. The ledger is Raft's state machine: it
//!   changes only when an entry is committed, and the pings spread only
//!   committed ledgers.
//!
//! A move ends when the control plane's desired state places the
//! instance neither on the host it was moved from nor, pinned (the control
//! plane took the move into its placement), where it went; or when the
//! lost host has been heard again for `hostLossAfter`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use outpost_api::manifest::Failover;
use outpost_api::workload::{Moved, SiteState, apply_moves, reschedule};
use outpost_proto::v1::site_cluster_client::SiteClusterClient;
use outpost_proto::v1::site_cluster_server::{SiteCluster, SiteClusterServer};
use outpost_proto::v1::{ClusterPing, RaftBytes, SignedState, StateRequest};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqlitePool;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::peers::PeerTls;

pub mod raft;
pub mod state;
mod witness;

/// How often a host pings each of its peers.
pub const PING_EVERY: Duration = Duration::from_secs(2);
/// How long one ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer may take to hand over a desired state.
const STATE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest ledger a peer may send.
const MAX_LEDGER_BYTES: usize = 1 << 20;

/// The site's placement decisions, replicated by ping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Grows with every decision; a newer epoch fences older decisions.
    pub epoch: u64,
    /// The host that made the decision at `epoch`.
    pub author: String,
    /// The instances moved, each off a host in `lost`.
    pub moved: Vec<Moved>,
    /// The hosts the site lost, and when (UNIX ms): the reason for a move.
    pub lost: BTreeMap<String, u64>,
}

impl Ledger {
    /// The next ledger, written by `author`: the moves `keep` holds, and
    /// the lost hosts those moves still name.
    fn keeping(&self, author: &str, keep: impl Fn(&Moved) -> bool) -> Ledger {
        let moved: Vec<Moved> = self.moved.iter().filter(|m| keep(m)).cloned().collect();
        let lost = self
            .lost
            .iter()
            .filter(|(host, _)| moved.iter().any(|m| &m.from == *host))
            .map(|(host, at)| (host.clone(), *at))
            .collect();
        Ledger {
            epoch: self.epoch + 1,
            author: author.to_string(),
            moved,
            lost,
        }
    }

    /// Whether `other` is the newer ledger: a greater epoch, or the same
    /// epoch written by a lower-named host (two hosts cut apart may each
    /// decide at the same epoch; one of them must win everywhere).
    fn is_older_than(&self, other: &Ledger) -> bool {
        (other.epoch, std::cmp::Reverse(&other.author)) > (self.epoch, std::cmp::Reverse(&self.author))
    }
}

/// This host's view of its site.
pub struct Cluster {
    site: String,
    host: String,
    tls: Arc<PeerTls>,
    pool: SqlitePool,
    ledger: Mutex<Ledger>,
    /// Held while a ledger is taken and saved, so that agent.db never ends
    /// with an older ledger than the one in memory.
    write: tokio::sync::Mutex<()>,
    /// When each peer was last heard (a ping either way).
    heard: Mutex<HashMap<String, Instant>>,
    /// Since when each host the ledger holds lost has been heard again.
    back: Mutex<HashMap<String, Instant>>,
    /// When this agent started: nobody is lost before `hostLossAfter` has
    /// passed since.
    started: Instant,
    changed: watch::Sender<u64>,
    /// The newest desired state, passed between the hosts.
    pub shared: state::Shared,
    /// The site's hosts (this one too) and their site addresses, as the
    /// control plane last said.
    addresses: Mutex<BTreeMap<String, String>>,
    /// This host's Raft, which decides at sites of three or more hosts.
    raft: OnceLock<raft::Raft>,
    /// The control plane, while this host has a session with it: the
    /// witness of a 2-host site's singleton moves.
    witness: Mutex<Option<Channel>>,
    /// When this host last reached the witness, and the site's
    /// `hostLossAfter`.
    uplink_ok: Mutex<Option<Instant>>,
    after: Mutex<Duration>,
    /// Whether each peer said, in its last ping, that it had reached the
    /// control plane within `hostLossAfter`.
    peer_uplink: Mutex<HashMap<String, bool>>,
    /// This host stopped its singletons: it lost its peer and either the
    /// witness granted them to the peer, or it cannot reach the witness
    /// while its peer could.
    fenced: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// Opens the ledger kept in `agent.db` (table `site_ledger`).
    pub async fn open(
        site: &str,
        host: &str,
        tls: Arc<PeerTls>,
        pool: SqlitePool,
        shared: state::Shared,
    ) -> Result<Arc<Cluster>> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS site_ledger (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 ledger TEXT NOT NULL)",
        )
        .execute(&pool)
        .await
        .context("preparing the site ledger")?;
        let held: Option<(String,)> = sqlx::query_as("SELECT ledger FROM site_ledger WHERE id = 1")
            .fetch_optional(&pool)
            .await?;
        let ledger = match held {
            Some((json,)) => serde_json::from_str(&json).context("an unreadable site ledger in agent.db")?,
            None => Ledger::default(),
        };
        let cluster = Arc::new(Cluster {
            site: site.to_string(),
            host: host.to_string(),
            tls,
            pool: pool.clone(),
            ledger: Mutex::new(ledger),
            write: tokio::sync::Mutex::new(()),
            heard: Mutex::new(HashMap::new()),
            back: Mutex::new(HashMap::new()),
            started: Instant::now(),
            changed: watch::channel(0).0,
            shared,
            addresses: Mutex::new(BTreeMap::new()),
            raft: OnceLock::new(),
            witness: Mutex::new(None),
            peer_uplink: Mutex::new(HashMap::new()),
            uplink_ok: Mutex::new(None),
            after: Mutex::new(Duration::from_millis(
                outpost_api::limits::DEFAULT_HOST_LOSS_AFTER_MS,
            )),
            fenced: std::sync::atomic::AtomicBool::new(false),
        });
        let started = raft::start(&cluster, pool).await?;
        let _ = cluster.raft.set(started);
        Ok(cluster)
    }

    /// Stops this host's Raft (before agent.db closes).
    pub async fn stop(&self) {
        if let Some(raft) = self.raft.get()
            && let Err(err) = raft.shutdown().await
        {
            tracing::warn!(%err, "stopping the site's Raft");
        }
    }

    /// Takes the site's hosts and addresses from the desired state.
    fn know(&self, state: &SiteState) {
        let hosts: BTreeMap<String, String> = state
            .peers
            .iter()
            .map(|p| (p.host.clone(), p.address.clone()))
            .collect();
        *self.addresses.lock() = hosts;
        *self.after.lock() = state.host_loss_after();
    }

    /// Whether this host's site decides with Raft (three hosts or more).
    fn in_group(&self) -> bool {
        self.addresses.lock().len() >= 3
    }

    /// This host's role in the site's Raft group, when the site has one.
    pub fn role(&self) -> Option<&'static str> {
        if !self.in_group() {
            return None;
        }
        self.raft.get().and_then(raft::role)
    }

    /// A connection to the site's host `host`, at the address the control
    /// plane gave, within `PING_TIMEOUT` (a host that is gone may drop the
    /// attempt unanswered).
    async fn connect(&self, host: &str) -> Result<Channel> {
        let address = self
            .addresses
            .lock()
            .get(host)
            .cloned()
            .with_context(|| format!("no address for host {host}"))?;
        let tls = self.tls.client(&self.site, host)?;
        tokio::time::timeout(
            PING_TIMEOUT,
            crate::tls::peer_channel(&format!("https://{address}"), host, tls),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no connection to {host} within {PING_TIMEOUT:?}"))?
    }

    /// Makes `next` the site's ledger: through Raft at a site of three or
    /// more (only its leader writes), at once at a 2-host site.
    async fn commit(&self, next: Ledger) -> Result<()> {
        if !self.in_group() {
            self.adopt(next).await?;
            return Ok(());
        }
        if let Some(raft) = self.raft.get().filter(|raft| raft::leads(raft)) {
            raft.client_write(next).await?;
        }
        Ok(())
    }

    pub fn ledger(&self) -> Ledger {
        self.ledger.lock().clone()
    }

    /// Takes `ledger` if it is newer than the one held, and keeps it.
    async fn adopt(&self, ledger: Ledger) -> Result<bool> {
        let _one_at_a_time = self.write.lock().await;
        {
            let mut held = self.ledger.lock();
            if !held.is_older_than(&ledger) {
                return Ok(false);
            }
            *held = ledger.clone();
        }
        self.save(&ledger).await?;
        tracing::info!(epoch = ledger.epoch, author = %ledger.author, moved = ledger.moved.len(), "took the site's newer placement ledger");
        self.changed.send_modify(|n| *n += 1);
        Ok(true)
    }

    async fn save(&self, ledger: &Ledger) -> Result<()> {
        sqlx::query(
            "INSERT INTO site_ledger (id, ledger) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET ledger = ?1",
        )
        .bind(serde_json::to_string(ledger)?)
        .execute(&self.pool)
        .await
        .context("saving the site ledger")?;
        Ok(())
    }

    fn heard_from(&self, host: &str, uplink: bool) {
        self.heard.lock().insert(host.to_string(), Instant::now());
        self.peer_uplink.lock().insert(host.to_string(), uplink);
        if self.ledger.lock().lost.contains_key(host) {
            self.back
                .lock()
                .entry(host.to_string())
                .or_insert_with(Instant::now);
        }
    }

    /// The peers not heard for `after` (never heard counts from this
    /// agent's start).
    fn unheard(&self, peers: &[String], after: Duration) -> BTreeSet<String> {
        let heard = self.heard.lock();
        peers
            .iter()
            .filter(|host| heard.get(*host).copied().unwrap_or(self.started).elapsed() >= after)
            .cloned()
            .collect()
    }

    /// The peers heard within `after`, for the status report.
    pub fn heard_within(&self, after: Duration) -> BTreeSet<String> {
        self.heard
            .lock()
            .iter()
            .filter(|(_, at)| at.elapsed() < after)
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// The site's decision about lost hosts, made here when this host
    /// may: a 2-host site's survivor, or the Raft leader of a larger site
    /// (see the module's notes).
    async fn decide(&self, received: &SiteState) -> Result<()> {
        let hosts: BTreeMap<String, BTreeMap<String, String>> = received
            .peers
            .iter()
            .map(|p| (p.host.clone(), p.labels.clone()))
            .collect();
        if hosts.len() < 2 || !hosts.contains_key(&self.host) {
            return Ok(());
        }
        // At three hosts or more, only the Raft leader decides.
        let group = match self.raft.get() {
            Some(raft) if hosts.len() >= 3 => {
                let names: BTreeSet<String> = hosts.keys().cloned().collect();
                raft::govern(raft, &self.host, &names).await?;
                if !raft::leads(raft) {
                    return Ok(());
                }
                Some(raft)
            }
            None if hosts.len() >= 3 => return Ok(()),
            _ => None,
        };
        let others: Vec<String> = hosts.keys().filter(|h| **h != self.host).cloned().collect();
        let after = received.host_loss_after();
        let lost = self.unheard(&others, after);
        if let Some(raft) = group {
            if lost.is_empty() && self.back.lock().is_empty() {
                return Ok(());
            }
            // A new leader decides from every committed decision.
            raft.ensure_linearizable().await?;
        }
        let group = group.is_some();
        self.hand_back(&lost, after).await?;
        let current = self.ledger();
        let mut effective = received.clone();
        apply_moves(&mut effective, &current.moved);
        let majority = match others.as_slice() {
            [peer] if !group => self.witnessed(&effective, peer, lost.contains(peer), after).await,
            _ => group,
        };
        let decided = reschedule(&effective, &hosts, &lost, majority);
        if decided.moved.is_empty() {
            return Ok(());
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut next = Ledger {
            epoch: current.epoch + 1,
            author: self.host.clone(),
            moved: current.moved.clone(),
            lost: current.lost.clone(),
        };
        for host in &lost {
            next.lost.entry(host.clone()).or_insert(now_ms);
        }
        for moved in &decided.moved {
            tracing::warn!(instance = %moved.instance, from = %moved.from, to = %moved.to, epoch = next.epoch, "host lost: moving its instance");
        }
        for (instance, why) in &decided.stranded {
            tracing::info!(%instance, why, "host lost: its instance stays");
        }
        next.moved.extend(decided.moved);
        self.commit(next).await
    }

    /// Gives a lost host back its instances once it has been heard again
    /// for `after`: it runs what the control plane placed there.
    async fn hand_back(&self, lost: &BTreeSet<String>, after: Duration) -> Result<()> {
        let returned: BTreeSet<String> = {
            let mut back = self.back.lock();
            back.retain(|host, _| !lost.contains(host));
            back.iter()
                .filter(|(_, since)| since.elapsed() >= after)
                .map(|(host, _)| host.clone())
                .collect()
        };
        if returned.is_empty() {
            return Ok(());
        }
        let next = self.ledger().keeping(&self.host, |m| !returned.contains(&m.from));
        for host in &returned {
            tracing::info!(%host, epoch = next.epoch, "a lost host is back: it runs its own instances again");
            self.back.lock().remove(host);
        }
        self.commit(next).await
    }

    /// Drops the moves the control plane's desired state has overtaken (it
    /// places the instance neither on the host it moved from nor, pinned,
    /// where the site moved it), and the lost hosts no move names any more.
    async fn prune(&self, received: &SiteState) -> Result<()> {
        let held = self.ledger();
        let pruned = held.keeping(&self.host, |m| {
            received.workloads.iter().any(|w| {
                w.key() == m.workload
                    && w.instances.iter().any(|i| {
                        i.name == m.instance
                            && (i.host == m.from
                                || (i.host == m.to && i.moved_from.as_ref() == Some(&m.from)))
                    })
            })
        });
        if pruned.moved == held.moved {
            return Ok(());
        }
        tracing::info!(
            epoch = pruned.epoch,
            "the control plane placed moved instances anew; the site hands them back"
        );
        self.commit(pruned).await
    }

    async fn ping(
        &self,
        channels: &mut HashMap<String, (String, Channel)>,
        host: &str,
        address: &str,
    ) -> Result<()> {
        let stale = channels.get(host).is_none_or(|(at, _)| at != address);
        if stale {
            let channel = self.connect(host).await?;
            channels.insert(host.to_string(), (address.to_string(), channel));
        }
        let channel = channels[host].1.clone();
        let reply = tokio::time::timeout(
            PING_TIMEOUT,
            SiteClusterClient::new(channel).ping(self.ping_message()?),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {PING_TIMEOUT:?}"))?
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
        let theirs = read_ledger(&reply.ledger)?;
        self.pinged_by(host, &reply, theirs).await
    }

    /// What this host says in a ping or its answer: its ledger, whether it
    /// has an uplink, and the revision of the signed state it holds.
    fn ping_message(&self) -> Result<ClusterPing> {
        Ok(ClusterPing {
            ledger: serde_json::to_vec(&self.ledger())?,
            uplink: self.has_uplink(),
            revision: self.shared.revision(),
        })
    }

    /// What `host` said in a ping or its answer (its ledger read): it
    /// lives, and its ledger is taken if newer.
    async fn pinged_by(&self, host: &str, ping: &ClusterPing, theirs: Ledger) -> Result<()> {
        self.heard_from(host, ping.uplink);
        self.shared.peer_holds(host, ping.revision);
        self.adopt(theirs).await?;
        Ok(())
    }
}

impl Cluster {
    /// Asks `host`, which said it holds a newer desired state, for it.
    async fn fetch_state(&self, host: &str) -> Result<()> {
        let channel = self.connect(host).await?;
        let offered = tokio::time::timeout(
            STATE_TIMEOUT,
            SiteClusterClient::new(channel)
                .max_decoding_message_size(state::MAX_STATE_BYTES)
                .state(StateRequest {}),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no state within {STATE_TIMEOUT:?}"))?
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
        self.shared.take(host, offered).await?;
        Ok(())
    }

    /// One round of pings before the agent runs anything, so that a host
    /// that returns learns what moved away from it before it starts its
    /// old instances again. Each silent peer costs at most `PING_TIMEOUT`.
    pub async fn catch_up(&self, state: &SiteState) {
        self.know(state);
        let mut channels = HashMap::new();
        for peer in state.peers.iter().filter(|p| p.host != self.host) {
            if let Err(err) = self.ping(&mut channels, &peer.host, &peer.address).await {
                tracing::info!(peer = %peer.host, err = format!("{err:#}"), "a peer did not answer at start");
            }
        }
        if let Some(peer) = self.shared.wanted()
            && let Err(err) = self.fetch_state(&peer).await
        {
            tracing::warn!(%peer, err = format!("{err:#}"), "taking a newer desired state from a peer at start");
        }
    }

    /// What this host reports of the cluster: whom it heard within
    /// `after`, and its ledger.
    pub fn status(&self, after: Duration) -> outpost_api::wire::ClusterStatus {
        let ledger = self.ledger();
        let mut hears: Vec<String> = self.heard_within(after).into_iter().collect();
        hears.sort();
        outpost_api::wire::ClusterStatus {
            host: self.host.clone(),
            role: self.role().map(str::to_string),
            hears,
            epoch: ledger.epoch,
            author: ledger.author,
            moved: ledger.moved,
            lost: ledger
                .lost
                .into_iter()
                .map(|(host, ms)| {
                    let at = jiff::Timestamp::from_millisecond(ms as i64)
                        .map(|t| t.to_string())
                        .unwrap_or_default();
                    (host, at)
                })
                .collect(),
        }
    }

    /// `state` with the site's moves applied, less this host's singletons
    /// while it is fenced: what this host runs.
    pub fn effective(&self, state: &SiteState) -> SiteState {
        let mut state = state.clone();
        apply_moves(&mut state, &self.ledger().moved);
        if self.fenced.load(std::sync::atomic::Ordering::SeqCst) {
            for workload in &mut state.workloads {
                if workload.failover == Failover::Singleton {
                    workload.instances.retain(|i| i.host != self.host);
                }
            }
        }
        state
    }
}

fn read_ledger(bytes: &[u8]) -> Result<Ledger> {
    anyhow::ensure!(
        bytes.len() <= MAX_LEDGER_BYTES,
        "a ledger of {} bytes is too large",
        bytes.len()
    );
    serde_json::from_slice(bytes).context("an unreadable ledger")
}

/// Pings the site's other hosts and keeps `effective` (the desired state
/// `received` from the control plane, with the ledger's moves applied)
/// until `shutdown`. Without a cluster (no `--site-listen`), `effective`
/// is what was received.
pub async fn run(
    cluster: Option<Arc<Cluster>>,
    mut received: watch::Receiver<(u64, SiteState)>,
    effective: Arc<watch::Sender<(u64, SiteState)>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Without a cluster, a channel that never changes (its sender lives here).
    let (_no_cluster, idle) = watch::channel(0);
    let mut changes = cluster.as_ref().map_or(idle, |c| c.changed.subscribe());
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut channels: HashMap<String, (String, Channel)> = HashMap::new();
    let mut role = None;
    loop {
        let state = received.borrow_and_update().clone();
        if let Some(cluster) = &cluster {
            cluster.know(&state.1);
            if let Err(err) = cluster.prune(&state.1).await {
                tracing::warn!(err = format!("{err:#}"), "pruning the site ledger");
            }
        }
        let next = match &cluster {
            Some(cluster) => (state.0, cluster.effective(&state.1)),
            None => state.clone(),
        };
        effective.send_if_modified(|held| {
            let changed = *held != next;
            if changed {
                *held = next;
            }
            changed
        });
        tokio::select! {
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                if let Some(cluster) = &cluster {
                    cluster.stop().await;
                }
                return;
            }
            changed = received.changed() => if changed.is_err() { return },
            _ = changes.changed() => {}
            _ = tick.tick(), if cluster.is_some() => {
                let Some(cluster) = &cluster else { continue };
                // Each pair of hosts is pinged once: by its lower-named
                // host. The answer tells the asker that the peer lives, and
                // the ping tells the peer; both carry the ledger.
                let peers: Vec<(String, String)> = state
                    .1
                    .peers
                    .iter()
                    .filter(|p| p.host > cluster.host)
                    .map(|p| (p.host.clone(), p.address.clone()))
                    .collect();
                for (host, address) in &peers {
                    if let Err(err) = cluster.ping(&mut channels, host, address).await {
                        tracing::debug!(peer = %host, err = format!("{err:#}"), "a peer did not answer");
                        channels.remove(host);
                    }
                }
                if let Some(peer) = cluster.shared.wanted()
                    && let Err(err) = cluster.fetch_state(&peer).await
                {
                    tracing::warn!(%peer, err = format!("{err:#}"), "taking a newer desired state from a peer");
                }
                if let Err(err) = cluster.decide(&state.1).await {
                    tracing::warn!(err = format!("{err:#}"), "deciding about lost hosts");
                }
                let now = cluster.role();
                if now != role {
                    tracing::info!(role = now.unwrap_or("none"), "this host's role in the site's Raft group");
                    role = now;
                }
            }
        }
    }
}

/// The `SiteCluster` service for `crate::peers::serve`.
pub fn service(
    cluster: Arc<Cluster>,
    desired: watch::Receiver<(u64, SiteState)>,
) -> SiteClusterServer<Service> {
    SiteClusterServer::new(Service { cluster, desired })
}

pub struct Service {
    cluster: Arc<Cluster>,
    desired: watch::Receiver<(u64, SiteState)>,
}

impl Service {
    /// The host of this site that sent `request`, by its certificate.
    fn peer<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let keys = self.cluster.tls.keys();
        crate::peers::peer_of(
            request,
            (&self.desired, keys),
            &self.cluster.site,
            &self.cluster.host,
        )
        .map(|n| n.host)
        .ok_or_else(|| Status::permission_denied("not a peer of this site"))
    }

    /// Hands a peer's Raft request to this host's Raft, and its result back.
    async fn raft<Q, A, F>(&self, request: Request<RaftBytes>, call: F) -> Result<Response<RaftBytes>, Status>
    where
        Q: serde::de::DeserializeOwned,
        A: Serialize,
        F: AsyncFnOnce(&raft::Raft, Q) -> A,
    {
        self.peer(&request)?;
        let raft = self
            .cluster
            .raft
            .get()
            .ok_or_else(|| Status::unavailable("this host's Raft is not running"))?;
        let asked: Q = raft::read_request(&request.into_inner().json)
            .map_err(|err| Status::invalid_argument(format!("{err:#}")))?;
        let answer = call(raft, asked).await;
        let json = serde_json::to_vec(&answer).map_err(|err| Status::internal(err.to_string()))?;
        Ok(Response::new(RaftBytes { json }))
    }
}

#[tonic::async_trait]
impl SiteCluster for Service {
    async fn raft_vote(&self, request: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        self.raft(request, async |raft, asked| raft.vote(asked).await)
            .await
    }

    async fn raft_append(&self, request: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        self.raft(request, async |raft, asked| raft.append_entries(asked).await)
            .await
    }

    async fn raft_snapshot(&self, request: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        self.raft(request, async |raft, asked| raft.install_snapshot(asked).await)
            .await
    }

    async fn state(&self, request: Request<StateRequest>) -> Result<Response<SignedState>, Status> {
        self.peer(&request)?;
        self.cluster
            .shared
            .offer()
            .map(Response::new)
            .ok_or_else(|| Status::not_found("this host holds no signed state"))
    }

    async fn ping(&self, request: Request<ClusterPing>) -> Result<Response<ClusterPing>, Status> {
        let host = self.peer(&request)?;
        let theirs = read_ledger(&request.get_ref().ledger)
            .map_err(|err| Status::invalid_argument(format!("{err:#}")))?;
        self.cluster
            .pinged_by(&host, request.get_ref(), theirs)
            .await
            .map_err(|err| Status::unavailable(format!("{err:#}")))?;
        let ours = self
            .cluster
            .ping_message()
            .map_err(|err| Status::internal(err.to_string()))?;
        Ok(Response::new(ours))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_epoch_wins_and_a_tie_goes_to_the_lower_named_author() {
        let ledger = |epoch, author: &str| Ledger {
            epoch,
            author: author.into(),
            ..Default::default()
        };
        assert!(ledger(1, "h2").is_older_than(&ledger(2, "h9")));
        assert!(!ledger(2, "h1").is_older_than(&ledger(1, "h1")));
        assert!(ledger(3, "h2").is_older_than(&ledger(3, "h1")));
        assert!(!ledger(3, "h1").is_older_than(&ledger(3, "h2")));
        assert!(!ledger(3, "h1").is_older_than(&ledger(3, "h1")));
    }
}
