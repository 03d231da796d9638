//! Signed state heads: what one host of a site may hand another.

// Test setup: a panic is how it reports a failure.
#![allow(clippy::unwrap_used)]

use outpost_api::workload::{Instance, SiteState, Workload};
use outpost_proto::codec::{apply_manifest, delta_manifest, full_manifest};
use outpost_proto::head;

fn workload(service: &str, version: &str) -> Workload {
    serde_json::from_value(serde_json::json!({
        "application": "a", "version": version, "deployment": "d", "service": service,
        "replicas": 1, "perHost": false, "containers": [],
        "instances": [{"name": format!("a-{service}-0"), "host": "h1"}],
    }))
    .unwrap()
}

/// A CA like the control plane's: its certificate, and a signer.
fn ca() -> (String, impl Fn(&[u8]) -> Result<Vec<u8>, rcgen::Error>) {
    use rcgen::SigningKey;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), move |message: &[u8]| key.sign(message))
}

#[test]
fn a_host_verifies_the_state_it_rebuilt_from_full_and_delta_manifests() {
    let (ca_pem, sign) = ca();
    // Workloads out of key order at the control plane, and a placement
    // failure it keeps to itself: neither changes the digest.
    let mut v1 = SiteState {
        workloads: vec![workload("web", "1"), workload("db", "1")],
        host_loss_after_ms: 5000,
        ..Default::default()
    };
    v1.workloads[0].instances.push(Instance {
        name: "a-web-1".into(),
        host: "h2".into(),
        moved_from: None,
    });
    let held = apply_manifest((0, &SiteState::default()), &full_manifest(3, &v1).unwrap()).unwrap();
    let (h, s) = head::sign("shop", 3, &v1, &sign).unwrap();
    assert_eq!(head::verify(&h, &s, &ca_pem, "shop", &held).unwrap(), 3);

    let v2 = SiteState {
        workloads: vec![workload("web", "2"), workload("db", "1")],
        ..v1.clone()
    };
    let held = apply_manifest((3, &held), &delta_manifest(3, &v1, 4, &v2).unwrap()).unwrap();
    let (h, s) = head::sign("shop", 4, &v2, &sign).unwrap();
    assert_eq!(head::verify(&h, &s, &ca_pem, "shop", &held).unwrap(), 4);

    // Another site's head, another state, another CA: refused.
    assert!(head::verify(&h, &s, &ca_pem, "depot", &held).is_err());
    assert!(head::verify(&h, &s, &ca_pem, "shop", &v1).is_err());
    let (other_ca, _) = ca();
    assert!(head::verify(&h, &s, &other_ca, "shop", &held).is_err());
    let mut forged = h.clone();
    let at = forged.len() - 3;
    forged[at] ^= 1;
    assert!(head::verify(&forged, &s, &ca_pem, "shop", &held).is_err());
}
