//! Application owners against a real control plane and a real agent on the
//! Docker Engine: two tenants with an application of the same name side
//! by side on one site, neither able to read, list or learn of the other's
//! applications, deployments, secrets, logs, events and streams; a
//! tenant's deployments confined to its sites and its quotas; a blocked
//! tenant's tokens refused at once.

// Test helpers: a panic is how they report a failed setup.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Agent, ControlPlane, eventually, site, tenant, unique_site};

/// `web` for a tenant: a process that logs `says` every second, with an up
/// topic when `topic`.
fn web(says: &str, replicas: u32, topic: bool) -> String {
    let streams = if topic {
        "  streams:\n    - { name: receipts, direction: up, retention: 1Mi }\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: outpost/v1
kind: Application
metadata: {{ name: web }}
spec:
  version: "{replicas}"
  services:
    - name: api
      replicas: {replicas}
      containers:
        - name: api
          image: outpost-local/busybox:1
          command: ["/bin/sh", "-c", "while true; do echo {says}; sleep 1; done"]
{streams}---
apiVersion: outpost/v1
kind: Deployment
metadata: {{ name: web }}
spec: {{ application: web, sites: "" }}
"#
    )
}

fn yaml(text: &str) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/yaml", text.as_bytes().to_vec()))
}

/// A tenant's admin token, made by the provider's admin with the CLI.
fn admin_of(control: &ControlPlane, tenant: &str) -> String {
    let run = control.cli(&[
        "token",
        "create",
        "--user",
        &format!("{tenant}-admin"),
        "--role",
        "admin",
        "--tenant",
        tenant,
        "-q",
    ]);
    run.success().trim().to_string()
}

#[test]
fn tenants_see_only_their_own_objects_and_deploy_within_their_sites_and_quotas() {
    let control = ControlPlane::start();
    let http = control.http();
    let (eu, us) = (unique_site("ten-eu"), unique_site("ten-us"));
    control.apply(&site(&eu, "region: eu")).success();
    control.apply(&site(&us, "region: us")).success();
    control
        .apply(&(tenant("acme", "region = eu", "{ instances: 2 }") + "---\n" + &tenant("globex", "", "{}")))
        .success();
    let (acme, globex) = (admin_of(&control, "acme"), admin_of(&control, "globex"));
    let _agent = Agent::enroll(&control, &eu, "h1");

    // Both deploy `web` to every site they may reach: acme's stays on its
    // eu sites, and the two run side by side.
    for (token, says, topic) in [(&acme, "acme-line", true), (&globex, "globex-line", false)] {
        let applied = http.send("POST", "/api/v1/apply", Some(token), yaml(&web(says, 1, topic)));
        assert_eq!(applied.status, 200, "{}", applied.body);
        assert_eq!(
            applied.body["results"][0]["name"], "web",
            "names come back as written"
        );
    }
    let rollout = |token: &str| {
        http.send("GET", "/api/v1/deployments/web", Some(token), None)
            .body
    };
    let sites_of = |status: &Value| -> Vec<String> {
        status["status"]["sites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["site"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        sites_of(&rollout(&acme)),
        vec![eu.clone()],
        "confined to region = eu"
    );
    assert!(sites_of(&rollout(&globex)).contains(&us));
    eventually(Duration::from_secs(60), "both tenants' logs uploaded", || {
        let lines = |token: &str| {
            http.send("GET", "/api/v1/logs?application=web", Some(token), None)
                .body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["text"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        let (a, g) = (lines(&acme), lines(&globex));
        (a.iter().any(|l| l == "acme-line") && g.iter().any(|l| l == "globex-line")).then_some((a, g))
    });

    // Secrets of the same name, each the tenant's own.
    for (token, value) in [(&acme, "YQ=="), (&globex, "Zw==")] {
        let body = json!({ "name": "db-pass", "values": { "password": value } });
        let set = http.send(
            "POST",
            "/api/v1/secrets",
            Some(token),
            Some(("application/json", body.to_string().into_bytes())),
        );
        assert_eq!(set.status, 200, "{}", set.body);
    }
    let reveal = |token: &str, name: &str| {
        let body = json!({ "key": "password" }).to_string().into_bytes();
        http.send(
            "POST",
            &format!("/api/v1/secrets/{name}/reveal"),
            Some(token),
            Some(("application/json", body)),
        )
    };
    assert_eq!(reveal(&acme, "db-pass").body["value"], "YQ==");
    assert_eq!(reveal(&globex, "db-pass").body["value"], "Zw==");

    // At rest, each tenant's secrets, logs and records are under its own
    // key: data keys wrapped by it, lines sealed by it, one key each.
    let wrapped = control.sql("SELECT name, key_id FROM secret_versions ORDER BY name");
    assert_eq!(
        wrapped,
        "('acme.db-pass', 'tenant:acme')\n('globex.db-pass', 'tenant:globex')\n"
    );
    let lines = control.sql("SELECT application, text FROM log_lines");
    assert!(
        !lines.contains("acme-line") && !lines.contains("globex-line"),
        "{lines}"
    );
    assert!(lines.contains("('acme.web', 'outpost-sealed:v1:"), "{lines}");
    let keys = control.sql("SELECT tenant, length(wrapped) FROM tenant_keys ORDER BY tenant");
    assert_eq!(keys.lines().count(), 2, "{keys}");

    // globex cannot read, list or learn of anything of acme's: each name
    // of acme's, written as the provider sees it, is 404 like one that
    // never existed, and nothing of acme's is in its lists.
    let admin = control.token();
    assert_eq!(http.names(&admin, "applications"), ["acme.web", "globex.web"]);
    for path in [
        "/api/v1/applications/acme.web",
        "/api/v1/deployments/acme.web",
        "/api/v1/deployments/acme.web/rollout",
        "/api/v1/applications/acme.web/history",
        "/api/v1/secrets/acme.db-pass",
        "/api/v1/logs?application=acme.web",
        "/api/v1/streams/acme.web/receipts",
        "/api/v1/streams/web/receipts",
        "/api/v1/tenants/acme",
        "/api/v1/applications/never-was",
    ] {
        let response = http.send("GET", path, Some(&globex), None);
        assert_eq!(response.status, 404, "{path}: {}", response.body);
        // Word for word what a tenant that never existed gets.
        let never = http.send("GET", &path.replace("acme", "nobody"), Some(&globex), None);
        assert_eq!(
            response.body.to_string(),
            never.body.to_string().replace("nobody", "acme"),
            "{path}"
        );
    }
    assert_eq!(reveal(&globex, "acme.db-pass").status, 404);
    let gone = http.send("DELETE", "/api/v1/deployments/acme.web", Some(&globex), None);
    assert_eq!(gone.status, 404, "{}", gone.body);
    assert_eq!(http.names(&globex, "applications"), ["web"]);
    assert_eq!(http.names(&globex, "tenants"), ["globex"]);
    assert_eq!(
        http.names(&acme, "sites"),
        vec![eu.clone()],
        "acme sees its sites only"
    );
    assert_eq!(
        http.send("GET", &format!("/api/v1/sites/{us}"), Some(&acme), None)
            .status,
        404
    );
    let everything = [
        "/api/v1/sites",
        "/api/v1/applications",
        "/api/v1/deployments",
        "/api/v1/secrets",
        "/api/v1/events",
        "/api/v1/hosts",
        "/api/v1/logs?application=web",
        "/api/v1/tokens",
        "/api/v1/applications/web",
    ];
    for path in everything {
        let response = http.send("GET", path, Some(&globex), None);
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        let text = response.body.to_string();
        assert!(!text.contains("acme"), "{path} shows acme's: {text}");
    }
    assert!(
        http.send("GET", "/api/v1/hosts", Some(&globex), None)
            .body
            .to_string()
            .contains("web-api-0")
    );
    // Its audit trail is its own requests (those naming acme.web included).
    let trail = http.send("GET", "/api/v1/audit", Some(&globex), None).body;
    assert!(
        trail
            .as_array()
            .unwrap()
            .iter()
            .all(|entry| entry["tenant"] == "globex"),
        "{trail}"
    );
    assert_eq!(
        http.send("GET", "/api/v1/streams/web/receipts", Some(&acme), None)
            .status,
        200
    );

    // A tenant writes no name into another namespace, and no site.
    let foreign = web("x", 1, false)
        .replace("name: web }", "name: acme.web }")
        .replace("application: web,", "application: acme.web,");
    let refused = http.send("POST", "/api/v1/apply", Some(&globex), yaml(&foreign));
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused.body.to_string().contains("write names without a tenant"),
        "{}",
        refused.body
    );
    let site_refused = http.send(
        "POST",
        "/api/v1/apply",
        Some(&globex),
        yaml(&site("mine", "a: b")),
    );
    assert_eq!(site_refused.status, 403, "{}", site_refused.body);

    // acme's quota is 2 instances a site: 3 replicas are refused, with where.
    let over = http.send(
        "POST",
        "/api/v1/apply",
        Some(&acme),
        yaml(&web("acme-line", 3, true)),
    );
    assert_eq!(over.status, 422, "{}", over.body);
    assert!(
        over.body.to_string().contains(&format!(
            "tenant acme would go past its quotas on site {eu}: instances 3 > 2"
        )),
        "{}",
        over.body
    );
    assert_eq!(rollout(&acme)["spec"]["application"], "web");
    assert_eq!(
        http.send("GET", "/api/v1/applications/web", Some(&acme), None)
            .body["spec"]["version"],
        "1"
    );

    // Blocked, acme's tokens fail at once and the stream it follows ends;
    // globex's work; unblocked, again.
    let mut follow = http.open("/api/v1/streams/web/receipts?follow=true", &acme);
    assert_eq!(follow.status(), 200);
    let (ended, ends) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::Read::read_to_end(&mut follow, &mut Vec::new());
        let _ = ended.send(());
    });
    let blocked = control.cli(&["block", "tenant", "acme"]);
    assert_eq!(
        blocked.success(),
        "tenant acme blocked: its API tokens are refused and its followed streams ended\n"
    );
    assert_eq!(
        http.send("GET", "/api/v1/applications", Some(&acme), None).status,
        401
    );
    assert_eq!(
        http.send("GET", "/api/v1/applications", Some(&globex), None)
            .status,
        200
    );
    ends.recv_timeout(Duration::from_secs(5))
        .expect("the followed stream ended with the block");
    let wipe = control.cli(&["block", "tenant", "nope"]);
    assert_eq!(wipe.stderr, "error: tenant \"nope\" not found\n");
    control.cli(&["unblock", "tenant", "acme"]).success();
    assert_eq!(
        http.send("GET", "/api/v1/applications", Some(&acme), None).status,
        200
    );

    // A tenant that still owns objects is not deleted.
    let delete = control.cli(&["delete", "tenant", "globex"]);
    assert!(
        delete.stderr.contains("tenant \"globex\" still owns"),
        "{}",
        delete.stderr
    );
}
