//! Pre-staging: fetches the images of the workloads a rollout will switch
//! this host to (`SiteState::staged`), before the switch, and reports per
//! image whether the host holds it and how far its pull has come. The
//! control plane switches the site only once every host holds every image
//! (see `outpost_api::rollout`).
//!
//! Pulls run one at a time, beside the reconciler, so a slow link never
//! holds up restarts. A failed pull is retried with backoff (2 s doubling
//! to 5 min) and its reason is reported until one succeeds. Staged images
//! are pinned in the image cache from the moment they are staged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use outpost_api::manifest::Container;
use outpost_api::workload::{SiteState, pinned_image};
use outpost_proto::v1::{ImageStatus, StatusReport};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::images::ImageCache;
use crate::runtime::Runtime;
use crate::secrets::Secrets;

const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How often progress is published while a pull runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How often presence is checked again with nothing else to do (an image
/// removed by hand is fetched again).
const RECHECK: Duration = Duration::from_secs(60);

/// One image this host is to hold, and what it takes to pull it.
struct Wanted {
    application: String,
    version: String,
    /// The image as its container names it.
    image: String,
    /// What is pulled: the image pinned to its recorded digest, if any.
    reference: String,
    container: Container,
    secrets: BTreeMap<String, u64>,
}

struct Failure {
    attempts: u32,
    retry_at: Instant,
    error: String,
}

pub struct Stager {
    runtime: Arc<dyn Runtime>,
    host: String,
    desired: watch::Receiver<(u64, SiteState)>,
    status: Arc<watch::Sender<StatusReport>>,
    secrets: Arc<Secrets>,
    cache: Option<ImageCache>,
    failures: HashMap<String, Failure>,
    /// What the cache was last told is staged (a write only on a change).
    pinned: Option<BTreeSet<String>>,
}

impl Stager {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        host: &str,
        desired: watch::Receiver<(u64, SiteState)>,
        status: Arc<watch::Sender<StatusReport>>,
        secrets: Arc<Secrets>,
        cache: Option<ImageCache>,
    ) -> Stager {
        Stager {
            runtime,
            host: host.to_string(),
            desired,
            status,
            secrets,
            cache,
            failures: HashMap::new(),
            pinned: None,
        }
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.stage().await;
            let wake = self
                .failures
                .values()
                .map(|f| f.retry_at)
                .min()
                .unwrap_or_else(|| Instant::now() + RECHECK)
                .min(Instant::now() + RECHECK);
            tokio::select! {
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// The images the staged workloads placed on this host need.
    fn wanted(&self, state: &SiteState) -> Vec<Wanted> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for workload in &state.staged {
            if !workload.instances.iter().any(|i| i.host == self.host) {
                continue;
            }
            for container in &workload.containers {
                let image = container.image.as_str();
                if !seen.insert((
                    workload.application.clone(),
                    workload.version.clone(),
                    image.to_string(),
                )) {
                    continue;
                }
                out.push(Wanted {
                    application: workload.application.clone(),
                    version: workload.version.clone(),
                    image: image.to_string(),
                    reference: pinned_image(image, &workload.digests),
                    container: container.clone(),
                    secrets: workload.secrets.clone(),
                });
            }
        }
        out
    }

    /// One pass: pins what is staged, reports what is present, and pulls
    /// what is missing (failed pulls only once their backoff has passed).
    async fn stage(&mut self) {
        let state = self.desired.borrow_and_update().1.clone();
        let wanted = self.wanted(&state);
        let references: BTreeSet<String> = wanted.iter().map(|w| w.reference.clone()).collect();
        self.failures
            .retain(|reference, _| references.contains(reference));
        if let Some(cache) = &self.cache
            && self.pinned.as_ref() != Some(&references)
        {
            match cache.staged(&references).await {
                Ok(()) => self.pinned = Some(references.clone()),
                Err(err) => tracing::warn!(err = format!("{err:#}"), "pinning staged images"),
            }
        }
        let mut statuses = Vec::with_capacity(wanted.len());
        for want in &wanted {
            statuses.push(self.observe(want).await);
        }
        self.publish(&statuses);
        for (i, want) in wanted.iter().enumerate() {
            if statuses[i].present
                || self
                    .failures
                    .get(&want.reference)
                    .is_some_and(|f| f.retry_at > Instant::now())
            {
                continue;
            }
            statuses[i] = self.pull(want, &statuses).await;
            self.publish(&statuses);
        }
    }

    /// What the host holds of one image now.
    async fn observe(&self, want: &Wanted) -> ImageStatus {
        let mut status = ImageStatus {
            application: want.application.clone(),
            version: want.version.clone(),
            image: want.image.clone(),
            error: self
                .failures
                .get(&want.reference)
                .map(|f| f.error.clone())
                .unwrap_or_default(),
            ..Default::default()
        };
        if !self.runtime.has_images() {
            status.present = true;
            return status;
        }
        match self.runtime.image_size(&want.reference).await {
            Ok(Some((_, size))) => {
                status.present = true;
                status.fetched = size;
                status.total = size;
                status.error.clear();
                status.digest = self.digest(want).await;
            }
            Ok(None) => {}
            Err(err) => status.error = format!("{err:#}"),
        }
        status
    }

    /// The digest of an image named by tag, as the host holds it.
    async fn digest(&self, want: &Wanted) -> String {
        if let Some((_, digest)) = want.reference.split_once('@') {
            return digest.to_string();
        }
        self.runtime
            .image_digest(&want.image)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Pulls one image, publishing its progress as it goes.
    async fn pull(&mut self, want: &Wanted, statuses: &[ImageStatus]) -> ImageStatus {
        tracing::info!(image = %want.reference, application = %want.application, version = %want.version, "pre-staging image");
        let last = parking_lot::Mutex::new(Instant::now());
        let index = statuses
            .iter()
            .position(|s| s.image == want.image && s.version == want.version);
        let progress = |fetched: u64, total: u64| {
            let mut last = last.lock();
            if last.elapsed() < PROGRESS_EVERY {
                return;
            }
            *last = Instant::now();
            let mut now = statuses.to_vec();
            if let Some(status) = index.and_then(|i| now.get_mut(i)) {
                status.fetched = fetched;
                status.total = total;
            }
            self.publish(&now);
        };
        let result = match self
            .secrets
            .pull_credentials(&want.container, &want.secrets)
            .await
        {
            Ok(credentials) => self.runtime.fetch(&want.reference, &credentials, &progress).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => {
                self.failures.remove(&want.reference);
                if let Some(cache) = &self.cache
                    && let Err(err) = cache.pulled(std::slice::from_ref(&want.reference)).await
                {
                    tracing::warn!(err = format!("{err:#}"), "noting a staged image");
                }
                tracing::info!(image = %want.reference, "image staged");
            }
            Err(err) => {
                let error = format!("{err:#}");
                let attempts = self.failures.get(&want.reference).map_or(0, |f| f.attempts) + 1;
                let delay = FIRST_RETRY
                    .saturating_mul(1 << (attempts - 1).min(16))
                    .min(MAX_RETRY);
                tracing::warn!(image = %want.reference, %error, retry_in = ?delay, "pre-staging an image failed");
                self.failures.insert(
                    want.reference.clone(),
                    Failure {
                        attempts,
                        retry_at: Instant::now() + delay,
                        error,
                    },
                );
            }
        }
        self.observe(want).await
    }

    fn publish(&self, statuses: &[ImageStatus]) {
        self.status.send_if_modified(|report| {
            let changed = report.images != statuses;
            report.images = statuses.to_vec();
            changed
        });
    }
}
