//! Application event streams at the site. Every topic the site's
//! applications declare lives in the agent's SQLite store, bounded by its
//! `retention` (the oldest records go first, and are counted):
//! - an *up* topic is a queue: the session sends its records, urgent
//!   topics first and windowed ones only while their window is open, and
//!   forgets them once the control plane has stored them;
//! - a *down* topic holds what the control plane published to this site,
//!   stored once per sequence number and acknowledged after the commit;
//! - a *local* topic is written and read by the containers of this host.
//!
//! Containers reach the topics of their own application through
//! `endpoint`; consumers of down and local topics read by offset (a
//! record's sequence number), and the agent keeps each named consumer's
//! offset.

pub mod endpoint;
mod schedule;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use outpost_api::stream::{Direction, Item, TopicStatus};
use outpost_api::workload::SiteState;
use sqlx::sqlite::SqlitePool;
use tokio::sync::watch;

pub use schedule::Schedule;

/// A down topic the desired state does not declare (yet) keeps this much.
const UNDECLARED_RETENTION: u64 = 16 << 20;

/// One application's topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicKey {
    pub application: String,
    pub topic: String,
}

impl TopicKey {
    pub fn new(application: &str, topic: &str) -> TopicKey {
        TopicKey {
            application: application.to_string(),
            topic: topic.to_string(),
        }
    }
}

impl std::fmt::Display for TopicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.application, self.topic)
    }
}

/// A topic as the store holds it: what the desired state says of it (if
/// it still does) and what lies on disk.
#[derive(Debug, Clone)]
struct TopicState {
    direction: Direction,
    declared: bool,
    retention: u64,
    schedule: Schedule,
    /// The newest sequence number produced (up, local) or received (down).
    last_seq: u64,
    records: u64,
    bytes: u64,
    /// The oldest record on disk: its sequence number and when it was produced.
    oldest: Option<(u64, u64)>,
    dropped_records: u64,
    dropped_bytes: u64,
}

impl TopicState {
    fn new(direction: Direction) -> TopicState {
        TopicState {
            direction,
            declared: false,
            retention: UNDECLARED_RETENTION,
            schedule: Schedule::default(),
            last_seq: 0,
            records: 0,
            bytes: 0,
            oldest: None,
            dropped_records: 0,
            dropped_bytes: 0,
        }
    }
}

/// The topics of this host.
pub struct Streams {
    pool: SqlitePool,
    /// Held across every write, so that the counters stay exact.
    write: tokio::sync::Mutex<()>,
    topics: parking_lot::Mutex<BTreeMap<TopicKey, TopicState>>,
    /// Bumped whenever a topic gains records: consumers and the session wait on it.
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("topics", &self.topics.lock().len())
            .finish()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Streams {
    /// Opens the topics in the agent's database (tables `stream_topics`,
    /// `stream_records` and `stream_consumers`).
    pub async fn open(pool: SqlitePool) -> Result<Streams> {
        for ddl in [
            "CREATE TABLE IF NOT EXISTS stream_topics (
                 application TEXT NOT NULL,
                 topic TEXT NOT NULL,
                 direction TEXT NOT NULL,
                 last_seq INTEGER NOT NULL,
                 dropped_records INTEGER NOT NULL,
                 dropped_bytes INTEGER NOT NULL,
                 PRIMARY KEY (application, topic))",
            "CREATE TABLE IF NOT EXISTS stream_records (
                 application TEXT NOT NULL,
                 topic TEXT NOT NULL,
                 seq INTEGER NOT NULL,
                 at INTEGER NOT NULL,
                 data TEXT NOT NULL,
                 PRIMARY KEY (application, topic, seq)) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS stream_consumers (
                 application TEXT NOT NULL,
                 topic TEXT NOT NULL,
                 consumer TEXT NOT NULL,
                 next INTEGER NOT NULL,
                 PRIMARY KEY (application, topic, consumer))",
        ] {
            sqlx::query(ddl)
                .execute(&pool)
                .await
                .context("preparing the stream store")?;
        }
        let rows: Vec<(String, String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT application, topic, direction, last_seq, dropped_records, dropped_bytes FROM stream_topics",
        )
        .fetch_all(&pool)
        .await?;
        let mut topics = BTreeMap::new();
        for (application, topic, direction, last_seq, dropped_records, dropped_bytes) in rows {
            let direction = serde_json::from_value(serde_json::Value::String(direction))
                .context("an unreadable topic direction in the stream store")?;
            let mut state = TopicState::new(direction);
            state.last_seq = last_seq as u64;
            state.dropped_records = dropped_records as u64;
            state.dropped_bytes = dropped_bytes as u64;
            topics.insert(TopicKey { application, topic }, state);
        }
        let streams = Streams {
            pool,
            write: tokio::sync::Mutex::new(()),
            topics: parking_lot::Mutex::new(topics),
            changed: watch::channel(0).0,
        };
        let keys: Vec<TopicKey> = streams.topics.lock().keys().cloned().collect();
        for key in keys {
            streams.recount(&key).await?;
        }
        Ok(streams)
    }

    /// Topics in an in-memory database, for the fleet simulator.
    pub async fn in_memory() -> Result<Streams> {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .context("opening an in-memory stream store")?;
        Streams::open(pool).await
    }

    /// Reads a topic's records, bytes and oldest record back from disk.
    async fn recount(&self, key: &TopicKey) -> Result<()> {
        let (records, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(length(data)), 0) FROM stream_records WHERE application = ?1 AND topic = ?2",
        )
        .bind(&key.application)
        .bind(&key.topic)
        .fetch_one(&self.pool)
        .await?;
        let oldest: Option<(i64, i64)> = sqlx::query_as(
            "SELECT seq, at FROM stream_records WHERE application = ?1 AND topic = ?2 ORDER BY seq LIMIT 1",
        )
        .bind(&key.application)
        .bind(&key.topic)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(state) = self.topics.lock().get_mut(key) {
            state.records = records as u64;
            state.bytes = bytes as u64;
            state.oldest = oldest.map(|(seq, at)| (seq as u64, at as u64));
        }
        Ok(())
    }

    /// Takes the topics, retentions, priorities and windows from the
    /// desired state. A topic it no longer declares keeps what it holds (an
    /// up topic is still sent), but takes no new records.
    pub fn configure(&self, state: &SiteState) {
        let mut topics = self.topics.lock();
        for topic in topics.values_mut() {
            topic.declared = false;
        }
        for workload in &state.workloads {
            for declared in &workload.streams {
                let key = TopicKey::new(&workload.application, declared.name.as_str());
                let topic = topics
                    .entry(key)
                    .or_insert_with(|| TopicState::new(declared.direction));
                topic.direction = declared.direction;
                topic.declared = true;
                topic.retention = declared.retention.0;
                topic.schedule = Schedule::new(
                    declared.priority(),
                    declared.window.clone(),
                    workload.time_zone.as_deref(),
                );
            }
        }
        drop(topics);
        // A window may have opened, or a topic appeared: look again.
        self.changed.send_modify(|n| *n += 1);
    }

    /// The direction of a topic the desired state declares.
    pub fn declared(&self, key: &TopicKey) -> Option<Direction> {
        self.topics
            .lock()
            .get(key)
            .filter(|t| t.declared)
            .map(|t| t.direction)
    }

    /// Changes whenever a topic gains records or the topics change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Appends records to a declared up or local topic; returns the first
    /// and last sequence numbers they got. Never waits for the uplink:
    /// past the retention the oldest records are dropped, and counted.
    pub async fn produce(&self, key: &TopicKey, data: &[String]) -> Result<(u64, u64)> {
        let at = now_ms();
        let _write = self.write.lock().await;
        let Some(first) = self.topics.lock().get(key).map(|t| t.last_seq + 1) else {
            anyhow::bail!("{key} is not a topic of this host");
        };
        let records: Vec<(u64, Item)> = data
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let item = Item {
                    at,
                    data: data.clone(),
                };
                (first + i as u64, item)
            })
            .collect();
        self.append(key, &records).await?;
        Ok((first, first + data.len() as u64 - 1))
    }

    /// Stores down-records the control plane sent: those past the newest
    /// already held, in order. Returns the number to acknowledge.
    pub async fn receive(&self, key: &TopicKey, records: &[(u64, Item)]) -> Result<u64> {
        let _write = self.write.lock().await;
        let last = {
            let mut topics = self.topics.lock();
            topics
                .entry(key.clone())
                .or_insert_with(|| TopicState::new(Direction::Down))
                .last_seq
        };
        let new: Vec<(u64, Item)> = records.iter().filter(|(seq, _)| *seq > last).cloned().collect();
        if !new.is_empty() {
            self.append(key, &new).await?;
        }
        Ok(records.last().map_or(last, |(seq, _)| (*seq).max(last)))
    }

    /// Writes records and the topic's counters in one transaction, then
    /// drops the oldest past the retention. The caller holds `write`.
    async fn append(&self, key: &TopicKey, records: &[(u64, Item)]) -> Result<()> {
        let Some(mut state) = self.topics.lock().get(key).cloned() else {
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        for (seq, item) in records {
            sqlx::query(
                "INSERT INTO stream_records (application, topic, seq, at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(&key.application)
            .bind(&key.topic)
            .bind(*seq as i64)
            .bind(item.at as i64)
            .bind(&item.data)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("storing a record of {key}"))?;
            state.records += 1;
            state.bytes += item.data.len() as u64;
            state.last_seq = *seq;
            state.oldest.get_or_insert((*seq, item.at));
        }
        while state.bytes > state.retention {
            let oldest: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT seq, length(data) FROM stream_records WHERE application = ?1 AND topic = ?2 ORDER BY seq LIMIT 1000",
            )
            .bind(&key.application)
            .bind(&key.topic)
            .fetch_all(&mut *tx)
            .await?;
            let (drop, left) = crate::outbox::over_bound(
                oldest.iter().map(|(_, size)| *size as u64),
                state.bytes,
                state.retention,
            );
            let Some((through, _)) = drop.checked_sub(1).and_then(|last| oldest.get(last)) else {
                break;
            };
            sqlx::query("DELETE FROM stream_records WHERE application = ?1 AND topic = ?2 AND seq <= ?3")
                .bind(&key.application)
                .bind(&key.topic)
                .bind(through)
                .execute(&mut *tx)
                .await?;
            state.dropped_records += drop as u64;
            state.dropped_bytes += state.bytes - left;
            state.records -= drop as u64;
            state.bytes = left;
            state.oldest = None;
        }
        sqlx::query(
            "INSERT INTO stream_topics (application, topic, direction, last_seq, dropped_records, dropped_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (application, topic) DO UPDATE SET direction = ?3, last_seq = ?4, dropped_records = ?5, dropped_bytes = ?6",
        )
        .bind(&key.application)
        .bind(&key.topic)
        .bind(state.direction.as_str())
        .bind(state.last_seq as i64)
        .bind(state.dropped_records as i64)
        .bind(state.dropped_bytes as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit()
            .await
            .with_context(|| format!("storing records of {key}"))?;
        let dropped = state.oldest.is_none();
        if let Some(topic) = self.topics.lock().get_mut(key) {
            topic.last_seq = state.last_seq;
            topic.records = state.records;
            topic.bytes = state.bytes;
            topic.oldest = state.oldest;
            topic.dropped_records = state.dropped_records;
            topic.dropped_bytes = state.dropped_bytes;
        }
        if dropped {
            tracing::debug!(topic = %key, "a full topic dropped its oldest records");
            self.recount(key).await?;
        }
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Records of a topic from sequence number `from` on: at most
    /// `max_records`, and no more than `max_bytes` unless one record is
    /// larger.
    pub async fn read(
        &self,
        key: &TopicKey,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Item)>> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT seq, at, data FROM stream_records WHERE application = ?1 AND topic = ?2 AND seq >= ?3
             ORDER BY seq LIMIT ?4",
        )
        .bind(&key.application)
        .bind(&key.topic)
        .bind(from.min(i64::MAX as u64) as i64)
        .bind(max_records as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut bytes = 0;
        let mut records = Vec::new();
        for (seq, at, data) in rows {
            bytes += data.len();
            if !records.is_empty() && bytes > max_bytes {
                break;
            }
            records.push((seq as u64, Item { at: at as u64, data }));
        }
        Ok(records)
    }

    /// The up topic whose records the uplink should carry next at `now_ms`:
    /// the most urgent with a backlog whose window is open, the one whose
    /// oldest record waited longest among equals.
    pub fn next_up(&self, now_ms: u64) -> Option<TopicKey> {
        let topics = self.topics.lock();
        topics
            .iter()
            .filter(|(_, t)| t.direction == Direction::Up && t.records > 0)
            .filter(|(_, t)| t.schedule.is_open(now_ms))
            .min_by_key(|(_, t)| (t.schedule.priority, t.oldest.map_or(0, |(_, at)| at)))
            .map(|(key, _)| key.clone())
    }

    /// Forgets an up topic's records through `through`: the control plane
    /// has stored them.
    pub async fn acknowledge(&self, key: &TopicKey, through: u64) -> Result<()> {
        let _write = self.write.lock().await;
        sqlx::query("DELETE FROM stream_records WHERE application = ?1 AND topic = ?2 AND seq <= ?3")
            .bind(&key.application)
            .bind(&key.topic)
            .bind(through.min(i64::MAX as u64) as i64)
            .execute(&self.pool)
            .await
            .with_context(|| format!("forgetting the sent records of {key}"))?;
        self.recount(key).await
    }

    /// Where a named consumer reads on from (1: the beginning).
    pub async fn offset(&self, key: &TopicKey, consumer: &str) -> Result<u64> {
        let next: Option<(i64,)> = sqlx::query_as(
            "SELECT next FROM stream_consumers WHERE application = ?1 AND topic = ?2 AND consumer = ?3",
        )
        .bind(&key.application)
        .bind(&key.topic)
        .bind(consumer)
        .fetch_optional(&self.pool)
        .await?;
        Ok(next.map_or(1, |(n,)| n as u64))
    }

    /// Remembers that a named consumer has what comes before `next`.
    pub async fn commit(&self, key: &TopicKey, consumer: &str, next: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO stream_consumers (application, topic, consumer, next) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (application, topic, consumer) DO UPDATE SET next = ?4",
        )
        .bind(&key.application)
        .bind(&key.topic)
        .bind(consumer)
        .bind(next.min(i64::MAX as u64) as i64)
        .execute(&self.pool)
        .await
        .with_context(|| format!("keeping the offset of consumer {consumer:?} of {key}"))?;
        Ok(())
    }

    /// Every topic's backlog, lag and drops, as the control plane shows them.
    /// (`host` is left empty: the control plane knows who reports.)
    pub fn status(&self, now_ms: u64) -> Vec<TopicStatus> {
        self.topics
            .lock()
            .iter()
            .map(|(key, t)| TopicStatus {
                host: String::new(),
                application: key.application.clone(),
                topic: key.topic.clone(),
                direction: t.direction,
                backlog_records: t.records,
                backlog_bytes: t.bytes,
                oldest_unsent_ms: t
                    .oldest
                    .filter(|_| t.direction == Direction::Up)
                    .map(|(_, at)| at),
                dropped_records: t.dropped_records,
                dropped_bytes: t.dropped_bytes,
                note: if t.direction == Direction::Up && t.records > 0 {
                    t.schedule.note(now_ms)
                } else {
                    String::new()
                },
            })
            .collect()
    }
}

/// Keeps the topics as the desired state declares them, until `shutdown`.
pub async fn configure(
    streams: std::sync::Arc<Streams>,
    mut desired: watch::Receiver<(u64, SiteState)>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        streams.configure(&desired.borrow_and_update().1);
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests;
