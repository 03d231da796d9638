//! API tokens (make, list, revoke, and sign-in with an OpenID Connect
//! provider), the audit trail (read, verify) and blocks (block, unblock,
//! list). Who may call these, and what tokens a caller may make or revoke,
//! is the policy layer's business (`Principal::may_grant`, `may_revoke`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::{Extension, Json};
use outpost_api::access::{
    AuditEntry, AuditVerification, Block, BlockRequest, BlockTarget, CaRetireRequest, CaStatus, LoginConfig,
    LoginRequest, MAX_TOKEN_TTL, PROVIDER, Role, TokenCreated, TokenInfo, TokenRequest,
};
use outpost_api::manifest::Kind;
use outpost_api::quantity::Duration;
use outpost_api::selector::Selector;
use time::format_description::well_known::Rfc3339;

use super::policy::{Principal, audited};
use super::{ApiError, AppState, json_body, whole_number};
use crate::auth;
use crate::oidc::SignInError;
use crate::store::{AuditQuery, now_rfc3339};

/// How long a token lives unless asked otherwise.
const DEFAULT_TOKEN_TTL: Duration = Duration(90 * 86_400_000);
/// The most audit entries one read returns.
const MAX_AUDIT_ENTRIES: i64 = 10_000;

/// A user or robot name: 1 to 128 letters, digits and `.`, `_`, `-`, `@`.
fn check_user(user: &str) -> Result<(), ApiError> {
    let valid = !user.is_empty()
        && user.len() <= 128
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "user: {user:?} must be 1 to 128 letters, digits, '.', '_', '-' or '@'"
        )))
    }
}

/// `POST /api/v1/tokens`: a token for a user or robot, shown once.
pub(super) async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: TokenRequest = json_body(body, "a token request (user, role)")?;
    check_user(&request.user)?;
    let role: Role = request
        .role
        .parse()
        .map_err(|err| ApiError::BadRequest(format!("role: {err}")))?;
    let tenant = request.tenant.unwrap_or_else(|| caller.tenant.clone());
    if let Some(sites) = &request.sites {
        sites
            .parse::<Selector>()
            .map_err(|err| ApiError::BadRequest(format!("sites: {err}")))?;
    }
    let ttl: Duration = match &request.ttl {
        None => DEFAULT_TOKEN_TTL,
        Some(text) => text
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("ttl: {e}")))?,
    };
    if ttl.0 == 0 || ttl > MAX_TOKEN_TTL {
        return Err(ApiError::BadRequest(format!(
            "ttl: {ttl} is not between 1s and {MAX_TOKEN_TTL}"
        )));
    }
    let sites = request.sites.map(|s| s.trim().to_string());
    caller.may_grant(role, &tenant, sites.as_deref())?;
    tenant_exists(&state, &tenant)
        .await
        .map_err(|why| ApiError::BadRequest(format!("tenant: {why}")))?;
    let grant = Grant {
        user: request.user,
        role,
        tenant,
        sites,
    };
    let created = issue(&state, grant, ttl.as_std(), Some(caller.token.clone()), "").await?;
    tracing::info!(actor = %caller.token, token = %created.info.name, user = %created.info.user, role = %created.info.role, "API token created");
    let objects = vec![format!(
        "token {} ({} as {})",
        created.info.name, created.info.user, created.info.role
    )];
    Ok(audited(Json(created), objects))
}

/// `Err` naming the problem unless `tenant` is the provider or an
/// application owner that exists.
async fn tenant_exists(state: &AppState, tenant: &str) -> Result<(), String> {
    if tenant == PROVIDER
        || state
            .store
            .get(Kind::Tenant, tenant)
            .await
            .map_err(|err| err.to_string())?
            .is_some()
    {
        Ok(())
    } else {
        Err(format!(
            "{tenant:?} does not exist (apply a Tenant manifest first; {PROVIDER} is the site provider)"
        ))
    }
}

/// What a new API token is for.
struct Grant {
    user: String,
    role: Role,
    tenant: String,
    sites: Option<String>,
}

/// Makes and stores an API token; only its hash is kept.
async fn issue(
    state: &AppState,
    grant: Grant,
    ttl: std::time::Duration,
    created_by: Option<String>,
    prefix: &str,
) -> Result<TokenCreated, ApiError> {
    let token = auth::new_token();
    let hash = auth::hash_token(&token);
    let expires_at = (time::OffsetDateTime::now_utc() + ttl)
        .format(&Rfc3339)
        .unwrap_or_default();
    let info = TokenInfo {
        // The hash's prefix keeps names unique without revealing the token.
        name: format!("{prefix}{}-{}", grant.user, &hash[..8]),
        user: grant.user,
        role: grant.role,
        tenant: grant.tenant,
        sites: grant.sites,
        created_at: now_rfc3339(),
        created_by,
        expires_at: Some(expires_at),
        revoked_at: None,
    };
    state.store.add_api_token(&info, &hash).await?;
    Ok(TokenCreated { token, info })
}

fn sign_in_configured(state: &AppState) -> Result<&crate::oidc::Oidc, ApiError> {
    state.oidc.as_deref().ok_or_else(|| {
        ApiError::NotFound(
            "sign-in is not configured on this control plane (outpost control --oidc-issuer URL --oidc-client-id ID --oidc-role-map MAPPING)"
                .to_string(),
        )
    })
}

/// `GET /api/v1/login` (public): the provider to sign in with.
pub(super) async fn login_config(State(state): State<AppState>) -> Result<Json<LoginConfig>, ApiError> {
    let oidc = sign_in_configured(&state)?.config();
    Ok(Json(LoginConfig {
        issuer: oidc.issuer.clone(),
        client_id: oidc.client_id.clone(),
    }))
}

/// `POST /api/v1/login` (public): an ID token traded for an API token of
/// the role its claims map to, for `oidc::SIGN_IN_TTL`.
pub(super) async fn login(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let oidc = sign_in_configured(&state)?;
    let request: LoginRequest = json_body(body, "a sign-in (idToken)")?;
    let signed_in = oidc.sign_in(&request.id_token).await.map_err(|err| match err {
        SignInError::Rejected(_) => ApiError::BadCredentials(err.to_string()),
        SignInError::NoRole(why) => ApiError::Forbidden(why),
        SignInError::Provider(_) => {
            tracing::warn!(err = %err, "signing in");
            ApiError::Unavailable(err.to_string())
        }
    })?;
    // A user name as tokens take it: odd characters of a subject become '-'.
    let user: String = signed_in
        .user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    tenant_exists(&state, &signed_in.tenant)
        .await
        .map_err(|why| ApiError::Forbidden(format!("the sign-in maps to a tenant that is gone: {why}")))?;
    let grant = Grant {
        user,
        role: signed_in.role,
        tenant: signed_in.tenant,
        sites: None,
    };
    let created = issue(&state, grant, crate::oidc::SIGN_IN_TTL, None, "").await?;
    tracing::info!(user = %created.info.user, role = %created.info.role, token = %created.info.name, "signed in");
    let objects = vec![format!(
        "sign-in of {} as {} in {} (token {})",
        created.info.user, created.info.role, created.info.tenant, created.info.name
    )];
    Ok(audited(Json(created), objects))
}

/// The name prefix of a one-time sign-in link's token: it signs in once,
/// and is refused as a bearer token (`policy::principal`).
pub const ONE_TIME_PREFIX: &str = "once:";

/// How long a one-time sign-in link may wait to be used.
pub const ONE_TIME_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// `POST /api/v1/login/links`: a one-time sign-in link for the caller
/// itself (its user, role, tenant and sites), good for `ONE_TIME_TTL`:
/// `outpost up` prints one for the console.
pub(super) async fn create_sign_in_link(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, ApiError> {
    let grant = Grant {
        user: caller.user.clone(),
        role: caller.role,
        tenant: caller.tenant.clone(),
        sites: caller.sites_source.clone(),
    };
    let created = issue(
        &state,
        grant,
        ONE_TIME_TTL,
        Some(caller.token.clone()),
        ONE_TIME_PREFIX,
    )
    .await?;
    let objects = vec![format!("one-time sign-in link {}", created.info.name)];
    Ok(audited(Json(created), objects))
}

/// `POST /api/v1/login/link` (public): a one-time sign-in link's token,
/// used up here, traded for an API token of the same grant for
/// `oidc::SIGN_IN_TTL`.
pub(super) async fn use_sign_in_link(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Link {
        token: String,
    }
    let link: Link = json_body(body, "a sign-in link (token)")?;
    let refused = || ApiError::BadCredentials("the sign-in link is unknown, used or expired".to_string());
    let stored = state
        .store
        .api_token(&auth::hash_token(&link.token))
        .await?
        .filter(|stored| stored.name.starts_with(ONE_TIME_PREFIX))
        .filter(|stored| {
            stored
                .expires_at
                .as_deref()
                .is_some_and(|expires| expires > now_rfc3339().as_str())
        })
        .ok_or_else(refused)?;
    if !state.store.use_up_api_token(&stored.name).await? {
        return Err(refused());
    }
    let grant = Grant {
        user: stored.user,
        role: stored.role,
        tenant: stored.tenant,
        sites: stored.sites,
    };
    let created = issue(
        &state,
        grant,
        crate::oidc::SIGN_IN_TTL,
        Some(stored.name.clone()),
        "",
    )
    .await?;
    tracing::info!(user = %created.info.user, role = %created.info.role, token = %created.info.name, "signed in with a one-time link");
    let objects = vec![format!(
        "sign-in of {} with link {} (token {})",
        created.info.user, stored.name, created.info.name
    )];
    Ok(audited(Json(created), objects))
}

/// `DELETE /api/v1/login`: signs the caller out. A token that a one-time
/// sign-in link made (a console session) is revoked; any other token is
/// its holder's to keep and stays as it is. Answers the token as it now is.
pub(super) async fn sign_out(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, ApiError> {
    let token = state
        .store
        .api_tokens(caller.owner())
        .await?
        .into_iter()
        .find(|token| token.name == caller.token)
        .ok_or(ApiError::Unauthorized)?;
    let session = token
        .created_by
        .as_deref()
        .is_some_and(|maker| maker.starts_with(ONE_TIME_PREFIX));
    if !session {
        return Ok(axum::response::IntoResponse::into_response(Json(token)));
    }
    let revoked = state.store.revoke_api_token(&token.name).await?;
    tracing::info!(user = %caller.user, token = %token.name, "signed out");
    let objects = vec![format!("sign-out of {} (token {})", caller.user, token.name)];
    Ok(audited(Json(revoked), objects))
}

/// `GET /api/v1/tokens`: the caller's tenant's tokens (every tenant's for
/// the provider), never the tokens themselves.
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(state.store.api_tokens(caller.owner()).await?))
}

/// `DELETE /api/v1/tokens/{name}`: the token fails its next request.
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no API token is named {name:?}"));
    let tokens = state.store.api_tokens(caller.owner()).await?;
    let token = tokens
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(not_found)?;
    caller.may_revoke(token.role)?;
    let revoked = state.store.revoke_api_token(&name).await?;
    tracing::info!(actor = %caller.token, token = %name, "API token revoked");
    Ok(Json(revoked))
}

/// `GET /api/v1/audit[?since=RFC3339&user=U&tenant=T&limit=N]`: the newest
/// entries that match, oldest first. A tenant's admin reads its own.
pub(super) async fn audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let since = match query.get("since") {
        None => None,
        Some(text) => {
            let at = time::OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|_| ApiError::BadRequest(format!("since: {text:?} is not an RFC 3339 time")))?;
            Some(
                at.to_offset(time::UtcOffset::UTC)
                    .format(&Rfc3339)
                    .unwrap_or_default(),
            )
        }
    };
    let limit = whole_number(&query, "limit", 1000)?.clamp(1, MAX_AUDIT_ENTRIES);
    let tenant = if caller.tenant == PROVIDER {
        query.get("tenant").cloned()
    } else {
        Some(caller.tenant.clone())
    };
    let query = AuditQuery {
        since,
        user: query.get("user").cloned(),
        tenant,
        limit,
    };
    Ok(Json(state.store.audit(&query).await?))
}

/// `GET /api/v1/audit/verify`: every hash of the trail checked.
pub(super) async fn verify_audit(State(state): State<AppState>) -> Result<Json<AuditVerification>, ApiError> {
    let verification = state.store.verify_audit().await?;
    if let Some(id) = verification.broken_at {
        tracing::error!(entry = id, "the audit trail is broken");
    }
    Ok(Json(verification))
}

/// The site a block names, which the caller must be able to see; for a
/// host, the host must be enrolled. A tenant must exist, and has no site.
async fn block_site(
    state: &AppState,
    caller: &Principal,
    request: &BlockRequest,
) -> Result<Option<String>, ApiError> {
    let (site, host) = match request.target {
        BlockTarget::Tenant => {
            if request.wipe {
                return Err(ApiError::BadRequest(
                    "wipe: a tenant's hosts are the provider's; block its sites or hosts to wipe them"
                        .to_string(),
                ));
            }
            if state.store.get(Kind::Tenant, &request.name).await?.is_none() {
                return Err(ApiError::NotFound(format!("tenant {:?} not found", request.name)));
            }
            return Ok(None);
        }
        BlockTarget::Site => (request.name.as_str(), None),
        BlockTarget::Host => match request.name.split_once('/') {
            Some((site, host)) if !site.is_empty() && !host.is_empty() => (site, Some(host)),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "name: a host is named SITE/HOST, not {:?}",
                    request.name
                )));
            }
        },
    };
    let labels = state
        .store
        .get(Kind::Site, site)
        .await?
        .map(|object| object.metadata.labels)
        .filter(|labels| caller.sees_site(labels));
    if labels.is_none() {
        return Err(ApiError::NotFound(format!("site {site:?} not found")));
    }
    if let Some(host) = host
        && state.store.host(site, host).await?.is_none()
    {
        return Err(ApiError::NotFound(format!(
            "host {host:?} not found in site {site:?}"
        )));
    }
    Ok(Some(site.to_string()))
}

/// `POST /api/v1/block`: the host or site is cut off at once (its sessions
/// end, its connections are refused); a blocked host's site also stops
/// accepting its underlay key.
pub(super) async fn block(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Block>, ApiError> {
    let request: BlockRequest = json_body(body, "a block request (target, name)")?;
    let site = block_site(&state, &caller, &request).await?;
    let block = Block {
        target: request.target,
        name: request.name,
        wipe: request.wipe,
        blocked_at: now_rfc3339(),
        blocked_by: caller.token.clone(),
    };
    state.store.add_block(&block).await?;
    state.revocations.block(&block);
    state.store.announce(&crate::store::Change::Revocations).await;
    tracing::warn!(actor = %caller.token, target = block.target.as_str(), name = %block.name, wipe = block.wipe, "blocked");
    if let (BlockTarget::Host, Some(site)) = (block.target, &site) {
        // The stolen host's underlay key must stop working at its peers too.
        state
            .store
            .rotate_site_keys(site, true, time::OffsetDateTime::now_utc())
            .await?;
        state.fleet.recompute_site(site).await?;
    }
    Ok(Json(block))
}

/// `POST /api/v1/unblock`: lifts a block (a wipe stays done).
pub(super) async fn unblock(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Block>, ApiError> {
    let request: BlockRequest = json_body(body, "an unblock request (target, name)")?;
    if request.wipe {
        return Err(ApiError::BadRequest(
            "wipe: an unblock cannot undo a wipe".to_string(),
        ));
    }
    block_site(&state, &caller, &request).await?;
    let block = state
        .store
        .remove_block(request.target, &request.name)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "{} {:?} is not blocked",
                request.target.as_str(),
                request.name
            ))
        })?;
    state.revocations.unblock(&block);
    state.store.announce(&crate::store::Change::Revocations).await;
    tracing::warn!(actor = %caller.token, target = block.target.as_str(), name = %block.name, "unblocked");
    Ok(Json(block))
}

/// Where the CAs stand: the current one, and what a retirement waits for.
async fn ca_status_of(state: &AppState) -> Result<CaStatus, ApiError> {
    let name = state.pki.issuer();
    let rotating = state.pki.rotating();
    let (hosts_to_renew, sites_to_rekey) = if rotating {
        let hosts = state.store.hosts_not_issued_by(&name).await?;
        let sites = state
            .store
            .site_keys()
            .await?
            .into_values()
            .filter(|keys| keys.retiring.is_some())
            .map(|keys| keys.site)
            .collect();
        (hosts, sites)
    } else {
        Default::default()
    };
    Ok(CaStatus {
        fingerprint: state.pki.ca_fingerprint(),
        name,
        rotating,
        hosts_to_renew,
        sites_to_rekey,
    })
}

/// `GET /api/v1/ca`.
pub(super) async fn ca_status(State(state): State<AppState>) -> Result<Json<CaStatus>, ApiError> {
    Ok(Json(ca_status_of(&state).await?))
}

/// `POST /api/v1/ca/rotate`: a new CA signs from now on; the old one stays
/// trusted. Every site with underlay keys takes new ones, signed by it.
pub(super) async fn rotate_ca(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Json<CaStatus>, ApiError> {
    let fingerprint = state
        .pki
        .rotate()
        .map_err(|err| ApiError::Conflict(format!("{err:#}")))?;
    tracing::warn!(actor = %caller.token, %fingerprint, "CA rotated: the new CA signs, the previous one stays trusted");
    crate::replicas::publish_authority(state.store.as_ref(), &state.secrets, &state.pki)
        .await
        .map_err(|err| ApiError::Internal(format!("{err:#}")))?;
    let now = time::OffsetDateTime::now_utc();
    for site in state.store.site_keys().await?.into_keys() {
        state.store.rotate_site_keys(&site, false, now).await?;
        state.fleet.recompute_site(&site).await?;
    }
    Ok(Json(ca_status_of(&state).await?))
}

/// `POST /api/v1/ca/retire`: the previous CA is trusted no more, once no
/// host needs it (or with `force`).
pub(super) async fn retire_ca(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CaStatus>, ApiError> {
    let request: CaRetireRequest = super::optional_body(body, "a retire request (force)")?;
    let status = ca_status_of(&state).await?;
    if !status.rotating {
        return Err(ApiError::Conflict(
            "no previous CA to retire (outpost control rotate-ca introduces a new one)".to_string(),
        ));
    }
    let waiting = !status.hosts_to_renew.is_empty() || !status.sites_to_rekey.is_empty();
    if waiting && !request.force {
        let mut why = Vec::new();
        if !status.hosts_to_renew.is_empty() {
            why.push(format!(
                "{} host(s) hold certificates of the previous CA ({}); connected hosts renew within seconds, offline ones when they are back",
                status.hosts_to_renew.len(),
                shortlist(&status.hosts_to_renew)
            ));
        }
        if !status.sites_to_rekey.is_empty() {
            why.push(format!(
                "site(s) {} are still taking new underlay keys",
                shortlist(&status.sites_to_rekey)
            ));
        }
        return Err(ApiError::Conflict(format!(
            "the previous CA is still needed: {}; retire later, or with --force (those hosts must then be enrolled again)",
            why.join("; ")
        )));
    }
    state
        .pki
        .retire()
        .map_err(|err| ApiError::Internal(format!("{err:#}")))?;
    tracing::warn!(actor = %caller.token, forced = waiting, "previous CA retired");
    crate::replicas::publish_authority(state.store.as_ref(), &state.secrets, &state.pki)
        .await
        .map_err(|err| ApiError::Internal(format!("{err:#}")))?;
    Ok(Json(ca_status_of(&state).await?))
}

/// The first few of `names`, and how many more.
fn shortlist(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// `GET /api/v1/blocks`: the blocks in force.
pub(super) async fn blocks(State(state): State<AppState>) -> Result<Json<Vec<Block>>, ApiError> {
    Ok(Json(state.store.blocks().await?))
}
