//! `/api/v1/streams/{application}/{topic}`: read what sites sent up on a
//! topic (or follow it as server-sent events), and publish records to a
//! down topic for the sites a selector picks.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use outpost_api::Selector;
use outpost_api::manifest::{Kind, Name, ObjectName};
use outpost_api::stream::{Direction, Published, StoredRecord, StoredRecords, Topic, split_records};

use super::{Actor, ApiError, AppState, Principal, body_bytes, whole_number};
use crate::store::StreamQuery;
use crate::streams::{self, PublishError};

/// The most records one read returns.
const MAX_RECORDS: i64 = 10_000;

/// The application and topic of a path, checked: names, an application
/// the caller sees, and a topic its current version declares in
/// `direction`. Returns the application's stored name.
async fn topic(
    state: &AppState,
    principal: &Principal,
    application: &str,
    topic: &str,
    direction: Direction,
) -> Result<String, ApiError> {
    application
        .parse::<ObjectName>()
        .map_err(|why| ApiError::BadRequest(format!("application: {why}")))?;
    topic
        .parse::<Name>()
        .map_err(|why| ApiError::BadRequest(format!("topic: {why}")))?;
    let object = state.visible(principal, Kind::Application, application).await?;
    let declared: Vec<Topic> = object
        .spec
        .get("streams")
        .and_then(|streams| serde_json::from_value(streams.clone()).ok())
        .unwrap_or_default();
    match declared.iter().find(|t| t.name.as_str() == topic) {
        None => Err(ApiError::NotFound(format!(
            "application {application:?} declares no topic {topic:?} (spec.streams)"
        ))),
        Some(t) if t.direction != direction => Err(ApiError::BadRequest(format!(
            "{topic:?} is {} topic; only {} topics are {}",
            t.direction.with_article(),
            direction.as_str(),
            match direction {
                Direction::Up => "read here (a site reads its down and local topics itself)",
                _ => "published to",
            }
        ))),
        Some(_) => Ok(object.metadata.name),
    }
}

fn stream_query(
    application: String,
    topic: String,
    raw: &HashMap<String, String>,
) -> Result<StreamQuery, ApiError> {
    let since_ms = match raw.get("since") {
        Some(since) => Some(
            since
                .parse::<jiff::Timestamp>()
                .map_err(|_| ApiError::BadRequest(format!("since: {since:?} is not an RFC 3339 time")))?
                .as_millisecond(),
        ),
        None => None,
    };
    Ok(StreamQuery {
        application,
        topic,
        site: raw.get("site").cloned(),
        since_ms,
        after: whole_number(raw, "after", 0)?,
        limit: whole_number(raw, "limit", 1000)?.clamp(1, MAX_RECORDS),
    })
}

/// `GET /api/v1/streams/{application}/{topic}`: up-records, oldest first;
/// with `follow=true`, as server-sent events (`id` the record's id, `data`
/// the record as JSON) that go on as records arrive.
pub(super) async fn read(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((application, topic_name)): Path<(String, String)>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    // Records name the application as the caller does.
    let shown = application;
    let application = topic(&state, &principal, &shown, &topic_name, Direction::Up).await?;
    let query = stream_query(application, topic_name, &raw)?;
    let follow = match raw.get("follow").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "follow: {other:?} is not true or false"
            )));
        }
    };
    if follow {
        return Ok(follow_records(state, query, shown).into_response());
    }
    let mut records = state.store.stream_records(&query).await?;
    as_shown(&state, &query, &shown, &mut records).await;
    let next = records.last().map_or(query.after, |r| r.id);
    Ok(Json(StoredRecords { records, next }).into_response())
}

/// Records as the caller reads them: in clear, and naming the application
/// as the caller does (`shown`).
async fn as_shown(state: &AppState, query: &StreamQuery, shown: &str, records: &mut [StoredRecord]) {
    let context = crate::secrets::stream_context(&query.application, &query.topic);
    for record in records {
        record.data = state
            .secrets
            .open_text(&record.application, &context, &record.data)
            .await;
        record.application = shown.to_string();
    }
}

fn follow_records(
    state: AppState,
    query: StreamQuery,
    shown: String,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let stored = state.fleet.streams.stored();
    let stream = futures_util::stream::unfold(
        (state, query, stored, shown),
        |(state, mut query, mut stored, shown)| async move {
            loop {
                stored.borrow_and_update();
                let mut records = match state.store.stream_records(&query).await {
                    Ok(records) => records,
                    Err(err) => {
                        tracing::warn!(err = %err.detail(), "following a stream failed");
                        return None;
                    }
                };
                let Some(last) = records.last().map(|r| r.id) else {
                    stored.changed().await.ok()?;
                    continue;
                };
                query.after = last;
                as_shown(&state, &query, &shown, &mut records).await;
                let events: Vec<Result<Event, Infallible>> = records
                    .iter()
                    .map(|record| {
                        let data = serde_json::to_string(record).unwrap_or_default();
                        Ok(Event::default().id(record.id.to_string()).data(data))
                    })
                    .collect();
                return Some((futures_util::stream::iter(events), (state, query, stored, shown)));
            }
        },
    );
    use futures_util::StreamExt as _;
    Sse::new(stream.flatten()).keep_alive(KeepAlive::default())
}

/// `POST /api/v1/streams/{application}/{topic}?sites=SELECTOR`: the body is
/// one record, or one per line with `Content-Type: application/x-ndjson`;
/// every selected site that runs the application receives them, now or
/// when it comes back.
pub(super) async fn publish(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Extension(principal): Extension<Principal>,
    Path((application, topic_name)): Path<(String, String)>,
    Query(raw): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Published>, ApiError> {
    let application = topic(&state, &principal, &application, &topic_name, Direction::Down).await?;
    let sites = match raw.get("sites") {
        Some(text) => text
            .parse::<Selector>()
            .map_err(|why| ApiError::BadRequest(format!("sites: {why}")))?,
        None => Selector::all(),
    };
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson"));
    let records =
        split_records(&body_bytes(body)?, ndjson).map_err(|err| ApiError::BadRequest(err.to_string()))?;
    let published = streams::publish(
        state.store.as_ref(),
        &state.secrets,
        &state.fleet.streams,
        (&application, &topic_name),
        &sites,
        &records,
        &actor,
    )
    .await
    .map_err(|err| match err {
        PublishError::Invalid(why) => ApiError::Conflict(why),
        PublishError::Store(err) => err.into(),
    })?;
    tracing::info!(%application, topic = %topic_name, records = published.records, sites = published.sites.len(), %actor, "published to a down topic");
    Ok(Json(published))
}
