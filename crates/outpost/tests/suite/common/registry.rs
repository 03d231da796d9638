//! A real registry on loopback for image tests: Debian's `docker-registry`
//! (CNCF distribution), which `scripts/test` installs, serving a temporary
//! directory on a free `127.0.0.1` port. The Docker Engine pushes to and
//! pulls from `127.0.0.1:PORT` without TLS.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{docker, eventually};

pub struct Registry {
    pub address: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian's package, which scripts/test installs)");
        let registry = Registry { address, dir, child };
        eventually(Duration::from_secs(20), "the registry answering", || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(&registry.address).ok()?;
            stream.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).ok()?;
            answer.starts_with("HTTP/1.0 200").then_some(())
        });
        registry
    }

    /// Builds a variant of the test image (a label makes its bytes its own),
    /// pushes it as `REGISTRY/name:tag`, and returns (reference, digest).
    pub fn push_variant(&self, name: &str, tag: &str, variant: &str) -> (String, String) {
        let reference = format!("{}/{name}:{tag}", self.address);
        let dockerfile = format!("FROM outpost-local/busybox:1\nLABEL io.outpost.test.variant={variant}\n");
        let mut build = Command::new("docker")
            .args(["build", "-q", "-t", &reference, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        build
            .stdin
            .take()
            .unwrap()
            .write_all(dockerfile.as_bytes())
            .unwrap();
        assert!(build.wait().unwrap().success(), "building {reference}");
        docker(&["push", "-q", &reference]);
        let digests = docker(&[
            "inspect",
            "-f",
            "{{range .RepoDigests}}{{println .}}{{end}}",
            &reference,
        ]);
        let repository = format!("{}/{name}@", self.address);
        let digest = digests
            .lines()
            .find_map(|line| line.strip_prefix(&repository))
            .unwrap()
            .to_string();
        (reference, digest)
    }

    /// Like `push_variant`, then drops the engine's copy, so that the next
    /// use is a real pull from this registry.
    pub fn publish_variant(&self, name: &str, tag: &str, variant: &str) -> (String, String) {
        let (reference, digest) = self.push_variant(name, tag, variant);
        docker(&["rmi", &reference]);
        (reference, digest)
    }

    /// Stops serving (the uplink to the registry is gone).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
