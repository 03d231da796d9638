//! The SQLite side of application event streams (migration 0012):
//! up-records stored once per host, topic and sequence number; down-records
//! numbered per topic with the sites of their publish, and how far each
//! host has stored them; each host's last report of its topics; and how
//! far NATS has been given the up-records.

use async_trait::async_trait;
use outpost_api::stream::{Item, Published, StoredRecord, TopicStatus};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::StoreError;
use super::engine::SqlStore;

/// What `GET /api/v1/streams/{application}/{topic}` asks for.
#[derive(Debug, Clone, Default)]
pub struct StreamQuery {
    pub application: String,
    pub topic: String,
    pub site: Option<String>,
    /// Records produced at or after this UNIX time (ms).
    pub since_ms: Option<i64>,
    /// Records stored after this id; 0: the newest `limit`.
    pub after: i64,
    pub limit: i64,
}

#[async_trait]
pub trait StreamStore: Send + Sync + 'static {
    /// Stores the up-records of a host's topic that it has not sent before,
    /// in one transaction; returns the number to acknowledge and how many
    /// were new.
    async fn store_stream(
        &self,
        site: &str,
        host: &str,
        application: &str,
        topic: &str,
        records: &[(u64, Item)],
    ) -> Result<(u64, usize), StoreError>;

    /// Up-records of one topic, oldest first.
    async fn stream_records(&self, query: &StreamQuery) -> Result<Vec<StoredRecord>, StoreError>;

    /// Up-records of every topic stored after id `after`, oldest first.
    async fn stream_records_after(&self, after: i64, limit: i64) -> Result<Vec<StoredRecord>, StoreError>;

    /// Numbers records of a down topic and stores them for `sites`.
    async fn publish_stream(
        &self,
        application: &str,
        topic: &str,
        sites: &[String],
        data: &[String],
        actor: &str,
    ) -> Result<Published, StoreError>;

    /// The next down-records of a topic for one host: those of its site
    /// past what it has stored, oldest first.
    async fn down_records(
        &self,
        site: &str,
        host: &str,
        application: &str,
        topic: &str,
        limit: i64,
    ) -> Result<Vec<(u64, Item)>, StoreError>;

    /// A host has stored a topic's down-records through `seq`.
    async fn record_delivered(
        &self,
        site: &str,
        host: &str,
        application: &str,
        topic: &str,
        seq: u64,
    ) -> Result<(), StoreError>;

    /// Replaces what a host reported of its topics.
    async fn record_host_streams(
        &self,
        site: &str,
        host: &str,
        topics: &[TopicStatus],
    ) -> Result<(), StoreError>;

    /// Every host's last report, by site.
    async fn host_streams(&self) -> Result<Vec<(String, TopicStatus)>, StoreError>;

    /// The id of the newest up-record handed to NATS (0: none).
    async fn forwarded(&self) -> Result<i64, StoreError>;

    async fn record_forwarded(&self, through: i64) -> Result<(), StoreError>;

    /// Deletes up-records stored, and down-records published, before
    /// `before_ms`; returns how many rows went.
    async fn prune_streams(&self, before_ms: i64) -> Result<u64, StoreError>;
}

fn record_from_row(row: &AnyRow) -> Result<StoredRecord, StoreError> {
    let rfc3339 = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    Ok(StoredRecord {
        id: row.try_get("id")?,
        application: row.try_get("application")?,
        topic: row.try_get("topic")?,
        site: row.try_get("site")?,
        host: row.try_get("host")?,
        seq: row.try_get::<i64, _>("seq")? as u64,
        produced_at: rfc3339(row.try_get("produced_ms")?),
        stored_at: rfc3339(row.try_get("stored_ms")?),
        data: row.try_get("data")?,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[async_trait]
impl StreamStore for SqlStore {
    async fn store_stream(
        &self,
        site: &str,
        host: &str,
        application: &str,
        topic: &str,
        records: &[(u64, Item)],
    ) -> Result<(u64, usize), StoreError> {
        let stored_ms = now_ms();
        // IMMEDIATE: it reads the newest number, then writes past it.
        let mut tx = self.db.begin_write().await?;
        let held: Option<(i64,)> = sqlx::query_as(
            "SELECT seq FROM stream_received WHERE site = $1 AND host = $2 AND application = $3 AND topic = $4",
        )
        .bind(site)
        .bind(host)
        .bind(application)
        .bind(topic)
        .fetch_optional(&mut *tx)
        .await?;
        let held = held.map_or(0, |(seq,)| seq as u64);
        let mut last = held;
        let mut new = 0;
        for (seq, item) in records.iter().filter(|(seq, _)| *seq > held) {
            sqlx::query(
                "INSERT INTO stream_records (application, topic, site, host, seq, produced_ms, stored_ms, data)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(application)
            .bind(topic)
            .bind(site)
            .bind(host)
            .bind(*seq as i64)
            .bind(item.at.min(i64::MAX as u64) as i64)
            .bind(stored_ms)
            .bind(&item.data)
            .execute(&mut *tx)
            .await?;
            last = *seq;
            new += 1;
        }
        if last > held {
            sqlx::query(
                "INSERT INTO stream_received (site, host, application, topic, seq) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (site, host, application, topic) DO UPDATE SET seq = $5",
            )
            .bind(site)
            .bind(host)
            .bind(application)
            .bind(topic)
            .bind(last as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let through = records.last().map_or(held, |(seq, _)| (*seq).max(held));
        Ok((through, new))
    }

    async fn stream_records(&self, query: &StreamQuery) -> Result<Vec<StoredRecord>, StoreError> {
        const FILTERS: &str = "application = $1 AND topic = $2 AND ($3 IS NULL OR site = $3)
             AND ($4 IS NULL OR produced_ms >= $4)";
        let sql = if query.after > 0 {
            format!("SELECT * FROM stream_records WHERE {FILTERS} AND id > $5 ORDER BY id LIMIT $6")
        } else {
            format!(
                "SELECT * FROM (SELECT * FROM stream_records WHERE {FILTERS} ORDER BY id DESC LIMIT $6) AS newest ORDER BY id"
            )
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&query.application)
            .bind(&query.topic)
            .bind(&query.site)
            .bind(query.since_ms)
            .bind(query.after)
            .bind(query.limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn stream_records_after(&self, after: i64, limit: i64) -> Result<Vec<StoredRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM stream_records WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn publish_stream(
        &self,
        application: &str,
        topic: &str,
        sites: &[String],
        data: &[String],
        actor: &str,
    ) -> Result<Published, StoreError> {
        let at = now_ms();
        let mut tx = self.db.begin_write().await?;
        let publish: i64 = sqlx::query_scalar(
            "INSERT INTO stream_publishes (application, topic, published_ms, published_by) VALUES ($1, $2, $3, $4)
             RETURNING id",
        )
        .bind(application)
        .bind(topic)
        .bind(at)
        .bind(actor)
        .fetch_one(&mut *tx)
        .await?;
        for site in sites {
            sqlx::query("INSERT INTO stream_publish_sites (site, publish) VALUES ($1, $2)")
                .bind(site)
                .bind(publish)
                .execute(&mut *tx)
                .await?;
        }
        let (newest,): (i64,) = sqlx::query_as(
            "INSERT INTO stream_down_topics (application, topic, last_seq) VALUES ($1, $2, $3)
             ON CONFLICT (application, topic) DO UPDATE SET last_seq = stream_down_topics.last_seq + $3
             RETURNING last_seq - $3",
        )
        .bind(application)
        .bind(topic)
        .bind(data.len() as i64)
        .fetch_one(&mut *tx)
        .await?;
        let first_seq = newest as u64 + 1;
        for (i, data) in data.iter().enumerate() {
            sqlx::query(
                "INSERT INTO stream_down (application, topic, seq, publish, at_ms, data) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(application)
            .bind(topic)
            .bind(newest + 1 + i as i64)
            .bind(publish)
            .bind(at)
            .bind(data)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Published {
            records: data.len() as u64,
            first_seq,
            last_seq: first_seq + data.len() as u64 - 1,
            sites: sites.to_vec(),
        })
    }

    async fn down_records(
        &self,
        site: &str,
        host: &str,
        application: &str,
        topic: &str,
        limit: i64,
    ) -> Result<Vec<(u64, Item)>, StoreError> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT d.seq, d.at_ms, d.data FROM stream_down d
             JOIN stream_publish_sites p ON p.site = $1 AND p.publish = d.publish
             WHERE d.application = $3 AND d.topic = $4
               AND d.seq > COALESCE((SELECT seq FROM stream_delivered
                   WHERE site = $1 AND host = $2 AND application = $3 AND topic = $4), 0)
             ORDER BY d.seq LIMIT $5",
        )
        .bind(site)
        .bind(host)
        .bind(application)
        .bind(topic)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, at, data)| (seq as u64, Item { at: at as u64, data }))
            .collect())
    }

    async fn record_delivered(
        &self,
        site: &str,
        host: &str,
        application: &str,
        topic: &str,
        seq: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stream_delivered (site, host, application, topic, seq) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (site, host, application, topic) DO UPDATE SET seq = CASE WHEN stream_delivered.seq > $5 THEN stream_delivered.seq ELSE $5 END",
        )
        .bind(site)
        .bind(host)
        .bind(application)
        .bind(topic)
        .bind(seq.min(i64::MAX as u64) as i64)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    async fn record_host_streams(
        &self,
        site: &str,
        host: &str,
        topics: &[TopicStatus],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO host_streams (site, host, topics) VALUES ($1, $2, $3)
             ON CONFLICT (site, host) DO UPDATE SET topics = $3",
        )
        .bind(site)
        .bind(host)
        .bind(serde_json::to_string(topics)?)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    async fn host_streams(&self) -> Result<Vec<(String, TopicStatus)>, StoreError> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT s.site, s.host, s.topics FROM host_streams s
             JOIN hosts h ON h.site = s.site AND h.name = s.host ORDER BY s.site, s.host",
        )
        .fetch_all(&self.db.pool)
        .await?;
        let mut out = Vec::new();
        for (site, host, topics) in rows {
            let topics: Vec<TopicStatus> = serde_json::from_str(&topics)?;
            out.extend(topics.into_iter().map(|mut topic| {
                topic.host = host.clone();
                (site.clone(), topic)
            }));
        }
        Ok(out)
    }

    async fn forwarded(&self) -> Result<i64, StoreError> {
        let through: Option<(i64,)> = sqlx::query_as("SELECT through FROM stream_forwarded WHERE id = 1")
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(through.map_or(0, |(t,)| t))
    }

    async fn record_forwarded(&self, through: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stream_forwarded (id, through) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET through = $1",
        )
        .bind(through)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    async fn prune_streams(&self, before_ms: i64) -> Result<u64, StoreError> {
        let up = sqlx::query("DELETE FROM stream_records WHERE stored_ms < $1")
            .bind(before_ms)
            .execute(&self.db.pool)
            .await?
            .rows_affected();
        // Deleting a publish deletes its records and its sites.
        let down = sqlx::query("DELETE FROM stream_publishes WHERE published_ms < $1")
            .bind(before_ms)
            .execute(&self.db.pool)
            .await?
            .rows_affected();
        Ok(up + down)
    }
}
