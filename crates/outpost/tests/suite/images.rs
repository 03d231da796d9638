//! Images that never need the uplink (issue 14), against a real registry
//! on loopback: a version's images are pinned to the digest its first site
//! pulled, so a tag the registry moves later changes no site's bytes.

use std::time::Duration;

use crate::common::registry::Registry;
use crate::common::{
    Agent, ControlPlane, Fleet as _, docker, docker_maybe, eventually, free_address, site, unique_site,
};

fn application(group: &str, image: &str) -> String {
    versioned_application(group, "1", image)
}

fn versioned_application(group: &str, version: &str, image: &str) -> String {
    format!(
        "apiVersion: outpost/v1\nkind: Application\nmetadata: {{ name: pos }}\nspec:\n  version: \"{version}\"\n  services:\n    - name: api\n      containers:\n        - name: api\n          image: {image}\n          command: [\"sh\", \"-c\", \"sleep 3600\"]\n---\napiVersion: outpost/v1\nkind: Deployment\nmetadata: {{ name: pos }}\nspec: {{ application: pos, sites: group = {group} }}\n"
    )
}

/// (container ID, image ID, image reference) of a running container.
fn running(name: &str) -> Option<(String, String, String)> {
    let output = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.Id}} {{.Image}} {{.Config.Image}} {{.State.Running}}",
            name,
        ])
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    match fields.as_slice() {
        [id, image, reference, "true"] => Some((id.to_string(), image.to_string(), reference.to_string())),
        _ => None,
    }
}

#[test]
fn a_version_runs_the_digest_its_first_site_pulled_even_after_the_tag_moves() {
    let registry = Registry::start();
    let (image, first_digest) = registry.push_variant("pos", "1", "first");
    let first_image_id = docker(&["inspect", "-f", "{{.Id}}", &image]).trim().to_string();

    let control = ControlPlane::start();
    let group = unique_site("digest");
    let (a, b) = (format!("{group}-a"), format!("{group}-b"));
    let group_label = format!("group: {group}");
    control
        .apply(&format!(
            "{}---\n{}",
            site(&a, &group_label),
            site(&b, &group_label)
        ))
        .success();
    control.apply(&application(&group, &image)).success();

    // Site a runs the tag; its agent reports what the tag resolved to.
    let agent_a = Agent::enroll(&control, &a, "h1");
    let on_a = format!("outpost.{a}.pos-api-0.api");
    let (a_id, a_image, _) = eventually(Duration::from_secs(60), "site a running", || running(&on_a));
    assert_eq!(a_image, first_image_id);
    let expected = format!("1: {image} -> {first_digest}");
    eventually(Duration::from_secs(30), "the digest recorded", || {
        let described = control.cli(&["describe", "application", "pos"]);
        described.success().contains(&expected).then_some(())
    });

    // The registry moves the tag to other bytes.
    let (_, moved_digest) = registry.push_variant("pos", "1", "moved");
    assert_ne!(moved_digest, first_digest);

    // Site b, deployed after the move, runs the recorded bytes, by digest.
    let agent_b = Agent::enroll(&control, &b, "h1");
    let on_b = format!("outpost.{b}.pos-api-0.api");
    let (_, b_image, b_reference) = eventually(Duration::from_secs(60), "site b running", || running(&on_b));
    assert_eq!(
        b_image, first_image_id,
        "site b runs the first bytes, not the moved tag"
    );
    assert_eq!(b_reference, format!("{}/pos@{first_digest}", registry.address));

    // Recording the digest replaced nothing on site a.
    std::thread::sleep(Duration::from_secs(2));
    let (a_id_now, _, _) = running(&on_a).unwrap();
    assert_eq!(a_id_now, a_id, "site a's container was not replaced");
    drop((agent_a, agent_b));
}

fn present(reference: &str) -> bool {
    docker_maybe(&["image", "inspect", reference]).is_some()
}

#[test]
fn the_current_and_previous_versions_stay_pinned_past_the_budget_and_restart_offline() {
    let mut registry = Registry::start();
    let (one, _) = registry.publish_variant("cache", "1", "one");
    let (two, _) = registry.publish_variant("cache", "2", "two");
    let (three, _) = registry.publish_variant("cache", "3", "three");
    // An image Outpost did not pull: never touched, whatever the budget.
    let (theirs, _) = registry.push_variant("theirs", "1", "theirs");

    let mut control = ControlPlane::start();
    let group = unique_site("cache");
    control.apply(&site(&group, &format!("group: {group}"))).success();
    control.apply(&versioned_application(&group, "1", &one)).success();
    let agent = Agent::enroll_with(&control, &group, "h1", &["--image-budget", "1"]);
    let name = format!("outpost.{group}.pos-api-0.api");
    let runs = |image: &str| {
        let (image, name) = (image.to_string(), name.clone());
        move || {
            let wanted = docker_maybe(&["image", "inspect", "-f", "{{.Id}}", &image])?;
            let running = docker_maybe(&["inspect", "-f", "{{.Image}} {{.State.Running}}", &name])?;
            (running.trim() == format!("{} true", wanted.trim())).then_some(())
        }
    };
    eventually(Duration::from_secs(60), "version 1 running", runs(&one));
    for (version, image) in [("2", &two), ("3", &three)] {
        control
            .apply(&versioned_application(&group, version, image))
            .success();
        eventually(
            Duration::from_secs(60),
            &format!("version {version} running"),
            runs(image),
        );
    }
    // Past a 1-byte budget, everything unpinned goes: version 1 only.
    eventually(Duration::from_secs(30), "version 1 pruned", || {
        (!present(&one)).then_some(())
    });
    assert!(present(&two), "the previous version stays");
    assert!(present(&three), "the current version stays");
    assert!(present(&theirs), "an image Outpost did not pull is never touched");
    assert!(present("outpost-local/busybox:1"));

    // With the registry and the control plane gone, a killed container
    // comes back from the pinned image.
    registry.stop();
    assert!(control.stop());
    let before = docker(&["inspect", "-f", "{{.State.StartedAt}}", &name]);
    docker(&["kill", &name]);
    eventually(Duration::from_secs(30), "restarted offline", || {
        let started = docker(&["inspect", "-f", "{{.State.StartedAt}} {{.State.Running}}", &name]);
        (started.trim().ends_with("true") && !started.starts_with(before.trim())).then_some(())
    });
    assert!(present(&two) && present(&three));
    control.restart();
    drop(agent);
    docker(&["rmi", &theirs]);
}

#[test]
fn a_private_image_is_pulled_with_the_credentials_of_its_pull_secret() {
    let password = format!("registry-pw-{}-x", std::process::id());
    let registry = Registry::start_with_login("puller", &password);
    let (image, _) = registry.publish_variant("private", "1", "private");
    // Without credentials the registry refuses: the pull secret is what works.
    let anonymous = tempfile::tempdir().unwrap();
    let refused = std::process::Command::new("docker")
        .env("DOCKER_CONFIG", anonymous.path())
        .args(["pull", "-q", &image])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "the registry lets anyone pull");

    let control = ControlPlane::start();
    let group = unique_site("pull");
    control.apply(&site(&group, &format!("group: {group}"))).success();
    let app = application(&group, &image).replace(
        "  services:\n",
        "  imagePullSecret: registry-login\n  services:\n",
    );
    let run = control.apply(&app);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("spec.imagePullSecret: secret \"registry-login\" does not exist"),
        "{}",
        run.stderr
    );

    let input = tempfile::tempdir().unwrap();
    let config = input.path().join("config.json");
    let auth = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("puller:{password}").as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let auth = String::from_utf8(auth.stdout).unwrap();
    std::fs::write(
        &config,
        format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{auth}\"}}}}}}",
            registry.address
        ),
    )
    .unwrap();
    control
        .cli(&[
            "secret",
            "set",
            "registry-login",
            "--from-file",
            &format!("config.json={}", config.display()),
        ])
        .success();
    control.apply(&app).success();

    let agent = Agent::enroll(&control, &group, "h1");
    let name = format!("outpost.{group}.pos-api-0.api");
    eventually(
        Duration::from_secs(60),
        "the private image pulled and running",
        || running(&name),
    );
    assert!(
        !agent.logged(&password) && !agent.logged(&auth),
        "credentials never logged"
    );
    assert!(!control.logged(&password) && !control.logged(&auth));
}

#[test]
fn a_failed_pull_shows_its_reason_and_is_retried_until_the_registry_returns() {
    let mut registry = Registry::start();
    let (image, _) = registry.publish_variant("flaky", "1", "flaky");
    registry.stop();

    let control = ControlPlane::start();
    let group = unique_site("flaky");
    control.apply(&site(&group, &format!("group: {group}"))).success();
    // A failed first install would roll back to nothing; pausing keeps the
    // site on the version, so the agent keeps retrying its pull.
    let paused = application(&group, &image).replace(
        &format!("sites: group = {group} }}"),
        &format!("sites: group = {group}, rollout: {{ onFailure: pause }} }}"),
    );
    assert!(paused.contains("onFailure: pause"));
    control.apply(&paused).success();
    let _agent = Agent::enroll(&control, &group, "h1");
    let reason = eventually(Duration::from_secs(60), "the pull failure reported", || {
        let deployment = control.cli(&["get", "deployment", "pos", "-o", "json"]);
        let deployment: serde_json::Value = serde_json::from_str(deployment.success()).ok()?;
        let reason = deployment["status"]["sites"][0]["reason"].as_str()?.to_string();
        reason.contains("pulling").then_some(reason)
    });
    assert!(reason.contains(&image), "the reason names the image: {reason}");

    registry.resume();
    let name = format!("outpost.{group}.pos-api-0.api");
    eventually(
        Duration::from_secs(90),
        "running once the registry is back",
        || running(&name),
    );
}

/// Peer fetch: a site's second host, on an engine of its own, gets the
/// image from the first over their mutual-TLS peer link while the
/// registry is stopped, and runs the same bytes. The registry served the
/// image once, to the first host.
#[test]
fn a_second_host_fetches_the_image_from_its_peer_while_the_registry_is_down() {
    let mut registry = Registry::start();
    let (image, _) = registry.publish_variant("peer", "1", "peer");
    let control = ControlPlane::start();
    let name = unique_site("peer");
    control.apply(&site(&name, "group: peer")).success();
    let application = format!(
        "apiVersion: outpost/v1\nkind: Application\nmetadata: {{ name: pos }}\nspec:\n  version: \"1\"\n  services:\n    - name: api\n      mode: per-host\n      containers:\n        - name: api\n          image: {image}\n          command: [\"sh\", \"-c\", \"sleep 3600\"]\n---\napiVersion: outpost/v1\nkind: Deployment\nmetadata: {{ name: pos }}\nspec: {{ application: pos, sites: \"group = peer\" }}\n"
    );
    control.apply(&application).success();

    let first = Agent::enroll_with(&control, &name, "h1", &["--site-listen", &free_address()]);
    let on_first = format!("outpost.{name}.pos-api-h1.api");
    let (_, first_image, _) = eventually(Duration::from_secs(60), "h1 running", || running(&on_first));
    let served = registry.bytes_served();
    assert!(served > 0, "h1 pulled from the registry");

    // The uplink goes: the registry stops. A second host, with its own
    // engine (nothing shared with h1's), joins the site.
    registry.stop();
    let engine = crate::common::engine::Engine::start();
    let second = Agent::enroll_on(
        &control,
        &name,
        "h2",
        &["--site-listen", &free_address()],
        &engine.host,
    );
    let on_second = format!("outpost.{name}.pos-api-h2.api");
    let second_image = eventually(
        Duration::from_secs(90),
        "h2 running from its peer's image",
        || {
            let running = engine.output(&["inspect", "-f", "{{.State.Running}} {{.Image}}", &on_second]);
            running.strip_prefix("true ").map(str::to_string)
        },
    );
    assert_eq!(second_image, first_image, "h2 runs the bytes h1 pulled");
    assert!(
        second.logged("image fetched from a peer of this site"),
        "h2 says where it came from"
    );
    assert!(
        first.logged("serving an image to a peer"),
        "h1 says whom it served"
    );
    assert_eq!(
        registry.bytes_served(),
        served,
        "the registry served the image once"
    );
    drop(second);
}

/// `outpost bundle import` on the agent's data directory.
fn import(agent: &Agent, file: &std::path::Path) -> crate::common::Run {
    crate::common::cli_with(
        &[
            "bundle",
            "import",
            file.to_str().unwrap_or_default(),
            "--data-dir",
            agent.dir.path().to_str().unwrap_or_default(),
        ],
        &[],
        None,
    )
}

/// Offline bundles: a host cut off from its control plane and its registry
/// runs a release from a bundle file; changed, cut, foreign and older
/// bundles are refused and change nothing; when the control plane is back
/// its state (the same release) takes over and nothing starts twice.
#[test]
fn an_imported_bundle_runs_offline_and_bad_ones_change_nothing() {
    let mut registry = Registry::start();
    let (one, _) = registry.publish_variant("bundled", "1", "one");
    let (two, _) = registry.publish_variant("bundled", "2", "two");
    let mut control = ControlPlane::start();
    let name = unique_site("bundle");
    let group = format!("group: {name}");
    control.apply(&site(&name, &group)).success();
    control.apply(&versioned_application(&name, "1", &one)).success();
    let mut agent = Agent::enroll(&control, &name, "h1");
    let on_site = format!("outpost.{name}.pos-api-0.api");
    let version = |agent: &Agent| {
        let _ = agent;
        docker_maybe(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{index .Config.Labels \"io.outpost.version\"}}",
            &on_site,
        ])
        .map(|s| s.trim().to_string())
    };
    eventually(Duration::from_secs(60), "version 1 running", || {
        (version(&agent).as_deref() == Some("true 1")).then_some(())
    });
    let dir = tempfile::tempdir().unwrap();
    let bundle = |file: &str, v: &str| {
        let path = dir.path().join(file);
        let out = control.cli(&[
            "bundle",
            "create",
            "--deployment",
            "pos",
            "--version",
            v,
            "-o",
            path.to_str().unwrap(),
        ]);
        let text = out.success();
        assert!(text.contains("bundle of deployment pos version"), "{text}");
        path
    };
    // A bundle made now is older than what the host will hold next.
    let old = bundle("old.bundle", "1");
    control
        .apply(&versioned_application(&name, "1.1", &one))
        .success();
    eventually(Duration::from_secs(60), "version 1.1 running", || {
        (version(&agent).as_deref() == Some("true 1.1")).then_some(())
    });

    // The host goes offline; version 2 is applied centrally and bundled.
    agent.stop();
    control.apply(&versioned_application(&name, "2", &two)).success();
    let good = bundle("good.bundle", "2");
    let foreign = {
        let other = ControlPlane::start();
        other.apply(&site(&name, &group)).success();
        other.apply(&versioned_application(&name, "2", &two)).success();
        let path = dir.path().join("foreign.bundle");
        other
            .cli(&[
                "bundle",
                "create",
                "--deployment",
                "pos",
                "-o",
                path.to_str().unwrap(),
            ])
            .success();
        path
    };
    // No uplink: no control plane, no registry, and no copy of version 2.
    assert!(control.stop());
    registry.stop();
    docker(&["rmi", &two]);
    agent.start();

    let bytes = std::fs::read(&good).unwrap();
    let variant = |file: &str, bytes: &[u8]| {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let at = bytes.windows(5).position(|w| w == b"\"2\",\"").unwrap() + 1;
    let mut header = bytes.clone();
    header[at] = b'3';
    let mut archive = bytes.clone();
    let last = archive.len() - 100;
    archive[last] ^= 0xff;
    let refused = [
        (variant("header.bundle", &header), "signature does not match"),
        (
            variant("archive.bundle", &archive),
            "the bundle was changed or cut",
        ),
        (variant("cut.bundle", &bytes[..bytes.len() / 2]), "changed or cut"),
        (foreign, "signature does not match"),
        (old, "older than what this host runs"),
    ];
    for (file, why) in &refused {
        let out = import(&agent, file);
        assert_ne!(out.code, 0, "{} was accepted", file.display());
        assert!(out.stderr.contains(why), "{}: {}", file.display(), out.stderr);
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(version(&agent).as_deref(), Some("true 1.1"), "nothing changed");
    assert!(
        docker_maybe(&["image", "inspect", &two]).is_none(),
        "no image of a refused bundle was loaded"
    );

    let out = import(&agent, &good);
    let text = out.success();
    assert!(text.contains("accepted for site"), "{text}");
    eventually(
        Duration::from_secs(60),
        "version 2 running from the bundle",
        || (version(&agent).as_deref() == Some("true 2")).then_some(()),
    );
    let (id, _, _) = running(&on_site).unwrap();

    // The control plane is back with the same release: it takes over,
    // and the container the bundle started is the one that keeps running.
    control.restart();
    eventually(
        Duration::from_secs(60),
        "the control plane's revision applied",
        || {
            let site = control.site_status(&name);
            (site["online"] == true && site["appliedRevision"] == site["revision"]).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let (after, _, _) = running(&on_site).unwrap();
    assert_eq!(after, id, "nothing started twice");
}
