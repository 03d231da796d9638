//! Application owners' namespaces. An application owner (a `Tenant`)
//! writes plain names; the control plane stores its objects, and every
//! reference they make, as `TENANT.NAME`. Two tenants may each have an
//! application `web`, the sites run `acme.web` and `globex.web` side by
//! side, and nothing downstream of the API needs to know about tenants: a
//! name is unique fleet-wide.
//!
//! An object and every object it refers to share one namespace (checked
//! in `validate`), so a provider's deployment cannot run a tenant's
//! application, nor a tenant's container mount another's secret.

use crate::diagnostic::{Diagnostics, Path};
use crate::manifest::{EnvValue, Kind, Manifest, ObjectName, Quotas};
use crate::quantity::{Cpu, Size};
use crate::validate::Document;
use crate::wire::StoredObject;
use crate::workload::SiteState;

/// Every object name in a manifest, its own first, with its field path.
pub fn names_mut(manifest: &mut Manifest) -> Vec<(Path, &mut ObjectName)> {
    let root = Path::root();
    let spec = root.field("spec");
    let mut out = Vec::new();
    match manifest {
        Manifest::Site(site) => out.push((root.field("metadata").field("name"), &mut site.metadata.name)),
        Manifest::Tenant(tenant) => {
            out.push((root.field("metadata").field("name"), &mut tenant.metadata.name));
        }
        Manifest::Deployment(deployment) => {
            out.push((
                root.field("metadata").field("name"),
                &mut deployment.metadata.name,
            ));
            out.push((spec.field("application"), &mut deployment.spec.application));
        }
        Manifest::Application(app) => {
            out.push((root.field("metadata").field("name"), &mut app.metadata.name));
            if let Some(name) = &mut app.spec.image_pull_secret {
                out.push((spec.field("imagePullSecret"), name));
            }
            for (i, service) in app.spec.services.iter_mut().enumerate() {
                let at = spec.field("services").index(i);
                for (k, egress) in service.egress.iter_mut().enumerate() {
                    out.push((
                        at.field("egress").index(k).field("application"),
                        &mut egress.application,
                    ));
                }
                for (j, container) in service.containers.iter_mut().enumerate() {
                    let at = at.field("containers").index(j);
                    if let Some(name) = &mut container.image_pull_secret {
                        out.push((at.field("imagePullSecret"), name));
                    }
                    for (key, value) in container.env.iter_mut() {
                        if let EnvValue::Secret(r) = value {
                            out.push((at.field("env").field(key).field("secret"), &mut r.secret));
                        }
                    }
                    for (m, mount) in container.secrets.iter_mut().enumerate() {
                        out.push((at.field("secrets").index(m).field("secret"), &mut mount.secret));
                    }
                }
            }
        }
    }
    out
}

/// Moves an application owner's documents into its namespace: every name
/// becomes `TENANT.NAME`. A name that already names a namespace, and a
/// site or tenant (the provider's alone), is an error at its field.
pub fn qualify(documents: &mut [Document], tenant: &str) -> Result<(), Diagnostics> {
    let mut out = Diagnostics::default();
    for document in documents.iter_mut() {
        let kind = document.manifest.kind();
        let mut manifest = document.manifest.clone();
        for (path, name) in names_mut(&mut manifest) {
            if matches!(kind, Kind::Site | Kind::Tenant) {
                out.0.push(document.diagnostic(
                    &path,
                    format!("{kind} objects belong to the site provider; tenant {tenant} may not apply them"),
                ));
                break;
            }
            if name.tenant().is_some() {
                out.0.push(document.diagnostic(
                    &path,
                    format!(
                        "{:?}: write names without a tenant (tenant {tenant}'s objects are its own)",
                        name.as_str()
                    ),
                ));
                continue;
            }
            *name = ObjectName::within(Some(tenant), name.as_str());
        }
        document.manifest = manifest;
    }
    if out.is_empty() { Ok(()) } else { Err(out.sorted()) }
}

/// An object as its tenant sees it: its names without `TENANT.`.
pub fn unqualify(object: &mut StoredObject, tenant: &str) {
    let Ok(mut manifest) = object.manifest() else {
        return;
    };
    for (_, name) in names_mut(&mut manifest) {
        if name.tenant() == Some(tenant) {
            *name = ObjectName::within(None, name.local());
        }
    }
    object.metadata.name = manifest.name().to_string();
    object.spec = manifest.spec_json();
}

/// The sites a deployment named `name` with selector `sites` reaches: for
/// an application owner's, only those its tenant's `spec.sites`
/// (`tenant_sites`) also selects; `None` (nowhere) once its tenant is gone.
pub fn confine<'a>(
    name: &str,
    sites: &crate::selector::Selector,
    tenant_sites: impl FnOnce(&str) -> Option<&'a crate::selector::Selector>,
) -> Option<crate::selector::Selector> {
    match name.split_once('.') {
        None => Some(sites.clone()),
        Some((tenant, _)) => tenant_sites(tenant).map(|tenant| sites.and(tenant)),
    }
}

/// `TENANT.NAME` for a name a tenant wrote, which must be a plain DNS label.
pub fn qualified(tenant: &str, name: &str) -> Result<String, String> {
    crate::manifest::check_dns_label(name)?;
    Ok(format!("{tenant}.{name}"))
}

/// The part of a stored name a tenant wrote: `web` of `acme.web` for acme.
/// `None` when the name is not in its namespace.
pub fn local_name<'a>(name: &'a str, tenant: &str) -> Option<&'a str> {
    name.strip_prefix(tenant)?.strip_prefix('.')
}

/// What one tenant's instances take on one site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu: Cpu,
    pub memory: Size,
    pub gpu: u32,
    pub instances: u32,
}

/// What `tenant`'s workloads take on a site: each instance counts its
/// containers' `resources`. A replicated service counts its replicas even
/// where the site has no host for them yet.
pub fn usage(state: &SiteState, tenant: &str) -> Usage {
    let mut usage = Usage::default();
    for workload in state
        .workloads
        .iter()
        .filter(|w| local_name(&w.application, tenant).is_some())
    {
        let instances = if workload.per_host {
            workload.instances.len() as u32
        } else {
            workload.replicas
        };
        usage.instances += instances;
        for resources in workload.containers.iter().filter_map(|c| c.resources.as_ref()) {
            usage.cpu.0 += resources.cpu.map_or(0, |cpu| cpu.0) * instances;
            usage.memory.0 += resources.memory.map_or(0, |memory| memory.0) * u64::from(instances);
            usage.gpu += resources.gpu.unwrap_or(0) * instances;
        }
    }
    usage
}

impl Quotas {
    /// Each quota `usage` goes past, as `cpu 3 > 2`.
    pub fn exceeded(&self, usage: &Usage) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(cpu) = self.cpu
            && usage.cpu > cpu
        {
            out.push(format!("cpu {} > {cpu}", usage.cpu));
        }
        if let Some(memory) = self.memory
            && usage.memory > memory
        {
            out.push(format!("memory {} > {memory}", usage.memory));
        }
        if let Some(gpu) = self.gpu
            && usage.gpu > gpu
        {
            out.push(format!("gpu {} > {gpu}", usage.gpu));
        }
        if let Some(instances) = self.instances
            && usage.instances > instances
        {
            out.push(format!("instances {} > {instances}", usage.instances));
        }
        out
    }
}

#[cfg(test)]
mod tests;
