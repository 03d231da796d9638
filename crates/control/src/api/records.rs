//! What sites sent up: events and log lines, stored or (`live=true`) asked
//! of a connected site's hosts now.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
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
) -> Result<Json<outpost_api::telemetry::LogList>, ApiError> {
    let Some(application) = raw.get("application") else {
        return Err(ApiError::BadRequest(
            "application: which application's logs?".to_string(),
        ));
    };
    state.visible(&principal, Kind::Application, application).await?;
    let query = record_query(&state, &principal, &raw).await?;
    let mut list = if raw.get("live").is_some_and(|live| live == "true") {
        live_logs(&state, &query).await?
    } else {
        outpost_api::telemetry::LogList {
            items: state.store.log_lines(&query).await?,
        }
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
    Ok(Json(list))
}

/// How long the hosts of a site get to answer a live request for logs.
const LIVE_LOGS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks every connected host of the query's site for its logs now.
pub(super) async fn live_logs(
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
