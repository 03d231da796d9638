//! Reconcile as a pure function: what must be done to turn what runs into
//! what is desired. No I/O here; the executor (`reconciler.rs`) carries the
//! actions out with backoff.

use std::collections::{BTreeMap, BTreeSet};

use outpost_api::manifest::Container;
use outpost_api::workload::SiteState;

/// One container this host must run.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredContainer {
    /// The runtime's name for it: `outpost.SITE.INSTANCE.CONTAINER`, unique
    /// even when agents of several sites share one container engine.
    pub name: String,
    pub instance: String,
    pub application: String,
    pub service: String,
    pub deployment: String,
    pub version: String,
    /// The workload's spec hash: a different one means "replace".
    pub spec_hash: String,
    pub container: Container,
}

/// One container the runtime has that carries this agent's labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub id: String,
    pub name: String,
    pub instance: String,
    pub application: String,
    pub service: String,
    pub spec_hash: String,
    pub running: bool,
    pub exit_code: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The application's network, before its first container.
    EnsureNetwork {
        application: String,
    },
    Create(Box<DesiredContainer>),
    /// Start an exited container again (the agent restarts, not Docker).
    Start {
        id: String,
        name: String,
        instance: String,
    },
    Remove {
        id: String,
        name: String,
        reason: &'static str,
    },
    RemoveNetwork {
        application: String,
    },
}

/// The containers `host` of `site` must run, from the site's desired state.
pub fn desired_for_host(state: &SiteState, site: &str, host: &str) -> Vec<DesiredContainer> {
    let mut out = Vec::new();
    for workload in &state.workloads {
        let spec_hash = workload.spec_hash();
        for instance in workload.instances.iter().filter(|i| i.host == host) {
            for container in &workload.containers {
                out.push(DesiredContainer {
                    name: format!("outpost.{site}.{}.{}", instance.name, container.name),
                    instance: instance.name.clone(),
                    application: workload.application.clone(),
                    service: workload.service.clone(),
                    deployment: workload.deployment.clone(),
                    version: workload.version.clone(),
                    spec_hash: spec_hash.clone(),
                    container: container.clone(),
                });
            }
        }
    }
    out
}

/// What to do, in order: networks first, removals before creations (a
/// replaced container frees its name and host ports), network removal last.
pub fn plan(desired: &[DesiredContainer], observed: &[Observed], networks: &BTreeSet<String>) -> Vec<Action> {
    let observed_by_name: BTreeMap<&str, &Observed> = observed.iter().map(|o| (o.name.as_str(), o)).collect();
    let desired_names: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    let wanted_networks: BTreeSet<&str> = desired.iter().map(|d| d.application.as_str()).collect();

    let mut ensure = Vec::new();
    let mut remove = Vec::new();
    let mut create = Vec::new();
    for application in &wanted_networks {
        if !networks.contains(*application) {
            ensure.push(Action::EnsureNetwork {
                application: application.to_string(),
            });
        }
    }
    for want in desired {
        match observed_by_name.get(want.name.as_str()) {
            None => create.push(Action::Create(Box::new(want.clone()))),
            Some(have) if have.spec_hash != want.spec_hash => {
                remove.push(Action::Remove {
                    id: have.id.clone(),
                    name: have.name.clone(),
                    reason: "its spec changed",
                });
                create.push(Action::Create(Box::new(want.clone())));
            }
            Some(have) if !have.running => create.push(Action::Start {
                id: have.id.clone(),
                name: have.name.clone(),
                instance: have.instance.clone(),
            }),
            Some(_) => {}
        }
    }
    for have in observed
        .iter()
        .filter(|o| !desired_names.contains(o.name.as_str()))
    {
        remove.push(Action::Remove {
            id: have.id.clone(),
            name: have.name.clone(),
            reason: "it is no longer desired",
        });
    }
    let unwanted_networks = networks
        .iter()
        .filter(|n| !wanted_networks.contains(n.as_str()))
        .map(|application| Action::RemoveNetwork {
            application: application.clone(),
        });
    ensure
        .into_iter()
        .chain(remove)
        .chain(create)
        .chain(unwanted_networks)
        .collect()
}

#[cfg(test)]
mod tests;
