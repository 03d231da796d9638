//! Hosts: join tokens, the host list, the operator's labels on a host, and
//! the rotation of a site's underlay keys.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use outpost_api::manifest::Kind;
use outpost_api::wire::{HostList, JoinToken, JoinTokenRequest, RotateKeysRequest, SiteKeys};

use super::{Actor, ApiError, AppState, Principal, label_change, optional_body};
use crate::auth;
use crate::status::Snapshot;

/// The longest a join token may live.
const MAX_JOIN_TOKEN_TTL: outpost_api::quantity::Duration = outpost_api::quantity::Duration(30 * 86_400_000);

/// `POST /api/v1/sites/{name}/tokens`: a single-use join token for a new host.
pub(super) async fn create_join_token(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path(site): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<JoinToken>, ApiError> {
    let request: JoinTokenRequest = optional_body(body, "a token request")?;
    let ttl: outpost_api::quantity::Duration = match request.ttl.as_deref() {
        None => outpost_api::quantity::Duration(3_600_000),
        Some(text) => text
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("ttl: {e}")))?,
    };
    if ttl.0 == 0 || ttl > MAX_JOIN_TOKEN_TTL {
        return Err(ApiError::BadRequest(format!(
            "ttl: {ttl} is not between 1s and {MAX_JOIN_TOKEN_TTL}"
        )));
    }
    if state.store.get(Kind::Site, &site).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "site {site:?} not found (apply its Site manifest first)"
        )));
    }
    let (token, hash) = auth::new_join_token(&state.pki.ca_fingerprint());
    let expires_at = time::OffsetDateTime::now_utc() + ttl.as_std();
    state.store.create_join_token(&hash, &site, expires_at).await?;
    tracing::info!(%actor, %site, ttl = %ttl, "join token created");
    Ok(Json(JoinToken {
        token,
        site,
        expires_at: expires_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    }))
}

/// `POST /api/v1/sites/{name}/rotate-keys`: a new epoch of underlay keys
/// for the site's hosts (see `outpost_agent::underlay`).
pub(super) async fn rotate_keys(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path(site): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SiteKeys>, ApiError> {
    let request: RotateKeysRequest = optional_body(body, "a rotation request")?;
    if state.store.get(Kind::Site, &site).await?.is_none() {
        return Err(ApiError::NotFound(format!("site {site:?} not found")));
    }
    let keys = state
        .store
        .rotate_site_keys(&site, request.at_once, time::OffsetDateTime::now_utc())
        .await?;
    tracing::info!(%actor, %site, epoch = keys.epoch, at_once = request.at_once, "rotating the site's underlay keys");
    state.fleet.recompute_site(&site).await?;
    Ok(Json(keys))
}

/// `GET /api/v1/sites/{name}/keys`: where the site's underlay keys stand.
pub(super) async fn site_keys(
    State(state): State<AppState>,
    Path(site): Path<String>,
) -> Result<Json<SiteKeys>, ApiError> {
    if state.store.get(Kind::Site, &site).await?.is_none() {
        return Err(ApiError::NotFound(format!("site {site:?} not found")));
    }
    let keys = state.store.site_keys().await?.remove(&site);
    Ok(Json(keys.unwrap_or_else(|| SiteKeys {
        site,
        epoch: 1,
        retiring: None,
        rotated_at: String::new(),
        hosts_rotated: 0,
        hosts: 0,
    })))
}

/// `GET /api/v1/hosts[?site=NAME]`: enrolled hosts with their facts and
/// instances, of the sites the caller's site selector reaches.
pub(super) async fn hosts(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<HostList>, ApiError> {
    let visible = state.visible_sites(&principal).await?;
    let sees = |site: &str| visible.as_ref().is_none_or(|visible| visible.contains(site));
    if let Some(site) = query.get("site")
        && (!sees(site) || state.store.get(Kind::Site, site).await?.is_none())
    {
        return Err(crate::store::StoreError::NotFound {
            kind: Kind::Site,
            name: site.clone(),
        }
        .into());
    }
    let snapshot = Snapshot::take(state.store.as_ref(), &state.fleet.presence).await?;
    let items = snapshot
        .hosts()
        .into_iter()
        .filter(|h| query.get("site").is_none_or(|site| *site == h.site))
        .filter(|h| sees(&h.site))
        .map(|mut host| {
            // An application owner sees its own instances only.
            if principal.owner().is_some() {
                host.instances = std::mem::take(&mut host.instances)
                    .into_iter()
                    .filter(|(instance, _)| principal.owns(instance))
                    .map(|(instance, state)| (principal.shown_name(&instance).to_string(), state))
                    .collect();
                host.details.retain(|detail| principal.owns(&detail.instance));
                for detail in &mut host.details {
                    detail.instance = principal.shown_name(&detail.instance).to_string();
                    detail.application = principal.shown_name(&detail.application).to_string();
                }
            }
            host
        })
        .collect();
    Ok(Json(HostList { items }))
}

/// `PATCH /api/v1/hosts/{site}/{host}/labels`: the operator's labels on a
/// host; discovered facts cannot be set.
pub(super) async fn label_host(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path((site, host)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<crate::store::HostRecord>, ApiError> {
    let change = label_change(body)?;
    let record = state.store.update_host_labels(&site, &host, &change).await?;
    tracing::info!(%actor, %site, %host, "host labelled");
    if let Err(err) = state.fleet.recompute_site(&site).await {
        tracing::error!(%err, %site, "recomputing desired state");
    }
    Ok(Json(record))
}
