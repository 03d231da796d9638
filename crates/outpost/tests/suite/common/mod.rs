//! Test harness: a real `outpost control` process on `127.0.0.1:0` with a
//! real SQLite file in a temporary directory (or, with
//! `OUTPOST_TEST_STORE=postgres`, a database of its own on a real
//! PostgreSQL), an HTTPS client that trusts its
//! CA, and a runner for the CLI binary.

// Test-only code: a panic here is how a test reports that its setup failed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use outpost_api::client_config::ClientConfig;

pub mod browser;
pub mod engine;
pub mod lab;
pub mod link;
pub mod nats;
pub mod oidc;
pub mod postgres;
pub mod registry;
pub mod streams;

pub const BIN: &str = env!("CARGO_BIN_EXE_outpost");

pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub url: String,
    /// Where agents connect.
    pub agent_url: String,
    child: Child,
    /// Every line it logged, across restarts.
    log: Log,
    /// `RUST_LOG` of its process.
    rust_log: String,
    /// Extra `outpost control` arguments (`--streams-nats`).
    args: Vec<String>,
}

type Log = Arc<std::sync::Mutex<Vec<String>>>;

/// How many lines of a process's log contain `text`.
fn lines_with(log: &Log, text: &str) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains(text))
        .count()
}

impl ControlPlane {
    pub fn start() -> ControlPlane {
        ControlPlane::start_logging("info")
    }

    /// Like `start`, with `RUST_LOG` set to `rust_log`.
    pub fn start_logging(rust_log: &str) -> ControlPlane {
        ControlPlane::start_with(rust_log, &[])
    }

    /// Like `start_logging`, with extra `outpost control` arguments.
    pub fn start_with(rust_log: &str, args: &[&str]) -> ControlPlane {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::default();
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if postgres::wanted_for_every_test() && !args.iter().any(|a| a == "--store") {
            args.extend(["--store".to_string(), postgres::database()]);
        }
        let (child, url, agent_url) = spawn_on(
            dir.path(),
            ("127.0.0.1:0", "127.0.0.1:0"),
            rust_log,
            &args,
            log.clone(),
        );
        ControlPlane {
            dir,
            url,
            agent_url,
            child,
            log,
            rust_log: rust_log.to_string(),
            args,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether any line it logged so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|line| line.contains(text))
    }

    /// How many lines it logged so far contain `text`.
    pub fn count_logged(&self, text: &str) -> usize {
        lines_with(&self.log, text)
    }

    pub fn admin_config(&self) -> PathBuf {
        self.dir.path().join("admin.yaml")
    }

    pub fn config(&self) -> ClientConfig {
        let text = std::fs::read_to_string(self.admin_config()).unwrap();
        outpost_api::yaml::from_str(&text).unwrap()
    }

    pub fn token(&self) -> String {
        self.config().context(None).unwrap().token.clone()
    }

    /// Asks the process to stop (SIGTERM) and returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the control plane did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process outright (SIGKILL): nothing gets to flush or drain.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the process again on the same data directory and addresses
    /// (agents keep dialling the address they know).
    pub fn restart(&mut self) {
        let address = |url: &str| url.trim_start_matches("https://").to_string();
        let (child, url, agent_url) = spawn_on(
            self.dir.path(),
            (&address(&self.url), &address(&self.agent_url)),
            &self.rust_log,
            &self.args,
            self.log.clone(),
        );
        self.child = child;
        self.url = url;
        self.agent_url = agent_url;
    }

    /// The PostgreSQL database its store is in (`--store`), if not SQLite.
    pub fn postgres_store(&self) -> Option<&str> {
        let at = self.args.iter().position(|a| a == "--store")?;
        self.args.get(at + 1).map(String::as_str)
    }

    /// Everything the store holds, as bytes: the SQLite file and its
    /// journal, or a dump of the PostgreSQL database.
    pub fn stored_bytes(&self) -> Vec<u8> {
        if let Some(url) = self.postgres_store() {
            let dump = Command::new("pg_dump")
                .args(["--data-only", "--dbname", url])
                .output()
                .expect("pg_dump (Debian's postgresql package)");
            assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
            return dump.stdout;
        }
        let mut bytes = std::fs::read(self.dir.path().join("outpost.db")).unwrap();
        bytes.extend(std::fs::read(self.dir.path().join("outpost.db-wal")).unwrap_or_default());
        bytes
    }

    /// Runs one SQL statement on the store behind the control plane's
    /// back (Python's sqlite3, or psql); returns the rows it selects, one
    /// per line, as Python writes tuples: `('text', 12)`.
    pub fn sql(&self, statement: &str) -> String {
        if let Some(url) = self.postgres_store() {
            let output = Command::new("psql")
                .args(["-X", "-q", "-A", "-t", "-F", "\u{1f}", "-d", url, "-c", statement])
                .output()
                .expect("psql (Debian's postgresql package)");
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            return String::from_utf8(output.stdout)
                .unwrap()
                .lines()
                .map(|row| {
                    let fields: Vec<String> = row
                        .split('\u{1f}')
                        .map(|field| match field.parse::<i64>() {
                            Ok(_) => field.to_string(),
                            Err(_) => format!("'{field}'"),
                        })
                        .collect();
                    format!("({})\n", fields.join(", "))
                })
                .collect();
        }
        let output = Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nfor row in c.execute(sys.argv[2]): print(row)\nc.commit()",
                self.dir.path().join("outpost.db").to_str().unwrap(),
                statement,
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    pub fn http(&self) -> Http {
        Http::new(
            &self.config().context(None).unwrap().certificate_authority,
            &self.url,
        )
    }

    /// Runs the CLI against this control plane.
    pub fn cli(&self, args: &[&str]) -> Run {
        cli_with(
            args,
            &[("OUTPOST_CONFIG", self.admin_config().to_str().unwrap())],
            None,
        )
    }

    /// Runs the CLI with text on its standard input.
    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Run {
        cli_with(
            args,
            &[("OUTPOST_CONFIG", self.admin_config().to_str().unwrap())],
            Some(stdin),
        )
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_on(
    data_dir: &Path,
    (listen, agent_listen): (&str, &str),
    rust_log: &str,
    args: &[String],
    log: Log,
) -> (Child, String, String) {
    let mut child = Command::new(BIN)
        .args(["control", "--data-dir", data_dir.to_str().unwrap()])
        .args(["--listen", listen, "--agent-listen", agent_listen])
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && line.contains("control plane listening") {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|word| word.strip_prefix(name))
                        .unwrap()
                        .to_string()
                };
                let _ = sender.send((field("url="), field("agents=")));
                sent = true;
            }
            // Keep draining so the process never blocks on a full pipe.
            eprintln!("[control] {line}");
            log.lock().unwrap().push(line);
        }
    });
    let (url, agent_url) = receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("the control plane did not report that it listens");
    (child, url, agent_url)
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Its standard output; fails the test unless it exited 0.
    #[track_caller]
    pub fn success(&self) -> &str {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        &self.stdout
    }
}

pub fn cli_with(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("OUTPOST_CONFIG")
        .env("HOME", "/nonexistent-outpost-test-home")
        .env("XDG_CONFIG_HOME", "/nonexistent-outpost-test-home")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// A blocking HTTPS client that trusts only the control plane's CA.
pub struct Http {
    client: reqwest::blocking::Client,
    base: String,
}

pub struct Response {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Http {
    pub fn new(ca_pem: &str, url: &str) -> Http {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(Arc::new(roots))
            .with_no_client_auth();
        Http {
            client: reqwest::blocking::Client::builder()
                .use_preconfigured_tls(tls)
                .build()
                .unwrap(),
            base: url.to_string(),
        }
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        finish(request)
    }

    /// A GET whose body is read as it comes (server-sent events).
    pub fn open(&self, path: &str, token: &str) -> reqwest::blocking::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .unwrap()
    }

    /// A GET or DELETE with one header set by hand (no bearer token added).
    pub fn send_with_header(&self, method: &str, path: &str, header: (&str, &str)) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header(header.0, header.1);
        finish(request)
    }

    /// A request with a bearer token, an optional extra header and a body.
    pub fn send_with_headers(
        &self,
        method: &str,
        path: &str,
        token: &str,
        header: Option<(&str, &str)>,
        body: (&str, Vec<u8>),
    ) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", body.0)
            .body(body.1);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        finish(request)
    }

    /// Applies YAML files as one batch through the JSON apply request.
    pub fn apply(&self, token: &str, files: &[(&str, &str)], dry_run: bool) -> Response {
        let request = serde_json::json!({
            "files": files.iter().map(|(name, content)| serde_json::json!({"name": name, "content": content})).collect::<Vec<_>>(),
            "dryRun": dry_run,
        });
        self.send(
            "POST",
            "/api/v1/apply",
            Some(token),
            Some(("application/json", request.to_string().into_bytes())),
        )
    }

    /// The names listed by `GET /api/v1/{list}` (`list` may carry a query).
    pub fn names(&self, token: &str, list: &str) -> Vec<String> {
        let response = self.send("GET", &format!("/api/v1/{list}"), Some(token), None);
        assert_eq!(response.status, 200, "{}", response.body);
        response.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Sends a request and reads its status and body (JSON, or else text).
fn finish(request: reqwest::blocking::RequestBuilder) -> Response {
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Response { status, body }
}

pub fn example(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name),
    )
    .unwrap()
}

pub fn site(name: &str, labels: &str) -> String {
    format!("apiVersion: outpost/v1\nkind: Site\nmetadata:\n  name: {name}\n  labels: {{ {labels} }}\n")
}

/// A `Tenant` manifest: an application owner deploying to the sites
/// `sites` selects, with `quotas` (YAML flow mapping, `{}` for none).
pub fn tenant(name: &str, sites: &str, quotas: &str) -> String {
    format!(
        "apiVersion: outpost/v1\nkind: Tenant\nmetadata: {{ name: {name} }}\nspec:\n  sites: \"{sites}\"\n  quotas: {quotas}\n"
    )
}

pub fn application(name: &str, version: &str) -> String {
    format!(
        "apiVersion: outpost/v1\nkind: Application\nmetadata:\n  name: {name}\nspec:\n  version: \"{version}\"\n  services:\n    - name: web\n      containers:\n        - name: web\n          image: registry.example.com/web:{version}\n"
    )
}

/// A site name no other test (or earlier run) uses.
/// A loopback address with a free port (`--site-listen`).
pub fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

pub fn unique_site(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{n}-{}", std::process::id(), nanos % 10_000)
}

/// Runs the docker CLI; returns stdout.
/// Runs `docker` and returns its output; a failure fails the test (a
/// Docker that cannot answer must never read as "nothing is running").
#[track_caller]
pub fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `docker` where failing is an answer (what may already be gone, an
/// image that may not exist yet): its output, or `None`.
pub fn docker_maybe(args: &[&str]) -> Option<String> {
    let output = Command::new("docker").args(args).output().unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8(output.stdout).unwrap())
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `within`.
#[track_caller]
pub fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An `outpost agent` process for one host, and the containers of its site.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub site: String,
    pub host: String,
    server: String,
    args: Vec<String>,
    child: Option<Child>,
    /// `RUST_LOG` of its process (`info` unless a test asks for more).
    pub rust_log: String,
    /// Every line it logged, across restarts.
    log: Log,
    /// Extra environment of its process (`DOCKER_HOST`).
    env: Vec<(String, String)>,
    /// The port of its streams endpoint, the same across restarts (its
    /// containers keep the address they were given).
    streams_port: u16,
}

impl Agent {
    /// Enrolls a host into `site` with a fresh join token and starts it.
    pub fn enroll(control: &ControlPlane, site: &str, host: &str) -> Agent {
        Agent::enroll_with(control, site, host, &[])
    }

    /// Like `enroll`, with extra `outpost agent` arguments (`--runtime process`).
    pub fn enroll_with(control: &ControlPlane, site: &str, host: &str, args: &[&str]) -> Agent {
        let token = control.join_token(site);
        Agent::enroll_with_token(control, site, host, &token, args)
    }

    /// Like `enroll`, with `RUST_LOG` set to `rust_log`.
    pub fn enroll_logging(control: &ControlPlane, site: &str, host: &str, rust_log: &str) -> Agent {
        let token = control.join_token(site);
        Agent::spawned(&control.agent_url, site, host, &token, &[], rust_log, &[])
    }

    /// Like `enroll_with`, on another Docker Engine (`DOCKER_HOST`).
    pub fn enroll_on(
        control: &ControlPlane,
        site: &str,
        host: &str,
        args: &[&str],
        docker_host: &str,
    ) -> Agent {
        let token = control.join_token(site);
        let env = [("DOCKER_HOST".to_string(), docker_host.to_string())];
        Agent::spawned(&control.agent_url, site, host, &token, args, "info", &env)
    }

    /// Like `enroll_with`, reaching the control plane at `server` (a `Link`).
    pub fn enroll_through(
        control: &ControlPlane,
        site: &str,
        host: &str,
        server: &str,
        args: &[&str],
    ) -> Agent {
        let token = control.join_token(site);
        Agent::spawned(server, site, host, &token, args, "info", &[])
    }

    /// Like `enroll_with`, with a join token made beforehand.
    pub fn enroll_with_token(
        control: &ControlPlane,
        site: &str,
        host: &str,
        token: &str,
        args: &[&str],
    ) -> Agent {
        Agent::spawned(&control.agent_url, site, host, token, args, "info", &[])
    }

    fn spawned(
        server: &str,
        site: &str,
        host: &str,
        token: &str,
        args: &[&str],
        rust_log: &str,
        env: &[(String, String)],
    ) -> Agent {
        let mut agent = Agent {
            dir: tempfile::tempdir().unwrap(),
            site: site.to_string(),
            host: host.to_string(),
            server: server.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            rust_log: rust_log.to_string(),
            log: Log::default(),
            env: env.to_vec(),
            streams_port: std::net::TcpListener::bind("0.0.0.0:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
        };
        agent.spawn(Some(token));
        agent
    }

    /// Where its secret files go (a tmpfs the agent mounts there).
    pub fn secrets_dir(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    /// Whether any line it logged so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|line| line.contains(text))
    }

    /// How many lines it logged so far that contain `text`.
    pub fn count_logged(&self, text: &str) -> usize {
        lines_with(&self.log, text)
    }

    /// How many lines it logged so far.
    pub fn log_lines(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Kills the agent outright (SIGKILL): nothing of it gets to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self, token: Option<&str>) {
        let mut command = Command::new(BIN);
        command
            .args([
                "agent",
                "--server",
                &self.server,
                "--data-dir",
                self.dir.path().to_str().unwrap(),
            ])
            .args(["--host-name", &self.host])
            .args(&self.args);
        // Parallel agents must not fight over the default metrics port,
        // nor over the streams endpoint's.
        if !self.args.iter().any(|a| a == "--metrics-listen") {
            command.args(["--metrics-listen", "127.0.0.1:0"]);
        }
        if !self.args.iter().any(|a| a == "--streams-listen") {
            command.args(["--streams-listen", &format!("bridge:{}", self.streams_port)]);
        }
        // Nor over the secrets directory, which outlives a test otherwise.
        command.arg("--secrets-dir").arg(self.secrets_dir());
        command
            .env("RUST_LOG", &self.rust_log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            command.env("OUTPOST_JOIN_TOKEN", token);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let host = self.host.clone();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[agent {host}] {line}");
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
    }

    /// Stops the agent with SIGTERM and waits for it; its containers stay.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the agent did not stop on SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts the agent again from its data directory (no token needed).
    pub fn start(&mut self) {
        self.spawn(None);
    }

    /// Running containers of this site: name → (id, labels).
    pub fn running(&self) -> BTreeMap<String, String> {
        docker(&[
            "ps",
            "--filter",
            &format!("label=io.outpost.site={}", self.site),
            "--format",
            "{{.Names}} {{.ID}}",
        ])
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(n, id)| (n.to_string(), id.to_string())))
        .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let filter = format!("label=io.outpost.site={}", self.site);
        let ids = docker_maybe(&["ps", "-aq", "--filter", &filter]).unwrap_or_default();
        for id in ids.lines() {
            docker_maybe(&["rm", "-f", "-v", id]);
        }
        let networks = docker_maybe(&["network", "ls", "-q", "--filter", &filter]).unwrap_or_default();
        for network in networks.lines() {
            docker_maybe(&["network", "rm", network]);
        }
        // The tmpfs the agent mounted for secret files, if it did.
        for entry in std::fs::read_dir(self.secrets_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = Command::new("umount").arg("-l").arg(entry.path()).output();
        }
    }
}

impl ControlPlane {
    pub fn join_token(&self, site: &str) -> String {
        let run = self.cli(&["token", "create", "--site", site, "--quiet"]);
        run.success().trim_end().to_string()
    }

    /// Applies manifest text through the CLI.
    pub fn apply(&self, text: &str) -> Run {
        self.cli_stdin(&["apply", "-f", "-"], text)
    }
}

/// What a test reads through the CLI, from a control plane run as a
/// process (`ControlPlane`) or as a container (`lab::Lab`).
pub trait Fleet {
    fn run_cli(&self, args: &[&str]) -> Run;

    /// The events of a site, oldest first, as `outpost events -o json` lists them.
    fn site_events(&self, site: &str) -> Vec<serde_json::Value> {
        let run = self.run_cli(&["events", "--site", site, "-o", "json"]);
        let list: serde_json::Value = serde_json::from_str(run.success()).unwrap();
        list["items"].as_array().unwrap().clone()
    }

    /// A field of a site's status (`get sites NAME -o json`).
    fn site_status(&self, site: &str) -> serde_json::Value {
        let run = self.run_cli(&["get", "site", site, "-o", "json"]);
        serde_json::from_str::<serde_json::Value>(run.success()).unwrap()["status"].clone()
    }
}

impl Fleet for ControlPlane {
    fn run_cli(&self, args: &[&str]) -> Run {
        self.cli(args)
    }
}
