//! What sites sent up: events and log lines, stored or (`live=true`) asked
//! of a connected site's hosts now: those whose sessions this replica
//! holds, and through the replicas that hold the others.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, RawQuery, State};
use axum::http::HeaderMap;
use outpost_api::manifest::Kind;

use axum::Extension;

use super::{ApiError, AppState, Principal, whole_number};

/// The most events or log lines one request returns.
const MAX_RECORDS: i64 = 10_000;

/// Reads `site`, `application`, `service`, `since` (RFC 3339), `after` and
/// `limit` from a query string. An application owner reads its own
/// applications' records only, and a token with a site selector those of
/// the sites it reaches (another site is not found).
async fn record_query(
    state: &AppState,
    principal: &Principal,
    query: &HashMap<String, String>,
) -> Result<crate::store::RecordQuery, ApiError> {
    let sites = state.visible_sites(principal).await?;
    if let (Some(site), Some(sites)) = (query.get("site"), &sites)
        && !sites.contains(site)
    {
        return Err(ApiError::NotFound(format!("site {site:?} not found")));
    }
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
    Ok(crate::store::RecordQuery {
        site: query.get("site").cloned(),
        application: query
            .get("application")
            .map(|name| principal.object_name(Kind::Application, name))
            .transpose()?,
        tenant: principal.owner().map(str::to_string),
        sites: sites.map(|sites| sites.into_iter().collect()),
        service: query.get("service").cloned(),
        since,
        after: whole_number(query, "after", 0)?,
        limit: whole_number(query, "limit", 1000)?.clamp(1, MAX_RECORDS),
    })
}

/// `GET /api/v1/events`: what happened at sites, oldest first.
pub(super) async fn events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<outpost_api::telemetry::EventList>, ApiError> {
    let mut items = state
        .store
        .events(&record_query(&state, &principal, &query).await?)
        .await?;
    for event in &mut items {
        event.application = principal.shown_name(&event.application).to_string();
        event.instance = principal.shown_name(&event.instance).to_string();
    }
    Ok(Json(outpost_api::telemetry::EventList { items }))
}

/// `GET /api/v1/logs?application=A`: log lines sites uploaded, oldest first.
pub(super) async fn logs(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(raw): Query<HashMap<String, String>>,
    RawQuery(query_string): RawQuery,
    headers: HeaderMap,
) -> Result<Json<outpost_api::telemetry::LogList>, ApiError> {
    let Some(application) = raw.get("application") else {
        return Err(ApiError::BadRequest(
            "application: which application's logs?".to_string(),
        ));
    };
    state.visible(&principal, Kind::Application, application).await?;
    let query = record_query(&state, &principal, &raw).await?;
    let live = raw.get("live").is_some_and(|live| live == "true");
    // Live: `None` when no host of the site has a session here.
    let (mut list, asked_here) = if live {
        match live_logs(&state, &query).await? {
            Some(list) => (list, true),
            None => (outpost_api::telemetry::LogList { items: Vec::new() }, false),
        }
    } else {
        let items = state.store.log_lines(&query).await?;
        (outpost_api::telemetry::LogList { items }, true)
    };
    let context = crate::secrets::log_context(&query.application.clone().unwrap_or_default());
    for line in &mut list.items {
        line.line.text = state
            .secrets
            .open_text(&line.application, &context, &line.line.text)
            .await;
        line.application = principal.shown_name(&line.application).to_string();
        line.instance = principal.shown_name(&line.instance).to_string();
    }
    if live && !headers.contains_key(FORWARDED) {
        // Hosts whose sessions other replicas hold answer through them
        // (answered for this caller there: nothing more to do here).
        let site = query.site.clone().unwrap_or_default();
        let elsewhere = from_other_replicas(&state, &site, &headers, query_string.as_deref()).await?;
        if !asked_here && elsewhere.is_none() {
            return Err(no_host_connected(&site));
        }
        list.items.extend(elsewhere.into_iter().flatten());
        list.items.sort_by_key(|l| {
            time::OffsetDateTime::parse(&l.line.at, &time::format_description::well_known::Rfc3339).ok()
        });
    } else if !asked_here {
        return Err(no_host_connected(query.site.as_deref().unwrap_or_default()));
    }
    Ok(Json(list))
}

/// Marks a request one replica passed to another: answered there, never
/// passed on again.
const FORWARDED: &str = "outpost-forwarded";

fn no_host_connected(site: &str) -> ApiError {
    ApiError::Conflict(format!(
        "no host of site {site:?} is connected now (offline, or polling); without live, `outpost logs` shows what it uploaded"
    ))
}

/// Asks the replicas that hold sessions of `site`'s hosts for their live
/// logs, as the caller (its own credentials), with the same query.
/// `None` when no other replica holds one.
async fn from_other_replicas(
    state: &AppState,
    site: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<Vec<outpost_api::telemetry::StoredLogLine>>, ApiError> {
    let mut replicas: Vec<String> = state
        .store
        .site_hosts(site)
        .await?
        .iter()
        .filter(|host| state.fleet.presence.live_logs(site, &host.name).is_none())
        .filter_map(|host| state.fleet.presence.holder(site, &host.name))
        .collect();
    replicas.sort();
    replicas.dedup();
    if replicas.is_empty() {
        return Ok(None);
    }
    let unavailable = |err: &dyn std::fmt::Display| ApiError::Unavailable(format!("another replica: {err}"));
    let mut http = reqwest::Client::builder()
        .timeout(LIVE_LOGS_TIMEOUT + std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none());
    for ca in reqwest::Certificate::from_pem_bundle(state.pki.trusted_pem().as_bytes())
        .map_err(|e| unavailable(&e))?
    {
        http = http.add_root_certificate(ca);
    }
    let http = http.build().map_err(|e| unavailable(&e))?;
    let mut items = Vec::new();
    for replica in replicas {
        let mut request = http
            .get(format!("{replica}/api/v1/logs?{}", query.unwrap_or_default()))
            .header(FORWARDED, "1");
        for name in [axum::http::header::AUTHORIZATION, axum::http::header::COOKIE] {
            if let Some(value) = headers.get(&name) {
                request = request.header(name, value.clone());
            }
        }
        let response = request.send().await.map_err(|e| unavailable(&e))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(ApiError::Conflict(format!(
                "the replica holding some of site {site:?}'s hosts answered {status}: {}",
                body.chars().take(300).collect::<String>()
            )));
        }
        let list: outpost_api::telemetry::LogList = response.json().await.map_err(|e| unavailable(&e))?;
        items.extend(list.items);
    }
    Ok(Some(items))
}

/// How long the hosts of a site get to answer a live request for logs.
const LIVE_LOGS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks every host of the query's site that has a session here for its
/// logs now; `None` when none has.
pub(super) async fn live_logs(
    state: &AppState,
    query: &crate::store::RecordQuery,
) -> Result<Option<outpost_api::telemetry::LogList>, ApiError> {
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
        let Some(sender) = state.fleet.presence.live_logs(site, &host.name) else {
            continue;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = crate::presence::LiveLogs {
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
        return Ok(None);
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
    Ok(Some(outpost_api::telemetry::LogList { items }))
}
