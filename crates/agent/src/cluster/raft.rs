//! Raft among the hosts of a site of three or more, with openraft: it
//! elects the leader that decides about lost hosts, and replicates the
//! placement ledger those decisions write. Each log entry carries a whole
//! ledger; the state machine is the ledger `Cluster` holds, so the log,
//! the vote and the snapshot live in `agent.db` beside it.
//!
//! Three voters (five from five hosts), the rest learners: the leader
//! keeps the membership so, preferring the voters it has. The site's
//! lowest-named host forms the group once the site has three hosts.
//! Requests travel over the `SiteCluster` service, on the peers' mutual
//! TLS, as JSON.

// openraft's traits return its (large) error types by value.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Debug, Display};
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Context, Result};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, BasicNode, ChangeMembers, Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftNetwork,
    RaftNetworkFactory, RaftSnapshotBuilder, ServerState, Snapshot, SnapshotMeta, SnapshotPolicy,
    StorageIOError, StoredMembership, Vote,
};
use outpost_proto::v1::RaftBytes;
use outpost_proto::v1::site_cluster_client::SiteClusterClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqlitePool;
use tonic::transport::Channel;

use super::{Cluster, Ledger};

openraft::declare_raft_types!(
    /// A site's Raft: each entry carries the whole placement ledger.
    pub Site: D = Ledger, R = ()
);

pub type Raft = openraft::Raft<Site>;
type StorageError = openraft::StorageError<u64>;

/// Heartbeats and elections: a leader that stops is replaced within
/// seconds, well inside the smallest `hostLossAfter` (5 s), and an idle
/// site exchanges one small request per follower each second.
const HEARTBEAT_MS: u64 = 1000;
const ELECTION_MS: (u64, u64) = (3000, 6000);
/// The largest request or answer a peer may send.
const MAX_RAFT_BYTES: usize = 4 << 20;

/// A host's node id: stable, from its name.
pub fn node_id(host: &str) -> u64 {
    let digest = Sha256::digest(host.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The voters a site of `hosts` should have: those it has that are still
/// hosts of the site, topped up by name, three of them (five from five
/// hosts).
pub fn voters(hosts: &BTreeSet<String>, current: &BTreeSet<String>) -> BTreeSet<String> {
    let wanted = if hosts.len() >= 5 { 5 } else { 3 };
    let kept = hosts.iter().filter(|h| current.contains(*h));
    let others = hosts.iter().filter(|h| !current.contains(*h));
    kept.chain(others).take(wanted).cloned().collect()
}

/// Whether this host leads the group.
pub fn leads(raft: &Raft) -> bool {
    raft.metrics().borrow().state == ServerState::Leader
}

/// This host's place in the group, as `get hosts` shows it.
pub fn role(raft: &Raft) -> Option<&'static str> {
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    if metrics.state == ServerState::Leader {
        Some("leader")
    } else if membership.voter_ids().any(|id| id == metrics.id) {
        Some("voter")
    } else if membership.learner_ids().any(|id| id == metrics.id) {
        Some("learner")
    } else {
        None
    }
}

/// Starts this host's Raft, with its log and vote in `pool`.
pub async fn start(cluster: &Arc<Cluster>, pool: SqlitePool) -> Result<Raft> {
    for table in [
        "CREATE TABLE IF NOT EXISTS raft_log (idx INTEGER PRIMARY KEY, entry TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS raft_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ] {
        sqlx::query(table)
            .execute(&pool)
            .await
            .context("preparing the site's Raft log")?;
    }
    let config = openraft::Config {
        cluster_name: cluster.site.clone(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_MS.0,
        election_timeout_max: ELECTION_MS.1,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(200),
        max_in_snapshot_log_to_keep: 50,
        ..Default::default()
    }
    .validate()
    .context("the site's Raft settings")?;
    let store = Store { pool };
    let machine = Machine {
        cluster: Arc::downgrade(cluster),
        store: store.clone(),
    };
    let network = Peers {
        cluster: Arc::downgrade(cluster),
    };
    openraft::Raft::new(node_id(&cluster.host), Arc::new(config), network, store, machine)
        .await
        .context("starting the site's Raft")
}

/// Keeps the group's membership to the site's `hosts`: the lowest-named
/// host forms it, the leader adds, promotes and removes.
pub async fn govern(raft: &Raft, me: &str, hosts: &BTreeSet<String>) -> Result<()> {
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let named: BTreeMap<u64, String> = hosts.iter().map(|h| (node_id(h), h.clone())).collect();
    let node = |host: &String| BasicNode { addr: host.clone() };
    if membership.nodes().next().is_none() {
        if hosts.len() >= 3 && hosts.first().is_some_and(|h| h == me) {
            let voters: BTreeMap<u64, BasicNode> = voters(hosts, &BTreeSet::new())
                .iter()
                .map(|h| (node_id(h), node(h)))
                .collect();
            tracing::info!(voters = ?voters.values().map(|n| &n.addr).collect::<Vec<_>>(), "forming the site's Raft group");
            match raft.initialize(voters).await {
                // The host that formed the group stands first, so the
                // group has a leader before any election timeout.
                Ok(()) => raft.trigger().elect().await?,
                Err(err) => tracing::debug!(%err, "the site's Raft group was formed already"),
            }
        }
        return Ok(());
    }
    if !leads(raft) {
        return Ok(());
    }
    let members: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
    for (id, host) in named.iter().filter(|(id, _)| !members.contains(id)) {
        tracing::info!(%host, "adding a host to the site's Raft group as a learner");
        raft.add_learner(*id, node(host), false).await?;
    }
    let gone: BTreeSet<u64> = members
        .iter()
        .filter(|id| !named.contains_key(id))
        .copied()
        .collect();
    let current: BTreeSet<String> = membership
        .voter_ids()
        .filter_map(|id| named.get(&id).cloned())
        .collect();
    let wanted = voters(hosts, &current);
    if wanted != current {
        tracing::info!(voters = ?wanted, "changing the site's Raft voters");
        let ids: BTreeSet<u64> = wanted.iter().map(|h| node_id(h)).collect();
        raft.change_membership(ChangeMembers::ReplaceAllVoters(ids), true)
            .await?;
    } else if !gone.is_empty() {
        raft.change_membership(ChangeMembers::RemoveNodes(gone), false)
            .await?;
    }
    Ok(())
}

fn failed(verb: impl FnOnce(AnyError) -> StorageIOError<u64>, err: impl Display) -> StorageError {
    verb(AnyError::error(err.to_string())).into()
}

/// The Raft log and vote, in `agent.db`.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT value FROM raft_meta WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some((json,)) => Some(serde_json::from_str(&json)?),
            None => None,
        })
    }

    /// Keeps the current snapshot (one at a time).
    async fn keep_snapshot(&self, meta: &SnapshotMeta<u64, BasicNode>, ledger: Ledger) -> Result<()> {
        let kept = Kept {
            meta: meta.clone(),
            ledger,
        };
        self.put("snapshot", &kept).await
    }

    async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        sqlx::query(
            "INSERT INTO raft_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
        )
        .bind(key)
        .bind(serde_json::to_string(value)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl RaftLogReader<Site> for Store {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Site>>, StorageError> {
        let from = match range.start_bound() {
            Bound::Included(n) => *n,
            Bound::Excluded(n) => n + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(n) => n + 1,
            Bound::Excluded(n) => *n,
            Bound::Unbounded => i64::MAX as u64,
        };
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT entry FROM raft_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")
                .bind(from as i64)
                .bind(to.min(i64::MAX as u64) as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(|err| failed(StorageIOError::read_logs, err))?;
        rows.iter()
            .map(|(json,)| serde_json::from_str(json).map_err(|err| failed(StorageIOError::read_logs, err)))
            .collect()
    }
}

impl RaftLogStorage<Site> for Store {
    type LogReader = Store;

    async fn get_log_state(&mut self) -> Result<LogState<Site>, StorageError> {
        let purged: Option<LogId<u64>> = self
            .get("purged")
            .await
            .map_err(|err| failed(StorageIOError::read_logs, err))?;
        let last: Option<(String,)> = sqlx::query_as("SELECT entry FROM raft_log ORDER BY idx DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(|err| failed(StorageIOError::read_logs, err))?;
        let last = match last {
            Some((json,)) => {
                let entry: Entry<Site> =
                    serde_json::from_str(&json).map_err(|err| failed(StorageIOError::read_logs, err))?;
                Some(entry.log_id)
            }
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Store {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.put("vote", vote)
            .await
            .map_err(|err| failed(StorageIOError::write_vote, err))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.get("vote")
            .await
            .map_err(|err| failed(StorageIOError::read_vote, err))
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        self.put("committed", &committed)
            .await
            .map_err(|err| failed(StorageIOError::write, err))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        Ok(self
            .get::<Option<LogId<u64>>>("committed")
            .await
            .map_err(|err| failed(StorageIOError::read, err))?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<Site>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<Site>> + Send,
        I::IntoIter: Send,
    {
        let write = async {
            let mut tx = self.pool.begin().await?;
            for entry in entries {
                sqlx::query("INSERT OR REPLACE INTO raft_log (idx, entry) VALUES (?1, ?2)")
                    .bind(entry.log_id.index as i64)
                    .bind(serde_json::to_string(&entry)?)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            anyhow::Ok(())
        };
        match write.await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(err) => {
                callback.log_io_completed(Err(std::io::Error::other(err.to_string())));
                Err(failed(StorageIOError::write_logs, err))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM raft_log WHERE idx >= ?1")
            .bind(log_id.index as i64)
            .execute(&self.pool)
            .await
            .map_err(|err| failed(StorageIOError::write_logs, err))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        self.put("purged", &log_id)
            .await
            .map_err(|err| failed(StorageIOError::write_logs, err))?;
        sqlx::query("DELETE FROM raft_log WHERE idx <= ?1")
            .bind(log_id.index as i64)
            .execute(&self.pool)
            .await
            .map_err(|err| failed(StorageIOError::write_logs, err))?;
        Ok(())
    }
}

/// The state machine: the ledger `Cluster` holds (it saves it), with the
/// last applied entry and membership kept beside the log.
#[derive(Clone)]
pub struct Machine {
    cluster: Weak<Cluster>,
    store: Store,
}

/// A snapshot as kept in `raft_meta`.
#[derive(Serialize, serde::Deserialize)]
struct Kept {
    meta: SnapshotMeta<u64, BasicNode>,
    ledger: Ledger,
}

impl Machine {
    async fn take(&self, ledger: Ledger) -> Result<()> {
        let cluster = self.cluster.upgrade().context("the agent is stopping")?;
        cluster.adopt(ledger).await?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<Site> for Machine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Site>, StorageError> {
        let write = |err| failed(StorageIOError::write_state_machine, err);
        let cluster = self
            .cluster
            .upgrade()
            .ok_or_else(|| write("the agent is stopping".to_string()))?;
        let (applied, membership) = self.applied_state().await?;
        let ledger = cluster.ledger();
        let meta = SnapshotMeta {
            snapshot_id: format!("{}-{}", applied.map_or(0, |id| id.index), ledger.epoch),
            last_log_id: applied,
            last_membership: membership,
        };
        let data = serde_json::to_vec(&ledger).map_err(|err| write(err.to_string()))?;
        self.store
            .keep_snapshot(&meta, ledger)
            .await
            .map_err(|err| write(err.to_string()))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<Site> for Machine {
    type SnapshotBuilder = Machine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError> {
        let read = |err: anyhow::Error| failed(StorageIOError::read_state_machine, err);
        let applied = self
            .store
            .get::<Option<LogId<u64>>>("applied")
            .await
            .map_err(read)?
            .flatten();
        let membership = self
            .store
            .get("membership")
            .await
            .map_err(read)?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry<Site>> + Send,
        I::IntoIter: Send,
    {
        let mut applied = Vec::new();
        for entry in entries {
            let fail = |err: anyhow::Error| failed(|e| StorageIOError::apply(entry.log_id, e), err);
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(ledger) => self.take(ledger.clone()).await.map_err(fail)?,
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(entry.log_id), membership.clone());
                    self.store.put("membership", &stored).await.map_err(fail)?;
                }
            }
            self.store
                .put("applied", &Some(entry.log_id))
                .await
                .map_err(fail)?;
            applied.push(());
        }
        Ok(applied)
    }

    async fn get_snapshot_builder(&mut self) -> Machine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let write = |err: anyhow::Error| failed(StorageIOError::write_state_machine, err);
        let ledger: Ledger = serde_json::from_slice(snapshot.get_ref()).map_err(|err| write(err.into()))?;
        self.take(ledger.clone()).await.map_err(write)?;
        self.store
            .put("applied", &meta.last_log_id)
            .await
            .map_err(write)?;
        self.store
            .put("membership", &meta.last_membership)
            .await
            .map_err(write)?;
        self.store.keep_snapshot(meta, ledger).await.map_err(write)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Site>>, StorageError> {
        let read = |err: anyhow::Error| failed(StorageIOError::read_state_machine, err);
        let Some(kept) = self.store.get::<Kept>("snapshot").await.map_err(read)? else {
            return Ok(None);
        };
        let data = serde_json::to_vec(&kept.ledger).map_err(|err| read(err.into()))?;
        Ok(Some(Snapshot {
            meta: kept.meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Connections to the site's other hosts, by the addresses the control
/// plane gave (`Cluster::addresses`).
pub struct Peers {
    cluster: Weak<Cluster>,
}

impl RaftNetworkFactory<Site> for Peers {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            cluster: self.cluster.clone(),
            target,
            host: node.addr.clone(),
            channel: None,
        }
    }
}

pub struct Peer {
    cluster: Weak<Cluster>,
    target: u64,
    /// `BasicNode::addr` holds the host's name; its address is looked up
    /// at each connection, so a host that moves is found again.
    host: String,
    channel: Option<Channel>,
}

#[derive(Clone, Copy)]
enum Call {
    Vote,
    Append,
    Snapshot,
}

impl Peer {
    async fn call<Q: Serialize, A: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &mut self,
        call: Call,
        request: &Q,
        option: RPCOption,
    ) -> Result<A, RPCError<u64, BasicNode, RaftError<u64, E>>> {
        let unreachable = |err: String| RPCError::Unreachable(Unreachable::from(AnyError::error(err)));
        let json = serde_json::to_vec(request).map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        let ttl = option.hard_ttl().max(Duration::from_millis(500));
        let channel = match &self.channel {
            Some(channel) => channel.clone(),
            None => {
                let cluster = self
                    .cluster
                    .upgrade()
                    .ok_or_else(|| unreachable("the agent is stopping".into()))?;
                let channel = tokio::time::timeout(ttl, cluster.connect(&self.host))
                    .await
                    .map_err(|_| unreachable(format!("no connection to {} within {ttl:?}", self.host)))?
                    .map_err(|err| unreachable(format!("{err:#}")))?;
                self.channel = Some(channel.clone());
                channel
            }
        };
        let mut client = SiteClusterClient::new(channel).max_decoding_message_size(MAX_RAFT_BYTES);
        let body = RaftBytes { json };
        let sent = async {
            match call {
                Call::Vote => client.raft_vote(body).await,
                Call::Append => client.raft_append(body).await,
                Call::Snapshot => client.raft_snapshot(body).await,
            }
        };
        let answer = match tokio::time::timeout(ttl, sent).await {
            Ok(Ok(answer)) => answer.into_inner().json,
            Ok(Err(status)) => {
                self.channel = None;
                return Err(unreachable(format!("{}: {}", self.host, status.message())));
            }
            Err(_) => {
                self.channel = None;
                return Err(unreachable(format!(
                    "{} did not answer within {ttl:?}",
                    self.host
                )));
            }
        };
        let result: Result<A, RaftError<u64, E>> =
            serde_json::from_slice(&answer).map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        result.map_err(|err| RPCError::RemoteError(RemoteError::new(self.target, err)))
    }
}

impl RaftNetwork<Site> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Site>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(Call::Append, &rpc, option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Site>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>>
    {
        self.call(Call::Snapshot, &rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(Call::Vote, &rpc, option).await
    }
}

/// Reads a peer's request, bounded.
pub fn read_request<Q: DeserializeOwned>(json: &[u8]) -> Result<Q> {
    anyhow::ensure!(
        json.len() <= MAX_RAFT_BYTES,
        "a Raft request of {} bytes is too large",
        json.len()
    );
    serde_json::from_slice(json).context("an unreadable Raft request")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(hosts: &[&str]) -> BTreeSet<String> {
        hosts.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn three_voters_from_three_hosts_five_from_five_and_the_voters_it_has_stay() {
        assert_eq!(
            voters(&set(&["a", "b", "c", "d"]), &set(&[])),
            set(&["a", "b", "c"])
        );
        assert_eq!(
            voters(&set(&["a", "b", "c", "d", "e", "f"]), &set(&[])),
            set(&["a", "b", "c", "d", "e"])
        );
        // A new host that sorts first does not unseat a voter.
        assert_eq!(
            voters(&set(&["a", "b", "c", "d"]), &set(&["b", "c", "d"])),
            set(&["b", "c", "d"])
        );
        // A voter that left the site is replaced.
        assert_eq!(
            voters(&set(&["a", "c", "d"]), &set(&["b", "c", "d"])),
            set(&["a", "c", "d"])
        );
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id("h1"), node_id("h1"));
        assert_ne!(node_id("h1"), node_id("h2"));
    }
}
