//! Issue 11, "Hardening": input that once crashed or exhausted a real
//! control plane, identities that outlived their host, and idle sockets on
//! the agent port. Each test names the defect it guards.

// Test helpers: a panic is how they report a failed setup.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::time::Duration;

use crate::common::{Agent, ControlPlane, Fleet, cli_with, eventually, unique_site};

/// Raises this test process's own soft limit on open files: the test holds
/// thousands of sockets itself.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

fn site_manifest(site: &str) -> String {
    format!("apiVersion: outpost/v1\nkind: Site\nmetadata: {{ name: {site} }}\n")
}

/// The resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

fn alias_bomb(levels: usize) -> String {
    let mut text = String::from("a: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..=levels {
        let aliases = vec![format!("*l{}", level - 1); 10].join(", ");
        text.push_str(&format!("l{level}: &l{level} [{aliases}]\n"));
    }
    text
}

/// Defects 1 to 4: an alias bomb, deep nesting, a deep selector (in a query
/// and in a Deployment) and `interval: 0s` each get a positioned refusal;
/// the control plane stays up and small. Also: `bearer` in lower case.
#[test]
fn hostile_input_is_refused_with_a_position_and_the_control_plane_stays_up() {
    let control = ControlPlane::start();
    let (http, token) = (control.http(), control.token());
    let yaml = |text: String| {
        http.send(
            "POST",
            "/api/v1/apply?source=hostile.yaml",
            Some(&token),
            Some(("application/yaml", text.into_bytes())),
        )
    };
    let refused = |response: crate::common::Response, line: u64, message: &str| {
        assert_eq!(response.status, 422, "{}", response.body);
        let diagnostic = &response.body["error"]["diagnostics"][0];
        assert_eq!(diagnostic["file"], "hostile.yaml", "{diagnostic}");
        assert_eq!(diagnostic["line"], line, "{diagnostic}");
        assert!(
            diagnostic["message"].as_str().unwrap().contains(message),
            "{diagnostic}"
        );
    };
    refused(yaml(alias_bomb(8)), 4, "aliases expand to more than 10000 nodes");
    refused(
        yaml(format!("x:\n{}1\n", "- ".repeat(40_000))),
        2,
        "nest deeper than 64 levels",
    );
    let deep = format!("{}a{}", "(".repeat(2500), ")".repeat(2500));
    refused(
        yaml(format!(
            "apiVersion: outpost/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n  application: a\n  sites: '{deep}'\n"
        )),
        6,
        "nests deeper than 64 levels",
    );
    let probe = "apiVersion: outpost/v1\nkind: Application\nmetadata: {name: a}\nspec:\n  version: '1'\n  services:\n    - name: w\n      containers:\n        - name: c\n          image: busybox\n          health: { tcp: { port: 80 }, interval: 0s }\n";
    refused(yaml(probe.to_string()), 11, "0s is out of range (from 1s to 1h)");

    let query = http.send(
        "GET",
        &format!("/api/v1/sites?selector={deep}"),
        Some(&token),
        None,
    );
    assert_eq!(query.status, 400, "{}", query.body);
    assert!(
        query.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(at character 65)"),
        "{}",
        query.body
    );

    // Still serving, and the bomb never expanded.
    assert_eq!(http.send("GET", "/healthz", None, None).status, 200);
    let rss = rss_mib(control.pid());
    assert!(rss < 200, "the control plane grew to {rss} MiB");

    // RFC 7235: the scheme is case-insensitive.
    let lower = http.send_with_header(
        "GET",
        "/api/v1/sites",
        ("authorization", &format!("bearer {token}")),
    );
    assert_eq!(lower.status, 200, "{}", lower.body);

    // The CLI refuses the same input locally, without crashing.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bomb.yaml");
    std::fs::write(&file, alias_bomb(8)).unwrap();
    let run = control.cli(&["validate", "-f", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("bomb.yaml:4:"), "{}", run.stderr);
    let run = control.cli(&["get", "sites", "-l", &deep]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("deeper than 64 levels"), "{}", run.stderr);
}

/// Defect 5: a second enrollment of a host name in its site is refused
/// (both agents used to run the site's `replicas: 1` instance), and the
/// refusal is counted in /metrics.
#[test]
fn a_host_name_enrolls_only_once_per_site() {
    let control = ControlPlane::start();
    let site = unique_site("once");
    control.apply(&site_manifest(&site)).success();
    let _first = Agent::enroll_with(&control, &site, "h1", &["--runtime", "process"]);
    eventually(Duration::from_secs(20), "h1 online", || {
        (control.site_status(&site)["onlineHosts"] == 1).then_some(())
    });
    let token = control.join_token(&site);
    let dir = tempfile::tempdir().unwrap();
    let run = cli_with(
        &[
            "agent",
            "--server",
            &control.agent_url,
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--host-name",
            "h1",
        ],
        &[("OUTPOST_JOIN_TOKEN", &token)],
        None,
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains(&format!("host \"h1\" is already enrolled in site \"{site}\"")),
        "{}",
        run.stderr
    );
    let metrics = control
        .http()
        .send("GET", "/metrics", Some(&control.token()), None);
    let text = metrics.body.as_str().unwrap().to_string();
    assert!(
        text.lines().any(|l| l == "outpost_enrollments_failed_total 1"),
        "{text}"
    );
    // The refused attempt did not use up the token.
    let _second = Agent::enroll_with_token(&control, &site, "h2", &token, &["--runtime", "process"]);
    eventually(Duration::from_secs(20), "h2 online", || {
        (control.site_status(&site)["onlineHosts"] == 2).then_some(())
    });
}

/// Defect 6: a site with hosts is deleted only with `--cascade`, which
/// revokes their certificates: the live session ends, the old certificate
/// is refused at its next handshake, and a new site of the same name with a
/// new host of the same name does not take the old host back.
#[test]
fn deleting_a_site_with_hosts_needs_cascade_and_revokes_them() {
    let control = ControlPlane::start();
    let site = unique_site("gone");
    control.apply(&site_manifest(&site)).success();
    let _old = Agent::enroll_with(&control, &site, "h1", &["--runtime", "process"]);
    eventually(Duration::from_secs(20), "h1 online", || {
        (control.site_status(&site)["onlineHosts"] == 1).then_some(())
    });

    let run = control.cli(&["delete", "site", &site]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "site \"{site}\" has 1 host: h1; delete it with --cascade"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(control.site_status(&site)["onlineHosts"], 1, "nothing changed");

    let run = control.cli(&["delete", "site", &site, "--cascade"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("certificates are revoked"), "{}", run.stdout);
    eventually(Duration::from_secs(10), "the live session ends", || {
        control
            .logged("session ended")
            .then_some(())
            .filter(|()| control.logged("err=this host certificate is revoked"))
    });

    control.apply(&site_manifest(&site)).success();
    let _new = Agent::enroll_with(&control, &site, "h1", &["--runtime", "process"]);
    eventually(Duration::from_secs(20), "the new h1 online", || {
        (control.site_status(&site)["onlineHosts"] == 1).then_some(())
    });
    eventually(Duration::from_secs(20), "the old h1 refused", || {
        control
            .logged("this host certificate is revoked: the connection is closed")
            .then_some(())
    });
    let hosts = control.cli(&["get", "hosts", "--site", &site, "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(hosts.success()).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

/// Defect 7: idle connections to the agent port were never closed; 1,100 of
/// them made the REST API unreachable under a 1,024 file limit. Now the
/// control plane raises its soft limit, caps what one address holds before
/// it authenticates, and closes unfinished handshakes after 10 s.
#[test]
fn idle_connections_to_the_agent_port_are_closed_and_the_api_keeps_answering() {
    raise_open_file_limit();
    let control = ControlPlane::start();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", control.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3], open_files[4],
        "soft limit raised to the hard one: {limits}"
    );

    let address = control.agent_url.trim_start_matches("https://").to_string();
    let mut idle = Vec::new();
    for _ in 0..2000 {
        let stream = std::net::TcpStream::connect(&address).unwrap();
        stream.set_nonblocking(true).unwrap();
        idle.push(stream);
    }
    let http = control.http();
    assert_eq!(http.send("GET", "/healthz", None, None).status, 200);
    assert_eq!(
        http.send("GET", "/api/v1/sites", Some(&control.token()), None)
            .status,
        200
    );
    let is_closed = |stream: &mut std::net::TcpStream| {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
        }
    };
    // Past the per-address cap, connections close at once, long before
    // the handshake deadline.
    let started = std::time::Instant::now();
    let mut closed = vec![false; idle.len()];
    eventually(Duration::from_secs(5), "all but 256 closed at once", || {
        for (stream, closed) in idle.iter_mut().zip(closed.iter_mut()) {
            *closed = *closed || is_closed(stream);
        }
        (closed.iter().filter(|c| **c).count() >= 2000 - 256).then_some(())
    });
    assert!(started.elapsed() < Duration::from_secs(8));
    // The rest close when their handshake deadline passes.
    eventually(Duration::from_secs(20), "every idle connection closed", || {
        for (stream, closed) in idle.iter_mut().zip(closed.iter_mut()) {
            *closed = *closed || is_closed(stream);
        }
        closed.iter().all(|c| *c).then_some(())
    });
    assert_eq!(http.send("GET", "/healthz", None, None).status, 200);
}

/// Issue 11: the API port had no header-read timeout; one byte a second
/// kept a connection for 75 s or more (slowloris). Now a request's headers
/// must arrive within 10 s.
#[test]
fn a_client_that_sends_headers_slowly_is_cut_off() {
    use std::io::Write;
    let control = ControlPlane::start();
    let ca = control
        .config()
        .context(None)
        .unwrap()
        .certificate_authority
        .clone();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(std::sync::Arc::new(roots))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let address = control.url.trim_start_matches("https://").to_string();
    let tcp = std::net::TcpStream::connect(&address).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let started = std::time::Instant::now();
    tls.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let mut cut_off = false;
    // One header byte a second, as the attacker did, for at most 30 s.
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        if tls.write_all(b"X").and_then(|()| tls.flush()).is_err() {
            cut_off = true;
            break;
        }
        tls.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        let read = tls.read(&mut buf);
        tls.sock.set_nonblocking(false).unwrap();
        match read {
            Ok(_) => {
                cut_off = true;
                break;
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                cut_off = true;
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(cut_off, "still connected after {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(20),
        "cut off only after {elapsed:?}"
    );
}

/// Issue 11, the weaker spots: answers that did not tell the truth.
#[test]
fn answers_tell_the_truth() {
    let control = ControlPlane::start();
    let (http, token) = (control.http(), control.token());
    control.apply(&site_manifest("shop")).success();

    // `get hosts --site nosuch` said "no hosts yet" and exited 0.
    let run = control.cli(&["get", "hosts", "--site", "nosuch"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("Site \"nosuch\" not found"), "{}", run.stderr);

    // The 404 for a missing host named it as a site.
    let response = http.send(
        "PATCH",
        "/api/v1/hosts/shop/till-9/labels",
        Some(&token),
        Some(("application/json", br#"{"set": {"tier": "gold"}}"#.to_vec())),
    );
    assert_eq!(response.status, 404);
    assert_eq!(
        response.body["error"]["message"],
        "host \"till-9\" not found in site \"shop\""
    );

    // Setting and removing one label in one call was silently resolved.
    let run = control.cli(&["label", "site", "shop", "tier=gold", "tier-"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("\"tier\" is both set and removed"),
        "{}",
        run.stderr
    );

    // A repeated Idempotency-Key gets the outcome stored the first time;
    // without a key, the same apply is merely unchanged.
    let apply = |key: Option<&str>| {
        let mut request = site_manifest("kiosk").into_bytes();
        request.extend_from_slice(b"---\n");
        request.extend_from_slice(site_manifest("depot").as_bytes());
        let header = key.map(|k| ("idempotency-key", k));
        http.send_with_headers(
            "POST",
            "/api/v1/apply",
            &token,
            header,
            ("application/yaml", request),
        )
    };
    let first = apply(Some("k-1"));
    assert_eq!(first.body["results"][0]["action"], "created", "{}", first.body);
    let again = apply(Some("k-1"));
    assert_eq!(again.body, first.body);
    let plain = apply(None);
    assert_eq!(plain.body["results"][0]["action"], "unchanged");
    let bad = apply(Some("a key with spaces"));
    assert_eq!(bad.status, 400, "{}", bad.body);

    // `outpost get sites -o json | head -1` panicked on the broken pipe.
    let mut child = std::process::Command::new(crate::common::BIN)
        .args(["get", "sites", "-o", "json"])
        .env("OUTPOST_CONFIG", control.admin_config())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
