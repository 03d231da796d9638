//! `outpost up`, the README's main command: a control plane on embedded
//! defaults with the examples applied, the CLI pointed at it, and this
//! machine enrolled as site `local` running the hello application.
//! Needs Docker and `scripts/busybox-image`. It removes the containers of
//! site `local` when it ends (a running quickstart recreates them).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{BIN, cli_with, docker_maybe};

#[test]
fn up_serves_the_examples_and_configures_the_cli() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let config = home.path().join("config.yaml");
    // An existing context must survive `up` adding its own.
    std::fs::write(&config, "currentContext: prod\ncontexts:\n- name: prod\n  server: https://prod.example.com:7800\n  certificateAuthority: x\n  token: t\n").unwrap();
    let mut child = Command::new(BIN)
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
        .unwrap();
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
