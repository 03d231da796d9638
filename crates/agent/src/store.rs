//! The agent's local store (SQLite in the data directory): the last site
//! manifest it received, persisted before anything acts on it, so a reboot
//! with no uplink brings every workload back.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use outpost_api::workload::SiteState;
use outpost_proto::codec;
use outpost_proto::v1::SealedSecret;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Where the agent keeps the desired state it acts on. `LocalStore` on a
/// real host; the fleet simulator keeps it in memory.
#[async_trait::async_trait]
pub trait DesiredStore: Send + Sync + 'static {
    /// The persisted desired state and its revision (0 and empty if none).
    async fn desired(&self) -> Result<(u64, SiteState)>;

    /// Persists a desired state and the sealed secrets that came with it;
    /// it must survive a power cut once this returns, since the agent
    /// acknowledges it next. Sealed secrets the state no longer refers to
    /// are deleted in the same transaction.
    async fn save_desired(&self, revision: u64, state: &SiteState, secrets: &[SealedSecret]) -> Result<()>;

    /// A secret version as it arrived: sealed to this host's key.
    async fn sealed_secret(&self, name: &str, version: u64) -> Result<Option<Vec<u8>>>;

    /// Persists a desired state from an offline bundle signed at
    /// `created_ms`; the next state from the control plane replaces it.
    async fn save_imported(&self, revision: u64, state: &SiteState, created_ms: u64) -> Result<()>;

    /// When the bundle the held state came from was signed (`None`: it
    /// came from the control plane).
    async fn imported(&self) -> Result<Option<u64>>;
}

#[derive(Debug, Clone)]
pub struct LocalStore {
    pool: SqlitePool,
}

impl LocalStore {
    pub async fn open(path: &Path) -> Result<LocalStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged manifest must survive a power cut.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        // One connection: the agent writes rarely, and each connection
        // costs a thread and a page cache.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS desired_state (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 revision INTEGER NOT NULL,
                 state TEXT NOT NULL,
                 saved_at TEXT NOT NULL)",
        )
        .execute(&pool)
        .await
        .context("preparing the local store")?;
        // Secrets stay sealed here; they are opened only to start a container.
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS sealed_secrets (
                 name TEXT NOT NULL,
                 version INTEGER NOT NULL,
                 sealed BLOB NOT NULL,
                 PRIMARY KEY (name, version))",
        )
        .execute(&pool)
        .await
        .context("preparing the local store")?;
        // Set while the held state came from an offline bundle.
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS imported_bundle (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 created_ms INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await
        .context("preparing the local store")?;
        Ok(LocalStore { pool })
    }

    /// The database, which the outbound queue shares.
    pub fn pool(&self) -> SqlitePool {
        self.pool.clone()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl DesiredStore for LocalStore {
    async fn desired(&self) -> Result<(u64, SiteState)> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT revision, state FROM desired_state WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some((revision, state)) => Ok((
                revision as u64,
                serde_json::from_str(&state).context("the stored desired state is damaged")?,
            )),
            None => Ok((0, SiteState::default())),
        }
    }

    async fn save_desired(&self, revision: u64, state: &SiteState, secrets: &[SealedSecret]) -> Result<()> {
        self.save(revision, state, secrets, None).await
    }

    async fn save_imported(&self, revision: u64, state: &SiteState, created_ms: u64) -> Result<()> {
        self.save(revision, state, &[], Some(created_ms)).await
    }

    async fn imported(&self) -> Result<Option<u64>> {
        let created: Option<i64> = sqlx::query_scalar("SELECT created_ms FROM imported_bundle WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(created.map(|c| c.max(0) as u64))
    }

    async fn sealed_secret(&self, name: &str, version: u64) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT sealed FROM sealed_secrets WHERE name = ?1 AND version = ?2")
                .bind(name)
                .bind(version as i64)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

impl LocalStore {
    /// One transaction: the state, its sealed secrets (dropping those it
    /// no longer refers to), and where it came from.
    async fn save(
        &self,
        revision: u64,
        state: &SiteState,
        secrets: &[SealedSecret],
        imported: Option<u64>,
    ) -> Result<()> {
        let saved_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO desired_state (id, revision, state, saved_at) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET revision = ?1, state = ?2, saved_at = ?3",
        )
        .bind(revision as i64)
        .bind(serde_json::to_string(state)?)
        .bind(saved_at)
        .execute(&mut *tx)
        .await?;
        for secret in secrets {
            sqlx::query("INSERT OR REPLACE INTO sealed_secrets (name, version, sealed) VALUES (?1, ?2, ?3)")
                .bind(&secret.name)
                .bind(secret.version as i64)
                .bind(&secret.sealed)
                .execute(&mut *tx)
                .await?;
        }
        let referenced = codec::secret_versions(state);
        let held: Vec<(String, i64)> = sqlx::query_as("SELECT name, version FROM sealed_secrets")
            .fetch_all(&mut *tx)
            .await?;
        for (name, version) in held {
            if !referenced.contains(&(name.clone(), version as u64)) {
                sqlx::query("DELETE FROM sealed_secrets WHERE name = ?1 AND version = ?2")
                    .bind(&name)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("DELETE FROM imported_bundle")
            .execute(&mut *tx)
            .await?;
        if let Some(created_ms) = imported {
            sqlx::query("INSERT INTO imported_bundle (id, created_ms) VALUES (1, ?1)")
                .bind(created_ms as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_desired_state_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let store = LocalStore::open(&path).await.unwrap();
        assert_eq!(store.desired().await.unwrap(), (0, SiteState::default()));
        let state: SiteState = serde_json::from_value(serde_json::json!({ "workloads": [], "failures": [
            { "deployment": "d", "application": "a", "reason": "r" }] }))
        .unwrap();
        store.save_desired(7, &state, &[]).await.unwrap();
        store.close().await;
        let again = LocalStore::open(&path).await.unwrap();
        assert_eq!(again.desired().await.unwrap(), (7, state));
    }
}
