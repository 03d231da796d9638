//! Table tests of the reconcile plan.

use super::*;

fn desired(name: &str, app: &str, hash: &str) -> DesiredContainer {
    DesiredContainer {
        name: name.to_string(),
        instance: name.trim_start_matches("outpost-").to_string(),
        application: app.to_string(),
        service: "web".to_string(),
        deployment: "d".to_string(),
        version: "1".to_string(),
        spec_hash: hash.to_string(),
        instance_hash: hash.to_string(),
        container: serde_json::from_value(serde_json::json!({ "name": "web", "image": "busybox" })).unwrap(),
        secrets: Default::default(),
        prepared: Default::default(),
        names: Vec::new(),
    }
}

fn observed(name: &str, app: &str, hash: &str, running: bool) -> Observed {
    Observed {
        id: format!("id-{name}"),
        name: name.to_string(),
        instance: name.trim_start_matches("outpost-").to_string(),
        application: app.to_string(),
        service: "web".to_string(),
        spec_hash: hash.to_string(),
        running,
        exit_code: (!running).then_some(137),
    }
}

/// A compact rendering of a plan, for tables.
fn show(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::EnsureNetwork { application } => format!("network+ {application}"),
            Action::Create { name, .. } => format!("create {name}"),
            Action::Rename { from, to, .. } => format!("rename {from} -> {to}"),
            Action::Start { name, .. } => format!("start {name}"),
            Action::Remove { name, reason, .. } => format!("remove {name} ({reason})"),
            Action::RemoveNetwork { application } => format!("network- {application}"),
        })
        .collect()
}

fn networks(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn plans() {
    let a = || desired("outpost-a-0-web", "a", "h1");
    type Case<'a> = (
        &'a str,
        Vec<DesiredContainer>,
        Vec<Observed>,
        BTreeSet<String>,
        Vec<&'a str>,
    );
    let table: Vec<Case> = vec![
        ("nothing to do", vec![], vec![], networks(&[]), vec![]),
        (
            "first start",
            vec![a()],
            vec![],
            networks(&[]),
            vec!["network+ a", "create outpost-a-0-web"],
        ),
        (
            "adopt a running match",
            vec![a()],
            vec![observed("outpost-a-0-web", "a", "h1", true)],
            networks(&["a"]),
            vec![],
        ),
        (
            "restart an exited one",
            vec![a()],
            vec![observed("outpost-a-0-web", "a", "h1", false)],
            networks(&["a"]),
            vec!["start outpost-a-0-web"],
        ),
        (
            "a new spec starts beside the old one",
            vec![desired("outpost-a-0-web", "a", "h2")],
            vec![observed("outpost-a-0-web", "a", "h1", true)],
            networks(&["a"]),
            vec!["create outpost-a-0-web.next"],
        ),
        (
            "remove what is no longer desired, and its network",
            vec![],
            vec![observed("outpost-a-0-web", "a", "h1", true)],
            networks(&["a"]),
            vec!["remove outpost-a-0-web (it is no longer desired)", "network- a"],
        ),
        (
            "a network missing under a running container is recreated first",
            vec![a()],
            vec![observed("outpost-a-0-web", "a", "h1", true)],
            networks(&[]),
            vec!["network+ a"],
        ),
        (
            "two applications, one leaving",
            vec![a(), desired("outpost-b-0-web", "b", "h1")],
            vec![
                observed("outpost-c-0-web", "c", "h1", false),
                observed("outpost-b-0-web", "b", "h1", true),
            ],
            networks(&["b", "c"]),
            vec![
                "network+ a",
                "remove outpost-c-0-web (it is no longer desired)",
                "create outpost-a-0-web",
                "network- c",
            ],
        ),
    ];
    for (what, want, have, nets, expected) in table {
        assert_eq!(
            show(&plan(&want, &have, &nets, &BTreeSet::new(), true)),
            expected,
            "{what}"
        );
    }
}

#[test]
fn only_this_hosts_instances_are_desired() {
    let state: SiteState = serde_json::from_value(serde_json::json!({
        "workloads": [{
            "application": "a", "version": "1", "deployment": "d", "service": "web", "replicas": 2,
            "perHost": false,
            "containers": [{ "name": "web", "image": "busybox" }, { "name": "side", "image": "busybox" }],
            "instances": [{ "name": "a-web-0", "host": "h1" }, { "name": "a-web-1", "host": "h2" }]
        }]
    }))
    .unwrap();
    let names: Vec<String> = desired_for_host(&state, "s", "h2", false)
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["outpost.s.a-web-1.web", "outpost.s.a-web-1.side"]);
    assert!(desired_for_host(&state, "s", "h3", false).is_empty());
}

#[test]
fn updates_make_before_break() {
    let want = || desired("outpost-a-0-web", "a", "h2");
    let old = || observed("outpost-a-0-web", "a", "h1", true);
    let next = |running| observed("outpost-a-0-web.next", "a", "h2", running);
    let nets = networks(&["a"]);
    let ready = |ids: &[&str]| -> BTreeSet<String> { ids.iter().map(|i| i.to_string()).collect() };
    let with_host_port = || {
        let mut d = want();
        d.container = serde_json::from_value(serde_json::json!({
            "name": "web", "image": "busybox", "ports": [{ "container": 80, "host": 8080 }]
        }))
        .unwrap();
        d
    };
    type Case<'a> = (
        &'a str,
        Vec<DesiredContainer>,
        Vec<Observed>,
        BTreeSet<String>,
        bool,
        Vec<&'a str>,
    );
    let table: Vec<Case> = vec![
        (
            "the new one is ready: it takes over",
            vec![want()],
            vec![old(), next(true)],
            ready(&["id-outpost-a-0-web.next"]),
            true,
            vec![
                "remove outpost-a-0-web (its update is ready)",
                "rename outpost-a-0-web.next -> outpost-a-0-web",
            ],
        ),
        (
            "the new one runs but is not healthy yet: the old one keeps serving",
            vec![want()],
            vec![old(), next(true)],
            ready(&[]),
            true,
            vec![],
        ),
        (
            "the new one failed: restart it, the old one keeps serving",
            vec![want()],
            vec![old(), next(false)],
            ready(&[]),
            true,
            vec!["start outpost-a-0-web.next"],
        ),
        (
            "an update from an earlier version is dropped",
            vec![want()],
            vec![old(), observed("outpost-a-0-web.next", "a", "h0", true)],
            ready(&[]),
            true,
            vec!["remove outpost-a-0-web.next (it is an older update)"],
        ),
        (
            "the old one vanished: the new one takes its name",
            vec![want()],
            vec![next(true)],
            ready(&[]),
            true,
            vec!["rename outpost-a-0-web.next -> outpost-a-0-web"],
        ),
        (
            "a fixed host port cannot be taken twice: replaced in place",
            vec![with_host_port()],
            vec![old()],
            ready(&[]),
            true,
            vec![
                "remove outpost-a-0-web (its spec changed)",
                "create outpost-a-0-web",
            ],
        ),
        (
            "a runtime without overlap replaces in place",
            vec![want()],
            vec![old()],
            ready(&[]),
            false,
            vec![
                "remove outpost-a-0-web (its spec changed)",
                "create outpost-a-0-web",
            ],
        ),
    ];
    for (what, want, have, ready, overlap, expected) in table {
        assert_eq!(
            show(&plan(&want, &have, &nets, &ready, overlap)),
            expected,
            "{what}"
        );
    }
}
