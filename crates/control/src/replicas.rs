//! Replicas: control planes that share one PostgreSQL database
//! (`--store`). Each serves the REST API and the agent gateway; a host's
//! session lives on whichever replica it reached. What they share, and
//! how:
//!
//! - the CAs, sealed in the store with the key-encryption key every
//!   replica is given (`pull_authority`, `publish_authority`);
//! - the changes one replica makes that the others' sessions must see,
//!   announced with `NOTIFY` and acted on by `follow`: woken sessions, a
//!   stale rollout forgotten, the deny list and the CAs read again;
//! - one leader at a time (`lead`, a PostgreSQL advisory lock held on a
//!   connection of its own), which steps rollouts, prunes retention and
//!   rotates site keys on schedule; when it dies its lock goes with its
//!   connection and another replica takes over within seconds;
//! - which replica holds each host's session (`share_presence`): kept in
//!   memory, written in batches as sessions begin and end, read by the
//!   others when a replica's sessions changed.
//!
//! A control plane on SQLite is the only replica: it leads, and none of
//! this runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgListener};
use tokio::sync::watch;

use crate::StoreUrl;
use crate::fleet::Fleet;
use crate::pki::{self, Pki};
use crate::revocation::Revocations;
use crate::secrets::Secrets;
use crate::store::{Announcement, CHANGES_CHANNEL, Change, Storage};

/// How often the leader's connection is checked, and a follower tries
/// for the lock.
const LEAD_CHECK: Duration = Duration::from_secs(1);

/// The advisory lock of the leader: "leader" in ASCII.
const LEADER_LOCK: i64 = 0x6c65_6164_6572;

/// How often a replica writes down its sessions and reads the others'.
const PRESENCE_EVERY: Duration = Duration::from_secs(2);

/// A replica not heard for this long holds no session any more.
const REPLICA_GONE_AFTER: Duration = Duration::from_secs(10);

/// The leader forgets a replica not heard for this long.
const REPLICA_FORGOTTEN_AFTER: Duration = Duration::from_secs(120);

/// What the store's CA files are to those in a directory.
#[derive(Debug, PartialEq, Eq)]
pub enum Pulled {
    /// The store holds none yet (the first replica to start makes them).
    Nothing,
    /// The directory already held them.
    Same,
    /// They were written into the directory.
    Written,
}

/// Writes the CA files stored by another replica into `dir`.
pub async fn pull_authority(store: &dyn Storage, secrets: &Secrets, dir: &Path) -> Result<Pulled> {
    let Some(stored) = store.authority().await? else {
        return Ok(Pulled::Nothing);
    };
    let files = secrets.open_authority(&stored)?;
    if pki::read_files(dir)? == files {
        return Ok(Pulled::Same);
    }
    pki::write_files(dir, &files)?;
    Ok(Pulled::Written)
}

/// Stores this replica's CA files as the next generation and tells the
/// others (after a rotation or a retirement); nothing on SQLite.
pub async fn publish_authority(store: &dyn Storage, secrets: &Secrets, pki: &Pki) -> Result<()> {
    if !store.shared() {
        return Ok(());
    }
    let generation = store.authority().await?.map_or(0, |stored| stored.generation) + 1;
    let sealed = secrets.seal_authority(&pki::read_files(pki.dir())?, generation)?;
    store.save_authority(&sealed).await?;
    store.announce(&Change::Authority).await;
    Ok(())
}

/// At start on a shared store that held no CA (`pull_authority` found
/// `Nothing`): the first replica stores its own. Two replicas that start
/// together on an empty store both make a CA; one stores it, and the
/// other takes that one.
pub async fn share_authority(store: &dyn Storage, secrets: &Secrets, pki: &Pki) -> Result<()> {
    let sealed = secrets.seal_authority(&pki::read_files(pki.dir())?, 1)?;
    if !store.save_authority(&sealed).await? {
        pull_authority(store, secrets, pki.dir()).await?;
        pki.reload()?;
    }
    Ok(())
}

/// What `follow` acts on.
pub struct Followed {
    pub store: Arc<dyn Storage>,
    pub fleet: Arc<Fleet>,
    pub revocations: Arc<Revocations>,
    pub pki: Arc<Pki>,
    pub secrets: Arc<Secrets>,
}

/// Listens for the other replicas' changes until `shutdown`. Whenever the
/// listening connection is (re)made, notifications may have been missed:
/// everything is read again once.
pub async fn follow(url: StoreUrl, followed: Followed, mut shutdown: watch::Receiver<bool>) {
    let me = followed.store.replica().to_string();
    loop {
        let listener = async {
            let mut listener = PgListener::connect(url.as_str()).await?;
            listener.listen(CHANGES_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match connect(
            listener,
            "listening for the other replicas' changes",
            &mut shutdown,
        )
        .await
        {
            Connected::Ready(listener) => listener,
            Connected::Retry => continue,
            Connected::Stop => return,
        };
        for change in [
            Change::AllSites,
            Change::Rollouts,
            Change::Revocations,
            Change::Authority,
        ] {
            act(&followed, change).await;
        }
        loop {
            let notification = tokio::select! {
                notification = listener.try_recv() => notification,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let notification = match notification {
                Ok(Some(notification)) => notification,
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(%err, "listening for the other replicas' changes; reconnecting");
                    break;
                }
            };
            match serde_json::from_str::<Announcement>(notification.payload()) {
                Ok(announcement) if announcement.origin == me => {}
                Ok(announcement) => act(&followed, announcement.change).await,
                Err(err) => tracing::warn!(%err, "an unreadable change from another replica; ignored"),
            }
        }
    }
}

/// Acts on one change another replica made.
async fn act(followed: &Followed, change: Change) {
    let done = match &change {
        Change::Sites { revisions } => {
            followed.fleet.wake(revisions);
            Ok(())
        }
        Change::AllSites => followed
            .store
            .site_revisions()
            .await
            .map(|revisions| followed.fleet.wake(&revisions))
            .map_err(anyhow::Error::from),
        Change::Rollouts => {
            followed.fleet.forget_rollouts();
            Ok(())
        }
        Change::Revocations => followed
            .revocations
            .reload(followed.store.as_ref())
            .await
            .map_err(anyhow::Error::from),
        Change::Authority => {
            match pull_authority(followed.store.as_ref(), &followed.secrets, followed.pki.dir()).await {
                Ok(Pulled::Written) => followed.pki.reload(),
                Ok(Pulled::Same | Pulled::Nothing) => Ok(()),
                Err(err) => Err(err),
            }
        }
    };
    if let Err(err) = done {
        tracing::warn!(
            err = format!("{err:#}"),
            ?change,
            "acting on another replica's change failed"
        );
    }
}

/// Holds the leadership while this replica can: `leader` says whether it
/// does. The lock lives on a connection of its own, so it goes with the
/// process (or its connection) and another replica takes it within
/// `LEAD_CHECK`.
pub async fn lead(url: StoreUrl, leader: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let connection = PgConnection::connect(url.as_str());
        let mut connection = match connect(
            connection,
            "connecting to take part in choosing a leader",
            &mut shutdown,
        )
        .await
        {
            Connected::Ready(connection) => connection,
            Connected::Retry => continue,
            Connected::Stop => return,
        };
        loop {
            let leading = *leader.borrow();
            let checked = if leading {
                sqlx::query("SELECT 1")
                    .execute(&mut connection)
                    .await
                    .map(|_| true)
            } else {
                sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                    .bind(LEADER_LOCK)
                    .fetch_one(&mut connection)
                    .await
            };
            match checked {
                Ok(now) if now != leading => {
                    tracing::info!(
                        "this replica leads now: it steps rollouts, prunes retention and rotates site keys"
                    );
                    leader.send_replace(now);
                }
                Ok(_) => {}
                Err(err) => {
                    if leading {
                        tracing::warn!(%err, "lost the connection that holds the leadership; another replica may lead now");
                        leader.send_replace(false);
                    }
                    break;
                }
            }
            if stopped_within(&mut shutdown, LEAD_CHECK).await {
                let _ = connection.close().await;
                leader.send_replace(false);
                return;
            }
        }
    }
}

/// What came of one attempt to connect.
enum Connected<T> {
    Ready(T),
    /// It failed (logged) and `LEAD_CHECK` has passed: try again.
    Retry,
    /// Shutdown came first.
    Stop,
}

/// Connects unless `shutdown` comes first; a failure is logged as `what`
/// and followed by a pause.
async fn connect<T>(
    connecting: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    what: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Connected<T> {
    let connected = tokio::select! {
        connected = connecting => connected,
        _ = shutdown.wait_for(|stop| *stop) => return Connected::Stop,
    };
    match connected {
        Ok(connection) => Connected::Ready(connection),
        Err(err) => {
            tracing::warn!(%err, "{what}; trying again");
            if stopped_within(shutdown, LEAD_CHECK).await {
                Connected::Stop
            } else {
                Connected::Retry
            }
        }
    }
}

/// Waits `pause`; true if `shutdown` came first.
async fn stopped_within(shutdown: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(pause) => false,
        _ = shutdown.wait_for(|stop| *stop) => true,
    }
}

/// Writes down, every `PRESENCE_EVERY`, that this replica lives and the
/// sessions that began and ended since, and reads the sessions of the
/// replicas whose sessions changed. At shutdown it forgets itself, so its
/// hosts show offline at once rather than after `REPLICA_GONE_AFTER`.
pub async fn share_presence(
    store: Arc<dyn Storage>,
    fleet: Arc<Fleet>,
    url: String,
    leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut written: HashSet<(String, String)> = HashSet::new();
    let mut read: HashMap<String, i64> = HashMap::new();
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        let now = crate::fleet::now_ms() as i64;
        let held = fleet.presence.held();
        let began: Vec<_> = held.difference(&written).cloned().collect();
        let ended: Vec<_> = written.difference(&held).cloned().collect();
        match store.replica_alive(&url, now, &began, &ended).await {
            Ok(()) => written = held,
            Err(err) => tracing::warn!(
                err = err.detail(),
                "writing down this replica's sessions; trying again"
            ),
        }
        let replicas = match store.replicas().await {
            Ok(replicas) => replicas,
            Err(err) => {
                tracing::warn!(
                    err = err.detail(),
                    "reading the other replicas' sessions; trying again"
                );
                continue;
            }
        };
        let mut alive = BTreeMap::new();
        for replica in replicas.into_iter().filter(|r| r.id != store.replica()) {
            let silent = Duration::from_millis(now.saturating_sub(replica.seen_at).max(0) as u64);
            if silent > REPLICA_FORGOTTEN_AFTER
                && *leader.borrow()
                && let Err(err) = store.forget_replica(&replica.id).await
            {
                tracing::warn!(err = err.detail(), replica = %replica.id, "forgetting a stopped replica");
            }
            if silent > REPLICA_GONE_AFTER {
                continue;
            }
            if read.get(&replica.id) != Some(&replica.generation) {
                match store.replica_sessions(&replica.id).await {
                    Ok(sessions) => {
                        fleet
                            .presence
                            .held_by(&replica.id, &replica.url, sessions.into_iter().collect());
                        read.insert(replica.id.clone(), replica.generation);
                    }
                    Err(err) => {
                        tracing::warn!(err = err.detail(), replica = %replica.id, "reading a replica's sessions");
                        continue;
                    }
                }
            }
            alive.insert(replica.id, ());
        }
        read.retain(|id, _| alive.contains_key(id));
        fleet.presence.keep_replicas(|id| alive.contains_key(id));
    }
    if let Err(err) = store.forget_replica(store.replica()).await {
        tracing::warn!(err = err.detail(), "removing this replica's sessions at shutdown");
    }
}
