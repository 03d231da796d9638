//! A second Docker Engine on this machine, for a test host that must not
//! share images with the first (peer fetch). It runs `dockerd` from the
//! installed Docker with its own data, state and socket in a temporary
//! directory, no default bridge and no iptables rules, and the vfs storage
//! driver (which works on any filesystem). Stopped and removed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::eventually;

pub struct Engine {
    dir: tempfile::TempDir,
    child: Child,
    /// `unix:///…/docker.sock`, for `DOCKER_HOST`.
    pub host: String,
}

impl Engine {
    pub fn start() -> Engine {
        // Short paths: containerd's socket lives under the exec root.
        let dir = tempfile::Builder::new().prefix("oe").tempdir_in("/tmp").unwrap();
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        // An empty configuration: the machine's daemon.json names its own
        // data root and storage driver.
        std::fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        let socket = path("docker.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .args(["--config-file", &path("daemon.json")])
            .args(["--data-root", &path("data"), "--exec-root", &path("exec")])
            .args([
                "--pidfile",
                &path("docker.pid"),
                "-H",
                &format!("unix://{socket}"),
            ])
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .args(["--storage-driver", "vfs"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (the Docker Engine this machine runs)");
        let engine = Engine {
            host: format!("unix://{socket}"),
            dir,
            child,
        };
        eventually(
            Duration::from_secs(60),
            "the second Docker Engine answering",
            || engine.docker(&["info", "--format", "{{.Driver}}"]).then_some(()),
        );
        engine
    }

    /// Runs `docker` against this engine; whether it succeeded.
    pub fn docker(&self, args: &[&str]) -> bool {
        Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `docker ARGS` against this engine: its output (empty on failure).
    pub fn output(&self, args: &[&str]) -> String {
        Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    pub fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("dockerd.log")
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Its containers first, then the daemon (SIGTERM, so it unmounts).
        let ids = self.output(&["ps", "-aq"]);
        for id in ids.lines() {
            self.docker(&["rm", "-f", id]);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = remove(self.dir.path());
    }
}

fn remove(path: &Path) -> std::io::Result<()> {
    std::fs::remove_dir_all(path)
}
