//! Secrets: set a new version, list, describe (who holds which version),
//! reveal one value (audited) and delete. No response but a reveal ever
//! carries a value.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use outpost_api::secret::{
    RevealRequest, RevealResponse, SecretDetail, SecretHolder, SecretList, SecretSetRequest, SecretSummary,
};
use outpost_api::workload::SiteState;

use super::policy::audited;
use super::{Actor, ApiError, AppState, Principal, json_body};
use crate::secrets::SecretError;
use crate::store::StoredSecret;

impl From<SecretError> for ApiError {
    fn from(err: SecretError) -> Self {
        match err {
            SecretError::Invalid(message) => ApiError::BadRequest(message),
            SecretError::Store(err) => err.into(),
            other => ApiError::Internal(crate::error_chain(&other)),
        }
    }
}

/// Per version of one secret: the sites whose desired state refers to it,
/// with the revision that carries it.
type Referring<'a> = BTreeMap<u64, Vec<(&'a str, i64)>>;

/// Per secret, the sites that refer to each of its versions.
fn referring_sites(states: &BTreeMap<String, (i64, SiteState)>) -> BTreeMap<&str, Referring<'_>> {
    let mut out: BTreeMap<&str, Referring<'_>> = BTreeMap::new();
    for (site, (revision, state)) in states {
        let versions: BTreeSet<(&str, u64)> = state
            .workloads
            .iter()
            .flat_map(|w| w.secrets.iter().map(|(name, version)| (name.as_str(), *version)))
            .collect();
        for (name, version) in versions {
            out.entry(name)
                .or_default()
                .entry(version)
                .or_default()
                .push((site.as_str(), *revision));
        }
    }
    out
}

fn summary(principal: &Principal, stored: &StoredSecret, sites: Option<&Referring<'_>>) -> SecretSummary {
    SecretSummary {
        name: principal.shown_name(&stored.name).to_string(),
        version: stored.version,
        keys: stored.keys.clone(),
        sites: stored.sites.clone(),
        images: stored.images.clone(),
        created_at: stored.first_created_at.clone(),
        updated_at: stored.created_at.clone(),
        sites_by_version: sites
            .map(|versions| versions.iter().map(|(v, sites)| (*v, sites.len())).collect())
            .unwrap_or_default(),
    }
}

/// `POST /api/v1/secrets`: the next version of a secret.
pub(super) async fn set(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut request: SecretSetRequest = json_body(body, "a secret (name, values, sites, images)")?;
    if let Some(tenant) = principal.owner() {
        request.name = outpost_api::tenancy::qualified(tenant, &request.name)
            .map_err(|err| ApiError::BadRequest(format!("secret name: {err}")))?;
    }
    let name = request.name.clone();
    let inputs = state.fleet.inputs(None).await?;
    let version = state.secrets.set(request, &inputs, &actor).await?;
    tracing::info!(%actor, secret = %name, version, "secret set");
    state.recompute().await;
    let stored = state.store.secret(&name, Some(version)).await?;
    Ok(audited(
        Json(summary(&principal, &stored, None)),
        vec![format!("secret {name} version {version}")],
    ))
}

/// `GET /api/v1/secrets`: every secret's newest version, never a value.
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<SecretList>, ApiError> {
    let secrets = state.store.secrets().await?;
    let states = state.store.site_states().await?;
    let referring = referring_sites(&states);
    Ok(Json(SecretList {
        items: secrets
            .iter()
            .filter(|s| principal.owns(&s.name))
            .map(|s| summary(&principal, s, referring.get(s.name.as_str())))
            .collect(),
    }))
}

/// `GET /api/v1/secrets/{name}`: the summary, the deployments that use it,
/// and every host whose site refers to a version of it.
pub(super) async fn describe(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<SecretDetail>, ApiError> {
    let name = principal.secret_name(&name)?;
    let stored = state.store.secret(&name, None).await?;
    let states = state.store.site_states().await?;
    let referring = referring_sites(&states);
    let versions = referring.get(name.as_str());
    let inputs = state.fleet.inputs(None).await?;
    let deployments = inputs
        .deployments_using(&name)
        .map(|(deployment, _)| {
            principal
                .shown_name(deployment.metadata.name.as_str())
                .to_string()
        })
        .collect();
    let mut holders = Vec::new();
    if let Some(versions) = versions {
        let hosts = state.store.hosts().await?;
        for (version, sites) in versions {
            for (site, revision) in sites {
                for host in hosts.iter().filter(|h| h.site == *site) {
                    holders.push(SecretHolder {
                        site: site.to_string(),
                        host: host.name.clone(),
                        version: *version,
                        delivered: host.applied_revision >= *revision,
                    });
                }
            }
        }
    }
    Ok(Json(SecretDetail {
        summary: summary(&principal, &stored, versions),
        deployments,
        holders,
    }))
}

/// `POST /api/v1/secrets/{name}/reveal`: one value (the policy layer audits it).
pub(super) async fn reveal(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: RevealRequest = json_body(body, "a reveal request (key)")?;
    let name = principal.secret_name(&name)?;
    let (version, value) = state.secrets.reveal(&name, &request.key, &actor).await?;
    let response = Json(RevealResponse {
        version,
        value: STANDARD.encode(&*value),
    });
    Ok(audited(
        response,
        vec![format!("secret {name} key {} version {version}", request.key)],
    ))
}

/// `DELETE /api/v1/secrets/{name}`: refused while a deployment uses it.
pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<SecretSummary>, ApiError> {
    let name = principal.secret_name(&name)?;
    let stored = state.store.secret(&name, None).await?;
    state.store.delete_secret(&name).await?;
    tracing::info!(%actor, secret = %name, "secret deleted");
    Ok(Json(summary(&principal, &stored, None)))
}
