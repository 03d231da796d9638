//! Snapshot tests of validation: every bad manifest names the exact
//! problem, its `file:line:column` and field path.

use expect_test::{Expect, expect};

use super::*;

fn check(text: &str, expected: Expect) {
    let actual = match parse_documents("app.yaml", text) {
        Ok(documents) => {
            let batch = check_batch(&documents);
            if batch.is_empty() {
                "ok".to_string()
            } else {
                batch.to_string()
            }
        }
        Err(diagnostics) => diagnostics.to_string(),
    };
    expected.assert_eq(&actual);
}

const APP_HEAD: &str =
    "apiVersion: outpost/v1\nkind: Application\nmetadata:\n  name: pos\nspec:\n  version: \"1.0\"\n";

fn app(services: &str) -> String {
    format!("{APP_HEAD}  services:\n{services}")
}

#[test]
fn examples_are_valid() {
    for (file, text) in [
        ("sites.yaml", include_str!("../../../../examples/sites.yaml")),
        (
            "pos-gateway.yaml",
            include_str!("../../../../examples/pos-gateway.yaml"),
        ),
        (
            "camera-analytics.yaml",
            include_str!("../../../../examples/camera-analytics.yaml"),
        ),
        (
            "quickstart.yaml",
            include_str!("../../../../examples/quickstart.yaml"),
        ),
    ] {
        let documents = parse_documents(file, text).unwrap_or_else(|d| panic!("{d}"));
        assert!(!documents.is_empty());
    }
}

#[test]
fn the_issue_example() {
    check(
        &app(
            "    - name: api\n      containers:\n        - name: api\n          image: pos/api:1\n          resources:\n            memory: 256MB\n",
        ),
        expect![[
            r#"app.yaml:13:21: spec.services[0].containers[0].resources.memory: "256MB" is not a size (use 256Mi or 256M)"#
        ]],
    );
}

#[test]
fn reports_every_problem_at_once() {
    check(
        &app(
            "    - name: api\n      replicas: two\n      containers:\n        - name: API\n          imgae: pos/api:1\n          ports: [ { container: 70000 } ]\n          resources: { cpu: lots, memory: 1Gi }\n",
        ),
        expect![[r#"
            app.yaml:9:17: spec.services[0].replicas: expected a whole number, found "two"
            app.yaml:11:11: spec.services[0].containers[0]: missing field "image"
            app.yaml:11:17: spec.services[0].containers[0].name: "API" is not a DNS label (lower-case letters, digits and '-'; try "api")
            app.yaml:12:11: spec.services[0].containers[0].imgae: unknown field "imgae" (did you mean "image"?)
            app.yaml:13:33: spec.services[0].containers[0].ports[0].container: 70000 is out of range (1 to 65535)
            app.yaml:14:29: spec.services[0].containers[0].resources.cpu: "lots" is not a CPU amount (use 0.5 or 500m)"#]],
    );
}

#[test]
fn not_yaml() {
    check(
        "kind: Site\nmetadata: [name: x\n",
        expect![
            "app.yaml:3:1: not valid YAML: while parsing a flow mapping, did not find expected ',' or '}'"
        ],
    );
}

#[test]
fn empty_file() {
    check(
        "# nothing here\n",
        expect!["app.yaml:1:1: no manifests found (the file is empty)"],
    );
}

#[test]
fn not_a_map() {
    check(
        "- kind: Site\n",
        expect![
            "app.yaml:1:1: expected a manifest (a map with apiVersion, kind, metadata and spec), found a list"
        ],
    );
}

#[test]
fn missing_kind() {
    check(
        "apiVersion: outpost/v1\nmetadata: { name: a }\n",
        expect![[
            r#"app.yaml:1:1: missing field "kind" (one of "Site", "Application", "Deployment" or "Tenant")"#
        ]],
    );
}

#[test]
fn unknown_kind() {
    check(
        "apiVersion: outpost/v1\nkind: Deploymnt\nmetadata: { name: a }\n",
        expect![[r#"app.yaml:2:7: kind: unknown kind "Deploymnt" (did you mean "Deployment"?)"#]],
    );
}

#[test]
fn wrong_api_version() {
    check(
        "apiVersion: outpost/v2\nkind: Site\nmetadata: { name: a }\n",
        expect![[r#"app.yaml:1:13: apiVersion: "outpost/v2" is not supported (use "outpost/v1")"#]],
    );
}

#[test]
fn name_not_a_dns_label() {
    check(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: { name: Store_042 }\n",
        expect![[
            r#"app.yaml:3:19: metadata.name: "Store_042" is not a DNS label (lower-case letters, digits and '-'; try "store-042")"#
        ]],
    );
}

#[test]
fn unknown_field_far_from_any() {
    check(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: { name: a }\nspec:\n  wifi: yes\n",
        expect![[
            r#"app.yaml:5:3: spec.wifi: unknown field "wifi" (expected "variables", "hostLossAfter" or "oftenOffline")"#
        ]],
    );
}

#[test]
fn duplicate_key() {
    check(
        "apiVersion: outpost/v1\nkind: Site\nmetadata:\n  name: a\n  name: b\n",
        expect![[r#"app.yaml:5:3: metadata.name: duplicate key "name" (first at line 4)"#]],
    );
}

#[test]
fn version_must_be_quoted() {
    check(
        "apiVersion: outpost/v1\nkind: Application\nmetadata: { name: pos }\nspec:\n  version: 1.4\n  services: []\n",
        expect![[r#"app.yaml:5:12: spec.version: expected a string, found 1.4 (quote it: "1.4")"#]],
    );
}

#[test]
fn missing_required_fields() {
    check(
        &app("    - name: api\n      containers:\n        - name: api\n"),
        expect![[r#"app.yaml:10:11: spec.services[0].containers[0]: missing field "image""#]],
    );
}

#[test]
fn duplicate_service_and_container_names() {
    check(
        &app(
            "    - name: api\n      containers:\n        - { name: a, image: x }\n        - { name: a, image: y }\n    - name: api\n      containers: [ { name: b, image: z } ]\n",
        ),
        expect![[r#"
            app.yaml:11:19: spec.services[0].containers[1].name: duplicate container name "a" (also containers[0])
            app.yaml:12:13: spec.services[1].name: duplicate service name "api" (also spec.services[0])"#]],
    );
}

#[test]
fn bad_image_references() {
    check(
        &app(
            "    - name: api\n      containers:\n        - { name: a, image: 'Registry/Pos' }\n        - { name: b, image: 'pos/api:' }\n        - { name: c, image: 'pos/api@sha256:abc' }\n",
        ),
        expect![[r#"
            app.yaml:10:29: spec.services[0].containers[0].image: "Registry/Pos" is not an image reference (each path part is lower-case letters and digits, separated by '.', '_' or '-')
            app.yaml:11:29: spec.services[0].containers[1].image: "pos/api:" is not an image reference (a tag is letters, digits, '_', '.' and '-')
            app.yaml:12:29: spec.services[0].containers[2].image: "pos/api@sha256:abc" is not an image reference (a digest is sha256: and 64 lower-case hex digits)"#]],
    );
}

#[test]
fn host_port_clash_and_range() {
    check(
        &app(
            "    - name: api\n      containers:\n        - name: a\n          image: x\n          ports: [ { container: 80, host: 8080 } ]\n    - name: web\n      containers:\n        - name: b\n          image: y\n          ports: [ { container: 80, host: 8080, protocol: tcp }, { container: 53, host: 8080, protocol: udp } ]\n",
        ),
        expect![
            "app.yaml:17:43: spec.services[1].containers[0].ports[0].host: host port 8080 is already used by spec.services[0].containers[0].ports[0].host"
        ],
    );
}

#[test]
fn bad_protocol_and_mode() {
    check(
        &app(
            "    - name: api\n      mode: perhost\n      containers:\n        - name: a\n          image: x\n          ports: [ { container: 80, protocol: sctp } ]\n",
        ),
        expect![[r#"
            app.yaml:9:13: spec.services[0].mode: "perhost" is not one of "replicated" or "per-host" (did you mean "per-host"?)
            app.yaml:13:47: spec.services[0].containers[0].ports[0].protocol: "sctp" is not one of "tcp" or "udp" (did you mean "tcp"?)"#]],
    );
}

#[test]
fn replicas_with_per_host() {
    check(
        &app(
            "    - name: api\n      mode: per-host\n      replicas: 2\n      containers: [ { name: a, image: x } ]\n",
        ),
        expect!["app.yaml:10:17: spec.services[0].replicas: replicas cannot be combined with mode: per-host"],
    );
}

#[test]
fn failover_host_loss_and_time_zone_are_checked() {
    check(
        &app("    - name: web\n      failover: sometimes\n      containers: [ { name: a, image: x } ]\n"),
        expect![[
            r#"app.yaml:9:17: spec.services[0].failover: "sometimes" is not one of "move", "singleton" or "stay""#
        ]],
    );
    check(
        &app(
            "    - name: api\n      mode: per-host\n      failover: move\n      containers: [ { name: a, image: x } ]\n",
        ),
        expect![
            "app.yaml:10:17: spec.services[0].failover: a per-host service runs on every matching host and cannot move (failover: move); use stay, or leave it out"
        ],
    );
    check(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: { name: s, labels: { timezone: Atlantis } }\nspec: { variables: { timezone: Mars/Olympus } }\n",
        expect![[r#"
            app.yaml:3:42: metadata.labels.timezone: unknown time zone "Atlantis" (use an IANA name such as Europe/Oslo, or UTC)
            app.yaml:4:32: spec.variables.timezone: unknown time zone "Mars/Olympus" (use an IANA name such as Europe/Oslo, or UTC)"#]],
    );
    check(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: { name: s, labels: { timezone: UTC } }\nspec: { variables: { timezone: Europe/Oslo } }\n",
        expect!["ok"],
    );
    check(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: { name: s }\nspec: { hostLossAfter: 1s }\n",
        expect!["app.yaml:4:24: spec.hostLossAfter: 1s is out of range (from 5s to 1h)"],
    );
}

#[test]
fn bad_host_selector() {
    check(
        &app(
            "    - name: api\n      hosts: 'camera and memory >= lots'\n      containers: [ { name: a, image: x } ]\n",
        ),
        expect![[
            r#"app.yaml:9:36: spec.services[0].hosts: invalid selector "camera and memory >= lots": "lots" is not a number or size, which >= needs"#
        ]],
    );
}

#[test]
fn health_needs_exactly_one_probe() {
    check(
        &app(
            "    - name: api\n      containers:\n        - name: a\n          image: x\n          health: { interval: 10s }\n        - name: b\n          image: x\n          health: { tcp: { port: 80 }, exec: { command: [] }, interval: 10s }\n        - name: c\n          image: x\n          health: { exec: { command: [] } }\n",
        ),
        expect![[r#"
            app.yaml:12:19: spec.services[0].containers[0].health: a health check needs one of http, tcp or exec
            app.yaml:15:19: spec.services[0].containers[1].health: a health check takes only one of http, tcp or exec
            app.yaml:15:57: spec.services[0].containers[1].health.exec.command: the command is empty
            app.yaml:18:38: spec.services[0].containers[2].health.exec.command: the command is empty"#]],
    );
}

#[test]
fn bad_durations_and_cpu() {
    check(
        &app(
            "    - name: api\n      containers:\n        - name: a\n          image: x\n          resources: { cpu: 0.0001 }\n          health: { http: { path: healthz, port: 80 }, interval: 10 s, timeout: 1w }\n",
        ),
        expect![[r#"
            app.yaml:12:29: spec.services[0].containers[0].resources.cpu: "0.0001" is finer than a thousandth of a core
            app.yaml:13:35: spec.services[0].containers[0].health.http.path: "healthz" must start with '/'
            app.yaml:13:66: spec.services[0].containers[0].health.interval: "10 s" is not a duration (use 10s, 2m or 1h30m)
            app.yaml:13:81: spec.services[0].containers[0].health.timeout: "1w" is not a duration (use 10s, 2m or 1h30m)"#]],
    );
}

#[test]
fn env_names_and_references() {
    check(
        &app(
            "    - name: api\n      containers:\n        - name: a\n          image: x\n          env:\n            STORE-ID: \"1\"\n            A: \"${store_id}\"\n            B: \"${site.store_id\"\n            D: \"$${literal} ${site.ok}\"\n",
        ),
        expect![[r#"
            app.yaml:13:23: spec.services[0].containers[0].env.STORE-ID: "STORE-ID" is not an environment variable name (letters, digits and '_')
            app.yaml:14:16: spec.services[0].containers[0].env.A: "${store_id}" is not a reference this can resolve (use ${site.NAME} for a site variable, $$ for a literal $)
            app.yaml:15:16: spec.services[0].containers[0].env.B: unterminated "${" in "${site.store_id""#]],
    );
}

#[test]
fn volumes_and_devices() {
    check(
        &app(
            "    - name: api\n      containers:\n        - name: a\n          image: x\n          volumes: [ { name: data, path: data }, { name: d1, path: /d }, { name: d2, path: /d } ]\n          devices: [ video0 ]\n",
        ),
        expect![[r#"
            app.yaml:12:42: spec.services[0].containers[0].volumes[0].path: "data" is not an absolute path
            app.yaml:12:92: spec.services[0].containers[0].volumes[2].path: "/d" is already mounted by volumes[1]
            app.yaml:13:22: spec.services[0].containers[0].devices[0]: "video0" is not a device path (such as /dev/video0)"#]],
    );
}

#[test]
fn no_services_or_containers() {
    check(
        &app("    - name: api\n      containers: []\n"),
        expect!["app.yaml:9:19: spec.services[0].containers: a service needs at least one container"],
    );
    check(
        &format!("{APP_HEAD}  services: []\n"),
        expect!["app.yaml:7:13: spec.services: an application needs at least one service"],
    );
}

#[test]
fn bad_labels_and_variables() {
    check(
        "apiVersion: outpost/v1\nkind: Site\nmetadata:\n  name: a\n  labels: { 'bad key!': x, ok: 'has space', example.com/tier: gold, -x/y: z }\nspec:\n  variables: { 1st: x, store-id: y }\n",
        expect![[r#"
            app.yaml:5:25: metadata.labels["bad key!"]: label key "bad key!" is not valid (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)
            app.yaml:5:32: metadata.labels.ok: label value "has space" is not valid (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)
            app.yaml:5:75: metadata.labels["-x/y"]: label key "-x/y" has an invalid prefix (a DNS name such as example.com)
            app.yaml:7:21: spec.variables.1st: "1st" is not a variable name (at most 63 letters, digits and '_', not starting with a digit)
            app.yaml:7:34: spec.variables.store-id: "store-id" is not a variable name (at most 63 letters, digits and '_', not starting with a digit)"#]],
    );
}

#[test]
fn deployment_problems() {
    check(
        "apiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: d }\nspec:\n  application: pos\n  sites: 'customer = acme and'\n  rollout:\n    waves: { size: 10, exponential: 2 }\n    maxFailures: many\n    onFailure: retry\n    healthyFor: 2 minutes\n---\napiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: e }\nspec:\n  application: pos\n  sites: env = prod\n  version: ' '\n  rollout:\n    waves: { size: 10, exponential: 2 }\n",
        expect![[r#"
            app.yaml:6:30: spec.sites: invalid selector "customer = acme and": expected a label key, found the end
            app.yaml:9:18: spec.rollout.maxFailures: "many" is not a failure budget (use a count like 1 or a percentage like 5%)
            app.yaml:10:16: spec.rollout.onFailure: "retry" is not one of "rollback" or "pause"
            app.yaml:11:17: spec.rollout.healthyFor: "2 minutes" is not a duration (use 10s, 2m or 1h30m)
            app.yaml:19:12: spec.version: the version is empty (leave it out to follow the application)
            app.yaml:21:12: spec.rollout.waves: waves take either size or exponential, not both"#]],
    );
}

#[test]
fn deployment_waves_need_a_shape() {
    check(
        "apiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: d }\nspec:\n  application: pos\n  sites: env = prod\n  rollout: { waves: { start: 1 } }\n---\napiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: e }\nspec:\n  application: pos\n  sites: env = prod\n  rollout: { waves: { size: 5, start: 1 } }\n",
        expect![[r#"
            app.yaml:7:21: spec.rollout.waves: waves need size (fixed) or exponential (growing)
            app.yaml:15:39: spec.rollout.waves.start: start goes with exponential waves"#]],
    );
}

#[test]
fn defined_twice_in_one_batch() {
    check(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: { name: a }\n---\napiVersion: outpost/v1\nkind: Site\nmetadata: { name: a }\n",
        expect![[r#"app.yaml:7:19: metadata.name: Site "a" is defined twice (also at app.yaml:3:19)"#]],
    );
}

#[test]
fn errors_in_later_documents_have_file_lines() {
    check(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: { name: a }\n---\napiVersion: outpost/v1\nkind: Site\nmetadata: { name: b, lables: {} }\n",
        expect![[r#"app.yaml:7:22: metadata.lables: unknown field "lables" (did you mean "labels"?)"#]],
    );
}

#[test]
fn json_bodies_get_positions_too() {
    check(
        "{\n  \"apiVersion\": \"outpost/v1\",\n  \"kind\": \"Site\",\n  \"metadata\": { \"name\": \"a\" },\n  \"spec\": { \"variables\": { \"x\": 1 } }\n}\n",
        expect![[r#"app.yaml:5:33: spec.variables.x: expected a string, found 1 (quote it: "1")"#]],
    );
}

#[test]
fn numbers_out_of_range_and_negative() {
    check(
        &app(
            "    - name: api\n      replicas: -1\n      containers:\n        - name: a\n          image: x\n          ports: [ { container: 0, host: 65536 } ]\n          resources: { gpu: 2.5 }\n",
        ),
        expect![[r#"
            app.yaml:9:17: spec.services[0].replicas: -1 is out of range (0 to 1000)
            app.yaml:13:33: spec.services[0].containers[0].ports[0].container: 0 is out of range (1 to 65535)
            app.yaml:13:42: spec.services[0].containers[0].ports[0].host: 65536 is out of range (1 to 65535)
            app.yaml:14:29: spec.services[0].containers[0].resources.gpu: expected a whole number, found 2.5"#]],
    );
}

#[test]
fn wrong_shapes() {
    check(
        &app("    - name: api\n      containers:\n        name: a\n    - api\n"),
        expect![[r#"
            app.yaml:10:9: spec.services[0].containers: expected a list, found a map
            app.yaml:11:7: spec.services[1]: expected a map, found "api""#]],
    );
}

/// Issue 11, defect 4: `interval: 0s` was accepted and drove an agent to
/// 1.45 cores. Every duration has a documented range.
#[test]
fn durations_out_of_range() {
    check(
        &app(
            "    - name: web\n      containers:\n        - name: web\n          image: busybox\n          health: { tcp: { port: 80 }, interval: 0s, timeout: 2h }\n",
        ),
        expect![[r#"
            app.yaml:12:50: spec.services[0].containers[0].health.interval: 0s is out of range (from 1s to 1h)
            app.yaml:12:63: spec.services[0].containers[0].health.timeout: 2h is out of range (from 100ms to 5m)"#]],
    );
    check(
        "apiVersion: outpost/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  application: pos\n  sites: 'a'\n  rollout: { healthyFor: 2d, timeout: 1s }\n",
        expect![[r#"
            app.yaml:7:26: spec.rollout.healthyFor: 2d is out of range (from 0s to 1d)
            app.yaml:7:39: spec.rollout.timeout: 1s is out of range (from 10s to 7d)"#]],
    );
}

/// Issue 11: 50,000 labels were accepted; labels, variables and their
/// values are bounded, and so is one object.
#[test]
fn sizes_out_of_range() {
    let labels: Vec<String> = (0..65).map(|i| format!("k{i}: v")).collect();
    let long = "x".repeat(4097);
    check(
        &format!(
            "apiVersion: outpost/v1\nkind: Site\nmetadata:\n  name: s\n  labels: {{{}}}\nspec:\n  variables: {{ok: {long}, {}: \"1\"}}\n",
            labels.join(", "),
            "v".repeat(64)
        ),
        expect![[r#"
            app.yaml:5:11: metadata.labels: 65 labels; an object takes at most 64
            app.yaml:7:19: spec.variables.ok: the value has 4097 bytes; at most 4096 fit
            app.yaml:7:4184: spec.variables.vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv: "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv" is not a variable name (at most 63 letters, digits and '_', not starting with a digit)"#]],
    );
    let huge = format!(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: {{name: s}}\nspec:\n  variables:\n{}",
        (0..200)
            .map(|i| format!("    v{i}: {}\n", "y".repeat(4000)))
            .collect::<String>()
    );
    check(
        &huge,
        expect!["app.yaml:1:1: the object has 783 KiB; one object may have at most 512 KiB"],
    );
}

#[test]
fn stream_topics_name_what_is_wrong() {
    let services = "  services:\n    - name: till\n      containers:\n        - name: till\n          image: pos/till:1\n";
    let streams = "  streams:\n    - { name: receipts, direction: up, retention: 256Mi, priority: bulk, window: \"01:00-05:00\" }\n    - { name: alarms, direction: up, retention: 16Mi, priority: urgent }\n    - { name: prices, direction: down, retention: 64Mi }\n    - { name: readings, direction: local, retention: 32Mi }\n";
    check(&format!("{APP_HEAD}{services}{streams}"), expect!["ok"]);
    let bad = "  streams:\n    - { name: receipts, direction: up, retention: 1Ki, window: \"1:00-05:00\" }\n    - { name: alarms, direction: sideways, retention: 16Mi }\n    - { name: receipts, direction: down, retention: 64Mi, priority: bulk }\n    - { name: now, direction: up, retention: 1Mi, priority: urgent, window: \"01:00-02:00\" }\n";
    check(
        &format!("{APP_HEAD}{services}{bad}"),
        expect![[r#"
            app.yaml:13:64: spec.streams[0].window: "1:00-05:00" is not a window: each time is HH:MM, from 00:00 to 23:59 (such as "01:00-05:00")
            app.yaml:14:34: spec.streams[1].direction: "sideways" is not one of "up", "down" or "local""#]],
    );
    check(
        &format!(
            "{APP_HEAD}{services}{}",
            bad.replace("1:00-05", "01:00-05").replace("sideways", "up")
        ),
        expect![[r#"
            app.yaml:13:51: spec.streams[0].retention: 1Ki is out of range (from 64Ki to 1Ti)
            app.yaml:15:15: spec.streams[2].name: duplicate topic name "receipts" (also spec.streams[0])
            app.yaml:15:69: spec.streams[2].priority: a down topic has no priority: priorities order the uplink of up topics
            app.yaml:16:77: spec.streams[3].window: an urgent topic is never held back: drop the window or lower the priority"#]],
    );
}

#[test]
fn egress_and_ingress_are_checked() {
    let web =
        "    - name: web\n      containers: [ { name: a, image: x, ports: [ { container: 8080 } ] } ]\n";
    check(
        &app(&format!(
            "{web}      ingress: {{ port: 443, host: pos.local }}\n      egress: [ {{ application: prices, service: api }} ]\n"
        )),
        expect!["ok"],
    );
    check(
        &app(&format!(
            "{web}      ingress: {{ port: 70000, host: Pos_Local, targetPort: 9090 }}\n      egress: [ {{ application: shop, service: db }}, {{ application: b, service: c }}, {{ application: b, service: c }} ]\n"
        )),
        expect!["app.yaml:10:24: spec.services[0].ingress.port: 70000 is out of range (1 to 65535)"],
    );
    check(
        &app(&format!(
            "{web}      ingress: {{ port: 443, host: Pos_Local, targetPort: 9090 }}\n      egress: [ {{ application: pos, service: db }}, {{ application: b, service: c }}, {{ application: b, service: c }} ]\n"
        )),
        expect![[r#"
            app.yaml:10:35: spec.services[0].ingress.host: "Pos_Local" is not a host name (DNS labels joined by dots)
            app.yaml:10:58: spec.services[0].ingress.targetPort: 9090 is not a TCP port of the service's containers (they declare 8080)
            app.yaml:11:32: spec.services[0].egress[0].application: "pos" is this service's own application: its services are reached by name without egress
            app.yaml:11:84: spec.services[0].egress[2]: the same service as egress[1]"#]],
    );
    check(
        &app(
            "    - name: web\n      ingress: { port: 80 }\n      containers: [ { name: a, image: x } ]\n    - name: api\n      ingress: { port: 80, host: api.local }\n      containers: [ { name: a, image: x, ports: [ { container: 9000 } ] } ]\n",
        ),
        expect![[r#"
            app.yaml:9:16: spec.services[0].ingress: the service's containers declare no TCP port to forward to (add ports: [ { container: PORT } ])
            app.yaml:12:24: spec.services[1].ingress.port: ingress port 80 is already served by spec.services[0].ingress; services share a port only with different hosts"#]],
    );
}
