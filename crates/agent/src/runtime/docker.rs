//! The Docker Engine runtime (bollard): one user-defined network per
//! application on this host with service names as DNS aliases, labelled
//! containers, named volumes that survive updates, limits and devices.
//! Restarts are the agent's job: containers get no Docker restart policy.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::{Context, Result};
use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, DeviceMapping, EndpointSettings, HostConfig, Mount,
    MountType, MountVolumeOptions, NetworkCreateRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, ListContainersOptions, ListNetworksOptions, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, StatsOptions,
};
use futures_util::StreamExt;
use outpost_api::manifest::{Health, Protocol};
use outpost_api::telemetry::LogLine;
use tokio::sync::mpsc;

use super::{Runtime, environment, labels};

mod images;
use crate::plan::{Action, DesiredContainer, Observed};
pub use images::local_name;

pub struct Docker {
    client: bollard::Docker,
    site: String,
    host: String,
    credentials: Vec<crate::registry::Credential>,
    /// Images pulled and not yet reported.
    pulled: parking_lot::Mutex<Vec<String>>,
    /// The site's other hosts, asked for an image before the registry.
    peers: std::sync::OnceLock<Arc<crate::peers::Peers>>,
    /// What is being pulled from a registry now (peers are told so).
    pulling: parking_lot::Mutex<BTreeSet<String>>,
}

impl Docker {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket).
    pub async fn connect(
        site: &str,
        host: &str,
        credentials: Vec<crate::registry::Credential>,
    ) -> Result<Docker> {
        let client =
            bollard::Docker::connect_with_local_defaults().context("connecting to the Docker Engine")?;
        client.ping().await.context(
            "the Docker Engine does not answer (is it running, and may this user use its socket?)",
        )?;
        Ok(Docker {
            client,
            site: site.to_string(),
            host: host.to_string(),
            credentials,
            pulled: Default::default(),
            peers: Default::default(),
            pulling: Default::default(),
        })
    }

    /// Asks the site's other hosts for an image before its registry.
    pub fn with_peers(self, peers: Arc<crate::peers::Peers>) -> Docker {
        let _ = self.peers.set(peers);
        self
    }

    fn owner_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}={}", labels::SITE, self.site),
                format!("{}={}", labels::HOST, self.host),
            ],
        )])
    }

    fn network_name(&self, application: &str) -> String {
        format!("outpost.{}.{}.{application}", self.site, self.host)
    }

    fn owner_labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::SITE.to_string(), self.site.clone()),
            (labels::HOST.to_string(), self.host.clone()),
        ])
    }

    async fn create(&self, name: &str, want: &DesiredContainer) -> Result<()> {
        let container = &want.container;
        let image = self
            .ensure_image(container.image.as_str(), &want.prepared.registry)
            .await?;
        let mut container_labels = self.owner_labels();
        for (key, value) in [
            (labels::APPLICATION, &want.application),
            (labels::SERVICE, &want.service),
            (labels::INSTANCE, &want.instance),
            (labels::DEPLOYMENT, &want.deployment),
            (labels::VERSION, &want.version),
            (labels::SPEC_HASH, &want.spec_hash),
        ] {
            container_labels.insert(key.to_string(), value.clone());
        }
        container_labels.insert(labels::CONTAINER.to_string(), container.name.to_string());

        let port_key = |port: &outpost_api::manifest::Port| {
            let protocol = if port.protocol == Protocol::Udp {
                "udp"
            } else {
                "tcp"
            };
            format!("{}/{protocol}", port.container)
        };
        let mut port_bindings = HashMap::new();
        for port in &container.ports {
            if let Some(host_port) = port.host {
                port_bindings.insert(
                    port_key(port),
                    Some(vec![PortBinding {
                        host_ip: None,
                        host_port: Some(host_port.to_string()),
                    }]),
                );
            }
        }
        let resources = container.resources.as_ref();
        let host_config = HostConfig {
            nano_cpus: resources
                .and_then(|r| r.cpu)
                .map(|cpu| i64::from(cpu.0) * 1_000_000),
            memory: resources.and_then(|r| r.memory).map(|m| m.0 as i64),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            devices: (!container.devices.is_empty()).then(|| {
                container
                    .devices
                    .iter()
                    .map(|device| DeviceMapping {
                        path_on_host: Some(device.clone()),
                        path_in_container: Some(device.clone()),
                        cgroup_permissions: Some("rwm".to_string()),
                    })
                    .collect()
            }),
            mounts: (!container.volumes.is_empty() || !want.prepared.mounts.is_empty()).then(|| {
                let secrets = want.prepared.mounts.iter().map(|(source, target)| Mount {
                    typ: Some(MountType::BIND),
                    source: Some(source.display().to_string()),
                    target: Some(target.clone()),
                    read_only: Some(true),
                    ..Default::default()
                });
                container
                    .volumes
                    .iter()
                    .map(|volume| Mount {
                        typ: Some(MountType::VOLUME),
                        source: Some(format!(
                            "outpost.{}.{}.{}",
                            self.site, want.application, volume.name
                        )),
                        target: Some(volume.path.clone()),
                        read_only: Some(volume.read_only),
                        volume_options: Some(MountVolumeOptions {
                            labels: Some(self.owner_labels()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .chain(secrets)
                    .collect()
            }),
            ..Default::default()
        };
        let network = self.network_name(&want.application);
        let body = ContainerCreateBody {
            image: Some(image),
            entrypoint: (!container.command.is_empty()).then(|| container.command.clone()),
            cmd: (!container.args.is_empty()).then(|| container.args.clone()),
            env: Some(
                environment(container, &want.prepared)
                    .iter()
                    .map(|(name, value)| format!("{name}={}", value.as_str()))
                    .collect(),
            ),
            exposed_ports: (!container.ports.is_empty())
                .then(|| container.ports.iter().map(port_key).collect()),
            labels: Some(container_labels),
            host_config: Some(HostConfig {
                extra_hosts: (!want.names.is_empty()).then(|| {
                    want.names
                        .iter()
                        .map(|(name, address)| format!("{name}:{address}"))
                        .collect()
                }),
                ..host_config
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network,
                    EndpointSettings {
                        aliases: Some(vec![want.service.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        let created = self
            .client
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("creating {name}"))?;
        self.client
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .with_context(|| format!("starting {name}"))?;
        Ok(())
    }
}

impl Docker {
    async fn inspect(&self, container_id: &str) -> Result<bollard::models::ContainerInspectResponse> {
        self.client
            .inspect_container(
                container_id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .context("inspecting the container")
    }

    async fn probe_exec(&self, container_id: &str, command: &[String]) -> Result<()> {
        let options = bollard::exec::CreateExecOptions {
            cmd: Some(command.to_vec()),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            ..Default::default()
        };
        let exec = self
            .client
            .create_exec(container_id, options)
            .await
            .context("starting the check")?;
        let detached = bollard::exec::StartExecOptions {
            detach: true,
            ..Default::default()
        };
        self.client
            .start_exec(&exec.id, Some(detached))
            .await
            .context("starting the check")?;
        loop {
            let state = self
                .client
                .inspect_exec(&exec.id)
                .await
                .context("following the check")?;
            if state.running != Some(true) {
                return match state.exit_code {
                    Some(0) => Ok(()),
                    Some(code) => Err(anyhow::anyhow!("{} exited with {code}", command.join(" "))),
                    None => Err(anyhow::anyhow!(
                        "{} did not report an exit code",
                        command.join(" ")
                    )),
                };
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Waits (at most 3 s) until the engine no longer reports a container as running.
async fn wait_until_stopped(client: &bollard::Docker, id: &str) {
    for _ in 0..60 {
        let running = client
            .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state?.running)
            .unwrap_or(false);
        if !running {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The exit code in a status such as `Exited (137) 5 seconds ago`.
fn exit_code(status: &str) -> Option<i64> {
    let start = status.find('(')? + 1;
    let end = status[start..].find(')')? + start;
    status[start..end].parse().ok()
}

/// Success, or an engine answer with `code` (such as 404 for "already
/// gone"), counts as done; anything else is an error about `what`.
fn tolerate<T>(
    result: Result<T, bollard::errors::Error>,
    code: u16,
    what: impl Fn() -> String,
) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code, .. }) if status_code == code => {
            Ok(())
        }
        Err(err) => Err(anyhow::Error::new(err).context(what())),
    }
}

#[async_trait]
impl Runtime for Docker {
    async fn observe(&self) -> Result<Vec<Observed>> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(self.owner_filter()),
            ..Default::default()
        };
        let containers = self
            .client
            .list_containers(Some(options))
            .await
            .context("listing containers")?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
                let name = c.names?.first()?.trim_start_matches('/').to_string();
                Some(Observed {
                    id: c.id?,
                    name,
                    instance: label(labels::INSTANCE),
                    application: label(labels::APPLICATION),
                    service: label(labels::SERVICE),
                    spec_hash: label(labels::SPEC_HASH),
                    running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
                    exit_code: c.status.as_deref().and_then(exit_code),
                })
            })
            .collect())
    }

    async fn networks(&self) -> Result<BTreeSet<String>> {
        let options = ListNetworksOptions {
            filters: Some(self.owner_filter()),
        };
        let networks = self
            .client
            .list_networks(Some(options))
            .await
            .context("listing networks")?;
        Ok(networks
            .into_iter()
            .filter_map(|n| n.labels?.get(labels::APPLICATION).cloned())
            .collect())
    }

    async fn bridge_address(&self) -> Result<Option<std::net::IpAddr>> {
        let bridge = self
            .client
            .inspect_network("bridge", None::<bollard::query_parameters::InspectNetworkOptions>)
            .await
            .context("inspecting the engine's default bridge")?;
        // The gateway, or else (an engine may leave it out) the first
        // address of the subnet, which the engine gives the bridge.
        let gateway = bridge
            .ipam
            .and_then(|ipam| ipam.config)
            .unwrap_or_default()
            .into_iter()
            .find_map(|config| {
                if let Some(gateway) = config.gateway.and_then(|g| g.parse::<std::net::Ipv4Addr>().ok()) {
                    return Some(gateway);
                }
                let subnet = config.subnet?;
                let network: std::net::Ipv4Addr = subnet.split_once('/')?.0.parse().ok()?;
                Some(std::net::Ipv4Addr::from(u32::from(network) + 1))
            })
            .context("the engine's default bridge has no IPv4 address")?;
        Ok(Some(gateway.into()))
    }

    async fn image_digest(&self, image: &str) -> Result<Option<String>> {
        let inspected = match self.client.inspect_image(image).await {
            Ok(inspected) => inspected,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                return Ok(None);
            }
            Err(err) => return Err(err).with_context(|| format!("inspecting {image}")),
        };
        let repository = outpost_api::workload::repository(image);
        Ok(inspected
            .repo_digests
            .unwrap_or_default()
            .iter()
            .find_map(|pinned| {
                let (name, digest) = pinned.split_once('@')?;
                (name == repository).then(|| digest.to_string())
            }))
    }

    async fn image_size(&self, reference: &str) -> Result<Option<(String, u64)>> {
        let Some(reference) = self.resolve(reference).await else {
            return Ok(None);
        };
        match self.client.inspect_image(&reference).await {
            Ok(image) => Ok(Some((
                image.id.unwrap_or_default(),
                image.size.unwrap_or_default().max(0) as u64,
            ))),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(err) => Err(err).with_context(|| format!("inspecting {reference}")),
        }
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        let reference = self
            .resolve(reference)
            .await
            .unwrap_or_else(|| reference.to_string());
        self.client
            .remove_image(
                &reference,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
            .with_context(|| format!("removing {reference}"))?;
        Ok(())
    }

    async fn signal(&self, container_id: &str, signal: &str) -> Result<()> {
        let options = bollard::query_parameters::KillContainerOptions {
            signal: signal.to_string(),
        };
        self.client
            .kill_container(container_id, Some(options))
            .await
            .with_context(|| format!("sending {signal}"))
    }

    async fn apply(&self, action: &Action) -> Result<()> {
        match action {
            Action::EnsureNetwork { application } => {
                let mut network_labels = self.owner_labels();
                network_labels.insert(labels::APPLICATION.to_string(), application.clone());
                let request = NetworkCreateRequest {
                    name: self.network_name(application),
                    driver: Some("bridge".to_string()),
                    labels: Some(network_labels),
                    ..Default::default()
                };
                // 409: created meanwhile (a restart racing a resync), which is fine.
                tolerate(self.client.create_network(request).await, 409, || {
                    "creating a network".to_string()
                })
            }
            Action::Create { name, want } => self.create(name, want).await,
            Action::Rename { id, from, to } => {
                let options = bollard::query_parameters::RenameContainerOptions { name: to.clone() };
                self.client
                    .rename_container(id, options)
                    .await
                    .with_context(|| format!("renaming {from} to {to}"))
            }
            Action::Start { id, name, .. } => self
                .client
                .start_container(id, None::<StartContainerOptions>)
                .await
                .with_context(|| format!("restarting {name}")),
            Action::Remove { id, name, .. } => {
                let options = RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                tolerate(self.client.remove_container(id, Some(options)).await, 404, || {
                    format!("removing {name}")
                })
            }
            Action::RemoveNetwork { application } => {
                let removed = self.client.remove_network(&self.network_name(application)).await;
                tolerate(removed, 404, || "removing a network".to_string())
            }
        }
    }

    async fn logs(&self, container_id: &str, since: i64, tail: usize) -> Result<Vec<LogLine>> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            since: since.clamp(0, i32::MAX as i64) as i32,
            timestamps: true,
            tail: tail.to_string(),
            ..Default::default()
        };
        let mut stream = self.client.logs(container_id, Some(options));
        let mut lines = Vec::new();
        while let Some(output) = stream.next().await {
            let (stream, message) = match output.context("reading a container's logs")? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => ("stdout", message),
                LogOutput::StdErr { message } => ("stderr", message),
                LogOutput::StdIn { .. } => continue,
            };
            let text = String::from_utf8_lossy(&message);
            let text = text.trim_end_matches(['\n', '\r']);
            // With timestamps, each line starts with its RFC 3339 time.
            let (at, text) = text.split_once(' ').unwrap_or(("", text));
            lines.push(LogLine {
                at: at.to_string(),
                stream: stream.to_string(),
                text: text.to_string(),
            });
        }
        Ok(lines)
    }

    async fn usage(&self, container_id: &str) -> Result<Option<(u64, u64)>> {
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stats = self.client.stats(container_id, Some(options));
        let Some(stats) = stats.next().await else {
            return Ok(None);
        };
        let stats = stats.context("reading a container's usage")?;
        let cpu = stats
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage);
        let memory = stats.memory_stats.and_then(|m| m.usage);
        Ok(cpu.zip(memory))
    }

    fn has_images(&self) -> bool {
        true
    }

    async fn fetch(
        &self,
        image: &str,
        credentials: &[crate::registry::Credential],
        progress: &super::Progress<'_>,
    ) -> Result<()> {
        self.pull(image, credentials, progress).await
    }

    fn is_pulling(&self, reference: &str) -> bool {
        self.pulling.lock().contains(reference)
    }

    async fn export_image(&self, reference: &str) -> Result<Option<(String, crate::peers::Archive)>> {
        let Some(local) = self.resolve(reference).await else {
            return Ok(None);
        };
        let id = self
            .client
            .inspect_image(&local)
            .await
            .with_context(|| format!("inspecting {local}"))?
            .id
            .context("the engine gave the image no ID")?;
        // By ID: the archive names no tag, and the receiving host names it
        // as its desired state does.
        let archive = self
            .client
            .export_image(&id)
            .map(|chunk| chunk.map_err(anyhow::Error::from));
        Ok(Some((id, Box::pin(archive))))
    }

    fn pulled(&self) -> Vec<String> {
        std::mem::take(&mut *self.pulled.lock())
    }

    async fn probe(&self, container_id: &str, application: &str, health: &Health) -> Result<()> {
        if let Some(exec) = &health.exec {
            return self.probe_exec(container_id, &exec.command).await;
        }
        let port = match (&health.http, &health.tcp) {
            (Some(http), _) => http.port,
            (None, Some(tcp)) => tcp.port,
            (None, None) => return Ok(()),
        };
        let ip = self.address(container_id, application).await?;
        let address = format!("{ip}:{port}");
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        let Some(http) = &health.http else {
            return Ok(());
        };
        super::http_get(&mut stream, &ip.to_string(), http.path.as_str()).await
    }

    async fn namespace(&self, container_id: &str) -> Result<Option<u32>> {
        let inspected = self.inspect(container_id).await?;
        let pid = inspected.state.and_then(|s| s.pid).filter(|pid| *pid > 0);
        Ok(pid.map(|pid| pid as u32))
    }

    async fn address(&self, container_id: &str, application: &str) -> Result<std::net::IpAddr> {
        let inspected = self.inspect(container_id).await?;
        let network = self.network_name(application);
        let ip = inspected
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut networks| networks.remove(&network))
            .and_then(|endpoint| endpoint.ip_address)
            .filter(|ip| !ip.is_empty())
            .context("the container has no address on its network")?;
        ip.parse()
            .with_context(|| format!("the container's address {ip:?} is not an IP address"))
    }

    fn changes(&self) -> mpsc::Receiver<()> {
        let (sender, receiver) = mpsc::channel(1);
        let client = self.client.clone();
        let mut filters = self.owner_filter();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        filters.insert(
            "event".to_string(),
            ["die", "destroy", "stop", "kill", "oom", "start"]
                .map(String::from)
                .to_vec(),
        );
        tokio::spawn(async move {
            loop {
                let options = EventsOptions {
                    filters: Some(filters.clone()),
                    ..Default::default()
                };
                let mut events = client.events(Some(options));
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) => {
                            tracing::debug!(action = ?event.action, "runtime event");
                            if event.action.as_deref() == Some("die")
                                && let Some(id) = event.actor.and_then(|a| a.id)
                            {
                                // The engine reports `die` before its container
                                // list says so: wait until it does.
                                wait_until_stopped(&client, &id).await;
                            }
                            if sender.is_closed() {
                                return;
                            }
                            // A full channel already holds a wake-up: nothing lost.
                            let _ = sender.try_send(());
                        }
                        Err(err) => {
                            tracing::warn!(%err, "the Docker event stream failed");
                            break;
                        }
                    }
                }
                if sender.is_closed() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        receiver
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_reference_is_kept_under_a_tag_of_its_digest() {
        assert_eq!(
            local_name("127.0.0.1:5000/pos@sha256:abc").as_deref(),
            Some("127.0.0.1:5000/pos:sha256-abc")
        );
        assert_eq!(local_name("127.0.0.1:5000/pos:1"), None);
    }

    #[test]
    fn exit_codes_from_status() {
        assert_eq!(exit_code("Exited (137) 5 seconds ago"), Some(137));
        assert_eq!(exit_code("Exited (0) About a minute ago"), Some(0));
        assert_eq!(exit_code("Up 3 seconds"), None);
    }
}
