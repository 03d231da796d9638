//! The operator REST API under `/api/v1`, behind bearer-token
//! authentication: the router, the authentication and body-limit layers and
//! the helpers the routes share. Each route lives with its concept:
//! `objects` (apply, plan, get, list, delete, history, labels), `hosts`
//! (join tokens, hosts, host labels), `records` (events and logs),
//! `secrets` (set, list, describe, reveal, delete),
//! `rollouts`, and `metrics` (Prometheus, outside `/api/v1`).

mod bundles;
mod error;
mod hosts;
mod metrics;
mod objects;
mod openapi;
mod records;
mod rollouts;
mod secrets;
mod streams;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use outpost_api::manifest::Kind;
use outpost_api::selector::Selector;
use outpost_api::wire::{LabelChange, StoredObject};

pub use error::ApiError;

use crate::auth;
use crate::fleet::Fleet;
use crate::pki::Pki;
use crate::status::Snapshot;
use crate::store::Storage;

/// The largest request body accepted (a big multi-document apply fits easily).
pub const BODY_LIMIT: usize = outpost_api::limits::MAX_BODY_BYTES;

/// The header that makes an apply safe to send again.
pub use outpost_api::wire::IDEMPOTENCY_KEY;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Storage>,
    pub fleet: Arc<Fleet>,
    pub pki: Arc<Pki>,
    pub revocations: Arc<crate::revocation::Revocations>,
    pub enrollments: Arc<crate::enrollment::Enrollments>,
    pub secrets: Arc<crate::secrets::Secrets>,
}

impl AppState {
    /// Recomputes what sites run after a change; the change itself is
    /// already stored, so a failure here is logged, not returned.
    async fn recompute(&self) {
        if let Err(err) = self.fleet.recompute().await {
            tracing::error!(%err, "recomputing the desired state of sites");
        }
    }

    /// Recomputes after a change to these objects: only the sites concerned
    /// when nothing but sites changed (see `Fleet::recompute_changed`).
    async fn recompute_changed(&self, changed: &[(Kind, &str)]) {
        if let Err(err) = self.fleet.recompute_changed(changed).await {
            tracing::error!(%err, "recomputing the desired state of sites");
        }
    }

    /// Fills in the live status of sites and deployments.
    async fn with_status(&self, mut objects: Vec<StoredObject>) -> Result<Vec<StoredObject>, ApiError> {
        let all_digests = if objects.iter().any(|o| o.kind == Kind::Application) {
            self.store.image_digests().await?
        } else {
            Default::default()
        };
        let snapshot = if objects
            .iter()
            .any(|o| matches!(o.kind, Kind::Site | Kind::Deployment))
        {
            Some(Snapshot::take(self.store.as_ref(), &self.fleet.presence).await?)
        } else {
            None
        };
        let mut streams: HashMap<String, Vec<outpost_api::stream::TopicStatus>> = HashMap::new();
        if objects.iter().any(|o| o.kind == Kind::Site) {
            for (site, topic) in self.store.host_streams().await? {
                streams.entry(site).or_default().push(topic);
            }
        }
        let sites = if objects.iter().any(|o| o.kind == Kind::Deployment) {
            self.store.list(Kind::Site).await?
        } else {
            Vec::new()
        };
        for object in &mut objects {
            let status = match (object.kind, &snapshot) {
                (Kind::Site, Some(snapshot)) => {
                    let mut status = snapshot.site(&object.metadata.name);
                    status.streams = streams.remove(&object.metadata.name).unwrap_or_default();
                    serde_json::to_value(status)
                }
                (Kind::Deployment, Some(snapshot)) => {
                    let selector: Selector = object
                        .spec
                        .get("sites")
                        .and_then(|s| s.as_str())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(Selector::all);
                    let selected: Vec<String> = sites
                        .iter()
                        .filter(|s| selector.matches(&s.metadata.labels))
                        .map(|s| s.metadata.name.clone())
                        .collect();
                    serde_json::to_value(snapshot.deployment(&object.metadata.name, &selected))
                }
                (Kind::Site | Kind::Deployment, None) => continue,
                (Kind::Application, _) => {
                    // The digest each version's images resolved to.
                    let digests: BTreeMap<&str, &BTreeMap<String, String>> = all_digests
                        .iter()
                        .filter(|((application, _), _)| *application == object.metadata.name)
                        .map(|((_, version), digests)| (version.as_str(), digests))
                        .collect();
                    serde_json::to_value(serde_json::json!({ "imageDigests": digests }))
                }
            };
            object.status = status.ok();
        }
        Ok(objects)
    }
}

/// Who made a request: the name of the API token it carried.
#[derive(Debug, Clone)]
pub(super) struct Actor(pub(super) String);

/// Every route under `/api/v1` that needs a token: (method, path, handler).
/// The router is built from this list, and the OpenAPI document must
/// describe exactly these (a test holds the two together).
fn protected_routes() -> Vec<(&'static str, &'static str, MethodRouter<AppState>)> {
    use axum::routing::{delete, patch};
    vec![
        ("POST", "/apply", post(objects::apply)),
        ("POST", "/plan", post(objects::plan)),
        ("GET", "/applications/{name}/history", get(objects::history)),
        ("POST", "/sites/{name}/tokens", post(hosts::create_join_token)),
        ("POST", "/sites/{name}/rotate-keys", post(hosts::rotate_keys)),
        ("GET", "/sites/{name}/keys", get(hosts::site_keys)),
        ("GET", "/hosts", get(hosts::hosts)),
        ("GET", "/events", get(records::events)),
        ("GET", "/logs", get(records::logs)),
        ("GET", "/streams/{application}/{topic}", get(streams::read)),
        ("POST", "/streams/{application}/{topic}", post(streams::publish)),
        ("PATCH", "/hosts/{site}/{host}/labels", patch(hosts::label_host)),
        ("POST", "/secrets", post(secrets::set)),
        ("GET", "/secrets", get(secrets::list)),
        ("GET", "/secrets/{name}", get(secrets::describe)),
        ("DELETE", "/secrets/{name}", delete(secrets::delete)),
        ("POST", "/secrets/{name}/reveal", post(secrets::reveal)),
        ("PATCH", "/{kind}/{name}/labels", patch(objects::label_object)),
        (
            "GET",
            "/deployments/{name}/rollout",
            get(rollouts::rollout_status),
        ),
        (
            "POST",
            "/deployments/{name}/rollout/undo",
            post(rollouts::rollout_undo),
        ),
        (
            "POST",
            "/deployments/{name}/rollout/{command}",
            post(rollouts::rollout_command),
        ),
        ("POST", "/deployments/{name}/bundle", post(bundles::bundle)),
        ("GET", "/{kind}", get(objects::list)),
        ("GET", "/{kind}/{name}", get(objects::get_one)),
        ("DELETE", "/{kind}/{name}", delete(objects::delete_one)),
    ]
}

/// The (method, path) of every route the API serves under `/api/v1`, and of
/// `/metrics` and `/healthz` (paths outside it start with `..`).
pub fn served_routes() -> Vec<(&'static str, &'static str)> {
    let mut served: Vec<_> = protected_routes()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    served.extend([
        ("GET", "/openapi.json"),
        ("GET", "../metrics"),
        ("GET", "../healthz"),
    ]);
    served
}

pub fn router(state: AppState) -> Router {
    let mut protected = Router::new();
    for (_, path, handler) in protected_routes() {
        protected = protected.route(path, handler);
    }
    let protected = protected.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let v1 = Router::new()
        .route("/openapi.json", get(openapi::document))
        .merge(protected)
        .fallback(not_found);
    // Prometheus scrapes with the same bearer token as every other client.
    let metrics = Router::new()
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(metrics)
        .nest("/api/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(limit_body))
        .with_state(state)
}

/// How much of an oversized body is read and thrown away so that its 413
/// reaches the client: over HTTP/2, a response sent while the client is
/// still sending ends in a stream reset that clients report as a broken
/// pipe. Past this, the stream is reset after all.
const DRAIN_LIMIT: usize = 4 * BODY_LIMIT;

/// Reads the body up to `BODY_LIMIT`; a larger one is answered 413 once
/// it has been sent (up to `DRAIN_LIMIT`), over HTTP/1.1 and HTTP/2 alike.
async fn limit_body(request: Request, next: Next) -> Response {
    use futures_util::StreamExt;
    let (parts, body) = request.into_parts();
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return ApiError::BadRequest("the request body was cut off".to_string()).into_response();
        };
        total += chunk.len();
        if total <= BODY_LIMIT {
            kept.extend_from_slice(&chunk);
        } else if total > DRAIN_LIMIT {
            break;
        }
    }
    if total > BODY_LIMIT {
        return ApiError::PayloadTooLarge.into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(kept)))
        .await
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint (the API lives under /api/v1; see /api/v1/openapi.json)".to_string())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    let Some(token) = token else {
        return ApiError::Unauthorized.into_response();
    };
    match state.store.api_token_name(&auth::hash_token(token)).await {
        Ok(Some(name)) => {
            request.extensions_mut().insert(Actor(name));
            next.run(request).await
        }
        Ok(None) => ApiError::Unauthorized.into_response(),
        Err(err) => ApiError::from(err).into_response(),
    }
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme is
/// case-insensitive (RFC 7235 §2.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(super) fn parse_kind(text: &str) -> Result<Kind, ApiError> {
    Kind::ALL.into_iter().find(|k| k.plural() == text).ok_or_else(|| {
        ApiError::NotFound(format!(
            "unknown kind {text:?} (use sites, applications or deployments)"
        ))
    })
}

pub(super) fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true" | "") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{name}={other:?}: use true or false"
        ))),
    }
}

/// A query parameter that must be a whole number of 0 or more.
pub(super) fn whole_number(
    query: &HashMap<String, String>,
    name: &str,
    default: i64,
) -> Result<i64, ApiError> {
    match query.get(name) {
        None => Ok(default),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::BadRequest(format!("{name}: {text:?} is not a whole number"))),
    }
}

pub(super) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(format!("could not read the request body: {rejection}"))
        }
    })
}

/// A JSON body that may be left out: an empty body is `T`'s default. `what`
/// names it in the error (`a bundle request`).
pub(super) fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<T, ApiError> {
    let body = body_bytes(body)?;
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("the body is not {what}: {e}")))
}

pub(super) fn label_change(body: Result<Bytes, BytesRejection>) -> Result<LabelChange, ApiError> {
    let body = body_bytes(body)?;
    let change: LabelChange = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not a label change: {e}")))?;
    change.check().map_err(ApiError::BadRequest)?;
    if change.set.is_empty() && change.remove.is_empty() {
        return Err(ApiError::BadRequest("no labels to set or remove".to_string()));
    }
    Ok(change)
}
