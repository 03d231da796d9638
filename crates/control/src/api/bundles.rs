//! Offline bundles: what a deployment's release holds for the sites it
//! covers, and its signed header (`outpost bundle create`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use outpost_api::wire::{BundleRequest, BundleResponse};
use outpost_proto::bundle::{Header, SiteBundle};

use outpost_api::manifest::Kind;

use super::{Actor, ApiError, AppState, Principal, optional_body};

/// `POST /api/v1/deployments/{name}/bundle`.
pub(super) async fn bundle(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BundleResponse>, ApiError> {
    let request: BundleRequest = optional_body(body, "a bundle request")?;
    let name = state
        .visible(&principal, Kind::Deployment, &name)
        .await?
        .metadata
        .name;
    let (version, states) = state.fleet.bundle(&name, request.version.as_deref()).await?;
    let mut images: Vec<String> = states
        .values()
        .flat_map(|(_, site)| &site.workloads)
        .filter(|w| w.deployment == name)
        .flat_map(|w| {
            w.containers
                .iter()
                .map(|c| outpost_api::workload::pinned_image(c.image.as_str(), &w.digests))
        })
        .collect();
    images.sort();
    images.dedup();
    let mut response = BundleResponse {
        deployment: name.clone(),
        version: version.clone(),
        images: images.clone(),
        sites: states.keys().cloned().collect(),
        header: None,
        signature: None,
    };
    let (archive_sha256, archive_bytes) = match (request.archive_sha256, request.archive_bytes) {
        (Some(sha256), Some(bytes)) => (sha256, bytes),
        (None, None) => return Ok(Json(response)),
        _ => {
            return Err(ApiError::BadRequest(
                "archiveSha256 and archiveBytes go together".to_string(),
            ));
        }
    };
    if archive_sha256.len() != 64 || !archive_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::BadRequest(
            "archiveSha256 must be 64 hexadecimal digits".to_string(),
        ));
    }
    let header = Header {
        deployment: name.clone(),
        version: version.clone(),
        created_ms: crate::fleet::now_ms(),
        sites: states
            .into_iter()
            .map(|(site, (revision, state))| {
                let revision = revision.max(0) as u64;
                (site, SiteBundle { revision, state })
            })
            .collect(),
        images,
        archive_sha256: archive_sha256.to_ascii_lowercase(),
        archive_bytes,
    };
    let json = serde_json::to_vec(&header)
        .map_err(|e| ApiError::Internal(format!("encoding a bundle header: {e}")))?;
    let signature = state
        .pki
        .sign_bundle(&json)
        .map_err(|e| ApiError::Internal(format!("{e:#}")))?;
    tracing::info!(%actor, deployment = %name, %version, sites = header.sites.len(), "offline bundle signed");
    response.header = Some(String::from_utf8_lossy(&json).into_owned());
    response.signature = Some(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        signature,
    ));
    Ok(Json(response))
}
