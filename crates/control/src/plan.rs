//! `outpost plan`: what applying a batch would make each site run, per
//! deployment and wave, computed from the stored state with the batch laid
//! over it in memory. Nothing is stored.

use std::collections::{BTreeMap, BTreeSet};

use outpost_api::manifest::{Manifest, Site};
use outpost_api::rollout::waves;
use outpost_api::validate::Document;
use outpost_api::wire::{DeploymentPlan, PlanResponse, SitePlan, WavePlan};
use outpost_api::workload::{Instance, SiteState, Workload};

use crate::fleet::Inputs;

/// Lays a batch over the stored inputs: new or replaced sites and
/// deployments; an application's version becomes its current one.
pub fn overlay(inputs: &mut Inputs, documents: &[Document]) {
    for document in documents {
        if let Manifest::Tenant(tenant) = &document.manifest {
            inputs
                .tenants
                .insert(tenant.metadata.name.to_string(), tenant.spec.clone());
        }
    }
    for document in documents {
        match &document.manifest {
            Manifest::Site(site) => {
                inputs.sites.retain(|s| s.metadata.name != site.metadata.name);
                inputs.sites.push(site.clone());
            }
            Manifest::Deployment(deployment) => {
                inputs
                    .deployments
                    .retain(|d| d.metadata.name != deployment.metadata.name);
                if let Some(deployment) = inputs.confined(deployment.clone()) {
                    inputs.deployments.push(deployment);
                }
            }
            // Laid over first: it confines the batch's deployments.
            Manifest::Tenant(_) => {}
            Manifest::Application(app) => {
                let entry = inputs.versions.entry(app.metadata.name.to_string()).or_default();
                entry.0 = app.spec.version.clone();
                entry.1.insert(app.spec.version.clone(), app.spec.clone());
            }
        }
    }
    inputs.sites.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // A plan shows where the batch leads, not a rollout's halfway point.
    let concerned = concerned(inputs, documents);
    std::sync::Arc::make_mut(&mut inputs.rollouts).retain(|name, _| !concerned.contains(name));
}

/// The deployments a batch concerns: those it defines, and those that run
/// an application it defines.
pub fn concerned(inputs: &Inputs, documents: &[Document]) -> BTreeSet<String> {
    let applications: BTreeSet<&str> = documents
        .iter()
        .filter_map(|d| match &d.manifest {
            Manifest::Application(app) => Some(app.metadata.name.as_str()),
            _ => None,
        })
        .collect();
    let defined = documents.iter().filter_map(|d| match &d.manifest {
        Manifest::Deployment(deployment) => Some(deployment.metadata.name.to_string()),
        _ => None,
    });
    let running = inputs
        .deployments
        .iter()
        .filter(|d| applications.contains(d.spec.application.as_str()))
        .map(|d| d.metadata.name.to_string());
    defined.chain(running).collect()
}

/// The plan for `deployments`, from the overlaid inputs and what sites run now.
pub fn plan(
    inputs: &Inputs,
    current: &BTreeMap<String, (i64, SiteState)>,
    deployments: &BTreeSet<String>,
) -> PlanResponse {
    let compiled = inputs.compile();
    let mut out = PlanResponse::default();
    for deployment in inputs
        .deployments
        .iter()
        .filter(|d| deployments.contains(d.metadata.name.as_str()))
    {
        let name = deployment.metadata.name.as_str();
        let application = deployment.spec.application.as_str();
        let version = deployment.spec.version.clone().unwrap_or_else(|| {
            inputs
                .versions
                .get(application)
                .map(|(current, _)| current.clone())
                .unwrap_or_default()
        });
        let (selected, not_selected): (Vec<&Site>, Vec<&Site>) = inputs
            .sites
            .iter()
            .partition(|s| deployment.spec.sites.matches(&s.metadata.labels));
        let names = |sites: Vec<&Site>| -> Vec<String> {
            sites.iter().map(|s| s.metadata.name.to_string()).collect()
        };
        let (selected, not_selected) = (names(selected), names(not_selected));
        let plan_site = |site: &String| -> SitePlan {
            let state = compiled.get(site).cloned().unwrap_or_default();
            if let Some(failure) = state.failures.iter().find(|f| f.deployment == name) {
                return SitePlan {
                    site: site.clone(),
                    action: "cannot run".to_string(),
                    instances: Vec::new(),
                    reason: failure.reason.clone(),
                };
            }
            let after: Vec<_> = state.workloads.iter().filter(|w| w.deployment == name).collect();
            let instances: Vec<String> = after
                .iter()
                .flat_map(|w| w.instances.iter().map(|i| format!("{} on {}", i.name, i.host)))
                .collect();
            let before: Vec<Workload> = current
                .get(site)
                .map(|(_, s)| {
                    s.workloads
                        .iter()
                        .filter(|w| w.deployment == name)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let summary = |ws: &[&Workload]| -> Vec<(String, Vec<Instance>)> {
                ws.iter().map(|w| (w.spec_hash(), w.instances.clone())).collect()
            };
            let action = match before.first() {
                _ if instances.is_empty() => "wait".to_string(),
                None => format!("install {version}"),
                Some(old) if old.version != version => format!("update {} -> {version}", old.version),
                Some(_) if summary(&before.iter().collect::<Vec<_>>()) != summary(&after) => {
                    format!("change {version}")
                }
                Some(_) => format!("unchanged {version}"),
            };
            let reason = if instances.is_empty() {
                "no host has enrolled yet".to_string()
            } else {
                String::new()
            };
            SitePlan {
                site: site.clone(),
                action,
                instances,
                reason,
            }
        };
        let waves = waves(deployment.spec.rollout.as_ref(), &selected)
            .into_iter()
            .map(|wave| WavePlan {
                wave: wave.name,
                sites: wave.sites.iter().map(plan_site).collect(),
            })
            .collect();
        out.deployments.push(DeploymentPlan {
            name: name.to_string(),
            application: application.to_string(),
            version,
            selector: deployment.spec.sites.to_string(),
            waves,
            not_selected,
        });
    }
    out
}
