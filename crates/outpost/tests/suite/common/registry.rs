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
    /// With a login: a Docker config directory that holds it, for pushes.
    docker_config: Option<std::path::PathBuf>,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::spawn(None)
    }

    /// A registry that lets only `user` (with `password`) push and pull.
    pub fn start_with_login(user: &str, password: &str) -> Registry {
        Registry::spawn(Some((user, password)))
    }

    fn spawn(login: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = login {
            // bcrypt, as the registry's htpasswd wants it (libxcrypt via Python).
            let htpasswd = dir.path().join("htpasswd");
            let hashed = Command::new("python3")
                .args([
                    "-W",
                    "ignore",
                    "-c",
                    "import crypt, sys; print(sys.argv[1] + ':' + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
                    user,
                    password,
                ])
                .output()
                .unwrap();
            assert!(hashed.status.success());
            std::fs::write(&htpasswd, hashed.stdout).unwrap();
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: outpost-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, text).unwrap();
        let child = serve(dir.path());
        let docker_config = login.map(|_| {
            let docker_config = dir.path().join("docker");
            std::fs::create_dir_all(&docker_config).unwrap();
            docker_config
        });
        let registry = Registry {
            address,
            dir,
            child,
            docker_config,
        };
        eventually(Duration::from_secs(20), "the registry answering", || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(&registry.address).ok()?;
            stream.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).ok()?;
            // 401 is an answer too (a registry with a login).
            (answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.0 401")).then_some(())
        });
        if let (Some(config), Some((user, password))) = (&registry.docker_config, login) {
            let status = Command::new("docker")
                .env("DOCKER_CONFIG", config)
                .args(["login", "-u", user, "--password-stdin", &registry.address])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child.stdin.take().unwrap().write_all(password.as_bytes())?;
                    child.wait()
                })
                .unwrap();
            assert!(status.success(), "docker login to the test registry");
        }
        registry
    }

    /// The reference of `name:tag` in this registry (pushed or not).
    pub fn reference(&self, name: &str, tag: &str) -> String {
        format!("{}/{name}:{tag}", self.address)
    }

    /// Builds a variant of the test image (a label makes its bytes its own),
    /// pushes it as `REGISTRY/name:tag`, and returns (reference, digest).
    pub fn push_variant(&self, name: &str, tag: &str, variant: &str) -> (String, String) {
        let reference = self.reference(name, tag);
        // The reference is in the image too, so that two tests building the
        // same variant never share an image ID that one of them removes
        // (`publish_variant`) while the other is still building it.
        let dockerfile = format!(
            "FROM outpost-local/busybox:1\nLABEL io.outpost.test.variant={variant} io.outpost.test.reference={reference}\n"
        );
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
        let mut push = Command::new("docker");
        if let Some(config) = &self.docker_config {
            push.env("DOCKER_CONFIG", config);
        }
        let pushed = push.args(["push", "-q", &reference]).output().unwrap();
        assert!(
            pushed.status.success(),
            "{}",
            String::from_utf8_lossy(&pushed.stderr)
        );
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

    /// Serves again, on the same address and storage.
    pub fn resume(&mut self) {
        self.child = serve(self.dir.path());
    }

    /// The bytes the registry has sent in answer to pulls (`GET`s), as
    /// its log of completed responses counts them: what sites took over
    /// their uplinks from it.
    pub fn bytes_served(&self) -> u64 {
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        log.lines()
            .filter(|line| line.contains("response completed") && line.contains("http.request.method=GET"))
            .filter_map(|line| {
                let (_, after) = line.split_once("http.response.written=")?;
                after.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum()
    }
}

/// Starts `docker-registry` on the configuration in `dir`; its log goes
/// to `dir/registry.log` (appended to across restarts).
fn serve(dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("registry.log"))
        .unwrap();
    Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("docker-registry (Debian's package, which scripts/test installs)")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
