//! The outbound session to the control plane: hello, then desired state
//! down (persisted before it is acknowledged) and status up, heartbeats
//! both ways; reconnects with exponential backoff and jitter. Nothing here
//! stops a workload: losing the uplink only means waiting.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use outpost_api::workload::SiteState;
use outpost_proto::codec::{self, HEARTBEAT};
use outpost_proto::v1::agent_gateway_client::AgentGatewayClient;
use outpost_proto::v1::{
    Ack, AgentMessage, Heartbeat, Hello, HostFacts, LogReply, LogRequest, SiteManifest, StatusReport,
    StreamAck, StreamBatch, StreamReport, SyncRequest, agent_message, control_message,
};
use rand::Rng;
use rustls::ClientConfig;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::outbox::Outbox;
use crate::store::DesiredStore;
use crate::streams::{Streams, TopicKey};
use crate::tls;

/// How often the uplink's byte counts are logged.
const UPLINK_REPORT: Duration = Duration::from_secs(600);
/// How often the host is looked at again (a camera plugged in, memory added).
const REDISCOVER: Duration = Duration::from_secs(60);
/// Without a word from the control plane for this long (three missed
/// heartbeats), the session is dead.
const SILENCE: Duration = Duration::from_secs(3 * HEARTBEAT.as_secs());
const RECONNECT_MIN: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(60);
/// The most records, and bytes of them before compression, in one batch.
const BATCH_RECORDS: usize = 1000;
const BATCH_BYTES: usize = 512 << 10;

/// How often the topics' backlog is looked at, and reported if it changed;
/// also how soon a window that opened is noticed.
const STREAM_REPORT: Duration = Duration::from_secs(10);

/// The most calls one poll makes while queued records still wait.
const SYNCS_PER_POLL: usize = 100;

/// How the agent talks to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// One long-lived session: changes reach the site at once.
    #[default]
    Stream,
    /// A short call every interval and no connection in between: changes
    /// wait for the site's next poll.
    Poll(Duration),
}

/// Where host facts come from: the machine itself on a real host, a fixed
/// set in the fleet simulator.
pub type Discover = Box<dyn Fn() -> BTreeMap<String, String> + Send + Sync>;

pub struct Session {
    pub server: String,
    pub tls: Arc<ClientConfig>,
    /// The CAs this host trusts, which the control plane keeps current.
    pub trust: Arc<crate::trust::Trust>,
    /// Wakes the renewal of the host certificate (`identity::renew`).
    pub renew_now: Arc<tokio::sync::Notify>,
    pub store: Arc<dyn DesiredStore>,
    /// Where live log requests are answered from.
    pub runtime: Arc<dyn crate::runtime::Runtime>,
    /// Events, logs and metrics waiting for the control plane.
    pub outbox: Arc<dyn Outbox>,
    /// Looks at the host again (called every `REDISCOVER`).
    pub discover: Discover,
    pub facts: BTreeMap<String, String>,
    pub desired: Arc<watch::Sender<(u64, SiteState)>>,
    /// What this host reports: its instances, and the images it pre-stages.
    pub status: watch::Receiver<StatusReport>,
    /// True while a session with the control plane is established (in
    /// polling mode: since the last poll succeeded).
    pub connected: watch::Sender<bool>,
    pub mode: Mode,
    /// Where the site's other hosts reach this one (`--site-listen`).
    pub site_address: Option<String>,
    /// The application topics (none in the fleet simulator, unless asked).
    pub streams: Option<Arc<Streams>>,
    /// The site cluster this host is part of (`--site-listen`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Where secret files live, deleted by a wipe.
    pub secrets: Arc<crate::secrets::Secrets>,
}

/// The up batch in flight: its topic and last sequence number.
type InFlight = Option<(TopicKey, u64)>;
/// The topics' state and the cluster's, as last reported.
#[derive(Default)]
struct Reported {
    topics: Option<Vec<outpost_api::stream::TopicStatus>>,
    cluster: Option<outpost_api::wire::ClusterStatus>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Session {
    /// The host was blocked with `--wipe`: its workloads stop (an empty
    /// state at revision 0, so that an unblocked host gets its state again
    /// in full) and its secrets go, sealed copies and files alike. The
    /// session ends next, and reconnects are refused until an unblock.
    async fn wipe(&self) -> Result<()> {
        tracing::warn!(
            "the control plane blocked this host with --wipe: deleting its secrets and stopping its workloads"
        );
        let empty = SiteState::default();
        self.store.save_desired(0, &empty, &[]).await?;
        self.desired.send_replace((0, empty));
        self.secrets.wipe()
    }

    /// Keeps a session up until `shutdown`.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        match self.mode {
            Mode::Stream => self.keep_connected(&mut shutdown).await,
            Mode::Poll(interval) => self.keep_polling(interval, &mut shutdown).await,
        }
        let (sent, received) = crate::uplink::totals();
        tracing::info!(sent, received, "uplink bytes since start (TLS included)");
    }

    async fn keep_connected(&mut self, shutdown: &mut watch::Receiver<bool>) {
        let mut delay = RECONNECT_MIN;
        loop {
            let connected_at = tokio::time::Instant::now();
            let result = tokio::select! {
                result = self.connect_once() => Some(result),
                _ = shutdown.wait_for(|stop| *stop) => None,
            };
            self.connected.send_replace(false);
            if let Some(cluster) = &self.cluster {
                cluster.witness_at(None);
            }
            match result {
                None => return,
                Some(result) => {
                    if let Err(err) = result {
                        tracing::warn!(server = %self.server, err = format!("{err:#}"), "uplink lost; workloads keep running");
                    }
                }
            }
            // A session that lasted a while starts the backoff over.
            if connected_at.elapsed() > RECONNECT_MAX {
                delay = RECONNECT_MIN;
            }
            let jittered = delay.mul_f64(rand::rng().random_range(0.5..1.5));
            tracing::info!("reconnecting in {:.1}s", jittered.as_secs_f64());
            tokio::select! {
                () = tokio::time::sleep(jittered) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            delay = (delay * 2).min(RECONNECT_MAX);
        }
    }

    async fn keep_polling(&mut self, mut interval: Duration, shutdown: &mut watch::Receiver<bool>) {
        let mut reported = Reported::default();
        loop {
            let result = tokio::select! {
                result = self.poll_once(interval, &mut reported) => result,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match result {
                Ok(told) => {
                    self.connected.send_replace(true);
                    if let Some(told) = told.filter(|told| *told != interval) {
                        tracing::info!("the control plane asks for a poll every {}s", told.as_secs());
                        interval = told;
                    }
                }
                Err(err) => {
                    self.connected.send_replace(false);
                    tracing::warn!(server = %self.server, err = format!("{err:#}"), "poll failed; workloads keep running");
                }
            }
            // Jitter keeps a fleet that came up together from polling together.
            let wait = interval.mul_f64(rand::rng().random_range(0.9..1.1));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One poll: hello, status and queued records up, the site's state and
    /// acknowledgements down, until nothing waits. Returns the interval the
    /// control plane asks for, if it asks.
    async fn poll_once(&mut self, interval: Duration, reported: &mut Reported) -> Result<Option<Duration>> {
        let channel = tls::channel(&self.server, self.tls.clone()).await?;
        let mut client = AgentGatewayClient::new(channel);
        self.facts = (self.discover)();
        let mut told = None;
        let mut received = None;
        for _ in 0..SYNCS_PER_POLL {
            let pending = self.outbox.pending(0, BATCH_RECORDS, BATCH_BYTES).await?;
            let up = self.next_stream_batch().await?;
            let request = SyncRequest {
                hello: Some(self.hello().await?),
                status: Some(self.status.borrow().clone()),
                batch: pending
                    .as_ref()
                    .map(|p| codec::encode_batch(p.first_seq, &p.records, self.outbox.dropped()))
                    .transpose()?,
                interval_seconds: interval.as_secs().min(u32::MAX as u64) as u32,
                stream_batch: up.as_ref().map(|(batch, _)| batch.clone()),
                stream_received: received.take(),
                trust_digest: self.trust.digest(),
                streams: self.stream_report(reported)?,
                cluster: self.cluster_report(reported)?,
            };
            let response = client
                .sync(request)
                .await
                .map_err(|status| {
                    anyhow::anyhow!("the control plane refused the poll: {}", status.message())
                })?
                .into_inner();
            // The CAs first: the state may be signed by a new one.
            if let Some(trust) = &response.trust {
                self.trust(trust)?;
            }
            if let Some(manifest) = &response.manifest {
                self.receive(manifest).await?;
            }
            if let Some(ack) = response.batch_ack {
                self.outbox.acknowledge(ack.through_seq).await?;
            }
            if let Some(ack) = response.stream_ack {
                self.stream_acknowledged(&ack, &mut None).await?;
            }
            if let Some(batch) = &response.stream_batch {
                received = Some(self.receive_stream(batch).await?);
            }
            if response.interval_seconds > 0 {
                told = Some(Duration::from_secs(u64::from(response.interval_seconds)));
            }

            let streams_wait = received.is_some()
                || self
                    .streams
                    .as_ref()
                    .is_some_and(|streams| streams.next_up(now_ms()).is_some());
            if !streams_wait && self.outbox.pending(0, 1, BATCH_BYTES).await?.is_none() {
                break;
            }
        }
        Ok(told)
    }

    /// Takes the CAs the control plane sent (`crate::trust`) and, if it
    /// asks, renews the host certificate under its current CA now.
    fn trust(&self, bundle: &outpost_proto::v1::TrustBundle) -> Result<()> {
        if self.trust.replace(&bundle.ca_pem)? {
            tracing::info!(
                cas = bundle.ca_pem.matches("BEGIN CERTIFICATE").count(),
                "the control plane's CAs changed"
            );
        }
        if bundle.renew {
            self.renew_now.notify_one();
        }
        Ok(())
    }

    /// What this host says of itself when it connects or polls. A state
    /// imported from a bundle is not the control plane's: the host says it
    /// holds none, so that the control plane's (newer) state replaces it;
    /// what is the same restarts nothing.
    async fn hello(&self) -> Result<Hello> {
        let applied_revision = match self.store.imported().await? {
            Some(_) => 0,
            None => self.desired.borrow().0,
        };
        Ok(Hello {
            protocol_version: outpost_proto::PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            applied_revision,
            facts: Some(HostFacts {
                labels: self.facts.clone().into_iter().collect(),
            }),
            site_address: self.site_address.clone().unwrap_or_default(),
        })
    }

    async fn connect_once(&mut self) -> Result<()> {
        let channel = tls::channel(&self.server, self.tls.clone()).await?;
        let channel_for_witness = channel.clone();
        let (sender, receiver) = mpsc::channel::<AgentMessage>(16);
        let send = |body: agent_message::Body| AgentMessage { body: Some(body) };
        let revision = self.desired.borrow().0;
        sender
            .send(send(agent_message::Body::Hello(self.hello().await?)))
            .await?;
        let mut incoming = AgentGatewayClient::new(channel)
            .session(ReceiverStream::new(receiver))
            .await
            .map_err(|status| anyhow::anyhow!("the control plane refused the session: {}", status.message()))?
            .into_inner();
        tracing::info!(server = %self.server, revision, "connected to the control plane");
        self.connected.send_replace(true);
        if let Some(cluster) = &self.cluster {
            cluster.witness_at(Some(channel_for_witness));
        }
        let status = self.status.borrow_and_update().clone();
        sender.send(send(agent_message::Body::Status(status))).await?;

        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        let mut rediscover = tokio::time::interval(REDISCOVER);
        rediscover.tick().await;
        let mut report = tokio::time::interval(UPLINK_REPORT);
        report.tick().await;
        // One batch in flight at a time; after a reconnect the queue is
        // sent again from its oldest record (the control plane skips what
        // it already has).
        let mut newest = self.outbox.newest();
        let mut in_flight = self.send_batch(&sender, 0).await?;
        // Likewise one batch of application records, and their topics'
        // state whenever it changed (with no stream store, the placeholder
        // channel is never polled: its sender is gone).
        let mut stream_changes = match &self.streams {
            Some(streams) => streams.changes(),
            None => watch::channel(0).1,
        };
        let mut up_in_flight: InFlight = None;
        let mut reported = Reported::default();
        self.send_stream_batch(&sender, &mut up_in_flight).await?;
        if let Some(report) = self.stream_report(&mut reported)? {
            sender.send(send(agent_message::Body::Streams(report))).await?;
        }
        if let Some(report) = self.cluster_report(&mut reported)? {
            sender.send(send(agent_message::Body::Cluster(report))).await?;
        }
        let mut stream_report = tokio::time::interval(STREAM_REPORT);
        stream_report.tick().await;
        loop {
            tokio::select! {
                message = tokio::time::timeout(SILENCE, incoming.message()) => {
                    let message = message
                        .map_err(|_| anyhow::anyhow!("no word from the control plane for {SILENCE:?}"))?
                        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
                        .context("the control plane closed the session")?;
                    match message.body {
                        Some(control_message::Body::Manifest(manifest)) => {
                            let revision = self.receive(&manifest).await?;
                            sender.send(send(agent_message::Body::Ack(Ack { revision }))).await?;
                        }
                        Some(control_message::Body::BatchAck(ack)) => {
                            self.outbox.acknowledge(ack.through_seq).await?;
                            if in_flight.is_some_and(|last| ack.through_seq >= last) {
                                in_flight = self.send_batch(&sender, ack.through_seq).await?;
                            }
                        }
                        Some(control_message::Body::LogRequest(request)) => {
                            let reply = self.read_logs(&request).await;
                            sender.send(send(agent_message::Body::LogReply(reply))).await?;
                        }
                        Some(control_message::Body::StreamAck(ack)) => {
                            if self.stream_acknowledged(&ack, &mut up_in_flight).await? {
                                self.send_stream_batch(&sender, &mut up_in_flight).await?;
                            }
                        }
                        Some(control_message::Body::StreamBatch(batch)) => {
                            let ack = self.receive_stream(&batch).await?;
                            sender.send(send(agent_message::Body::StreamReceived(ack))).await?;
                        }
                        Some(control_message::Body::Wipe(_)) => self.wipe().await?,
                        Some(control_message::Body::Trust(trust)) => self.trust(&trust)?,
                        Some(control_message::Body::Heartbeat(_)) | None => {}
                    }
                }
                changed = stream_changes.changed(), if self.streams.is_some() && up_in_flight.is_none() => {
                    changed?;
                    self.send_stream_batch(&sender, &mut up_in_flight).await?;
                }
                _ = stream_report.tick() => {
                    if up_in_flight.is_none() {
                        // A window may have opened.
                        self.send_stream_batch(&sender, &mut up_in_flight).await?;
                    }
                    if let Some(report) = self.stream_report(&mut reported)? {
                        sender.send(send(agent_message::Body::Streams(report))).await?;
                    }
                    if let Some(report) = self.cluster_report(&mut reported)? {
                        sender.send(send(agent_message::Body::Cluster(report))).await?;
                    }
                }
                changed = newest.changed(), if in_flight.is_none() => {
                    changed?;
                    in_flight = self.send_batch(&sender, 0).await?;
                }
                changed = self.status.changed() => {
                    changed?;
                    let status = self.status.borrow_and_update().clone();
                    sender.send(send(agent_message::Body::Status(status))).await?;
                }
                _ = heartbeat.tick() => {
                    sender.send(send(agent_message::Body::Heartbeat(Heartbeat { sent_at_unix_ms: now_ms() }))).await?;
                }
                _ = report.tick() => {
                    let (sent, received) = crate::uplink::totals();
                    tracing::info!(sent, received, "uplink bytes since start (TLS included)");
                }
                _ = rediscover.tick() => {
                    let facts = (self.discover)();
                    if facts != self.facts {
                        tracing::info!("host facts changed; telling the control plane");
                        self.facts = facts;
                        let labels = self.facts.clone().into_iter().collect();
                        sender.send(send(agent_message::Body::Facts(HostFacts { labels }))).await?;
                    }
                }
            }
        }
    }

    /// Answers an operator's request for logs.
    async fn read_logs(&self, request: &LogRequest) -> LogReply {
        let chunks = crate::logs::read(
            self.runtime.as_ref(),
            &request.application,
            &request.service,
            request.since_unix,
            request.tail as usize,
        )
        .await;
        codec::encode_log_reply(request.id, chunks.map_err(|err| format!("{err:#}")))
    }

    /// Sends the oldest queued records after `after`, if any; returns the
    /// last sequence number sent.
    async fn send_batch(&self, sender: &mpsc::Sender<AgentMessage>, after: u64) -> Result<Option<u64>> {
        let Some(pending) = self.outbox.pending(after, BATCH_RECORDS, BATCH_BYTES).await? else {
            return Ok(None);
        };
        let last = pending.last_seq();
        let batch = codec::encode_batch(pending.first_seq, &pending.records, self.outbox.dropped())?;
        tracing::debug!(
            first = batch.first_seq,
            count = batch.count,
            bytes = batch.records.len(),
            "sending a batch"
        );
        sender
            .send(AgentMessage {
                body: Some(agent_message::Body::Batch(batch)),
            })
            .await?;
        Ok(Some(last))
    }

    /// The next batch of the up topic the uplink should carry now, if any.
    async fn next_stream_batch(&self) -> Result<Option<(StreamBatch, (TopicKey, u64))>> {
        let Some(streams) = &self.streams else {
            return Ok(None);
        };
        let Some(key) = streams.next_up(now_ms()) else {
            return Ok(None);
        };
        let records = streams.read(&key, 0, BATCH_RECORDS, BATCH_BYTES).await?;
        let Some(last) = records.last().map(|(seq, _)| *seq) else {
            return Ok(None);
        };
        let batch = codec::encode_stream_batch(&key.application, &key.topic, &records)?;
        Ok(Some((batch, (key, last))))
    }

    /// Sends the next up batch, if one waits and none is in flight.
    async fn send_stream_batch(
        &self,
        sender: &mpsc::Sender<AgentMessage>,
        in_flight: &mut InFlight,
    ) -> Result<()> {
        if in_flight.is_some() {
            return Ok(());
        }
        if let Some((batch, sent)) = self.next_stream_batch().await? {
            tracing::debug!(topic = %sent.0, records = batch.seqs.len(), bytes = batch.records.len(), "sending application records");
            sender
                .send(AgentMessage {
                    body: Some(agent_message::Body::StreamBatch(batch)),
                })
                .await?;
            *in_flight = Some(sent);
        }
        Ok(())
    }

    /// Forgets what the control plane stored; true if that was the batch in flight.
    async fn stream_acknowledged(&self, ack: &StreamAck, in_flight: &mut InFlight) -> Result<bool> {
        let Some(streams) = &self.streams else {
            return Ok(false);
        };
        let key = TopicKey::new(&ack.application, &ack.topic);
        streams.acknowledge(&key, ack.through_seq).await?;
        let done = in_flight
            .as_ref()
            .is_some_and(|(sent, last)| *sent == key && ack.through_seq >= *last);
        if done {
            *in_flight = None;
        }
        Ok(done)
    }

    /// Stores down-records, and says through which it holds them.
    async fn receive_stream(&self, batch: &StreamBatch) -> Result<StreamAck> {
        let streams = self
            .streams
            .as_ref()
            .context("the control plane sent application records, and this agent keeps no topics")?;
        let records = codec::decode_stream_batch(batch)?;
        let key = TopicKey::new(&batch.application, &batch.topic);
        let through_seq = streams.receive(&key, &records).await?;
        Ok(StreamAck {
            application: batch.application.clone(),
            topic: batch.topic.clone(),
            through_seq,
        })
    }

    /// The topics' state, if it changed since `reported`.
    fn stream_report(&self, reported: &mut Reported) -> Result<Option<StreamReport>> {
        let Some(streams) = &self.streams else {
            return Ok(None);
        };
        let status = streams.status(now_ms());
        if reported.topics.as_ref() == Some(&status) {
            return Ok(None);
        }
        let report = codec::encode_stream_report(&status)?;
        reported.topics = Some(status);
        Ok(Some(report))
    }

    /// The cluster's state as this host sees it, if it changed since
    /// `reported`.
    fn cluster_report(&self, reported: &mut Reported) -> Result<Option<outpost_proto::v1::ClusterReport>> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let status = cluster.status(self.desired.borrow().1.host_loss_after());
        if reported.cluster.as_ref() == Some(&status) {
            return Ok(None);
        }
        let report = codec::encode_cluster_report(&status)?;
        reported.cluster = Some(status);
        Ok(Some(report))
    }

    /// Applies, persists, then hands over a manifest; returns its revision.
    async fn receive(&mut self, manifest: &SiteManifest) -> Result<u64> {
        let (revision, state) = self.desired.borrow().clone();
        let next = codec::apply_manifest((revision, &state), manifest)?;
        // Persist first: what is acknowledged survives a reboot.
        self.store
            .save_desired(manifest.revision, &next, &manifest.secrets)
            .await?;
        tracing::info!(
            revision = manifest.revision,
            workloads = next.workloads.len(),
            "desired state received"
        );
        if let Some(cluster) = &self.cluster
            && let Err(err) = cluster
                .shared
                .received(manifest.revision, &next, &manifest.head, &manifest.head_signature)
                .await
        {
            tracing::warn!(err = format!("{err:#}"), "keeping the state's head");
        }
        self.desired.send_replace((manifest.revision, next));
        Ok(manifest.revision)
    }
}
