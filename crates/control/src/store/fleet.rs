//! The SQLite side of the fleet: join tokens, hosts, site states, instances.

use std::collections::BTreeMap;

use async_trait::async_trait;
use outpost_api::rollout::RolloutState;
use outpost_api::wire::LabelChange;
use outpost_api::workload::SiteState;
use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::engine::{SqlStore, now};
use super::{
    FleetStore, HostImage, HostRecord, ImageDigest, ImageDigests, InstanceRecord, RevokedCertificate,
    StoreError,
};

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn host_from_row(row: &AnyRow) -> Result<HostRecord, StoreError> {
    let facts: String = row.try_get("facts")?;
    let labels: String = row.try_get("labels")?;
    Ok(HostRecord {
        site: row.try_get("site")?,
        name: row.try_get("name")?,
        facts: serde_json::from_str(&facts)?,
        labels: serde_json::from_str(&labels)?,
        agent_version: row.try_get("agent_version")?,
        applied_revision: row.try_get("applied_revision")?,
        enrolled_at: row.try_get("enrolled_at")?,
        last_seen: row.try_get("last_seen")?,
        dropped: row.try_get("dropped")?,
        bytes_received: row.try_get("bytes_received")?,
        bytes_sent: row.try_get("bytes_sent")?,
        cert_serial: row.try_get("cert_serial")?,
        previous_serial: row.try_get("previous_serial")?,
        site_address: row.try_get("site_address")?,
    })
}

/// The host query with a literal tail, so the SQL stays a compile-time string.
macro_rules! select_host {
    ($tail:literal) => {
        concat!(
            "SELECT site, name, facts, labels, agent_version, applied_revision, enrolled_at, last_seen, \
             dropped, bytes_received, bytes_sent, cert_serial, previous_serial, site_address FROM hosts ",
            $tail
        )
    };
}

#[async_trait]
impl FleetStore for SqlStore {
    async fn record_issuer(&self, serial: &str, issuer: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO certificate_issuers (serial, issuer) VALUES ($1, $2) ON CONFLICT (serial) DO UPDATE SET issuer = $2")
            .bind(serial)
            .bind(issuer)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    async fn hosts_not_issued_by(&self, issuer: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT h.site || '/' || h.name FROM hosts h LEFT JOIN certificate_issuers c ON c.serial = h.cert_serial
             WHERE c.issuer IS NULL OR c.issuer != $1 ORDER BY h.site, h.name",
        )
        .bind(issuer)
        .fetch_all(&self.db.pool)
        .await?)
    }

    async fn renew_host_certificate(
        &self,
        site: &str,
        host: &str,
        old_serial: &str,
        new_serial: &str,
    ) -> Result<(), StoreError> {
        let renewed = sqlx::query(
            "UPDATE hosts SET previous_serial = $3, cert_serial = $4
             WHERE site = $1 AND name = $2 AND (cert_serial = $3 OR previous_serial = $3 OR cert_serial IS NULL)",
        )
        .bind(site)
        .bind(host)
        .bind(old_serial)
        .bind(new_serial)
        .execute(&self.db.pool)
        .await?;
        if renewed.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "host {host:?} of site {site:?} holds no certificate with serial {old_serial}"
            )));
        }
        Ok(())
    }

    async fn create_join_token(
        &self,
        token_hash: &str,
        site: &str,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO join_tokens (token_hash, site, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(site)
        .bind(now())
        .bind(rfc3339(expires_at))
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    async fn redeem_join_token(
        &self,
        token_hash: &str,
        host: &str,
        cert_serial: &str,
    ) -> Result<String, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let row = sqlx::query("SELECT site, expires_at, used_at FROM join_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                kind: outpost_api::Kind::Site,
                name: "join token".to_string(),
            });
        };
        let site: String = row.try_get("site")?;
        let used_at: Option<String> = row.try_get("used_at")?;
        if let Some(used_at) = used_at {
            return Err(StoreError::Conflict(format!(
                "the join token was already used (at {used_at})"
            )));
        }
        let expires_at: String = row.try_get("expires_at")?;
        let expired =
            OffsetDateTime::parse(&expires_at, &Rfc3339).map_or(true, |at| at <= OffsetDateTime::now_utc());
        if expired {
            return Err(StoreError::Conflict(format!(
                "the join token expired at {expires_at}"
            )));
        }
        let enrolled: Option<String> =
            sqlx::query_scalar("SELECT enrolled_at FROM hosts WHERE site = $1 AND name = $2")
                .bind(&site)
                .bind(host)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(enrolled) = enrolled {
            // Two live certificates for one host would both run its site's
            // instances; replacing a host is a deliberate act.
            return Err(StoreError::Conflict(format!(
                "host {host:?} is already enrolled in site {site:?} (since {enrolled}); choose another host name"
            )));
        }
        let at = now();
        sqlx::query("UPDATE join_tokens SET used_at = $1, used_by_host = $2 WHERE token_hash = $3")
            .bind(&at)
            .bind(host)
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO hosts (site, name, enrolled_at, cert_serial) VALUES ($1, $2, $3, $4)")
            .bind(&site)
            .bind(host)
            .bind(&at)
            .bind(cert_serial)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(site)
    }

    async fn revoked_certificates(&self) -> Result<Vec<RevokedCertificate>, StoreError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT serial, site, host FROM revoked_certificates ORDER BY revoked_at")
                .fetch_all(&self.db.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(serial, site, host)| RevokedCertificate { serial, site, host })
            .collect())
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let rows = sqlx::query(select_host!("ORDER BY site, name"))
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(host_from_row).collect()
    }

    async fn update_host_labels(
        &self,
        site: &str,
        host: &str,
        change: &LabelChange,
    ) -> Result<HostRecord, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let row = sqlx::query(select_host!("WHERE site = $1 AND name = $2"))
            .bind(site)
            .bind(host)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(mut record) = row.as_ref().map(host_from_row).transpose()? else {
            return Err(StoreError::HostNotFound {
                site: site.to_string(),
                host: host.to_string(),
            });
        };
        let facts: Vec<&String> = change
            .set
            .keys()
            .chain(&change.remove)
            .filter(|key| record.facts.contains_key(*key))
            .collect();
        if !facts.is_empty() {
            let names: Vec<&str> = facts.iter().map(|k| k.as_str()).collect();
            return Err(StoreError::Conflict(format!(
                "{} discovered on {host} and cannot be set: facts are read-only",
                if names.len() == 1 {
                    format!("{} is a fact", names[0])
                } else {
                    format!("{} are facts", names.join(", "))
                }
            )));
        }
        record.labels = change.applied_to(&record.labels).map_err(StoreError::Conflict)?;
        sqlx::query("UPDATE hosts SET labels = $3 WHERE site = $1 AND name = $2")
            .bind(site)
            .bind(host)
            .bind(serde_json::to_string(&record.labels)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn host(&self, site: &str, host: &str) -> Result<Option<HostRecord>, StoreError> {
        let row = sqlx::query(select_host!("WHERE site = $1 AND name = $2"))
            .bind(site)
            .bind(host)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(host_from_row).transpose()
    }

    async fn record_hello(
        &self,
        site: &str,
        host: &str,
        facts: &BTreeMap<String, String>,
        agent_version: &str,
        applied_revision: i64,
    ) -> Result<bool, StoreError> {
        let facts = serde_json::to_string(facts)?;
        let previous: Option<String> =
            sqlx::query_scalar("SELECT facts FROM hosts WHERE site = $1 AND name = $2")
                .bind(site)
                .bind(host)
                .fetch_optional(&self.db.pool)
                .await?;
        sqlx::query(
            "UPDATE hosts SET facts = $3, agent_version = $4, applied_revision = $5, last_seen = $6
             WHERE site = $1 AND name = $2",
        )
        .bind(site)
        .bind(host)
        .bind(&facts)
        .bind(agent_version)
        .bind(applied_revision)
        .bind(now())
        .execute(&self.db.pool)
        .await?;
        Ok(previous.as_deref() != Some(facts.as_str()))
    }

    async fn record_site_address(&self, site: &str, host: &str, address: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE hosts SET site_address = $3 WHERE site = $1 AND name = $2 AND site_address != $3",
        )
        .bind(site)
        .bind(host)
        .bind(address)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_seen(
        &self,
        site: &str,
        host: &str,
        applied_revision: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE hosts SET last_seen = $3, applied_revision = COALESCE($4, applied_revision)
             WHERE site = $1 AND name = $2",
        )
        .bind(site)
        .bind(host)
        .bind(now())
        .bind(applied_revision)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    async fn record_digests(&self, site: &str, digests: &[ImageDigest]) -> Result<usize, StoreError> {
        if digests.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.pool.begin().await?;
        let mut new = 0;
        for d in digests {
            let done = sqlx::query(
                "INSERT INTO image_digests (application, version, image, digest, site, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&d.application)
            .bind(&d.version)
            .bind(&d.image)
            .bind(&d.digest)
            .bind(site)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            new += done.rows_affected() as usize;
        }
        tx.commit().await?;
        Ok(new)
    }

    async fn image_digests(&self) -> Result<ImageDigests, StoreError> {
        let rows: Vec<(String, String, String, String)> =
            sqlx::query_as("SELECT application, version, image, digest FROM image_digests")
                .fetch_all(&self.db.pool)
                .await?;
        let mut out = ImageDigests::new();
        for (application, version, image, digest) in rows {
            out.entry((application, version))
                .or_default()
                .insert(image, digest);
        }
        Ok(out)
    }

    async fn record_status(
        &self,
        site: &str,
        host: &str,
        instances: &[InstanceRecord],
        images: &[HostImage],
    ) -> Result<(), StoreError> {
        let mut tx = self.db.pool.begin().await?;
        for statement in [
            "DELETE FROM instance_status WHERE site = $1 AND host = $2",
            "DELETE FROM host_images WHERE site = $1 AND host = $2",
        ] {
            sqlx::query(statement)
                .bind(site)
                .bind(host)
                .execute(&mut *tx)
                .await?;
        }
        for image in images {
            sqlx::query(
                "INSERT INTO host_images
                   (site, host, application, version, image, present, fetched, total, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (site, host, application, version, image) DO UPDATE SET
                   present = excluded.present, fetched = excluded.fetched, total = excluded.total, error = excluded.error",
            )
            .bind(site)
            .bind(host)
            .bind(&image.application)
            .bind(&image.version)
            .bind(&image.image)
            .bind(i64::from(image.present))
            .bind(image.fetched as i64)
            .bind(image.total as i64)
            .bind(&image.error)
            .execute(&mut *tx)
            .await?;
        }
        for instance in instances {
            sqlx::query(
                "INSERT INTO instance_status
                   (site, host, instance, application, service, spec_hash, state, exit_code, reason, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(site)
            .bind(host)
            .bind(&instance.instance)
            .bind(&instance.application)
            .bind(&instance.service)
            .bind(&instance.spec_hash)
            .bind(instance.state.as_str())
            .bind(instance.exit_code)
            .bind(&instance.reason)
            .bind(&instance.updated_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn host_images(&self) -> Result<Vec<HostImage>, StoreError> {
        let rows: Vec<(String, String, String, String, String, i64, i64, i64, String)> = sqlx::query_as(
            "SELECT site, host, application, version, image, present, fetched, total, error FROM host_images",
        )
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(site, host, application, version, image, present, fetched, total, error)| HostImage {
                    site,
                    host,
                    application,
                    version,
                    image,
                    present: present != 0,
                    fetched: fetched.max(0) as u64,
                    total: total.max(0) as u64,
                    error,
                },
            )
            .collect())
    }

    async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT site, host, instance, application, service, spec_hash, state, exit_code, reason, updated_at
             FROM instance_status ORDER BY site, host, instance",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(InstanceRecord {
                    site: row.try_get("site")?,
                    host: row.try_get("host")?,
                    instance: row.try_get("instance")?,
                    application: row.try_get("application")?,
                    service: row.try_get("service")?,
                    spec_hash: row.try_get("spec_hash")?,
                    state: row
                        .try_get::<String, _>("state")?
                        .parse()
                        .map_err(StoreError::Unreadable)?,
                    exit_code: row.try_get("exit_code")?,
                    reason: row.try_get("reason")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn rollouts(&self) -> Result<BTreeMap<String, RolloutState>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT deployment, state FROM rollouts")
            .fetch_all(&self.db.pool)
            .await?;
        rows.into_iter()
            .map(|(deployment, state)| Ok((deployment, serde_json::from_str(&state)?)))
            .collect()
    }

    async fn save_rollout(
        &self,
        deployment: &str,
        rollout: &RolloutState,
        started: bool,
    ) -> Result<i64, StoreError> {
        let mut tx = self.db.pool.begin().await?;
        let at = now();
        sqlx::query(
            "INSERT INTO rollouts (deployment, state, started_at, updated_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (deployment) DO UPDATE SET state = $2, updated_at = $3,
               started_at = CASE WHEN $4 THEN $3 ELSE rollouts.started_at END",
        )
        .bind(deployment)
        .bind(serde_json::to_string(rollout)?)
        .bind(&at)
        .bind(started)
        .execute(&mut *tx)
        .await?;
        let outcome = serde_json::to_value(&rollout.phase)?
            .get("phase")
            .and_then(|p| p.as_str())
            .unwrap_or_default()
            .to_string();
        if started {
            sqlx::query("INSERT INTO rollout_history (deployment, version, started_at, outcome) VALUES ($1, $2, $3, $4)")
                .bind(deployment)
                .bind(&rollout.to)
                .bind(&at)
                .bind(&outcome)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "UPDATE rollout_history SET outcome = $2
                 WHERE id = (SELECT MAX(id) FROM rollout_history WHERE deployment = $1)",
            )
            .bind(deployment)
            .bind(&outcome)
            .execute(&mut *tx)
            .await?;
        }
        let counter = count_rollout_write(&mut tx).await?;
        tx.commit().await?;
        Ok(counter)
    }

    async fn delete_rollout(&self, deployment: &str) -> Result<i64, StoreError> {
        let mut tx = self.db.pool.begin().await?;
        sqlx::query("DELETE FROM rollouts WHERE deployment = $1")
            .bind(deployment)
            .execute(&mut *tx)
            .await?;
        let counter = count_rollout_write(&mut tx).await?;
        tx.commit().await?;
        Ok(counter)
    }

    async fn rollout_history(&self, deployment: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT version, started_at, outcome FROM rollout_history WHERE deployment = $1 ORDER BY id",
        )
        .bind(deployment)
        .fetch_all(&self.db.pool)
        .await?)
    }

    async fn site_states(&self) -> Result<BTreeMap<String, (i64, SiteState)>, StoreError> {
        let rows = sqlx::query("SELECT site, revision, state FROM site_states")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok((
                    row.try_get("site")?,
                    (row.try_get("revision")?, serde_json::from_str(&state)?),
                ))
            })
            .collect()
    }

    async fn site_state(&self, site: &str) -> Result<Option<(i64, SiteState)>, StoreError> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT revision, state FROM site_states WHERE site = $1")
                .bind(site)
                .fetch_optional(&self.db.pool)
                .await?;
        row.map(|(revision, state)| Ok((revision, serde_json::from_str(&state)?)))
            .transpose()
    }

    async fn site_hosts(&self, site: &str) -> Result<Vec<HostRecord>, StoreError> {
        let rows = sqlx::query(select_host!("WHERE site = $1 ORDER BY name"))
            .bind(site)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(host_from_row).collect()
    }

    async fn site_keys(&self) -> Result<BTreeMap<String, outpost_api::wire::SiteKeys>, StoreError> {
        let sites: Vec<(String,)> = sqlx::query_as("SELECT site FROM site_keys")
            .fetch_all(&self.db.pool)
            .await?;
        let mut out = BTreeMap::new();
        let mut connection = self.db.pool.acquire().await?;
        for (site,) in sites {
            if let Some(keys) = read_site_keys(&mut connection, &site).await? {
                out.insert(site, keys);
            }
        }
        Ok(out)
    }

    async fn rotate_site_keys(
        &self,
        site: &str,
        at_once: bool,
        now: OffsetDateTime,
    ) -> Result<outpost_api::wire::SiteKeys, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let epoch: Option<(i64,)> = sqlx::query_as("SELECT epoch FROM site_keys WHERE site = $1")
            .bind(site)
            .fetch_optional(&mut *tx)
            .await?;
        let epoch = epoch.map_or(1, |(e,)| e);
        sqlx::query(
            "INSERT INTO site_keys (site, epoch, retiring, rotated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (site) DO UPDATE SET epoch = $2, retiring = $3, rotated_at = $4",
        )
        .bind(site)
        .bind(epoch + 1)
        .bind((!at_once).then_some(epoch))
        .bind(now.unix_timestamp())
        .execute(&mut *tx)
        .await?;
        let keys = stored_site_keys(&mut tx, site).await?;
        tx.commit().await?;
        Ok(keys)
    }

    async fn record_host_key(
        &self,
        site: &str,
        host: &str,
        epoch: u64,
        now: OffsetDateTime,
    ) -> Result<outpost_api::wire::SiteKeys, StoreError> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query("INSERT INTO site_keys (site, epoch, rotated_at) VALUES ($1, 1, $2) ON CONFLICT (site) DO NOTHING")
            .bind(site)
            .bind(now.unix_timestamp())
            .execute(&mut *tx)
            .await?;
        let keys = stored_site_keys(&mut tx, site).await?;
        if !keys.accepted().contains(&epoch) {
            return Err(StoreError::Conflict(format!(
                "site {site} accepts keys of epoch {}, not {epoch}",
                keys.accepted()
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" and ")
            )));
        }
        sqlx::query(
            "INSERT INTO host_keys (site, host, epoch) VALUES ($1, $2, $3)
             ON CONFLICT (site, host) DO UPDATE SET epoch = CASE WHEN host_keys.epoch > $3 THEN host_keys.epoch ELSE $3 END",
        )
        .bind(site)
        .bind(host)
        .bind(epoch as i64)
        .execute(&mut *tx)
        .await?;
        let mut keys = stored_site_keys(&mut tx, site).await?;
        if keys.retiring.is_some() && keys.hosts_rotated >= keys.hosts {
            sqlx::query("UPDATE site_keys SET retiring = NULL WHERE site = $1")
                .bind(site)
                .execute(&mut *tx)
                .await?;
            keys.retiring = None;
        }
        tx.commit().await?;
        Ok(keys)
    }

    async fn save_site_states(
        &self,
        states: &BTreeMap<String, SiteState>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let mut changed = Vec::new();
        for (site, state) in states {
            let text = serde_json::to_string(state)?;
            let stored: Option<(i64, String)> =
                sqlx::query_as("SELECT revision, state FROM site_states WHERE site = $1")
                    .bind(site)
                    .fetch_optional(&mut *tx)
                    .await?;
            let revision = match &stored {
                Some((_, old)) if *old == text => continue,
                Some((revision, _)) => revision + 1,
                None => 1,
            };
            sqlx::query(
                "INSERT INTO site_states (site, revision, state, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (site) DO UPDATE SET revision = $2, state = $3, updated_at = $4",
            )
            .bind(site)
            .bind(revision)
            .bind(&text)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            changed.push((site.clone(), revision));
        }
        tx.commit().await?;
        Ok(changed)
    }
}

/// Raises the rollouts' counter inside a write of a rollout; returns it.
async fn count_rollout_write(tx: &mut sqlx::AnyConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("UPDATE counters SET value = value + 1 WHERE name = 'rollouts' RETURNING value")
            .fetch_one(&mut *tx)
            .await?,
    )
}

/// Inside a site's delete: refuses while the site has hosts, naming them,
/// unless `cascade`; then removes the hosts, their instances and the site's
/// join tokens, and puts the hosts' certificates on the deny list.
pub(super) async fn remove_site_hosts(
    tx: &mut sqlx::AnyConnection,
    site: &str,
    cascade: bool,
) -> Result<Vec<RevokedCertificate>, StoreError> {
    let hosts: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT name, cert_serial FROM hosts WHERE site = $1 ORDER BY name")
            .bind(site)
            .fetch_all(&mut *tx)
            .await?;
    if hosts.is_empty() {
        return Ok(Vec::new());
    }
    if !cascade {
        let names: Vec<&str> = hosts.iter().map(|(name, _)| name.as_str()).collect();
        let (hosts, them, their) = if names.len() == 1 {
            ("host", "it", "its certificate")
        } else {
            ("hosts", "them", "their certificates")
        };
        return Err(StoreError::Conflict(format!(
            "site {site:?} has {} {hosts}: {}; delete it with --cascade to remove {them} and revoke {their}",
            names.len(),
            names.join(", ")
        )));
    }
    let at = now();
    let mut revoked = Vec::new();
    for (host, serial) in hosts {
        // A host enrolled before serials were recorded has none to list; its
        // row goes, and a session needs its row.
        let Some(serial) = serial else { continue };
        sqlx::query(
            "INSERT INTO revoked_certificates (serial, site, host, reason, revoked_at)
             VALUES ($1, $2, $3, 'site deleted', $4) ON CONFLICT DO NOTHING",
        )
        .bind(&serial)
        .bind(site)
        .bind(&host)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        revoked.push(RevokedCertificate {
            serial,
            site: site.to_string(),
            host,
        });
    }
    for statement in [
        "DELETE FROM hosts WHERE site = $1",
        "DELETE FROM instance_status WHERE site = $1",
        "DELETE FROM host_images WHERE site = $1",
        "DELETE FROM join_tokens WHERE site = $1",
    ] {
        sqlx::query(statement).bind(site).execute(&mut *tx).await?;
    }
    Ok(revoked)
}

/// The underlay keys of a site that has some (made earlier in the same
/// transaction).
async fn stored_site_keys(
    connection: &mut sqlx::AnyConnection,
    site: &str,
) -> Result<outpost_api::wire::SiteKeys, StoreError> {
    read_site_keys(connection, site)
        .await?
        .ok_or_else(|| StoreError::Unreadable(format!("the keys of site {site} vanished")))
}

/// A site's underlay keys as stored, with how many of its hosts (enrolled
/// now) hold a key of its epoch.
async fn read_site_keys(
    connection: &mut sqlx::AnyConnection,
    site: &str,
) -> Result<Option<outpost_api::wire::SiteKeys>, StoreError> {
    let row: Option<(i64, Option<i64>, i64)> =
        sqlx::query_as("SELECT epoch, retiring, rotated_at FROM site_keys WHERE site = $1")
            .bind(site)
            .fetch_optional(&mut *connection)
            .await?;
    let Some((epoch, retiring, rotated_at)) = row else {
        return Ok(None);
    };
    let (hosts, rotated): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(k.epoch) FROM hosts h
         LEFT JOIN host_keys k ON k.site = h.site AND k.host = h.name AND k.epoch >= $2
         WHERE h.site = $1",
    )
    .bind(site)
    .bind(epoch)
    .fetch_one(&mut *connection)
    .await?;
    Ok(Some(outpost_api::wire::SiteKeys {
        site: site.to_string(),
        epoch: epoch as u64,
        retiring: retiring.map(|r| r as u64),
        rotated_at: OffsetDateTime::from_unix_timestamp(rotated_at)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default(),
        hosts_rotated: rotated as u32,
        hosts: hosts as u32,
    }))
}
