//! The REST API of a real `outpost control` process: authentication,
//! all-or-nothing applies, generations and history, error bodies, restarts.

use crate::common::{ControlPlane, application, example, site};
use serde_json::json;

#[test]
fn every_endpoint_but_health_and_openapi_needs_a_valid_token() {
    let control = ControlPlane::start();
    let http = control.http();
    // Every route the router serves, but the two that are public.
    for (method, path) in [
        ("POST", "/api/v1/apply"),
        ("POST", "/api/v1/plan"),
        ("GET", "/api/v1/applications/a/history"),
        ("POST", "/api/v1/sites/a/tokens"),
        ("GET", "/api/v1/hosts"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/logs?application=a"),
        ("PATCH", "/api/v1/hosts/a/h/labels"),
        ("PATCH", "/api/v1/sites/a/labels"),
        ("GET", "/api/v1/deployments/d/rollout"),
        ("POST", "/api/v1/deployments/d/rollout/undo"),
        ("POST", "/api/v1/deployments/d/rollout/promote"),
        ("GET", "/api/v1/sites"),
        ("GET", "/api/v1/sites/a"),
        ("DELETE", "/api/v1/sites/a"),
        ("GET", "/metrics"),
    ] {
        for token in [None, Some("opt_not-a-real-token"), Some("")] {
            let response = http.send(method, path, token, None);
            assert_eq!(response.status, 401, "{method} {path} with {token:?}");
            assert_eq!(response.body["error"]["code"], "unauthorized");
        }
    }
    assert_eq!(http.send("GET", "/healthz", None, None).status, 200);
    let openapi = http.send("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(openapi.status, 200);
    assert_eq!(openapi.body["openapi"], "3.1.0");
    assert!(openapi.body["paths"]["/apply"]["post"].is_object());
    assert!(openapi.body["components"]["schemas"]["Manifest"]["oneOf"].is_array());
    assert!(
        !openapi.body.to_string().contains("#/$defs/"),
        "every reference must resolve inside components"
    );
    assert_eq!(
        http.send("GET", "/api/v1/sites", Some(&control.token()), None)
            .status,
        200
    );
}

#[test]
fn the_token_is_stored_only_as_a_hash_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let control = ControlPlane::start();
    let token = control.token();
    let stored = control.stored_bytes();
    assert!(
        !stored.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token is stored in clear"
    );
    for file in ["admin.yaml", "tls/ca.key"] {
        let mode = std::fs::metadata(control.dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let mode = std::fs::metadata(control.dir.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn a_multi_document_apply_is_all_or_nothing() {
    let control = ControlPlane::start();
    let (http, token) = (control.http(), control.token());

    // A schema error in the third document: none of the three is stored.
    let batch = format!(
        "{}---\n{}---\n{}",
        site("a", "env: prod"),
        site("b", "env: prod"),
        site("C", "env: prod")
    );
    let response = http.apply(&token, &[("sites.yaml", &batch)], false);
    assert_eq!(response.status, 422, "{}", response.body);
    assert_eq!(response.body["error"]["code"], "invalid_manifest");
    assert_eq!(response.body["error"]["diagnostics"][0]["file"], "sites.yaml");
    // The third document starts at line 13; its name is the fourth line.
    assert_eq!(response.body["error"]["diagnostics"][0]["line"], 16);
    assert_eq!(response.body["error"]["diagnostics"][0]["column"], 9);
    assert!(http.names(&token, "sites").is_empty());

    // A problem only the store can see (a deployment of an unknown
    // application) in the second file: the first file's site is not stored.
    let deployment = "apiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: d }\nspec:\n  application: missing\n  sites: env = prod\n";
    let response = http.apply(
        &token,
        &[
            ("site.yaml", &site("a", "env: prod")),
            ("deploy.yaml", deployment),
        ],
        false,
    );
    assert_eq!(response.status, 422, "{}", response.body);
    let diagnostic = &response.body["error"]["diagnostics"][0];
    assert_eq!(diagnostic["file"], "deploy.yaml");
    assert_eq!(
        (diagnostic["line"].as_i64(), diagnostic["column"].as_i64()),
        (Some(5), Some(16))
    );
    assert_eq!(diagnostic["path"], "spec.application");
    assert!(http.names(&token, "sites").is_empty());

    // The same batch with the application in it goes through whole.
    let response = http.apply(
        &token,
        &[
            ("site.yaml", &site("a", "env: prod")),
            ("deploy.yaml", deployment),
            ("app.yaml", &application("missing", "1")),
        ],
        false,
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(http.names(&token, "sites"), ["a"]);
    assert_eq!(http.names(&token, "deployments"), ["d"]);
}

#[test]
fn defining_an_object_twice_in_one_batch_is_refused() {
    let control = ControlPlane::start();
    let (http, token) = (control.http(), control.token());
    let response = http.apply(
        &token,
        &[("one.yaml", &site("a", "")), ("two.yaml", &site("a", "x: y"))],
        false,
    );
    assert_eq!(response.status, 422);
    let message = response.body["error"]["diagnostics"][0]["message"]
        .as_str()
        .unwrap();
    assert_eq!(message, "Site \"a\" is defined twice (also at one.yaml:4:9)");
    assert!(http.names(&token, "sites").is_empty());
}

#[test]
fn generations_count_changes_and_applications_keep_ten_versions() {
    let control = ControlPlane::start();
    let (http, token) = (control.http(), control.token());
    let apply = |text: &str| {
        let response = http.apply(&token, &[("app.yaml", text)], false);
        assert_eq!(response.status, 200, "{}", response.body);
        let result = &response.body["results"][0];
        (
            result["action"].as_str().unwrap().to_string(),
            result["generation"].as_i64().unwrap(),
        )
    };
    assert_eq!(apply(&application("web", "1")), ("created".into(), 1));
    assert_eq!(apply(&application("web", "1")), ("unchanged".into(), 1));
    assert_eq!(apply(&application("web", "2")), ("configured".into(), 2));
    // Labels change the generation, not the version history.
    let labelled = application("web", "2").replace("  name: web\n", "  name: web\n  labels: { team: a }\n");
    assert_eq!(apply(&labelled), ("configured".into(), 3));

    // A deployment pins version 1, so it outlives the ten-version window.
    let pin = "apiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: d }\nspec:\n  application: web\n  version: \"1\"\n  sites: env = prod\n";
    assert_eq!(apply(pin), ("created".into(), 1));
    for version in 3..=14 {
        apply(&application("web", &version.to_string()));
    }
    let history = http.send("GET", "/api/v1/applications/web/history", Some(&token), None);
    let versions: Vec<&str> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(
        versions,
        ["14", "13", "12", "11", "10", "9", "8", "7", "6", "5", "1"]
    );
    assert_eq!(history.body[0]["current"], true);
    assert_eq!(history.body[1]["current"], false);

    // Going back to a kept version is allowed; changing it is not.
    assert_eq!(apply(&application("web", "5")).0, "configured");
    let changed = application("web", "5").replace(
        "image: registry.example.com/web:5",
        "image: registry.example.com/web:5b",
    );
    let response = http.apply(&token, &[("app.yaml", &changed)], false);
    assert_eq!(response.status, 422);
    assert_eq!(response.body["error"]["diagnostics"][0]["path"], "spec.version");
    let stored = http.send("GET", "/api/v1/applications/web", Some(&token), None);
    assert_eq!(
        stored.body["spec"]["services"][0]["containers"][0]["image"],
        "registry.example.com/web:5"
    );
}

#[test]
fn a_deployment_may_name_only_a_kept_version() {
    let control = ControlPlane::start();
    let (http, token) = (control.http(), control.token());
    assert_eq!(
        http.apply(&token, &[("app.yaml", &application("web", "1.0"))], false)
            .status,
        200
    );
    let deployment = "apiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: d }\nspec:\n  application: web\n  version: \"9.9\"\n  sites: env = prod\n";
    let response = http.apply(&token, &[("d.yaml", deployment)], false);
    assert_eq!(response.status, 422);
    assert_eq!(
        response.body["error"]["diagnostics"][0]["message"],
        "application \"web\" has no version \"9.9\" (known: 1.0)"
    );
}

#[test]
fn dry_run_reports_and_stores_nothing() {
    let control = ControlPlane::start();
    let (http, token) = (control.http(), control.token());
    let response = http.apply(&token, &[("s.yaml", &site("a", "env: prod"))], true);
    assert_eq!(response.status, 200);
    assert_eq!(response.body["dryRun"], true);
    assert_eq!(response.body["results"][0]["action"], "created");
    assert!(http.names(&token, "sites").is_empty());
}

#[test]
fn list_filters_by_selector() {
    let control = ControlPlane::start();
    let (http, token) = (control.http(), control.token());
    let sites = example("sites.yaml");
    assert_eq!(http.apply(&token, &[("sites.yaml", &sites)], false).status, 200);
    let query = |selector: &str| http.names(&token, &format!("sites?selector={}", encode(selector)));
    assert_eq!(
        query("customer = acme and env = prod"),
        ["store-042", "store-043"]
    );
    assert_eq!(
        query("format in (express) or customer = globex"),
        ["plant-ulm", "store-043", "store-900"]
    );
    assert_eq!(query("!format"), ["plant-ulm"]);
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn bad_requests_get_a_precise_4xx_never_a_500() {
    let control = ControlPlane::start();
    let (http, token) = (control.http(), control.token());
    let token = Some(token.as_str());
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, Vec<u8>)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/v1/apply",
            Some(("application/json", b"{not json".to_vec())),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/apply",
            Some(("application/json", br#"{"files": 3}"#.to_vec())),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/apply",
            Some(("application/json", br#"{"files": []}"#.to_vec())),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/apply",
            Some(("application/json", br#"{"files": [], "extra": 1}"#.to_vec())),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/apply",
            Some(("text/html", b"<p>".to_vec())),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/v1/apply",
            Some(("application/yaml", vec![0xff, 0xfe])),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/apply",
            Some(("application/yaml", b"kind: [".to_vec())),
            422,
            "invalid_manifest",
        ),
        (
            "POST",
            "/api/v1/apply",
            Some(("application/yaml", b"".to_vec())),
            422,
            "invalid_manifest",
        ),
        (
            "POST",
            "/api/v1/apply?dryRun=maybe",
            Some(("application/yaml", b"a: 1".to_vec())),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/sites?selector=env%20%3D",
            None,
            400,
            "bad_request",
        ),
        ("GET", "/api/v1/pods", None, 404, "not_found"),
        ("GET", "/api/v1/sites/nope", None, 404, "not_found"),
        ("DELETE", "/api/v1/sites/nope", None, 404, "not_found"),
        ("GET", "/api/v1/applications/nope/history", None, 404, "not_found"),
        ("GET", "/nowhere", None, 404, "not_found"),
        ("PUT", "/api/v1/sites/a", None, 405, "method_not_allowed"),
        ("GET", "/api/v1/apply", None, 405, "method_not_allowed"),
        // Last: the server closes the connection after refusing the body.
        (
            "POST",
            "/api/v1/apply",
            Some(("application/yaml", vec![b'#'; 9 << 20])),
            413,
            "payload_too_large",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let response = http.send(method, path, token, body);
        assert_eq!(response.status, status, "{method} {path}: {}", response.body);
        assert_eq!(response.body["error"]["code"], code, "{method} {path}");
        assert!(!response.body["error"]["message"].as_str().unwrap().is_empty());
    }
}

#[test]
fn raw_yaml_bodies_are_validated_with_positions() {
    let control = ControlPlane::start();
    let (http, token) = (control.http(), control.token());
    let body = "apiVersion: outpost/v1\nkind: Site\nmetadata:\n  name: a\n  lables: {}\n";
    let response = http.send(
        "POST",
        "/api/v1/apply?source=site.yaml",
        Some(&token),
        Some(("application/yaml", body.into())),
    );
    assert_eq!(response.status, 422);
    assert_eq!(
        response.body["error"]["diagnostics"],
        json!([{ "file": "site.yaml", "line": 5, "column": 3, "path": "metadata.lables",
                 "message": "unknown field \"lables\" (did you mean \"labels\"?)" }])
    );
}

#[test]
fn an_application_in_use_cannot_be_deleted() {
    let control = ControlPlane::start();
    let (http, token) = (control.http(), control.token());
    let pos = example("pos-gateway.yaml");
    assert_eq!(http.apply(&token, &[("pos.yaml", &pos)], false).status, 200);
    let response = http.send("DELETE", "/api/v1/applications/pos-gateway", Some(&token), None);
    assert_eq!(response.status, 409);
    assert!(
        response.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pos-gateway-prod")
    );
    for deployment in ["pos-gateway-prod", "pos-gateway-staging"] {
        assert_eq!(
            http.send(
                "DELETE",
                &format!("/api/v1/deployments/{deployment}"),
                Some(&token),
                None
            )
            .status,
            200
        );
    }
    assert_eq!(
        http.send("DELETE", "/api/v1/applications/pos-gateway", Some(&token), None)
            .status,
        200
    );
    assert_eq!(
        http.send(
            "GET",
            "/api/v1/applications/pos-gateway/history",
            Some(&token),
            None
        )
        .status,
        404
    );
}

#[test]
fn sigterm_stops_cleanly_and_a_restart_keeps_everything() {
    let mut control = ControlPlane::start();
    let token = control.token();
    let files = [
        ("sites.yaml", example("sites.yaml")),
        ("pos.yaml", example("pos-gateway.yaml")),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    assert_eq!(control.http().apply(&token, &files, false).status, 200);
    let before = control
        .http()
        .send("GET", "/api/v1/applications/pos-gateway", Some(&token), None)
        .body;

    assert!(control.stop(), "the control plane must exit 0 on SIGTERM");
    control.restart();
    assert_eq!(control.token(), token, "a restart keeps the admin token");
    let http = control.http();
    assert_eq!(
        http.names(&token, "sites"),
        ["plant-ulm", "store-042", "store-043", "store-900"]
    );
    assert_eq!(
        http.send("GET", "/api/v1/applications/pos-gateway", Some(&token), None)
            .body,
        before
    );
    let history = http.send(
        "GET",
        "/api/v1/applications/pos-gateway/history",
        Some(&token),
        None,
    );
    assert_eq!(history.body.as_array().unwrap().len(), 1);
}
