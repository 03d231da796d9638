//! Three control-plane replicas on one real PostgreSQL, an agent given
//! all three (`--server A,B,C`) on the real Docker Engine: they share one
//! CA; a change made through one replica reaches the session another
//! holds; the leader steps a rollout from presence another replica
//! shares; every replica sees the host online and reads its live logs
//! (through the replica that holds the session); a block through one
//! replica ends the session another holds; and when the replica
//! that holds the session and the one that leads are both killed, the
//! agent moves to the survivor, which leads and finishes the next rollout.

use std::time::Duration;

use crate::common::{Agent, ControlPlane, Fleet as _, docker_maybe, eventually, postgres, unique_site};

const IMAGE: &str = "outpost-local/busybox:1";

fn manifests(site: &str, version: &str) -> String {
    format!(
        r#"apiVersion: outpost/v1
kind: Site
metadata: {{ name: {site}, labels: {{ test: '{site}' }} }}
---
apiVersion: outpost/v1
kind: Application
metadata: {{ name: chatty }}
spec:
  version: "{version}"
  services:
    - name: talk
      containers:
        - name: main
          image: {IMAGE}
          command: ["/bin/sh", "-c", "while true; do echo chatty version {version}; sleep 1; done"]
          env: {{ VERSION: "{version}" }}
---
apiVersion: outpost/v1
kind: Deployment
metadata: {{ name: chatty }}
spec: {{ application: chatty, sites: "test = '{site}'" }}
"#
    )
}

/// The version the site's container runs (empty while there is none).
fn running_version(site: &str) -> String {
    docker_maybe(&[
        "inspect",
        "-f",
        "{{.Config.Env}}",
        &format!("outpost.{site}.chatty-talk-0.main"),
    ])
    .unwrap_or_default()
}

#[test]
fn three_replicas_serve_one_fleet_and_an_agent_outlives_its_replica_and_the_leader() {
    let database = postgres::database();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("secrets.key");
    let args = [
        "--store",
        &database,
        "--secrets-key-file",
        key_file.to_str().unwrap(),
    ];
    let mut replicas: Vec<ControlPlane> = (0..3).map(|_| ControlPlane::start_with("info", &args)).collect();

    // One CA for all: each replica serves and signs with the same one.
    let fingerprints = |replicas: &[ControlPlane]| -> Vec<serde_json::Value> {
        replicas
            .iter()
            .map(|replica| {
                let token = replica.token();
                let ca = replica.http().send("GET", "/api/v1/ca", Some(&token), None);
                assert_eq!(ca.status, 200, "{}", ca.body);
                ca.body["fingerprint"].clone()
            })
            .collect()
    };
    let first = fingerprints(&replicas);
    assert!(first[0].is_string(), "{}", first[0]);
    assert!(first.iter().all(|f| *f == first[0]), "{first:?}");

    // The agent is given the two replicas that do not lead, so that a
    // change reaches it only through another replica's announcement and
    // the leader judges its rollout from presence another replica shares.
    let leader = eventually(Duration::from_secs(10), "a leader", || {
        replicas
            .iter()
            .position(|replica| replica.logged("this replica leads now"))
    });
    let site = unique_site("replicas");
    replicas[leader].apply(&manifests(&site, "1")).success();
    let servers = (0..3)
        .filter(|i| *i != leader)
        .map(|i| replicas[i].agent_url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let agent = Agent::enroll_through(&replicas[0], &site, "h1", &servers, &[]);
    eventually(Duration::from_secs(60), "version 1 running", || {
        running_version(&site).contains("VERSION=1").then_some(())
    });
    let holder = eventually(Duration::from_secs(10), "the replica holding the session", || {
        replicas
            .iter()
            .position(|replica| replica.logged("agent connected"))
    });
    assert_ne!(holder, leader);

    // A change made through a replica that neither holds the session nor
    // leads reaches it, and the leader sees the rollout through.
    let other = (0..3).find(|i| *i != holder && *i != leader).unwrap();
    replicas[other].apply(&manifests(&site, "2")).success();
    eventually(
        Duration::from_secs(30),
        "version 2 running (applied elsewhere)",
        || running_version(&site).contains("VERSION=2").then_some(()),
    );
    eventually(
        Duration::from_secs(30),
        "the rollout to version 2 finished",
        || {
            let status = replicas[other].cli(&["rollout", "status", "chatty"]);
            status.success().contains("version 2 (succeeded)").then_some(())
        },
    );

    // Every replica sees the host online, and reads its logs live.
    for replica in &replicas {
        eventually(
            Duration::from_secs(15),
            "the host online at every replica",
            || (replica.site_status(&site)["online"] == true).then_some(()),
        );
        let live = replica.cli(&["logs", "chatty", "--site", &site, "--live"]);
        assert!(live.success().contains("chatty version 2"), "{}", live.stdout);
    }

    // A block made through a replica that does not hold the session ends
    // it where it is, at once; after the unblock the agent comes back
    // (perhaps to another replica: the one that logs its new session).
    let connections = |replicas: &[ControlPlane]| -> Vec<usize> {
        replicas
            .iter()
            .map(|r| r.count_logged("agent connected"))
            .collect()
    };
    let before = connections(&replicas);
    let host = format!("{site}/h1");
    replicas[other].cli(&["block", "host", &host]).success();
    eventually(Duration::from_secs(5), "the agent told it is blocked", || {
        agent.logged("this host is blocked").then_some(())
    });
    replicas[other].cli(&["unblock", "host", &host]).success();
    let holder = eventually(
        Duration::from_secs(30),
        "the agent back after the unblock",
        || {
            let now = connections(&replicas);
            (0..3).find(|i| now[*i] > before[*i])
        },
    );
    let other = (0..3).find(|i| *i != holder && *i != leader).unwrap();

    // A CA rotated through one replica is the one every replica serves.
    let rotated = replicas[other].cli(&["control", "rotate-ca"]);
    eprintln!("{}", rotated.stdout);
    let rotated = eventually(Duration::from_secs(10), "the new CA at every replica", || {
        let now = fingerprints(&replicas);
        (now[0] != first[0] && now.iter().all(|f| *f == now[0])).then_some(now)
    });
    eprintln!(
        "CA fingerprints before and after the rotation: {} -> {}",
        first[0], rotated[0]
    );

    // Kill the replica holding the session and the leader: the agent
    // moves to the third, which takes the lead.
    replicas[holder].kill();
    replicas[leader].kill();
    let survivor = &replicas[other];
    eventually(
        Duration::from_secs(30),
        "the agent on a surviving replica",
        || survivor.logged("agent connected").then_some(()),
    );
    eventually(Duration::from_secs(15), "a surviving replica leading", || {
        survivor.logged("this replica leads now").then_some(())
    });
    survivor.apply(&manifests(&site, "3")).success();
    eventually(Duration::from_secs(30), "version 3 running", || {
        running_version(&site).contains("VERSION=3").then_some(())
    });
    // Only a leader finishes a rollout.
    eventually(
        Duration::from_secs(30),
        "the rollout to version 3 finished",
        || {
            let status = survivor.cli(&["rollout", "status", "chatty"]);
            status.success().contains("version 3 (succeeded)").then_some(())
        },
    );
    drop(agent);
}
