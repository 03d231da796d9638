//! The outbound queue: events, log chunks and metric samples wait here,
//! on disk, until the control plane has stored them. Each record gets the
//! next sequence number of this agent; the control plane stores a sequence
//! number once and acknowledges, and only then is the record forgotten, so
//! a batch resent after a reconnect is never stored twice.
//!
//! The queue is bounded by size: when it is full the oldest records go
//! first, and the number dropped is sent upstream with every batch.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use outpost_api::telemetry::Record;
use sqlx::sqlite::SqlitePool;
use tokio::sync::watch;

/// The default bound of the queue on disk.
pub const DEFAULT_LIMIT: u64 = 64 << 20;

/// Records waiting to be sent, with consecutive sequence numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub first_seq: u64,
    /// Each record as JSON.
    pub records: Vec<String>,
}

impl Pending {
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.records.len() as u64 - 1
    }
}

#[async_trait::async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Queues records (durably, once this returns), dropping the oldest
    /// queued ones if the queue would exceed its bound.
    async fn push(&self, records: &[Record]) -> Result<()>;

    /// The oldest queued records after sequence number `after`: at most
    /// `max_records`, and no more than `max_bytes` of JSON unless a single
    /// record is larger. `None` if nothing waits.
    async fn pending(&self, after: u64, max_records: usize, max_bytes: usize) -> Result<Option<Pending>>;

    /// Forgets every record up to and including `through`.
    async fn acknowledge(&self, through: u64) -> Result<()>;

    /// Records dropped because the queue was full, since it was created.
    fn dropped(&self) -> u64;

    /// Bytes of records waiting.
    fn queued_bytes(&self) -> u64;

    /// The sequence number of the newest record; changes on every push.
    fn newest(&self) -> watch::Receiver<u64>;
}

/// Keeps the queue under its bound: given the sizes of the queued records,
/// oldest first, and the bytes queued, how many of the oldest must go.
pub(crate) fn over_bound(sizes: impl Iterator<Item = u64>, mut bytes: u64, limit: u64) -> (usize, u64) {
    let mut drop = 0;
    for size in sizes {
        if bytes <= limit {
            break;
        }
        bytes -= size;
        drop += 1;
    }
    (drop, bytes)
}

fn encode(records: &[Record]) -> Result<Vec<String>> {
    records
        .iter()
        .map(|r| serde_json::to_string(r).context("encoding a record"))
        .collect()
}

/// The queue in the agent's SQLite store.
pub struct DiskOutbox {
    pool: SqlitePool,
    limit: u64,
    /// Bytes queued and records dropped (also kept on disk), held across
    /// each change so that pushes and acknowledgements keep them exact.
    totals: tokio::sync::Mutex<(u64, u64)>,
    /// Copies of the totals, for readers that must not wait.
    bytes: AtomicU64,
    dropped: AtomicU64,
    newest: watch::Sender<u64>,
}

impl DiskOutbox {
    /// Opens the queue in the store's database, bounded at `limit` bytes.
    pub async fn open(pool: SqlitePool, limit: u64) -> Result<DiskOutbox> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS outbox (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 record TEXT NOT NULL,
                 size INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await
        .context("preparing the outbound queue")?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS outbox_totals (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 dropped INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await
        .context("preparing the outbound queue")?;
        let (bytes, newest): (i64, i64) =
            sqlx::query_as("SELECT COALESCE(SUM(size), 0), COALESCE(MAX(seq), 0) FROM outbox")
                .fetch_one(&pool)
                .await?;
        // AUTOINCREMENT remembers the highest number ever used, even once
        // every record is acknowledged and deleted.
        let used: Option<(i64,)> = sqlx::query_as("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
            .fetch_optional(&pool)
            .await?;
        let dropped: Option<(i64,)> = sqlx::query_as("SELECT dropped FROM outbox_totals WHERE id = 1")
            .fetch_optional(&pool)
            .await?;
        let dropped = dropped.map_or(0, |d| d.0 as u64);
        Ok(DiskOutbox {
            pool,
            limit,
            totals: tokio::sync::Mutex::new((bytes as u64, dropped)),
            bytes: AtomicU64::new(bytes as u64),
            dropped: AtomicU64::new(dropped),
            newest: watch::channel(used.map_or(newest, |u| u.0) as u64).0,
        })
    }
}

#[async_trait::async_trait]
impl Outbox for DiskOutbox {
    async fn push(&self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let encoded = encode(records)?;
        let mut totals = self.totals.lock().await;
        let (mut bytes, mut dropped) = *totals;
        let mut tx = self.pool.begin().await?;
        let mut newest = 0;
        for record in &encoded {
            let done = sqlx::query("INSERT INTO outbox (record, size) VALUES (?1, ?2)")
                .bind(record)
                .bind(record.len() as i64)
                .execute(&mut *tx)
                .await
                .context("queueing a record")?;
            newest = done.last_insert_rowid() as u64;
            bytes += record.len() as u64;
        }
        while bytes > self.limit {
            let oldest: Vec<(i64, i64)> =
                sqlx::query_as("SELECT seq, size FROM outbox ORDER BY seq LIMIT 1000")
                    .fetch_all(&mut *tx)
                    .await?;
            let (drop, left) = over_bound(oldest.iter().map(|(_, size)| *size as u64), bytes, self.limit);
            let Some((through, _)) = drop.checked_sub(1).and_then(|last| oldest.get(last)) else {
                break;
            };
            sqlx::query("DELETE FROM outbox WHERE seq <= ?1")
                .bind(through)
                .execute(&mut *tx)
                .await?;
            bytes = left;
            dropped += drop as u64;
        }
        sqlx::query(
            "INSERT INTO outbox_totals (id, dropped) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET dropped = ?1",
        )
        .bind(dropped as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await.context("queueing records")?;
        *totals = (bytes, dropped);
        self.bytes.store(bytes, Ordering::Relaxed);
        self.dropped.store(dropped, Ordering::Relaxed);
        self.newest.send_replace(newest);
        Ok(())
    }

    async fn pending(&self, after: u64, max_records: usize, max_bytes: usize) -> Result<Option<Pending>> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, record FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .bind(after as i64)
                .bind(max_records as i64)
                .fetch_all(&self.pool)
                .await?;
        Ok(consecutive(
            rows.into_iter().map(|(seq, r)| (seq as u64, r)),
            max_bytes,
        ))
    }

    async fn acknowledge(&self, through: u64) -> Result<()> {
        let mut totals = self.totals.lock().await;
        let mut tx = self.pool.begin().await?;
        let (freed,): (i64,) = sqlx::query_as("SELECT COALESCE(SUM(size), 0) FROM outbox WHERE seq <= ?1")
            .bind(through as i64)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM outbox WHERE seq <= ?1")
            .bind(through as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        totals.0 = totals.0.saturating_sub(freed as u64);
        self.bytes.store(totals.0, Ordering::Relaxed);
        Ok(())
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn queued_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn newest(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }
}

/// The leading run of records with consecutive sequence numbers, cut at
/// `max_bytes` (but never empty).
fn consecutive(rows: impl Iterator<Item = (u64, String)>, max_bytes: usize) -> Option<Pending> {
    let mut pending: Option<Pending> = None;
    let mut bytes = 0;
    for (seq, record) in rows {
        match &mut pending {
            None => {
                bytes = record.len();
                pending = Some(Pending {
                    first_seq: seq,
                    records: vec![record],
                });
            }
            Some(p) => {
                if seq != p.last_seq() + 1 || bytes + record.len() > max_bytes {
                    break;
                }
                bytes += record.len();
                p.records.push(record);
            }
        }
    }
    pending
}

/// The queue in memory, for the fleet simulator (one SQLite connection per
/// simulated site would cost a thread each).
pub struct MemoryOutbox {
    limit: u64,
    state: Mutex<MemoryState>,
    newest: watch::Sender<u64>,
}

#[derive(Default)]
struct MemoryState {
    records: VecDeque<(u64, String)>,
    bytes: u64,
    dropped: u64,
    next: u64,
}

impl MemoryOutbox {
    pub fn new(limit: u64) -> MemoryOutbox {
        MemoryOutbox {
            limit,
            state: Mutex::new(MemoryState {
                next: 1,
                ..Default::default()
            }),
            newest: watch::channel(0).0,
        }
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, MemoryState> {
        self.state.lock()
    }
}

#[async_trait::async_trait]
impl Outbox for MemoryOutbox {
    async fn push(&self, records: &[Record]) -> Result<()> {
        let encoded = encode(records)?;
        let newest = {
            let mut state = self.state();
            for record in encoded {
                state.bytes += record.len() as u64;
                let seq = state.next;
                state.next += 1;
                state.records.push_back((seq, record));
            }
            let sizes: Vec<u64> = state.records.iter().map(|(_, r)| r.len() as u64).collect();
            let (drop, left) = over_bound(sizes.into_iter(), state.bytes, self.limit);
            state.records.drain(..drop);
            state.bytes = left;
            state.dropped += drop as u64;
            state.next - 1
        };
        self.newest.send_replace(newest);
        Ok(())
    }

    async fn pending(&self, after: u64, max_records: usize, max_bytes: usize) -> Result<Option<Pending>> {
        let state = self.state();
        let rows = state
            .records
            .iter()
            .filter(|(seq, _)| *seq > after)
            .take(max_records)
            .cloned();
        Ok(consecutive(rows, max_bytes))
    }

    async fn acknowledge(&self, through: u64) -> Result<()> {
        let mut state = self.state();
        while state.records.front().is_some_and(|(seq, _)| *seq <= through) {
            if let Some((_, record)) = state.records.pop_front() {
                state.bytes -= record.len() as u64;
            }
        }
        Ok(())
    }

    fn dropped(&self) -> u64 {
        self.state().dropped
    }

    fn queued_bytes(&self) -> u64 {
        self.state().bytes
    }

    fn newest(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_api::telemetry::{Event, EventKind};

    fn event(n: usize) -> Record {
        Record::Event(Event {
            at: "2026-11-21T10:00:00Z".into(),
            kind: EventKind::Exited,
            application: "pos".into(),
            service: "web".into(),
            // Every record the same size, so the bound is a record count.
            instance: format!("web-{n:04}"),
            message: "x".repeat(50),
            exit_code: Some(1),
        })
    }

    fn size() -> u64 {
        serde_json::to_string(&event(0)).unwrap().len() as u64
    }

    /// The same contract for both queues: order, batches, acknowledgement,
    /// and the oldest dropped first when the bound is reached.
    async fn contract(outbox: &dyn Outbox) {
        assert_eq!(outbox.pending(0, 100, 1 << 20).await.unwrap(), None);
        let records: Vec<Record> = (0..10).map(event).collect();
        outbox.push(&records).await.unwrap();
        assert_eq!(*outbox.newest().borrow(), 10);
        let batch = outbox.pending(0, 4, 1 << 20).await.unwrap().unwrap();
        assert_eq!((batch.first_seq, batch.last_seq()), (1, 4));
        assert_eq!(batch.records[0], serde_json::to_string(&event(0)).unwrap());
        // A byte bound cuts the batch, but never below one record.
        let batch = outbox.pending(4, 100, 1).await.unwrap().unwrap();
        assert_eq!((batch.first_seq, batch.records.len()), (5, 1));
        outbox.acknowledge(4).await.unwrap();
        let batch = outbox.pending(0, 100, 1 << 20).await.unwrap().unwrap();
        assert_eq!((batch.first_seq, batch.last_seq()), (5, 10));
        assert_eq!(outbox.dropped(), 0);

        // The bound is 20 records: 25 more on top of the 6 queued push out
        // the 11 oldest.
        outbox
            .push(&(10..35).map(event).collect::<Vec<_>>())
            .await
            .unwrap();
        assert_eq!(outbox.dropped(), 11);
        let batch = outbox.pending(0, 100, 1 << 20).await.unwrap().unwrap();
        assert_eq!((batch.first_seq, batch.last_seq()), (16, 35));
        assert_eq!(batch.records[0], serde_json::to_string(&event(15)).unwrap());
        assert_eq!(outbox.queued_bytes(), 20 * size());
        outbox.acknowledge(35).await.unwrap();
        assert_eq!(outbox.pending(0, 100, 1 << 20).await.unwrap(), None);
        assert_eq!(outbox.queued_bytes(), 0);
        // Sequence numbers are never reused.
        outbox.push(&[event(99)]).await.unwrap();
        assert_eq!(
            outbox.pending(0, 100, 1 << 20).await.unwrap().unwrap().first_seq,
            36
        );
    }

    #[tokio::test]
    async fn the_memory_queue_keeps_the_contract() {
        contract(&MemoryOutbox::new(20 * size())).await;
    }

    #[tokio::test]
    async fn the_disk_queue_keeps_the_contract_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let store = crate::store::LocalStore::open(&path).await.unwrap();
        let outbox = DiskOutbox::open(store.pool(), 20 * size()).await.unwrap();
        contract(&outbox).await;
        outbox.push(&[event(100), event(101)]).await.unwrap();
        store.close().await;

        let store = crate::store::LocalStore::open(&path).await.unwrap();
        let outbox = DiskOutbox::open(store.pool(), 20 * size()).await.unwrap();
        assert_eq!(outbox.dropped(), 11, "the dropped count is kept on disk");
        assert_eq!(*outbox.newest().borrow(), 38);
        let batch = outbox.pending(0, 100, 1 << 20).await.unwrap().unwrap();
        assert_eq!((batch.first_seq, batch.last_seq()), (36, 38));
        outbox.acknowledge(38).await.unwrap();
        outbox.push(&[event(102)]).await.unwrap();
        assert_eq!(
            outbox.pending(0, 100, 1 << 20).await.unwrap().unwrap().first_seq,
            39
        );
    }
}
