//! Secrets end to end, on the real Docker Engine: delivered as env values
//! and tmpfs files, only to the sites that use them, never in a log or a
//! database file in clear, restarted offline, rotated as `onSecretChange`
//! says, and wiped when the last reference goes. Then the refusals, with
//! their exact messages, and the audit of a reveal.

// Test helpers: a panic is how they report a failed setup.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{Agent, ControlPlane, docker, eventually, site, unique_site};

/// `pos` on the sites labelled `group`: `api` has the password as env and
/// as a file (restart on change), `watcher` has the TLS directory and the
/// password as a file, and is signalled on change.
fn pos_application(group: &str, version: &str) -> String {
    format!(
        r#"apiVersion: outpost/v1
kind: Application
metadata: {{ name: pos }}
spec:
  version: "{version}"
  services:
    - name: api
      containers:
        - name: api
          image: outpost-local/busybox:1
          command: ["sh", "-c", "sleep 3600"]
          env:
            DB_PASSWORD: {{ secret: pos-db, key: password }}
          secrets:
            - {{ secret: pos-db, key: password, path: /etc/pos/db.pass, mode: "0400" }}
        - name: watcher
          image: outpost-local/busybox:1
          command: ["sh", "-c", "trap 'echo hup >> /tmp/hups' HUP; while true; do sleep 1; done"]
          secrets:
            - {{ secret: pos-tls, path: /run/secrets/tls }}
            - {{ secret: pos-db, key: password, path: /etc/pos/db.pass }}
          onSecretChange: signal:SIGHUP
---
apiVersion: outpost/v1
kind: Deployment
metadata: {{ name: pos }}
spec: {{ application: pos, sites: group = {group} }}
"#
    )
}

fn plain_application(group: &str) -> String {
    format!(
        "apiVersion: outpost/v1\nkind: Application\nmetadata: {{ name: till }}\nspec:\n  version: \"1\"\n  services:\n    - name: till\n      containers:\n        - name: till\n          image: outpost-local/busybox:1\n          command: [\"sh\", \"-c\", \"sleep 3600\"]\n---\napiVersion: outpost/v1\nkind: Deployment\nmetadata: {{ name: till }}\nspec: {{ application: till, sites: group = {group} }}\n"
    )
}

fn exec(container: &str, script: &str) -> Option<String> {
    let output = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).to_string())
}

fn container_id(name: &str) -> Option<String> {
    let id = docker(&["ps", "-q", "--filter", &format!("name=^/{name}$")]);
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// The sealed copies an agent holds: (name, version).
fn sealed_rows(agent: &Agent) -> Vec<String> {
    let db = agent.dir.path().join("agent.db");
    let output = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; [print(f'{n} {v}') for n, v in sqlite3.connect(sys.argv[1]).execute('SELECT name, version FROM sealed_secrets ORDER BY name')]",
            db.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Whether any file under `dir` (databases, their WAL, keys…) holds `needle`.
fn any_file_holds(dir: &Path, needle: &str) -> Option<String> {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "secrets") {
                continue; // the tmpfs, where files are meant to be
            }
            if let Some(found) = any_file_holds(&path, needle) {
                return Some(found);
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            return Some(path.display().to_string());
        }
    }
    None
}

#[test]
fn secrets_reach_only_their_sites_stay_out_of_logs_work_offline_rotate_and_are_wiped() {
    let mut control = ControlPlane::start_logging("trace");
    let group = unique_site("sec");
    let (using, other) = (format!("{group}-a"), format!("{group}-b"));
    control
        .apply(&format!(
            "{}---\n{}",
            site(&using, &format!("group: {group}, pos: \"yes\"")),
            site(&other, &format!("group: {group}x"))
        ))
        .success();
    let first = format!("pw-{}-first", std::process::id());
    control
        .cli(&[
            "secret",
            "set",
            "pos-db",
            &format!("password={first}"),
            "user=pos",
            "--sites",
            "pos = yes",
            "--images",
            "outpost-local/*",
        ])
        .success();
    let input = tempfile::tempdir().unwrap();
    let key_file = input.path().join("tls.key.pem");
    std::fs::write(&key_file, "KEY-MATERIAL").unwrap();
    control
        .cli_stdin(
            &[
                "secret",
                "set",
                "pos-tls",
                "tls.crt=-",
                "--from-file",
                &format!("tls.key={}", key_file.display()),
            ],
            "CERT-MATERIAL",
        )
        .success();
    control.apply(&pos_application(&group, "1")).success();
    control.apply(&plain_application(&format!("{group}x"))).success();

    let mut agent = Agent::enroll_logging(&control, &using, "h1", "trace");
    let bystander = Agent::enroll(&control, &other, "h1");
    let api = format!("outpost.{using}.pos-api-0.api");
    let watcher = format!("outpost.{using}.pos-api-0.watcher");

    // Delivered: a file with its mode, a directory of keys, an env value.
    let read = |container: &str, script: &str| {
        eventually(Duration::from_secs(60), &format!("{container}: {script}"), || {
            exec(container, script)
        })
    };
    assert_eq!(read(&api, "cat /etc/pos/db.pass"), first);
    assert!(
        read(&api, "ls -lL /etc/pos/db.pass").starts_with("-r--------"),
        "mode 0400"
    );
    assert_eq!(read(&api, "echo \"$DB_PASSWORD\""), format!("{first}\n"));
    assert_eq!(read(&watcher, "cat /run/secrets/tls/tls.crt"), "CERT-MATERIAL");
    assert_eq!(read(&watcher, "cat /run/secrets/tls/tls.key"), "KEY-MATERIAL");
    assert!(
        read(&watcher, "ls -lL /run/secrets/tls/tls.key").starts_with("-r--r--r--"),
        "default 0444"
    );
    let mounts = read(&watcher, "grep /run/secrets/tls /proc/mounts");
    assert!(mounts.contains("tmpfs") && mounts.contains(" ro,"), "{mounts}");

    // Only where needed: the other site holds nothing of it.
    eventually(Duration::from_secs(60), "the bystander runs its own app", || {
        container_id(&format!("outpost.{other}.till-till-0.till"))
    });
    assert_eq!(sealed_rows(&agent), ["pos-db 1", "pos-tls 1"]);
    assert_eq!(sealed_rows(&bystander), Vec::<String>::new());
    let described = control
        .cli(&["describe", "secret", "pos-db"])
        .success()
        .to_string();
    assert!(
        described.contains(&format!("{using}   h1     1         yes")),
        "{described}"
    );
    assert!(described.contains("Used by:     pos"), "{described}");

    // Never in clear: no log line at trace level, no database file.
    for value in [first.as_str(), "CERT-MATERIAL", "KEY-MATERIAL"] {
        assert!(!control.logged(value), "the control plane logged {value}");
        assert!(!agent.logged(value), "the agent logged {value}");
        assert_eq!(
            any_file_holds(control.dir.path(), value),
            None,
            "{value} at the control plane"
        );
        assert_eq!(
            any_file_holds(agent.dir.path(), value),
            None,
            "{value} at the agent"
        );
    }
    assert!(agent.log_lines() > 100, "trace logging was on");

    // Rotation: `api` restarts (env and `restart`), `watcher` gets the new
    // file in place and a SIGHUP.
    let (api_before, watcher_before) = (container_id(&api).unwrap(), container_id(&watcher).unwrap());
    let second = format!("pw-{}-second", std::process::id());
    control
        .cli(&[
            "secret",
            "set",
            "pos-db",
            &format!("password={second}"),
            "user=pos",
        ])
        .success();
    eventually(Duration::from_secs(60), "the new password in watcher", || {
        (exec(&watcher, "cat /etc/pos/db.pass")? == second).then_some(())
    });
    eventually(Duration::from_secs(30), "watcher signalled", || {
        exec(&watcher, "cat /tmp/hups")
    });
    assert_eq!(
        container_id(&watcher),
        Some(watcher_before.clone()),
        "watcher was not restarted"
    );
    eventually(
        Duration::from_secs(60),
        "api replaced with the new password",
        || {
            let id = container_id(&api)?;
            (id != api_before && exec(&api, "echo \"$DB_PASSWORD\"")? == format!("{second}\n")).then_some(())
        },
    );
    assert_eq!(read(&api, "cat /etc/pos/db.pass"), second);
    assert!(!agent.logged(&second) && !control.logged(&second));

    // Offline: the control plane is gone; a killed container comes back
    // with its files, and so does everything after a "reboot" (the agent
    // stops, its tmpfs is gone, the containers stopped).
    assert!(control.stop());
    docker(&["kill", &watcher]);
    eventually(
        Duration::from_secs(30),
        "watcher back with its file, offline",
        || (exec(&watcher, "cat /etc/pos/db.pass")? == second).then_some(()),
    );
    agent.stop();
    for entry in std::fs::read_dir(agent.secrets_dir()).unwrap().flatten() {
        let status = Command::new("umount").arg(entry.path()).status().unwrap();
        assert!(status.success(), "unmounting the agent's tmpfs");
    }
    docker(&["stop", "-t", "1", &api, &watcher]);
    agent.start();
    assert_eq!(read(&api, "cat /etc/pos/db.pass"), second);
    assert_eq!(read(&watcher, "cat /run/secrets/tls/tls.key"), "KEY-MATERIAL");

    // The last reference goes: files and sealed copies are wiped.
    control.restart();
    control.apply(&plain_application(&group)).success();
    let deleted = control.cli(&["delete", "deployment", "pos"]);
    deleted.success();
    eventually(Duration::from_secs(60), "the secret files wiped", || {
        let left = std::fs::read_dir(agent.secrets_dir())
            .ok()?
            .flatten()
            .flat_map(|mount| std::fs::read_dir(mount.path()).into_iter().flatten().flatten());
        (left.count() == 0).then_some(())
    });
    eventually(Duration::from_secs(30), "the sealed copies wiped", || {
        sealed_rows(&agent).is_empty().then_some(())
    });
    control.cli(&["delete", "secret", "pos-db"]).success();
}

#[test]
fn references_are_checked_at_apply_and_delete_reveal_is_audited_and_the_key_rotates() {
    let control = ControlPlane::start();
    control.apply(&site("shop-eu", "region: eu")).success();
    control.apply(&site("shop-us", "region: us")).success();
    control
        .cli(&[
            "secret",
            "set",
            "db",
            "password=s3cret",
            "--sites",
            "region = eu",
            "--images",
            "outpost-local/*",
        ])
        .success();
    let app = |image: &str, key: &str, secret: &str| {
        format!(
            "apiVersion: outpost/v1\nkind: Application\nmetadata: {{ name: pos }}\nspec:\n  version: \"1\"\n  services:\n    - name: api\n      containers:\n        - name: api\n          image: {image}\n          env:\n            DB_PASSWORD: {{ secret: {secret}, key: {key} }}\n"
        )
    };
    let refused = |text: &str| {
        let run = control.apply(text);
        assert_eq!(run.code, 1, "{}", run.stdout);
        run.stderr.clone()
    };
    assert_eq!(
        refused(&app("outpost-local/busybox:1", "password", "nosuch")),
        "<stdin>:12:36: spec.services[0].containers[0].env.DB_PASSWORD.secret: secret \"nosuch\" does not exist (create it with `outpost secret set`)\nerror: 1 problem in the manifests; nothing was applied\n"
    );
    assert_eq!(
        refused(&app("outpost-local/busybox:1", "pasword", "db")),
        "<stdin>:12:45: spec.services[0].containers[0].env.DB_PASSWORD.key: secret \"db\" has no key \"pasword\" (it has password)\nerror: 1 problem in the manifests; nothing was applied\n"
    );
    assert_eq!(
        refused(&app("evil/busybox:1", "password", "db")),
        "<stdin>:10:18: spec.services[0].containers[0].image: secret \"db\" may not go to image \"evil/busybox:1\" (it allows outpost-local/*)\nerror: 1 problem in the manifests; nothing was applied\n"
    );
    let deployment = "---\napiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: pos }\nspec: { application: pos, sites: region }\n";
    assert_eq!(
        refused(&format!(
            "{}{deployment}",
            app("outpost-local/busybox:1", "password", "db")
        )),
        "<stdin>:17:34: spec.sites: secret \"db\" may not reach site \"shop-us\" (its sites: region = eu)\nerror: 1 problem in the manifests; nothing was applied\n"
    );
    assert_eq!(
        control.cli(&["get", "apps"]).success(),
        "no applications yet\n",
        "nothing stored"
    );

    // Over 512 KiB: refused by the CLI, and by the API for a client that skips it.
    let big = "x".repeat(512 * 1024 + 1);
    let run = control.cli_stdin(&["secret", "set", "huge", "blob=-"], &big);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        "error: secret \"huge\" holds 524289 bytes; at most 524288 (512 KiB) fit\n"
    );
    let input = tempfile::tempdir().unwrap();
    let big_file = input.path().join("big");
    std::fs::write(&big_file, &big).unwrap();
    let encoded = Command::new("base64").arg("-w0").arg(&big_file).output().unwrap();
    let encoded = String::from_utf8(encoded.stdout).unwrap();
    let body = format!("{{\"name\":\"huge\",\"values\":{{\"blob\":\"{encoded}\"}}}}");
    let token = control.token();
    let response = control.http().send(
        "POST",
        "/api/v1/secrets",
        Some(&token),
        Some(("application/json", body.into_bytes())),
    );
    assert_eq!(response.status, 400);
    assert_eq!(
        response.body["error"]["message"],
        "secret \"huge\" holds 524289 bytes; at most 524288 (512 KiB) fit"
    );
    assert_eq!(
        control.cli(&["get", "secrets"]).success().lines().count(),
        2,
        "only db is stored"
    );

    // Deployed, the secret cannot be deleted, nor narrowed away from a site using it.
    control
        .apply(&format!(
            "{}{}",
            app("outpost-local/busybox:1", "password", "db"),
            deployment.replace("sites: region", "sites: region = eu")
        ))
        .success();
    let run = control.cli(&["delete", "secret", "db"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        "error: secret \"db\" is in use by deployment pos (remove the references first)\n"
    );
    let run = control.cli(&["secret", "set", "db", "other=1"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        "error: deployment \"pos\" uses secret \"db\", and with this version secret \"db\" has no key \"password\" (it has other)\n"
    );

    // A reveal prints the value and is audited with who and when.
    assert_eq!(
        control.cli(&["secret", "reveal", "db", "password"]).success(),
        "s3cret"
    );
    let audit: serde_json::Value =
        serde_json::from_str(control.cli(&["audit", "-o", "json"]).success()).unwrap();
    let done: Vec<&serde_json::Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["status"] == 200 && entry["action"].as_str().unwrap().contains("/secrets"))
        .collect();
    assert_eq!(done.len(), 2, "{audit:#}");
    assert!(
        done[0]["token"].as_str().unwrap().starts_with("admin-"),
        "{audit:#}"
    );
    assert_eq!(done[0]["action"], "POST /secrets");
    assert_eq!(done[0]["objects"], serde_json::json!(["secret db version 1"]));
    assert_eq!(done[1]["token"], done[0]["token"], "who revealed");
    assert_eq!(done[1]["action"], "POST /secrets/{name}/reveal");
    assert_eq!(
        done[1]["objects"],
        serde_json::json!(["secrets/db/reveal", "secret db key password version 1"])
    );
    assert!(
        done[1]["source"].as_str().unwrap().starts_with("127.0.0.1:"),
        "from where"
    );
    // The refusals above are in the trail too.
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["status"] == 409 && e["action"] == "DELETE /secrets/{name}"),
        "{audit:#}"
    );

    // The key-encryption key rotates under the running control plane.
    let key_file = control.dir.path().join("secrets.key");
    let before = std::fs::read_to_string(&key_file).unwrap();
    let mut rotate = vec![
        "control",
        "rotate-secrets-key",
        "--data-dir",
        control.dir.path().to_str().unwrap(),
    ];
    if let Some(store) = control.postgres_store() {
        rotate.extend(["--store", store]);
    }
    let rotated = crate::common::cli_with(&rotate, &[], None);
    assert!(
        rotated.success().starts_with("secrets key rotated: key "),
        "{}",
        rotated.stdout
    );
    let after = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(before, after);
    assert_eq!(
        after.lines().filter(|l| !l.starts_with('#')).count(),
        1,
        "the old key is gone"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        control.cli(&["secret", "reveal", "db", "password"]).success(),
        "s3cret"
    );
}
