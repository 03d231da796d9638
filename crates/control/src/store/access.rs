//! Who may act, and what they did: API tokens (only hashes), the
//! hash-chained audit trail, and the hosts and sites cut off by a block
//! (migration 0014).

use async_trait::async_trait;
use outpost_api::access::{AuditEntry, AuditVerification, Block, BlockTarget, Role, TokenInfo};
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::StoreError;
use super::engine::{SqlStore, now};

/// Which entries of the audit trail to read, newest last.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// RFC 3339; entries at or after it.
    pub since: Option<String>,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub limit: i64,
}

#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    /// Stores a new API token by the hash of its secret.
    async fn add_api_token(&self, token: &TokenInfo, token_hash: &str) -> Result<(), StoreError>;

    /// The token with this hash, revoked and expired ones included (the
    /// caller decides).
    async fn api_token(&self, token_hash: &str) -> Result<Option<TokenInfo>, StoreError>;

    /// The tokens of a tenant (all tenants for `None`), oldest first.
    async fn api_tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, StoreError>;

    /// Marks a token revoked; it fails its next request.
    async fn revoke_api_token(&self, name: &str) -> Result<TokenInfo, StoreError>;

    /// Revokes a token that is not revoked yet: true for the one caller
    /// that did (a one-time sign-in link is used once, however many race).
    async fn use_up_api_token(&self, name: &str) -> Result<bool, StoreError>;

    /// Appends an entry to the audit trail, chained to the one before it;
    /// the store gives it its id and time, and returns the id.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<i64, StoreError>;

    /// Entries of the audit trail, oldest first.
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;

    /// Checks every hash of the trail against the entries.
    async fn verify_audit(&self) -> Result<AuditVerification, StoreError>;

    /// Blocks a host or a site; `Conflict` if it already is.
    async fn add_block(&self, block: &Block) -> Result<(), StoreError>;

    /// Lifts a block; returns it, or `None` if there was none.
    async fn remove_block(&self, target: BlockTarget, name: &str) -> Result<Option<Block>, StoreError>;

    async fn blocks(&self) -> Result<Vec<Block>, StoreError>;
}

/// The hash that chains an entry to the one before it: SHA-256 over the
/// previous hash and every field of the entry, id and time included.
pub fn chain_hash(previous: Option<&str>, entry: &AuditEntry) -> String {
    let fields = serde_json::json!([
        previous.unwrap_or(""),
        entry.id,
        entry.at,
        entry.token,
        entry.user,
        entry.tenant,
        entry.action,
        entry.objects,
        entry.source,
        entry.status,
        entry.result,
    ]);
    hex::encode(Sha256::digest(fields.to_string().as_bytes()))
}

/// A walk over the trail, oldest first, one entry at a time (the trail
/// may be far larger than memory): entries with no hash may only come
/// before the first chained one (rows from before the chain), and every
/// chained entry's hash must follow from the entry and the hash before it.
#[derive(Debug, Default)]
pub struct ChainCheck {
    verified: u64,
    unchained: u64,
    previous: Option<String>,
    last_id: i64,
    broken: Option<(i64, String)>,
}

impl ChainCheck {
    /// Takes the next entry; false once the chain is broken (the rest need
    /// not be read).
    pub fn push(&mut self, entry: &AuditEntry, hash: Option<String>) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let id = entry.id;
        let problem = if id <= self.last_id {
            Some(format!("entry {id} comes after entry {}", self.last_id))
        } else {
            match hash {
                None if self.verified == 0 => {
                    self.unchained += 1;
                    None
                }
                None => Some(format!("entry {id} has no hash after chained entries")),
                Some(hash) if chain_hash(self.previous.as_deref(), entry) != hash => Some(format!(
                    "entry {id} does not match its hash: it, or the entry before it, was changed, removed or inserted"
                )),
                Some(hash) => {
                    self.verified += 1;
                    self.previous = Some(hash);
                    None
                }
            }
        };
        self.last_id = id;
        self.broken = problem.map(|problem| (id, problem));
        self.broken.is_none()
    }

    pub fn finish(self) -> AuditVerification {
        let (broken_at, problem) = self.broken.unzip();
        AuditVerification {
            verified: self.verified,
            unchained: self.unchained,
            broken_at,
            problem,
        }
    }
}

fn token_from_row(row: &AnyRow) -> Result<TokenInfo, StoreError> {
    let name: String = row.try_get("name")?;
    let role: String = row.try_get("role")?;
    Ok(TokenInfo {
        user: row
            .try_get::<Option<String>, _>("user_name")?
            .unwrap_or_else(|| name.clone()),
        role: role
            .parse::<Role>()
            .map_err(|err| StoreError::Unreadable(format!("API token {name:?}: {err}")))?,
        tenant: row.try_get("tenant")?,
        sites: row.try_get("sites")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        name,
    })
}

fn audit_from_row(row: &AnyRow) -> Result<(AuditEntry, Option<String>), StoreError> {
    let objects: String = row.try_get("objects")?;
    let status: i64 = row.try_get("status")?;
    Ok((
        AuditEntry {
            id: row.try_get("id")?,
            at: row.try_get("at")?,
            token: row.try_get("token")?,
            user: row.try_get("user_name")?,
            tenant: row.try_get("tenant")?,
            action: row.try_get("action")?,
            objects: serde_json::from_str(&objects)?,
            source: row.try_get("source")?,
            status: u16::try_from(status).unwrap_or(0),
            result: row.try_get("result")?,
        },
        row.try_get("hash")?,
    ))
}

fn block_from_row(row: &AnyRow) -> Result<Block, StoreError> {
    let target: String = row.try_get("target")?;
    Ok(Block {
        target: match target.as_str() {
            "host" => BlockTarget::Host,
            "site" => BlockTarget::Site,
            "tenant" => BlockTarget::Tenant,
            other => {
                return Err(StoreError::Unreadable(format!(
                    "a block of an unknown target {other:?}"
                )));
            }
        },
        name: row.try_get("name")?,
        wipe: row.try_get::<i64, _>("wipe")? != 0,
        blocked_at: row.try_get("blocked_at")?,
        blocked_by: row.try_get("blocked_by")?,
    })
}

const TOKEN_COLUMNS: &str =
    "name, user_name, role, tenant, sites, created_at, created_by, expires_at, revoked_at";
const AUDIT_COLUMNS: &str = "id, at, token, user_name, tenant, action, objects, source, status, result, hash";

#[async_trait]
impl AccessStore for SqlStore {
    async fn add_api_token(&self, token: &TokenInfo, token_hash: &str) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO api_tokens (name, token_hash, created_at, user_name, role, tenant, sites, created_by, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&token.name)
        .bind(token_hash)
        .bind(&token.created_at)
        .bind(&token.user)
        .bind(token.role.as_str())
        .bind(&token.tenant)
        .bind(&token.sites)
        .bind(&token.created_by)
        .bind(&token.expires_at)
        .execute(&self.db.pool)
        .await;
        match inserted {
            Err(sqlx::Error::Database(err)) if err.is_unique_violation() => Err(StoreError::Conflict(
                format!("an API token named {:?} exists", token.name),
            )),
            other => other.map(|_| ()).map_err(StoreError::from),
        }
    }

    async fn api_token(&self, token_hash: &str) -> Result<Option<TokenInfo>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1"
        )))
        .bind(token_hash)
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn api_tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE $1 IS NULL OR tenant = $1 ORDER BY id"
        )))
        .bind(tenant)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_api_token(&self, name: &str) -> Result<TokenInfo, StoreError> {
        sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL")
            .bind(name)
            .bind(now())
            .execute(&self.db.pool)
            .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.db.pool)
        .await?;
        match row {
            Some(row) => token_from_row(&row),
            None => Err(StoreError::Conflict(format!("no API token is named {name:?}"))),
        }
    }

    async fn use_up_api_token(&self, name: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL")
                .bind(name)
                .bind(now())
                .execute(&self.db.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<i64, StoreError> {
        // One writer at a time: the previous hash is read and the entry
        // added in one immediate transaction.
        let mut tx = self.db.begin_write().await?;
        let last: Option<(i64, Option<String>)> =
            sqlx::query_as("SELECT id, hash FROM audit_trail ORDER BY id DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let (last_id, previous) = last.unwrap_or((0, None));
        let entry = AuditEntry {
            id: last_id + 1,
            at: now(),
            ..entry.clone()
        };
        let hash = chain_hash(previous.as_deref(), &entry);
        sqlx::query(
            "INSERT INTO audit_trail (id, at, token, user_name, tenant, action, objects, source, status, result, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(entry.id)
        .bind(&entry.at)
        .bind(&entry.token)
        .bind(&entry.user)
        .bind(&entry.tenant)
        .bind(&entry.action)
        .bind(serde_json::to_string(&entry.objects)?)
        .bind(&entry.source)
        .bind(i64::from(entry.status))
        .bind(&entry.result)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(entry.id)
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        // The newest `limit` that match, returned oldest first.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM (SELECT {AUDIT_COLUMNS} FROM audit_trail
               WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR user_name = $2) AND ($3 IS NULL OR tenant = $3)
               ORDER BY id DESC LIMIT $4) AS newest ORDER BY id"
        )))
        .bind(&query.since)
        .bind(&query.user)
        .bind(&query.tenant)
        .bind(query.limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|row| audit_from_row(row).map(|(entry, _)| entry))
            .collect()
    }

    async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        use futures_util::TryStreamExt;
        let query = format!("SELECT {AUDIT_COLUMNS} FROM audit_trail ORDER BY id");
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(query)).fetch(&self.db.pool);
        let mut check = ChainCheck::default();
        while let Some(row) = rows.try_next().await? {
            let (entry, hash) = audit_from_row(&row)?;
            if !check.push(&entry, hash) {
                break;
            }
        }
        Ok(check.finish())
    }

    async fn add_block(&self, block: &Block) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO blocks (target, name, wipe, blocked_at, blocked_by) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(block.target.as_str())
        .bind(&block.name)
        .bind(i64::from(block.wipe))
        .bind(&block.blocked_at)
        .bind(&block.blocked_by)
        .execute(&self.db.pool)
        .await;
        match inserted {
            Err(sqlx::Error::Database(err)) if err.is_unique_violation() => Err(StoreError::Conflict(
                format!("{} {:?} is already blocked", block.target.as_str(), block.name),
            )),
            other => other.map(|_| ()).map_err(StoreError::from),
        }
    }

    async fn remove_block(&self, target: BlockTarget, name: &str) -> Result<Option<Block>, StoreError> {
        let row = sqlx::query("DELETE FROM blocks WHERE target = $1 AND name = $2 RETURNING *")
            .bind(target.as_str())
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(block_from_row).transpose()
    }

    async fn blocks(&self) -> Result<Vec<Block>, StoreError> {
        let rows = sqlx::query("SELECT * FROM blocks ORDER BY blocked_at")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(block_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, action: &str) -> AuditEntry {
        AuditEntry {
            id,
            at: format!("2026-12-03T10:00:0{id}Z"),
            token: "admin-1".into(),
            user: "ana".into(),
            tenant: "provider".into(),
            action: action.into(),
            objects: vec!["sites/s1".into()],
            source: "127.0.0.1:5000".into(),
            status: 200,
            result: "ok".into(),
        }
    }

    /// `ChainCheck` over entries in memory.
    fn verify_chain(rows: Vec<(AuditEntry, Option<String>)>) -> AuditVerification {
        let mut check = ChainCheck::default();
        for (entry, hash) in rows {
            if !check.push(&entry, hash) {
                break;
            }
        }
        check.finish()
    }

    fn chained(entries: &[AuditEntry]) -> Vec<(AuditEntry, Option<String>)> {
        let mut previous: Option<String> = None;
        entries
            .iter()
            .map(|entry| {
                let hash = chain_hash(previous.as_deref(), entry);
                previous = Some(hash.clone());
                (entry.clone(), Some(hash))
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_any_edit_deletion_or_insertion_breaks_it() {
        let entries: Vec<_> = (1..=4).map(|id| entry(id, "POST /apply")).collect();
        let rows = chained(&entries);
        assert_eq!(verify_chain(rows.clone()).broken_at, None);
        assert_eq!(verify_chain(rows.clone()).verified, 4);

        let mut edited = rows.clone();
        edited[1].0.result = "forbidden".into();
        assert_eq!(verify_chain(edited).broken_at, Some(2));

        let mut deleted = rows.clone();
        deleted.remove(1);
        assert_eq!(verify_chain(deleted).broken_at, Some(3));

        let mut unhashed = rows.clone();
        unhashed[2].1 = None;
        assert_eq!(verify_chain(unhashed).broken_at, Some(3));
    }

    #[test]
    fn rows_from_before_the_chain_are_counted_not_checked() {
        let mut rows = vec![(entry(1, "applied"), None), (entry(2, "deleted"), None)];
        let mut later = chained(&[entry(3, "POST /apply")]);
        rows.append(&mut later);
        let verification = verify_chain(rows);
        assert_eq!(
            (
                verification.unchained,
                verification.verified,
                verification.broken_at
            ),
            (2, 1, None)
        );
    }
}

#[cfg(test)]
mod upgrade {
    use super::*;
    use outpost_api::access::PROVIDER;
    use sqlx::migrate::Migrator;

    /// A database an older control plane left (schema 0013): its admin
    /// token keeps working as the provider's admin, and its audit rows move
    /// to the trail unchained, ahead of the chain.
    #[tokio::test]
    async fn tokens_and_audit_rows_from_before_governance_survive_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outpost.db");
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let migrator = Migrator::new(super::super::engine::Embedded(super::super::Engine::Sqlite))
            .await
            .unwrap();
        migrator.run_to(13, &pool).await.unwrap();
        for statement in [
            "INSERT INTO audit_log (at, actor, action, kind, name, generation) VALUES ('2026-11-01T10:00:00Z', 'admin-1', 'created', 'Site', 's1', 1)",
            "INSERT INTO api_tokens (name, token_hash, created_at) VALUES ('admin-1', 'abc', '2026-11-01T10:00:00Z')",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;

        let store = SqlStore::open(&path).await.unwrap();
        let token = store.api_token("abc").await.unwrap().unwrap();
        assert_eq!(
            (token.role, token.tenant.as_str(), token.expires_at),
            (Role::Admin, PROVIDER, None)
        );
        let entry = AuditEntry {
            id: 0,
            at: String::new(),
            token: "admin-1".into(),
            user: "admin".into(),
            tenant: PROVIDER.into(),
            action: "POST /apply".into(),
            objects: vec![],
            source: "127.0.0.1:1".into(),
            status: 200,
            result: "ok".into(),
        };
        store.append_audit(&entry).await.unwrap();
        let verification = store.verify_audit().await.unwrap();
        assert_eq!(
            (
                verification.unchained,
                verification.verified,
                verification.broken_at
            ),
            (1, 1, None)
        );
        let trail = store
            .audit(&AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(trail[0].objects, ["Site/s1"]);
        assert_eq!(trail[0].user, "admin-1");
    }
}
