//! The web console at `/ui/`, driven in a real headless Chromium against a
//! real control plane and a real agent on the Docker Engine: sign-in, an
//! apply made from the console, a site's health as it changes (live), a
//! rollout steered from its page, refusals for a viewer and another
//! tenant, labels, a phone-width layout, and screenshots of the main pages.

use std::time::Duration;

use serde_json::json;

use crate::common::browser::Browser;
use crate::common::{Agent, ControlPlane, eventually, site, tenant, unique_site};

/// `shop` at `version`: one container that becomes ready (its probe
/// passes) a few seconds after it starts, so that the site is seen
/// progressing before it is up to date. `rollout` is the deployment's.
fn shop(version: &str, rollout: &str) -> String {
    format!(
        r#"apiVersion: outpost/v1
kind: Application
metadata: {{ name: shop }}
spec:
  version: "{version}"
  services:
    - name: web
      containers:
        - name: web
          image: outpost-local/busybox:1
          command: ["/bin/sh", "-c", "echo shop {version} starting; sleep 5; touch /tmp/ready; exec sleep 3600"]
          health: {{ exec: {{ command: ["/bin/sh", "-c", "test -f /tmp/ready"] }}, interval: 1s }}
---
apiVersion: outpost/v1
kind: Deployment
metadata: {{ name: shop }}
spec:
  application: shop
  sites: "region = north"{rollout}
"#
    )
}

fn token(control: &ControlPlane, user: &str, role: &str, tenant: &str) -> String {
    control
        .cli(&[
            "token", "create", "--user", user, "--role", role, "--tenant", tenant, "--quiet",
        ])
        .success()
        .trim()
        .to_string()
}

/// Signs out (from any console page), then in with an API token.
fn sign_in_with_token(browser: &Browser, token: &str) {
    browser.click("form.signout button");
    browser.wait_for_text("h1", "Sign in", Duration::from_secs(10));
    browser.fill("#token", token);
    browser.click("main form button[type=submit]");
    browser.wait_for_text("h1", "Fleet overview", Duration::from_secs(10));
}

#[track_caller]
fn assert_labelled(browser: &Browser) {
    let unlabelled = browser.unlabelled_controls();
    assert!(
        unlabelled.is_empty(),
        "controls without a label on {}: {unlabelled:#?}",
        browser.at()
    );
}

#[test]
fn a_user_signs_in_applies_from_the_console_watches_health_and_steers_a_rollout_in_a_real_browser() {
    let control = ControlPlane::start();
    // Sites in name order: the first has a host, the second never had one.
    let (online, offline) = (unique_site("ui-a"), unique_site("ui-b"));
    control.apply(&site(&online, "region: north")).success();
    control.apply(&site(&offline, "region: north")).success();
    let _agent = Agent::enroll(&control, &online, "h1");
    control.apply(&tenant("acme", "region = north", "{}")).success();
    let viewer = token(&control, "helpdesk", "viewer", "provider");
    let acme = token(&control, "acme-dev", "operator", "acme");
    let link = control
        .http()
        .send("POST", "/api/v1/login/links", Some(&control.token()), None)
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();

    // The fleet views refuse bad input by name.
    for (query, named) in [
        ("/fleet/sites?health=sideways", "health"),
        ("/fleet/sites?perPage=many", "perPage"),
        ("/fleet/overview?groupBy=no%20spaces", "groupBy"),
        ("/fleet/overview?selector=region%20%3D%3D", "selector"),
    ] {
        let answer = control
            .http()
            .send("GET", &format!("/api/v1{query}"), Some(&control.token()), None);
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{query}: {message}");
    }

    let browser = Browser::open(&control.url);
    // Not signed in: every page leads to sign-in, and back after it.
    browser.goto("/ui/sites");
    eventually(Duration::from_secs(10), "the sign-in page", || {
        browser.at().starts_with("/ui/signin").then_some(())
    });
    assert_labelled(&browser);

    // A one-time link signs in once.
    browser.goto(&format!("/ui/signin?link={link}&then=/ui/sites"));
    browser.click("main form button[type=submit]");
    browser.wait_for_text("h1", "Sites", Duration::from_secs(10));
    browser.goto(&format!("/ui/signin?link={link}"));
    browser.click("main form button[type=submit]");
    browser.wait_for_text(".refusal", "unknown, used or expired", Duration::from_secs(10));

    // The session from the link still holds; apply from the console: a
    // wrong manifest gets the CLI's precise error, a right one its plan.
    browser.goto("/ui/apply");
    assert_labelled(&browser);
    browser.fill(
        "#yaml",
        "apiVersion: outpost/v1\nkind: Application\nmetadata: { name: shop }\nspec:\n  wifi: on\n",
    );
    browser.click("button[value=plan]");
    let error = browser.wait_for_text(".refusal", "console.yaml:5:3", Duration::from_secs(10));
    assert!(error.contains("unknown field"), "{error}");
    browser.fill("#yaml", &shop("1", ""));
    browser.click("button[value=plan]");
    // The plan names both sites (waited for: htmx swaps it in).
    browser.wait_for_text("main", "Deployment shop", Duration::from_secs(10));
    browser.wait_for_text("main", &online, Duration::from_secs(10));
    browser.wait_for_text("main", &offline, Duration::from_secs(10));
    browser.screenshot("apply-plan");
    browser.click("button[value=apply]");
    browser.wait_for_text(".notice", "Deployment shop", Duration::from_secs(10));

    // The site page shows the site progressing, then, without a reload
    // (server-sent events refresh it), up to date once the probe passes.
    browser.goto(&format!("/ui/sites/{online}"));
    browser.run("window.notReloaded = true; return null;");
    browser.wait_for_text("#live", "progressing", Duration::from_secs(30));
    let page = browser.wait_for_text("#live", "up to date", Duration::from_secs(60));
    assert_eq!(browser.run("return window.notReloaded === true;"), json!(true));
    assert!(page.contains("shop") && page.contains("h1"), "{page}");
    // The log tail shows what the container wrote.
    browser.wait_for_text("#live", "shop 1 starting", Duration::from_secs(30));
    assert_labelled(&browser);
    browser.screenshot("site");

    // The overview counts it, and the offline site as never connected.
    browser.goto("/ui/?groupBy=region");
    assert_eq!(browser.text("a.count.upToDate strong").as_deref(), Some("1"));
    assert_eq!(
        browser.text("a.count.neverConnected strong").as_deref(),
        Some("1")
    );
    let overview = browser.text("main").unwrap();
    assert!(overview.contains("north (2 sites"), "{overview}");
    assert_labelled(&browser);
    browser.screenshot("overview");
    browser.goto("/ui/sites?selector=region%3Dnorth");
    let sites = browser.text("main").unwrap();
    assert!(sites.contains("2 sites match"), "{sites}");
    assert_labelled(&browser);
    browser.screenshot("sites");

    // A new version rolls out canary first and waits there: pause and
    // resume it from its page, each after a confirmation.
    let rollout = "\n  rollout: { canary: 1, healthyFor: 10m }";
    control.apply(&shop("2", rollout)).success();
    browser.goto("/ui/deployments/shop");
    browser.wait_for_text("#phase", "running", Duration::from_secs(30));
    for (command, phase) in [("pause", "paused"), ("resume", "running")] {
        browser.click(&format!("a[href='/ui/deployments/shop/{command}']"));
        browser.wait_for_text(
            "h1",
            &format!("{command} the rollout of shop?"),
            Duration::from_secs(10),
        );
        assert_labelled(&browser);
        browser.click("main form button[type=submit]");
        browser.wait_for_text(".notice", &format!("Done: {command}"), Duration::from_secs(10));
        browser.wait_for_text("#phase", phase, Duration::from_secs(10));
    }
    let waves = browser.text("main").unwrap();
    assert!(waves.contains("Wave canary"), "{waves}");
    assert!(
        waves.contains("passed over while offline") || waves.contains("offline"),
        "{waves}"
    );
    assert_labelled(&browser);
    browser.screenshot("deployment");
    browser.goto("/ui/audit");
    let audit = browser.text("main").unwrap();
    assert!(
        audit.contains("rollout pause") || audit.contains("pause"),
        "{audit}"
    );

    // A viewer sees the fleet and is refused a rollout command. Signing
    // out ended the session the link made, at the API.
    sign_in_with_token(&browser, &viewer);
    let tokens = control
        .http()
        .send("GET", "/api/v1/tokens", Some(&control.token()), None)
        .body;
    let sessions: Vec<&serde_json::Value> = tokens
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["createdBy"].as_str().is_some_and(|by| by.starts_with("once:")))
        .collect();
    assert_eq!(sessions.len(), 1, "{tokens}");
    assert!(sessions[0]["revokedAt"].is_string(), "{tokens}");
    browser.goto("/ui/deployments/shop/abort");
    browser.click("main form button[type=submit]");
    let refused = browser.wait_for_text("main", "403", Duration::from_secs(10));
    assert!(refused.contains("Not allowed"), "{refused}");
    let phase = control.cli(&["rollout", "status", "shop"]).success().to_string();
    assert!(
        phase.contains("running"),
        "the viewer's abort changed nothing: {phase}"
    );

    // Another tenant cannot learn that the deployment exists.
    sign_in_with_token(&browser, &acme);
    browser.goto("/ui/deployments/shop");
    let missing = browser.wait_for_text("main", "404", Duration::from_secs(10));
    assert!(missing.contains("Not found"), "{missing}");

    // At a phone's width the pages fit; wide tables scroll in place.
    sign_in_with_token(&browser, &control.token());
    browser.resize(390, 844);
    for path in ["/ui/", &format!("/ui/sites/{online}"), "/ui/deployments/shop"] {
        browser.goto(path);
        assert!(!browser.overflows(), "{path} is wider than a phone");
    }
    browser.goto("/ui/");
    browser.screenshot("overview-phone");
}
