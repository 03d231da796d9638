//! Where a site's instances run: central placement on the hosts that
//! match and have room (`assign_hosts`), and what the site itself moves
//! off hosts it lost (`reschedule`, `apply_moves`), by the same rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Instance, PlacementFailure, SiteState, Workload};
use crate::manifest::Failover;
use crate::quantity::{Cpu, Size};

/// What a host can give, from its facts (`cpus`, `memory`, `gpu`); a fact
/// the host does not report does not limit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Room {
    cpu: Option<u64>,
    memory: Option<u64>,
    gpu: u64,
}

/// What one instance of a workload asks for: the sum of its containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Request {
    cpu: u64,
    memory: u64,
    gpu: u64,
}

fn room(labels: &BTreeMap<String, String>) -> Room {
    Room {
        cpu: labels
            .get("cpus")
            .and_then(|c| c.parse::<u64>().ok())
            .map(|c| c * 1000),
        memory: labels
            .get("memory")
            .and_then(|m| m.parse::<Size>().ok())
            .map(|m| m.0),
        gpu: labels.get("gpu").and_then(|g| g.parse().ok()).unwrap_or(0),
    }
}

fn request(workload: &Workload) -> Request {
    workload.containers.iter().fold(Request::default(), |sum, c| {
        let r = c.resources.as_ref();
        Request {
            cpu: sum.cpu + r.and_then(|r| r.cpu).map_or(0, |c| u64::from(c.0)),
            memory: sum.memory + r.and_then(|r| r.memory).map_or(0, |m| m.0),
            gpu: sum.gpu + r.and_then(|r| r.gpu).map_or(0, u64::from),
        }
    })
}

/// Why `want` does not fit in `free`, if it does not.
fn shortfall(free: &Room, want: &Request) -> Option<String> {
    if let Some(cpu) = free.cpu
        && want.cpu > cpu
    {
        return Some(format!(
            "cpu {} free < {} requested",
            Cpu(cpu as u32),
            Cpu(want.cpu as u32)
        ));
    }
    if let Some(memory) = free.memory
        && want.memory > memory
    {
        return Some(format!(
            "memory {} free < {} requested",
            Size(memory),
            Size(want.memory)
        ));
    }
    if want.gpu > free.gpu {
        return Some(format!("gpu {} free < {} requested", free.gpu, want.gpu));
    }
    None
}

fn take(free: &mut Room, want: &Request) {
    free.cpu = free.cpu.map(|c| c - want.cpu);
    free.memory = free.memory.map(|m| m - want.memory);
    free.gpu -= want.gpu;
}

/// Places instances on hosts, workloads in order. A host is a candidate
/// when the service's host selector matches its labels (discovered facts
/// and the operator's labels) and it has room for the requested cpu,
/// memory and gpus beside what is already placed. A per-host service gets
/// an instance on every candidate; `replicas` go one by one to the candidate
/// running the fewest of them (then by name). What cannot be placed is a
/// placement failure that says why, host by host. A site with no host yet
/// places nothing and fails nothing: it waits.
pub fn assign_hosts(state: &mut SiteState, hosts: &BTreeMap<String, BTreeMap<String, String>>) {
    if hosts.is_empty() {
        return;
    }
    let mut free: BTreeMap<&str, Room> = hosts
        .iter()
        .map(|(name, labels)| (name.as_str(), room(labels)))
        .collect();
    let mut placed = Vec::new();
    for mut workload in std::mem::take(&mut state.workloads) {
        let want = request(&workload);
        let prefix = format!("{}-{}", workload.application, workload.service);
        let matching: Vec<&str> = hosts
            .iter()
            .filter(|(_, labels)| workload.hosts.as_ref().is_none_or(|s| s.matches(labels)))
            .map(|(name, _)| name.as_str())
            .collect();
        let wanted = if workload.per_host {
            matching.len()
        } else {
            workload.replicas as usize
        };
        let mut instances: Vec<Instance> = Vec::new();
        for n in 0..wanted {
            let fits = |host: &str| shortfall(&free[host], &want).is_none();
            let host = if workload.per_host {
                Some(matching[n]).filter(|h| fits(h))
            } else {
                matching
                    .iter()
                    .copied()
                    .filter(|h| fits(h))
                    .min_by_key(|h| instances.iter().filter(|i| i.host == *h).count())
            };
            let Some(host) = host else { continue };
            if let Some(room) = free.get_mut(host) {
                take(room, &want);
            }
            let name = if workload.per_host {
                format!("{prefix}-{host}")
            } else {
                format!("{prefix}-{n}")
            };
            instances.push(Instance {
                name,
                host: host.to_string(),
                moved_from: None,
            });
        }
        if instances.len() < wanted || wanted == 0 {
            let why: Vec<String> = hosts
                .iter()
                .filter(|(name, _)| !instances.iter().any(|i| i.host == **name))
                .map(|(name, labels)| {
                    let reason = workload
                        .hosts
                        .as_ref()
                        .and_then(|s| s.explain(labels))
                        .or_else(|| shortfall(&free[name.as_str()], &want))
                        .unwrap_or_else(|| "full".to_string());
                    format!("{name}: {reason}")
                })
                .collect();
            let reason = if instances.is_empty() {
                format!(
                    "service {}: no host can run it ({})",
                    workload.service,
                    why.join("; ")
                )
            } else {
                let placed = instances.len();
                format!(
                    "service {}: {placed} of {wanted} replicas placed ({})",
                    workload.service,
                    why.join("; ")
                )
            };
            state.failures.push(PlacementFailure {
                deployment: workload.deployment.clone(),
                application: workload.application.clone(),
                reason,
            });
        }
        if !instances.is_empty() {
            workload.instances = instances;
            placed.push(workload);
        }
    }
    state.workloads = placed;
}

/// An instance a site moved off a host it lost.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Moved {
    /// The workload's `application/service`.
    pub workload: String,
    pub instance: String,
    pub from: String,
    pub to: String,
}

/// What a site does about the hosts it lost: the instances it moves, and
/// those it cannot, with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rescheduled {
    pub moved: Vec<Moved>,
    pub stranded: Vec<(String, String)>,
}

/// Where the instances of `lost` hosts go, decided at the site. `hosts`
/// holds the labels of every host of the site (lost ones too); a survivor
/// takes an instance when the service's host selector matches it and it
/// has room beside what already runs there, the fewest of the service's
/// instances first (then by name), as [`assign_hosts`] places. `stay`
/// services and per-host ones never move; a `singleton` moves only with
/// `majority` (a majority of the site's hosts, or the control plane as
/// witness, behind the decision).
pub fn reschedule(
    state: &SiteState,
    hosts: &BTreeMap<String, BTreeMap<String, String>>,
    lost: &std::collections::BTreeSet<String>,
    majority: bool,
) -> Rescheduled {
    let mut free: BTreeMap<&str, Room> = hosts
        .iter()
        .filter(|(name, _)| !lost.contains(*name))
        .map(|(name, labels)| (name.as_str(), room(labels)))
        .collect();
    for workload in &state.workloads {
        let want = request(workload);
        for instance in &workload.instances {
            if let Some(room) = free.get_mut(instance.host.as_str()) {
                take_up_to(room, &want);
            }
        }
    }
    let mut out = Rescheduled::default();
    for workload in &state.workloads {
        let want = request(workload);
        let mut running: Vec<&str> = workload
            .instances
            .iter()
            .filter(|i| !lost.contains(&i.host))
            .map(|i| i.host.as_str())
            .collect();
        for instance in workload.instances.iter().filter(|i| lost.contains(&i.host)) {
            let why = match workload.failover {
                _ if workload.per_host => Some("per-host: it runs on every host, and stays".to_string()),
                Failover::Stay => Some("failover: stay".to_string()),
                Failover::Singleton if !majority => Some(
                    "failover: singleton, and no majority of the site's hosts (or the control plane) is behind a move"
                        .to_string(),
                ),
                Failover::Move | Failover::Singleton => None,
            };
            if let Some(why) = why {
                out.stranded.push((instance.name.clone(), why));
                continue;
            }
            let host = free
                .iter()
                .filter(|(name, room)| {
                    workload.hosts.as_ref().is_none_or(|s| s.matches(&hosts[**name]))
                        && shortfall(room, &want).is_none()
                })
                .map(|(name, _)| *name)
                .min_by_key(|name| (running.iter().filter(|h| *h == name).count(), *name));
            let Some(host) = host else {
                out.stranded.push((
                    instance.name.clone(),
                    "no surviving host matches its selector and has room".to_string(),
                ));
                continue;
            };
            if let Some(room) = free.get_mut(host) {
                take(room, &want);
            }
            running.push(host);
            out.moved.push(Moved {
                workload: workload.key(),
                instance: instance.name.clone(),
                from: instance.host.clone(),
                to: host.to_string(),
            });
        }
    }
    out
}

/// Takes what an instance already running uses, but no more than is left
/// (the control plane may have placed beyond a host's room before its
/// facts changed).
fn take_up_to(free: &mut Room, want: &Request) {
    free.cpu = free.cpu.map(|c| c.saturating_sub(want.cpu));
    free.memory = free.memory.map(|m| m.saturating_sub(want.memory));
    free.gpu = free.gpu.saturating_sub(want.gpu);
}

/// `state` with `moved` applied: each moved instance runs on its new host.
/// A move whose instance no longer runs where it was moved from (the
/// control plane placed it anew) is void.
pub fn apply_moves(state: &mut SiteState, moved: &[Moved]) {
    for workload in &mut state.workloads {
        let key = workload.key();
        for instance in &mut workload.instances {
            if let Some(m) = moved
                .iter()
                .find(|m| m.workload == key && m.instance == instance.name && m.from == instance.host)
            {
                instance.host = m.to.clone();
                instance.moved_from = Some(m.from.clone());
            }
        }
    }
}
