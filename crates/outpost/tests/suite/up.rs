//! `outpost up`, the README's main command: a control plane on embedded
//! defaults with the examples applied, the CLI pointed at it, and this
//! machine enrolled as site `local` running the hello application.
//! Needs Docker and `scripts/busybox-image`. It removes the containers of
//! site `local` when it ends (a running quickstart recreates them).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{BIN, Http, cli_with, docker_maybe};

/// `up` is stopped even when an assertion fails first: a leftover one
/// holds the agent port and fails every later run.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn up_serves_the_examples_and_configures_the_cli() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let config = home.path().join("config.yaml");
    // An existing context must survive `up` adding its own.
    std::fs::write(&config, "currentContext: prod\ncontexts:\n- name: prod\n  server: https://prod.example.com:7800\n  certificateAuthority: x\n  token: t\n").unwrap();
    let mut child = Stopped(
        Command::new(BIN)
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .env("OUTPOST_CONFIG", &config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !printed.contains("Press Ctrl-C") {
        assert!(Instant::now() < deadline, "up did not finish starting: {printed}");
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("up exited early: {printed}");
        }
        printed.push_str(&line);
    }
    assert!(printed.contains("site/store-042 created"), "{printed}");
    assert!(
        printed.contains("deployment/pos-gateway-prod created"),
        "{printed}"
    );

    // The console's address and a one-time link that signs in once.
    let link = printed
        .lines()
        .find_map(|line| line.split("/ui/signin?link=").nth(1))
        .unwrap_or_else(|| panic!("no console sign-in link: {printed}"))
        .trim_end_matches(')')
        .to_string();
    let url = printed
        .lines()
        .find_map(|line| line.trim().strip_prefix("console"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .trim_end_matches("/ui/")
        .to_string();
    let ca = std::fs::read_to_string(data.join("tls/ca.crt")).unwrap();
    let http = Http::new(&ca, &url);
    let sign_in = |token: &str| {
        let body = serde_json::json!({ "token": token }).to_string();
        let body = Some(("application/json", body.into_bytes()));
        http.send("POST", "/api/v1/login/link", None, body).status
    };
    assert_eq!(sign_in(&link), 200, "{printed}");
    assert_eq!(sign_in(&link), 401, "a link signs in once");

    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains("currentContext: up") && written.contains("name: prod"),
        "{written}"
    );
    let sites = cli_with(
        &["get", "sites"],
        &[("OUTPOST_CONFIG", config.to_str().unwrap())],
        None,
    );
    assert_eq!(sites.success().lines().count(), 6, "a header and five sites");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "up did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let filter = "label=io.outpost.site=local";
    for id in docker_maybe(&["ps", "-aq", "--filter", filter])
        .unwrap_or_default()
        .lines()
    {
        docker_maybe(&["rm", "-f", id]);
    }
    for network in docker_maybe(&["network", "ls", "-q", "--filter", filter])
        .unwrap_or_default()
        .lines()
    {
        docker_maybe(&["network", "rm", network]);
    }
}
