//! The SQLite side of secrets: a row per version, holding only ciphertext
//! and the wrapped data key (see `crate::secrets` for the cryptography),
//! the checks an apply makes of references to secrets (inside the apply's
//! transaction), the reference checks that guard a delete, and the re-wrap
//! of a key rotation in one transaction.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use outpost_api::Diagnostics;
use outpost_api::diagnostic::Path as FieldPath;
use outpost_api::manifest::{ApplicationSpec, Kind, Manifest};
use outpost_api::secret::SecretPolicy;
use outpost_api::validate::Document;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::engine::{SqlStore, now};
use super::{StoreError, StoredSecret};

/// Versions kept per secret; older ones go (sites only ever receive the
/// newest, so these serve `reveal` and a site still catching up).
const KEPT_SECRET_VERSIONS: i64 = 10;

/// A new version, as `SecretStore::add_secret_version` stores it.
pub struct NewSecretVersion<'a> {
    pub name: &'a str,
    pub keys: Vec<String>,
    pub sites: Option<String>,
    pub images: Vec<String>,
    pub size: u64,
}

/// The encrypted form of one version: what the database holds.
#[derive(Clone, PartialEq, Eq)]
pub struct Encrypted {
    pub key_id: String,
    pub data_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Encrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encrypted")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Encrypts a version's values once its number is known (the number is
/// bound into the ciphertext).
pub type Encrypt<'a> = &'a (dyn Fn(u64) -> Result<Encrypted, String> + Send + Sync);
/// Re-wraps one version's data key: the new key id and wrapped key.
pub type Rewrap<'a> = &'a (dyn Fn(&StoredSecret) -> Result<(String, Vec<u8>), String> + Send + Sync);
/// Re-wraps one tenant's key: (tenant, key id, wrapped) to the new key id
/// and wrapped key.
pub type RewrapTenant<'a> =
    &'a (dyn Fn(&str, &str, &[u8]) -> Result<(String, Vec<u8>), String> + Send + Sync);

#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Stores the next version of a secret; its number is returned.
    async fn add_secret_version(
        &self,
        new: NewSecretVersion<'_>,
        encrypt: Encrypt<'_>,
        actor: &str,
    ) -> Result<u64, StoreError>;

    /// The newest version of every secret.
    async fn secrets(&self) -> Result<Vec<StoredSecret>, StoreError>;

    /// One version (`None`: the newest), or `SecretNotFound`.
    async fn secret(&self, name: &str, version: Option<u64>) -> Result<StoredSecret, StoreError>;

    /// Every version of a secret is removed, unless a deployment's
    /// application refers to it (`Conflict`, naming them).
    async fn delete_secret(&self, name: &str) -> Result<(), StoreError>;

    /// Re-wraps every data key in one transaction; returns how many.
    async fn rewrap_secrets(&self, rewrap: Rewrap<'_>) -> Result<usize, StoreError>;

    /// A tenant's key as stored: (key id of the key-encryption key, wrapped).
    async fn tenant_key(&self, tenant: &str) -> Result<Option<(String, Vec<u8>)>, StoreError>;

    /// Stores a tenant's first key, unless another request stored one
    /// first; returns the one stored.
    async fn add_tenant_key(
        &self,
        tenant: &str,
        key_id: &str,
        wrapped: &[u8],
    ) -> Result<(String, Vec<u8>), StoreError>;

    /// Re-wraps every tenant's key in one transaction; returns how many.
    async fn rewrap_tenant_keys(&self, rewrap: RewrapTenant<'_>) -> Result<usize, StoreError>;
}

fn from_row(row: &AnyRow) -> Result<StoredSecret, StoreError> {
    let keys: String = row.try_get("keys")?;
    let images: String = row.try_get("images")?;
    let version: i64 = row.try_get("version")?;
    let size: i64 = row.try_get("size")?;
    Ok(StoredSecret {
        name: row.try_get("name")?,
        version: version as u64,
        keys: serde_json::from_str(&keys)?,
        sites: row.try_get("sites")?,
        images: serde_json::from_str(&images)?,
        size: size as u64,
        encrypted: Encrypted {
            key_id: row.try_get("key_id")?,
            data_key: row.try_get("data_key")?,
            ciphertext: row.try_get("ciphertext")?,
        },
        created_at: row.try_get("created_at")?,
        first_created_at: row.try_get("first_created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

const SELECT: &str =
    "SELECT v.*, (SELECT min(created_at) FROM secret_versions f WHERE f.name = v.name) AS first_created_at
                      FROM secret_versions v";

/// The policies of the newest versions, for the checks of an apply.
pub(super) async fn policies(
    tx: &mut sqlx::AnyConnection,
) -> Result<BTreeMap<String, SecretPolicy>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE v.version = (SELECT max(version) FROM secret_versions m WHERE m.name = v.name)"
    )))
    .fetch_all(tx)
    .await?;
    rows.iter()
        .map(|row| {
            let stored = from_row(row)?;
            Ok((stored.name.clone(), stored.policy()?))
        })
        .collect()
}

/// References to secrets: each secret and key exists and allows the
/// container's image (at the reference), and every site a deployment
/// selects may receive the secrets its application refers to (at the
/// deployment's `sites`, or at an application's reference when a stored
/// deployment runs it).
pub(super) async fn check_references(
    tx: &mut Transaction<'_, Any>,
    documents: &[Document],
    out: &mut Diagnostics,
) -> Result<(), StoreError> {
    let uses_secrets = |spec: &ApplicationSpec| spec.secret_uses().next().is_some();
    let batch_apps: HashMap<&str, &ApplicationSpec> = documents
        .iter()
        .filter_map(|d| match &d.manifest {
            Manifest::Application(app) => Some((app.metadata.name.as_str(), &app.spec)),
            _ => None,
        })
        .collect();
    let concerned = documents.iter().any(|d| match &d.manifest {
        Manifest::Application(app) => uses_secrets(&app.spec),
        Manifest::Deployment(_) => true,
        Manifest::Site(_) | Manifest::Tenant(_) => false,
    });
    if !concerned {
        return Ok(());
    }
    let policies = policies(tx).await?;
    // Every site as the batch leaves it: its labels decide what it may hold.
    let mut sites: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    if policies.values().any(|p| p.sites.is_some()) {
        let rows = sqlx::query("SELECT name, labels FROM objects WHERE kind = 'Site'")
            .fetch_all(&mut **tx)
            .await?;
        for row in rows {
            let labels: String = row.try_get("labels")?;
            sites.insert(row.try_get("name")?, serde_json::from_str(&labels)?);
        }
        for document in documents {
            if let Manifest::Site(site) = &document.manifest {
                sites.insert(site.metadata.name.to_string(), site.metadata.labels.clone());
            }
        }
    }
    let refused_site = |spec: &ApplicationSpec, selector: &outpost_api::Selector| {
        sites
            .iter()
            .filter(|(_, labels)| selector.matches(labels))
            .find_map(|(site, labels)| outpost_api::secret::site_refusal(spec, site, labels, &policies))
    };
    for document in documents {
        match &document.manifest {
            Manifest::Application(app) => {
                for (path, message) in outpost_api::secret::reference_problems(&app.spec, &policies) {
                    out.0.push(document.diagnostic(&path, message));
                }
                if !uses_secrets(&app.spec) {
                    continue;
                }
                // The stored deployments that will run this version.
                for (name, deployment) in
                    super::objects::deployments_of(tx, app.metadata.name.as_str()).await?
                {
                    if deployment
                        .version
                        .as_ref()
                        .is_some_and(|v| *v != app.spec.version)
                    {
                        continue;
                    }
                    if let Some(reason) = refused_site(&app.spec, &deployment.sites) {
                        out.0.push(document.diagnostic(
                            &FieldPath::root().field("spec"),
                            format!("deployment {name:?} runs this application, but {reason}"),
                        ));
                    }
                }
            }
            Manifest::Deployment(deployment) => {
                let application = deployment.spec.application.as_str();
                let spec = match (batch_apps.get(application), &deployment.spec.version) {
                    (Some(spec), None) => Some((*spec).clone()),
                    (Some(spec), Some(version)) if *version == spec.version => Some((*spec).clone()),
                    (_, version) => stored_spec(tx, application, version.as_deref()).await?,
                };
                if let Some(spec) = spec
                    && let Some(reason) = refused_site(&spec, &deployment.spec.sites)
                {
                    out.0
                        .push(document.diagnostic(&FieldPath::root().field("spec").field("sites"), reason));
                }
            }
            Manifest::Site(_) | Manifest::Tenant(_) => {}
        }
    }
    Ok(())
}

/// An application's stored spec at a version (`None`: its current one).
async fn stored_spec(
    tx: &mut Transaction<'_, Any>,
    application: &str,
    version: Option<&str>,
) -> Result<Option<ApplicationSpec>, StoreError> {
    let spec: Option<String> = match version {
        Some(version) => {
            sqlx::query_scalar(
                "SELECT spec FROM application_versions WHERE application = $1 AND version = $2",
            )
            .bind(application)
            .bind(version)
            .fetch_optional(&mut **tx)
            .await?
        }
        None => {
            sqlx::query_scalar("SELECT spec FROM objects WHERE kind = 'Application' AND name = $1")
                .bind(application)
                .fetch_optional(&mut **tx)
                .await?
        }
    };
    Ok(spec.map(|s| serde_json::from_str(&s)).transpose()?)
}

/// The deployments whose application (at the version each runs) refers
/// to `secret`.
async fn deployments_using(tx: &mut sqlx::AnyConnection, secret: &str) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query("SELECT name, spec FROM objects WHERE kind = 'Deployment' ORDER BY name")
        .fetch_all(&mut *tx)
        .await?;
    let mut using = Vec::new();
    for row in rows {
        let name: String = row.try_get("name")?;
        let spec: String = row.try_get("spec")?;
        let spec: serde_json::Value = serde_json::from_str(&spec)?;
        let application = spec["application"].as_str().unwrap_or_default();
        let specs: Vec<String> = match spec["version"].as_str() {
            Some(version) => {
                sqlx::query_scalar(
                    "SELECT spec FROM application_versions WHERE application = $1 AND version = $2",
                )
                .bind(application)
                .bind(version)
                .fetch_all(&mut *tx)
                .await?
            }
            None => {
                sqlx::query_scalar("SELECT spec FROM objects WHERE kind = $1 AND name = $2")
                    .bind(Kind::Application.as_str())
                    .bind(application)
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        for spec in specs {
            let spec: ApplicationSpec = serde_json::from_str(&spec)?;
            if spec.uses_secret(secret) {
                using.push(name.clone());
                break;
            }
        }
    }
    Ok(using)
}

#[async_trait]
impl SecretStore for SqlStore {
    async fn add_secret_version(
        &self,
        new: NewSecretVersion<'_>,
        encrypt: Encrypt<'_>,
        actor: &str,
    ) -> Result<u64, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let newest: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM secret_versions WHERE name = $1")
                .bind(new.name)
                .fetch_one(&mut *tx)
                .await?;
        let version = newest.unwrap_or(0) + 1;
        let encrypted = encrypt(version as u64).map_err(StoreError::Unreadable)?;
        sqlx::query(
            "INSERT INTO secret_versions (name, version, keys, sites, images, size, key_id, data_key, ciphertext, created_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(new.name)
        .bind(version)
        .bind(serde_json::to_string(&new.keys)?)
        .bind(&new.sites)
        .bind(serde_json::to_string(&new.images)?)
        .bind(new.size as i64)
        .bind(&encrypted.key_id)
        .bind(&encrypted.data_key)
        .bind(&encrypted.ciphertext)
        .bind(now())
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM secret_versions WHERE name = $1 AND version <= $2")
            .bind(new.name)
            .bind(version - KEPT_SECRET_VERSIONS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(version as u64)
    }

    async fn secrets(&self) -> Result<Vec<StoredSecret>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT} WHERE v.version = (SELECT max(version) FROM secret_versions m WHERE m.name = v.name) ORDER BY v.name"
        )))
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    async fn secret(&self, name: &str, version: Option<u64>) -> Result<StoredSecret, StoreError> {
        let row = match version {
            Some(version) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{SELECT} WHERE v.name = $1 AND v.version = $2"
                )))
                .bind(name)
                .bind(version as i64)
                .fetch_optional(&self.db.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{SELECT} WHERE v.name = $1 ORDER BY v.version DESC LIMIT 1"
                )))
                .bind(name)
                .fetch_optional(&self.db.pool)
                .await?
            }
        };
        match row {
            Some(row) => from_row(&row),
            None => Err(StoreError::SecretNotFound {
                name: name.to_string(),
                version,
            }),
        }
    }

    async fn delete_secret(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        let newest: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM secret_versions WHERE name = $1")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        if newest.is_none() {
            return Err(StoreError::SecretNotFound {
                name: name.to_string(),
                version: None,
            });
        }
        let using = deployments_using(&mut tx, name).await?;
        if !using.is_empty() {
            return Err(StoreError::Conflict(format!(
                "secret {name:?} is in use by deployment{} {} (remove the references first)",
                if using.len() == 1 { "" } else { "s" },
                using.join(", ")
            )));
        }
        sqlx::query("DELETE FROM secret_versions WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rewrap_secrets(&self, rewrap: Rewrap<'_>) -> Result<usize, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(SELECT.to_string()))
            .fetch_all(&mut *tx)
            .await?;
        for row in &rows {
            let stored = from_row(row)?;
            let (key_id, data_key) = rewrap(&stored).map_err(StoreError::Unreadable)?;
            sqlx::query(
                "UPDATE secret_versions SET key_id = $1, data_key = $2 WHERE name = $3 AND version = $4",
            )
            .bind(key_id)
            .bind(data_key)
            .bind(&stored.name)
            .bind(stored.version as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    async fn tenant_key(&self, tenant: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT key_id, wrapped FROM tenant_keys WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(&self.db.pool)
                .await?,
        )
    }

    async fn add_tenant_key(
        &self,
        tenant: &str,
        key_id: &str,
        wrapped: &[u8],
    ) -> Result<(String, Vec<u8>), StoreError> {
        sqlx::query(
            "INSERT INTO tenant_keys (tenant, key_id, wrapped, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant) DO NOTHING",
        )
        .bind(tenant)
        .bind(key_id)
        .bind(wrapped)
        .bind(super::now_rfc3339())
        .execute(&self.db.pool)
        .await?;
        self.tenant_key(tenant)
            .await?
            .ok_or_else(|| StoreError::Unreadable(format!("the key of tenant {tenant:?} vanished")))
    }

    async fn rewrap_tenant_keys(&self, rewrap: RewrapTenant<'_>) -> Result<usize, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let rows: Vec<(String, String, Vec<u8>)> =
            sqlx::query_as("SELECT tenant, key_id, wrapped FROM tenant_keys")
                .fetch_all(&mut *tx)
                .await?;
        for (tenant, key_id, wrapped) in &rows {
            let (key_id, wrapped) = rewrap(tenant, key_id, wrapped).map_err(StoreError::Unreadable)?;
            sqlx::query("UPDATE tenant_keys SET key_id = $1, wrapped = $2 WHERE tenant = $3")
                .bind(key_id)
                .bind(wrapped)
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}

impl StoredSecret {
    /// Where this version may go, as compiling and checking need it.
    pub fn policy(&self) -> Result<SecretPolicy, StoreError> {
        Ok(SecretPolicy {
            version: self.version,
            keys: self.keys.iter().cloned().collect(),
            sites: self.sites.as_deref().map(str::parse).transpose().map_err(|err| {
                StoreError::Unreadable(format!("secret {:?}: stored sites: {err}", self.name))
            })?,
            images: self.images.clone(),
        })
    }
}
