//! The fleet against a real SQLite store: placement waits for facts, and
//! offline comes before failed.

use std::sync::Arc;

use outpost_api::wire::DeploymentSiteState;
use outpost_api::workload::SiteState;

use super::Fleet;
use crate::store::Storage;

/// A store in a fresh directory (kept alive by the returned guard).
async fn store() -> (tempfile::TempDir, Arc<dyn Storage>) {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::SqlStore::open(&dir.path().join("outpost.db"))
        .await
        .unwrap();
    (dir, Arc::new(store))
}

/// Applies manifests as one batch.
async fn apply(store: &dyn Storage, manifests: &str) {
    let documents = outpost_api::parse_documents("t.yaml", manifests).unwrap();
    store.apply(&documents, "test", Default::default()).await.unwrap();
}

/// Issue 11: instances went to a host that enrolled but never connected
/// (no facts), and a site whose only host never connected "could not
/// place" and failed its rollout. Now such a host gets nothing, and such
/// a site is offline, whatever could be placed there.
#[tokio::test]
async fn a_host_without_facts_gets_nothing_and_its_site_is_offline_not_failed() {
    let (_dir, store) = store().await;
    let manifests = "apiVersion: outpost/v1\nkind: Site\nmetadata: {name: shop}\n---\n\
        apiVersion: outpost/v1\nkind: Application\nmetadata: {name: pos}\nspec:\n  version: '1'\n  services:\n\
        \x20   - {name: api, containers: [{name: api, image: busybox}]}\n\
        \x20   - {name: cam, hosts: camera, containers: [{name: cam, image: busybox}]}\n---\n\
        apiVersion: outpost/v1\nkind: Deployment\nmetadata: {name: pos}\nspec: {application: pos, sites: '', rollout: {prestage: false}}\n";
    apply(store.as_ref(), manifests).await;
    let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    store.create_join_token("t", "shop", expires).await.unwrap();
    store.redeem_join_token("t", "till", "01").await.unwrap();
    let fleet = Fleet::new(store.clone());
    fleet.recompute().await.unwrap();

    let placed = |state: &SiteState| -> Vec<String> {
        state
            .workloads
            .iter()
            .flat_map(|w| w.instances.iter().map(|i| i.host.clone()))
            .collect()
    };
    let (_, state) = store.site_state("shop").await.unwrap().unwrap();
    assert!(placed(&state).is_empty(), "{state:?}");
    assert!(state.failures.is_empty(), "a site without facts waits: {state:?}");

    // Facts arrive (the host said hello): `api` is placed, `cam` cannot be.
    let facts = [("arch".to_string(), "amd64".to_string())].into();
    store.record_hello("shop", "till", &facts, "1", 0).await.unwrap();
    fleet.recompute_site("shop").await.unwrap();
    let (_, state) = store.site_state("shop").await.unwrap().unwrap();
    assert_eq!(placed(&state), ["till"]);
    assert_eq!(state.failures.len(), 1, "{state:?}");

    // Its session is gone: offline, not failed.
    let snapshot = crate::status::Snapshot::take(store.as_ref(), &fleet.presence)
        .await
        .unwrap();
    let (status, reason) = snapshot.deployment_on("pos", "shop");
    assert_eq!(status, DeploymentSiteState::Offline, "{reason}");
    let (_online, _logs) = fleet.presence.connect("shop", "till");
    let snapshot = crate::status::Snapshot::take(store.as_ref(), &fleet.presence)
        .await
        .unwrap();
    assert_eq!(
        snapshot.deployment_on("pos", "shop").0,
        DeploymentSiteState::Failed
    );
}

/// Issue 13: a new secret version reaches sites under the deployment's
/// rollout policy, like a new application version: the canary first.
#[tokio::test]
async fn a_new_secret_version_rolls_out_under_the_deployment_policy() {
    let (_dir, store) = store().await;
    let set = |version_note: &'static str| {
        let store = store.clone();
        async move {
            let new = crate::store::NewSecretVersion {
                name: "db",
                keys: vec!["password".to_string()],
                sites: None,
                images: Vec::new(),
                size: 8,
            };
            // The compile step reads policies only; the ciphertext is not opened here.
            let encrypt = |_| {
                Ok(crate::store::Encrypted {
                    key_id: "k".to_string(),
                    data_key: version_note.as_bytes().to_vec(),
                    ciphertext: Vec::new(),
                })
            };
            store.add_secret_version(new, &encrypt, "test").await.unwrap()
        }
    };
    set("one").await;
    let manifests = |rollout: &str| {
        format!(
            "apiVersion: outpost/v1\nkind: Site\nmetadata: {{name: a, labels: {{shop: 'yes'}}}}\n---\n\
             apiVersion: outpost/v1\nkind: Site\nmetadata: {{name: b, labels: {{shop: 'yes'}}}}\n---\n\
             apiVersion: outpost/v1\nkind: Application\nmetadata: {{name: pos}}\nspec:\n  version: '1'\n  services:\n\
             \x20   - name: api\n      containers:\n        - name: api\n          image: busybox\n          secrets: [{{secret: db, key: password, path: /run/db}}]\n---\n\
             apiVersion: outpost/v1\nkind: Deployment\nmetadata: {{name: pos}}\nspec: {{application: pos, sites: shop, rollout: {{prestage: false{rollout}}}}}\n"
        )
    };
    apply(store.as_ref(), &manifests("")).await;
    let fleet = Fleet::new(store.clone());
    fleet.recompute().await.unwrap();
    let versions = |states: std::collections::BTreeMap<String, (i64, SiteState)>| -> Vec<(String, u64)> {
        states
            .into_iter()
            .map(|(site, (_, state))| (site, state.workloads[0].secrets["db"]))
            .collect()
    };
    let both = |v: u64| vec![("a".to_string(), v), ("b".to_string(), v)];
    assert_eq!(versions(store.site_states().await.unwrap()), both(1));

    // A canary policy, then version 2 of the secret: one site gets it now,
    // the other when the rollout reaches it.
    apply(store.as_ref(), &manifests(", canary: 1, healthyFor: 0s")).await;
    set("two").await;
    fleet.recompute().await.unwrap();
    let rollout = fleet.rollouts().await.unwrap()["pos"].clone();
    assert_eq!(rollout.to, "1 (secrets db@2)");
    let now = versions(store.site_states().await.unwrap());
    assert_eq!(now.iter().filter(|(_, v)| *v == 2).count(), 1, "{now:?}");
    assert_eq!(now.iter().filter(|(_, v)| *v == 1).count(), 1, "{now:?}");
}

/// Issue 14: a host reports digests only for images its own site runs; a
/// report for another application is ignored, the right one pins it.
#[tokio::test]
async fn a_host_pins_digests_only_for_what_its_site_runs() {
    let (_dir, store) = store().await;
    let manifests = "apiVersion: outpost/v1\nkind: Site\nmetadata: {name: shop}\n---\n\
        apiVersion: outpost/v1\nkind: Application\nmetadata: {name: pos}\nspec:\n  version: '1'\n  services:\n\
        \x20   - {name: api, containers: [{name: api, image: 'registry.example/pos:1'}]}\n---\n\
        apiVersion: outpost/v1\nkind: Deployment\nmetadata: {name: pos}\nspec: {application: pos, sites: '', rollout: {prestage: false}}\n";
    apply(store.as_ref(), manifests).await;
    let fleet = Fleet::new(store.clone());
    fleet.recompute().await.unwrap();
    let digest = format!("sha256:{}", "a".repeat(64));
    let report = |application: &str, image: &str| outpost_proto::v1::StatusReport {
        instances: vec![outpost_proto::v1::InstanceStatus {
            instance: "pos-api-0".into(),
            application: application.into(),
            service: "api".into(),
            state: "running".into(),
            version: "1".into(),
            image_digests: [(image.to_string(), digest.clone())].into(),
            ..Default::default()
        }],
        images: Vec::new(),
    };
    crate::gateway::record_status(
        store.as_ref(),
        &fleet,
        "shop",
        "till",
        report("other", "registry.example/other:1"),
    )
    .await
    .unwrap();
    assert!(
        store.image_digests().await.unwrap().is_empty(),
        "not this site's image"
    );
    crate::gateway::record_status(
        store.as_ref(),
        &fleet,
        "shop",
        "till",
        report("pos", "registry.example/pos:1"),
    )
    .await
    .unwrap();
    let recorded = store.image_digests().await.unwrap();
    assert_eq!(
        recorded[&("pos".to_string(), "1".to_string())]["registry.example/pos:1"],
        digest
    );
    let (_, state) = store.site_state("shop").await.unwrap().unwrap();
    assert_eq!(
        state.workloads[0].digests["registry.example/pos:1"], digest,
        "sites now get the digest"
    );
}

/// Issue 14: with pre-staging (the default), a site first gets the new
/// release as staged workloads, placed on its host, and switches only
/// once its host reports every image present.
#[tokio::test]
async fn a_site_switches_once_its_host_holds_the_staged_images() {
    let (_dir, store) = store().await;
    let manifests = "apiVersion: outpost/v1\nkind: Site\nmetadata: {name: shop}\n---\n\
        apiVersion: outpost/v1\nkind: Application\nmetadata: {name: pos}\nspec:\n  version: '1'\n  services:\n\
        \x20   - {name: api, containers: [{name: api, image: 'registry.example/pos:1'}]}\n---\n\
        apiVersion: outpost/v1\nkind: Deployment\nmetadata: {name: pos}\nspec: {application: pos, sites: ''}\n";
    apply(store.as_ref(), manifests).await;
    let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    store.create_join_token("t", "shop", expires).await.unwrap();
    store.redeem_join_token("t", "till", "01").await.unwrap();
    let facts = [("arch".to_string(), "amd64".to_string())].into();
    store.record_hello("shop", "till", &facts, "1", 0).await.unwrap();
    let fleet = Fleet::new(store.clone());
    fleet.recompute().await.unwrap();

    let (_, state) = store.site_state("shop").await.unwrap().unwrap();
    assert!(
        state.workloads.is_empty(),
        "nothing runs before its images are there"
    );
    assert_eq!(state.staged.len(), 1, "{state:?}");
    assert_eq!(
        state.staged[0].instances[0].host, "till",
        "staged where it will run"
    );
    let snapshot = crate::status::Snapshot::take(store.as_ref(), &fleet.presence)
        .await
        .unwrap();
    let progress = snapshot.staging("pos", "shop").unwrap();
    assert_eq!((progress.images, progress.present), (1, 0));
    assert!(!snapshot.holds_images("pos", "shop"));

    // A pull under way: progress shows, nothing switches.
    let image = |present: bool, fetched: u64| outpost_proto::v1::StatusReport {
        instances: Vec::new(),
        images: vec![outpost_proto::v1::ImageStatus {
            application: "pos".into(),
            version: "1".into(),
            image: "registry.example/pos:1".into(),
            present,
            fetched,
            total: 1000,
            digest: if present {
                format!("sha256:{}", "b".repeat(64))
            } else {
                String::new()
            },
            ..Default::default()
        }],
    };
    crate::gateway::record_status(store.as_ref(), &fleet, "shop", "till", image(false, 400))
        .await
        .unwrap();
    fleet.advance().await.unwrap();
    let snapshot = crate::status::Snapshot::take(store.as_ref(), &fleet.presence)
        .await
        .unwrap();
    let progress = snapshot.staging("pos", "shop").unwrap();
    assert_eq!((progress.fetched, progress.left), (400, 600));
    assert!(
        store
            .site_state("shop")
            .await
            .unwrap()
            .unwrap()
            .1
            .workloads
            .is_empty()
    );

    // The image is there: the digest it reports pins the version, and the
    // next engine step switches the site.
    crate::gateway::record_status(store.as_ref(), &fleet, "shop", "till", image(true, 1000))
        .await
        .unwrap();
    fleet.advance().await.unwrap();
    let (_, state) = store.site_state("shop").await.unwrap().unwrap();
    assert_eq!(state.workloads.len(), 1, "{state:?}");
    assert!(state.staged.is_empty(), "a switched site stages nothing");
    assert_eq!(
        state.workloads[0].digests["registry.example/pos:1"],
        format!("sha256:{}", "b".repeat(64)),
        "the staged pull's digest is the version's"
    );
}
