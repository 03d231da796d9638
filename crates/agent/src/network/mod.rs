//! The site network: a container reaches every service of its own
//! application, on whichever host of its site it runs, by the service's
//! name, and a service of another application by `SERVICE.APPLICATION`
//! when its manifest declares it under `egress`; nothing else.
//!
//! How: each name a container may use gets a loopback address of its own
//! (`address_of`, from the name's hash) written into the container's
//! `/etc/hosts` when it is created. The agent enters the container's
//! network namespace and listens there, on that address and the target
//! service's TCP ports. A connection to `db:5432` thus reaches the agent,
//! which knows from the listener which service and port it is for, and
//! carries it to an instance of that service: one on this host directly,
//! one on another host over the site's underlay (`relay`: a gRPC stream on
//! the peers' mutual TLS, so no byte crosses the site's LAN in clear).
//! Names stay put when a service moves: only the agent's choice of host
//! changes, within `REFRESH`. Another application's containers have no
//! listener for the name in their namespace, so they reach nothing.
//!
//! Ingress (`ingress.rs`) listens on ports of the host itself and forwards
//! the same way.
//!
//! Only a runtime whose containers have network namespaces of their own
//! takes part (Docker); the process runtime's processes share the host's.

mod ingress;
pub mod relay;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use outpost_api::workload::{SiteState, Workload};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::plan::Observed;
use crate::runtime::Runtime;

/// How often the agent looks for new containers and moved services.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long connecting to one instance may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The loopback address a name stands for inside a container: in
/// 127.128.0.0/9, from the name's hash, so it is the same on every host
/// and after every restart of the agent.
pub fn address_of(name: &str) -> Ipv4Addr {
    let hash = Sha256::digest(name.as_bytes());
    Ipv4Addr::new(127, 128 | (hash[0] & 0x7f), hash[1], 1 + hash[2] % 254)
}

/// A service a connection is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub application: String,
    pub service: String,
}

/// A name a container may use: the service it stands for, and the address
/// it has in the container's `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub name: String,
    pub address: Ipv4Addr,
    pub target: Target,
}

/// The names a container of `workload` may use: its application's
/// services (by name, as the version lists them, so that a container's
/// names do not depend on what else the site runs yet) and its egress
/// (`SERVICE.APPLICATION`, the application without its tenant). A name whose
/// address another took (a hash collision: about one in 30 million per
/// pair) is left out, with a warning.
pub fn names(workload: &Workload) -> Vec<Name> {
    let own = workload
        .siblings
        .iter()
        .map(|service| (service.clone(), workload.application.clone(), service.clone()));
    // An application owner's containers name its other applications as
    // they wrote them (`db.orders`, not `db.acme.orders`).
    let egress = workload.egress.iter().map(|e| {
        (
            format!("{}.{}", e.service.as_str(), e.application.local()),
            e.application.to_string(),
            e.service.to_string(),
        )
    });
    let mut taken: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    let mut out = Vec::new();
    for (name, application, service) in own.chain(egress) {
        let address = address_of(&name);
        match taken.get(&address) {
            Some(other) if *other == name => continue,
            Some(other) => {
                tracing::warn!(%name, %other, %address, "two names of one container share an address; leaving out the second");
                continue;
            }
            None => {}
        }
        taken.insert(address, name.clone());
        out.push(Name {
            name,
            address,
            target: Target { application, service },
        });
    }
    out
}

/// The TCP ports the target's containers declare.
pub fn ports(state: &SiteState, target: &Target) -> BTreeSet<u32> {
    state
        .workloads
        .iter()
        .filter(|w| w.application == target.application && w.service == target.service)
        .flat_map(|w| outpost_api::manifest::tcp_ports(&w.containers))
        .collect()
}

/// The hosts that run an instance of `target` now, each once, in the
/// order of its instances.
pub fn hosts_running(state: &SiteState, target: &Target) -> Vec<String> {
    let mut hosts = Vec::new();
    let instances = state
        .workloads
        .iter()
        .filter(|w| w.application == target.application && w.service == target.service)
        .flat_map(|w| &w.instances);
    for instance in instances {
        if !hosts.contains(&instance.host) {
            hosts.push(instance.host.clone());
        }
    }
    hosts
}

/// Whether a container of `from` may reach `target`: its own application,
/// or a service of `from` declares it as egress.
pub fn allowed(state: &SiteState, from: &str, target: &Target) -> bool {
    from == target.application
        || state
            .workloads
            .iter()
            .filter(|w| w.application == from)
            .flat_map(|w| &w.egress)
            .any(|e| e.application.as_str() == target.application && e.service.as_str() == target.service)
}

/// What the network needs to carry connections: the runtime (for this
/// host's instances), the desired state (where each service runs) and the
/// site's other hosts (`relay`).
pub struct Network {
    pub host: String,
    pub runtime: Arc<dyn Runtime>,
    pub desired: watch::Receiver<(u64, SiteState)>,
    pub relays: Arc<relay::Relays>,
    /// Spreads connections over a service's hosts.
    turn: AtomicUsize,
    /// This host's running containers, by ID: the service each is of, and
    /// its address (learnt once, so a connection costs no engine call).
    local: parking_lot::Mutex<HashMap<String, (Target, std::net::IpAddr)>>,
}

impl Network {
    pub fn new(
        host: &str,
        runtime: Arc<dyn Runtime>,
        desired: watch::Receiver<(u64, SiteState)>,
        relays: Arc<relay::Relays>,
    ) -> Arc<Network> {
        Arc::new(Network {
            host: host.to_string(),
            runtime,
            desired,
            relays,
            turn: AtomicUsize::new(0),
            local: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// Connects to `target`'s `port` on this host: the first running
    /// container of it that accepts.
    pub async fn connect_local(&self, target: &Target, port: u32) -> Result<TcpStream> {
        let mut addresses: Vec<std::net::IpAddr> = self
            .local
            .lock()
            .values()
            .filter(|(of, _)| of == target)
            .map(|(_, address)| *address)
            .collect();
        if addresses.is_empty() {
            // Started since the last refresh: ask the engine.
            let observed = self.runtime.observe().await?;
            for container in observed
                .iter()
                .filter(|o| o.running && o.application == target.application && o.service == target.service)
            {
                if let Ok(address) = self.runtime.address(&container.id, &container.application).await {
                    addresses.push(address);
                }
            }
        }
        let mut last = None;
        for address in addresses {
            let address = SocketAddr::new(address, port as u16);
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(err)) => {
                    last = Some(anyhow::Error::new(err).context(format!("connecting to {address}")))
                }
                Err(_) => {
                    last = Some(anyhow::anyhow!(
                        "{address} did not answer within {CONNECT_TIMEOUT:?}"
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            anyhow::anyhow!(
                "no instance of {}/{} runs on this host",
                target.application,
                target.service
            )
        }))
    }

    /// Carries one connection a container of `from` made (or a client of
    /// an ingress port) to `target`'s `port`, wherever it runs: on this
    /// host first, else on the next host of the site that runs it.
    pub async fn carry<S>(&self, mut client: S, from: &str, target: &Target, port: u32)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut hosts = hosts_running(&self.desired.borrow().1, target);
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        if !hosts.is_empty() {
            let len = hosts.len();
            hosts.rotate_left(turn % len);
        }
        if let Some(local) = hosts.iter().position(|h| *h == self.host) {
            let here = hosts.remove(local);
            hosts.insert(0, here);
        }
        for host in &hosts {
            if *host == self.host {
                match self.connect_local(target, port).await {
                    Ok(mut server) => {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                    Err(err) => {
                        tracing::debug!(service = %target.service, err = format!("{err:#}"), "no local instance answered")
                    }
                }
                continue;
            }
            match self.relays.open(host, from, target, port).await {
                Ok(relayed) => {
                    relay::pump(client, relayed).await;
                    return;
                }
                Err(err) => {
                    tracing::debug!(%host, service = %target.service, err = format!("{err:#}"), "relaying to a peer failed")
                }
            }
        }
        tracing::info!(
            application = %target.application,
            service = %target.service,
            port,
            "no instance of the service answered; closing the connection"
        );
    }

    /// Keeps a listener for each name of each running container of this
    /// host, and the ingress ports, until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut served: HashMap<String, Served> = HashMap::new();
        let mut ingress = ingress::Ingress::default();
        let mut desired = self.desired.clone();
        loop {
            match self.runtime.observe().await {
                Ok(observed) => self.refresh(&observed, &mut served).await,
                Err(err) => tracing::debug!(err = format!("{err:#}"), "cannot see the runtime"),
            }
            ingress.refresh(&self).await;
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = desired.changed() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        for (_, served) in served.drain() {
            served.stop();
        }
        ingress.stop();
    }

    /// Listens in each running container's namespace for the names it may
    /// use; stops listening for containers that are gone.
    async fn refresh(self: &Arc<Self>, observed: &[Observed], served: &mut HashMap<String, Served>) {
        let state = self.desired.borrow().1.clone();
        let running: BTreeSet<&str> = observed
            .iter()
            .filter(|o| o.running)
            .map(|o| o.id.as_str())
            .collect();
        self.learn_addresses(observed).await;
        served.retain(|id, served| {
            let keep = running.contains(id.as_str());
            if !keep {
                served.stop();
            }
            keep
        });
        for container in observed.iter().filter(|o| o.running) {
            let Some(workload) = state
                .workloads
                .iter()
                .find(|w| w.application == container.application && w.service == container.service)
            else {
                continue;
            };
            let wanted: BTreeSet<(SocketAddr, Target)> = names(workload)
                .into_iter()
                .flat_map(|name| {
                    let target = name.target;
                    ports(&state, &target)
                        .into_iter()
                        .map(move |port| (SocketAddr::new(name.address.into(), port as u16), target.clone()))
                })
                .collect();
            // Served already, its process alive: nothing to ask the engine.
            if served.get(&container.id).is_some_and(|s| {
                s.wanted == wanted && std::path::Path::new(&format!("/proc/{}", s.pid)).exists()
            }) {
                continue;
            }
            let pid = match self.runtime.namespace(&container.id).await {
                Ok(Some(pid)) => pid,
                Ok(None) => continue,
                Err(err) => {
                    tracing::debug!(container = %container.name, err = format!("{err:#}"), "no network namespace");
                    continue;
                }
            };
            if served
                .get(&container.id)
                .is_some_and(|s| s.pid == pid && s.wanted == wanted)
            {
                continue;
            }
            if let Some(old) = served.remove(&container.id) {
                old.stop();
            }
            let addresses: Vec<SocketAddr> = wanted.iter().map(|(address, _)| *address).collect();
            let listeners = match tokio::task::spawn_blocking(move || bind_in_namespace(pid, &addresses))
                .await
            {
                Ok(Ok(listeners)) => listeners,
                Ok(Err(err)) => {
                    tracing::warn!(container = %container.name, err = format!("{err:#}"), "cannot listen in the container's network namespace");
                    continue;
                }
                Err(_) => continue,
            };
            let mut tasks = Vec::new();
            for (listener, (_, target)) in listeners.into_iter().zip(&wanted) {
                let listener = match listener
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(listener))
                {
                    Ok(listener) => listener,
                    Err(err) => {
                        tracing::warn!(%err, "registering a listener");
                        continue;
                    }
                };
                let (network, from, target) = (self.clone(), container.application.clone(), target.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        };
                        let Ok(port) = listener.local_addr().map(|a| u32::from(a.port())) else {
                            continue;
                        };
                        let (network, from, target) = (network.clone(), from.clone(), target.clone());
                        tokio::spawn(async move {
                            let _ = client.set_nodelay(true);
                            network.carry(client, &from, &target, port).await;
                        });
                    }
                }));
            }
            tracing::debug!(container = %container.name, names = wanted.len(), "listening for the container's service names");
            served.insert(container.id.clone(), Served { pid, wanted, tasks });
        }
    }
}

impl Network {
    /// Keeps the address of each running container (one engine call per
    /// new container).
    async fn learn_addresses(&self, observed: &[Observed]) {
        let running: BTreeSet<&str> = observed
            .iter()
            .filter(|o| o.running)
            .map(|o| o.id.as_str())
            .collect();
        self.local.lock().retain(|id, _| running.contains(id.as_str()));
        for container in observed.iter().filter(|o| o.running) {
            if self.local.lock().contains_key(&container.id) {
                continue;
            }
            if let Ok(address) = self.runtime.address(&container.id, &container.application).await {
                let target = Target {
                    application: container.application.clone(),
                    service: container.service.clone(),
                };
                self.local.lock().insert(container.id.clone(), (target, address));
            }
        }
    }
}

/// The listeners of one container.
struct Served {
    pid: u32,
    wanted: BTreeSet<(SocketAddr, Target)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Served {
    /// Stops listening; connections already carried go on.
    fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds `addresses` inside the network namespace of process `pid`, on a
/// thread of its own that enters the namespace and ends with the binding
/// (sockets stay in the namespace they were made in).
fn bind_in_namespace(pid: u32, addresses: &[SocketAddr]) -> Result<Vec<std::net::TcpListener>> {
    let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .with_context(|| format!("opening the network namespace of process {pid}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("entering the container's network namespace (the agent needs CAP_SYS_ADMIN)")?;
                addresses
                    .iter()
                    .map(|address| {
                        std::net::TcpListener::bind(address)
                            .with_context(|| format!("listening on {address}"))
                    })
                    .collect()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
    })
}

#[cfg(test)]
mod tests;
