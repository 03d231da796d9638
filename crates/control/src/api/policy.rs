//! The policy layer: every protected route passes through `enforce`, which
//! is the only place that decides who may call what. It authenticates the
//! bearer token (hashed, unexpired, not revoked), checks the route's gate
//! against the token's role (`outpost_api::access::Role::allows`) and its
//! site selector, hands the handler the `Principal`, and writes the audit
//! trail: every change, every reveal of a secret and every refusal, with
//! who, from where and the result.
//!
//! Handlers never check roles themselves. The checks that depend on a body
//! are `Principal` methods here that handlers call: `may_write` (the kinds
//! in an apply or a plan), `may_grant` and `may_revoke` (the role of a token
//! being made or revoked).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use outpost_api::access::{Access, AuditEntry, Role, TokenInfo};
use outpost_api::manifest::Kind;
use outpost_api::selector::Selector;

use super::{ApiError, AppState};
use crate::auth;

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// This access, whatever the request holds.
    Needs(Access),
    /// A route on `/{kind}/{name}` that changes an object: sites need
    /// `Edge`, applications and deployments `Deploy`.
    Object,
    /// An apply or a plan: the caller needs `Deploy` or `Edge` to send one,
    /// and each document's kind is checked when the body is parsed.
    Manifests,
    /// No token: sign-in. Its attempts are audited all the same.
    Public,
}

/// Who is calling: the API token's holder, its role and its scope.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's name, as lists and the audit trail show it.
    pub token: String,
    pub user: String,
    pub role: Role,
    pub tenant: String,
    /// The sites it may see and act on; `None` for all.
    pub sites: Option<Selector>,
    /// That selector as the token was made with it.
    pub sites_source: Option<String>,
}

impl Principal {
    /// `Forbidden` unless the role allows `access`.
    pub fn require(&self, access: Access) -> Result<(), ApiError> {
        if self.role.allows(access) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "role {} may not do this (it needs {})",
                self.role,
                access.as_str()
            )))
        }
    }

    /// Whether the caller may create, change or delete objects of `kind`.
    pub fn may_write(&self, kind: Kind) -> Result<(), ApiError> {
        self.require(write_access(kind))
    }

    /// Whether the caller may make a token of `role` in `tenant` for
    /// `sites`: no token mints a stronger one, one in another tenant, or one
    /// that reaches more sites.
    pub fn may_grant(&self, role: Role, tenant: &str, sites: Option<&str>) -> Result<(), ApiError> {
        self.may_revoke(role)?;
        if tenant != self.tenant {
            return Err(ApiError::Forbidden(format!(
                "a token of tenant {} may not make one for tenant {tenant}",
                self.tenant
            )));
        }
        if self.sites.is_some() && sites != self.sites_source.as_deref() {
            return Err(ApiError::Forbidden(
                "a token limited to some sites may only make tokens with the same sites".to_string(),
            ));
        }
        Ok(())
    }

    /// Whether the caller may make or revoke a token of `role`: its own
    /// role must cover it.
    pub fn may_revoke(&self, role: Role) -> Result<(), ApiError> {
        if self.role.covers(role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "role {} may not make or revoke a token of role {role}",
                self.role
            )))
        }
    }

    /// Whether the caller's site selector reaches a site with these labels.
    pub fn sees_site(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.sites
            .as_ref()
            .is_none_or(|selector| selector.matches(labels))
    }
}

/// What changing an object of this kind needs.
pub fn write_access(kind: Kind) -> Access {
    match kind {
        Kind::Site => Access::Edge,
        Kind::Application | Kind::Deployment => Access::Deploy,
    }
}

/// Objects a handler names for the audit trail beyond its path (an apply's
/// documents, a revealed secret's key and version), as a response extension.
#[derive(Debug, Clone, Default)]
pub struct Audited(pub Vec<String>);

/// A response that names these objects in the audit trail.
pub fn audited(response: impl IntoResponse, objects: Vec<String>) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(Audited(objects));
    response
}

/// One protected route's guard: its gate and its name in the audit trail.
#[derive(Clone)]
pub struct Guard {
    pub state: AppState,
    pub gate: Gate,
    /// `POST /apply`.
    pub action: std::sync::Arc<str>,
}

/// The route layer of every protected route.
pub async fn enforce(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.to_string())
        .unwrap_or_default();
    // A route with parameters names its objects in its path.
    let objects = if guard.action.contains('{') {
        // Inside `/api/v1`, the router has already taken the prefix off.
        vec![request.uri().path().trim_start_matches('/').to_string()]
    } else {
        Vec::new()
    };
    let reads = request.method() == Method::GET;
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_string);
    let mut entry = AuditEntry {
        id: 0,
        at: String::new(),
        token: "-".to_string(),
        user: "-".to_string(),
        tenant: "-".to_string(),
        action: guard.action.to_string(),
        objects,
        source,
        status: 0,
        result: String::new(),
    };
    if guard.gate == Gate::Public {
        let response = next.run(request).await;
        if reads {
            return response;
        }
        return record(&guard.state, entry, response, false).await;
    }
    // A request without any token is noise, not an attempt: not audited.
    let Some(bearer) = bearer else {
        return ApiError::Unauthorized.into_response();
    };
    let token_hash = auth::hash_token(&bearer);
    let stored = match guard.state.store.api_token(&token_hash).await {
        Ok(stored) => stored,
        Err(err) => return ApiError::from(err).into_response(),
    };
    if let Some(stored) = &stored {
        entry.token = stored.name.clone();
        entry.user = stored.user.clone();
        entry.tenant = stored.tenant.clone();
    }
    let principal = match stored.map(principal).unwrap_or(Err(ApiError::Unauthorized)) {
        Ok(principal) => principal,
        Err(refusal) => return record(&guard.state, entry, refusal.into_response(), false).await,
    };
    let (mut parts, body) = request.into_parts();
    let params: HashMap<String, String> =
        axum::RequestPartsExt::extract::<Path<HashMap<String, String>>>(&mut parts)
            .await
            .map(|Path(params)| params)
            .unwrap_or_default();
    if let Err(refusal) = admit(&guard, &principal, &params).await {
        return record(&guard.state, entry, refusal.into_response(), false).await;
    }
    let reveals = guard.gate == Gate::Needs(Access::SecretRead);
    let mut request = Request::from_parts(parts, body);
    request
        .extensions_mut()
        .insert(super::Actor(principal.token.clone()));
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    if reads && response.status().is_success() {
        return ends_with_token(&guard.state, token_hash, response);
    }
    record(&guard.state, entry, response, reveals).await
}

/// How often a long answer (server-sent events) checks its token: one whose
/// token is revoked or expires ends within this.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// A long answer ends once its token is revoked or expires; others pass.
fn ends_with_token(state: &AppState, token_hash: String, response: Response) -> Response {
    let streams = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    if !streams {
        return response;
    }
    let state = state.clone();
    let invalid = async move {
        let mut every = tokio::time::interval(RECHECK);
        loop {
            every.tick().await;
            // A store that cannot answer ends nothing.
            if let Ok(stored) = state.store.api_token(&token_hash).await
                && stored.map(principal).is_none_or(|principal| principal.is_err())
            {
                return;
            }
        }
    };
    let (parts, body) = response.into_parts();
    let body = futures_util::StreamExt::take_until(body.into_data_stream(), invalid);
    Response::from_parts(parts, axum::body::Body::from_stream(body))
}

/// The principal of a stored token, or `Unauthorized` if it was revoked or
/// has expired (the client is not told which).
fn principal(stored: TokenInfo) -> Result<Principal, ApiError> {
    if stored.revoked_at.is_some() {
        tracing::info!(token = %stored.name, "a revoked API token was used");
        return Err(ApiError::Unauthorized);
    }
    if stored
        .expires_at
        .as_deref()
        .is_some_and(|expires| expires <= crate::store::now_rfc3339().as_str())
    {
        tracing::info!(token = %stored.name, "an expired API token was used");
        return Err(ApiError::Unauthorized);
    }
    let sites = stored
        .sites
        .as_deref()
        .map(str::parse::<Selector>)
        .transpose()
        .map_err(|err| {
            ApiError::Internal(format!(
                "API token {:?}: stored site selector: {err}",
                stored.name
            ))
        })?;
    Ok(Principal {
        token: stored.name,
        user: stored.user,
        role: stored.role,
        tenant: stored.tenant,
        sites,
        sites_source: stored.sites,
    })
}

/// The gate of the route, then the token's site selector against the site
/// the path names (an unreachable site does not exist for the caller).
async fn admit(
    guard: &Guard,
    principal: &Principal,
    params: &HashMap<String, String>,
) -> Result<(), ApiError> {
    let kind = params.get("kind").map(String::as_str);
    match guard.gate {
        Gate::Needs(access) => principal.require(access)?,
        // An unknown kind is the handler's 404 to give.
        Gate::Object => match kind.and_then(|kind| super::parse_kind(kind).ok()) {
            Some(kind) => principal.may_write(kind)?,
            None => principal.require(Access::Deploy)?,
        },
        Gate::Manifests => {
            if !(principal.role.allows(Access::Deploy) || principal.role.allows(Access::Edge)) {
                principal.require(Access::Deploy)?;
            }
        }
        Gate::Public => {}
    }
    if principal.sites.is_none() {
        return Ok(());
    }
    let on_sites = guard.action.contains(" /sites/") || kind == Some("sites");
    let site = params
        .get("site")
        .or(if on_sites { params.get("name") } else { None });
    if let Some(site) = site {
        let labels = guard
            .state
            .store
            .get(Kind::Site, site)
            .await?
            .map(|object| object.metadata.labels);
        if !labels.is_some_and(|labels| principal.sees_site(&labels)) {
            return Err(ApiError::NotFound(format!("site {site:?} not found")));
        }
    }
    Ok(())
}

/// Appends the request to the audit trail, with the objects its handler
/// named. When `withhold` (a reveal), a response that could not be audited
/// is not sent: the value never leaves without its record.
async fn record(state: &AppState, mut entry: AuditEntry, response: Response, withhold: bool) -> Response {
    if let Some(Audited(objects)) = response.extensions().get::<Audited>() {
        entry.objects.extend(objects.iter().cloned());
    }
    let status = response.status();
    entry.status = status.as_u16();
    entry.result = if status.is_success() {
        "ok".to_string()
    } else {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace(' ', "_")
    };
    match state.store.append_audit(&entry).await {
        Ok(_) => response,
        Err(err) => {
            tracing::error!(err = %err.detail(), action = %entry.action, "writing the audit trail failed");
            if withhold {
                ApiError::Internal("the audit trail could not be written".to_string()).into_response()
            } else {
                response
            }
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme is
/// case-insensitive (RFC 7235 §2.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
