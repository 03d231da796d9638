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
//!
//! An application owner's token (a tenant other than the provider) acts in
//! that tenant's namespace (`outpost_api::tenancy`): handlers ask
//! `Principal::object_name` for the stored name of what the caller names,
//! and `sees`/`shown` for what a list or a read may show. Another tenant's
//! objects are 404, as if they did not exist. Its site selector is its
//! token's and its tenant's `spec.sites` together, and sites, hosts and
//! blocks (`Access::Edge`) are the provider's alone.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use outpost_api::access::{Access, AuditEntry, PROVIDER, Role, TokenInfo};
use outpost_api::manifest::Kind;
use outpost_api::selector::Selector;
use outpost_api::wire::StoredObject;

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
    /// The sites it may see and act on (its token's selector and, for an
    /// application owner, its tenant's); `None` for all.
    pub sites: Option<Selector>,
    /// That selector as the token was made with it.
    pub sites_source: Option<String>,
}

impl Principal {
    /// The application owner it acts for; `None` for the site provider.
    pub fn owner(&self) -> Option<&str> {
        (self.tenant != PROVIDER).then_some(self.tenant.as_str())
    }

    /// `Forbidden` unless the role allows `access` (and, for an application
    /// owner, `access` is not the provider's alone).
    pub fn require(&self, access: Access) -> Result<(), ApiError> {
        if matches!(access, Access::Edge | Access::Fleet) && self.owner().is_some() {
            return Err(ApiError::Forbidden(format!(
                "sites, hosts, blocks and fleet-wide figures are the site provider's; tenant {} may not {}",
                self.tenant,
                if access == Access::Edge {
                    "change them"
                } else {
                    "read them"
                }
            )));
        }
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

    /// The stored name of the object of `kind` the caller calls `name`: an
    /// application owner's own objects are `TENANT.NAME`; sites and tenants
    /// keep their names. A name in another namespace is not found.
    pub fn object_name(&self, kind: Kind, name: &str) -> Result<String, ApiError> {
        match (self.owner(), kind) {
            (None, _) | (Some(_), Kind::Site | Kind::Tenant) => Ok(name.to_string()),
            (Some(tenant), _) if !name.contains('.') => Ok(format!("{tenant}.{name}")),
            (Some(_), _) => Err(ApiError::NotFound(format!("{kind} {name:?} not found"))),
        }
    }

    /// The stored name of a secret the caller names (secrets are owned like
    /// applications).
    pub fn secret_name(&self, name: &str) -> Result<String, ApiError> {
        self.object_name(Kind::Application, name)
            .map_err(|_| ApiError::NotFound(format!("secret {name:?} not found")))
    }

    /// Whether a stored name is the caller's to see: everything for the
    /// provider, its own namespace for an application owner.
    pub fn owns(&self, name: &str) -> bool {
        self.owner()
            .is_none_or(|tenant| outpost_api::tenancy::local_name(name, tenant).is_some())
    }

    /// The name as the caller writes it (`web` of `acme.web` for acme).
    pub fn shown_name<'a>(&self, name: &'a str) -> &'a str {
        self.owner()
            .and_then(|tenant| outpost_api::tenancy::local_name(name, tenant))
            .unwrap_or(name)
    }

    /// Whether the caller may see this stored object: sites its selector
    /// reaches, its own tenant, and objects in its namespace.
    pub fn sees(&self, object: &StoredObject) -> bool {
        match object.kind {
            Kind::Site => self.sees_site(&object.metadata.labels),
            Kind::Tenant => self.owner().is_none_or(|tenant| tenant == object.metadata.name),
            Kind::Application | Kind::Deployment => self.owns(&object.metadata.name),
        }
    }

    /// An object as the caller sees it: an application owner's names
    /// without its `TENANT.`.
    pub fn shown(&self, mut object: StoredObject) -> StoredObject {
        let Some(tenant) = self.owner() else {
            return object;
        };
        outpost_api::tenancy::unqualify(&mut object, tenant);
        // A site's status names what every tenant runs there: keep its own.
        if object.kind == Kind::Site
            && let Some(status) = object.status.take()
            && let Ok(mut status) = serde_json::from_value::<outpost_api::wire::SiteStatus>(status)
        {
            let own = |name: &str| outpost_api::tenancy::local_name(name, tenant).map(str::to_string);
            status.failures = status.failures.iter().filter_map(|f| own(f)).collect();
            status.streams.retain_mut(|topic| match own(&topic.application) {
                Some(name) => {
                    topic.application = name;
                    true
                }
                None => false,
            });
            for host in &mut status.cluster {
                host.moved
                    .retain_mut(|moved| match (own(&moved.workload), own(&moved.instance)) {
                        (Some(workload), Some(instance)) => {
                            (moved.workload, moved.instance) = (workload, instance);
                            true
                        }
                        _ => false,
                    });
            }
            object.status = serde_json::to_value(status).ok();
        }
        object
    }

    /// Whether the caller may make a token of `role` in `tenant` for
    /// `sites`: no token mints a stronger one, one in another tenant, or one
    /// that reaches more sites.
    pub fn may_grant(&self, role: Role, tenant: &str, sites: Option<&str>) -> Result<(), ApiError> {
        self.may_revoke(role)?;
        if tenant != self.tenant && self.owner().is_some() {
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
        Kind::Site | Kind::Tenant => Access::Edge,
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
    let principal = match authenticate(&guard.state, stored).await {
        Ok(principal) => principal,
        Err(refusal) => {
            // A flood of bad tokens from one address leaves a bounded trace.
            let ip = entry
                .source
                .parse::<SocketAddr>()
                .ok()
                .map(|address| address.ip());
            let Some(skipped) = guard.state.refusals.admit(ip, std::time::Instant::now()) else {
                return refusal.into_response();
            };
            if skipped > 0 {
                entry.objects.push(format!(
                    "{skipped} earlier refusals from this address not recorded"
                ));
            }
            return record(&guard.state, entry, refusal.into_response(), false).await;
        }
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
                && let Err(ApiError::Unauthorized) = authenticate(&state, stored).await
            {
                return;
            }
        }
    };
    let (parts, body) = response.into_parts();
    let body = futures_util::StreamExt::take_until(body.into_data_stream(), invalid);
    Response::from_parts(parts, axum::body::Body::from_stream(body))
}

/// The principal of a stored token; `Unauthorized` for none, and for one
/// revoked, expired, or of a tenant that is blocked or gone (the client is
/// not told which).
async fn authenticate(state: &AppState, stored: Option<TokenInfo>) -> Result<Principal, ApiError> {
    let mut principal = principal(stored.ok_or(ApiError::Unauthorized)?)?;
    let Some(tenant) = principal.owner() else {
        return Ok(principal);
    };
    if state.revocations.tenant_blocked(tenant) {
        tracing::info!(token = %principal.token, %tenant, "a blocked tenant's API token was used");
        return Err(ApiError::Unauthorized);
    }
    let Some(object) = state.store.get(Kind::Tenant, tenant).await? else {
        tracing::info!(token = %principal.token, %tenant, "an API token of a deleted tenant was used");
        return Err(ApiError::Unauthorized);
    };
    let spec: outpost_api::manifest::TenantSpec = serde_json::from_value(object.spec)
        .map_err(|err| ApiError::Internal(format!("tenant {tenant:?}: stored spec: {err}")))?;
    principal.sites = Some(match &principal.sites {
        Some(token) => token.and(&spec.sites),
        None => spec.sites,
    });
    Ok(principal)
}

/// The principal of a stored token, or `Unauthorized` if it was revoked or
/// has expired.
fn principal(stored: TokenInfo) -> Result<Principal, ApiError> {
    if stored.name.starts_with(super::access::ONE_TIME_PREFIX) {
        tracing::info!(token = %stored.name, "a one-time sign-in link was used as a bearer token");
        return Err(ApiError::Unauthorized);
    }
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

/// How many refusals of missing, expired or revoked tokens one address may
/// leave in the audit trail per minute. Past it they are only counted, and
/// the count goes with the next one recorded: a flood of bad tokens cannot
/// fill the trail, and is not hidden either.
pub const AUDITED_REFUSALS_PER_MINUTE: u32 = 20;

/// Per address: the minute's start, refusals recorded in it, and those not.
#[derive(Debug, Default)]
pub struct RefusalBudget {
    by_source: parking_lot::Mutex<HashMap<Option<std::net::IpAddr>, (std::time::Instant, u32, u32)>>,
}

impl RefusalBudget {
    /// Whether a refusal from `source` at `now` is recorded; if so, how
    /// many from it were not since the last one recorded.
    pub fn admit(&self, source: Option<std::net::IpAddr>, now: std::time::Instant) -> Option<u32> {
        const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);
        let mut by_source = self.by_source.lock();
        if by_source.len() > 10_000 {
            by_source.retain(|_, (start, _, skipped)| now.duration_since(*start) < MINUTE || *skipped > 0);
        }
        let (start, recorded, skipped) = by_source.entry(source).or_insert((now, 0, 0));
        if now.duration_since(*start) >= MINUTE {
            (*start, *recorded) = (now, 0);
        }
        if *recorded < AUDITED_REFUSALS_PER_MINUTE {
            *recorded += 1;
            Some(std::mem::take(skipped))
        } else {
            *skipped += 1;
            None
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_bad_tokens_leaves_a_bounded_trace_that_counts_the_rest() {
        let budget = RefusalBudget::default();
        let (one, other) = (
            Some("10.0.0.1".parse().unwrap()),
            Some("10.0.0.2".parse().unwrap()),
        );
        let start = std::time::Instant::now();
        for _ in 0..AUDITED_REFUSALS_PER_MINUTE {
            assert_eq!(budget.admit(one, start), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(budget.admit(one, start), None, "past the budget: counted only");
        }
        assert_eq!(budget.admit(other, start), Some(0), "each address has its own");
        let later = start + std::time::Duration::from_secs(61);
        assert_eq!(
            budget.admit(one, later),
            Some(5),
            "the next minute's first says how many were not recorded"
        );
        assert_eq!(budget.admit(one, later), Some(0));
    }
}
