//! The Store trait's object half: applies, reads, deletes and labels of
//! the declared objects, one transaction each.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use outpost_api::Diagnostics;
use outpost_api::diagnostic::Path as FieldPath;
use outpost_api::manifest::{ApiVersion, DeploymentSpec, Kind, Manifest};
use outpost_api::validate::Document;
use outpost_api::wire::{
    ApplicationVersion, ApplyAction, ApplyResult, LabelChange, ObjectMeta, StoredObject,
};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::engine::{SqlStore, now, retry_after};
use super::{ApplyOptions, Deleted, KEPT_VERSIONS, Store, StoreError};

fn object_from_row(row: &AnyRow) -> Result<StoredObject, StoreError> {
    let kind: String = row.try_get("kind")?;
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or_else(|| StoreError::Unreadable(format!("unknown kind {kind:?} in the store")))?;
    let labels: String = row.try_get("labels")?;
    let spec: String = row.try_get("spec")?;
    Ok(StoredObject {
        api_version: ApiVersion::V1,
        kind,
        metadata: ObjectMeta {
            name: row.try_get("name")?,
            labels: serde_json::from_str(&labels)?,
            generation: row.try_get("generation")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        },
        spec: serde_json::from_str(&spec)?,
        status: None,
    })
}

const SELECT_OBJECT: &str = "SELECT kind, name, generation, labels, spec, created_at, updated_at FROM objects WHERE kind = $1 AND name = $2";

async fn fetch_object(
    tx: &mut Transaction<'_, Any>,
    kind: Kind,
    name: &str,
) -> Result<Option<StoredObject>, StoreError> {
    let row = sqlx::query(SELECT_OBJECT)
        .bind(kind.as_str())
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(object_from_row).transpose()
}

async fn stored_versions(
    tx: &mut Transaction<'_, Any>,
    application: &str,
) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
    let rows = sqlx::query(
        "SELECT version, spec FROM application_versions WHERE application = $1 ORDER BY generation DESC",
    )
    .bind(application)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| {
            let spec: String = row.try_get("spec")?;
            Ok((row.try_get("version")?, serde_json::from_str(&spec)?))
        })
        .collect()
}

/// Checks that need the stored state: versions are immutable, and a
/// deployment names an application (and version) that exists.
async fn check_references(
    tx: &mut Transaction<'_, Any>,
    documents: &[Document],
) -> Result<Diagnostics, StoreError> {
    let mut out = Diagnostics::default();
    let batch_versions: HashMap<&str, &str> = documents
        .iter()
        .filter_map(|d| match &d.manifest {
            Manifest::Application(app) => Some((app.metadata.name.as_str(), app.spec.version.as_str())),
            _ => None,
        })
        .collect();
    let spec = FieldPath::root().field("spec");
    super::secrets::check_references(tx, documents, &mut out).await?;
    for document in documents {
        match &document.manifest {
            Manifest::Application(app) => {
                let new_spec = document.manifest.spec_json();
                let versions = stored_versions(tx, app.metadata.name.as_str()).await?;
                let changed = versions
                    .iter()
                    .any(|(version, stored)| *version == app.spec.version && *stored != new_spec);
                if changed {
                    out.0.push(document.diagnostic(
                        &spec.field("version"),
                        format!(
                            "version {:?} of application {:?} is already stored with a different spec; give the changed spec a new version",
                            app.spec.version,
                            app.metadata.name.as_str()
                        ),
                    ));
                }
            }
            Manifest::Deployment(deployment) => {
                let application = deployment.spec.application.as_str();
                let mut known: Vec<String> = stored_versions(tx, application)
                    .await?
                    .into_iter()
                    .map(|(version, _)| version)
                    .collect();
                let in_batch = batch_versions.get(application);
                if let Some(version) = in_batch {
                    known.insert(0, version.to_string());
                }
                let exists =
                    in_batch.is_some() || fetch_object(tx, Kind::Application, application).await?.is_some();
                if !exists {
                    out.0.push(document.diagnostic(
                        &spec.field("application"),
                        format!("application {application:?} does not exist (apply it first, or in the same batch)"),
                    ));
                } else if let Some(version) = &deployment.spec.version
                    && !known.contains(version)
                {
                    known.dedup();
                    out.0.push(document.diagnostic(
                        &spec.field("version"),
                        format!(
                            "application {application:?} has no version {version:?} (known: {})",
                            known.join(", ")
                        ),
                    ));
                }
            }
            Manifest::Site(_) | Manifest::Tenant(_) => {}
        }
        // An application owner's object needs its tenant.
        if let Some(tenant) = document.manifest.metadata().name.tenant() {
            let in_batch = documents
                .iter()
                .any(|d| d.manifest.kind() == Kind::Tenant && d.manifest.name() == tenant);
            if !in_batch && fetch_object(tx, Kind::Tenant, tenant).await?.is_none() {
                out.0.push(document.diagnostic(
                    &FieldPath::root().field("metadata").field("name"),
                    format!("tenant {tenant:?} does not exist (apply it first, or in the same batch)"),
                ));
            }
        }
    }
    Ok(out)
}

/// The stored deployments of `application`, by name. Read whole and
/// picked here rather than in SQL: deployments are few, and the two
/// engines spell JSON paths differently.
pub(super) async fn deployments_of(
    tx: &mut sqlx::AnyConnection,
    application: &str,
) -> Result<Vec<(String, DeploymentSpec)>, StoreError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, spec FROM objects WHERE kind = 'Deployment' ORDER BY name")
            .fetch_all(tx)
            .await?;
    let mut out = Vec::new();
    for (name, spec) in rows {
        let spec: DeploymentSpec = serde_json::from_str(&spec)?;
        if spec.application.as_str() == application {
            out.push((name, spec));
        }
    }
    Ok(out)
}

/// Drops versions beyond the newest ten that no deployment pins.
async fn prune_versions(tx: &mut Transaction<'_, Any>, application: &str) -> Result<(), StoreError> {
    let pinned: HashSet<String> = deployments_of(tx, application)
        .await?
        .into_iter()
        .filter_map(|(_, spec)| spec.version)
        .collect();
    let versions: Vec<String> = sqlx::query_scalar(
        "SELECT version FROM application_versions WHERE application = $1 ORDER BY generation DESC",
    )
    .bind(application)
    .fetch_all(&mut **tx)
    .await?;
    for version in versions.iter().skip(KEPT_VERSIONS as usize) {
        if pinned.contains(version) {
            continue;
        }
        sqlx::query("DELETE FROM application_versions WHERE application = $1 AND version = $2")
            .bind(application)
            .bind(version)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl SqlStore {
    async fn apply_once(
        &self,
        documents: &[Document],
        actor: &str,
        options: ApplyOptions<'_>,
    ) -> Result<Vec<ApplyResult>, StoreError> {
        let ApplyOptions { dry_run, request_key } = options;
        let mut tx = self.db.begin_write().await?;
        if let Some(key) = request_key {
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT results FROM apply_requests WHERE request_key = $1 AND actor = $2",
            )
            .bind(key)
            .bind(actor)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(stored) = stored {
                return Ok(serde_json::from_str(&stored)?);
            }
        }
        let problems = check_references(&mut tx, documents).await?;
        if !problems.is_empty() {
            return Err(StoreError::Invalid(problems.sorted()));
        }
        let at = now();
        let mut results = Vec::with_capacity(documents.len());
        let mut touched_applications = HashSet::new();
        for document in documents {
            let manifest = &document.manifest;
            let (kind, name) = (manifest.kind(), manifest.name());
            let labels: &BTreeMap<String, String> = &manifest.metadata().labels;
            let spec = manifest.spec_json();
            let previous = fetch_object(&mut tx, kind, name).await?;
            let (action, generation) = match &previous {
                None => (ApplyAction::Created, 1),
                Some(old) if old.metadata.labels == *labels && old.spec == spec => {
                    (ApplyAction::Unchanged, old.metadata.generation)
                }
                Some(old) => (ApplyAction::Configured, old.metadata.generation + 1),
            };
            if action != ApplyAction::Unchanged {
                sqlx::query(
                    "INSERT INTO objects (kind, name, generation, labels, spec, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6)
                     ON CONFLICT (kind, name) DO UPDATE SET generation = $3, labels = $4, spec = $5, updated_at = $6",
                )
                .bind(kind.as_str())
                .bind(name)
                .bind(generation)
                .bind(serde_json::to_string(labels)?)
                .bind(serde_json::to_string(&spec)?)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
            }
            if let Manifest::Application(app) = manifest {
                let spec_changed = previous.as_ref().is_none_or(|old| old.spec != spec);
                if spec_changed {
                    sqlx::query(
                        "INSERT INTO application_versions (application, version, generation, spec, applied_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (application, version) DO UPDATE SET generation = $3, applied_at = $5",
                    )
                    .bind(name)
                    .bind(&app.spec.version)
                    .bind(generation)
                    .bind(serde_json::to_string(&spec)?)
                    .bind(&at)
                    .execute(&mut *tx)
                    .await?;
                    touched_applications.insert(name.to_string());
                }
            }
            results.push(ApplyResult {
                kind,
                name: name.to_string(),
                action,
                generation,
                previous,
            });
        }
        for application in &touched_applications {
            prune_versions(&mut tx, application).await?;
        }
        if dry_run {
            tx.rollback().await?;
            return Ok(results);
        }
        if let Some(key) = request_key {
            let day_ago = (time::OffsetDateTime::now_utc() - time::Duration::days(1))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            sqlx::query("DELETE FROM apply_requests WHERE created_at < $1")
                .bind(day_ago)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO apply_requests (request_key, actor, results, created_at) VALUES ($1, $2, $3, $4)")
                .bind(key)
                .bind(actor)
                .bind(serde_json::to_string(&results)?)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(results)
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn apply(
        &self,
        documents: &[Document],
        actor: &str,
        options: ApplyOptions<'_>,
    ) -> Result<Vec<ApplyResult>, StoreError> {
        let mut tries = 0;
        loop {
            match self.apply_once(documents, actor, options).await {
                Err(error) if retry_after(&error, &mut tries).await => continue,
                outcome => return outcome,
            }
        }
    }

    async fn get(&self, kind: Kind, name: &str) -> Result<Option<StoredObject>, StoreError> {
        let row = sqlx::query(SELECT_OBJECT)
            .bind(kind.as_str())
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(object_from_row).transpose()
    }

    async fn list(&self, kind: Kind) -> Result<Vec<StoredObject>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, name, generation, labels, spec, created_at, updated_at FROM objects
             WHERE kind = $1 ORDER BY name",
        )
        .bind(kind.as_str())
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(object_from_row).collect()
    }

    async fn delete(&self, kind: Kind, name: &str, cascade: bool) -> Result<Deleted, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let Some(object) = fetch_object(&mut tx, kind, name).await? else {
            return Err(StoreError::NotFound {
                kind,
                name: name.to_string(),
            });
        };
        let mut revoked = Vec::new();
        if kind == Kind::Site {
            revoked = super::fleet::remove_site_hosts(&mut tx, name, cascade).await?;
        }
        if kind == Kind::Tenant {
            let owned: Option<String> = sqlx::query_scalar(
                "SELECT kind || ' ' || name FROM objects WHERE substr(name, 1, length($1) + 1) = $1 || '.'
                 UNION ALL SELECT 'secret ' || name FROM secret_versions WHERE substr(name, 1, length($1) + 1) = $1 || '.'
                 LIMIT 1",
            )
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(owned) = owned {
                return Err(StoreError::Conflict(format!(
                    "tenant {name:?} still owns {owned} (and maybe more); its objects and secrets go first"
                )));
            }
            // What its key sealed (log lines, stream records) stays sealed.
            sqlx::query("DELETE FROM tenant_keys WHERE tenant = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        if kind == Kind::Application {
            let users: Vec<String> = deployments_of(&mut tx, name)
                .await?
                .into_iter()
                .map(|(user, _)| user)
                .collect();
            if !users.is_empty() {
                return Err(StoreError::Conflict(format!(
                    "application {name:?} is used by deployment {}; delete or change that first",
                    users
                        .iter()
                        .map(|u| format!("{u:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            sqlx::query("DELETE FROM application_versions WHERE application = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM objects WHERE kind = $1 AND name = $2")
            .bind(kind.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Deleted { object, revoked })
    }

    async fn update_labels(
        &self,
        kind: Kind,
        name: &str,
        change: &LabelChange,
    ) -> Result<StoredObject, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let Some(mut object) = fetch_object(&mut tx, kind, name).await? else {
            return Err(StoreError::NotFound {
                kind,
                name: name.to_string(),
            });
        };
        let labels = change
            .applied_to(&object.metadata.labels)
            .map_err(StoreError::Conflict)?;
        if labels == object.metadata.labels {
            return Ok(object);
        }
        let generation = object.metadata.generation + 1;
        let at = now();
        sqlx::query(
            "UPDATE objects SET labels = $3, generation = $4, updated_at = $5 WHERE kind = $1 AND name = $2",
        )
        .bind(kind.as_str())
        .bind(name)
        .bind(serde_json::to_string(&labels)?)
        .bind(generation)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        object.metadata.labels = labels;
        object.metadata.generation = generation;
        object.metadata.updated_at = at;
        Ok(object)
    }

    async fn application_history(&self, name: &str) -> Result<Vec<ApplicationVersion>, StoreError> {
        let mut tx = self.db.pool.begin().await?;
        let Some(current) = fetch_object(&mut tx, Kind::Application, name).await? else {
            return Err(StoreError::NotFound {
                kind: Kind::Application,
                name: name.to_string(),
            });
        };
        let current_version = current
            .spec
            .get("version")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let rows = sqlx::query(
            "SELECT version, generation, spec, applied_at FROM application_versions
             WHERE application = $1 ORDER BY generation DESC",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        rows.iter()
            .map(|row| {
                let version: String = row.try_get("version")?;
                let spec: String = row.try_get("spec")?;
                Ok(ApplicationVersion {
                    current: version == current_version,
                    version,
                    generation: row.try_get("generation")?,
                    applied_at: row.try_get("applied_at")?,
                    spec: serde_json::from_str(&spec)?,
                })
            })
            .collect()
    }

    async fn close(&self) {
        self.db.pool.close().await;
    }
}
