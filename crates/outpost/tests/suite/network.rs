//! The site network on lab hosts that each have a Docker Engine and a
//! network namespace of their own: services find each other by name
//! across hosts, other applications reach nothing, nothing crosses the
//! lab network in clear, the ingress port answers on every host, the
//! underlay keys rotate under steady traffic without a failed call, and
//! names follow a moved service.

use std::time::{Duration, Instant};

use crate::common::eventually;
use crate::common::lab::Lab;
use crate::common::unique_site;

/// What `db` serves (busybox's `httpd` and the test image's page).
const PAYLOAD: &str = "outpost test page";

/// Site `site` (hostLossAfter 5 s) with `shop`: `api` on h1, `db` (an
/// HTTP server on 8080, also on ingress port 8088) on h2 or h3; and
/// `other`, whose `probe` on h1 declares no egress.
fn manifests(site: &str) -> String {
    let sleeper = |name: &str| {
        format!(
            "containers: [ {{ name: {name}, image: outpost-local/busybox:1, command: [sleep, \"3600\"] }} ]"
        )
    };
    format!(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: {{ name: {site}, labels: {{ group: {site} }} }}\nspec: {{ hostLossAfter: 5s }}\n---\n\
         apiVersion: outpost/v1\nkind: Application\nmetadata: {{ name: shop }}\nspec:\n  version: \"1\"\n  services:\n\
         \x20   - name: api\n      hosts: \"hostname = h1\"\n      {api}\n\
         \x20   - name: db\n      hosts: \"hostname in (h2, h3)\"\n      ingress: {{ port: 8088 }}\n\
         \x20     containers: [ {{ name: db, image: outpost-local/busybox:1, command: [httpd, -f, -p, \"8080\", -h, /www], ports: [ {{ container: 8080 }} ] }} ]\n---\n\
         apiVersion: outpost/v1\nkind: Application\nmetadata: {{ name: other }}\nspec:\n  version: \"1\"\n  services:\n\
         \x20   - name: probe\n      hosts: \"hostname = h1\"\n      {probe}\n---\n\
         apiVersion: outpost/v1\nkind: Deployment\nmetadata: {{ name: shop }}\nspec: {{ application: shop, sites: \"group = {site}\" }}\n---\n\
         apiVersion: outpost/v1\nkind: Deployment\nmetadata: {{ name: other }}\nspec: {{ application: other, sites: \"group = {site}\" }}\n",
        api = sleeper("api"),
        probe = sleeper("probe"),
    )
}

/// The running container of `service` on an engine host, if any.
fn running(lab: &Lab, host: &str, service: &str) -> Option<String> {
    let filter = format!("label=io.outpost.service={service}");
    let ids = lab.host_docker(host, &["ps", "-q", "--filter", &filter])?;
    ids.lines().next().map(str::to_string)
}

/// What `wget` in a container fetched from `url`, or why it failed.
/// (Debian's static busybox `wget` crashes with `-T`, so none is given.)
fn fetch(host: &str, container: &str, url: &str) -> Result<String, String> {
    let output = std::process::Command::new("docker")
        .args(["exec", host, "docker", "exec", container, "wget", "-qO-", url])
        .output()
        .map_err(|err| err.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn services_reach_each_other_by_name_across_hosts_over_an_encrypted_underlay() {
    let mut lab = Lab::start();
    let site = unique_site("net");
    lab.apply(&manifests(&site)).success();
    let hosts: Vec<String> = ["h1", "h2", "h3"]
        .iter()
        .map(|h| lab.add_engine_host(&site, h, &[]))
        .collect();
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);

    let (api, probe) = eventually(Duration::from_secs(90), "api and probe running on h1", || {
        Some((running(&lab, h1, "api")?, running(&lab, h1, "probe")?))
    });
    let db_host = eventually(Duration::from_secs(60), "db running on h2 or h3", || {
        [h2, h3].into_iter().find(|h| running(&lab, h, "db").is_some())
    })
    .clone();

    // The lab network is captured on h1 while api calls db by name.
    assert!(
        lab.host_exec(
            h1,
            &[
                "sh",
                "-c",
                "tcpdump -Z root -i eth0 --immediate-mode -U -w /tmp/lan.pcap tcp >/tmp/tcpdump.log 2>&1 &"
            ]
        )
        .is_some()
    );
    // Only once tcpdump listens: the calls below take well under a second.
    eventually(Duration::from_secs(10), "tcpdump listening on h1", || {
        lab.host_exec(h1, &["grep", "-q", "listening on", "/tmp/tcpdump.log"])
    });
    let answer = eventually(Duration::from_secs(30), "api reaching db by name", || {
        fetch(h1, &api, "http://db:8080/").ok()
    });
    assert_eq!(answer.trim(), PAYLOAD);
    for _ in 0..5 {
        assert_eq!(fetch(h1, &api, "http://db:8080/").unwrap().trim(), PAYLOAD);
    }
    lab.host_exec(h1, &["pkill", "-INT", "tcpdump"]);
    std::thread::sleep(Duration::from_millis(500));
    let capture = lab
        .host_exec(h1, &["tcpdump", "-Z", "root", "-nr", "/tmp/lan.pcap", "-A"])
        .unwrap_or_default();
    let db_peer = lab
        .host_exec(h1, &["getent", "hosts", db_host.as_str()])
        .unwrap_or_default();
    let db_peer = db_peer.split_whitespace().next().unwrap_or_default().to_string();
    let summary = lab
        .host_exec(
            h1,
            &[
                "tcpdump",
                "-Z",
                "root",
                "-nr",
                "/tmp/lan.pcap",
                "tcp",
                "port",
                "7802",
            ],
        )
        .unwrap_or_default();
    assert!(
        summary.lines().filter(|l| l.contains(&db_peer)).count() > 4,
        "the capture shows the underlay between h1 and {db_host} ({db_peer}):\n{summary}\ntcpdump said: {}",
        lab.host_exec(h1, &["cat", "/tmp/tcpdump.log"])
            .unwrap_or_default()
    );
    assert!(
        !capture.contains(PAYLOAD),
        "the payload crossed the lab network in clear"
    );

    // Another application has no name for db, nor a listener at its address.
    let refused = fetch(h1, &probe, "http://db:8080/").unwrap_err();
    assert!(
        refused.contains("bad address") || refused.contains("resolve"),
        "{refused}"
    );
    let address = outpost_agent::network::address_of("db");
    let refused = fetch(h1, &probe, &format!("http://{address}:8080/")).unwrap_err();
    assert!(refused.contains("refused"), "{refused}");

    // The ingress port answers on every host, wherever db runs.
    for host in &hosts {
        let url = format!("http://{host}:8088/");
        let served = eventually(Duration::from_secs(20), "the ingress port", || {
            lab.host_exec(h3, &["busybox", "wget", "-qO-", &url])
        });
        assert_eq!(served.trim(), PAYLOAD, "ingress on {host}");
    }

    // The underlay keys rotate while api calls db without pause: no call fails.
    let looped = "ok=0; fail=0; while [ ! -e /tmp/stop ]; do if wget -qO /dev/null http://db:8080/; then ok=$((ok+1)); else fail=$((fail+1)); fi; echo \"$ok $fail\" > /tmp/count; done";
    assert!(
        lab.host_docker(h1, &["exec", "-d", &api, "sh", "-c", looped])
            .is_some()
    );
    // The loop rewrites the file after every call: a read can meet it
    // empty, and is made again.
    let counts = || -> (u32, u32) {
        let text = eventually(Duration::from_secs(5), "the call counts", || {
            lab.host_docker(h1, &["exec", &api, "cat", "/tmp/count"])
                .filter(|text| !text.trim().is_empty())
        });
        let mut numbers = text.split_whitespace().map(|n| n.parse().unwrap_or(0));
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
    };
    eventually(Duration::from_secs(10), "the call loop running", || {
        (counts().0 > 5).then_some(())
    });
    let rotated = lab.cli(&["site", "rotate-keys", &site]).success().to_string();
    assert!(
        rotated.contains("rotating the underlay keys to epoch 2"),
        "{rotated}"
    );
    eventually(
        Duration::from_secs(30),
        "every host holding a key of epoch 2",
        || {
            let keys = lab.cli(&["site", "keys", &site]).success().to_string();
            keys.contains("3/3 hosts hold a key of epoch 2; no other epoch")
                .then_some(())
        },
    );
    // Past the grace for the old epoch: every connection now is on new keys.
    let before = counts().0;
    std::thread::sleep(Duration::from_secs(35));
    lab.host_docker(h1, &["exec", &api, "touch", "/tmp/stop"]);
    let (ok, failed) = counts();
    assert_eq!(failed, 0, "calls failed during the rotation ({ok} succeeded)");
    assert!(
        ok > before + 20,
        "calls went on after the rotation: {before} then {ok}"
    );
    for host in &hosts {
        assert!(
            lab.logged(host, "holding an underlay key epoch=2"),
            "{}",
            lab.logs(host)
        );
    }
    // A rotation at once: the old keys stop working now; the hosts get new
    // ones from the control plane and calls work again.
    lab.cli(&["site", "rotate-keys", &site, "--at-once"]).success();
    eventually(
        Duration::from_secs(30),
        "api reaching db on keys of epoch 3",
        || {
            let keys = lab.cli(&["site", "keys", &site]).success().to_string();
            (keys.contains("3/3 hosts hold a key of epoch 3") && fetch(h1, &api, "http://db:8080/").is_ok())
                .then_some(())
        },
    );

    // db's host is lost; the site moves db to the other host, and api's
    // call by name works again within 10 s of db running there.
    let other = if db_host == *h2 { h3 } else { h2 };
    lab.kill(&db_host);
    eventually(Duration::from_secs(40), "db moved", || running(&lab, other, "db"));
    let moved = Instant::now();
    eventually(Duration::from_secs(10), "api reaching the moved db", || {
        fetch(h1, &api, "http://db:8080/")
            .ok()
            .filter(|a| a.trim() == PAYLOAD)
    });
    assert!(moved.elapsed() < Duration::from_secs(10), "{:?}", moved.elapsed());
}
