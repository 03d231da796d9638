//! The fleet against a real SQLite store: placement waits for facts, and
//! offline comes before failed.

use std::sync::Arc;

use outpost_api::wire::DeploymentSiteState;
use outpost_api::workload::SiteState;

use super::Fleet;
use crate::store::Storage;

/// Issue 11: instances went to a host that enrolled but never connected
/// (no facts), and a site whose only host never connected "could not
/// place" and failed its rollout. Now such a host gets nothing, and such
/// a site is offline, whatever could be placed there.
#[tokio::test]
async fn a_host_without_facts_gets_nothing_and_its_site_is_offline_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Storage> = Arc::new(
        crate::store::SqliteStore::open(&dir.path().join("outpost.db"))
            .await
            .unwrap(),
    );
    let manifests = "apiVersion: outpost/v1\nkind: Site\nmetadata: {name: shop}\n---\n\
        apiVersion: outpost/v1\nkind: Application\nmetadata: {name: pos}\nspec:\n  version: '1'\n  services:\n\
        \x20   - {name: api, containers: [{name: api, image: busybox}]}\n\
        \x20   - {name: cam, hosts: camera, containers: [{name: cam, image: busybox}]}\n---\n\
        apiVersion: outpost/v1\nkind: Deployment\nmetadata: {name: pos}\nspec: {application: pos, sites: ''}\n";
    let documents = outpost_api::parse_documents("t.yaml", manifests).unwrap();
    store.apply(&documents, "test", Default::default()).await.unwrap();
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
