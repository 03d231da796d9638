//! The agent gateway (gRPC over mutual TLS): enrollment, then one session
//! per connected host that carries the site's desired state down and
//! acknowledgements and status up.
//!
//! **Architecture Invariant:** a session's site and host come only from its
//! client certificate; nothing an agent says can claim another identity.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use outpost_api::workload::SiteState;
use outpost_proto::codec::{self, HEARTBEAT};
use outpost_proto::traffic::Traffic;
use outpost_proto::v1::agent_gateway_server::AgentGateway;
use outpost_proto::v1::{
    AgentMessage, Batch, BatchAck, ControlMessage, EnrollRequest, EnrollResponse, Heartbeat, Hello,
    LogRequest, StatusReport, SyncRequest, SyncResponse, agent_message, control_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::agent_listener::AgentConnectInfo;
use crate::auth;
use crate::enrollment::Enrollments;
use crate::fleet::Fleet;
use crate::pki::{self, HostCertificate, Pki};
use crate::revocation::Revocations;
use crate::store::{InstanceRecord, Storage, StoreError};

/// How long a new session may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Heartbeats per second the control plane is sized for: past
/// `MAX_HEARTBEAT_RATE × 3 × HEARTBEAT` hosts, the offline grace grows
/// with the fleet, as Nomad spreads its heartbeat TTLs.
const MAX_HEARTBEAT_RATE: f64 = 50.0;
/// How long a session may stay silent before its host counts as offline:
/// three missed heartbeats, or more in a fleet so large that the control
/// plane could fall behind, plus up to 10% jitter so that hosts cut off
/// together are not all declared offline in the same instant. Offline is
/// only shown; nothing is torn down.
pub fn offline_grace(hosts: usize, jitter: f64) -> Duration {
    let base = (HEARTBEAT * 3).max(Duration::from_secs_f64(hosts as f64 / MAX_HEARTBEAT_RATE));
    base.mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.1)
}

pub struct Gateway {
    pub store: Arc<dyn Storage>,
    pub fleet: Arc<Fleet>,
    pub pki: Arc<Pki>,
    /// Becomes true when the control plane stops: sessions end so that the
    /// server can drain (agents reconnect later).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Cloned into every session, so that shutdown can wait for them all.
    pub live: mpsc::Sender<()>,
    /// The interval polling agents are told to use, if not their own.
    pub poll_interval: Option<Duration>,
    pub revocations: Arc<Revocations>,
    pub enrollments: Arc<Enrollments>,
}

fn internal(err: impl std::fmt::Display) -> Status {
    tracing::error!(%err, "agent gateway failure");
    Status::internal("internal error; the control plane's log has the details")
}

/// The connection a request came on: peer, byte counter, certificate.
fn connection<T>(request: &Request<T>) -> Option<&AgentConnectInfo> {
    request.extensions().get::<AgentConnectInfo>()
}

impl Gateway {
    /// The host a request's certificate names, checked on every call: the
    /// certificate is not revoked, and it is the one the host was issued
    /// (a host enrolled before serials were recorded has none to compare).
    async fn identity<T>(&self, request: &Request<T>) -> Result<HostCertificate, Status> {
        let certificate = connection(request)
            .and_then(|c| c.certificate.clone())
            .ok_or_else(|| Status::unauthenticated("a host certificate is required (enroll first)"))?;
        let HostCertificate { site, host, serial } = &certificate;
        if self.revocations.is_revoked(serial) {
            return Err(Status::permission_denied("this host certificate is revoked"));
        }
        match self.store.host(site, host).await.map_err(internal)? {
            None => Err(Status::permission_denied(format!(
                "host {host:?} of site {site:?} is not enrolled"
            ))),
            Some(record) if record.cert_serial.as_ref().is_some_and(|s| s != serial) => Err(
                Status::permission_denied("this certificate is not the one the host was issued"),
            ),
            Some(_) => Ok(certificate),
        }
    }

    async fn enroll_checked(&self, request: EnrollRequest) -> Result<EnrollResponse, Status> {
        let (fingerprint, secret_hash) = auth::parse_join_token(&request.join_token).ok_or_else(|| {
            Status::invalid_argument("the join token is malformed (expected opj1.FINGERPRINT.SECRET)")
        })?;
        if fingerprint != self.pki.ca_fingerprint() {
            return Err(Status::permission_denied(
                "the join token was issued by another control plane",
            ));
        }
        let host = request.host_name.trim();
        if let Err(why) = host.parse::<outpost_api::manifest::Name>() {
            return Err(Status::invalid_argument(format!("host name: {why}")));
        }
        // Check the CSR before the token is used up.
        rcgen::CertificateSigningRequestParams::from_pem(&request.csr_pem)
            .map_err(|_| Status::invalid_argument("the CSR is not a valid PKCS#10 request"))?;
        let serial = pki::new_serial();
        let site = match self.store.redeem_join_token(&secret_hash, host, &serial).await {
            Ok(site) => site,
            Err(StoreError::NotFound { .. }) => return Err(Status::unauthenticated("unknown join token")),
            Err(StoreError::Conflict(why)) => return Err(Status::permission_denied(why)),
            Err(err) => return Err(internal(err)),
        };
        let certificate_pem = self
            .pki
            .sign_host_csr(&request.csr_pem, &site, host, &serial)
            .map_err(internal)?;
        tracing::info!(%site, %host, %serial, "host enrolled");
        if let Err(err) = self.fleet.recompute_site(&site).await {
            tracing::error!(%err, "recomputing desired state after enrollment");
        }
        Ok(EnrollResponse {
            certificate_pem,
            ca_pem: self.pki.ca_pem.clone(),
            site,
            host: host.to_string(),
        })
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentGateway for Gateway {
    async fn enroll(&self, request: Request<EnrollRequest>) -> Result<Response<EnrollResponse>, Status> {
        let source = connection(&request).and_then(|c| c.remote).map(|peer| peer.ip());
        let now = std::time::Instant::now();
        if let Err(wait) = self.enrollments.admit(source, now) {
            return Err(Status::resource_exhausted(format!(
                "too many failed enrollments from this address; try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        match self.enroll_checked(request.into_inner()).await {
            Ok(response) => Ok(Response::new(response)),
            Err(status) => {
                if status.code() != tonic::Code::Internal {
                    self.enrollments.failed(source, status.message(), now);
                }
                Err(status)
            }
        }
    }

    async fn sync(&self, request: Request<SyncRequest>) -> Result<Response<SyncResponse>, Status> {
        let HostCertificate { site, host, .. } = self.identity(&request).await?;
        if let Some(connection) = connection(&request) {
            book_when_closed(self.store.clone(), &site, &host, connection.traffic.clone());
        }
        let request = request.into_inner();
        let hello = request
            .hello
            .ok_or_else(|| Status::invalid_argument("a sync carries a hello"))?;
        check_protocol(&hello)?;
        record_hello(self.store.as_ref(), &self.fleet, &site, &host, &hello)
            .await
            .map_err(internal)?;
        if let Some(report) = request.status {
            record_status(self.store.as_ref(), &site, &host, report)
                .await
                .map_err(internal)?;
        }
        let batch_ack = match &request.batch {
            Some(batch) => Some(BatchAck {
                through_seq: store_batch(self.store.as_ref(), &site, &host, batch).await?,
            }),
            None => None,
        };
        let interval = self
            .poll_interval
            .unwrap_or(Duration::from_secs(u64::from(request.interval_seconds.max(1))));
        // Online until it is overdue: two intervals and the usual grace.
        self.fleet
            .presence
            .polled(&site, &host, interval * 2 + HEARTBEAT * 3);
        let manifest = match self.store.site_state(&site).await.map_err(internal)? {
            Some((revision, state)) if revision as u64 != hello.applied_revision => {
                Some(codec::full_manifest(revision as u64, &state).map_err(internal)?)
            }
            _ => None,
        };
        tracing::debug!(%site, %host, revision = hello.applied_revision, sends = manifest.is_some(), "agent polled");
        Ok(Response::new(SyncResponse {
            manifest,
            batch_ack,
            interval_seconds: self.poll_interval.map_or(0, |i| i.as_secs() as u32),
        }))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let HostCertificate { site, host, serial } = self.identity(&request).await?;
        let traffic = connection(&request)
            .map(|c| c.traffic.clone())
            .unwrap_or_default();
        let incoming = request.into_inner();
        let (sender, receiver) = mpsc::channel(16);
        let session = Session {
            traffic,
            booked: Default::default(),
            store: self.store.clone(),
            fleet: self.fleet.clone(),
            site,
            host,
            serial,
            revocations: self.revocations.clone(),
            sender,
            shutdown: self.shutdown.clone(),
            _live: self.live.clone(),
        };
        tokio::spawn(session.run(incoming));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

struct Session {
    /// The bytes of this session's connection, and how many of them are
    /// already added to the host's totals (received, sent).
    traffic: Arc<Traffic>,
    booked: parking_lot::Mutex<(u64, u64)>,
    store: Arc<dyn Storage>,
    fleet: Arc<Fleet>,
    site: String,
    host: String,
    /// The serial of the certificate it came with; the session ends when
    /// that is revoked.
    serial: String,
    revocations: Arc<Revocations>,
    sender: mpsc::Sender<Result<ControlMessage, Status>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    _live: mpsc::Sender<()>,
}

/// An error and its sources, as one line: `batch 3 holds an unreadable record: expected value at line 1`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn check_protocol(hello: &Hello) -> Result<(), Status> {
    if hello.protocol_version == outpost_proto::PROTOCOL_VERSION {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "protocol version {} is not supported (this control plane speaks {})",
        hello.protocol_version,
        outpost_proto::PROTOCOL_VERSION
    )))
}

/// Records what a hello says (facts, agent version, applied revision).
async fn record_hello(
    store: &dyn Storage,
    fleet: &Fleet,
    site: &str,
    host: &str,
    hello: &Hello,
) -> Result<(), String> {
    let facts = hello
        .facts
        .as_ref()
        .map(|f| f.labels.clone().into_iter().collect())
        .unwrap_or_default();
    record_facts(
        store,
        fleet,
        site,
        host,
        &facts,
        &hello.agent_version,
        hello.applied_revision as i64,
    )
    .await
}

/// Stores a host's facts; recomputes its site if they changed.
async fn record_facts(
    store: &dyn Storage,
    fleet: &Fleet,
    site: &str,
    host: &str,
    facts: &BTreeMap<String, String>,
    version: &str,
    revision: i64,
) -> Result<(), String> {
    let changed = store
        .record_hello(site, host, facts, version, revision)
        .await
        .map_err(|e| e.to_string())?;
    if changed {
        fleet.recompute_site(site).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn record_status(
    store: &dyn Storage,
    site: &str,
    host: &str,
    report: StatusReport,
) -> Result<(), String> {
    let at = crate::store::now_rfc3339();
    let instances: Vec<InstanceRecord> = report
        .instances
        .into_iter()
        .map(|i| InstanceRecord {
            exit_code: matches!(i.state.as_str(), "exited" | "failed").then_some(i.exit_code),
            site: site.to_string(),
            host: host.to_string(),
            instance: i.instance,
            application: i.application,
            service: i.service,
            spec_hash: i.spec_hash,
            state: i.state,
            reason: i.reason,
            updated_at: at.clone(),
        })
        .collect();
    store
        .record_status(site, host, &instances)
        .await
        .map_err(|e| e.to_string())
}

/// Stores a batch's new records; returns the sequence number to acknowledge.
async fn store_batch(store: &dyn Storage, site: &str, host: &str, batch: &Batch) -> Result<u64, Status> {
    let records = codec::decode_batch(batch).map_err(|err| {
        let why = chain(&err);
        tracing::warn!(%site, %host, %why, "refused a batch from an agent");
        Status::invalid_argument(why)
    })?;
    store
        .store_records(site, host, batch.first_seq, &records, batch.dropped)
        .await
        .map_err(internal)
}

/// Books a polled connection's bytes to its host once the agent closes it
/// (a poll's answer is counted only as it is written).
fn book_when_closed(store: Arc<dyn Storage>, site: &str, host: &str, traffic: Arc<Traffic>) {
    if !traffic.claim() {
        return;
    }
    let (site, host) = (site.to_string(), host.to_string());
    tokio::spawn(async move {
        // The connection holds the other reference until it closes.
        let mut waited = Duration::ZERO;
        while Arc::strong_count(&traffic) > 1 && waited < Duration::from_secs(600) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            waited += Duration::from_secs(1);
        }
        if let Err(err) = store
            .add_traffic(&site, &host, traffic.received(), traffic.sent())
            .await
        {
            tracing::warn!(%err, "recording the traffic of a host");
        }
    });
}

/// Resolves when the control plane starts to stop.
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Session {
    async fn run(self, mut incoming: Streaming<AgentMessage>) {
        let (site, host) = (self.site.clone(), self.host.clone());
        if let Err(err) = self.serve(&mut incoming).await {
            tracing::info!(%site, %host, %err, "session ended");
        }
        if let Err(err) = self.store.record_seen(&site, &host, None).await {
            tracing::warn!(%err, "recording when a host was last seen");
        }
        if let Err(err) = self.book_traffic().await {
            tracing::warn!(%err, "recording the traffic of a host");
        }
    }

    /// Adds the bytes counted since the last call to the host's totals.
    async fn book_traffic(&self) -> Result<(), String> {
        let now = (self.traffic.received(), self.traffic.sent());
        let before = std::mem::replace(&mut *self.booked.lock(), now);
        let (received, sent) = (now.0 - before.0, now.1 - before.1);
        if received + sent == 0 {
            return Ok(());
        }
        self.store
            .add_traffic(&self.site, &self.host, received, sent)
            .await
            .map_err(|e| e.to_string())
    }

    async fn send(&self, body: control_message::Body) -> Result<(), String> {
        self.sender
            .send(Ok(ControlMessage { body: Some(body) }))
            .await
            .map_err(|_| "the agent went away".to_string())
    }

    async fn serve(&self, incoming: &mut Streaming<AgentMessage>) -> Result<(), String> {
        let mut shutdown = self.shutdown.clone();
        let first = tokio::time::timeout(HELLO_TIMEOUT, incoming.message())
            .await
            .map_err(|_| "no hello in time".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or("closed before hello")?;
        let Some(agent_message::Body::Hello(hello)) = first.body else {
            return Err("the first message was not a hello".to_string());
        };
        if let Err(status) = check_protocol(&hello) {
            let _ = self.sender.send(Err(status)).await;
            return Err("unsupported protocol version".to_string());
        }
        record_hello(self.store.as_ref(), &self.fleet, &self.site, &self.host, &hello).await?;
        let (_online, mut log_requests) = self.fleet.presence.connect(&self.site, &self.host);
        // Log requests sent to the agent and not yet answered, by id.
        let mut pending: std::collections::HashMap<u64, crate::presence::LiveLogs> = Default::default();
        let mut next_request = 0u64;
        tracing::info!(site = %self.site, host = %self.host, agent = %hello.agent_version, revision = hello.applied_revision, "agent connected");

        let mut revisions = self.fleet.subscribe(&self.site);
        let mut revoked = self.revocations.subscribe();
        let mut sent: Option<(i64, SiteState)> = None;
        let mut agent_revision = hello.applied_revision as i64;
        self.push_state(&mut sent, agent_revision).await?;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        let grace = || offline_grace(self.fleet.presence.online_hosts(), rand::random());
        let mut silent_until = tokio::time::Instant::now() + grace();
        loop {
            tokio::select! {
                message = incoming.message() => {
                    silent_until = tokio::time::Instant::now() + grace();
                    let Some(message) = message.map_err(|e| e.to_string())? else {
                        return Err("the agent closed the session".to_string());
                    };
                    if let Some(agent_message::Body::LogReply(reply)) = &message.body {
                        if let Some(request) = pending.remove(&reply.id) {
                            let _ = request.reply.send(codec::decode_log_reply(reply));
                        }
                        continue;
                    }
                    if let Some(revision) = self.handle(message).await? {
                        agent_revision = revision;
                    }
                }
                Some(request) = log_requests.recv() => {
                    next_request += 1;
                    let ask = LogRequest {
                        id: next_request,
                        application: request.application.clone(),
                        service: request.service.clone(),
                        since_unix: request.since_unix,
                        tail: request.tail,
                    };
                    pending.insert(next_request, request);
                    self.send(control_message::Body::LogRequest(ask)).await?;
                }
                changed = revisions.changed() => {
                    changed.map_err(|_| "the control plane is stopping".to_string())?;
                    self.push_state(&mut sent, agent_revision).await?;
                }
                _ = heartbeat.tick() => {
                    self.send(control_message::Body::Heartbeat(Heartbeat { sent_at_unix_ms: now_ms() })).await?;
                    self.book_traffic().await?;
                }
                () = tokio::time::sleep_until(silent_until) => {
                    return Err("no word from the agent within the offline grace; it is offline".to_string());
                }
                Ok(()) = revoked.changed() => {
                    if self.revocations.is_revoked(&self.serial) {
                        let _ = self.sender.send(Err(Status::permission_denied("this host certificate is revoked"))).await;
                        return Err("its certificate was revoked".to_string());
                    }
                }
                () = stopping(&mut shutdown) => {
                    let _ = self.sender.send(Err(Status::unavailable("the control plane is stopping"))).await;
                    return Err("the control plane is stopping".to_string());
                }
            }
        }
    }

    async fn record_facts(
        &self,
        facts: &BTreeMap<String, String>,
        version: &str,
        revision: i64,
    ) -> Result<(), String> {
        record_facts(
            self.store.as_ref(),
            &self.fleet,
            &self.site,
            &self.host,
            facts,
            version,
            revision,
        )
        .await
    }

    /// Returns the revision the agent acknowledged, if the message was an ack.
    async fn handle(&self, message: AgentMessage) -> Result<Option<i64>, String> {
        let (site, host) = (&self.site, &self.host);
        match message.body {
            Some(agent_message::Body::Ack(ack)) => {
                let revision = ack.revision as i64;
                self.store
                    .record_seen(site, host, Some(revision))
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(Some(revision));
            }
            Some(agent_message::Body::Status(report)) => {
                record_status(self.store.as_ref(), site, host, report).await?;
            }
            Some(agent_message::Body::Heartbeat(_)) => {
                self.store
                    .record_seen(site, host, None)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Some(agent_message::Body::Facts(facts)) => {
                let host_record = self.store.host(site, host).await.map_err(|e| e.to_string())?;
                let (version, revision) = host_record
                    .map(|h| (h.agent_version, h.applied_revision))
                    .unwrap_or_default();
                self.record_facts(&facts.labels.into_iter().collect(), &version, revision)
                    .await?;
            }
            Some(agent_message::Body::Batch(batch)) => {
                let through = match store_batch(self.store.as_ref(), site, host, &batch).await {
                    Ok(through) => through,
                    Err(status) => {
                        let why = status.message().to_string();
                        let _ = self.sender.send(Err(status)).await;
                        return Err(why);
                    }
                };
                self.send(control_message::Body::BatchAck(BatchAck { through_seq: through }))
                    .await?;
            }
            // Log replies are matched to their requests in `serve`.
            Some(agent_message::Body::Hello(_) | agent_message::Body::LogReply(_)) | None => {}
        }
        Ok(None)
    }

    /// Sends the site's state if the agent lacks it: in full the first time,
    /// then only the workloads that changed.
    async fn push_state(
        &self,
        sent: &mut Option<(i64, SiteState)>,
        agent_revision: i64,
    ) -> Result<(), String> {
        let Some((revision, state)) = self
            .store
            .site_state(&self.site)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        if revision == agent_revision && sent.is_none() {
            // The agent persisted this revision before: nothing to send.
            *sent = Some((revision, state));
            return Ok(());
        }
        if sent.as_ref().is_some_and(|(r, _)| *r == revision) {
            return Ok(());
        }
        let manifest = match sent.as_ref() {
            Some((base, previous)) => codec::delta_manifest(*base as u64, previous, revision as u64, &state),
            None => codec::full_manifest(revision as u64, &state),
        }
        .map_err(|e| format!("encoding the site's state: {e}"))?;
        tracing::debug!(site = %self.site, host = %self.host, revision, full = manifest.full, "sending desired state");
        self.send(control_message::Body::Manifest(manifest)).await?;
        *sent = Some((revision, state));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offline_grace_grows_with_the_fleet() {
        // Small fleets: three missed heartbeats.
        assert_eq!(offline_grace(1, 0.0), HEARTBEAT * 3);
        assert_eq!(offline_grace(18_000, 0.0), HEARTBEAT * 3);
        // Past 50 heartbeats a second, the grace is the time to hear from all.
        assert_eq!(offline_grace(50_000, 0.0), Duration::from_secs(1000));
        // Jitter adds at most 10%.
        assert_eq!(offline_grace(1, 1.0), HEARTBEAT * 3 + HEARTBEAT * 3 / 10);
        assert_eq!(offline_grace(1, 7.0), offline_grace(1, 1.0));
    }
}
