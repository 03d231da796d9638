//! The Docker runtime's images: the name the engine holds a reference
//! under, pulling (the site's peers first, then the registry, with byte
//! progress), and loading an archive a peer sent.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;

use super::Docker;
use crate::runtime::Progress;

impl Docker {
    /// The name this engine holds `reference` under: itself, or for a
    /// digest reference loaded from a peer (an archive keeps no registry
    /// digest), the tag it was loaded as (`local_name`).
    pub(super) async fn resolve(&self, reference: &str) -> Option<String> {
        if self.client.inspect_image(reference).await.is_ok() {
            return Some(reference.to_string());
        }
        let local = local_name(reference)?;
        self.client.inspect_image(&local).await.is_ok().then_some(local)
    }

    /// Fetches an image from the site's other hosts; whether one had it.
    /// Gives up (for the registry) once no peer holds or pulls it and this
    /// host's turn (`peers::STAGGER` per host before it) has come.
    async fn fetch_from_peers(&self, image: &str, progress: &Progress<'_>) -> bool {
        let Some(peers) = self.peers.get() else {
            return false;
        };
        let started = tokio::time::Instant::now();
        let turn = started + crate::peers::STAGGER * peers.rank();
        loop {
            let mut pulling = false;
            for peer in peers.others() {
                let offered = match peers.ask(&peer, image).await {
                    Ok(crate::peers::Offer::Holds(id, archive)) => (id, archive),
                    Ok(crate::peers::Offer::Pulling) => {
                        pulling = true;
                        continue;
                    }
                    Ok(crate::peers::Offer::Lacks) => continue,
                    Err(err) => {
                        tracing::info!(peer = %peer.host, %image, err = format!("{err:#}"), "a peer could not be asked; trying the next or the registry");
                        continue;
                    }
                };
                match self.load(image, offered, progress).await {
                    Ok(bytes) => {
                        tracing::info!(peer = %peer.host, %image, bytes, "image fetched from a peer of this site");
                        return true;
                    }
                    Err(err) => {
                        tracing::warn!(peer = %peer.host, %image, err = format!("{err:#}"), "fetching from a peer failed; trying the next or the registry");
                    }
                }
            }
            let now = tokio::time::Instant::now();
            let waiting = if pulling {
                now.duration_since(started) < crate::peers::PULLING_WAIT
            } else {
                now < turn
            };
            if !waiting {
                return false;
            }
            // Ask again in a moment (no later than this host's turn).
            let pause = if pulling {
                crate::peers::STAGGER
            } else {
                turn.saturating_duration_since(now).min(crate::peers::STAGGER)
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Loads an image archive from a peer and names it as the desired
    /// state does; returns the bytes it took.
    async fn load(
        &self,
        reference: &str,
        offered: (String, crate::peers::Archive),
        progress: &Progress<'_>,
    ) -> Result<u64> {
        let (image_id, archive) = offered;
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let archive = {
            let counted = counted.clone();
            archive.map(move |chunk| {
                if let Ok(bytes) = &chunk {
                    counted.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                chunk.map_err(std::io::Error::other)
            })
        };
        let options = bollard::query_parameters::ImportImageOptions {
            quiet: true,
            ..Default::default()
        };
        let mut steps = self.client.import_image_stream(options, archive, None);
        while let Some(step) = steps.next().await {
            step.with_context(|| format!("loading {reference} from a peer"))?;
            let bytes = counted.load(std::sync::atomic::Ordering::Relaxed);
            progress(bytes, 0);
        }
        self.client
            .inspect_image(&image_id)
            .await
            .with_context(|| format!("the archive a peer sent holds no image {image_id}"))?;
        let name = local_name(reference).unwrap_or_else(|| reference.to_string());
        let (repo, tag) = name.rsplit_once(':').context("a loaded image needs a tag")?;
        self.client
            .tag_image(
                &image_id,
                Some(bollard::query_parameters::TagImageOptions {
                    repo: Some(repo.to_string()),
                    tag: Some(tag.to_string()),
                }),
            )
            .await
            .with_context(|| format!("naming the loaded image {name}"))?;
        self.pulled.lock().push(reference.to_string());
        Ok(counted.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Pulls the image only if the engine does not have it: a site keeps
    /// restarting what it has even when no registry can be reached.
    /// `extra`: credentials from the container's pull secret, tried first.
    /// Returns the name the engine holds it under (see `resolve`).
    pub(super) async fn ensure_image(
        &self,
        image: &str,
        extra: &[crate::registry::Credential],
    ) -> Result<String> {
        if let Some(local) = self.resolve(image).await {
            return Ok(local);
        }
        self.pull(image, extra, &|_, _| {}).await?;
        self.resolve(image)
            .await
            .with_context(|| format!("{image} is not on this host after its pull"))
    }

    /// Pulls an image from its registry, telling `progress` the bytes of its
    /// layers as they arrive.
    pub(super) async fn pull(
        &self,
        image: &str,
        extra: &[crate::registry::Credential],
        progress: &Progress<'_>,
    ) -> Result<()> {
        if self.fetch_from_peers(image, progress).await {
            return Ok(());
        }
        self.pulling.lock().insert(image.to_string());
        let pulled = self.pull_from_registry(image, extra, progress).await;
        self.pulling.lock().remove(image);
        pulled
    }

    async fn pull_from_registry(
        &self,
        image: &str,
        extra: &[crate::registry::Credential],
        progress: &Progress<'_>,
    ) -> Result<()> {
        let credential = crate::registry::for_image(extra, image)
            .or_else(|| crate::registry::for_image(&self.credentials, image));
        // The credential itself is never logged, only whether there is one.
        tracing::info!(%image, authenticated = credential.is_some(), "pulling image");
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let auth = credential.map(|c| bollard::auth::DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(c.registry.clone()),
            ..Default::default()
        });
        let mut steps = self.client.create_image(Some(options), None, auth);
        // Per layer: bytes fetched, bytes in all.
        let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
        while let Some(step) = steps.next().await {
            let step = step.with_context(|| format!("pulling {image}"))?;
            let (Some(layer), Some(status)) = (step.id, step.status.as_deref()) else {
                continue;
            };
            let entry = layers.entry(layer).or_default();
            match status {
                "Downloading" => {
                    if let Some(detail) = step.progress_detail {
                        entry.0 = detail.current.unwrap_or(0).max(0) as u64;
                        entry.1 = detail.total.unwrap_or(0).max(0) as u64;
                    }
                }
                "Download complete" => entry.0 = entry.1,
                _ => continue,
            }
            let (fetched, total) = layers.values().fold((0, 0), |(f, t), (lf, lt)| (f + lf, t + lt));
            progress(fetched, total);
        }
        self.pulled.lock().push(image.to_string());
        Ok(())
    }
}

/// The tag an image loaded from a peer for a digest reference is kept
/// under (`repo@sha256:HEX` → `repo:sha256-HEX`): an archive carries no
/// registry digest, so the engine could not find it by one. `None` for a
/// reference by tag.
pub fn local_name(reference: &str) -> Option<String> {
    let (repository, digest) = reference.split_once('@')?;
    Some(format!("{repository}:{}", digest.replace(':', "-")))
}
