//! Site clusters (issue 16): the hosts of a site move a lost host's work
//! between themselves, with the uplink down. Real agents of one site on
//! the shared Docker Engine (each sees only containers labelled with its
//! own host), talking to each other over mutual TLS: as processes on
//! loopback, or as containers of the multi-host lab, where hosts are
//! killed and cut apart.

use std::time::Duration;

use crate::common::lab::Lab;
use crate::common::link::Link;
use crate::common::{Agent, ControlPlane, docker, eventually, free_address, unique_site};

/// A site of `group = SITE` with `hostLossAfter: 5s`, and an application
/// deployed there whose services are `services` (YAML list items).
fn site_running(site: &str, application: &str, services: &str) -> String {
    format!(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: {{ name: {site}, labels: {{ group: {site} }} }}\nspec: {{ hostLossAfter: 5s }}\n---\napiVersion: outpost/v1\nkind: Application\nmetadata: {{ name: {application} }}\nspec:\n  version: \"1\"\n  services:\n{services}---\napiVersion: outpost/v1\nkind: Deployment\nmetadata: {{ name: {application} }}\nspec: {{ application: {application}, sites: \"group = {site}\" }}\n"
    )
}

/// One service that sleeps for `seconds`, with `failover` if given.
fn sleeper(name: &str, failover: Option<&str>, seconds: u32) -> String {
    let failover = failover.map_or(String::new(), |f| format!("      failover: {f}\n"));
    format!(
        "    - name: {name}\n{failover}      containers:\n        - {{ name: {name}, image: outpost-local/busybox:1, command: [sleep, \"{seconds}\"] }}\n"
    )
}

/// The shop: `web` may move, `camera` (container `cam`) stays on its host.
fn shop(site: &str) -> String {
    let camera = "    - name: camera\n      failover: stay\n      containers:\n        - { name: cam, image: outpost-local/busybox:1, command: [sleep, \"3600\"] }\n";
    site_running(site, "shop", &(sleeper("web", None, 3600) + camera))
}

/// Running containers of `site` on `host`, by name.
fn on_host(site: &str, host: &str) -> Vec<String> {
    let mut names: Vec<String> = docker(&[
        "ps",
        "--filter",
        &format!("label=io.outpost.site={site}"),
        "--filter",
        &format!("label=io.outpost.host={host}"),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_string)
    .collect();
    names.sort();
    names
}

/// Removes every container of `host`: the machine went away with them.
fn lose_containers(site: &str, host: &str) {
    let ids = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.outpost.site={site}"),
        "--filter",
        &format!("label=io.outpost.host={host}"),
    ]);
    for id in ids.lines() {
        docker(&["rm", "-f", id]);
    }
}

#[test]
fn a_two_host_site_moves_a_lost_hosts_work_with_the_uplink_down_and_hands_it_back() {
    let mut control = ControlPlane::start();
    let site = unique_site("pair");
    control.apply(&shop(&site)).success();
    let mut h1 = Agent::enroll_with(&control, &site, "h1", &["--site-listen", &free_address()]);
    let h2 = Agent::enroll_with(&control, &site, "h2", &["--site-listen", &free_address()]);
    let web = format!("outpost.{site}.shop-web-0.web");
    let cam = format!("outpost.{site}.shop-camera-0.cam");
    // Central placement: both on h1 (the first host by name).
    eventually(Duration::from_secs(60), "both services on h1", || {
        (on_host(&site, "h1") == [cam.clone(), web.clone()]).then_some(())
    });

    // The uplink goes, then h1 with its containers.
    assert!(control.stop());
    h1.kill();
    lose_containers(&site, "h1");

    // Within hostLossAfter (5 s) plus 15 s, web runs on h2; camera stays lost.
    eventually(Duration::from_secs(20), "web moved to h2", || {
        (on_host(&site, "h2") == [web.clone()]).then_some(())
    });
    assert!(h2.logged("host lost: moving its instance"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        on_host(&site, "h2"),
        std::slice::from_ref(&web),
        "a stay service never moves"
    );

    // The uplink heals while h1 is still away: the control plane shows what
    // the site moved, and why.
    control.restart();
    let described = eventually(Duration::from_secs(30), "the move in describe site", || {
        let text = control.cli(&["describe", "site", &site]).success().to_string();
        text.contains("Moved by the site:").then_some(text)
    });
    assert!(
        described.contains("shop-web-0 (shop/web) h1 -> h2: host h1 lost at"),
        "{described}"
    );
    // The control plane, which has not heard h1 either, places web where
    // the site moved it.
    eventually(Duration::from_secs(20), "the move pinned centrally", || {
        control
            .logged("placing the instances the site moved where it moved them")
            .then_some(())
    });
    let metrics = control
        .http()
        .send("GET", "/metrics", Some(&control.token()), None);
    let text = metrics.body.as_str().unwrap_or_default().to_string();
    assert!(
        text.contains(&format!(
            "outpost_cluster_moved_instances{{site=\"{site}\",host=\"h2\"}} 1"
        )),
        "{text}"
    );

    // h1 comes back: it learns that web moved and runs only its camera;
    // once heard for hostLossAfter, web goes back where the control plane
    // places it.
    h1.start();
    eventually(Duration::from_secs(30), "the camera back on h1", || {
        on_host(&site, "h1").contains(&cam).then_some(())
    });
    assert!(
        h1.logged("took the site's newer placement ledger"),
        "h1 learns the site's moves before it starts anything"
    );
    eventually(Duration::from_secs(40), "web handed back to h1", || {
        (on_host(&site, "h1") == [cam.clone(), web.clone()] && on_host(&site, "h2").is_empty()).then_some(())
    });
    assert!(
        h2.logged("a lost host is back")
            || control.logged("a host the site lost is back: central placement again"),
        "the site or the control plane handed web back"
    );
    let described = eventually(Duration::from_secs(30), "the hosts hearing each other", || {
        let text = control.cli(&["describe", "site", &site]).success().to_string();
        (text.contains("Cluster:") && !text.contains("Moved by the site:") && !text.contains("nobody"))
            .then_some(text)
    });
    assert!(
        described.contains("h1") && described.contains("h2"),
        "{described}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(on_host(&site, "h1"), [cam, web]);
    assert!(on_host(&site, "h2").is_empty());
}

#[test]
fn a_three_host_site_elects_a_new_leader_and_moves_a_lost_hosts_work_with_the_uplink_cut() {
    let mut lab = Lab::start();
    let site = unique_site("trio");
    lab.apply(&shop(&site)).success();
    let agents: Vec<String> = ["h1", "h2", "h3"]
        .iter()
        .map(|host| lab.add_cluster_agent(&site, host, &[]))
        .collect();
    let web = format!("outpost.{site}.shop-web-0.web");
    let cam = format!("outpost.{site}.shop-camera-0.cam");
    eventually(Duration::from_secs(90), "both services on h1", || {
        (on_host(&site, "h1") == [cam.clone(), web.clone()]).then_some(())
    });
    // h1 formed the site's Raft group and leads it; the others vote.
    eventually(Duration::from_secs(60), "a leader and two voters", || {
        let roles = lab.roles(&site);
        (roles
            == [
                ("h1".to_string(), "leader".to_string()),
                ("h2".to_string(), "voter".to_string()),
                ("h3".to_string(), "voter".to_string()),
            ])
        .then_some(())
    });

    // The uplink goes, then h1 (the leader) with its containers.
    lab.cut_uplink();
    lab.kill(&agents[0]);
    lose_containers(&site, "h1");

    // h2 and h3 elect a leader, which moves web within hostLossAfter (5 s)
    // plus 15 s; camera stays lost.
    let runs_web = || {
        ["h2", "h3"]
            .iter()
            .filter(|h| on_host(&site, h).contains(&web))
            .count()
    };
    eventually(Duration::from_secs(20), "web moved to h2 or h3", || {
        (runs_web() == 1).then_some(())
    });
    let leader = ["h2", "h3"]
        .iter()
        .position(|h| lab.logged(&agents[if *h == "h2" { 1 } else { 2 }], "role=\"leader\""))
        .map(|i| &agents[i + 1])
        .expect("h2 or h3 leads");
    assert!(
        lab.logged(leader, "host lost: moving its instance"),
        "the new leader decided the move"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runs_web(), 1, "web runs once");
    assert!(
        ["h2", "h3"].iter().all(|h| !on_host(&site, h).contains(&cam)),
        "a stay service never moves"
    );

    // h1 returns with the uplink still cut: it learns that web moved and
    // runs only its camera, until it has been heard for hostLossAfter and
    // the leader hands web back.
    lab.start_again(&agents[0]);
    eventually(Duration::from_secs(30), "the camera back on h1", || {
        on_host(&site, "h1").contains(&cam).then_some(())
    });
    eventually(Duration::from_secs(40), "web handed back to h1", || {
        (on_host(&site, "h1") == [cam.clone(), web.clone()] && runs_web() == 0).then_some(())
    });

    // The uplink heals: every service runs once, where the control plane
    // placed it, and the control plane sees the group whole again.
    lab.heal_uplink();
    eventually(
        Duration::from_secs(60),
        "a leader and three hosts that hear each other",
        || {
            let roles = lab.roles(&site);
            let leaders = roles.iter().filter(|(_, r)| r == "leader").count();
            let text = lab.cli(&["get", "hosts"]).success().to_string();
            (leaders == 1 && roles.len() == 3 && text.matches("seen by 2/2").count() == 3).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runs_web(), 0);
    assert_eq!(on_host(&site, "h1"), [cam, web]);
}

#[test]
fn a_two_host_sites_singleton_moves_only_with_the_witness_and_runs_once_when_the_site_is_cut_apart() {
    let mut lab = Lab::start();
    let site = unique_site("duo");
    lab.apply(&site_running(
        &site,
        "till",
        &sleeper("db", Some("singleton"), 3600),
    ))
    .success();
    let agents: Vec<String> = ["h1", "h2"]
        .iter()
        .map(|host| lab.add_cluster_agent(&site, host, &[]))
        .collect();
    let db = format!("outpost.{site}.till-db-0.db");
    let copies = || {
        ["h1", "h2"]
            .iter()
            .filter(|h| on_host(&site, h).contains(&db))
            .count()
    };
    eventually(Duration::from_secs(90), "db on h1", || {
        on_host(&site, "h1").contains(&db).then_some(())
    });

    // h1 dies with the uplink up: the control plane, which no longer
    // hears h1 either, lets h2 take the singleton over.
    lab.kill(&agents[0]);
    lose_containers(&site, "h1");
    let mut moved = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_secs(1));
        assert!(copies() <= 1, "the singleton never runs twice");
        if on_host(&site, "h2").contains(&db) {
            moved = true;
            break;
        }
    }
    assert!(moved, "db moved to h2 with the witness: {}", lab.logs(&agents[1]));
    assert!(lab.logged(&lab.control, "witness: granted the lost host's singletons"));

    // h1 returns: it learns the move, and after hostLossAfter heard gets
    // db back; never two copies.
    lab.start_again(&agents[0]);
    let mut back = false;
    for _ in 0..60 {
        std::thread::sleep(Duration::from_secs(1));
        assert!(copies() <= 1, "the singleton never runs twice");
        if on_host(&site, "h1").contains(&db) && !on_host(&site, "h2").contains(&db) {
            back = true;
            break;
        }
    }
    assert!(back, "db handed back to h1: {}", lab.logs(&agents[0]));

    // The uplink goes; once both hosts know it (hostLossAfter), the link
    // between them goes too. Neither can ask the witness: db runs on
    // exactly one host throughout, sampled every second.
    lab.cut_uplink();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(copies(), 1, "the singleton runs once while the uplink is cut");
    }
    lab.partition(&agents[1]);
    for second in 0..20 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(copies(), 1, "the singleton runs once, {second} s after the split");
    }
    assert!(on_host(&site, "h1").contains(&db), "it stays where it ran");
}

#[test]
fn a_host_that_returns_while_its_work_runs_elsewhere_stops_its_copy_with_one_restart_per_move() {
    // The process runtime: each host's instances run inside its own agent
    // container, so a cut-off host keeps running its copy, as a real one
    // would.
    let mut lab = Lab::start();
    let site = unique_site("back");
    lab.apply(&site_running(&site, "shop", &sleeper("web", None, 3601)))
        .success();
    let agents: Vec<String> = ["h1", "h2", "h3"]
        .iter()
        .map(|host| lab.add_cluster_agent(&site, host, &["--runtime", "process"]))
        .collect();
    let runs = |i: usize| lab.processes(&agents[i], "sleep 3601");
    eventually(Duration::from_secs(90), "web on h1", || {
        (runs(0).len() == 1).then_some(())
    });
    eventually(Duration::from_secs(60), "the site's Raft group formed", || {
        let roles = lab.roles(&site);
        (roles.iter().filter(|(_, r)| r == "leader").count() == 1
            && roles.iter().filter(|(_, r)| r == "voter").count() == 2)
            .then_some(())
    });
    // Every copy seen, as (host, pid): a restart shows as a new pid.
    let mut copies: Vec<(usize, String)> = Vec::new();
    let sample = |copies: &mut Vec<(usize, String)>| {
        for i in 0..3 {
            for pid in runs(i) {
                if !copies.contains(&(i, pid.clone())) {
                    copies.push((i, pid));
                }
            }
        }
    };
    sample(&mut copies);

    // h1 is cut off from everything, its copy running: the other two move
    // web (a `move` service may run twice during a split).
    lab.partition(&agents[0]);
    let moved = (0..30).any(|_| {
        std::thread::sleep(Duration::from_secs(1));
        sample(&mut copies);
        runs(1).len() + runs(2).len() == 1
    });
    assert!(moved, "web moved off h1: {}", lab.logs(&agents[1]));
    assert_eq!(runs(0).len(), 1, "h1, cut off, keeps its copy");

    // h1 is back: it learns the move and stops its copy, then, heard for
    // hostLossAfter, gets web back.
    lab.heal(&agents[0]);
    let mut stopped = false;
    let back = (0..60).any(|_| {
        std::thread::sleep(Duration::from_secs(1));
        sample(&mut copies);
        stopped |= runs(0).is_empty();
        stopped && runs(0).len() == 1 && runs(1).len() + runs(2).len() == 0
    });
    assert!(stopped, "h1 stopped its own copy: {}", lab.logs(&agents[0]));
    assert!(back, "web back on h1 alone: {copies:?}");
    std::thread::sleep(Duration::from_secs(3));
    sample(&mut copies);
    // h1's first copy, the moved one, h1's copy after the move back: one
    // start per placement, no more.
    assert_eq!(copies.len(), 3, "{copies:?}");
}

/// The `GREETING` in the environment of the container `name`.
fn greeting(name: &str) -> String {
    let env = docker(&[
        "inspect",
        "-f",
        "{{ range .Config.Env }}{{ println . }}{{ end }}",
        name,
    ]);
    env.lines()
        .find_map(|line| line.strip_prefix("GREETING="))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_host_whose_uplink_is_down_takes_its_sites_new_desired_state_from_its_peer() {
    let control = ControlPlane::start();
    let site = unique_site("relay");
    // A site variable in the env: changing it changes what the hosts run
    // without a rollout (no new version to stage first).
    let shop = |greeting: &str| {
        site_running(&site, "shop", &sleeper("web", None, 3600))
            .replace(
                "spec: { hostLossAfter: 5s }",
                &format!("spec: {{ hostLossAfter: 5s, variables: {{ greeting: {greeting} }} }}"),
            )
            .replace(
                "services:\n    - name: web\n",
                "services:\n    - name: web\n      replicas: 2\n",
            )
            .replace(
                "command: [sleep, \"3600\"] }",
                "command: [sleep, \"3600\"], env: { GREETING: \"${site.greeting}\" } }",
            )
    };
    control.apply(&shop("hello")).success();
    let h1 = Agent::enroll_with(&control, &site, "h1", &["--site-listen", &free_address()]);
    let link = Link::to(&control.agent_url);
    let h2 = Agent::enroll_through(
        &control,
        &site,
        "h2",
        &link.url,
        &["--site-listen", &free_address()],
    );
    let web_on_h2 = format!("outpost.{site}.shop-web-1.web");
    eventually(Duration::from_secs(60), "web-1 on h2 greeting hello", || {
        (on_host(&site, "h2") == [web_on_h2.clone()] && greeting(&web_on_h2) == "hello").then_some(())
    });

    // h2's uplink goes; the new state reaches h1 only, and h2 from h1.
    // (While both were connected either may have taken a revision from the
    // other first, so only what each logs from now on counts.)
    let from_peer = "took a newer desired state from a peer";
    let (h1_before, h2_before) = (h1.count_logged(from_peer), h2.count_logged(from_peer));
    link.cut();
    control.apply(&shop("bye")).success();
    eventually(Duration::from_secs(60), "web-1 on h2 greeting bye", || {
        (greeting(&web_on_h2) == "bye").then_some(())
    });
    assert!(h2.count_logged(from_peer) > h2_before);
    assert_eq!(h1.count_logged(from_peer), h1_before, "h1 had it first");
}
