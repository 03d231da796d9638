//! Tests of the site network's names, routes and rights (pure logic).

use outpost_api::workload::{Instance, SiteState, Workload};

use super::*;

fn workload(
    application: &str,
    service: &str,
    ports: &[u32],
    hosts: &[&str],
    egress: &[(&str, &str)],
) -> Workload {
    let containers: Vec<serde_json::Value> = vec![serde_json::json!({
        "name": "main", "image": "x",
        "ports": ports.iter().map(|p| serde_json::json!({"container": p})).collect::<Vec<_>>(),
    })];
    let mut workload: Workload = serde_json::from_value(serde_json::json!({
        "application": application, "version": "1", "deployment": "d", "service": service,
        "replicas": hosts.len(), "perHost": false, "containers": containers,
        "siblings": if application == "shop" { vec!["api", "db"] } else { vec!["feed", "admin"] },
        "egress": egress.iter().map(|(a, s)| serde_json::json!({"application": a, "service": s})).collect::<Vec<_>>(),
    }))
    .unwrap();
    workload.instances = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| Instance {
            name: format!("{application}-{service}-{i}"),
            host: host.to_string(),
            moved_from: None,
        })
        .collect();
    workload
}

fn site() -> SiteState {
    SiteState {
        workloads: vec![
            workload("shop", "api", &[8080], &["h1"], &[("prices", "feed")]),
            workload("shop", "db", &[5432, 5433], &["h2", "h3"], &[]),
            workload("prices", "feed", &[9000], &["h3"], &[]),
            workload("prices", "admin", &[9001], &["h1"], &[]),
        ],
        ..Default::default()
    }
}

#[test]
fn a_container_has_names_for_its_applications_services_and_its_egress_only() {
    let state = site();
    let api: Vec<(String, Target)> = names(&state.workloads[0])
        .into_iter()
        .map(|n| {
            assert_eq!(n.address, address_of(&n.name));
            (n.name, n.target)
        })
        .collect();
    let target = |a: &str, s: &str| Target {
        application: a.into(),
        service: s.into(),
    };
    assert_eq!(
        api,
        vec![
            ("api".into(), target("shop", "api")),
            ("db".into(), target("shop", "db")),
            ("feed.prices".into(), target("prices", "feed")),
        ]
    );
    let db: Vec<String> = names(&state.workloads[1]).into_iter().map(|n| n.name).collect();
    assert_eq!(db, ["api", "db"], "db declares no egress");
    assert_eq!(
        ports(&state, &target("shop", "db"))
            .into_iter()
            .collect::<Vec<_>>(),
        [5432, 5433]
    );
    assert_eq!(hosts_running(&state, &target("shop", "db")), ["h2", "h3"]);
    assert!(allowed(&state, "shop", &target("shop", "db")));
    assert!(allowed(&state, "shop", &target("prices", "feed")));
    assert!(
        !allowed(&state, "shop", &target("prices", "admin")),
        "not declared"
    );
    assert!(
        !allowed(&state, "prices", &target("shop", "db")),
        "egress is one way"
    );
}

#[test]
fn names_have_loopback_addresses_of_their_own_that_never_change() {
    let address = address_of("db");
    assert_eq!(address, address_of("db"));
    assert!(address.is_loopback() && address.octets()[1] >= 128, "{address}");
    assert!(!matches!(address.octets()[3], 0 | 255), "{address}");
    assert_ne!(address_of("db"), address_of("api"));
}
