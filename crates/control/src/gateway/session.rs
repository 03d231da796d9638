//! One agent's session: hello, then the site's state down (in full, then
//! deltas) and status, batches and log replies up, heartbeats both ways,
//! until the agent goes quiet past its offline grace, its certificate is
//! revoked, or the control plane stops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use outpost_api::workload::SiteState;
use outpost_proto::codec::{self, HEARTBEAT};
use outpost_proto::traffic::Traffic;
use outpost_proto::v1::{
    AgentMessage, BatchAck, ControlMessage, Heartbeat, LogRequest, Wipe, agent_message, control_message,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{check_protocol, record_facts, record_hello, record_status, store_batch};
use crate::fleet::Fleet;
use crate::revocation::{Denied, Revocations};
use crate::store::{Storage, StoreError};
use crate::streams;

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

pub(super) struct Session {
    /// The bytes of this session's connection, and how many of them are
    /// already added to the host's totals (received, sent).
    pub(super) traffic: Arc<Traffic>,
    pub(super) booked: parking_lot::Mutex<(u64, u64)>,
    pub(super) store: Arc<dyn Storage>,
    pub(super) fleet: Arc<Fleet>,
    pub(super) site: String,
    pub(super) host: String,
    /// The serial of the certificate it came with; the session ends when
    /// that is revoked.
    pub(super) serial: String,
    /// The host's public key (from its certificate): secrets are sealed to it.
    pub(super) public_key: Vec<u8>,
    /// The certificate it came with (its CA decides whether it must renew).
    pub(super) certificate: crate::pki::HostCertificate,
    /// The generation of the CAs it was last told (`Pki::subscribe`).
    pub(super) trust_told: parking_lot::Mutex<Option<u64>>,
    pub(super) secrets: Arc<crate::secrets::Secrets>,
    /// Signs the head of each state sent (`outpost_proto::head`).
    pub(super) pki: Arc<crate::pki::Pki>,
    pub(super) revocations: Arc<Revocations>,
    pub(super) sender: mpsc::Sender<Result<ControlMessage, Status>>,
    pub(super) shutdown: tokio::sync::watch::Receiver<bool>,
    pub(super) _live: mpsc::Sender<()>,
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

/// What a handled message asks of the session's loop.
enum Handled {
    /// The agent acknowledged this revision.
    Revision(i64),
    /// The agent stored the down-records in flight.
    Delivered,
    Other,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionEnd {
    #[error("no hello in time")]
    NoHello,
    #[error("closed before hello")]
    ClosedBeforeHello,
    #[error("the first message was not a hello")]
    NotHello,
    #[error("unsupported protocol version")]
    Protocol,
    #[error("the agent closed the session")]
    Closed,
    #[error("the agent went away")]
    Gone,
    #[error("the agent's stream failed")]
    Stream(#[from] Status),
    #[error("a batch was refused: {0}")]
    Batch(String),
    #[error("application streams failed: {0}")]
    Streams(String),
    #[error("no word from the agent within the offline grace; it is offline")]
    Silent,
    #[error("{}", .0.message())]
    Denied(Denied),
    #[error("the control plane is stopping")]
    Stopping,
    #[error("the store failed")]
    Store(#[from] StoreError),
    #[error("encoding the site's state failed")]
    Encode(#[from] codec::CodecError),
    #[error("the site's secrets could not be sealed")]
    Secrets(#[from] crate::secrets::SecretError),
    #[error("the state's head could not be signed: {0:#}")]
    Sign(anyhow::Error),
}

impl Session {
    pub(super) async fn run(self, mut incoming: Streaming<AgentMessage>) {
        let (site, host) = (self.site.clone(), self.host.clone());
        if let Err(end) = self.serve(&mut incoming).await {
            let err = crate::error_chain(&end);
            tracing::info!(%site, %host, %err, "session ended");
        }
        if let Err(err) = self.store.record_seen(&site, &host, None).await {
            tracing::warn!(%err, "recording when a host was last seen");
        }
        self.book_traffic();
    }

    /// Adds the bytes counted since the last call to the host's totals
    /// (with the next batch written down).
    fn book_traffic(&self) {
        let now = (self.traffic.received(), self.traffic.sent());
        let before = std::mem::replace(&mut *self.booked.lock(), now);
        let (received, sent) = (now.0 - before.0, now.1 - before.1);
        if received + sent > 0 {
            self.fleet
                .presence
                .count_traffic(&self.site, &self.host, received, sent);
        }
    }

    async fn send(&self, body: control_message::Body) -> Result<(), SessionEnd> {
        self.sender
            .send(Ok(ControlMessage { body: Some(body) }))
            .await
            .map_err(|_| SessionEnd::Gone)
    }

    async fn serve(&self, incoming: &mut Streaming<AgentMessage>) -> Result<(), SessionEnd> {
        let mut shutdown = self.shutdown.clone();
        let first = tokio::time::timeout(HELLO_TIMEOUT, incoming.message())
            .await
            .map_err(|_| SessionEnd::NoHello)??
            .ok_or(SessionEnd::ClosedBeforeHello)?;
        let Some(agent_message::Body::Hello(hello)) = first.body else {
            return Err(SessionEnd::NotHello);
        };
        if let Err(status) = check_protocol(&hello) {
            let _ = self.sender.send(Err(status)).await;
            return Err(SessionEnd::Protocol);
        }
        record_hello(self.store.as_ref(), &self.fleet, &self.site, &self.host, &hello).await?;
        let (_online, mut log_requests) = self.fleet.presence.connect(&self.site, &self.host);
        // Log requests sent to the agent and not yet answered, by id.
        let mut pending: std::collections::HashMap<u64, crate::presence::LiveLogs> = Default::default();
        let mut next_request = 0u64;
        tracing::info!(site = %self.site, host = %self.host, agent = %hello.agent_version, revision = hello.applied_revision, "agent connected");

        let mut revisions = self.fleet.subscribe(&self.site);
        let mut revoked = self.revocations.subscribe();
        let mut cas = self.pki.subscribe();
        let generation = *cas.borrow_and_update();
        self.tell_trust(generation).await?;
        let mut sent: Option<(i64, SiteState)> = None;
        let mut agent_revision = hello.applied_revision as i64;
        self.push_state(&mut sent, agent_revision).await?;
        // One batch of down-records in flight at a time.
        let mut published = self.fleet.streams.published();
        let mut down_in_flight = self.send_down(&sent).await?;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        let grace = || offline_grace(self.fleet.presence.online_hosts(), rand::random());
        let mut silent_until = tokio::time::Instant::now() + grace();
        loop {
            tokio::select! {
                message = incoming.message() => {
                    silent_until = tokio::time::Instant::now() + grace();
                    self.fleet.presence.heard(&self.site, &self.host);
                    let Some(message) = message? else {
                        return Err(SessionEnd::Closed);
                    };
                    if let Some(agent_message::Body::LogReply(reply)) = &message.body {
                        if let Some(request) = pending.remove(&reply.id) {
                            let _ = request.reply.send(codec::decode_log_reply(reply));
                        }
                        continue;
                    }
                    let state = sent.as_ref().map(|(_, state)| state);
                    match self.handle(message, state).await? {
                        Handled::Revision(revision) => agent_revision = revision,
                        Handled::Delivered => down_in_flight = self.send_down(&sent).await?,
                        Handled::Other => {}
                    }
                }
                changed = published.changed(), if !down_in_flight => {
                    changed.map_err(|_| SessionEnd::Stopping)?;
                    down_in_flight = self.send_down(&sent).await?;
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
                    changed.map_err(|_| SessionEnd::Stopping)?;
                    self.push_state(&mut sent, agent_revision).await?;
                    if !down_in_flight {
                        down_in_flight = self.send_down(&sent).await?;
                    }
                }
                _ = heartbeat.tick() => {
                    self.send(control_message::Body::Heartbeat(Heartbeat { sent_at_unix_ms: now_ms() })).await?;
                    self.book_traffic();
                }
                () = tokio::time::sleep_until(silent_until) => {
                    return Err(SessionEnd::Silent);
                }
                Ok(()) = cas.changed() => {
                    let generation = *cas.borrow_and_update();
                    self.tell_trust(generation).await?;
                }
                Ok(()) = revoked.changed() => {
                    if let Some(denied) = self.revocations.denied(&self.site, &self.host, &self.serial) {
                        if denied == (Denied::Blocked { wipe: true }) {
                            self.send(control_message::Body::Wipe(Wipe {})).await?;
                        }
                        let _ = self.sender.send(Err(Status::permission_denied(denied.message()))).await;
                        return Err(SessionEnd::Denied(denied));
                    }
                }
                () = stopping(&mut shutdown) => {
                    let _ = self.sender.send(Err(Status::unavailable("the control plane is stopping"))).await;
                    return Err(SessionEnd::Stopping);
                }
            }
        }
    }

    /// Tells the agent the CAs trusted now (and to renew under the current
    /// one if its certificate is of another), unless it was told this
    /// generation of them already. Called before anything they sign.
    async fn tell_trust(&self, generation: u64) -> Result<(), SessionEnd> {
        if self.trust_told.lock().replace(generation) == Some(generation) {
            return Ok(());
        }
        if let Some(trust) = super::trust_for(&self.pki, None, &self.certificate) {
            self.send(control_message::Body::Trust(trust)).await?;
        }
        Ok(())
    }

    async fn record_facts(
        &self,
        facts: &BTreeMap<String, String>,
        version: &str,
        revision: i64,
    ) -> Result<(), StoreError> {
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

    /// Sends the host the next down-records its site has not stored, if
    /// any wait; returns whether a batch is now in flight.
    async fn send_down(&self, sent: &Option<(i64, SiteState)>) -> Result<bool, SessionEnd> {
        let Some((_, state)) = sent else {
            return Ok(false);
        };
        let batch = streams::next_down(
            self.store.as_ref(),
            &self.secrets,
            state,
            (&self.site, &self.host),
        )
        .await
        .map_err(|err| SessionEnd::Streams(err.to_string()))?;
        match batch {
            Some(batch) => {
                self.send(control_message::Body::StreamBatch(batch)).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Handles one message; says what the loop must act on.
    async fn handle(&self, message: AgentMessage, state: Option<&SiteState>) -> Result<Handled, SessionEnd> {
        let (site, host) = (&self.site, &self.host);
        match message.body {
            Some(agent_message::Body::Ack(ack)) => {
                let revision = ack.revision as i64;
                self.store.record_seen(site, host, Some(revision)).await?;
                return Ok(Handled::Revision(revision));
            }
            Some(agent_message::Body::StreamBatch(batch)) => {
                let empty = SiteState::default();
                let state = state.unwrap_or(&empty);
                let accepted = streams::accept_up(
                    self.store.as_ref(),
                    &self.secrets,
                    &self.fleet.streams,
                    state,
                    (site, host),
                    &batch,
                )
                .await;
                match accepted {
                    Ok(ack) => self.send(control_message::Body::StreamAck(ack)).await?,
                    Err(streams::Refused::Store(err)) => return Err(err.into()),
                    Err(refused) => {
                        let why = refused.to_string();
                        let _ = self.sender.send(Err(Status::invalid_argument(why.clone()))).await;
                        return Err(SessionEnd::Batch(why));
                    }
                }
            }
            Some(agent_message::Body::StreamReceived(ack)) => {
                streams::delivered(self.store.as_ref(), (site, host), &ack).await?;
                return Ok(Handled::Delivered);
            }
            Some(agent_message::Body::Streams(report)) => match codec::decode_stream_report(&report) {
                Ok(topics) => self.store.record_host_streams(site, host, &topics).await?,
                Err(err) => tracing::warn!(%site, %host, %err, "an unreadable stream report"),
            },
            Some(agent_message::Body::Cluster(report)) => match codec::decode_cluster_report(&report) {
                Ok(status) => {
                    self.fleet.pin_reported(site, &status).await?;
                    self.fleet.presence.record_cluster(site, host, status);
                }
                Err(err) => tracing::warn!(%site, %host, %err, "an unreadable cluster report"),
            },
            Some(agent_message::Body::Status(report)) => {
                record_status(self.store.as_ref(), &self.fleet, site, host, report).await?;
            }
            Some(agent_message::Body::Heartbeat(_)) => {
                self.fleet.presence.heartbeat(site, host);
            }
            Some(agent_message::Body::Facts(facts)) => {
                let host_record = self.store.host(site, host).await?;
                let (version, revision) = host_record
                    .map(|h| (h.agent_version, h.applied_revision))
                    .unwrap_or_default();
                self.record_facts(&facts.labels.into_iter().collect(), &version, revision)
                    .await?;
            }
            Some(agent_message::Body::Batch(batch)) => {
                let through = match store_batch(self.store.as_ref(), &self.secrets, site, host, &batch).await
                {
                    Ok(through) => through,
                    Err(status) => {
                        let why = status.message().to_string();
                        let _ = self.sender.send(Err(status)).await;
                        return Err(SessionEnd::Batch(why));
                    }
                };
                self.send(control_message::Body::BatchAck(BatchAck { through_seq: through }))
                    .await?;
            }
            // Log replies are matched to their requests in `serve`.
            Some(agent_message::Body::Hello(_) | agent_message::Body::LogReply(_)) | None => {}
        }
        Ok(Handled::Other)
    }

    /// Sends the site's state if the agent lacks it: in full the first time,
    /// then only the workloads that changed.
    async fn push_state(
        &self,
        sent: &mut Option<(i64, SiteState)>,
        agent_revision: i64,
    ) -> Result<(), SessionEnd> {
        let Some((revision, state)) = self.store.site_state(&self.site).await? else {
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
        let mut manifest = match sent.as_ref() {
            Some((base, previous)) => codec::delta_manifest(*base as u64, previous, revision as u64, &state),
            None => codec::full_manifest(revision as u64, &state),
        }?;
        let wanted = codec::secrets_to_send(sent.as_ref().map(|(_, previous)| previous), &state);
        manifest.secrets = self.secrets.seal(&self.public_key, &wanted).await?;
        // The agent must trust the CA that signs the head.
        self.tell_trust(self.pki.generation()).await?;
        (manifest.head, manifest.head_signature) = self
            .pki
            .sign_state(&self.site, revision as u64, &state)
            .map_err(SessionEnd::Sign)?;
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
