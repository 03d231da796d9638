//! The image cache: the images this agent pulled, pinned while the current
//! or the previous version of any workload on its site needs them (a
//! workload the site no longer runs pins nothing) or a rollout has staged
//! them for the next, and
//! pruned oldest first only when they take more than the budget
//! (`--image-budget`). An image the agent did not pull (built or loaded on
//! the host, or pulled by someone else) is never touched.
//!
//! What it pulled and what each workload ran before are kept in `agent.db`
//! (tables `pulled_images`, `workload_images` and `staged_images`), so a restart forgets
//! neither: a reboot with the uplink down still has the previous version
//! to fall back to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Result;
use sqlx::SqlitePool;

use crate::plan::DesiredContainer;
use crate::runtime::Runtime;

/// The default budget: what Outpost's own images may take on disk.
pub const DEFAULT_BUDGET: u64 = 20 << 30;

#[derive(Clone)]
pub struct ImageCache {
    pool: SqlitePool,
    runtime: Arc<dyn Runtime>,
    budget: u64,
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// One version of a workload and the images it ran.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Release {
    version: String,
    images: BTreeSet<String>,
}

/// What a prune did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub removed: Vec<String>,
    /// Bytes of Outpost's images left on disk.
    pub left: u64,
}

impl ImageCache {
    pub async fn open(pool: SqlitePool, runtime: Arc<dyn Runtime>, budget: u64) -> Result<ImageCache> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS pulled_images (
                 reference TEXT PRIMARY KEY,
                 pulled_at INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS staged_images (reference TEXT PRIMARY KEY)")
            .execute(&pool)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS workload_images (
                 workload TEXT PRIMARY KEY,
                 current TEXT NOT NULL,
                 previous TEXT NOT NULL)",
        )
        .execute(&pool)
        .await?;
        Ok(ImageCache {
            pool,
            runtime,
            budget,
        })
    }

    /// Remembers images this agent pulled (only those may ever be pruned).
    pub async fn pulled(&self, references: &[String]) -> Result<()> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
        for reference in references {
            sqlx::query("INSERT OR REPLACE INTO pulled_images (reference, pulled_at) VALUES (?1, ?2)")
                .bind(reference)
                .bind(now)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Notes the images each workload wants now. When a workload's version
    /// changes, the images of the one it had become its previous ones
    /// (still pinned); within one version, images add up (a tag, then the
    /// digest the version was pinned to).
    pub async fn desired(&self, desired: &[DesiredContainer]) -> Result<()> {
        let mut wanted: BTreeMap<String, Release> = BTreeMap::new();
        for want in desired {
            let release = wanted
                .entry(format!("{}/{}", want.application, want.service))
                .or_insert_with(|| Release {
                    version: want.version.clone(),
                    images: BTreeSet::new(),
                });
            release.images.insert(want.container.image.to_string());
        }
        // A workload the site no longer runs pins nothing.
        let known: Vec<(String,)> = sqlx::query_as("SELECT workload FROM workload_images")
            .fetch_all(&self.pool)
            .await?;
        for (workload,) in known.into_iter().filter(|(w,)| !wanted.contains_key(w)) {
            sqlx::query("DELETE FROM workload_images WHERE workload = ?1")
                .bind(workload)
                .execute(&self.pool)
                .await?;
        }
        for (workload, mut release) in wanted {
            let stored: Option<(String, String)> =
                sqlx::query_as("SELECT current, previous FROM workload_images WHERE workload = ?1")
                    .bind(&workload)
                    .fetch_optional(&self.pool)
                    .await?;
            let (current, previous) = match stored {
                Some((current, previous)) => {
                    let current: Release = serde_json::from_str(&current)?;
                    if current.version == release.version {
                        release.images.extend(current.images);
                        (release, previous)
                    } else {
                        (release, serde_json::to_string(&current)?)
                    }
                }
                None => (release, serde_json::to_string(&Release::default())?),
            };
            sqlx::query(
                "INSERT INTO workload_images (workload, current, previous) VALUES (?1, ?2, ?3)
                 ON CONFLICT (workload) DO UPDATE SET current = ?2, previous = ?3",
            )
            .bind(&workload)
            .bind(serde_json::to_string(&current)?)
            .bind(previous)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Notes the images fetched ahead of a switch (pre-staging): pinned
    /// like a current version's, since the switch will need them.
    pub async fn staged(&self, references: &BTreeSet<String>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM staged_images").execute(&mut *tx).await?;
        for reference in references {
            sqlx::query("INSERT INTO staged_images (reference) VALUES (?1)")
                .bind(reference)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every image a workload's current or previous version needs, and
    /// every image staged for the next.
    async fn pinned(&self) -> Result<BTreeSet<String>> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT current, previous FROM workload_images")
            .fetch_all(&self.pool)
            .await?;
        let mut pinned = BTreeSet::new();
        for (current, previous) in rows {
            pinned.extend(serde_json::from_str::<Release>(&current)?.images);
            pinned.extend(serde_json::from_str::<Release>(&previous)?.images);
        }
        let staged: Vec<(String,)> = sqlx::query_as("SELECT reference FROM staged_images")
            .fetch_all(&self.pool)
            .await?;
        pinned.extend(staged.into_iter().map(|(reference,)| reference));
        Ok(pinned)
    }

    /// Removes pulled, unpinned images, oldest first, while Outpost's images
    /// take more than the budget. An image a container uses is never
    /// removed (the engine refuses, and it is pinned anyway).
    pub async fn prune(&self) -> Result<Pruned> {
        let pinned = self.pinned().await?;
        let pulled: Vec<(String, i64)> =
            sqlx::query_as("SELECT reference, pulled_at FROM pulled_images ORDER BY pulled_at")
                .fetch_all(&self.pool)
                .await?;
        // Sizes by image ID: two references to one image count once.
        let mut present: Vec<(String, String, u64)> = Vec::new();
        for (reference, _) in &pulled {
            match self.runtime.image_size(reference).await? {
                Some((id, size)) => present.push((reference.clone(), id, size)),
                None => {
                    // Gone (removed by hand): nothing to keep track of.
                    sqlx::query("DELETE FROM pulled_images WHERE reference = ?1")
                        .bind(reference)
                        .execute(&self.pool)
                        .await?;
                }
            }
        }
        let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, id, size) in &present {
            sizes.insert(id.as_str(), *size);
        }
        let mut left: u64 = sizes.values().sum();
        // A pinned reference may name an image pulled under another one (a
        // tag staged, then pinned to its digest): pins go by image ID.
        let mut pinned_ids: BTreeSet<String> = BTreeSet::new();
        for reference in &pinned {
            if let Some((id, _)) = self.runtime.image_size(reference).await? {
                pinned_ids.insert(id);
            }
        }
        let mut removed = Vec::new();
        for (reference, id, size) in &present {
            if left <= self.budget {
                break;
            }
            if pinned_ids.contains(id) {
                continue;
            }
            match self.runtime.remove_image(reference).await {
                Ok(()) => {
                    tracing::info!(image = %reference, bytes = size, "image pruned (over the image budget)");
                    sqlx::query("DELETE FROM pulled_images WHERE reference = ?1")
                        .bind(reference)
                        .execute(&self.pool)
                        .await?;
                    // Another reference to the same image may keep it.
                    if self.runtime.image_size(reference).await?.is_none()
                        && !present
                            .iter()
                            .any(|(r, i, _)| i == id && r != reference && !removed.contains(r))
                    {
                        left = left.saturating_sub(*size);
                    }
                    removed.push(reference.clone());
                }
                Err(err) => {
                    tracing::debug!(image = %reference, err = format!("{err:#}"), "image kept");
                }
            }
        }
        Ok(Pruned { removed, left })
    }
}
