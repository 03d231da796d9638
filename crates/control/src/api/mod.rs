//! The operator REST API under `/api/v1`: apply, get, list, delete and
//! application history, behind bearer-token authentication.

mod error;
mod openapi;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use outpost_api::manifest::Kind;
use outpost_api::selector::Selector;
use outpost_api::wire::{
    ApplyAction, ApplyRequest, ApplyResponse, HostList, JoinToken, JoinTokenRequest, LabelChange, ObjectList,
    SourceFile, StoredObject,
};
use outpost_api::{parse_documents, parse_files};

pub use error::ApiError;

use crate::auth;
use crate::fleet::Fleet;
use crate::pki::Pki;
use crate::status::Snapshot;
use crate::store::{ApplyOptions, Storage};

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
        if !objects
            .iter()
            .any(|o| matches!(o.kind, Kind::Site | Kind::Deployment))
        {
            return Ok(objects);
        }
        let snapshot = Snapshot::take(self.store.as_ref(), &self.fleet).await?;
        let sites = if objects.iter().any(|o| o.kind == Kind::Deployment) {
            self.store.list(Kind::Site).await?
        } else {
            Vec::new()
        };
        for object in &mut objects {
            let status = match object.kind {
                Kind::Site => serde_json::to_value(snapshot.site(&object.metadata.name)),
                Kind::Deployment => {
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
                Kind::Application => continue,
            };
            object.status = status.ok();
        }
        Ok(objects)
    }
}

/// Who made a request: the name of the API token it carried.
#[derive(Debug, Clone)]
struct Actor(String);

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/apply", post(apply))
        .route("/plan", post(plan))
        .route("/applications/{name}/history", get(history))
        .route("/sites/{name}/tokens", post(create_join_token))
        .route("/hosts", get(hosts))
        .route("/events", get(events))
        .route("/logs", get(logs))
        .route("/hosts/{site}/{host}/labels", axum::routing::patch(label_host))
        .route("/{kind}/{name}/labels", axum::routing::patch(label_object))
        .route("/deployments/{name}/rollout", get(rollout_status))
        .route("/deployments/{name}/rollout/undo", post(rollout_undo))
        .route("/deployments/{name}/rollout/{command}", post(rollout_command))
        .route("/{kind}", get(list))
        .route("/{kind}/{name}", get(get_one).delete(delete_one))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let v1 = Router::new()
        .route("/openapi.json", get(openapi::document))
        .merge(protected)
        .fallback(not_found);
    // Prometheus scrapes with the same bearer token as every other client.
    let metrics = Router::new()
        .route("/metrics", get(metrics))
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

fn parse_kind(text: &str) -> Result<Kind, ApiError> {
    Kind::ALL.into_iter().find(|k| k.plural() == text).ok_or_else(|| {
        ApiError::NotFound(format!(
            "unknown kind {text:?} (use sites, applications or deployments)"
        ))
    })
}

fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true" | "") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{name}={other:?}: use true or false"
        ))),
    }
}

/// The `Idempotency-Key` header of an apply: 1 to 128 visible ASCII characters.
fn request_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key))
        }
        _ => Err(ApiError::BadRequest(format!(
            "the {IDEMPOTENCY_KEY} header must be 1 to 128 visible ASCII characters"
        ))),
    }
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(format!("could not read the request body: {rejection}"))
        }
    })
}

/// `POST /api/v1/apply`: a JSON `ApplyRequest` (several named files), or a
/// raw YAML or JSON stream (`?source=NAME` names it in diagnostics).
async fn apply(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ApplyResponse>, ApiError> {
    let body = body_bytes(body)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = || {
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::BadRequest("the body is not UTF-8 text".to_string()))
    };
    let request = match content_type.as_str() {
        "application/json" => serde_json::from_slice::<ApplyRequest>(&body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not an apply request: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/plain" => ApplyRequest {
            files: vec![SourceFile {
                name: query
                    .get("source")
                    .cloned()
                    .unwrap_or_else(|| "request".to_string()),
                content: text()?,
            }],
            dry_run: false,
        },
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type {other:?} is not accepted (use application/json for an apply request, or application/yaml)"
            )));
        }
    };
    let dry_run = request.dry_run || flag(&query, "dryRun")?;
    if request.files.is_empty() {
        return Err(ApiError::BadRequest("nothing to apply: no files".to_string()));
    }
    let documents = parse_files(
        request
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.content.as_str())),
    )
    .map_err(ApiError::Invalid)?;
    let request_key = request_key(&headers)?;
    let options = ApplyOptions { dry_run, request_key };
    let results = state.store.apply(&documents, &actor, options).await?;
    let changed: Vec<_> = results
        .iter()
        .filter(|r| !dry_run && r.action != ApplyAction::Unchanged)
        .collect();
    for result in &changed {
        tracing::info!(%actor, kind = %result.kind, name = %result.name, action = result.action.as_str(), generation = result.generation, "applied");
    }
    let changed: Vec<(Kind, &str)> = changed.iter().map(|r| (r.kind, r.name.as_str())).collect();
    state.recompute_changed(&changed).await;
    Ok(Json(ApplyResponse { dry_run, results }))
}

/// `POST /api/v1/plan`: what applying the batch (an `ApplyRequest`) would
/// make each site run, per deployment and wave. Stores nothing.
async fn plan(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<outpost_api::wire::PlanResponse>, ApiError> {
    let body = body_bytes(body)?;
    let request: ApplyRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not an apply request: {e}")))?;
    let documents = parse_files(
        request
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.content.as_str())),
    )
    .map_err(ApiError::Invalid)?;
    // The same checks as an apply, inside a transaction that is rolled back.
    let dry_run = ApplyOptions {
        dry_run: true,
        request_key: None,
    };
    state.store.apply(&documents, &actor, dry_run).await?;
    let mut inputs = state.fleet.inputs(None).await?;
    let concerned = crate::plan::concerned(&inputs, &documents);
    crate::plan::overlay(&mut inputs, &documents);
    let current = state.store.site_states().await?;
    Ok(Json(crate::plan::plan(&inputs, &current, &concerned)))
}

/// `GET /api/v1/{kind}?selector=…`: objects whose labels match.
async fn list(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<ObjectList>, ApiError> {
    let kind = parse_kind(&kind)?;
    let selector = match query.get("selector") {
        Some(text) => text
            .parse::<Selector>()
            .map_err(|e| ApiError::BadRequest(format!("invalid selector {text:?}: {e}")))?,
        None => Selector::all(),
    };
    let items: Vec<StoredObject> = state
        .store
        .list(kind)
        .await?
        .into_iter()
        .filter(|object| selector.matches(&object.metadata.labels))
        .collect();
    let items = state.with_status(items).await?;
    Ok(Json(ObjectList { items }))
}

async fn get_one(
    State(state): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<StoredObject>, ApiError> {
    let kind = parse_kind(&kind)?;
    let object = state
        .store
        .get(kind, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{kind} {name:?} not found")))?;
    let mut objects = state.with_status(vec![object]).await?;
    objects
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::Internal("status lost the object".to_string()))
}

/// `DELETE /api/v1/{kind}/{name}[?cascade=true]`: a site with hosts is
/// refused unless `cascade`, which removes them and revokes their
/// certificates at once.
async fn delete_one(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path((kind, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<StoredObject>, ApiError> {
    let kind = parse_kind(&kind)?;
    let cascade = flag(&query, "cascade")?;
    let deleted = state.store.delete(kind, &name, cascade, &actor).await?;
    state.revocations.add(&deleted.revoked);
    tracing::info!(%actor, %kind, %name, revoked = deleted.revoked.len(), "deleted");
    state.recompute_changed(&[(kind, name.as_str())]).await;
    Ok(Json(deleted.object))
}

async fn history(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<outpost_api::wire::ApplicationVersion>>, ApiError> {
    Ok(Json(state.store.application_history(&name).await?))
}

/// The longest a join token may live.
const MAX_JOIN_TOKEN_TTL: outpost_api::quantity::Duration = outpost_api::quantity::Duration(30 * 86_400_000);

/// `POST /api/v1/sites/{name}/tokens`: a single-use join token for a new host.
async fn create_join_token(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path(site): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<JoinToken>, ApiError> {
    let body = body_bytes(body)?;
    let request: JoinTokenRequest = if body.is_empty() {
        JoinTokenRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not a token request: {e}")))?
    };
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

/// `GET /api/v1/hosts[?site=NAME]`: enrolled hosts with their facts and instances.
async fn hosts(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<HostList>, ApiError> {
    if let Some(site) = query.get("site")
        && state.store.get(Kind::Site, site).await?.is_none()
    {
        return Err(crate::store::StoreError::NotFound {
            kind: Kind::Site,
            name: site.clone(),
        }
        .into());
    }
    let snapshot = Snapshot::take(state.store.as_ref(), &state.fleet).await?;
    let items = snapshot
        .hosts()
        .into_iter()
        .filter(|h| query.get("site").is_none_or(|site| *site == h.site))
        .collect();
    Ok(Json(HostList { items }))
}

/// `GET /metrics`: the fleet in the Prometheus text format.
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snapshot = Snapshot::take(state.store.as_ref(), &state.fleet).await?;
    let hosts = snapshot.hosts();
    let mut out = outpost_api::metrics::Exposition::default();
    let online = hosts.iter().filter(|h| h.online).count();
    out.family(
        "outpost_hosts",
        "gauge",
        "Enrolled hosts, by whether their agent is connected.",
    )
    .sample("outpost_hosts", &[("state", "online")], online as f64)
    .sample(
        "outpost_hosts",
        &[("state", "offline")],
        (hosts.len() - online) as f64,
    );
    out.family(
        "outpost_enrollments_failed_total",
        "counter",
        "Enrollments refused since start (bad, unknown, used or expired join tokens, taken host names).",
    )
    .sample(
        "outpost_enrollments_failed_total",
        &[],
        state.enrollments.failed_total() as f64,
    );
    out.family(
        "outpost_enrollments_throttled_total",
        "counter",
        "Enrollment attempts refused because their address had failed too often.",
    )
    .sample(
        "outpost_enrollments_throttled_total",
        &[],
        state.enrollments.throttled_total() as f64,
    );
    let mut states: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for state in hosts.iter().flat_map(|h| h.instances.values()) {
        *states.entry(state.as_str()).or_default() += 1;
    }
    out.family(
        "outpost_instances",
        "gauge",
        "Instances as their hosts last reported them, by state.",
    );
    for (state, count) in states {
        out.sample("outpost_instances", &[("state", state)], count as f64);
    }
    type PerHost = (
        &'static str,
        &'static str,
        &'static str,
        fn(&outpost_api::wire::HostInfo) -> f64,
    );
    let per_host: [PerHost; 4] = [
        (
            "outpost_host_online",
            "gauge",
            "1 while the host's agent is connected.",
            |h| u8::from(h.online).into(),
        ),
        (
            "outpost_agent_received_bytes_total",
            "counter",
            "Bytes received from the host's agent, counted at the socket (TLS included); booked every heartbeat and when a session ends.",
            |h| h.bytes_received as f64,
        ),
        (
            "outpost_agent_sent_bytes_total",
            "counter",
            "Bytes sent to the host's agent, counted at the socket (TLS included); booked every heartbeat and when a session ends.",
            |h| h.bytes_sent as f64,
        ),
        (
            "outpost_agent_dropped_records_total",
            "counter",
            "Events, log chunks and samples the host's agent dropped because its queue was full.",
            |h| h.dropped as f64,
        ),
    ];
    for (name, kind, help, value) in per_host {
        out.family(name, kind, help);
        for host in &hosts {
            out.sample(name, &[("site", &host.site), ("host", &host.name)], value(host));
        }
    }
    let samples = state.store.latest_samples().await?;
    out.family(
        "outpost_host_cpu_cores",
        "gauge",
        "Cores in use on the host, averaged over its last sampling period.",
    );
    for (site, host, sample) in &samples {
        out.sample(
            "outpost_host_cpu_cores",
            &[("site", site), ("host", host)],
            sample.host_cpu,
        );
    }
    out.family(
        "outpost_host_memory_bytes",
        "gauge",
        "Memory in use on the host at its last sample.",
    );
    for (site, host, sample) in &samples {
        let memory = sample.host_memory_bytes as f64;
        out.sample(
            "outpost_host_memory_bytes",
            &[("site", site), ("host", host)],
            memory,
        );
    }
    type Field = fn(&outpost_api::telemetry::InstanceMetrics) -> f64;
    let per_instance: [(&str, &str, Field); 2] = [
        (
            "outpost_instance_cpu_cores",
            "Cores an instance used, averaged over its host's last sampling period.",
            |i| i.cpu,
        ),
        (
            "outpost_instance_memory_bytes",
            "Memory an instance used at its host's last sample.",
            |i| i.memory_bytes as f64,
        ),
    ];
    for (name, help, value) in per_instance {
        out.family(name, "gauge", help);
        for (site, host, sample) in &samples {
            for i in &sample.instances {
                let labels = [
                    ("site", site.as_str()),
                    ("host", host),
                    ("application", &i.application),
                    ("instance", &i.instance),
                ];
                out.sample(name, &labels, value(i));
            }
        }
    }
    Ok((
        [(header::CONTENT_TYPE, outpost_api::metrics::CONTENT_TYPE)],
        out.finish(),
    )
        .into_response())
}

/// The most events or log lines one request returns.
const MAX_RECORDS: i64 = 10_000;

/// Reads `site`, `application`, `service`, `since` (RFC 3339), `after` and
/// `limit` from a query string.
fn record_query(query: &HashMap<String, String>) -> Result<crate::store::RecordQuery, ApiError> {
    let since = match query.get("since") {
        Some(since) => {
            let at = time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339)
                .map_err(|_| ApiError::BadRequest(format!("since: {since:?} is not an RFC 3339 time")))?;
            Some(
                at.to_offset(time::UtcOffset::UTC)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            )
        }
        None => None,
    };
    let number = |name: &str, default: i64| -> Result<i64, ApiError> {
        match query.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::BadRequest(format!("{name}: {text:?} is not a whole number"))),
        }
    };
    Ok(crate::store::RecordQuery {
        site: query.get("site").cloned(),
        application: query.get("application").cloned(),
        service: query.get("service").cloned(),
        since,
        after: number("after", 0)?,
        limit: number("limit", 1000)?.clamp(1, MAX_RECORDS),
    })
}

/// `GET /api/v1/events`: what happened at sites, oldest first.
async fn events(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<outpost_api::telemetry::EventList>, ApiError> {
    let items = state.store.events(&record_query(&query)?).await?;
    Ok(Json(outpost_api::telemetry::EventList { items }))
}

/// `GET /api/v1/logs?application=A`: log lines sites uploaded, oldest first.
async fn logs(
    State(state): State<AppState>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<outpost_api::telemetry::LogList>, ApiError> {
    let query = record_query(&raw)?;
    let Some(application) = &query.application else {
        return Err(ApiError::BadRequest(
            "application: which application's logs?".to_string(),
        ));
    };
    if state.store.get(Kind::Application, application).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "Application {application:?} not found"
        )));
    }
    if raw.get("live").is_some_and(|live| live == "true") {
        return live_logs(&state, &query).await.map(Json);
    }
    let items = state.store.log_lines(&query).await?;
    Ok(Json(outpost_api::telemetry::LogList { items }))
}

/// How long the hosts of a site get to answer a live request for logs.
const LIVE_LOGS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks every connected host of the query's site for its logs now.
async fn live_logs(
    state: &AppState,
    query: &crate::store::RecordQuery,
) -> Result<outpost_api::telemetry::LogList, ApiError> {
    let Some(site) = &query.site else {
        return Err(ApiError::BadRequest(
            "live: logs come live from one site; add site=NAME".to_string(),
        ));
    };
    let since_unix = query
        .since
        .as_deref()
        .and_then(|since| {
            time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339).ok()
        })
        .map_or(0, |at| at.unix_timestamp());
    let mut asked = Vec::new();
    for host in state.store.site_hosts(site).await? {
        let Some(sender) = state.fleet.live_logs(site, &host.name) else {
            continue;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = crate::fleet::LiveLogs {
            application: query.application.clone().unwrap_or_default(),
            service: query.service.clone().unwrap_or_default(),
            since_unix,
            tail: query.limit.clamp(1, 1000) as u32,
            reply,
        };
        if sender.send(request).await.is_ok() {
            asked.push((host.name, answer));
        }
    }
    if asked.is_empty() {
        return Err(ApiError::Conflict(format!(
            "no host of site {site:?} is connected now (offline, or polling); without live, `outpost logs` shows what it uploaded"
        )));
    }
    let mut items = Vec::new();
    for (host, answer) in asked {
        let chunks = match tokio::time::timeout(LIVE_LOGS_TIMEOUT, answer).await {
            Ok(Ok(Ok(chunks))) => chunks,
            Ok(Ok(Err(why))) => {
                return Err(ApiError::Conflict(format!(
                    "host {host:?} could not read its logs: {why}"
                )));
            }
            Ok(Err(_)) | Err(_) => {
                return Err(ApiError::Conflict(format!(
                    "host {host:?} did not answer within {}s",
                    LIVE_LOGS_TIMEOUT.as_secs()
                )));
            }
        };
        for chunk in chunks {
            for line in chunk.lines {
                items.push(outpost_api::telemetry::StoredLogLine {
                    id: 0,
                    site: site.clone(),
                    host: host.clone(),
                    application: chunk.application.clone(),
                    service: chunk.service.clone(),
                    instance: chunk.instance.clone(),
                    container: chunk.container.clone(),
                    line,
                });
            }
        }
    }
    items.sort_by_key(|l| {
        time::OffsetDateTime::parse(&l.line.at, &time::format_description::well_known::Rfc3339).ok()
    });
    Ok(outpost_api::telemetry::LogList { items })
}

fn label_change(body: Result<Bytes, BytesRejection>) -> Result<LabelChange, ApiError> {
    let body = body_bytes(body)?;
    let change: LabelChange = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not a label change: {e}")))?;
    change.check().map_err(ApiError::BadRequest)?;
    if change.set.is_empty() && change.remove.is_empty() {
        return Err(ApiError::BadRequest("no labels to set or remove".to_string()));
    }
    Ok(change)
}

/// `PATCH /api/v1/{kind}/{name}/labels`: the operator's labels on an object.
async fn label_object(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path((kind, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StoredObject>, ApiError> {
    let kind = parse_kind(&kind)?;
    let change = label_change(body)?;
    let object = state.store.update_labels(kind, &name, &change, &actor).await?;
    tracing::info!(%actor, %kind, %name, generation = object.metadata.generation, "labelled");
    state.recompute_changed(&[(kind, name.as_str())]).await;
    Ok(Json(object))
}

/// `PATCH /api/v1/hosts/{site}/{host}/labels`: the operator's labels on a
/// host; discovered facts cannot be set.
async fn label_host(
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

/// `GET /api/v1/deployments/{name}/rollout`: the rollout, every site's
/// state and the deployment's rollout history.
async fn rollout_status(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<outpost_api::wire::RolloutStatus>, ApiError> {
    let object = state
        .store
        .get(Kind::Deployment, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Deployment {name:?} not found")))?;
    let sites = state
        .with_status(vec![object])
        .await?
        .pop()
        .and_then(|o| o.status)
        .and_then(|s| serde_json::from_value::<outpost_api::wire::DeploymentStatus>(s).ok())
        .map(|s| s.sites)
        .unwrap_or_default();
    let rollout = state.store.rollouts().await?.remove(&name);
    let history = state
        .store
        .rollout_history(&name)
        .await?
        .into_iter()
        .map(
            |(version, started_at, outcome)| outpost_api::wire::RolloutRecord {
                version,
                started_at,
                outcome,
            },
        )
        .collect();
    Ok(Json(outpost_api::wire::RolloutStatus {
        deployment: name,
        rollout,
        sites,
        history,
    }))
}

/// `POST /api/v1/deployments/{name}/rollout/{promote|pause|resume|abort}`.
async fn rollout_command(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path((name, command)): Path<(String, String)>,
) -> Result<Json<outpost_api::rollout::RolloutState>, ApiError> {
    use outpost_api::rollout::Command;
    let command = match command.as_str() {
        "promote" => Command::Promote,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "abort" => Command::Abort,
        other => {
            return Err(ApiError::NotFound(format!(
                "no rollout command {other:?} (use promote, pause, resume, abort or undo)"
            )));
        }
    };
    if state.store.get(Kind::Deployment, &name).await?.is_none() {
        return Err(ApiError::NotFound(format!("Deployment {name:?} not found")));
    }
    let rollout = state.fleet.command(&name, command).await?;
    tracing::info!(%actor, deployment = %name, ?command, "rollout command");
    Ok(Json(rollout))
}

/// `POST /api/v1/deployments/{name}/rollout/undo`: pins the deployment to
/// an earlier version (the one before the current rollout by default),
/// which rolls out like any change.
async fn rollout_undo(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ApplyResponse>, ApiError> {
    let body = body_bytes(body)?;
    let request: outpost_api::wire::UndoRequest = if body.is_empty() {
        Default::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not an undo request: {e}")))?
    };
    let object = state
        .store
        .get(Kind::Deployment, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Deployment {name:?} not found")))?;
    let target = match request.to_version {
        Some(version) => version,
        None => {
            let history = state.store.rollout_history(&name).await?;
            let current = history.last().map(|(v, _, _)| v.clone());
            history
                .iter()
                .rev()
                .map(|(v, _, _)| v.clone())
                .find(|v| Some(v) != current.as_ref())
                .ok_or_else(|| {
                    ApiError::Conflict(format!(
                        "deployment {name:?} has no earlier version to go back to"
                    ))
                })?
        }
    };
    let mut manifest = object.manifest_json();
    manifest["spec"]["version"] = serde_json::Value::String(target.clone());
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| ApiError::Internal(e.to_string()))?;
    let documents = parse_documents(&format!("undo of {name}"), &text).map_err(ApiError::Invalid)?;
    let results = state
        .store
        .apply(&documents, &actor, ApplyOptions::default())
        .await?;
    tracing::info!(%actor, deployment = %name, version = %target, "rollout undo");
    state.recompute().await;
    Ok(Json(ApplyResponse {
        dry_run: false,
        results,
    }))
}
