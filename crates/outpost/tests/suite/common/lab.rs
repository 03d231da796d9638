//! The multi-host harness: a control plane and agents as containers of the
//! project's own binary (`scripts/outpost-image`, no registry) on a private
//! Docker network. Agents use the mounted Docker socket and touch only
//! their own containers. Hosts can be cut off (`docker network
//! disconnect`), healed, killed and restarted.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use super::{BIN, Run, cli_with, docker, docker_maybe, eventually, unique_site};

/// The image of this test binary's `outpost`, built once per test process.
fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let meta = std::fs::metadata(BIN).unwrap();
        let stamp = meta
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let tag = format!("outpost-local/outpost:test-{stamp}-{}", meta.len());
        if docker_maybe(&["image", "inspect", "-f", "{{.Id}}", &tag])
            .unwrap_or_default()
            .trim()
            .is_empty()
        {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/outpost-image");
            let status = std::process::Command::new(script)
                .arg(BIN)
                .env("OUTPOST_IMAGE", &tag)
                .status()
                .unwrap();
            assert!(status.success(), "scripts/outpost-image failed");
        }
        tag
    })
}

/// What a host with an engine of its own needs: the machine's own Docker
/// binaries (read-only), and the rights to run an engine (no
/// `--privileged`: this machine's engine cannot grant every capability).
const ENGINE_HOST_ARGS: &[&str] = &[
    "--cap-add",
    "SYS_ADMIN",
    "--cap-add",
    "NET_ADMIN",
    "--cap-add",
    "NET_RAW",
    "--cap-add",
    "MKNOD",
    "--cap-add",
    "SYS_PTRACE",
    "--security-opt",
    "apparmor=unconfined",
    "--security-opt",
    "seccomp=unconfined",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup",
    "-v",
    "/usr:/usr:ro",
    "-v",
    "/lib:/lib:ro",
    "-v",
    "/lib64:/lib64:ro",
    "-v",
    "/bin:/bin:ro",
    "-v",
    "/sbin:/sbin:ro",
    "-v",
    "/etc/alternatives:/etc/alternatives:ro",
    "-e",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
];

/// An empty root file system, for hosts that run the machine's own
/// binaries (mounted read-only) in a namespace of their own.
fn engine_host_image() -> &'static str {
    static IMAGE: OnceLock<&'static str> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let tag = "outpost-local/engine-host:2";
        if docker_maybe(&["image", "inspect", "-f", "{{.Id}}", tag]).is_none() {
            let root = tempfile::tempdir().unwrap();
            for dir in [
                "usr", "lib", "lib64", "bin", "sbin", "etc", "tmp", "run", "var/run", "var/lib", "var/log",
                "proc", "sys", "dev", "opt",
            ] {
                std::fs::create_dir_all(root.path().join(dir)).unwrap();
            }
            // tcpdump switches to a user it looks up (`-Z root`).
            std::fs::write(root.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
            std::fs::write(root.path().join("etc/group"), "root:x:0:\n").unwrap();
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "chmod 1777 {0}/tmp && tar -C {0} -c . | docker import - {tag} >/dev/null",
                    root.path().display()
                ))
                .status()
                .unwrap();
            assert!(status.success(), "importing {tag}");
        }
        tag
    })
}

pub struct Lab {
    pub name: String,
    pub control: String,
    dir: tempfile::TempDir,
    agents: Vec<String>,
    sites: Vec<String>,
}

impl Lab {
    /// A private network and a control plane on it; the CLI reaches the
    /// control plane through a loopback port.
    pub fn start() -> Lab {
        let image = image();
        let name = unique_site("lab");
        assert!(
            !docker(&["network", "create", &name]).trim().is_empty(),
            "docker network create failed"
        );
        let control = format!("{name}-control");
        let lab = Lab {
            control: control.clone(),
            dir: tempfile::tempdir().unwrap(),
            agents: Vec::new(),
            sites: Vec::new(),
            name,
        };
        docker(&[
            "run",
            "-d",
            "--name",
            &control,
            "--network",
            &lab.name,
            "-p",
            "127.0.0.1::7800",
            image,
            "control",
            "--data-dir",
            "/var/lib/outpost",
            "--tls-san",
            &control,
        ]);
        let admin = lab.dir.path().join("admin.yaml");
        eventually(Duration::from_secs(30), "the control plane's admin.yaml", || {
            let copied = std::process::Command::new("docker")
                .args([
                    "cp",
                    &format!("{control}:/var/lib/outpost/admin.yaml"),
                    admin.to_str().unwrap(),
                ])
                .output()
                .ok()?;
            copied.status.success().then_some(())
        });
        std::fs::copy(&admin, lab.dir.path().join("admin.orig.yaml")).unwrap();
        lab.point_cli_at_control();
        lab
    }

    /// Rewrites the CLI's configuration for the loopback port Docker gave
    /// the control plane (a new one each time its container starts).
    fn point_cli_at_control(&self) {
        let port = docker(&["port", &self.control, "7800/tcp"]);
        let address = port.lines().next().unwrap().trim().to_string();
        let text = std::fs::read_to_string(self.dir.path().join("admin.orig.yaml")).unwrap();
        let text = text.replace("https://127.0.0.1:7800", &format!("https://{address}"));
        std::fs::write(self.dir.path().join("admin.yaml"), text).unwrap();
        eventually(Duration::from_secs(30), "the control plane answering", || {
            (self.cli(&["get", "sites"]).code == 0).then_some(())
        });
    }

    /// Kills the control plane outright (SIGKILL) and starts it again on its data.
    pub fn kill_and_restart_control(&self) {
        self.kill(&self.control);
        self.start_again(&self.control);
        self.point_cli_at_control();
    }

    pub fn cli(&self, args: &[&str]) -> Run {
        let config = self.dir.path().join("admin.yaml");
        cli_with(args, &[("OUTPOST_CONFIG", config.to_str().unwrap())], None)
    }

    pub fn apply(&self, text: &str) -> Run {
        let config = self.dir.path().join("admin.yaml");
        cli_with(
            &["apply", "-f", "-"],
            &[("OUTPOST_CONFIG", config.to_str().unwrap())],
            Some(text),
        )
    }

    /// Starts the agent of a new host of `site` as a container; returns its name.
    pub fn add_agent(&mut self, site: &str, host: &str) -> String {
        self.add_agent_with(site, host, &[])
    }

    /// Starts the agent of a new host of `site` that clusters with the
    /// site's other hosts over the lab network (`--site-listen`), with
    /// more of the agent's flags.
    pub fn add_cluster_agent(&mut self, site: &str, host: &str, args: &[&str]) -> String {
        let address = format!("{}-{host}:7802", self.name);
        let mut all = vec!["--site-listen", "0.0.0.0:7802", "--site-address", &address];
        all.extend(args);
        self.add_agent_with(site, host, &all)
    }

    /// The processes of a host's agent container whose command line holds
    /// `command` (the process runtime), by pid.
    pub fn processes(&self, container: &str, command: &str) -> Vec<String> {
        let output = std::process::Command::new("docker")
            .args(["exec", container, "ps", "-o", "pid,args"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.contains(command))
            .filter_map(|line| line.split_whitespace().next().map(str::to_string))
            .collect()
    }

    fn add_agent_with(&mut self, site: &str, host: &str, args: &[&str]) -> String {
        let run = self.cli(&["token", "create", "--site", site]);
        let token = run.success().lines().next().unwrap().to_string();
        let container = format!("{}-{host}", self.name);
        docker(
            &[
                "run",
                "-d",
                "-e",
                "RUST_LOG=info,openraft=warn",
                "--name",
                &container,
                "--network",
                &self.name,
                "-v",
                "/var/run/docker.sock:/var/run/docker.sock",
                "-e",
                &format!("OUTPOST_JOIN_TOKEN={token}"),
                image(),
                "agent",
                "--server",
                &format!("https://{}:7801", self.control),
                "--host-name",
                host,
                "--data-dir",
                "/var/lib/outpost-agent",
            ]
            .iter()
            .chain(args)
            .copied()
            .collect::<Vec<_>>(),
        );
        self.agents.push(container.clone());
        self.sites.push(site.to_string());
        container
    }

    /// Starts a host of `site` with a Docker Engine of its own, in a
    /// network namespace of its own (`engine_host_image`): its agent runs
    /// its containers there and clusters with the site's other hosts over
    /// the lab network, as on separate machines. The engine holds the
    /// test image (`outpost-local/busybox:1`) before the agent starts.
    pub fn add_engine_host(&mut self, site: &str, host: &str, args: &[&str]) -> String {
        let run = self.cli(&["token", "create", "--site", site]);
        let token = run.success().lines().next().unwrap().to_string();
        let container = format!("{}-{host}", self.name);
        let mut agent = vec![
            "/opt/outpost".to_string(),
            "agent".into(),
            "--server".into(),
            format!("https://{}:7801", self.control),
            "--host-name".into(),
            host.into(),
            "--data-dir".into(),
            "/var/lib/outpost-agent".into(),
            "--site-listen".into(),
            "0.0.0.0:7802".into(),
            "--site-address".into(),
            format!("{container}:7802"),
        ];
        agent.extend(args.iter().map(|a| a.to_string()));
        let script = format!(
            "dockerd --storage-driver vfs >/tmp/dockerd.log 2>&1 &\n\
             until [ -e /tmp/image-loaded ]; do sleep 0.2; done\n\
             exec {}",
            agent.join(" ")
        );
        let binary = format!("{BIN}:/opt/outpost:ro");
        let mut run: Vec<&str> = vec![
            "run",
            "-d",
            "--name",
            &container,
            "--hostname",
            host,
            "--network",
            &self.name,
            "-e",
            "RUST_LOG=info,openraft=warn",
            "-e",
        ];
        let join = format!("OUTPOST_JOIN_TOKEN={token}");
        run.push(&join);
        run.extend(ENGINE_HOST_ARGS);
        run.extend(["-v", &binary, engine_host_image(), "/bin/sh", "-c", &script]);
        docker(&run);
        eventually(Duration::from_secs(60), "the host's Docker Engine", || {
            docker_maybe(&["exec", &container, "docker", "info", "--format", "{{.ID}}"]).map(|_| ())
        });
        let loaded = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save outpost-local/busybox:1 | docker exec -i {container} docker load -q && docker exec {container} touch /tmp/image-loaded"
            ))
            .status()
            .unwrap();
        assert!(loaded.success(), "loading the test image into {container}");
        self.agents.push(container.clone());
        self.sites.push(site.to_string());
        container
    }

    /// Runs `docker` on the engine of an engine host (`add_engine_host`).
    pub fn host_docker(&self, container: &str, args: &[&str]) -> Option<String> {
        let mut all = vec!["docker"];
        all.extend(args);
        self.host_exec(container, &all)
    }

    /// Runs a command on a host (in its container): its output, if it succeeded.
    pub fn host_exec(&self, container: &str, args: &[&str]) -> Option<String> {
        let output = std::process::Command::new("docker")
            .args(["exec", container])
            .args(args)
            .output()
            .unwrap();
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Each host of `site` and its role in the site's Raft group, as `get
    /// hosts` shows them, by name.
    pub fn roles(&self, site: &str) -> Vec<(String, String)> {
        let text = self.cli(&["get", "hosts", "-o", "json"]).success().to_string();
        let hosts: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut roles: Vec<(String, String)> = hosts["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["site"] == site)
            .map(|h| {
                (
                    h["name"].as_str().unwrap().to_string(),
                    h["role"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect();
        roles.sort();
        roles
    }

    /// Cuts every host's uplink at once: the control plane stops
    /// answering (its container is frozen, connections hang).
    pub fn cut_uplink(&self) {
        docker(&["pause", &self.control]);
    }

    pub fn heal_uplink(&self) {
        docker(&["unpause", &self.control]);
    }

    /// Cuts a host (its container) off the network.
    pub fn partition(&self, container: &str) {
        docker(&["network", "disconnect", &self.name, container]);
    }

    pub fn heal(&self, container: &str) {
        docker(&["network", "connect", &self.name, container]);
    }

    /// Kills a host outright (SIGKILL).
    pub fn kill(&self, container: &str) {
        docker(&["kill", container]);
    }

    /// Starts a host again (after `kill`), with its disk and its network as they were.
    pub fn start_again(&self, container: &str) {
        docker(&["start", container]);
    }

    /// Whether a container logged `text` (anywhere in its log).
    pub fn logged(&self, container: &str, text: &str) -> bool {
        let output = std::process::Command::new("docker")
            .args(["logs", container])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stderr).contains(text)
    }

    /// The last lines a container logged, for failure messages.
    pub fn logs(&self, container: &str) -> String {
        let output = std::process::Command::new("docker")
            .args(["logs", "--tail", "40", container])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

impl super::Fleet for Lab {
    fn run_cli(&self, args: &[&str]) -> Run {
        self.cli(args)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for container in self.agents.iter().chain([&self.control]) {
            docker_maybe(&["rm", "-f", "-v", container]);
        }
        for site in &self.sites {
            let filter = format!("label=io.outpost.site={site}");
            let ids = docker_maybe(&["ps", "-aq", "--filter", &filter]).unwrap_or_default();
            for id in ids.lines() {
                docker_maybe(&["rm", "-f", "-v", id]);
            }
            let networks = docker_maybe(&["network", "ls", "-q", "--filter", &filter]).unwrap_or_default();
            for network in networks.lines() {
                docker_maybe(&["network", "rm", network]);
            }
        }
        docker_maybe(&["network", "rm", &self.name]);
    }
}
