//! The SQLite side of telemetry: events, log lines and metric samples
//! from agents, stored exactly once per sequence number, and pruned after
//! their retention.

use async_trait::async_trait;
use outpost_api::telemetry::{Event, LogLine, MetricSample, Record, StoredEvent, StoredLogLine};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::engine::{SqlStore, now};
use super::{RecordQuery, StoreError, TelemetryStore};

async fn insert_event(
    tx: &mut sqlx::AnyConnection,
    site: &str,
    host: &str,
    seq: Option<i64>,
    event: &Event,
    received_at: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (site, host, seq, at, received_at, kind, application, service, instance, message, exit_code)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(site)
    .bind(host)
    .bind(seq)
    .bind(&event.at)
    .bind(received_at)
    .bind(event.kind.as_str())
    .bind(&event.application)
    .bind(&event.service)
    .bind(&event.instance)
    .bind(&event.message)
    .bind(event.exit_code)
    .execute(tx)
    .await?;
    Ok(())
}

fn event_from_row(row: &AnyRow) -> Result<StoredEvent, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(StoredEvent {
        id: row.try_get("id")?,
        site: row.try_get("site")?,
        host: row.try_get("host")?,
        at: row.try_get("at")?,
        received_at: row.try_get("received_at")?,
        kind: kind.parse().map_err(StoreError::Unreadable)?,
        application: row.try_get("application")?,
        service: row.try_get("service")?,
        instance: row.try_get("instance")?,
        message: row.try_get("message")?,
        exit_code: row.try_get("exit_code")?,
    })
}

fn log_line_from_row(row: &AnyRow) -> Result<StoredLogLine, StoreError> {
    Ok(StoredLogLine {
        id: row.try_get("id")?,
        site: row.try_get("site")?,
        host: row.try_get("host")?,
        application: row.try_get("application")?,
        service: row.try_get("service")?,
        instance: row.try_get("instance")?,
        container: row.try_get("container")?,
        line: LogLine {
            at: row.try_get("at")?,
            stream: row.try_get("stream")?,
            text: row.try_get("text")?,
        },
    })
}

/// Runs a record query: with `after`, the next ones after that id; without,
/// the newest `limit`. Oldest first either way.
///
/// Only the filters the query sets are written into the SQL (no `$1 IS
/// NULL OR …`): PostgreSQL plans a prepared statement once for any
/// parameters after a few runs, and such a plan could not use
/// `events_by_site` or `log_lines_by_site` for a site's newest records.
async fn query_records(
    store: &SqlStore,
    table: &str,
    query: &RecordQuery,
) -> Result<Vec<AnyRow>, StoreError> {
    let mut texts: Vec<String> = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    let mut text_filter = |condition: &dyn Fn(usize) -> String, value: String| {
        texts.push(value);
        conditions.push(condition(texts.len()));
    };
    if let Some(site) = &query.site {
        text_filter(&|n| format!("site = ${n}"), site.clone());
    }
    if let Some(application) = &query.application {
        text_filter(&|n| format!("application = ${n}"), application.clone());
    }
    if let Some(service) = &query.service {
        text_filter(&|n| format!("service = ${n}"), service.clone());
    }
    if let Some(since) = &query.since {
        text_filter(&|n| format!("at >= ${n}"), since.clone());
    }
    if let Some(tenant) = &query.tenant {
        text_filter(
            &|n| format!("substr(application, 1, length(${n}) + 1) = ${n} || '.'"),
            tenant.clone(),
        );
    }
    if let Some(sites) = &query.sites {
        let engine = store.db.engine;
        text_filter(
            &|n| format!("site IN ({})", engine.json_array_elements(&format!("${n}"))),
            serde_json::json!(sites).to_string(),
        );
    }
    let (after, limit) = (texts.len() + 1, texts.len() + 2);
    if query.after > 0 {
        conditions.push(format!("id > ${after}"));
    }
    let filters = if conditions.is_empty() {
        "TRUE".to_string()
    } else {
        conditions.join(" AND ")
    };
    let sql = if query.after > 0 {
        format!("SELECT * FROM {table} WHERE {filters} ORDER BY id LIMIT ${limit}")
    } else {
        format!(
            "SELECT * FROM (SELECT * FROM {table} WHERE {filters} ORDER BY id DESC LIMIT ${limit}) AS newest ORDER BY id"
        )
    };
    // The table name is one of ours, never the caller's; every value is bound.
    let mut statement = sqlx::query(sqlx::AssertSqlSafe(sql));
    for text in texts {
        statement = statement.bind(text);
    }
    let rows = statement
        .bind(query.after)
        .bind(query.limit)
        .fetch_all(&store.db.pool)
        .await?;
    Ok(rows)
}

#[async_trait]
impl TelemetryStore for SqlStore {
    async fn store_records(
        &self,
        site: &str,
        host: &str,
        first_seq: u64,
        records: &[Record],
        dropped: u64,
    ) -> Result<u64, StoreError> {
        let received_at = now();
        // IMMEDIATE: the transaction reads, then writes; a deferred one
        // would fail (SQLITE_BUSY_SNAPSHOT) when another writer got in between.
        let mut tx = self.db.begin_write().await?;
        let stored: Option<(i64,)> =
            sqlx::query_as("SELECT received_seq FROM hosts WHERE site = $1 AND name = $2")
                .bind(site)
                .bind(host)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((stored,)) = stored else {
            return Err(StoreError::Conflict(format!(
                "host {host:?} of site {site:?} is not enrolled"
            )));
        };
        let mut last = stored as u64;
        for (i, record) in records.iter().enumerate() {
            let seq = first_seq + i as u64;
            if seq <= last {
                continue;
            }
            last = seq;
            match record {
                Record::Event(event) => {
                    insert_event(&mut tx, site, host, Some(seq as i64), event, &received_at).await?
                }
                Record::Log(chunk) => {
                    for line in &chunk.lines {
                        sqlx::query(
                            "INSERT INTO log_lines (site, host, application, service, instance, container, at, stream, text, received_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        )
                        .bind(site)
                        .bind(host)
                        .bind(&chunk.application)
                        .bind(&chunk.service)
                        .bind(&chunk.instance)
                        .bind(&chunk.container)
                        .bind(if line.at.is_empty() { &chunk.at } else { &line.at })
                        .bind(&line.stream)
                        .bind(&line.text)
                        .bind(&received_at)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                Record::Metrics(sample) => {
                    sqlx::query(
                        "INSERT INTO metric_samples (site, host, at, received_at, sample) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(site)
                    .bind(host)
                    .bind(&sample.at)
                    .bind(&received_at)
                    .bind(serde_json::to_string(sample)?)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        sqlx::query(
            "UPDATE hosts SET received_seq = $3, dropped = CASE WHEN dropped > $4 THEN dropped ELSE $4 END WHERE site = $1 AND name = $2",
        )
        .bind(site)
        .bind(host)
        .bind(last as i64)
        .bind(dropped as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(last)
    }

    async fn record_event(&self, site: &str, event: &Event) -> Result<(), StoreError> {
        let mut connection = self.db.pool.acquire().await?;
        insert_event(&mut connection, site, "", None, event, &now()).await
    }

    async fn events(&self, query: &RecordQuery) -> Result<Vec<StoredEvent>, StoreError> {
        query_records(self, "events", query)
            .await?
            .iter()
            .map(event_from_row)
            .collect()
    }

    async fn log_lines(&self, query: &RecordQuery) -> Result<Vec<StoredLogLine>, StoreError> {
        query_records(self, "log_lines", query)
            .await?
            .iter()
            .map(log_line_from_row)
            .collect()
    }

    async fn latest_samples(&self) -> Result<Vec<(String, String, MetricSample)>, StoreError> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT site, host, sample FROM metric_samples
             WHERE id IN (SELECT MAX(id) FROM metric_samples GROUP BY site, host) ORDER BY site, host",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.into_iter()
            .map(|(site, host, sample)| Ok((site, host, serde_json::from_str(&sample)?)))
            .collect()
    }

    async fn add_traffic(&self, site: &str, host: &str, received: u64, sent: u64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE hosts SET bytes_received = bytes_received + $3, bytes_sent = bytes_sent + $4
             WHERE site = $1 AND name = $2",
        )
        .bind(site)
        .bind(host)
        .bind(received as i64)
        .bind(sent as i64)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    async fn record_heard(&self, heard: &crate::presence::Heard) -> Result<(), StoreError> {
        if heard.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.pool.begin().await?;
        let at = now();
        for (site, host) in &heard.seen {
            sqlx::query("UPDATE hosts SET last_seen = $3 WHERE site = $1 AND name = $2")
                .bind(site)
                .bind(host)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
        }
        for ((site, host), (received, sent)) in &heard.traffic {
            sqlx::query(
                "UPDATE hosts SET bytes_received = bytes_received + $3, bytes_sent = bytes_sent + $4
                 WHERE site = $1 AND name = $2",
            )
            .bind(site)
            .bind(host)
            .bind(*received as i64)
            .bind(*sent as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn prune(&self, events: &str, logs: &str, metrics: &str) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for (table, before) in [
            ("events", events),
            ("log_lines", logs),
            ("metric_samples", metrics),
        ] {
            let sql = format!("DELETE FROM {table} WHERE received_at < $1");
            deleted += sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(before)
                .execute(&self.db.pool)
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FleetStore;
    use outpost_api::telemetry::{EventKind, LogChunk};

    fn event(n: i32) -> Record {
        Record::Event(Event {
            at: format!("2026-11-21T10:00:{n:02}Z"),
            kind: EventKind::Exited,
            application: "pos".into(),
            service: "web".into(),
            instance: "web-0".into(),
            message: format!("exit {n}"),
            exit_code: Some(n),
        })
    }

    #[tokio::test]
    async fn a_resent_batch_is_stored_once_and_queries_filter() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(&dir.path().join("outpost.db")).await.unwrap();
        let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        store.create_join_token("h", "shop-1", expires).await.unwrap();
        store.redeem_join_token("h", "till", "01").await.unwrap();

        let batch: Vec<Record> = (1..=5).map(event).collect();
        assert_eq!(
            store.store_records("shop-1", "till", 1, &batch, 0).await.unwrap(),
            5
        );
        // Resent after a lost acknowledgement, overlapping with new records.
        let overlap: Vec<Record> = (4..=8).map(event).collect();
        assert_eq!(
            store
                .store_records("shop-1", "till", 4, &overlap, 2)
                .await
                .unwrap(),
            8
        );
        let all = store
            .events(&RecordQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let codes: Vec<i32> = all.iter().filter_map(|e| e.exit_code).collect();
        assert_eq!(codes, (1..=8).collect::<Vec<_>>(), "each once, in order");
        assert_eq!(store.host("shop-1", "till").await.unwrap().unwrap().dropped, 2);

        // The newest N, oldest first; then following after an id.
        let newest = store
            .events(&RecordQuery {
                limit: 3,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            newest.iter().filter_map(|e| e.exit_code).collect::<Vec<_>>(),
            [6, 7, 8]
        );
        let after = store
            .events(&RecordQuery {
                after: all[5].id,
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            after.iter().filter_map(|e| e.exit_code).collect::<Vec<_>>(),
            [7, 8]
        );
        let since = RecordQuery {
            since: Some("2026-11-21T10:00:07Z".into()),
            site: Some("shop-1".into()),
            application: Some("pos".into()),
            limit: 100,
            ..Default::default()
        };
        assert_eq!(store.events(&since).await.unwrap().len(), 2);
        let other = RecordQuery {
            site: Some("shop-2".into()),
            limit: 100,
            ..Default::default()
        };
        assert!(store.events(&other).await.unwrap().is_empty());
        // A site-scoped token's sites; an application owner's applications.
        let scoped = |sites: &[&str], tenant: Option<&str>| RecordQuery {
            sites: Some(sites.iter().map(|s| s.to_string()).collect()),
            tenant: tenant.map(str::to_string),
            limit: 100,
            ..Default::default()
        };
        assert_eq!(
            store
                .events(&scoped(&["shop-2", "shop-1"], None))
                .await
                .unwrap()
                .len(),
            8
        );
        assert!(store.events(&scoped(&["shop-2"], None)).await.unwrap().is_empty());
        assert!(
            store
                .events(&scoped(&["shop-1"], Some("acme")))
                .await
                .unwrap()
                .is_empty()
        );

        // Log chunks become lines.
        let chunk = Record::Log(LogChunk {
            at: "2026-11-21T10:01:00Z".into(),
            application: "pos".into(),
            service: "web".into(),
            instance: "web-0".into(),
            container: "httpd".into(),
            lines: vec![
                LogLine {
                    at: String::new(),
                    stream: "stdout".into(),
                    text: "one".into(),
                },
                LogLine {
                    at: String::new(),
                    stream: "stderr".into(),
                    text: "two".into(),
                },
            ],
            skipped: 0,
        });
        assert_eq!(
            store
                .store_records("shop-1", "till", 9, &[chunk], 2)
                .await
                .unwrap(),
            9
        );
        let lines = store
            .log_lines(&RecordQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let text: Vec<&str> = lines.iter().map(|l| l.line.text.as_str()).collect();
        assert_eq!(text, ["one", "two"]);

        // Issue 11, defect 5: a second enrollment of the same host name is
        // refused, and leaves its token unused.
        store.create_join_token("h2", "shop-1", expires).await.unwrap();
        let refused = store.redeem_join_token("h2", "till", "02").await.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("host \"till\" is already enrolled in site \"shop-1\""),
            "{refused}"
        );
        assert_eq!(
            store.redeem_join_token("h2", "till-2", "03").await.unwrap(),
            "shop-1"
        );

        // Retention.
        assert_eq!(store.prune("9999", "0", "0").await.unwrap(), 8);
        assert_eq!(store.prune("9999", "9999", "9999").await.unwrap(), 2);
    }
}
