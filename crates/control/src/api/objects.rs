//! Sites, applications, deployments and tenants: apply (with its
//! idempotency key), plan, list, get, delete, history and labels. An
//! application owner's names are moved into its namespace on the way in
//! and out of it on the way out (`Principal::object_name`, `shown`).

use std::collections::{BTreeSet, HashMap};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::{Extension, Json};
use outpost_api::manifest::Kind;
use outpost_api::parse_files;
use outpost_api::selector::Selector;
use outpost_api::wire::{ApplyAction, ApplyRequest, ApplyResponse, ObjectList, SourceFile, StoredObject};

use super::policy::audited;
use super::{
    Actor, ApiError, AppState, IDEMPOTENCY_KEY, Principal, body_bytes, flag, label_change, parse_kind,
};
use crate::store::ApplyOptions;

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

/// `POST /api/v1/apply`: a JSON `ApplyRequest` (several named files), or a
/// raw YAML or JSON stream (`?source=NAME` names it in diagnostics).
pub(super) async fn apply(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
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
    let documents = parse_request(&request, &principal)?;
    check_quotas(&state, &documents).await?;
    let request_key = request_key(&headers)?;
    let options = ApplyOptions { dry_run, request_key };
    let mut results = state.store.apply(&documents, &actor, options).await?;
    let changed: Vec<_> = results
        .iter()
        .filter(|r| !dry_run && r.action != ApplyAction::Unchanged)
        .collect();
    for result in &changed {
        tracing::info!(%actor, kind = %result.kind, name = %result.name, action = result.action.as_str(), generation = result.generation, "applied");
    }
    let objects = changed
        .iter()
        .map(|r| format!("{}/{} generation {}", r.kind, r.name, r.generation))
        .collect();
    let changed: Vec<(Kind, &str)> = changed.iter().map(|r| (r.kind, r.name.as_str())).collect();
    state.recompute_changed(&changed).await;
    for result in &mut results {
        result.name = principal.shown_name(&result.name).to_string();
    }
    Ok(audited(Json(ApplyResponse { dry_run, results }), objects))
}

/// Refuses a batch that would take a tenant past its quotas on any site,
/// computed as `plan` does: the stored state with the batch laid over it.
async fn check_quotas(state: &AppState, documents: &[outpost_api::Document]) -> Result<(), ApiError> {
    let tenant_of = |document: &outpost_api::Document| match document.manifest.kind() {
        Kind::Tenant => Some(document.manifest.name().to_string()),
        _ => document.manifest.metadata().name.tenant().map(str::to_string),
    };
    let tenants: BTreeSet<String> = documents.iter().filter_map(tenant_of).collect();
    // Only a tenant with quotas costs a compile of the fleet.
    let mut limited = false;
    for tenant in &tenants {
        let in_batch = documents.iter().find_map(|d| match &d.manifest {
            outpost_api::Manifest::Tenant(t) if t.metadata.name.as_str() == tenant => Some(t.spec.clone()),
            _ => None,
        });
        let spec = match in_batch {
            Some(spec) => Some(spec),
            None => match state.store.get(Kind::Tenant, tenant).await? {
                Some(object) => serde_json::from_value::<outpost_api::manifest::TenantSpec>(object.spec).ok(),
                None => None,
            },
        };
        limited |= spec.is_some_and(|spec| !spec.quotas.is_unlimited());
    }
    if !limited {
        return Ok(());
    }
    let mut inputs = state.fleet.inputs(None).await?;
    crate::plan::overlay(&mut inputs, documents);
    let mut out = outpost_api::Diagnostics::default();
    for (tenant, problem) in inputs.over_quota(&tenants) {
        if let Some(document) = documents
            .iter()
            .find(|d| tenant_of(d).as_deref() == Some(tenant.as_str()))
        {
            out.0.push(document.diagnostic(
                &outpost_api::diagnostic::Path::root(),
                format!("tenant {tenant} would go past its quotas on {problem}"),
            ));
        }
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(out.sorted()))
    }
}

/// Parses and validates every file of an apply request, as one batch, asks
/// the policy whether the caller may write each document's kind, and moves
/// an application owner's documents into its namespace.
fn parse_request(
    request: &ApplyRequest,
    principal: &Principal,
) -> Result<Vec<outpost_api::Document>, ApiError> {
    let mut documents = parse_files(
        request
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.content.as_str())),
    )
    .map_err(ApiError::Invalid)?;
    for document in &documents {
        principal.may_write(document.manifest.kind())?;
    }
    if let Some(tenant) = principal.owner() {
        outpost_api::tenancy::qualify(&mut documents, tenant).map_err(ApiError::Invalid)?;
    }
    Ok(documents)
}

/// `POST /api/v1/plan`: what applying the batch (an `ApplyRequest`) would
/// make each site run, per deployment and wave. Stores nothing.
pub(super) async fn plan(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<outpost_api::wire::PlanResponse>, ApiError> {
    let body = body_bytes(body)?;
    let request: ApplyRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not an apply request: {e}")))?;
    let documents = parse_request(&request, &principal)?;
    check_quotas(&state, &documents).await?;
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

/// `GET /api/v1/{kind}?selector=…`: objects whose labels match, of those
/// the caller sees (`Principal::sees`).
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
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
        .filter(|object| principal.sees(object))
        .collect();
    let items = state.with_status(items).await?;
    let items = items.into_iter().map(|object| principal.shown(object)).collect();
    Ok(Json(ObjectList { items }))
}

pub(super) async fn get_one(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<StoredObject>, ApiError> {
    let kind = parse_kind(&kind)?;
    let object = state.visible(&principal, kind, &name).await?;
    let mut objects = state.with_status(vec![object]).await?;
    objects
        .pop()
        .map(|object| Json(principal.shown(object)))
        .ok_or_else(|| ApiError::Internal("status lost the object".to_string()))
}

/// `DELETE /api/v1/{kind}/{name}[?cascade=true]`: a site with hosts is
/// refused unless `cascade`, which removes them and revokes their
/// certificates at once.
pub(super) async fn delete_one(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Extension(principal): Extension<Principal>,
    Path((kind, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<StoredObject>, ApiError> {
    let kind = parse_kind(&kind)?;
    let cascade = flag(&query, "cascade")?;
    let name = state.visible(&principal, kind, &name).await?.metadata.name;
    let deleted = state.store.delete(kind, &name, cascade).await?;
    if kind == Kind::Tenant {
        state.secrets.forget_tenant(&name);
    }
    state.revocations.add(&deleted.revoked);
    state.store.announce(&crate::store::Change::Revocations).await;
    tracing::info!(%actor, %kind, %name, revoked = deleted.revoked.len(), "deleted");
    state.recompute_changed(&[(kind, name.as_str())]).await;
    Ok(Json(principal.shown(deleted.object)))
}

pub(super) async fn history(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Vec<outpost_api::wire::ApplicationVersion>>, ApiError> {
    let name = state
        .visible(&principal, Kind::Application, &name)
        .await?
        .metadata
        .name;
    Ok(Json(state.store.application_history(&name).await?))
}

/// `PATCH /api/v1/{kind}/{name}/labels`: the operator's labels on an object.
pub(super) async fn label_object(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Extension(principal): Extension<Principal>,
    Path((kind, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StoredObject>, ApiError> {
    let kind = parse_kind(&kind)?;
    let change = label_change(body)?;
    let name = state.visible(&principal, kind, &name).await?.metadata.name;
    let object = state.store.update_labels(kind, &name, &change).await?;
    tracing::info!(%actor, %kind, %name, generation = object.metadata.generation, "labelled");
    state.recompute_changed(&[(kind, name.as_str())]).await;
    Ok(Json(principal.shown(object)))
}
