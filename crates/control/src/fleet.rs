//! The fleet: what each site should run, and who is connected.
//!
//! `recompute` compiles sites × deployments × application versions into one
//! `SiteState` per site (see `outpost_api::workload`), stores the states
//! that changed with the next revision, and wakes the sessions of those
//! sites. It runs after every apply or delete and whenever a host enrolls or
//! its facts change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use outpost_api::manifest::{ApplicationSpec, Deployment, Kind, Manifest, Site};
use outpost_api::workload::{SiteState, assign_hosts, compile_site};
use tokio::sync::watch;

use crate::store::{Storage, StoreError};

/// Everything what sites run is compiled from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub sites: Vec<Site>,
    pub deployments: Vec<Deployment>,
    /// Per application: its current version and every kept version's spec.
    pub versions: HashMap<String, (String, HashMap<String, ApplicationSpec>)>,
    /// Per site: its hosts and what host selectors see of each.
    pub hosts: HashMap<String, BTreeMap<String, BTreeMap<String, String>>>,
}

impl Inputs {
    /// What every site runs.
    pub fn compile(&self) -> BTreeMap<String, SiteState> {
        let lookup = |application: &str, version: Option<&str>| {
            let (current, specs) = self.versions.get(application)?;
            specs.get(version.unwrap_or(current)).cloned()
        };
        let no_hosts = BTreeMap::new();
        self.sites
            .iter()
            .map(|site| {
                let name = site.metadata.name.to_string();
                let mut state = compile_site(site, &self.deployments, lookup);
                assign_hosts(&mut state, self.hosts.get(&name).unwrap_or(&no_hosts));
                (name, state)
            })
            .collect()
    }
}

pub struct Fleet {
    store: Arc<dyn Storage>,
    revisions: Mutex<HashMap<String, watch::Sender<i64>>>,
    online: Mutex<HashSet<(String, String)>>,
    recompute: tokio::sync::Mutex<()>,
}

/// Keeps a host marked online while its session lives.
pub struct Connected {
    fleet: Arc<Fleet>,
    key: (String, String),
}

impl Drop for Connected {
    fn drop(&mut self) {
        if let Ok(mut online) = self.fleet.online.lock() {
            online.remove(&self.key);
        }
    }
}

impl Fleet {
    pub fn new(store: Arc<dyn Storage>) -> Arc<Fleet> {
        Arc::new(Fleet {
            store,
            revisions: Mutex::new(HashMap::new()),
            online: Mutex::new(HashSet::new()),
            recompute: tokio::sync::Mutex::new(()),
        })
    }

    /// A receiver that changes whenever the site's revision does.
    pub fn subscribe(&self, site: &str) -> watch::Receiver<i64> {
        let mut revisions = self.revisions.lock().unwrap_or_else(|e| e.into_inner());
        revisions
            .entry(site.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Marks a host online until the returned guard is dropped. A second
    /// session for the same host replaces the first in the count.
    pub fn connect(self: &Arc<Self>, site: &str, host: &str) -> Connected {
        let key = (site.to_string(), host.to_string());
        self.online
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        Connected {
            fleet: self.clone(),
            key,
        }
    }

    pub fn is_online(&self, site: &str, host: &str) -> bool {
        self.online
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(site.to_string(), host.to_string()))
    }

    /// Reads everything what sites run is compiled from.
    pub async fn inputs(&self) -> Result<Inputs, StoreError> {
        let typed = |kind| async move {
            let objects = self.store.list(kind).await?;
            objects
                .iter()
                .map(|o| o.manifest().map_err(StoreError::from))
                .collect::<Result<Vec<Manifest>, StoreError>>()
        };
        let sites: Vec<Site> = typed(Kind::Site)
            .await?
            .into_iter()
            .filter_map(Manifest::into_site)
            .collect();
        let deployments: Vec<Deployment> = typed(Kind::Deployment)
            .await?
            .into_iter()
            .filter_map(Manifest::into_deployment)
            .collect();
        let mut versions = HashMap::new();
        for name in deployments
            .iter()
            .map(|d| d.spec.application.to_string())
            .collect::<HashSet<_>>()
        {
            let history = match self.store.application_history(&name).await {
                Ok(history) => history,
                Err(StoreError::NotFound { .. }) => continue,
                Err(err) => return Err(err),
            };
            let current = history
                .iter()
                .find(|v| v.current)
                .map(|v| v.version.clone())
                .unwrap_or_default();
            let specs = history
                .into_iter()
                .filter_map(|v| serde_json::from_value(v.spec).ok().map(|spec| (v.version, spec)))
                .collect();
            versions.insert(name, (current, specs));
        }
        let mut hosts: HashMap<String, BTreeMap<String, BTreeMap<String, String>>> = HashMap::new();
        for host in self.store.hosts().await? {
            let labels = host.selector_labels();
            hosts.entry(host.site).or_default().insert(host.name, labels);
        }
        Ok(Inputs {
            sites,
            deployments,
            versions,
            hosts,
        })
    }

    /// Compiles and stores every site's desired state; wakes changed sites.
    pub async fn recompute(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.recompute.lock().await;
        let mut states = self.inputs().await?.compile();
        // A deleted site runs nothing; its hosts are told so.
        for site in self.store.site_states().await?.into_keys() {
            states.entry(site).or_insert_with(SiteState::default);
        }
        let changed = self.store.save_site_states(&states).await?;
        let revisions = self.revisions.lock().unwrap_or_else(|e| e.into_inner());
        for (site, revision) in changed {
            tracing::info!(%site, revision, "site desired state changed");
            if let Some(sender) = revisions.get(&site) {
                sender.send_replace(revision);
            }
        }
        Ok(())
    }
}
