//! Tests of compiling sites and placing instances on hosts.

use super::*;
use crate::manifest::Manifest;

/// A host's labels from pairs.
fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn manifests(text: &str) -> Vec<Manifest> {
    crate::parse_documents("t.yaml", text)
        .unwrap()
        .into_iter()
        .map(|d| d.manifest)
        .collect()
}

#[test]
fn compiles_matching_deployments_with_variables() {
    let all = manifests(concat!(
        include_str!("../../../../examples/sites.yaml"),
        "---\n",
        include_str!("../../../../examples/pos-gateway.yaml")
    ));
    let sites: Vec<Site> = all.iter().cloned().filter_map(Manifest::into_site).collect();
    let deployments: Vec<Deployment> = all
        .iter()
        .cloned()
        .filter_map(Manifest::into_deployment)
        .collect();
    let app = all
        .iter()
        .cloned()
        .find_map(Manifest::into_application)
        .unwrap()
        .spec;
    let lookup = |name: &str, version: Option<&str>| {
        (name == "pos-gateway" && version.is_none_or(|v| v == app.version)).then(|| app.clone())
    };
    let store_042 = sites
        .iter()
        .find(|s| s.metadata.name.as_str() == "store-042")
        .unwrap();
    let state = compile_site(store_042, &deployments, lookup, &BTreeMap::new());
    assert_eq!(state.failures, []);
    let keys: Vec<String> = state.workloads.iter().map(Workload::key).collect();
    assert_eq!(keys, ["pos-gateway/api", "pos-gateway/sync"]);
    assert_eq!(state.workloads[0].deployment, "pos-gateway-prod");
    assert_eq!(state.workloads[0].containers[0].env["STORE_ID"], "042".into());
    assert_eq!(
        state.workloads[0].containers[0].env["TZ"],
        "Europe/Stockholm".into()
    );

    let plant = sites
        .iter()
        .find(|s| s.metadata.name.as_str() == "plant-ulm")
        .unwrap();
    assert_eq!(
        compile_site(plant, &deployments, lookup, &BTreeMap::new()),
        SiteState::default()
    );
}

#[test]
fn a_missing_variable_fails_the_site_never_an_empty_string() {
    let all = manifests(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: { name: s, labels: { env: prod } }\n---\n\
         apiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: d }\nspec: { application: a, sites: env = prod }\n",
    );
    let (Manifest::Site(site), Manifest::Deployment(deployment)) = (&all[0], &all[1]) else {
        panic!()
    };
    let spec: ApplicationSpec = serde_json::from_value(serde_json::json!({
        "version": "1", "services": [{ "name": "web", "containers": [{ "name": "web", "image": "x",
        "env": { "A": "${site.missing}", "B": "$${literal}" } }] }]
    }))
    .unwrap();
    let state = compile_site(site, [deployment], |_, _| Some(spec.clone()), &BTreeMap::new());
    assert_eq!(state.workloads, []);
    assert_eq!(
        state.failures[0].reason,
        "env A of web/web needs site variable \"missing\", which this site does not define"
    );
}

#[test]
fn instances_go_to_matching_hosts() {
    let hosts: BTreeMap<String, BTreeMap<String, String>> = [
        ("h1".to_string(), labels(&[("camera", "true")])),
        ("h2".to_string(), labels(&[])),
        ("h3".to_string(), labels(&[("camera", "true")])),
    ]
    .into();
    let workload = |service: &str, replicas: u32, per_host: bool, selector: Option<&str>| Workload {
        application: "a".into(),
        version: "1".into(),
        deployment: "d".into(),
        service: service.into(),
        replicas,
        per_host,
        hosts: selector.map(|s| s.parse().unwrap()),
        containers: Vec::new(),
        instances: Vec::new(),
        secrets: BTreeMap::new(),
        digests: BTreeMap::new(),
        streams: Vec::new(),
        time_zone: None,
        failover: Failover::Move,
        egress: Vec::new(),
        siblings: Vec::new(),
        ingress: None,
    };
    let mut state = SiteState {
        workloads: vec![
            workload("grab", 1, true, Some("camera")),
            workload("api", 3, false, None),
            workload("gpu", 1, false, Some("gpu")),
        ],
        ..Default::default()
    };
    assign_hosts(&mut state, &hosts);
    let placed: Vec<Vec<(&str, &str)>> = state
        .workloads
        .iter()
        .map(|w| {
            w.instances
                .iter()
                .map(|i| (i.name.as_str(), i.host.as_str()))
                .collect()
        })
        .collect();
    assert_eq!(
        placed,
        [
            vec![("a-grab-h1", "h1"), ("a-grab-h3", "h3")],
            vec![("a-api-0", "h1"), ("a-api-1", "h2"), ("a-api-2", "h3")],
        ]
    );
    assert_eq!(
        state.failures[0].reason,
        "service gpu: no host can run it (h1: no gpu; h2: no gpu; h3: no gpu)"
    );

    let mut empty = SiteState {
        workloads: vec![workload("api", 1, false, None)],
        ..Default::default()
    };
    // No host yet: the workload waits, unplaced; that is not a failure.
    assign_hosts(&mut empty, &BTreeMap::new());
    assert_eq!((empty.failures.len(), empty.workloads[0].instances.len()), (0, 0));
}

#[test]
fn placement_fits_resources_and_says_why_not() {
    let host = labels;
    let hosts: BTreeMap<String, BTreeMap<String, String>> = [
        (
            "h1".to_string(),
            host(&[("cpus", "2"), ("memory", "4Gi"), ("camera", "1")]),
        ),
        ("h2".to_string(), host(&[("cpus", "4"), ("memory", "1Gi")])),
    ]
    .into();
    let workload = |service: &str,
                    replicas: u32,
                    per_host: bool,
                    selector: Option<&str>,
                    resources: serde_json::Value| {
        let container = serde_json::json!({ "name": "c", "image": "x", "resources": resources });
        Workload {
            application: "a".into(),
            version: "1".into(),
            deployment: "d".into(),
            service: service.into(),
            replicas,
            per_host,
            hosts: selector.map(|s| s.parse().unwrap()),
            containers: vec![serde_json::from_value(container).unwrap()],
            instances: Vec::new(),
            secrets: BTreeMap::new(),
            digests: BTreeMap::new(),
            streams: Vec::new(),
            time_zone: None,
            failover: Failover::Move,
            egress: Vec::new(),
            siblings: Vec::new(),
            ingress: None,
        }
    };
    let mut state = SiteState {
        workloads: vec![
            // 2Gi each: h1 holds two, h2 none.
            workload("big", 3, false, None, serde_json::json!({ "memory": "2Gi" })),
            // Needs a camera and 1 cpu; h1 has the camera and 2 cpus.
            workload("cam", 1, true, Some("camera"), serde_json::json!({ "cpu": 1 })),
            // 500m and 512Mi each.
            workload(
                "small",
                2,
                false,
                None,
                serde_json::json!({ "cpu": "500m", "memory": "512Mi" }),
            ),
        ],
        ..Default::default()
    };
    assign_hosts(&mut state, &hosts);
    let placed: Vec<(String, Vec<&str>)> = state
        .workloads
        .iter()
        .map(|w| {
            (
                w.service.clone(),
                w.instances.iter().map(|i| i.host.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        placed,
        [
            ("big".to_string(), vec!["h1", "h1"]),
            ("cam".to_string(), vec!["h1"]),
            // h1's memory went to "big": both fit on h2 (2 × 512Mi = 1Gi).
            ("small".to_string(), vec!["h2", "h2"]),
        ]
    );
    let reasons: Vec<&str> = state.failures.iter().map(|f| f.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["service big: 2 of 3 replicas placed (h2: memory 1Gi free < 2Gi requested)"]
    );
}

#[test]
fn substitution() {
    let vars: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
    assert_eq!(
        substitute_value("x${site.a}y$${site.a}$5", &vars).unwrap(),
        "x1y${site.a}$5"
    );
}

#[test]
fn spec_hash_follows_the_containers() {
    let spec: ApplicationSpec = serde_json::from_value(serde_json::json!({
        "version": "1", "services": [{ "name": "web", "containers": [{ "name": "web", "image": "x" }] }]
    }))
    .unwrap();
    let workload = |image: &str| {
        let mut containers = spec.services[0].containers.clone();
        containers[0].image = image.parse().unwrap();
        Workload {
            application: "a".into(),
            version: "1".into(),
            deployment: "d".into(),
            service: "web".into(),
            replicas: 1,
            per_host: false,
            hosts: None,
            containers,
            instances: Vec::new(),
            secrets: BTreeMap::new(),
            digests: BTreeMap::new(),
            streams: Vec::new(),
            time_zone: None,
            failover: Failover::Move,
            egress: Vec::new(),
            siblings: Vec::new(),
            ingress: None,
        }
    };
    assert_eq!(workload("x").spec_hash(), workload("x").spec_hash());
    assert_ne!(workload("x").spec_hash(), workload("y").spec_hash());
}

#[test]
fn secrets_reach_only_the_sites_and_images_they_allow() {
    let all = manifests(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: { name: eu-1, labels: { region: eu } }\n---\n\
         apiVersion: outpost/v1\nkind: Site\nmetadata: { name: us-1, labels: { region: us } }\n---\n\
         apiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: d }\nspec: { application: a, sites: region }\n",
    );
    let sites: Vec<&Site> = all
        .iter()
        .filter_map(|m| match m {
            Manifest::Site(s) => Some(s),
            _ => None,
        })
        .collect();
    let Manifest::Deployment(deployment) = &all[2] else {
        panic!()
    };
    let spec = |image: &str, change: Option<&str>| -> ApplicationSpec {
        serde_json::from_value(serde_json::json!({
            "version": "1", "services": [{ "name": "web", "containers": [{ "name": "web", "image": image,
            "env": { "PLAIN": "x" },
            "secrets": [{ "secret": "db", "key": "password", "path": "/run/db" }],
            "onSecretChange": change }] }, { "name": "other", "containers": [{ "name": "o", "image": "x" }] }]
        }))
        .unwrap()
    };
    let mut secrets = BTreeMap::from([(
        "db".to_string(),
        SecretPolicy {
            version: 3,
            keys: ["password".to_string()].into(),
            sites: Some("region = eu".parse().unwrap()),
            images: vec!["shop/*".to_string()],
        },
    )]);
    let app = spec("shop/pos:1", None);
    let eu = compile_site(sites[0], [deployment], |_, _| Some(app.clone()), &secrets);
    assert_eq!(eu.failures, []);
    assert_eq!(eu.workloads[0].secrets, BTreeMap::from([("db".to_string(), 3)]));
    assert_eq!(
        eu.workloads[1].secrets,
        BTreeMap::new(),
        "only the service that refers to it"
    );
    let us = compile_site(sites[1], [deployment], |_, _| Some(app.clone()), &secrets);
    assert_eq!(us.workloads, []);
    assert_eq!(
        us.failures[0].reason,
        "secret \"db\" may not reach site \"us-1\" (its sites: region = eu)"
    );

    let wrong_image = spec("other/pos:1", None);
    let refused = compile_site(sites[0], [deployment], |_, _| Some(wrong_image.clone()), &secrets);
    assert_eq!(
        refused.failures[0].reason,
        "secret \"db\" may not go to image \"other/pos:1\" (it allows shop/*)"
    );

    // A new version replaces a `restart` container, not a `signal` one.
    let hash = |state: &SiteState| state.workloads[0].spec_hash();
    let restart_before = hash(&eu);
    let signal = spec("shop/pos:1", Some("signal:SIGHUP"));
    let signal_before = hash(&compile_site(
        sites[0],
        [deployment],
        |_, _| Some(signal.clone()),
        &secrets,
    ));
    secrets.get_mut("db").unwrap().version = 4;
    let restart_after = hash(&compile_site(
        sites[0],
        [deployment],
        |_, _| Some(app.clone()),
        &secrets,
    ));
    let signal_after = hash(&compile_site(
        sites[0],
        [deployment],
        |_, _| Some(signal.clone()),
        &secrets,
    ));
    assert_ne!(restart_before, restart_after);
    assert_eq!(signal_before, signal_after);

    secrets.clear();
    let missing = compile_site(sites[0], [deployment], |_, _| Some(app.clone()), &secrets);
    assert_eq!(missing.failures[0].reason, "secret \"db\" does not exist");
}

#[test]
fn a_lost_hosts_instances_move_to_survivors_that_fit_and_stay_services_do_not() {
    let hosts: BTreeMap<String, BTreeMap<String, String>> = [
        ("h0".to_string(), labels(&[("memory", "1Gi"), ("zone", "back")])),
        ("h1".to_string(), labels(&[("memory", "4Gi"), ("zone", "front")])),
        ("h2".to_string(), labels(&[("memory", "1Gi"), ("zone", "front")])),
        ("h3".to_string(), labels(&[("memory", "4Gi"), ("zone", "back")])),
    ]
    .into();
    let workload = |service: &str, failover: Failover, selector: Option<&str>, memory: &str, on: &[&str]| {
        let container = serde_json::json!({ "name": "c", "image": "x", "resources": { "memory": memory } });
        Workload {
            application: "a".into(),
            version: "1".into(),
            deployment: "d".into(),
            service: service.into(),
            replicas: on.len() as u32,
            per_host: false,
            hosts: selector.map(|s| s.parse().unwrap()),
            containers: vec![serde_json::from_value(container).unwrap()],
            instances: on
                .iter()
                .enumerate()
                .map(|(n, host)| Instance {
                    name: format!("a-{service}-{n}"),
                    host: host.to_string(),
                    moved_from: None,
                })
                .collect(),
            secrets: BTreeMap::new(),
            digests: BTreeMap::new(),
            streams: Vec::new(),
            time_zone: None,
            failover,
            egress: Vec::new(),
            siblings: Vec::new(),
            ingress: None,
        }
    };
    let state = SiteState {
        workloads: vec![
            // 2Gi: h0 and h2 (1Gi) have no room, so it goes to h1.
            workload("web", Failover::Move, None, "2Gi", &["h3"]),
            // Only front hosts: h1 runs the other replica already, and h0
            // (no replica yet, first by name) is a back host, so h2.
            workload(
                "api",
                Failover::Move,
                Some("zone = front"),
                "512Mi",
                &["h1", "h3"],
            ),
            workload("camera", Failover::Stay, None, "1Mi", &["h3"]),
            workload("till", Failover::Singleton, None, "1Mi", &["h3"]),
        ],
        ..Default::default()
    };
    let lost = ["h3".to_string()].into();

    let with_majority = reschedule(&state, &hosts, &lost, true);
    let moved: Vec<(&str, &str)> = with_majority
        .moved
        .iter()
        .map(|m| (m.instance.as_str(), m.to.as_str()))
        .collect();
    assert_eq!(
        moved,
        [("a-web-0", "h1"), ("a-api-1", "h2"), ("a-till-0", "h0")],
        "{with_majority:?}"
    );
    assert_eq!(
        with_majority.stranded,
        [("a-camera-0".to_string(), "failover: stay".to_string())]
    );

    // Without a majority a singleton stays where it was.
    let alone = reschedule(&state, &hosts, &lost, false);
    assert!(alone.moved.iter().all(|m| m.instance != "a-till-0"));
    assert!(
        alone
            .stranded
            .iter()
            .any(|(name, why)| name == "a-till-0" && why.contains("singleton")),
        "{alone:?}"
    );

    // Every host lost but one that has no room: the move is refused, and says why.
    let lost_two = ["h1".to_string(), "h3".to_string()].into();
    let cramped = reschedule(&state, &hosts, &lost_two, true);
    assert!(
        cramped
            .stranded
            .iter()
            .any(|(name, why)| name == "a-web-0" && why.contains("has room")),
        "{cramped:?}"
    );

    // Applied, each moved instance runs on its new host; the rest is as it was.
    let mut applied = state.clone();
    apply_moves(&mut applied, &with_majority.moved);
    let hosts_of = |state: &SiteState, service: &str| -> Vec<String> {
        state
            .workloads
            .iter()
            .find(|w| w.service == service)
            .unwrap()
            .instances
            .iter()
            .map(|i| i.host.clone())
            .collect()
    };
    assert_eq!(hosts_of(&applied, "web"), ["h1"]);
    assert_eq!(hosts_of(&applied, "api"), ["h1", "h2"]);
    assert_eq!(hosts_of(&applied, "camera"), ["h3"]);
}

#[test]
fn per_host_and_device_services_stay_unless_they_say_otherwise() {
    let all = manifests(
        r#"
apiVersion: outpost/v1
kind: Application
metadata: { name: a }
spec:
  version: "1"
  services:
    - name: web
      containers: [{ name: c, image: x }]
    - name: agent
      mode: per-host
      containers: [{ name: c, image: x }]
    - name: cam
      containers: [{ name: c, image: x, devices: [/dev/video0] }]
    - name: cam-anywhere
      failover: move
      containers: [{ name: c, image: x, devices: [/dev/video0] }]
    - name: till
      failover: singleton
      containers: [{ name: c, image: x }]
"#,
    );
    let Manifest::Application(app) = &all[0] else {
        panic!("not an application")
    };
    let failovers: Vec<Failover> = app.spec.services.iter().map(|s| s.failover()).collect();
    assert_eq!(
        failovers,
        [
            Failover::Move,
            Failover::Stay,
            Failover::Stay,
            Failover::Move,
            Failover::Singleton
        ]
    );
}

#[test]
fn two_applications_cannot_serve_one_ingress_port_on_a_site_unless_hosts_tell_them_apart() {
    let all = manifests(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: { name: s, labels: { g: x } }\n---\n\
         apiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: a }\nspec: { application: a, sites: \"g = x\" }\n---\n\
         apiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: b }\nspec: { application: b, sites: \"g = x\" }\n---\n\
         apiVersion: outpost/v1\nkind: Deployment\nmetadata: { name: c }\nspec: { application: c, sites: \"g = x\" }\n",
    );
    let site = all.iter().cloned().find_map(Manifest::into_site).unwrap();
    let deployments: Vec<Deployment> = all
        .iter()
        .cloned()
        .filter_map(Manifest::into_deployment)
        .collect();
    let spec = |service: &str, ingress: &str| -> ApplicationSpec {
        serde_json::from_value(serde_json::json!({
            "version": "1",
            "services": [{
                "name": service,
                "ingress": serde_json::from_str::<serde_json::Value>(ingress).unwrap(),
                "containers": [{ "name": "m", "image": "x", "ports": [{ "container": 8080 }] }],
            }],
        }))
        .unwrap()
    };
    let lookup = |name: &str, _: Option<&str>| match name {
        "a" => Some(spec("web", r#"{"port": 443, "host": "pos.local"}"#)),
        "b" => Some(spec("admin", r#"{"port": 443, "host": "admin.local"}"#)),
        "c" => Some(spec("other", r#"{"port": 443}"#)),
        _ => None,
    };
    let state = compile_site(&site, &deployments, lookup, &BTreeMap::new());
    let keys: Vec<String> = state.workloads.iter().map(Workload::key).collect();
    assert_eq!(keys, ["a/web", "b/admin"], "different hosts share the port");
    assert_eq!(
        state.failures,
        [PlacementFailure {
            deployment: "c".into(),
            application: "c".into(),
            reason: "c/other wants ingress port 443, which a/web serves on this site (services share a port only with different hosts)".into(),
        }]
    );
}
