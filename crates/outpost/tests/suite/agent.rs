//! Real agents against a real control plane and the real Docker Engine:
//! enrollment and its refusals, deployments running with their labels,
//! network, DNS alias, env and limits, restarts, local autonomy, adoption,
//! convergence after an outage, removal. Needs `scripts/busybox-image`.

use std::time::Duration;

use crate::common::{
    Agent, ControlPlane, Fleet as _, cli_with, docker, docker_maybe, eventually, unique_site,
};

const IMAGE: &str = "outpost-local/busybox:1";

fn site_manifest(site: &str) -> String {
    format!(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: {{ name: {site}, labels: {{ test: '{site}' }} }}\nspec:\n  variables: {{ store_id: '042' }}\n"
    )
}

/// An application with a web server and a client that fetches from it by
/// its service name, deployed to `site`.
fn web_application(site: &str, version: &str) -> String {
    format!(
        r#"apiVersion: outpost/v1
kind: Application
metadata: {{ name: web }}
spec:
  version: "{version}"
  services:
    - name: www
      containers:
        - name: httpd
          image: {IMAGE}
          command: ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]
          env: {{ STORE_ID: "${{site.store_id}}", VERSION: "{version}" }}
          resources: {{ cpu: 0.5, memory: 64Mi }}
    - name: client
      containers:
        - name: loop
          image: {IMAGE}
          command: ["/bin/sh", "-c", "while true; do wget -q -O - http://www:8080/; sleep 1; done"]
---
apiVersion: outpost/v1
kind: Deployment
metadata: {{ name: web }}
spec: {{ application: web, sites: "test = '{site}'" }}
"#
    )
}

/// The set-up most of these tests share: a control plane, a site, one
/// agent (`h1`, with `agent_args`) and the web application at version 1,
/// with its `www` container running.
struct WebSite {
    control: ControlPlane,
    site: String,
    agent: Agent,
    /// The name of the web server's container.
    www: String,
}

impl WebSite {
    fn start(prefix: &str, agent_args: &[&str]) -> WebSite {
        let control = ControlPlane::start();
        let site = unique_site(prefix);
        control.apply(&site_manifest(&site)).success();
        let agent = Agent::enroll_with(&control, &site, "h1", agent_args);
        control.apply(&web_application(&site, "1")).success();
        let www = format!("outpost.{site}.web-www-0.httpd");
        eventually(Duration::from_secs(30), "www running", || {
            agent.running().contains_key(&www).then_some(())
        });
        WebSite {
            control,
            site,
            agent,
            www,
        }
    }
}

fn inspect(container: &str, format: &str) -> String {
    // The container may be between generations (renamed, replaced).
    docker_maybe(&["inspect", "-f", format, container])
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn enrollment_refusals_are_explained() {
    let control = ControlPlane::start();
    let site = unique_site("enroll");
    control.apply(&site_manifest(&site)).success();
    let enroll = |token: &str, dir: &std::path::Path| {
        cli_with(
            &[
                "agent",
                "--server",
                &control.agent_url,
                "--data-dir",
                dir.to_str().unwrap(),
                "--host-name",
                "h1",
            ],
            &[("OUTPOST_JOIN_TOKEN", token)],
            None,
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("opj1.nope", "the join token is malformed"),
        (
            &format!("opj1.{}.{}", "0".repeat(64), "1".repeat(64)),
            "the control plane's CA does not match the join token's fingerprint",
        ),
    ];
    for (token, message) in cases {
        let run = enroll(token, dir.path());
        assert_eq!(run.code, 1, "{token}");
        assert!(run.stderr.contains(message), "{token}: {}", run.stderr);
    }
    // A well-formed token for this CA with an unknown secret.
    let good = control.join_token(&site);
    let unknown = format!("{}{}", &good[..good.len() - 64], "2".repeat(64));
    let run = enroll(&unknown, dir.path());
    assert!(
        run.stderr.contains("enrollment refused: unknown join token"),
        "{}",
        run.stderr
    );

    // Expired.
    let short = control
        .cli(&["token", "create", "--site", &site, "--ttl", "1s"])
        .success()
        .lines()
        .next()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let run = enroll(&short, tempfile::tempdir().unwrap().path());
    assert!(
        run.stderr.contains("enrollment refused: the join token expired"),
        "{}",
        run.stderr
    );

    // A site that does not exist gets no token at all.
    let run = control.cli(&["token", "create", "--site", "nowhere"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("site \"nowhere\" not found"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_token_enrolls_once_into_its_own_site() {
    let control = ControlPlane::start();
    let (site_a, site_b) = (unique_site("a"), unique_site("b"));
    control
        .apply(&format!(
            "{}---\n{}",
            site_manifest(&site_a),
            site_manifest(&site_b)
        ))
        .success();
    let token = control.join_token(&site_a);
    let first = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(crate::common::BIN)
        .args([
            "agent",
            "--server",
            &control.agent_url,
            "--data-dir",
            first.path().to_str().unwrap(),
        ])
        .args(["--host-name", "till-2"])
        .env("OUTPOST_JOIN_TOKEN", &token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let host = eventually(Duration::from_secs(20), "till-2 to enroll", || {
        let json: serde_json::Value =
            serde_json::from_str(control.cli(&["get", "hosts", "-o", "json"]).success()).ok()?;
        json["items"]
            .as_array()?
            .iter()
            .find(|h| h["name"] == "till-2")
            .cloned()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        host["site"],
        site_a.as_str(),
        "a token enrolls into the site it was made for, never another"
    );
    let hosts_b = control
        .cli(&["get", "hosts", "--site", &site_b])
        .success()
        .to_string();
    assert!(hosts_b.starts_with("no hosts yet"), "{hosts_b}");

    // The key was made on the host and stays there, owner-only.
    let key = std::fs::metadata(first.path().join("host.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
}

#[test]
fn a_used_token_is_refused() {
    let control = ControlPlane::start();
    let site = unique_site("used");
    control.apply(&site_manifest(&site)).success();
    let token = control.join_token(&site);
    let enroll = |host: &str| {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(crate::common::BIN)
            .args([
                "agent",
                "--server",
                &control.agent_url,
                "--data-dir",
                dir.path().to_str().unwrap(),
            ])
            .args(["--host-name", host])
            .env("OUTPOST_JOIN_TOKEN", &token)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        (dir, child.stderr.take().unwrap(), child)
    };
    let (_first_dir, _, mut first) = enroll("h1");
    eventually(Duration::from_secs(20), "h1 to enroll", || {
        control
            .cli(&["get", "hosts"])
            .success()
            .contains(" h1 ")
            .then_some(())
    });
    let _ = first.kill();
    let _ = first.wait();
    let (_dir, mut stderr, mut second) = enroll("h2");
    let status = second.wait().unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
    assert!(!status.success());
    assert!(
        text.contains("enrollment refused: the join token was already used"),
        "{text}"
    );
}

#[test]
fn a_deployment_runs_with_labels_network_alias_env_and_limits() {
    let WebSite {
        control,
        site,
        agent,
        www,
    } = WebSite::start("deploy", &[]);
    let client = format!("outpost.{site}.web-client-0.loop");
    eventually(Duration::from_secs(30), "both containers running", || {
        let running = agent.running();
        (running.contains_key(&www) && running.contains_key(&client)).then_some(())
    });
    for (label, value) in [
        ("io.outpost.managed", "true"),
        ("io.outpost.site", site.as_str()),
        ("io.outpost.host", "h1"),
        ("io.outpost.application", "web"),
        ("io.outpost.service", "www"),
        ("io.outpost.instance", "web-www-0"),
        ("io.outpost.version", "1"),
    ] {
        assert_eq!(
            inspect(&www, &format!("{{{{index .Config.Labels \"{label}\"}}}}")),
            value,
            "{label}"
        );
    }
    assert_eq!(inspect(&www, "{{.HostConfig.NanoCpus}}"), "500000000");
    assert_eq!(inspect(&www, "{{.HostConfig.Memory}}"), (64 << 20).to_string());
    assert_eq!(
        inspect(&www, "{{.HostConfig.RestartPolicy.Name}}"),
        "",
        "restarts are the agent's job"
    );
    let env = inspect(&www, "{{json .Config.Env}}");
    assert!(
        env.contains("\"STORE_ID=042\""),
        "site variable substituted: {env}"
    );
    let network = format!("outpost.{site}.h1.web");
    let aliases = inspect(
        &www,
        &format!("{{{{json (index .NetworkSettings.Networks \"{network}\").Aliases}}}}"),
    );
    assert!(aliases.contains("\"www\""), "{aliases}");
    // The client reaches the server by its service name.
    eventually(Duration::from_secs(20), "the client to fetch from www", || {
        let output = std::process::Command::new("docker")
            .args(["logs", &client])
            .output()
            .ok()?;
        String::from_utf8_lossy(&output.stdout)
            .contains("outpost test page")
            .then_some(())
    });
    // The control plane sees it all.
    eventually(Duration::from_secs(60), "the deployment to be up to date", || {
        let json: serde_json::Value =
            serde_json::from_str(control.cli(&["get", "deploy", "web", "-o", "json"]).success()).ok()?;
        (json["status"]["upToDate"] == 1).then_some(())
    });
    let status = control.site_status(&site);
    assert_eq!(status["online"], true);
    assert_eq!(status["appliedRevision"], status["revision"]);
}

#[test]
fn killed_containers_restart_even_with_the_control_plane_down_and_a_restarted_agent_adopts() {
    let WebSite {
        mut control,
        mut agent,
        www,
        ..
    } = WebSite::start("autonomy", &[]);
    let running_id = |agent: &Agent| agent.running().get(&www).cloned();
    let first = eventually(Duration::from_secs(30), "www running", || running_id(&agent));

    docker(&["kill", &www]);
    eventually(Duration::from_secs(10), "www restarted after a kill", || {
        (inspect(&www, "{{.State.Running}}") == "true" && inspect(&www, "{{.RestartCount}}") == "0")
            .then_some(())
    });

    // The control plane goes away; the site carries on.
    assert!(control.stop());
    docker(&["kill", &www]);
    eventually(
        Duration::from_secs(10),
        "www restarted with the control plane down",
        || (inspect(&www, "{{.State.Running}}") == "true").then_some(()),
    );

    // The agent restarts with no uplink: it adopts, it does not recreate.
    agent.stop();
    let before = agent.running();
    agent.start();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        agent.running(),
        before,
        "a restarted agent keeps the same containers"
    );
    assert_eq!(
        running_id(&agent),
        Some(first),
        "same container ID as before any of this"
    );

    // A container killed while the agent was down comes back when it starts.
    agent.stop();
    docker(&["kill", &www]);
    agent.start();
    eventually(Duration::from_secs(10), "www back after an agent restart", || {
        (inspect(&www, "{{.State.Running}}") == "true").then_some(())
    });
    control.restart();
}

#[test]
fn changes_made_while_a_site_is_away_converge_and_deletion_cleans_up() {
    let WebSite {
        control,
        site,
        mut agent,
        www,
    } = WebSite::start("converge", &[]);
    eventually(Duration::from_secs(30), "version 1 running", || {
        (agent.running().contains_key(&www)
            && inspect(&www, "{{index .Config.Labels \"io.outpost.version\"}}") == "1")
            .then_some(())
    });

    agent.stop();
    control.apply(&web_application(&site, "2")).success();
    assert_eq!(
        inspect(&www, "{{index .Config.Labels \"io.outpost.version\"}}"),
        "1",
        "nothing changes while away"
    );
    agent.start();
    eventually(
        Duration::from_secs(30),
        "version 2 running after the site returns",
        || {
            let running = agent.running();
            (running.len() == 2 && inspect(&www, "{{index .Config.Labels \"io.outpost.version\"}}") == "2")
                .then_some(())
        },
    );

    control.cli(&["delete", "deployment", "web"]).success();
    eventually(Duration::from_secs(30), "containers and network removed", || {
        let filter = format!("label=io.outpost.site={site}");
        let containers = docker(&["ps", "-aq", "--filter", &filter]);
        let networks = docker(&["network", "ls", "-q", "--filter", &filter]);
        (containers.trim().is_empty() && networks.trim().is_empty()).then_some(())
    });
}

#[test]
fn a_bad_manifest_is_refused_at_apply_and_never_reaches_an_agent() {
    let WebSite {
        control, site, agent, ..
    } = WebSite::start("bad", &[]);
    eventually(Duration::from_secs(30), "two containers running", || {
        (agent.running().len() == 2).then_some(())
    });
    let revision = control.site_status(&site)["revision"].clone();
    let before = agent.running();

    // Straight to the server: the CLI would refuse it before sending.
    let bad = web_application(&site, "2").replace("memory: 64Mi", "memory: 64MB");
    let response = control.http().send(
        "POST",
        "/api/v1/apply?source=bad.yaml",
        Some(&control.token()),
        Some(("application/yaml", bad.into_bytes())),
    );
    assert_eq!(response.status, 422, "{}", response.body);
    let diagnostic = &response.body["error"]["diagnostics"][0];
    assert_eq!(diagnostic["file"], "bad.yaml");
    assert!(
        diagnostic["message"]
            .as_str()
            .unwrap()
            .contains("\"64MB\" is not a size"),
        "{diagnostic}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        control.site_status(&site)["revision"],
        revision,
        "the site's desired state did not move"
    );
    assert_eq!(agent.running(), before, "nothing restarted");
}

#[test]
fn health_probes_run_by_the_agent_report_healthy_and_unhealthy() {
    let control = ControlPlane::start();
    let site = unique_site("health");
    control.apply(&site_manifest(&site)).success();
    let _agent = Agent::enroll(&control, &site, "h1");
    let app = format!(
        r#"apiVersion: outpost/v1
kind: Application
metadata: {{ name: probed }}
spec:
  version: "1"
  services:
    - name: web
      containers:
        - name: httpd
          image: {IMAGE}
          command: ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]
          health: {{ http: {{ path: /, port: 8080 }}, interval: 1s }}
    - name: closed
      containers:
        - name: idle
          image: {IMAGE}
          command: ["/bin/sleep", "3600"]
          health: {{ tcp: {{ port: 9999 }}, interval: 1s, timeout: 1s, failureThreshold: 2 }}
    - name: checked
      containers:
        - name: idle
          image: {IMAGE}
          command: ["/bin/sleep", "3600"]
          health: {{ exec: {{ command: ["/bin/true"] }}, interval: 1s }}
---
apiVersion: outpost/v1
kind: Deployment
metadata: {{ name: probed }}
spec: {{ application: probed, sites: "test = '{site}'" }}
"#
    );
    control.apply(&app).success();
    let states = eventually(Duration::from_secs(40), "probe verdicts", || {
        let json: serde_json::Value = serde_json::from_str(
            control
                .cli(&["get", "hosts", "--site", &site, "-o", "json"])
                .success(),
        )
        .ok()?;
        let instances = json["items"][0]["instances"].as_object()?.clone();
        let state = |name: &str| instances.get(name).and_then(|s| s.as_str()).map(String::from);
        let got = (
            state("probed-web-0")?,
            state("probed-closed-0")?,
            state("probed-checked-0")?,
        );
        (got == ("healthy".into(), "unhealthy".into(), "healthy".into())).then_some(got)
    });
    assert_eq!(states.1, "unhealthy");
    // The deployment is not up to date while an instance is unhealthy, and says why.
    let described = control
        .cli(&["describe", "deployment", "probed"])
        .success()
        .to_string();
    assert!(
        described.contains("progressing") && described.contains("probed-closed-0: unhealthy"),
        "{described}"
    );
}

#[test]
fn the_process_runtime_runs_restarts_and_cleans_up_native_processes() {
    let control = ControlPlane::start();
    let site = unique_site("process");
    control.apply(&site_manifest(&site)).success();
    let mut agent = Agent::enroll_with(&control, &site, "h1", &["--runtime", "process"]);
    // A sleep of a length no other process has, to find it by.
    let seconds = 100_000 + std::process::id() % 50_000;
    let app = format!(
        r#"apiVersion: outpost/v1
kind: Application
metadata: {{ name: native }}
spec:
  version: "1"
  services:
    - name: worker
      containers:
        - name: worker
          image: {IMAGE}
          command: ["/bin/sh", "-c", "echo started for store $STORE_ID; exec sleep {seconds}"]
          env: {{ STORE_ID: "${{site.store_id}}" }}
          health: {{ exec: {{ command: ["/bin/true"] }}, interval: 1s }}
---
apiVersion: outpost/v1
kind: Deployment
metadata: {{ name: native }}
spec: {{ application: native, sites: "test = '{site}'" }}
"#
    );
    control.apply(&app).success();
    let instance_state = || {
        let json: serde_json::Value = serde_json::from_str(
            control
                .cli(&["get", "hosts", "--site", &site, "-o", "json"])
                .success(),
        )
        .ok()?;
        json["items"][0]["instances"]["native-worker-0"]
            .as_str()
            .map(String::from)
    };
    eventually(Duration::from_secs(30), "the process to be healthy", || {
        (instance_state()? == "healthy").then_some(())
    });
    let log = agent
        .dir
        .path()
        .join("logs")
        .join(format!("outpost.{site}.native-worker-0.worker.log"));
    let starts = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("started for store 042")
            .count()
    };
    assert_eq!(starts(), 1, "output is captured, with the site variable");
    let pids = || -> Vec<String> {
        let output = std::process::Command::new("pgrep")
            .args(["-f", &format!("^sleep {seconds}$")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let first = pids();
    assert_eq!(first.len(), 1, "one process");

    // Killed: the agent starts it again.
    std::process::Command::new("kill")
        .args(["-9", &first[0]])
        .status()
        .unwrap();
    eventually(Duration::from_secs(10), "a restart", || {
        (starts() == 2 && pids().len() == 1).then_some(())
    });

    // The agent itself killed outright: its process is left behind, and the
    // next agent stops it before starting its own, so there is never two.
    agent.kill();
    let orphan = pids();
    assert_eq!(orphan.len(), 1);
    agent.start();
    eventually(
        Duration::from_secs(15),
        "the orphan replaced by one new process",
        || {
            let now = pids();
            (now.len() == 1 && now != orphan && starts() == 3).then_some(())
        },
    );
    agent.stop();
    eventually(Duration::from_secs(10), "processes gone with the agent", || {
        pids().is_empty().then_some(())
    });
}

#[test]
fn a_host_certificate_speaks_only_for_its_own_host() {
    use outpost_proto::v1::agent_gateway_client::AgentGatewayClient;
    use outpost_proto::v1::{AgentMessage, Hello, HostFacts, InstanceStatus, StatusReport, agent_message};

    let control = ControlPlane::start();
    let site = unique_site("identity");
    control.apply(&site_manifest(&site)).success();
    let mut x = Agent::enroll(&control, &site, "x");
    let mut y = Agent::enroll(&control, &site, "y");
    let hosts = || -> serde_json::Value {
        serde_json::from_str(
            control
                .cli(&["get", "hosts", "--site", &site, "-o", "json"])
                .success(),
        )
        .unwrap()
    };
    eventually(Duration::from_secs(20), "both hosts online", || {
        let items = hosts()["items"].as_array()?.clone();
        (items.len() == 2 && items.iter().all(|h| h["online"] == true)).then_some(())
    });
    x.stop();
    y.stop();

    // Speak the protocol with x's certificate while trying to pass as y.
    let session = |dir: &std::path::Path, server: &str, forged: &str| -> Result<(), String> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let credentials = outpost_agent::identity::load(dir).unwrap().unwrap();
            let channel = outpost_agent::tls::channel(server, credentials.tls)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let (sender, receiver) = tokio::sync::mpsc::channel(4);
            let message = |body| AgentMessage { body: Some(body) };
            let hello = Hello {
                protocol_version: outpost_proto::PROTOCOL_VERSION,
                agent_version: "forger".to_string(),
                applied_revision: 0,
                facts: Some(HostFacts {
                    labels: [("hostname".to_string(), "y".to_string())].into(),
                }),
                site_address: String::new(),
            };
            sender
                .send(message(agent_message::Body::Hello(hello)))
                .await
                .unwrap();
            let report = StatusReport {
                instances: vec![InstanceStatus {
                    instance: forged.to_string(),
                    state: "running".to_string(),
                    ..Default::default()
                }],
                images: Vec::new(),
            };
            sender
                .send(message(agent_message::Body::Status(report)))
                .await
                .unwrap();
            let mut stream = AgentGatewayClient::new(channel)
                .session(tokio_stream::wrappers::ReceiverStream::new(receiver))
                .await
                .map_err(|status| status.message().to_string())?
                .into_inner();
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(())
        })
    };
    session(x.dir.path(), &control.agent_url, "forged-by-x").unwrap();
    let items = eventually(Duration::from_secs(10), "the report to be recorded", || {
        let items = hosts()["items"].as_array()?.clone();
        items
            .iter()
            .any(|h| h["instances"].get("forged-by-x").is_some())
            .then_some(items)
    });
    let host = |name: &str| items.iter().find(|h| h["name"] == name).unwrap().clone();
    assert_eq!(
        host("x")["instances"]["forged-by-x"],
        "running",
        "the report is recorded for x"
    );
    assert!(
        host("y")["instances"].as_object().unwrap().is_empty(),
        "and never for y"
    );
    assert_eq!(host("x")["agentVersion"], "forger");
    assert_ne!(host("y")["agentVersion"], "forger");

    // A certificate from another control plane's CA does not get a session.
    let other = ControlPlane::start();
    let elsewhere = unique_site("elsewhere");
    other.apply(&site_manifest(&elsewhere)).success();
    let mut z = Agent::enroll(&other, &elsewhere, "z");
    eventually(Duration::from_secs(20), "z enrolled", || {
        z.dir.path().join("identity.json").exists().then_some(())
    });
    z.stop();
    let refused = session(z.dir.path(), &control.agent_url, "forged-by-z");
    assert!(
        refused.is_err(),
        "a foreign certificate must be refused: {refused:?}"
    );
}

#[test]
fn operator_labels_move_placement_and_facts_stay_read_only() {
    let control = ControlPlane::start();
    let site = unique_site("labels");
    control.apply(&site_manifest(&site)).success();
    let agent = Agent::enroll(&control, &site, "h1");
    let app = format!(
        r#"apiVersion: outpost/v1
kind: Application
metadata: {{ name: gold }}
spec:
  version: "1"
  services:
    - name: web
      hosts: "tier = gold and memory >= 64Mi"
      containers:
        - {{ name: httpd, image: {IMAGE}, command: ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"] }}
---
apiVersion: outpost/v1
kind: Deployment
metadata: {{ name: gold }}
spec: {{ application: gold, sites: "test = '{site}'" }}
"#
    );
    eventually(Duration::from_secs(20), "h1 online", || {
        (control.site_status(&site)["online"] == true).then_some(())
    });
    control.apply(&app).success();
    let failures = eventually(Duration::from_secs(10), "a placement failure", || {
        let failures = control.site_status(&site)["failures"].as_array()?.clone();
        (!failures.is_empty()).then_some(failures)
    });
    assert_eq!(failures[0], "gold: service web: no host can run it (h1: no tier)");
    assert!(agent.running().is_empty());
    let placement: Vec<_> = control
        .site_events(&site)
        .into_iter()
        .filter(|e| e["kind"] == "placementFailed")
        .collect();
    assert_eq!(placement.len(), 1, "{placement:?}");
    assert_eq!(
        placement[0]["message"],
        "deployment gold: service web: no host can run it (h1: no tier)"
    );
    assert_eq!(placement[0]["host"], "");

    let run = control.cli(&["label", "host", &format!("{site}/h1"), "tier=gold"]);
    assert_eq!(run.success(), format!("host/{site}/h1 labelled: tier=gold\n"));
    eventually(Duration::from_secs(30), "the service placed on h1", || {
        agent
            .running()
            .contains_key(&format!("outpost.{site}.gold-web-0.httpd"))
            .then_some(())
    });
    assert!(
        control.site_status(&site)["failures"]
            .as_array()
            .is_none_or(|f| f.is_empty())
    );

    let fact = control.cli(&["label", "host", &format!("{site}/h1"), "memory=1Gi"]);
    assert_eq!(fact.code, 1);
    assert!(
        fact.stderr
            .contains("memory is a fact discovered on h1 and cannot be set"),
        "{}",
        fact.stderr
    );
    let bad = control.cli(&["label", "site", &site, "tier"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr
            .contains("use key=value to set a label or key- to remove one"),
        "{}",
        bad.stderr
    );
    let labelled = control.cli(&["label", "site", &site, "region=north"]);
    assert!(labelled.success().contains("region=north"));
    let object: serde_json::Value =
        serde_json::from_str(control.cli(&["get", "site", &site, "-o", "json"]).success()).unwrap();
    assert_eq!(
        object["metadata"]["generation"], 2,
        "a label change is a new generation"
    );
}

#[test]
fn plan_shows_sites_hosts_waves_and_why_not_and_changes_nothing() {
    let control = ControlPlane::start();
    let site = unique_site("plan");
    let others = [format!("{site}-b"), format!("{site}-c")];
    let sites = [site.clone(), others[0].clone(), others[1].clone()]
        .iter()
        .map(|s| site_manifest(s).replace(&format!("test: '{s}'"), &format!("test: '{site}'")))
        .collect::<Vec<_>>()
        .join("---\n");
    control.apply(&sites).success();
    let _agent = Agent::enroll(&control, &site, "h1");
    eventually(Duration::from_secs(20), "h1 online", || {
        (control.site_status(&site)["online"] == true).then_some(())
    });
    let manifests = |memory: &str| {
        web_application(&site, "1").replace("memory: 64Mi", &format!("memory: {memory}")).replace(
            &format!("spec: {{ application: web, sites: \"test = '{site}'\" }}"),
            &format!("spec:\n  application: web\n  sites: \"test = '{site}'\"\n  rollout: {{ canary: 1, waves: {{ size: 1 }} }}"),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, manifests("64Mi")).unwrap();
    let file = file.to_str().unwrap();

    let plan = control.cli(&["plan", "-f", file]).success().to_string();
    let line = |wave: &str, name: &str| {
        plan.lines()
            .find(|l| l.split_whitespace().take(2).eq([wave, name]))
            .unwrap_or_else(|| panic!("no {wave} {name} line in:\n{plan}"))
            .to_string()
    };
    // Sites in name order: the site with the host is the canary.
    assert!(
        line("canary", &site).contains("install 1") && line("canary", &site).contains("web-www-0 on h1"),
        "{plan}"
    );
    assert!(line("1", &others[0]).contains("wait"), "{plan}");
    assert!(line("2", &others[1]).contains("wait"), "{plan}");
    assert_eq!(control.site_status(&site)["revision"], 1, "a plan stores nothing");

    control.cli(&["apply", "-f", file]).success();
    // Once the canary holds its images (pre-staging), it runs what the
    // batch says: nothing left to change there.
    eventually(Duration::from_secs(20), "the canary to switch", || {
        let plan = control.cli(&["plan", "-f", file]).success().to_string();
        plan.lines()
            .any(|l| {
                l.split_whitespace()
                    .take(3)
                    .eq(["canary", site.as_str(), "unchanged"])
            })
            .then_some(())
    });

    std::fs::write(
        dir.path().join("web.yaml"),
        manifests("100000Gi").replace("version: \"1\"", "version: \"2\""),
    )
    .unwrap();
    let plan = control.cli(&["plan", "-f", file]).success().to_string();
    assert!(
        plan.contains("cannot run") && plan.contains("h1: memory") && plan.contains("< 100000Gi requested"),
        "{plan}"
    );
    let stored: serde_json::Value =
        serde_json::from_str(control.cli(&["get", "app", "web", "-o", "json"]).success()).unwrap();
    assert_eq!(stored["spec"]["version"], "1", "a plan stores nothing");
}

#[test]
fn a_failing_new_version_leaves_the_old_one_serving_and_a_good_one_takes_over() {
    let control = ControlPlane::start();
    let site = unique_site("update");
    control.apply(&site_manifest(&site)).success();
    let agent = Agent::enroll(&control, &site, "h1");
    // No rollout policy to speak of: the one site is one wave.
    let app = |version: &str, broken: bool| rolled_application(&site, version, broken, "{}");
    let web = format!("outpost.{site}.shop-web-0.httpd");
    let next = format!("{web}.next");
    let version_of = |name: &str| inspect(name, "{{index .Config.Labels \"io.outpost.version\"}}");
    control.apply(&app("1", false)).success();
    eventually(Duration::from_secs(30), "version 1 serving", || {
        (agent.running().contains_key(&web) && version_of(&web) == "1").then_some(())
    });
    let first_id = agent.running()[&web].clone();

    // Version 2 crashes at once: it never becomes ready, version 1 keeps serving.
    control.apply(&app("2", true)).success();
    eventually(
        Duration::from_secs(20),
        "version 2 tried beside version 1",
        || {
            let all = docker(&[
                "ps",
                "-a",
                "--filter",
                &format!("name={next}"),
                "--format",
                "{{.Names}}",
            ]);
            all.contains(&next).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        agent.running().get(&web),
        Some(&first_id),
        "version 1 still serving, untouched"
    );
    assert_eq!(version_of(&web), "1");
    let described = control
        .cli(&["describe", "deployment", "shop"])
        .success()
        .to_string();
    assert!(described.contains("progressing"), "{described}");

    // Version 3 is healthy: it takes over under the container's own name.
    control.apply(&app("3", false)).success();
    eventually(Duration::from_secs(30), "version 3 took over", || {
        let running = agent.running();
        (running.len() == 1 && running.contains_key(&web) && version_of(&web) == "3").then_some(())
    });
    assert_ne!(agent.running()[&web], first_id);
    eventually(Duration::from_secs(20), "up to date", || {
        let json: serde_json::Value =
            serde_json::from_str(control.cli(&["get", "deploy", "shop", "-o", "json"]).success()).ok()?;
        (json["status"]["upToDate"] == 1).then_some(())
    });
}

/// An application whose web service serves, or (broken) exits at once,
/// deployed to every site labelled `test = group` with `rollout`.
fn rolled_application(group: &str, version: &str, broken: bool, rollout: &str) -> String {
    let command = if broken {
        r#"["/bin/sh", "-c", "exit 3"]"#
    } else {
        r#"["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]"#
    };
    format!(
        r#"apiVersion: outpost/v1
kind: Application
metadata: {{ name: shop }}
spec:
  version: "{version}"
  services:
    - name: web
      containers:
        - name: httpd
          image: {IMAGE}
          command: {command}
          health: {{ http: {{ path: /, port: 8080 }}, interval: 1s, failureThreshold: 2 }}
---
apiVersion: outpost/v1
kind: Deployment
metadata: {{ name: shop }}
spec:
  application: shop
  sites: "test = '{group}'"
  rollout: {rollout}
"#
    )
}

fn sites_in_group(group: &str, names: &[String]) -> String {
    names
        .iter()
        .map(|name| site_manifest(name).replace(&format!("test: '{name}'"), &format!("test: '{group}'")))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn a_broken_version_is_rolled_back_automatically_while_the_old_one_keeps_serving() {
    let control = ControlPlane::start();
    let group = unique_site("roll");
    let names: Vec<String> = ["a", "b", "c"].iter().map(|s| format!("{group}-{s}")).collect();
    control.apply(&sites_in_group(&group, &names)).success();
    let agents: Vec<Agent> = names
        .iter()
        .map(|site| Agent::enroll(&control, site, "h1"))
        .collect();
    let policy = "{ waves: { size: 1 }, maxFailures: 0, onFailure: rollback }";
    control
        .apply(&rolled_application(&group, "1", false, policy))
        .success();
    let status = |what: &str| control.cli(&["rollout", "status", "shop"]).success().to_string() + what;
    // Three waves, each gated on health: generous for a loaded machine.
    eventually(Duration::from_secs(120), "version 1 everywhere", || {
        status("").contains("version 1 (succeeded)").then_some(())
    });
    let web = |site: &str| format!("outpost.{site}.shop-web-0.httpd");
    let first_a = agents[0].running()[&web(&names[0])].clone();

    control
        .apply(&rolled_application(&group, "2", true, policy))
        .success();
    let rolled_back = eventually(Duration::from_secs(60), "the automatic rollback", || {
        let text = status("");
        text.contains("version 2 (rolled back").then_some(text)
    });
    assert!(
        rolled_back.contains(&names[0]) && rolled_back.contains("keeps exiting"),
        "{rolled_back}"
    );
    // Version 1 served on the first site all along; the others never saw 2.
    eventually(Duration::from_secs(20), "the failed update removed", || {
        let running = agents[0].running();
        (running.len() == 1 && running.get(&web(&names[0])) == Some(&first_a)).then_some(())
    });
    // Every site settles on version 1 alone. Eventually, not at once: a
    // loaded Docker Engine may still list a container that is being removed.
    for (agent, site) in agents.iter().zip(&names) {
        eventually(Duration::from_secs(20), "version 1 alone", || {
            let version = inspect(&web(site), "{{index .Config.Labels \"io.outpost.version\"}}");
            (version == "1" && agent.running().len() == 1).then_some(())
        });
    }
    assert_eq!(agents[0].running().get(&web(&names[0])), Some(&first_a));
    let history = status("");
    assert!(
        history.contains("history: 1 (succeeded") && history.contains("2 (rolledBack"),
        "{history}"
    );
}

#[test]
fn a_rollout_waits_for_its_gate_pauses_resumes_and_survives_a_restart() {
    let mut control = ControlPlane::start();
    let group = unique_site("gate");
    let names: Vec<String> = ["a", "b"].iter().map(|s| format!("{group}-{s}")).collect();
    control.apply(&sites_in_group(&group, &names)).success();
    let _agents: Vec<Agent> = names
        .iter()
        .map(|site| Agent::enroll(&control, site, "h1"))
        .collect();
    // The canary must stay healthy for an hour: only a promote moves on.
    let policy = "{ canary: 1, waves: { size: 1 }, healthyFor: 1h }";
    control
        .apply(&rolled_application(&group, "1", false, policy))
        .success();
    let status = |control: &ControlPlane| control.cli(&["rollout", "status", "shop"]).success().to_string();
    eventually(
        Duration::from_secs(40),
        "the canary up to date and waiting",
        || {
            let text = status(&control);
            (text.contains("running, wave 1 of 2")
                && text.contains("up-to-date")
                && text.contains("(waiting)"))
            .then_some(())
        },
    );
    let paused = control.cli(&["rollout", "pause", "shop"]).success().to_string();
    assert!(
        paused.contains("paused at wave 1 of 2: paused by an operator"),
        "{paused}"
    );
    let refused = control.cli(&["rollout", "promote", "shop"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("cannot promote a rollout that is paused"),
        "{}",
        refused.stderr
    );

    // The control plane restarts: the rollout is still paused at the same wave.
    assert!(control.stop());
    control.restart();
    assert!(
        status(&control).contains("paused at wave 1 of 2"),
        "{}",
        status(&control)
    );

    control.cli(&["rollout", "resume", "shop"]).success();
    // A promote moves past the current wave only; the next has its own gate.
    control.cli(&["rollout", "promote", "shop"]).success();
    eventually(
        Duration::from_secs(40),
        "the second wave up to date, at its gate",
        || {
            let text = status(&control);
            (text.contains("running, wave 2 of 2")
                && !text.contains("(waiting)")
                && text.matches("up-to-date").count() == 2)
                .then_some(())
        },
    );
    control.cli(&["rollout", "promote", "shop"]).success();
    eventually(Duration::from_secs(40), "the promoted rollout to finish", || {
        status(&control).contains("version 1 (succeeded)").then_some(())
    });
}

#[test]
fn a_site_that_comes_to_match_waits_for_its_wave() {
    let control = ControlPlane::start();
    let group = unique_site("join");
    let (a, b) = (format!("{group}-a"), format!("{group}-b"));
    control
        .apply(&format!(
            "{}---\n{}",
            sites_in_group(&group, std::slice::from_ref(&a)),
            site_manifest(&b)
        ))
        .success();
    let _agent_a = Agent::enroll(&control, &a, "h1");
    let agent_b = Agent::enroll(&control, &b, "h1");
    control
        .apply(&rolled_application(
            &group,
            "1",
            false,
            "{ waves: { size: 1 }, healthyFor: 1h }",
        ))
        .success();
    let status = || control.cli(&["rollout", "status", "shop"]).success().to_string();
    eventually(Duration::from_secs(40), "site a up to date, at its gate", || {
        let text = status();
        (text.contains("running, wave 1 of 1") && text.contains("up-to-date")).then_some(())
    });
    // Site b comes to match: it joins as a last wave, not at once.
    control
        .cli(&["label", "site", &b, &format!("test={group}")])
        .success();
    let text = eventually(Duration::from_secs(10), "site b as a new wave", || {
        let text = status();
        text.contains("running, wave 1 of 2").then_some(text)
    });
    assert!(
        text.lines().any(|l| l.contains(&b) && l.contains("(waiting)")),
        "{text}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent_b.running().is_empty(), "nothing on b before its wave");
    control.cli(&["rollout", "promote", "shop"]).success();
    eventually(Duration::from_secs(40), "b running in its wave", || {
        agent_b
            .running()
            .contains_key(&format!("outpost.{b}.shop-web-0.httpd"))
            .then_some(())
    });
}

/// Scenario a of the connectivity issue, with the control plane stopped as
/// the cut: a container that crashes twice meanwhile is restarted locally
/// both times, and both exits arrive once, in order, after the link is back.
/// Then: the session's bytes are booked to the host and exported by both
/// ends' /metrics, and the containers' output reaches `outpost logs`.
#[test]
fn exits_while_cut_off_are_restarted_locally_and_reported_once_in_order() {
    let mut control = ControlPlane::start();
    let site = unique_site("events");
    control.apply(&site_manifest(&site)).success();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let mut agent = Agent::enroll_with(
        &control,
        &site,
        "h1",
        &["--metrics-listen", &metrics_listen, "--sample-every", "2s"],
    );
    control.apply(&web_application(&site, "1")).success();
    let www = format!("outpost.{site}.web-www-0.httpd");
    let www_events = |control: &ControlPlane| -> Vec<(String, Option<i64>)> {
        control
            .site_events(&site)
            .iter()
            .filter(|e| e["service"] == "www")
            .map(|e| (e["kind"].as_str().unwrap().to_string(), e["exitCode"].as_i64()))
            .collect()
    };
    eventually(Duration::from_secs(30), "the start of www reported", || {
        (www_events(&control) == [("started".to_string(), None)]).then_some(())
    });

    assert!(control.stop());
    for round in 0..2 {
        let started = inspect(&www, "{{.State.StartedAt}}");
        docker(&["kill", &www]);
        eventually(
            Duration::from_secs(15),
            &format!("www restarted locally ({round})"),
            || {
                (inspect(&www, "{{.State.Running}}") == "true"
                    && inspect(&www, "{{.State.StartedAt}}") != started)
                    .then_some(())
            },
        );
    }
    control.restart();
    let started = || ("started".to_string(), None);
    let exited = || ("exited".to_string(), Some(137));
    let expected = vec![started(), exited(), started(), exited(), started()];
    eventually(
        Duration::from_secs(30),
        "both exits reported after the cut",
        || (www_events(&control).len() >= expected.len()).then_some(()),
    );
    assert_eq!(www_events(&control), expected, "each once, in order");
    let text = control
        .cli(&["events", "--site", &site, "--app", "web"])
        .success()
        .to_string();
    assert!(text.contains("exited with 137"), "{text}");

    // A restarted agent reconnects, sends nothing twice, and does not
    // take what still runs for something new.
    agent.stop();
    agent.start();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let agent_metrics = || {
        let response = reqwest::blocking::get(format!("http://{metrics_listen}/metrics")).ok()?;
        response.text().ok()
    };
    let agent_metrics = eventually(Duration::from_secs(30), "the restarted agent connected", || {
        // Connected, and its first pass has reported what runs.
        agent_metrics().filter(|text| {
            text.contains("outpost_agent_connected 1\n")
                && text.contains("outpost_agent_instances{state=\"running\"}")
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(www_events(&control), expected);

    // The ended session booked its bytes to the host; both ends export them.
    let describe = control.cli(&["describe", "site", &site]).success().to_string();
    assert!(
        describe.contains("h1 (online, 2 instance(s)), link: "),
        "{describe}"
    );
    assert!(!describe.contains("link: 0 B in"), "{describe}");
    let token = control.token();
    let metrics = control.http().send("GET", "/metrics", Some(&token), None);
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap().to_string();
    let received = format!("outpost_agent_received_bytes_total{{site=\"{site}\",host=\"h1\"}} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&received))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line[received.len()..].parse::<f64>().unwrap() > 1000.0, "{line}");
    assert!(
        agent_metrics.contains("outpost_agent_instances{state=\"running\"} 2\n"),
        "{agent_metrics}"
    );
    assert!(
        agent_metrics.contains("outpost_agent_queue_dropped_records_total 0\n"),
        "{agent_metrics}"
    );

    // CPU and memory samples reach the control plane's /metrics.
    let memory = format!(
        "outpost_instance_memory_bytes{{site=\"{site}\",host=\"h1\",application=\"web\",instance=\"web-www-0\"}} "
    );
    let bytes = eventually(Duration::from_secs(30), "a memory sample of www", || {
        let metrics = control.http().send("GET", "/metrics", Some(&token), None);
        let text = metrics.body.as_str()?.to_string();
        let line = text.lines().find(|l| l.starts_with(&memory))?;
        line[memory.len()..].parse::<f64>().ok()
    });
    assert!(bytes > 0.0, "{bytes}");

    // What the client container writes reaches `outpost logs`.
    let logs = eventually(Duration::from_secs(30), "the client's lines uploaded", || {
        let run = control.cli(&["logs", "web", "--site", &site, "--service", "client"]);
        let text = run.success().to_string();
        text.contains("outpost test page").then_some(text)
    });
    // Each line: time, site/host, instance/container, text. (Early lines
    // may be the client failing to reach www before it started.)
    let line = logs.lines().find(|l| l.contains("outpost test page")).unwrap();
    assert!(
        line.ends_with(&format!(" {site}/h1 web-client-0/loop outpost test page")),
        "{logs}"
    );
    // Live: straight from the connected host, with what it wrote just now.
    let live = control.cli(&["logs", "web", "--site", &site, "--service", "client", "--live"]);
    let live = live.success();
    assert!(live.lines().all(|l| l.contains(" web-client-0/loop ")), "{live}");
    assert!(live.contains("outpost test page"), "{live}");
    let without_site = control.cli(&["logs", "web", "--live"]);
    assert_eq!(without_site.code, 2, "{}", without_site.stderr);
    let refused = control.cli(&["logs", "nope"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("Application \"nope\" not found"),
        "{}",
        refused.stderr
    );
}

/// Polling mode: the agent makes a short call every interval and holds no
/// connection in between. What changed at the control plane waits for the
/// next poll; status, events and the link's bytes arrive with the polls.
#[test]
fn a_polling_agent_converges_and_reports_on_each_poll() {
    let WebSite {
        control,
        site,
        agent,
        www,
    } = WebSite::start("poll", &["--mode", "poll", "--interval", "2s"]);
    eventually(Duration::from_secs(30), "www running", || {
        agent.running().contains_key(&www).then_some(())
    });
    eventually(Duration::from_secs(30), "the site online and up to date", || {
        let status = control.site_status(&site);
        (status["online"] == true && status["appliedRevision"] == status["revision"]).then_some(())
    });
    eventually(Duration::from_secs(30), "the start of www reported", || {
        let events = control.site_events(&site);
        events
            .iter()
            .any(|e| e["service"] == "www" && e["kind"] == "started")
            .then_some(())
    });

    control.apply(&web_application(&site, "2")).success();
    eventually(Duration::from_secs(30), "version 2 on the next poll", || {
        inspect(&www, "{{.Config.Env}}")
            .contains("VERSION=2")
            .then_some(())
    });
    // A polling site holds no connection to ask for live logs.
    let live = control.cli(&["logs", "web", "--site", &site, "--live"]);
    assert_eq!(live.code, 1);
    assert!(
        live.stderr.contains("is connected now (offline, or polling)"),
        "{}",
        live.stderr
    );
    eventually(Duration::from_secs(30), "the polls' bytes booked", || {
        let hosts = control.cli(&["get", "hosts", "--site", &site, "-o", "json"]);
        let hosts: serde_json::Value = serde_json::from_str(hosts.success()).ok()?;
        (hosts["items"][0]["bytesReceived"].as_i64()? > 0).then_some(())
    });

    // A poll carries the site's secrets too, sealed to the polling host.
    control
        .cli(&["secret", "set", "poll-token", "token=polled-value"])
        .success();
    let with_secret = web_application(&site, "3").replace(
        "          resources: { cpu: 0.5, memory: 64Mi }\n",
        "          resources: { cpu: 0.5, memory: 64Mi }\n          secrets: [{ secret: poll-token, key: token, path: /run/token }]\n",
    );
    assert!(with_secret.contains("poll-token"));
    control.apply(&with_secret).success();
    eventually(
        Duration::from_secs(30),
        "the secret file on the next poll",
        || {
            let output = std::process::Command::new("docker")
                .args(["exec", &www, "cat", "/run/token"])
                .output()
                .ok()?;
            (output.stdout == b"polled-value").then_some(())
        },
    );
}
