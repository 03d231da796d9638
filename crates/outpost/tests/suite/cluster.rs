//! Site clusters (issue 16): the hosts of a site move a lost host's work
//! between themselves, with the uplink down. Two real agents of one site
//! on the shared Docker Engine (each sees only containers labelled with
//! its own host), pinging each other over mutual TLS on loopback.

use std::time::Duration;

use crate::common::{Agent, ControlPlane, docker, eventually, free_address, unique_site};

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
    control
        .apply(&format!(
            "apiVersion: outpost/v1\nkind: Site\nmetadata: {{ name: {site}, labels: {{ group: {site} }} }}\nspec: {{ hostLossAfter: 5s }}\n---\napiVersion: outpost/v1\nkind: Application\nmetadata: {{ name: shop }}\nspec:\n  version: \"1\"\n  services:\n    - name: web\n      containers:\n        - {{ name: web, image: outpost-local/busybox:1, command: [sleep, \"3600\"] }}\n    - name: camera\n      failover: stay\n      containers:\n        - {{ name: cam, image: outpost-local/busybox:1, command: [sleep, \"3600\"] }}\n---\napiVersion: outpost/v1\nkind: Deployment\nmetadata: {{ name: shop }}\nspec: {{ application: shop, sites: \"group = {site}\" }}\n"
        ))
        .success();
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
    assert!(h2.logged("a lost host is back"));
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
