//! What replicas of the control plane sharing one PostgreSQL database
//! keep in it beside the objects (migration 0018): the CA, sealed; which
//! replica holds each host's session; the lock every writer of rollouts
//! and site states takes; and the changes they announce to each other
//! with `NOTIFY`. A control plane on SQLite is the only replica there is:
//! it announces nothing and its fleet lock is its own mutex.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::{Any, Transaction};

use super::StoreError;
use super::engine::{Engine, SqlStore};

/// The channel replicas announce changes on.
pub const CHANGES_CHANNEL: &str = "outpost_changes";

/// The advisory lock of the fleet's writers (rollouts and site states):
/// "fleet" in ASCII.
const FLEET_LOCK: i64 = 0x0066_6c65_6574;

/// A change one replica made that the others act on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "camelCase")]
pub enum Change {
    /// These sites' states were stored at these revisions: their sessions
    /// are woken.
    Sites { revisions: Vec<(String, i64)> },
    /// Too many sites changed to name: every site's revision is read.
    AllSites,
    /// Rollouts were written: the ones held in memory are stale.
    Rollouts,
    /// The deny list changed (a block, an unblock, a revoked certificate).
    Revocations,
    /// The CAs changed (a rotation or a retirement).
    Authority,
}

/// The largest `Change::Sites` sent; past it, `Change::AllSites`
/// (PostgreSQL refuses a payload of 8,000 bytes or more).
const MAX_SITES_NAMED: usize = 50;

impl Change {
    /// The sites whose states were stored, as the change to announce.
    pub fn sites(revisions: Vec<(String, i64)>) -> Change {
        if revisions.len() > MAX_SITES_NAMED {
            Change::AllSites
        } else {
            Change::Sites { revisions }
        }
    }
}

/// A change as it travels: with the replica that made it, which ignores it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Announcement {
    pub origin: String,
    #[serde(flatten)]
    pub change: Change,
}

/// The CA files, sealed with the key-encryption key, and how many times
/// they were replaced.
#[derive(Debug, Clone)]
pub struct SealedAuthority {
    pub key_id: String,
    pub sealed: Vec<u8>,
    pub generation: i64,
}

/// A replica as it last wrote itself down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRecord {
    pub id: String,
    /// Where its REST API answers.
    pub url: String,
    /// Unix milliseconds.
    pub seen_at: i64,
    /// Raised whenever its sessions change.
    pub generation: i64,
}

/// Held while rollouts and site states are written: on PostgreSQL a
/// transaction holding the fleet's advisory lock (released when dropped),
/// with the rollouts' counter read under it. On SQLite there is no other
/// writer: nothing is held and nothing read.
pub struct FleetLock {
    _held: Option<Transaction<'static, Any>>,
    pub rollouts: Option<i64>,
}

#[async_trait]
pub trait ReplicaStore: Send + Sync + 'static {
    /// This process's name among the replicas (random at each start).
    fn replica(&self) -> &str;

    /// Whether other replicas may share this store (PostgreSQL).
    fn shared(&self) -> bool;

    /// The stored CA, if any.
    async fn authority(&self) -> Result<Option<SealedAuthority>, StoreError>;

    /// Stores the CA unless one of its generation or later is stored;
    /// true when it was stored.
    async fn save_authority(&self, authority: &SealedAuthority) -> Result<bool, StoreError>;

    /// Tells the other replicas (nothing on SQLite). A failure is logged:
    /// the others catch up when their listener reconnects.
    async fn announce(&self, change: &Change);

    /// Waits for the fleet lock; see [`FleetLock`].
    async fn lock_fleet(&self) -> Result<FleetLock, StoreError>;

    /// Every site's stored revision.
    async fn site_revisions(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Writes this replica down as alive at `now_ms`, with the sessions
    /// that began and ended since it last did.
    async fn replica_alive(
        &self,
        url: &str,
        now_ms: i64,
        began: &[(String, String)],
        ended: &[(String, String)],
    ) -> Result<(), StoreError>;

    /// Every replica written down.
    async fn replicas(&self) -> Result<Vec<ReplicaRecord>, StoreError>;

    /// The sessions a replica holds, as `(site, host)`.
    async fn replica_sessions(&self, replica: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// Forgets a replica that stopped, and its sessions.
    async fn forget_replica(&self, replica: &str) -> Result<(), StoreError>;
}

#[async_trait]
impl ReplicaStore for SqlStore {
    fn replica(&self) -> &str {
        &self.replica
    }

    fn shared(&self) -> bool {
        self.db.engine == Engine::Postgres
    }

    async fn authority(&self) -> Result<Option<SealedAuthority>, StoreError> {
        let row: Option<(String, Vec<u8>, i64)> =
            sqlx::query_as("SELECT key_id, sealed, generation FROM authority WHERE name = 'ca'")
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(row.map(|(key_id, sealed, generation)| SealedAuthority {
            key_id,
            sealed,
            generation,
        }))
    }

    async fn save_authority(&self, authority: &SealedAuthority) -> Result<bool, StoreError> {
        let stored = sqlx::query(
            "INSERT INTO authority (name, key_id, sealed, generation) VALUES ('ca', $1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET key_id = $1, sealed = $2, generation = $3
             WHERE authority.generation < $3",
        )
        .bind(&authority.key_id)
        .bind(&authority.sealed)
        .bind(authority.generation)
        .execute(&self.db.pool)
        .await?;
        Ok(stored.rows_affected() > 0)
    }

    async fn announce(&self, change: &Change) {
        if !self.shared() {
            return;
        }
        let announcement = Announcement {
            origin: self.replica.to_string(),
            change: change.clone(),
        };
        let Ok(payload) = serde_json::to_string(&announcement) else {
            return;
        };
        if let Err(err) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(payload)
            .execute(&self.db.pool)
            .await
        {
            tracing::warn!(%err, ?change, "telling the other replicas of a change failed");
        }
    }

    async fn lock_fleet(&self) -> Result<FleetLock, StoreError> {
        if !self.shared() {
            return Ok(FleetLock {
                _held: None,
                rollouts: None,
            });
        }
        let mut tx = self.db.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FLEET_LOCK)
            .execute(&mut *tx)
            .await?;
        let rollouts = sqlx::query_scalar("SELECT value FROM counters WHERE name = 'rollouts'")
            .fetch_one(&mut *tx)
            .await?;
        Ok(FleetLock {
            _held: Some(tx),
            rollouts: Some(rollouts),
        })
    }

    async fn site_revisions(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as("SELECT site, revision FROM site_states")
            .fetch_all(&self.db.pool)
            .await?)
    }

    async fn replica_alive(
        &self,
        url: &str,
        now_ms: i64,
        began: &[(String, String)],
        ended: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.db.pool.begin().await?;
        for (site, host) in ended {
            sqlx::query("DELETE FROM sessions WHERE replica = $1 AND site = $2 AND host = $3")
                .bind(self.replica())
                .bind(site)
                .bind(host)
                .execute(&mut *tx)
                .await?;
        }
        for (site, host) in began {
            sqlx::query(
                "INSERT INTO sessions (replica, site, host) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(self.replica())
            .bind(site)
            .bind(host)
            .execute(&mut *tx)
            .await?;
        }
        let changed = i64::from(!began.is_empty() || !ended.is_empty());
        sqlx::query(
            "INSERT INTO replicas (id, url, seen_at, generation) VALUES ($1, $2, $3, 1)
             ON CONFLICT (id) DO UPDATE SET url = $2, seen_at = $3, generation = replicas.generation + $4",
        )
        .bind(self.replica())
        .bind(url)
        .bind(now_ms)
        .bind(changed)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn replicas(&self) -> Result<Vec<ReplicaRecord>, StoreError> {
        let rows: Vec<(String, String, i64, i64)> =
            sqlx::query_as("SELECT id, url, seen_at, generation FROM replicas ORDER BY id")
                .fetch_all(&self.db.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, url, seen_at, generation)| ReplicaRecord {
                id,
                url,
                seen_at,
                generation,
            })
            .collect())
    }

    async fn replica_sessions(&self, replica: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT site, host FROM sessions WHERE replica = $1")
                .bind(replica)
                .fetch_all(&self.db.pool)
                .await?,
        )
    }

    async fn forget_replica(&self, replica: &str) -> Result<(), StoreError> {
        let mut tx = self.db.pool.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE replica = $1")
            .bind(replica)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM replicas WHERE id = $1")
            .bind(replica)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_naming_many_sites_becomes_one_for_all_and_fits_a_notification() {
        // Names are at most 63 characters.
        let named = |n: usize| {
            (0..n)
                .map(|i| (format!("{i:0>63}"), 1_000_000_000 + i as i64))
                .collect::<Vec<_>>()
        };
        let payload = serde_json::to_string(&Announcement {
            origin: "0123456789abcdef".into(),
            change: Change::sites(named(MAX_SITES_NAMED)),
        })
        .unwrap();
        assert!(payload.len() < 8000, "{} bytes", payload.len());
        assert_eq!(Change::sites(named(MAX_SITES_NAMED + 1)), Change::AllSites);
        let back: Announcement = serde_json::from_str(&payload).unwrap();
        assert_eq!(back.change, Change::sites(named(MAX_SITES_NAMED)));
    }
}
