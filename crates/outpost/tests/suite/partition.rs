//! The connectivity scenarios over real partitions: a control plane and
//! three agents, each a container of this build on a private Docker
//! network, one site per agent. Hosts are cut off with `docker network
//! disconnect` while the others carry on. Needs `scripts/busybox-image`;
//! the pre-staging scenario also a registry (`common::registry`).

use std::time::Duration;

use crate::common::lab::Lab;
use crate::common::{Fleet as _, docker, docker_maybe};

const IMAGE: &str = "outpost-local/busybox:1";

fn site(name: &str, group: &str) -> String {
    format!(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: {{ name: {name}, labels: {{ lab: '{group}' }} }}\n"
    )
}

fn application(group: &str, version: u32) -> String {
    rolled_out(group, version, "")
}

/// The application at `version`, deployed with a rollout policy (or none:
/// every site at once).
fn rolled_out(group: &str, version: u32, rollout: &str) -> String {
    with_image(group, version, IMAGE, rollout)
}

/// `rolled_out`, running `image`.
fn with_image(group: &str, version: u32, image: &str, rollout: &str) -> String {
    let rollout = if rollout.is_empty() {
        String::new()
    } else {
        format!(", rollout: {rollout}")
    };
    format!(
        r#"apiVersion: outpost/v1
kind: Application
metadata: {{ name: web }}
spec:
  version: "{version}.0.0"
  services:
    - name: www
      containers:
        - name: httpd
          image: {image}
          command: ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]
          env: {{ VERSION: "{version}" }}
---
apiVersion: outpost/v1
kind: Deployment
metadata: {{ name: web }}
spec: {{ application: web, sites: "lab = '{group}'"{rollout} }}
"#
    )
}

/// Three sites of the lab's group, one agent each: (sites, agents).
fn three_sites(lab: &mut Lab) -> (Vec<String>, Vec<String>) {
    let group = lab.name.clone();
    let sites: Vec<String> = (1..=3).map(|n| format!("{group}-s{n}")).collect();
    let agents = sites
        .iter()
        .enumerate()
        .map(|(n, name)| {
            lab.apply(&site(name, &group)).success();
            lab.add_agent(name, &format!("h{}", n + 1))
        })
        .collect();
    (sites, agents)
}

fn inspect(container: &str, format: &str) -> String {
    // The container may be between generations (renamed, replaced).
    docker_maybe(&["inspect", "-f", format, container])
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The version a site's www container runs, if it runs.
fn running_version(site: &str) -> Option<String> {
    let www = format!("outpost.{site}.web-www-0.httpd");
    (inspect(&www, "{{.State.Running}}") == "true").then(|| {
        let env = inspect(&www, "{{.Config.Env}}");
        env.split_whitespace()
            .find_map(|e| e.trim_matches(['[', ']']).strip_prefix("VERSION="))
            .unwrap_or_default()
            .to_string()
    })
}

fn kinds(lab: &Lab, site: &str) -> Vec<(String, Option<i64>)> {
    lab.site_events(site)
        .iter()
        .filter(|e| e["service"] == "www")
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_string(),
                e["exitCode"].as_i64(),
            )
        })
        .collect()
}

/// Scenarios a, b and c of the connectivity issue, each checking that
/// nothing is lost and nothing restarts needlessly:
/// a. a site cut off while its container crashes twice restarts it locally
///    both times, and both exits arrive after healing, in order, once;
/// b. three updates while it is cut off: after healing it runs only the last;
/// c. a host restarted while cut off runs its workloads again on its own.
#[test]
fn cut_off_sites_keep_running_and_converge_after_healing() {
    let mut lab = Lab::start();
    let group = lab.name.clone();
    let (sites, agents) = three_sites(&mut lab);
    lab.apply(&application(&group, 1)).success();
    for name in &sites {
        crate::common::eventually(Duration::from_secs(60), &format!("{name} running 1"), || {
            (running_version(name).as_deref() == Some("1")).then_some(())
        });
    }
    crate::common::eventually(Duration::from_secs(30), "the first starts reported", || {
        sites
            .iter()
            .all(|s| kinds(&lab, s) == [("started".to_string(), None)])
            .then_some(())
    });

    // a and b: site 1 is cut off; its container crashes twice, and the
    // deployment is updated three times meanwhile.
    let (cut, www) = (&sites[0], format!("outpost.{}.web-www-0.httpd", sites[0]));
    lab.partition(&agents[0]);
    for round in 0..2 {
        let started = inspect(&www, "{{.State.StartedAt}}");
        docker(&["kill", &www]);
        crate::common::eventually(
            Duration::from_secs(15),
            &format!("www restarted locally ({round})"),
            || {
                (inspect(&www, "{{.State.Running}}") == "true"
                    && inspect(&www, "{{.State.StartedAt}}") != started)
                    .then_some(())
            },
        );
    }
    // Each update reaches the connected sites before the next one.
    for version in 2..=4 {
        lab.apply(&application(&group, version)).success();
        for name in &sites[1..] {
            crate::common::eventually(
                Duration::from_secs(60),
                &format!("{name} running {version}"),
                || (running_version(name).as_deref() == Some(&*version.to_string())).then_some(()),
            );
        }
    }
    assert_eq!(
        running_version(cut).as_deref(),
        Some("1"),
        "the cut-off site keeps what it has"
    );

    lab.heal(&agents[0]);
    crate::common::eventually(Duration::from_secs(90), "the healed site running 4", || {
        (running_version(cut).as_deref() == Some("4")).then_some(())
    });
    let started = || ("started".to_string(), None);
    let exited = || ("exited".to_string(), Some(137));
    // v1, exit, restart, exit, restart, then straight to v4 (no v2 or v3).
    let expected = vec![started(), exited(), started(), exited(), started(), started()];
    crate::common::eventually(Duration::from_secs(60), "site 1's events after healing", || {
        (kinds(&lab, cut).len() >= expected.len()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        kinds(&lab, cut),
        expected,
        "each once, in order\n{}",
        lab.logs(&agents[0])
    );
    for name in &sites[1..] {
        // Three updates, each one new container; no exit, nothing else.
        assert_eq!(kinds(&lab, name), vec![started(); 4], "{name}");
    }

    // c: site 2's host restarts while cut off: the host's containers die
    // with it and come back from the agent's local store alone.
    let www2 = format!("outpost.{}.web-www-0.httpd", sites[1]);
    lab.partition(&agents[1]);
    lab.kill(&agents[1]);
    docker(&["kill", &www2]);
    lab.start_again(&agents[1]);
    crate::common::eventually(
        Duration::from_secs(30),
        "site 2 running again while cut off",
        || (running_version(&sites[1]).as_deref() == Some("4")).then_some(()),
    );
    lab.heal(&agents[1]);
    crate::common::eventually(
        Duration::from_secs(90),
        "site 2's exit reported after healing",
        || {
            let kinds = kinds(&lab, &sites[1]);
            (kinds.len() >= 6).then_some(())
        },
    );
    let after_restart = kinds(&lab, &sites[1]);
    assert_eq!(after_restart[4].0, "exited", "{after_restart:?}");
    assert_eq!(after_restart[5].0, "started", "{after_restart:?}");
    assert_eq!(after_restart.len(), 6, "{after_restart:?}");

    // d: the control plane is killed (SIGKILL) during a rollout and
    // restarted: the rollout resumes, and nothing it stored is lost.
    let before: Vec<usize> = sites.iter().map(|s| lab.site_events(s).len()).collect();
    lab.apply(&rolled_out(
        &group,
        5,
        "{ canary: 1, waves: { size: 1 }, healthyFor: 3s }",
    ))
    .success();
    crate::common::eventually(Duration::from_secs(60), "the canary on 5, the rest on 4", || {
        let versions: Vec<Option<String>> = sites.iter().map(|s| running_version(s)).collect();
        let on = |v: &str| versions.iter().filter(|x| x.as_deref() == Some(v)).count();
        (on("5") == 1 && on("4") == 2).then_some(())
    });
    lab.kill_and_restart_control();
    for name in &sites {
        crate::common::eventually(Duration::from_secs(90), &format!("{name} running 5"), || {
            (running_version(name).as_deref() == Some("5")).then_some(())
        });
    }
    crate::common::eventually(Duration::from_secs(60), "the rollout succeeded", || {
        let status = lab.cli(&["rollout", "status", "web"]);
        status
            .success()
            .contains("version 5.0.0 (succeeded)")
            .then_some(())
    });
    for (name, before) in sites.iter().zip(before) {
        assert!(
            lab.site_events(name).len() > before,
            "{name}: events kept and new ones added"
        );
    }

    // Nothing lost: every site up to date and online in the end.
    for name in &sites {
        crate::common::eventually(
            Duration::from_secs(90),
            &format!("{name} online and up to date"),
            || {
                let status = lab.site_status(name);
                (status["online"] == true && status["appliedRevision"] == status["revision"]).then_some(())
            },
        );
    }
}

/// Pre-staging over real partitions: three sites, one cut off before the
/// update. The other two fetch the new image before anything switches: while
/// the registry lacks it they keep the old version and the rollout shows why;
/// once it is there they switch. The cut-off site keeps the old version and
/// switches after it heals.
#[test]
fn a_prestaged_rollout_switches_each_site_once_it_holds_the_images() {
    let registry = crate::common::registry::Registry::start();
    let (one, _) = registry.publish_variant("web", "1", "one");
    let mut lab = Lab::start();
    let group = lab.name.clone();
    let (sites, agents) = three_sites(&mut lab);
    lab.apply(&with_image(&group, 1, &one, "")).success();
    for name in &sites {
        crate::common::eventually(Duration::from_secs(60), &format!("{name} running 1"), || {
            (running_version(name).as_deref() == Some("1")).then_some(())
        });
    }

    // Site 3 loses its uplink; version 2 names an image the registry lacks.
    lab.partition(&agents[2]);
    let two = registry.reference("web", "2");
    lab.apply(&with_image(&group, 2, &two, "")).success();
    let status = crate::common::eventually(Duration::from_secs(60), "the failed pulls shown", || {
        let status = lab.cli(&["rollout", "status", "web"]).success().to_string();
        let fetching = |site: &str| {
            status
                .lines()
                .any(|l| l.contains(site) && l.contains(" 0/1 ") && l.contains("last pull failed"))
        };
        (fetching(&sites[0]) && fetching(&sites[1])).then_some(status)
    });
    for name in &sites {
        assert_eq!(
            running_version(name).as_deref(),
            Some("1"),
            "{name} switched without its image:\n{status}"
        );
    }

    // The image arrives in the registry: the two connected sites fetch it,
    // then switch; the cut-off one keeps what it runs.
    registry.publish_variant("web", "2", "two");
    for name in &sites[..2] {
        crate::common::eventually(Duration::from_secs(90), &format!("{name} running 2"), || {
            (running_version(name).as_deref() == Some("2")).then_some(())
        });
    }
    assert_eq!(
        running_version(&sites[2]).as_deref(),
        Some("1"),
        "the cut-off site keeps version 1"
    );
    // Until the control plane notices the site gone (its session outlives
    // a silent cut for a while), it shows it fetching; either way, on 1.
    let status = lab.cli(&["rollout", "status", "web"]).success().to_string();
    let row = status
        .lines()
        .find(|l| l.contains(sites[2].as_str()))
        .unwrap_or_default();
    assert!(row.contains(" 1 ") && row.contains(" 0/1 "), "{status}");

    lab.heal(&agents[2]);
    crate::common::eventually(Duration::from_secs(90), "the healed site running 2", || {
        (running_version(&sites[2]).as_deref() == Some("2")).then_some(())
    });
}
