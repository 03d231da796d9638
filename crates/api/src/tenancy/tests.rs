//! Namespaces of application owners: names in and out, the one-namespace
//! rule, and what a tenant's instances take against its quotas.

use std::collections::BTreeMap;

use expect_test::expect;

use super::*;
use crate::manifest::{Deployment, Site};
use crate::validate::parse_documents;

const APP: &str = r#"
apiVersion: outpost/v1
kind: Application
metadata: {name: web}
spec:
  version: "1"
  imagePullSecret: pull
  services:
    - name: api
      replicas: 2
      egress: [{application: db, service: main}]
      containers:
        - name: c
          image: example/api:1
          env: {PASSWORD: {secret: db-pass, key: password}}
          secrets: [{secret: tls, path: /tls}]
          resources: {cpu: 500m, memory: 256Mi, gpu: 1}
---
apiVersion: outpost/v1
kind: Deployment
metadata: {name: web}
spec: {application: web, sites: "region=eu"}
"#;

fn names(documents: &[Document]) -> Vec<String> {
    documents
        .iter()
        .flat_map(|d| {
            let mut manifest = d.manifest.clone();
            names_mut(&mut manifest)
                .into_iter()
                .map(|(path, name)| format!("{path} = {name}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_tenants_names_and_every_reference_move_into_its_namespace_and_back() {
    let mut documents = parse_documents("web.yaml", APP).unwrap();
    qualify(&mut documents, "acme").unwrap();
    expect![[r#"
        [
            "metadata.name = acme.web",
            "spec.imagePullSecret = acme.pull",
            "spec.services[0].egress[0].application = acme.db",
            "spec.services[0].containers[0].env.PASSWORD.secret = acme.db-pass",
            "spec.services[0].containers[0].secrets[0].secret = acme.tls",
            "metadata.name = acme.web",
            "spec.application = acme.web",
        ]
    "#]]
    .assert_debug_eq(&names(&documents));
    // What the tenant reads back is what it wrote.
    let original = parse_documents("web.yaml", APP).unwrap();
    for (document, original) in documents.iter().zip(&original) {
        let mut object = StoredObject {
            api_version: crate::manifest::ApiVersion::V1,
            kind: document.manifest.kind(),
            metadata: crate::wire::ObjectMeta {
                name: document.manifest.name().to_string(),
                labels: BTreeMap::new(),
                generation: 1,
                created_at: String::new(),
                updated_at: String::new(),
            },
            spec: document.manifest.spec_json(),
            status: None,
        };
        unqualify(&mut object, "acme");
        assert_eq!(object.manifest().unwrap(), original.manifest);
    }
}

#[test]
fn a_tenant_cannot_write_into_another_namespace_nor_apply_sites() {
    let text = "apiVersion: outpost/v1\nkind: Deployment\nmetadata: {name: globex.web}\nspec: {application: globex.web, sites: \"\"}\n";
    let mut documents = parse_documents("web.yaml", text).unwrap();
    let err = qualify(&mut documents, "acme").unwrap_err();
    expect![[r#"
        web.yaml:3:18: metadata.name: "globex.web": write names without a tenant (tenant acme's objects are its own)
        web.yaml:4:21: spec.application: "globex.web": write names without a tenant (tenant acme's objects are its own)"#]]
        .assert_eq(&err.to_string());
    let mut sites = parse_documents(
        "site.yaml",
        "apiVersion: outpost/v1\nkind: Site\nmetadata: {name: s1}\n",
    )
    .unwrap();
    let err = qualify(&mut sites, "acme").unwrap_err();
    expect!["site.yaml:3:18: metadata.name: Site objects belong to the site provider; tenant acme may not apply them"]
        .assert_eq(&err.to_string());
}

#[test]
fn an_object_refers_only_to_its_own_namespace() {
    // The provider names a tenant's application from its own deployment.
    let text = "apiVersion: outpost/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {application: acme.web, sites: \"\"}\n";
    let err = parse_documents("d.yaml", text).unwrap_err();
    expect![[r#"d.yaml:4:21: spec.application: "acme.web" is in another namespace (tenant acme's): an object refers only to objects of its own tenant"#]]
        .assert_eq(&err.to_string());
    let site = "apiVersion: outpost/v1\nkind: Site\nmetadata: {name: acme.s1}\n";
    let err = parse_documents("s.yaml", site).unwrap_err();
    expect![[r#"s.yaml:3:18: metadata.name: "acme.s1" is not a DNS label (a Site has no tenant)"#]]
        .assert_eq(&err.to_string());
}

#[test]
fn usage_counts_a_tenants_replicas_and_resources_against_its_quotas() {
    // Without secrets, which the site would need to hold.
    let text = APP
        .replace("  imagePullSecret: pull\n", "")
        .replace(
            "          env: {PASSWORD: {secret: db-pass, key: password}}\n",
            "",
        )
        .replace("          secrets: [{secret: tls, path: /tls}]\n", "");
    let mut documents = parse_documents("web.yaml", &text).unwrap();
    qualify(&mut documents, "acme").unwrap();
    let app = match &documents[0].manifest {
        Manifest::Application(app) => app.spec.clone(),
        _ => unreachable!(),
    };
    let deployment: Deployment = match &documents[1].manifest {
        Manifest::Deployment(d) => d.clone(),
        _ => unreachable!(),
    };
    let site: Site = match &parse_documents(
        "s.yaml",
        "apiVersion: outpost/v1\nkind: Site\nmetadata: {name: s1, labels: {region: eu}}\n",
    )
    .unwrap()[0]
        .manifest
    {
        Manifest::Site(site) => site.clone(),
        _ => unreachable!(),
    };
    let state =
        crate::workload::compile_site(&site, [&deployment], |_, _| Some(app.clone()), &BTreeMap::new());
    let used = usage(&state, "acme");
    assert_eq!(
        used,
        Usage {
            cpu: Cpu(1000),
            memory: Size(512 << 20),
            gpu: 2,
            instances: 2
        }
    );
    assert_eq!(
        usage(&state, "globex"),
        Usage::default(),
        "another tenant's instances count nothing"
    );
    let quotas = Quotas {
        cpu: Some(Cpu(1000)),
        memory: Some(Size(256 << 20)),
        gpu: None,
        instances: Some(1),
    };
    assert_eq!(
        quotas.exceeded(&used),
        ["memory 512Mi > 256Mi", "instances 2 > 1"],
        "cpu at its quota is within it"
    );
}
