//! The hosts of a site hand each other the newest desired state one of
//! them received: a host whose uplink is down (or that was away) still
//! gets the release its peers got.
//!
//! The control plane signs the head of every state it sends (site,
//! revision, digest; `outpost_proto::head`). A host keeps the head of the
//! state it holds and says its revision in every ping; a host that hears
//! of a newer one asks that peer for it (`SiteCluster/State`) and takes it
//! only if the head verifies against the site's CA, names this site and
//! matches the state. Secrets are not passed on: they are sealed to each
//! host, so a new secret version waits for the host's own uplink.

use std::sync::Arc;

use anyhow::{Context, Result};
use outpost_api::workload::SiteState;
use outpost_proto::v1::SignedState;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqlitePool;
use tokio::sync::watch;

use crate::store::DesiredStore;

/// The largest state a peer may send.
pub const MAX_STATE_BYTES: usize = 64 << 20;

/// A signed head, as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Signed {
    revision: u64,
    head: Vec<u8>,
    signature: Vec<u8>,
}

pub struct Shared {
    site: String,
    trust: Arc<crate::trust::Trust>,
    pool: SqlitePool,
    store: Arc<dyn DesiredStore>,
    received: Arc<watch::Sender<(u64, SiteState)>>,
    signed: Mutex<Option<Signed>>,
    /// A peer that holds a newer signed state, and its revision.
    newer: Mutex<Option<(String, u64)>>,
}

impl Shared {
    /// Loads the head kept in `agent.db` (table `site_head`) if it is the
    /// head of the state held.
    pub async fn open(
        site: &str,
        trust: Arc<crate::trust::Trust>,
        pool: SqlitePool,
        store: Arc<dyn DesiredStore>,
        received: Arc<watch::Sender<(u64, SiteState)>>,
    ) -> Result<Shared> {
        sqlx::query("CREATE TABLE IF NOT EXISTS site_head (id INTEGER PRIMARY KEY CHECK (id = 1), signed TEXT NOT NULL)")
            .execute(&pool)
            .await
            .context("preparing the site's state head")?;
        let kept: Option<(String,)> = sqlx::query_as("SELECT signed FROM site_head WHERE id = 1")
            .fetch_optional(&pool)
            .await?;
        let held = received.borrow().0;
        let signed = kept
            .and_then(|(json,)| serde_json::from_str::<Signed>(&json).ok())
            .filter(|s| s.revision == held);
        Ok(Shared {
            site: site.to_string(),
            trust,
            pool,
            store,
            received,
            signed: Mutex::new(signed),
            newer: Mutex::new(None),
        })
    }

    /// The revision of the state held with a signed head (0: none).
    pub fn revision(&self) -> u64 {
        self.signed.lock().as_ref().map_or(0, |s| s.revision)
    }

    /// The control plane sent the state held now at `revision`, with its
    /// head (empty from an older control plane).
    pub async fn received(
        &self,
        revision: u64,
        state: &SiteState,
        head: &[u8],
        signature: &[u8],
    ) -> Result<()> {
        if head.is_empty() {
            return self.keep(None).await;
        }
        match outpost_proto::head::verify(head, signature, &self.trust.pem(), &self.site, state) {
            Ok(signed) if signed == revision => {
                let signed = Signed {
                    revision,
                    head: head.to_vec(),
                    signature: signature.to_vec(),
                };
                self.keep(Some(signed)).await
            }
            Ok(other) => {
                tracing::warn!(
                    revision,
                    head = other,
                    "the state's head names another revision; not passed on"
                );
                self.keep(None).await
            }
            Err(err) => {
                tracing::warn!(revision, %err, "the state's head does not verify; not passed on");
                self.keep(None).await
            }
        }
    }

    async fn keep(&self, signed: Option<Signed>) -> Result<()> {
        match &signed {
            Some(s) => {
                sqlx::query(
                    "INSERT INTO site_head (id, signed) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET signed = ?1",
                )
                .bind(serde_json::to_string(s)?)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM site_head").execute(&self.pool).await?;
            }
        }
        *self.signed.lock() = signed;
        Ok(())
    }

    /// A peer said it holds a signed state at `revision`.
    pub fn peer_holds(&self, host: &str, revision: u64) {
        if revision <= self.received.borrow().0 {
            return;
        }
        let mut newer = self.newer.lock();
        if newer.as_ref().is_none_or(|(_, r)| *r < revision) {
            *newer = Some((host.to_string(), revision));
        }
    }

    /// The peer to ask for a newer state, if one said it holds one.
    pub fn wanted(&self) -> Option<String> {
        let held = self.received.borrow().0;
        let mut newer = self.newer.lock();
        match newer.take() {
            Some((host, revision)) if revision > held => Some(host),
            _ => None,
        }
    }

    /// What this host hands a peer: the state it holds, with its head.
    pub fn offer(&self) -> Option<SignedState> {
        let signed = self.signed.lock().clone()?;
        let (revision, state) = self.received.borrow().clone();
        if revision != signed.revision {
            return None;
        }
        Some(SignedState {
            head: signed.head,
            signature: signed.signature,
            state: serde_json::to_vec(&state).ok()?,
        })
    }

    /// Takes a state a peer handed over, if its head verifies and it is
    /// newer than the one held.
    pub async fn take(&self, from: &str, offered: SignedState) -> Result<bool> {
        anyhow::ensure!(
            offered.state.len() <= MAX_STATE_BYTES,
            "a state of {} bytes is too large",
            offered.state.len()
        );
        let state: SiteState = serde_json::from_slice(&offered.state).context("an unreadable state")?;
        let revision = outpost_proto::head::verify(
            &offered.head,
            &offered.signature,
            &self.trust.pem(),
            &self.site,
            &state,
        )?;
        if revision <= self.received.borrow().0 {
            return Ok(false);
        }
        self.store.save_desired(revision, &state, &[]).await?;
        self.keep(Some(Signed {
            revision,
            head: offered.head,
            signature: offered.signature,
        }))
        .await?;
        tracing::info!(revision, peer = %from, workloads = state.workloads.len(), "took a newer desired state from a peer");
        self.received.send_replace((revision, state));
        Ok(true)
    }
}
