//! The operator REST API under `/api/v1`, behind bearer-token
//! authentication: the router, the authentication and body-limit layers and
//! the helpers the routes share. Each route lives with its concept:
//! `objects` (apply, plan, get, list, delete, history, labels), `hosts`
//! (join tokens, hosts, host labels), `records` (events and logs),
//! `secrets` (set, list, describe, reveal, delete),
//! `rollouts`, `overview` (the fleet at a glance), and `metrics`
//! (Prometheus, outside `/api/v1`).

mod access;
mod bundles;
mod error;
mod hosts;
mod metrics;
mod objects;
mod openapi;
mod overview;
mod policy;
mod records;
mod rollouts;
mod secrets;
mod streams;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use outpost_api::manifest::Kind;
use outpost_api::selector::Selector;
use outpost_api::wire::{LabelChange, StoredObject};

pub use error::ApiError;
pub use policy::{Gate, Principal, RefusalBudget};

use outpost_api::access::Access;
use policy::Guard;

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
    /// Sign-in with an OpenID Connect provider, if configured.
    pub oidc: Option<Arc<crate::oidc::Oidc>>,
    /// How many refused tokens each address may still leave in the audit trail.
    pub refusals: Arc<policy::RefusalBudget>,
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

    /// The stored object the caller names, if it may see it; otherwise
    /// 404, whether or not it exists.
    async fn visible(&self, principal: &Principal, kind: Kind, name: &str) -> Result<StoredObject, ApiError> {
        let stored = principal.object_name(kind, name)?;
        self.store
            .get(kind, &stored)
            .await?
            .filter(|object| principal.sees(object))
            .ok_or_else(|| ApiError::NotFound(format!("{kind} {name:?} not found")))
    }

    /// The names of the sites the caller's site selector reaches; `None`
    /// (without listing them) when it reaches every site.
    async fn visible_sites(&self, principal: &Principal) -> Result<Option<HashSet<String>>, ApiError> {
        if principal.sites.is_none() {
            return Ok(None);
        }
        Ok(Some(
            self.store
                .list(Kind::Site)
                .await?
                .into_iter()
                .filter(|site| principal.sees_site(&site.metadata.labels))
                .map(|site| site.metadata.name)
                .collect(),
        ))
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
        let (sites, tenants) = if objects.iter().any(|o| o.kind == Kind::Deployment) {
            let tenants: HashMap<String, Selector> = self
                .store
                .list(Kind::Tenant)
                .await?
                .into_iter()
                .filter_map(|tenant| {
                    let spec: outpost_api::manifest::TenantSpec = serde_json::from_value(tenant.spec).ok()?;
                    Some((tenant.metadata.name, spec.sites))
                })
                .collect();
            (self.store.list(Kind::Site).await?, tenants)
        } else {
            Default::default()
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
                    let Some(selector) =
                        outpost_api::tenancy::confine(&object.metadata.name, &selector, |tenant| {
                            tenants.get(tenant)
                        })
                    else {
                        continue;
                    };
                    let selected: Vec<String> = sites
                        .iter()
                        .filter(|s| selector.matches(&s.metadata.labels))
                        .map(|s| s.metadata.name.clone())
                        .collect();
                    serde_json::to_value(snapshot.deployment(&object.metadata.name, &selected))
                }
                (Kind::Site | Kind::Deployment, None) | (Kind::Tenant, _) => continue,
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

/// Who made a request: the name of the API token it carried (the policy
/// layer puts it and the whole `Principal` in the request).
#[derive(Debug, Clone)]
pub(super) struct Actor(pub(super) String);

/// Every route under `/api/v1` but the OpenAPI document: (method, path,
/// gate, handler). All need a token but sign-in (`Gate::Public`). The
/// router is built from this list, each route behind the policy layer with
/// its gate, and the OpenAPI document must describe exactly these (a test
/// holds the two together).
fn api_routes() -> Vec<(&'static str, &'static str, Gate, MethodRouter<AppState>)> {
    use Access::*;
    use Gate::{Manifests, Needs, Object, Public};
    use axum::routing::{delete, patch};
    vec![
        ("POST", "/apply", Manifests, post(objects::apply)),
        ("POST", "/plan", Manifests, post(objects::plan)),
        (
            "GET",
            "/applications/{name}/history",
            Needs(Read),
            get(objects::history),
        ),
        (
            "POST",
            "/sites/{name}/tokens",
            Needs(Edge),
            post(hosts::create_join_token),
        ),
        (
            "POST",
            "/sites/{name}/rotate-keys",
            Needs(Edge),
            post(hosts::rotate_keys),
        ),
        ("GET", "/sites/{name}/keys", Needs(Read), get(hosts::site_keys)),
        ("GET", "/hosts", Needs(Read), get(hosts::hosts)),
        ("GET", "/fleet/overview", Needs(Read), get(overview::overview)),
        ("GET", "/fleet/sites", Needs(Read), get(overview::sites)),
        ("GET", "/events", Needs(Read), get(records::events)),
        ("GET", "/logs", Needs(Read), get(records::logs)),
        (
            "GET",
            "/streams/{application}/{topic}",
            Needs(Read),
            get(streams::read),
        ),
        (
            "POST",
            "/streams/{application}/{topic}",
            Needs(Deploy),
            post(streams::publish),
        ),
        (
            "PATCH",
            "/hosts/{site}/{host}/labels",
            Needs(Edge),
            patch(hosts::label_host),
        ),
        ("POST", "/secrets", Needs(SecretWrite), post(secrets::set)),
        ("GET", "/secrets", Needs(Read), get(secrets::list)),
        ("GET", "/secrets/{name}", Needs(Read), get(secrets::describe)),
        (
            "DELETE",
            "/secrets/{name}",
            Needs(SecretWrite),
            delete(secrets::delete),
        ),
        (
            "POST",
            "/secrets/{name}/reveal",
            Needs(SecretRead),
            post(secrets::reveal),
        ),
        ("GET", "/login", Public, get(access::login_config)),
        ("POST", "/login", Public, post(access::login)),
        (
            "POST",
            "/login/links",
            Needs(Tokens),
            post(access::create_sign_in_link),
        ),
        ("POST", "/login/link", Public, post(access::use_sign_in_link)),
        ("DELETE", "/login", Needs(Read), delete(access::sign_out)),
        ("POST", "/tokens", Needs(Tokens), post(access::create_token)),
        ("GET", "/tokens", Needs(Tokens), get(access::list_tokens)),
        (
            "DELETE",
            "/tokens/{name}",
            Needs(Tokens),
            delete(access::revoke_token),
        ),
        ("GET", "/audit", Needs(Audit), get(access::audit)),
        ("GET", "/audit/verify", Needs(Audit), get(access::verify_audit)),
        ("GET", "/ca", Needs(Fleet), get(access::ca_status)),
        ("POST", "/ca/rotate", Needs(Edge), post(access::rotate_ca)),
        ("POST", "/ca/retire", Needs(Edge), post(access::retire_ca)),
        ("POST", "/block", Needs(Edge), post(access::block)),
        ("POST", "/unblock", Needs(Edge), post(access::unblock)),
        ("GET", "/blocks", Needs(Fleet), get(access::blocks)),
        (
            "PATCH",
            "/{kind}/{name}/labels",
            Object,
            patch(objects::label_object),
        ),
        (
            "GET",
            "/deployments/{name}/rollout",
            Needs(Read),
            get(rollouts::rollout_status),
        ),
        (
            "POST",
            "/deployments/{name}/rollout/undo",
            Needs(Deploy),
            post(rollouts::rollout_undo),
        ),
        (
            "POST",
            "/deployments/{name}/rollout/{command}",
            Needs(Deploy),
            post(rollouts::rollout_command),
        ),
        (
            "POST",
            "/deployments/{name}/bundle",
            Needs(Deploy),
            post(bundles::bundle),
        ),
        ("GET", "/{kind}", Needs(Read), get(objects::list)),
        ("GET", "/{kind}/{name}", Needs(Read), get(objects::get_one)),
        ("DELETE", "/{kind}/{name}", Object, delete(objects::delete_one)),
    ]
}

/// Builds a route behind the policy layer: `action` names it in the audit
/// trail.
fn guarded(
    state: &AppState,
    action: String,
    gate: Gate,
    handler: MethodRouter<AppState>,
) -> MethodRouter<AppState> {
    let guard = Guard {
        state: state.clone(),
        gate,
        action: action.into(),
    };
    handler.route_layer(middleware::from_fn_with_state(guard, policy::enforce))
}

/// The (method, path) of every route the API serves under `/api/v1`, and of
/// `/metrics` and `/healthz` (paths outside it start with `..`).
pub fn served_routes() -> Vec<(&'static str, &'static str)> {
    let mut served: Vec<_> = api_routes()
        .into_iter()
        .map(|(method, path, _, _)| (method, path))
        .collect();
    served.extend([
        ("GET", "/openapi.json"),
        ("GET", "../metrics"),
        ("GET", "../healthz"),
    ]);
    served
}

pub fn router(state: AppState) -> Router {
    let mut v1 = Router::new().route("/openapi.json", get(openapi::document));
    for (method, path, gate, handler) in api_routes() {
        v1 = v1.route(path, guarded(&state, format!("{method} {path}"), gate, handler));
    }
    let v1 = v1.fallback(not_found);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // Prometheus scrapes with a token like every other client.
        .route(
            "/metrics",
            guarded(
                &state,
                "GET /metrics".to_string(),
                Gate::Needs(Access::Fleet),
                get(metrics::metrics),
            ),
        )
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

pub(super) fn parse_kind(text: &str) -> Result<Kind, ApiError> {
    Kind::ALL.into_iter().find(|k| k.plural() == text).ok_or_else(|| {
        ApiError::NotFound(format!(
            "unknown kind {text:?} (use sites, applications, deployments or tenants)"
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

/// A JSON body; `what` names it in the error (`a secret (name, values)`).
pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(&body_bytes(body)?)
        .map_err(|e| ApiError::BadRequest(format!("the body is not {what}: {e}")))
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
