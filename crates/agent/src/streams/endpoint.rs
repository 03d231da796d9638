//! The HTTP endpoint a site's containers reach their application's topics
//! at. Each container gets `OUTPOST_STREAMS_URL` and a token of its own,
//! `OUTPOST_STREAMS_TOKEN`, sent as `Authorization: Bearer TOKEN`:
//! - `POST /v1/streams/{topic}` produces one record, or one per line with
//!   `Content-Type: application/x-ndjson` (up and local topics);
//! - `GET /v1/streams/{topic}?from=N&consumer=NAME&wait=SECONDS` reads
//!   records from offset N on, waiting up to `wait` seconds for one, or as
//!   server-sent events with `Accept: text/event-stream` (down and local
//!   topics). A named consumer without `from` reads on from its offset; one
//!   with `from` says it has everything before it, and the agent keeps that.
//!
//! A token is `APPLICATION.INSTANCE.MAC`, the MAC an HMAC-SHA256 under a
//! key only this agent holds: nothing is stored per token, and a token is
//! good only while its instance is in this host's desired state. It opens
//! only its own application's topics; every other request is refused (403).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use outpost_api::stream::{BodyError, Direction, split_records};
use outpost_api::workload::SiteState;
use ring::hmac;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqlitePool;
use tokio::sync::watch;
use zeroize::Zeroizing;

use super::{Streams, TopicKey};

/// The most one request may carry (an NDJSON batch).
const MAX_REQUEST_BYTES: usize = 16 << 20;
/// The longest a read may wait for a record.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// The most records, and bytes of them, one read returns.
const READ_RECORDS: usize = 1000;
const READ_BYTES: usize = 4 << 20;

/// The endpoint's state: the topics, the key tokens are made with, and
/// the desired state that says which instances exist.
pub struct Endpoint {
    streams: Arc<Streams>,
    key: hmac::Key,
    host: String,
    desired: watch::Receiver<(u64, SiteState)>,
    /// What containers are told to reach (`http://ADDRESS:PORT`).
    url: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("url", &self.url).finish()
    }
}

/// The key tokens are made with: made once, kept in the agent's database
/// (which only the agent can read).
async fn token_key(pool: &SqlitePool) -> Result<hmac::Key> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS stream_key (id INTEGER PRIMARY KEY CHECK (id = 1), key BLOB NOT NULL)",
    )
    .execute(pool)
    .await?;
    let fresh: [u8; 32] = rand::random();
    sqlx::query("INSERT OR IGNORE INTO stream_key (id, key) VALUES (1, ?1)")
        .bind(fresh.as_slice())
        .execute(pool)
        .await?;
    let (key,): (Vec<u8>,) = sqlx::query_as("SELECT key FROM stream_key WHERE id = 1")
        .fetch_one(pool)
        .await
        .context("reading the stream token key")?;
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &key))
}

/// What an endpoint is made of, before it knows where it listens.
#[derive(Debug)]
pub struct Parts<'a> {
    pub streams: Arc<Streams>,
    /// The agent's database, where the token key is kept.
    pub pool: &'a SqlitePool,
    pub host: &'a str,
    pub desired: watch::Receiver<(u64, SiteState)>,
}

impl Endpoint {
    fn mac(&self, application: &str, instance: &str) -> hmac::Tag {
        hmac::sign(&self.key, format!("{application}.{instance}").as_bytes())
    }

    /// The environment that gives a container of `instance` its
    /// application's topics, if the application declares any.
    pub fn env(&self, application: &str, instance: &str) -> Vec<(String, Zeroizing<String>)> {
        let declares = self
            .desired
            .borrow()
            .1
            .workloads
            .iter()
            .any(|w| w.application == application && !w.streams.is_empty());
        if !declares {
            return Vec::new();
        }
        let token = format!(
            "{application}.{instance}.{}",
            hex::encode(self.mac(application, instance).as_ref())
        );
        vec![
            (
                "OUTPOST_STREAMS_URL".to_string(),
                Zeroizing::new(self.url.clone()),
            ),
            ("OUTPOST_STREAMS_TOKEN".to_string(), Zeroizing::new(token)),
        ]
    }

    /// The application a request's token speaks for.
    fn application(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Refusal::unauthorized(
                "send the token from OUTPOST_STREAMS_TOKEN as Authorization: Bearer TOKEN",
            ))?;
        let mut parts = token.trim().splitn(3, '.');
        let (Some(application), Some(instance), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Refusal::forbidden("this token is not an Outpost streams token"));
        };
        let mac =
            hex::decode(mac).map_err(|_| Refusal::forbidden("this token is not an Outpost streams token"))?;
        hmac::verify(&self.key, format!("{application}.{instance}").as_bytes(), &mac)
            .map_err(|_| Refusal::forbidden("this token was not issued by this host's agent"))?;
        let current = self.desired.borrow().1.workloads.iter().any(|w| {
            w.application == application
                && w.instances
                    .iter()
                    .any(|i| i.name == instance && i.host == self.host)
        });
        if !current {
            return Err(Refusal::forbidden(format!(
                "instance {instance:?} no longer runs here; its token is void"
            )));
        }
        Ok(application.to_string())
    }

    /// The topic a request may use: one of its own application's, in a
    /// direction that allows what it asks (`produce` or read).
    fn authorize(&self, headers: &HeaderMap, topic: &str, produce: bool) -> Result<TopicKey, Refusal> {
        let application = self.application(headers)?;
        let key = TopicKey::new(&application, topic);
        let Some(direction) = self.streams.declared(&key) else {
            return Err(Refusal::forbidden(format!(
                "application {application:?} has no topic {topic:?}"
            )));
        };
        match (direction, produce) {
            (Direction::Up | Direction::Local, true) | (Direction::Down | Direction::Local, false) => Ok(key),
            (Direction::Down, true) => Err(Refusal::forbidden(format!(
                "{topic:?} is {} topic: the centre publishes to it, and sites read it",
                Direction::Down.with_article()
            ))),
            (Direction::Up, false) => Err(Refusal::forbidden(format!(
                "{topic:?} is {} topic: sites write it, and the centre reads it",
                Direction::Up.with_article()
            ))),
        }
    }
}

/// A refused request: its status and why, as `{"error": …}`.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl Refusal {
    fn unauthorized(why: impl Into<String>) -> Refusal {
        Refusal(StatusCode::UNAUTHORIZED, why.into())
    }
    fn forbidden(why: impl Into<String>) -> Refusal {
        Refusal(StatusCode::FORBIDDEN, why.into())
    }
    fn bad(why: impl Into<String>) -> Refusal {
        Refusal(StatusCode::BAD_REQUEST, why.into())
    }
    fn failed(err: anyhow::Error) -> Refusal {
        tracing::warn!(err = format!("{err:#}"), "a streams request failed");
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent could not store or read the topic; try again".to_string(),
        )
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Produced {
    first_offset: u64,
    last_offset: u64,
    records: usize,
}

/// The records of a body: the whole of it, or each non-empty line of NDJSON.
fn records(headers: &HeaderMap, body: &[u8]) -> Result<Vec<String>, Refusal> {
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson"));
    split_records(body, ndjson).map_err(|err| {
        let status = match err {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Empty | BodyError::NotText { .. } => StatusCode::BAD_REQUEST,
        };
        Refusal(status, err.to_string())
    })
}

async fn produce(
    State(endpoint): State<Arc<Endpoint>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Produced>, Refusal> {
    let key = endpoint.authorize(&headers, &topic, true)?;
    let records = records(&headers, &body)?;
    let (first_offset, last_offset) = endpoint
        .streams
        .produce(&key, &records)
        .await
        .map_err(Refusal::failed)?;
    Ok(axum::Json(Produced {
        first_offset,
        last_offset,
        records: records.len(),
    }))
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    from: Option<u64>,
    consumer: Option<String>,
    /// Seconds to wait for a record when none is there yet.
    #[serde(default)]
    wait: u64,
}

#[derive(Debug, Serialize)]
struct Record {
    offset: u64,
    /// When it was produced or published (RFC 3339, UTC).
    at: String,
    data: String,
}

#[derive(Debug, Serialize)]
struct Records {
    records: Vec<Record>,
    /// Where to read on from.
    next: u64,
}

fn rfc3339(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms.min(i64::MAX as u64) as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

async fn read(
    State(endpoint): State<Arc<Endpoint>>,
    Path(topic): Path<String>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let key = endpoint.authorize(&headers, &topic, false)?;
    if let Some(consumer) = &query.consumer
        && (consumer.is_empty() || consumer.len() > 128 || consumer.chars().any(char::is_control))
    {
        return Err(Refusal::bad(
            "a consumer name is 1 to 128 characters, without control characters",
        ));
    }
    let streams = &endpoint.streams;
    let from = match (query.from, &query.consumer) {
        (Some(from), Some(consumer)) => {
            streams
                .commit(&key, consumer, from)
                .await
                .map_err(Refusal::failed)?;
            from
        }
        (Some(from), None) => from,
        (None, Some(consumer)) => streams.offset(&key, consumer).await.map_err(Refusal::failed)?,
        (None, None) => 1,
    };
    let events = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if events {
        return Ok(follow(endpoint.streams.clone(), key, from, query.consumer).into_response());
    }
    let wait = Duration::from_secs(query.wait).min(MAX_WAIT);
    let mut changes = streams.changes();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        changes.borrow_and_update();
        let found = streams
            .read(&key, from, READ_RECORDS, READ_BYTES)
            .await
            .map_err(Refusal::failed)?;
        if !found.is_empty() || tokio::time::Instant::now() >= deadline {
            let next = found.last().map_or(from, |(seq, _)| seq + 1);
            let records = found
                .into_iter()
                .map(|(offset, item)| Record {
                    offset,
                    at: rfc3339(item.at),
                    data: item.data,
                })
                .collect();
            return Ok(axum::Json(Records { records, next }).into_response());
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            continue;
        }
    }
}

/// Records as server-sent events (`id` the offset), from `from` on, for as
/// long as the client listens. A named consumer's offset moves as events
/// are handed to the connection.
fn follow(
    streams: Arc<Streams>,
    key: TopicKey,
    from: u64,
    consumer: Option<String>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let changes = streams.changes();
    let stream = futures_util::stream::unfold(
        (streams, key, from, consumer, changes),
        |(streams, key, mut from, consumer, mut changes)| async move {
            // Asked for more: what was read before is handed to the connection.
            if let Some(consumer) = &consumer
                && let Err(err) = streams.commit(&key, consumer, from).await
            {
                tracing::warn!(err = format!("{err:#}"), topic = %key, "keeping a consumer's offset failed");
            }
            loop {
                changes.borrow_and_update();
                let found = match streams.read(&key, from, READ_RECORDS, READ_BYTES).await {
                    Ok(found) => found,
                    Err(err) => {
                        tracing::warn!(err = format!("{err:#}"), topic = %key, "following a topic failed");
                        return None;
                    }
                };
                if found.is_empty() {
                    changes.changed().await.ok()?;
                    continue;
                }
                from = found.last().map_or(from, |(seq, _)| seq + 1);
                let events: Vec<Result<Event, Infallible>> = found
                    .into_iter()
                    .map(|(offset, item)| Ok(Event::default().id(offset.to_string()).data(item.data)))
                    .collect();
                return Some((
                    futures_util::stream::iter(events),
                    (streams, key, from, consumer, changes),
                ));
            }
        },
    );
    use futures_util::StreamExt as _;
    Sse::new(stream.flatten()).keep_alive(KeepAlive::default())
}

/// Binds the endpoint where `listen` says and serves it until `shutdown`.
/// An address that cannot be bound is logged, not fatal: the workloads'
/// keeper does not stop for it, and containers are then given no address.
pub async fn start(
    listen: &Listen,
    runtime: &dyn crate::runtime::Runtime,
    parts: Parts<'_>,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<(Arc<Endpoint>, tokio::task::JoinHandle<()>)>> {
    let address = match listen {
        Listen::Address(address) => *address,
        Listen::Bridge(port) => match runtime.bridge_address().await {
            Ok(Some(ip)) => SocketAddr::new(ip, *port),
            Ok(None) => SocketAddr::from(([127, 0, 0, 1], *port)),
            Err(err) => {
                tracing::warn!(
                    err = format!("{err:#}"),
                    "no application streams endpoint (pass --streams-listen ADDRESS:PORT)"
                );
                return Ok(None);
            }
        },
    };
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::warn!(%address, %err, "no application streams endpoint (pick another address with --streams-listen)");
            return Ok(None);
        }
    };
    let bound = listener.local_addr()?;
    let endpoint = Arc::new(Endpoint {
        streams: parts.streams,
        key: token_key(parts.pool).await?,
        host: parts.host.to_string(),
        desired: parts.desired,
        url: format!("http://{bound}"),
    });
    let serving = tokio::spawn(serve(listener, endpoint.clone(), shutdown));
    Ok(Some((endpoint, serving)))
}

/// Serves the endpoint on `listener` until `shutdown`.
async fn serve(
    listener: tokio::net::TcpListener,
    endpoint: Arc<Endpoint>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, url = %endpoint.url, "serving application streams");
    }
    let app = Router::new()
        .route("/v1/streams/{topic}", get(read).post(produce))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(endpoint);
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::warn!(%err, "the streams endpoint failed");
    }
}

/// Where the endpoint listens: `ADDRESS:PORT`, or `bridge:PORT` for the
/// gateway address of the container engine's default bridge (what
/// containers on any of its networks can reach).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Address(SocketAddr),
    Bridge(u16),
}

/// The default: the engine's bridge, port 7890.
pub const DEFAULT_LISTEN: &str = "bridge:7890";

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(port) = s.strip_prefix("bridge:") {
            return port
                .parse()
                .map(Listen::Bridge)
                .map_err(|_| format!("{port:?} is not a port"));
        }
        s.parse().map(Listen::Address).map_err(|_| {
            format!("{s:?} is not ADDRESS:PORT or bridge:PORT (such as 172.17.0.1:7890 or {DEFAULT_LISTEN})")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_api::stream::MAX_RECORD_BYTES;

    #[test]
    fn ndjson_is_asked_for_by_content_type() {
        let mut ndjson = HeaderMap::new();
        ndjson.insert(header::CONTENT_TYPE, "application/x-ndjson".parse().unwrap());
        assert_eq!(records(&ndjson, b"a\nb").unwrap(), ["a", "b"]);
        assert_eq!(records(&HeaderMap::new(), b"a\nb").unwrap(), ["a\nb"]);
        assert_eq!(
            records(&HeaderMap::new(), b"").unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        let large = vec![b'x'; MAX_RECORD_BYTES + 1];
        assert_eq!(
            records(&ndjson, &large).unwrap_err().0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn listening_addresses_parse() {
        assert_eq!("bridge:7890".parse::<Listen>(), Ok(Listen::Bridge(7890)));
        assert_eq!(
            "127.0.0.1:1".parse::<Listen>(),
            Ok(Listen::Address("127.0.0.1:1".parse().unwrap()))
        );
        assert!("bridge:x".parse::<Listen>().unwrap_err().contains("not a port"));
        assert!("nowhere".parse::<Listen>().unwrap_err().contains("bridge:PORT"));
    }
}
