//! Reconcile as a pure function: what must be done to turn what runs into
//! what is desired. No I/O here; the executor (`reconciler.rs`) carries the
//! actions out with backoff.

use std::collections::{BTreeMap, BTreeSet};

use outpost_api::manifest::Container;
use outpost_api::workload::SiteState;

use crate::secrets::Prepared;

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
    /// This container's spec hash: a different one means "replace".
    pub spec_hash: String,
    /// The workload's spec hash, which its instances report.
    pub instance_hash: String,
    pub container: Container,
    /// The version of each secret the workload refers to.
    pub secrets: BTreeMap<String, u64>,
    /// Its secrets, opened: filled just before it is created.
    pub prepared: Prepared,
    /// The site network's names it may use, and their addresses (its
    /// `/etc/hosts`); none without a site network.
    pub names: Vec<(String, std::net::Ipv4Addr)>,
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
    /// Create and start a container, under `name` (the desired name, or its
    /// `.next` name while the old generation keeps serving).
    Create {
        name: String,
        want: Box<DesiredContainer>,
    },
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
    /// Give a ready new generation its container's name.
    Rename {
        id: String,
        from: String,
        to: String,
    },
    RemoveNetwork {
        application: String,
    },
}

/// The name of the new generation while the old one keeps serving.
pub fn next_name(name: &str) -> String {
    format!("{name}.next")
}

/// The containers `host` of `site` must run, from the site's desired state.
/// The containers `host` runs. With the site network (`network`), each
/// gets the names it may use (`crate::network::names`), which are part of
/// its spec: turning the network on replaces the containers.
pub fn desired_for_host(state: &SiteState, site: &str, host: &str, network: bool) -> Vec<DesiredContainer> {
    let mut out = Vec::new();
    for workload in &state.workloads {
        let instance_hash = workload.spec_hash();
        let names: Vec<(String, std::net::Ipv4Addr)> = if network {
            crate::network::names(workload)
                .into_iter()
                .map(|n| (n.name, n.address))
                .collect()
        } else {
            Vec::new()
        };
        for instance in workload.instances.iter().filter(|i| i.host == host) {
            for container in &workload.containers {
                let mut spec_hash = workload.container_hash(container);
                if network {
                    spec_hash.push_str("-n");
                }
                out.push(DesiredContainer {
                    name: format!("outpost.{site}.{}.{}", instance.name, container.name),
                    instance: instance.name.clone(),
                    application: workload.application.clone(),
                    service: workload.service.clone(),
                    deployment: workload.deployment.clone(),
                    version: workload.version.clone(),
                    spec_hash,
                    instance_hash: instance_hash.clone(),
                    container: pinned(container, &workload.digests),
                    secrets: workload.secrets.clone(),
                    prepared: Prepared::default(),
                    names: names.clone(),
                });
            }
        }
    }
    out
}

/// The container with its image pinned to the digest its version recorded
/// (the spec hash is of the tag, so this replaces nothing).
fn pinned(container: &Container, digests: &BTreeMap<String, String>) -> Container {
    let mut container = container.clone();
    let image = outpost_api::workload::pinned_image(container.image.as_str(), digests);
    if let Ok(image) = image.parse() {
        container.image = image;
    }
    container
}

/// What to do, in order: networks first, removals before creations (a
/// replaced container frees its name and host ports), network removal last.
///
/// Updates disturb as little as possible: a container whose spec changed
/// gets its new generation beside it (`NAME.next`); the old one is removed,
/// and the new one renamed, only once the new one is `ready` (running, and
/// healthy if it has a probe). A new version that fails leaves the old one
/// serving. A container with fixed host ports cannot run twice, so it is
/// replaced in place, as is everything when the runtime cannot run two
/// generations side by side (`overlap` false: native processes).
pub fn plan(
    desired: &[DesiredContainer],
    observed: &[Observed],
    networks: &BTreeSet<String>,
    ready: &BTreeSet<String>,
    overlap: bool,
) -> Vec<Action> {
    let observed_by_name: BTreeMap<&str, &Observed> = observed.iter().map(|o| (o.name.as_str(), o)).collect();
    let mut known: BTreeSet<String> = BTreeSet::new();
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
    let removal = |o: &Observed, reason| Action::Remove {
        id: o.id.clone(),
        name: o.name.clone(),
        reason,
    };
    let start = |o: &Observed| Action::Start {
        id: o.id.clone(),
        name: o.name.clone(),
        instance: o.instance.clone(),
    };
    for want in desired {
        let next = next_name(&want.name);
        known.insert(want.name.clone());
        known.insert(next.clone());
        let current = observed_by_name.get(want.name.as_str()).copied();
        let successor = observed_by_name.get(next.as_str()).copied();
        let fresh = |o: &Observed| o.spec_hash == want.spec_hash;
        let fixed_ports = !overlap || want.container.ports.iter().any(|p| p.host.is_some());
        let create_as = |name: String| Action::Create {
            name,
            want: Box::new(want.clone()),
        };
        match (current, successor) {
            (None, None) => create.push(create_as(want.name.clone())),
            (None, Some(new)) if fresh(new) => create.push(Action::Rename {
                id: new.id.clone(),
                from: new.name.clone(),
                to: want.name.clone(),
            }),
            (None, Some(stale)) => {
                remove.push(removal(stale, "it is an older update"));
                create.push(create_as(want.name.clone()));
            }
            (Some(have), successor) if fresh(have) => {
                if let Some(stale) = successor {
                    remove.push(removal(stale, "it is an older update"));
                }
                if !have.running {
                    create.push(start(have));
                }
            }
            (Some(old), None) if fixed_ports => {
                remove.push(removal(old, "its spec changed"));
                create.push(create_as(want.name.clone()));
            }
            (Some(_), None) => create.push(create_as(next)),
            (Some(old), Some(new)) if fresh(new) => {
                if ready.contains(&new.id) {
                    remove.push(removal(old, "its update is ready"));
                    create.push(Action::Rename {
                        id: new.id.clone(),
                        from: new.name.clone(),
                        to: want.name.clone(),
                    });
                } else if !new.running {
                    create.push(start(new));
                }
            }
            (Some(_), Some(stale)) => remove.push(removal(stale, "it is an older update")),
        }
    }
    for have in observed.iter().filter(|o| !known.contains(&o.name)) {
        remove.push(removal(have, "it is no longer desired"));
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
