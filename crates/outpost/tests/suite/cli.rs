//! The `outpost` binary as an operator runs it: commands, output formats,
//! configuration lookup and exit codes (0 ok, 1 error, 2 usage).

use crate::common::{ControlPlane, cli_with, example, site};

fn examples_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples").to_string()
}

#[test]
fn apply_get_describe_delete_round_trip() {
    let control = ControlPlane::start();
    let applied = control
        .cli(&["apply", "-f", &examples_dir()])
        .success()
        .to_string();
    for line in [
        "site/store-042 created",
        "application/pos-gateway created",
        "deployment/pos-gateway-prod created",
        "application/camera-analytics created",
    ] {
        assert!(applied.contains(line), "{applied}");
    }
    let again = control
        .cli(&["apply", "-f", &examples_dir()])
        .success()
        .to_string();
    assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");

    let sites = control.cli(&["get", "sites"]).success().to_string();
    let mut lines = sites.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("NAME ") && header.contains("STATUS") && header.ends_with("AGE"),
        "{sites}"
    );
    let names: Vec<&str> = lines.map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(
        names,
        ["local", "plant-ulm", "store-042", "store-043", "store-900"]
    );
    // Columns line up: every row's HOSTS cell starts where the header's does.
    let column = header.find("HOSTS").unwrap();
    assert!(
        sites
            .lines()
            .skip(1)
            .all(|l| l[..column].ends_with(' ') && !l[column..].starts_with(' ')),
        "{sites}"
    );

    let selected = control
        .cli(&["get", "sites", "-l", "customer = acme and env = prod"])
        .success()
        .to_string();
    assert_eq!(selected.lines().count(), 3, "{selected}");
    let none = control
        .cli(&["get", "sites", "-l", "customer = nobody"])
        .success()
        .to_string();
    assert_eq!(none, "no sites match \"customer = nobody\"\n");

    let json: serde_json::Value =
        serde_json::from_str(control.cli(&["get", "apps", "-o", "json"]).success()).unwrap();
    assert_eq!(
        json["items"].as_array().unwrap().len(),
        3,
        "pos-gateway, camera-analytics and hello"
    );
    let one: serde_json::Value = serde_json::from_str(
        control
            .cli(&["get", "application", "pos-gateway", "-o", "json"])
            .success(),
    )
    .unwrap();
    assert_eq!(one["spec"]["version"], "1.4.2");
    let yaml = control
        .cli(&["get", "site", "store-042", "-o", "yaml"])
        .success()
        .to_string();
    assert!(
        yaml.contains("name: store-042") && yaml.contains("store_id: \"042\""),
        "{yaml}"
    );

    let wide = control
        .cli(&["get", "deployments", "-o", "wide"])
        .success()
        .to_string();
    let prod = wide.lines().find(|l| l.starts_with("pos-gateway-prod ")).unwrap();
    assert!(
        prod.contains("customer = acme and env = prod") && prod.split_whitespace().any(|c| c == "2"),
        "{wide}"
    );

    let described = control
        .cli(&["describe", "deployment", "pos-gateway-prod"])
        .success()
        .to_string();
    assert!(
        described.contains("Sites:       0 up to date, 0 progressing, 0 failed, 2 offline\n")
            && described.contains("  store-042   offline   no host has enrolled\n")
            && described.contains("  store-043   offline   no host has enrolled\n"),
        "{described}"
    );
    assert!(
        described.contains("canary 2 site(s); waves of 10; healthy for 2m"),
        "{described}"
    );
    let described = control
        .cli(&["describe", "app", "pos-gateway"])
        .success()
        .to_string();
    assert!(
        described.contains("api: registry.example.com/pos/api:1.4.2"),
        "{described}"
    );
    assert!(described.contains("ports:     8080->8080/tcp"), "{described}");
    let described = control
        .cli(&["describe", "site", "plant-ulm"])
        .success()
        .to_string();
    assert!(
        described.contains("line_count = 4") && described.contains("camera-analytics"),
        "{described}"
    );

    let refused = control.cli(&["delete", "application", "pos-gateway"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("is used by deployment"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        control
            .cli(&["delete", "deploy", "pos-gateway-staging"])
            .success(),
        "deployment/pos-gateway-staging deleted\n"
    );
    let gone = control.cli(&["get", "deploy", "pos-gateway-staging"]);
    assert_eq!(
        (gone.code, gone.stderr.as_str()),
        (1, "error: Deployment \"pos-gateway-staging\" not found\n")
    );
}

#[test]
fn diff_shows_what_apply_would_change_and_changes_nothing() {
    let control = ControlPlane::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pos.yaml");
    std::fs::write(&file, example("pos-gateway.yaml")).unwrap();
    let file = file.to_str().unwrap();

    let created = control.cli(&["diff", "-f", file]).success().to_string();
    assert!(
        created.contains("+++ application/pos-gateway (created)"),
        "{created}"
    );
    assert!(
        control
            .cli(&["get", "apps"])
            .success()
            .starts_with("no applications yet")
    );

    control.cli(&["apply", "-f", file]).success();
    assert_eq!(control.cli(&["diff", "-f", file]).success(), "no changes\n");

    let changed = example("pos-gateway.yaml")
        .replace("version: \"1.4.2\"\n  services", "version: \"1.4.3\"\n  services")
        .replace("LOG_LEVEL: info", "LOG_LEVEL: debug");
    std::fs::write(dir.path().join("pos.yaml"), changed).unwrap();
    let diff = control.cli(&["diff", "-f", file]).success().to_string();
    assert!(
        diff.contains("-  version: \"1.4.2\"\n+  version: \"1.4.3\""),
        "{diff}"
    );
    assert!(
        diff.contains("-        LOG_LEVEL: info\n+        LOG_LEVEL: debug"),
        "{diff}"
    );
    assert!(
        !diff.contains("deployment/"),
        "unchanged objects are not shown: {diff}"
    );
    let stored: serde_json::Value = serde_json::from_str(
        control
            .cli(&["get", "app", "pos-gateway", "-o", "json"])
            .success(),
    )
    .unwrap();
    assert_eq!(stored["spec"]["version"], "1.4.2", "diff must not store anything");
}

#[test]
fn history_lists_versions_newest_first() {
    let control = ControlPlane::start();
    for version in ["1.0", "1.1", "2.0"] {
        control
            .cli_stdin(&["apply", "-f", "-"], &crate::common::application("web", version))
            .success();
    }
    let history = control
        .cli(&["history", "application", "web"])
        .success()
        .to_string();
    let versions: Vec<(&str, bool)> = history
        .lines()
        .skip(1)
        .map(|l| (l.split_whitespace().next().unwrap(), l.ends_with('*')))
        .collect();
    assert_eq!(versions, [("2.0", true), ("1.1", false), ("1.0", false)]);
    let usage = control.cli(&["history", "site", "a"]);
    assert_eq!(usage.code, 2);
    assert!(usage.stderr.contains("has no history"), "{}", usage.stderr);
}

#[test]
fn local_validation_reports_every_problem_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    let bad = example("pos-gateway.yaml")
        .replace("memory: 256Mi", "memory: 256MB")
        .replace("healthyFor: 2m", "healthyfor: 2m");
    std::fs::write(&file, bad).unwrap();
    let name = file.to_str().unwrap();
    // No configuration at all: validation needs no control plane.
    let run = cli_with(&["apply", "-f", name], &[], None);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        format!(
            "{name}:21:42: spec.services[0].containers[0].resources.memory: \"256MB\" is not a size (use 256Mi or 256M)\n\
             {name}:45:5: spec.rollout.healthyfor: unknown field \"healthyfor\" (did you mean \"healthyFor\"?)\n\
             error: 2 problems in the manifests; nothing was applied\n"
        )
    );
    let run = cli_with(&["validate", "-f", &examples_dir()], &[], None);
    assert_eq!(run.success(), "12 manifest(s) valid\n");
}

#[test]
fn server_side_errors_are_as_precise_as_local_ones() {
    let control = ControlPlane::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deploy.yaml");
    // Valid on its own; only the server knows the application is missing.
    std::fs::write(&file, "apiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: d }\nspec:\n  sites: env = prod\n  application: ghost\n").unwrap();
    let name = file.to_str().unwrap();
    let run = control.cli(&["apply", "-f", name]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        format!(
            "{name}:6:16: spec.application: application \"ghost\" does not exist (apply it first, or in the same batch)\n\
             error: 1 problem in the manifests; nothing was applied\n"
        )
    );
}

#[test]
fn configuration_comes_from_flag_env_or_home_and_contexts_are_named() {
    let control = ControlPlane::start();
    let admin = control.admin_config();
    let admin = admin.to_str().unwrap();
    assert_eq!(
        cli_with(&["--config", admin, "get", "sites"], &[], None).success(),
        "no sites yet\n"
    );
    assert_eq!(
        cli_with(&["get", "sites"], &[("OUTPOST_CONFIG", admin)], None).success(),
        "no sites yet\n"
    );

    let home = tempfile::tempdir().unwrap();
    let config_dir = home.path().join("outpost");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::copy(admin, config_dir.join("config.yaml")).unwrap();
    let from_home = cli_with(
        &["get", "sites"],
        &[("XDG_CONFIG_HOME", home.path().to_str().unwrap())],
        None,
    );
    assert_eq!(from_home.success(), "no sites yet\n");

    let missing = cli_with(&["get", "sites"], &[], None);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("no configuration at"),
        "{}",
        missing.stderr
    );

    let wrong_context = cli_with(
        &["--config", admin, "--context", "prod", "get", "sites"],
        &[],
        None,
    );
    assert_eq!(wrong_context.code, 1);
    assert!(
        wrong_context.stderr.contains("no context named \"prod\""),
        "{}",
        wrong_context.stderr
    );

    let bad_token = std::fs::read_to_string(admin)
        .unwrap()
        .replace("token: opt_", "token: opt_0");
    let bad = home.path().join("bad.yaml");
    std::fs::write(&bad, bad_token).unwrap();
    let refused = cli_with(&["--config", bad.to_str().unwrap(), "get", "sites"], &[], None);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("missing or invalid API token"),
        "{}",
        refused.stderr
    );
}

#[test]
fn unreachable_servers_and_untrusted_certificates_are_explained() {
    let mut control = ControlPlane::start();
    let admin = control.admin_config();
    // A CA the server does not use: the handshake must fail.
    let other = ControlPlane::start();
    let mixed = std::fs::read_to_string(&admin).unwrap().replace(
        &control.config().contexts[0]
            .certificate_authority
            .lines()
            .collect::<Vec<_>>()
            .join("\n    "),
        &other.config().contexts[0]
            .certificate_authority
            .lines()
            .collect::<Vec<_>>()
            .join("\n    "),
    );
    let mixed_path = other.dir.path().join("mixed.yaml");
    std::fs::write(&mixed_path, mixed).unwrap();
    let untrusted = cli_with(
        &["--config", mixed_path.to_str().unwrap(), "get", "sites"],
        &[],
        None,
    );
    assert_eq!(untrusted.code, 1);
    assert!(
        untrusted
            .stderr
            .contains("presented a certificate this context does not trust (BadSignature)"),
        "{}",
        untrusted.stderr
    );

    assert!(control.stop());
    let down = control.cli(&["get", "sites"]);
    assert_eq!(down.code, 1);
    assert!(
        down.stderr
            .contains("cannot reach the control plane at https://127.0.0.1:"),
        "{}",
        down.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["get", "pods"][..],
        &["apply"],
        &["get", "sites", "-o", "xml"],
        &["frobnicate"],
    ] {
        let run = cli_with(args, &[], None);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
    let run = cli_with(&["get", "pods"], &[], None);
    assert!(
        run.stderr
            .contains("unknown kind \"pods\" (use sites, applications, deployments, hosts or secrets)"),
        "{}",
        run.stderr
    );
    let run = cli_with(&["apply", "-f", "/no/such/file.yaml"], &[], None);
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (1, "error: /no/such/file.yaml: no such file or directory\n")
    );
}

#[test]
fn schema_and_completion() {
    let schema: serde_json::Value = serde_json::from_str(cli_with(&["schema"], &[], None).success()).unwrap();
    let kinds: Vec<&str> = schema["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["properties"]["kind"]["const"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Site", "Application", "Deployment", "Tenant"]);
    assert_eq!(schema["$defs"]["Size"]["format"], "size");
    for shell in ["bash", "zsh", "fish"] {
        let script = cli_with(&["completion", shell], &[], None).success().to_string();
        assert!(
            script.contains("outpost") && script.contains("describe"),
            "{shell}"
        );
    }
}

/// Issue 12: `token create` printed the token and then help text, so
/// scripts had to guess its line. `-q` prints it alone; `-o json` names it.
#[test]
fn token_create_is_scriptable() {
    let control = ControlPlane::start();
    control
        .cli_stdin(&["apply", "-f", "-"], &site("shop", "env: prod"))
        .success();
    let quiet = control.cli(&["token", "create", "--site", "shop", "-q"]);
    let token = quiet.success();
    assert!(token.starts_with("opj1.") && token.ends_with('\n'), "{token:?}");
    assert_eq!(token.split_whitespace().count(), 1, "{token:?}");

    let json = control.cli(&["token", "create", "--site", "shop", "-o", "json", "--ttl", "2h"]);
    let value: serde_json::Value = serde_json::from_str(json.success()).unwrap();
    assert_eq!(value["site"], "shop");
    assert!(value["token"].as_str().unwrap().starts_with("opj1."));
    assert!(value["expiresAt"].is_string(), "{value}");

    let both = control.cli(&["token", "create", "--site", "shop", "-q", "-o", "json"]);
    assert_eq!(both.code, 2, "{}", both.stderr);
}

#[test]
fn the_agent_only_binary_takes_exactly_the_agents_flags() {
    let flags = |output: std::process::Output| -> Vec<String> {
        let text = String::from_utf8(output.stdout).unwrap();
        let mut flags: Vec<String> = text
            .lines()
            .filter_map(|line| line.split_whitespace().find(|w| w.starts_with("--")))
            .map(|flag| flag.trim_end_matches(',').to_string())
            .collect();
        flags.sort();
        flags
    };
    let alone = flags(
        std::process::Command::new(env!("CARGO_BIN_EXE_outpost-agent"))
            .arg("--help")
            .output()
            .unwrap(),
    );
    let within = flags(
        std::process::Command::new(crate::common::BIN)
            .args(["agent", "--help"])
            .output()
            .unwrap(),
    );
    assert!(alone.contains(&"--site-listen".to_string()), "{alone:?}");
    // `outpost` adds its global --config and --context.
    let within: Vec<String> = within
        .into_iter()
        .filter(|f| f != "--config" && f != "--context")
        .collect();
    assert_eq!(alone, within);
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_outpost-agent"))
        .arg("--site-address=h1:7803")
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(2),
        "--site-address needs --site-listen"
    );
}

#[test]
fn site_keys_rotate_on_request_and_bad_requests_change_nothing() {
    let control = ControlPlane::start();
    control.cli(&["apply", "-f", &examples_dir()]).success();
    let keys = control.cli(&["site", "keys", "store-042"]).success().to_string();
    assert!(keys.contains("underlay key epoch 1"), "{keys}");
    let rotated = control
        .cli(&["site", "rotate-keys", "store-042"])
        .success()
        .to_string();
    assert_eq!(
        rotated,
        "site store-042: rotating the underlay keys to epoch 2\n0/0 hosts hold a key of epoch 2; epoch 1 is accepted until all do\n"
    );
    let at_once = control
        .cli(&["site", "rotate-keys", "store-042", "--at-once"])
        .success()
        .to_string();
    assert!(
        at_once.contains("epoch 3") && at_once.contains("no other epoch is accepted"),
        "{at_once}"
    );
    let missing = control.cli(&["site", "rotate-keys", "no-such-site"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("site \"no-such-site\" not found"),
        "{}",
        missing.stderr
    );
    let body = control.http().send(
        "POST",
        "/api/v1/sites/store-042/rotate-keys",
        Some(&control.token()),
        Some(("application/json", b"{\"atOnce\": \"yes\"}".to_vec())),
    );
    assert_eq!(body.status, 400, "{:?}", body.body);
    let keys = control.cli(&["site", "keys", "store-042"]).success().to_string();
    assert!(
        keys.contains("underlay key epoch 3"),
        "a refused request rotates nothing: {keys}"
    );
    let run = cli_with(
        &[
            "control",
            "--site-key-rotation",
            "5m",
            "--data-dir",
            "/nonexistent",
        ],
        &[],
        None,
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("--site-key-rotation: rotate at most once an hour"),
        "{}",
        run.stderr
    );
}
