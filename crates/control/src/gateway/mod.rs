//! The agent gateway (gRPC over mutual TLS): enrollment, then one session
//! per connected host that carries the site's desired state down and
//! acknowledgements and status up.
//!
//! **Architecture Invariant:** a session's site and host come only from its
//! client certificate; nothing an agent says can claim another identity.

use outpost_api::instance::InstanceState;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use outpost_proto::codec::{self, HEARTBEAT};
use outpost_proto::traffic::Traffic;
use outpost_proto::v1::agent_gateway_server::AgentGateway;
use outpost_proto::v1::{
    AgentMessage, Batch, BatchAck, ControlMessage, EnrollRequest, EnrollResponse, Hello, RenewReply,
    RenewRequest, StatusReport, StreamAck, StreamBatch, SyncRequest, SyncResponse, TrustBundle,
    UnderlayReply, UnderlayRequest, WitnessReply, WitnessRequest,
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
use crate::secrets::Secrets;
use crate::store::{HostImage, ImageDigest, InstanceRecord, Storage, StoreError};
use crate::streams;
use outpost_api::workload::SiteState;

mod session;

use session::Session;
pub use session::offline_grace;

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
    pub secrets: Arc<Secrets>,
    pub certificates: crate::HostCertificates,
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
    /// certificate is not revoked, has not expired, and is the one the host
    /// was issued or the one before (a host enrolled before serials were
    /// recorded has none to compare).
    async fn identity<T>(&self, request: &Request<T>) -> Result<HostCertificate, Status> {
        let certificate = self.identity_even_expired(request).await?;
        if certificate.not_after < time::OffsetDateTime::now_utc().unix_timestamp() {
            return Err(Status::unauthenticated(
                "this host certificate has expired; the agent renews it (RenewCertificate)",
            ));
        }
        Ok(certificate)
    }

    /// `identity`, but a certificate that expired within the grace the
    /// agent port's TLS allows passes: only a renewal asks for this.
    async fn identity_even_expired<T>(&self, request: &Request<T>) -> Result<HostCertificate, Status> {
        let certificate = connection(request)
            .and_then(|c| c.certificate.clone())
            .ok_or_else(|| Status::unauthenticated("a host certificate is required (enroll first)"))?;
        let HostCertificate {
            site, host, serial, ..
        } = &certificate;
        if let Some(denied) = self.revocations.denied(site, host, serial) {
            return Err(Status::permission_denied(denied.message()));
        }
        match self.store.host(site, host).await.map_err(internal)? {
            None => Err(Status::permission_denied(format!(
                "host {host:?} of site {site:?} is not enrolled"
            ))),
            Some(record)
                if record.cert_serial.as_ref().is_some_and(|s| s != serial)
                    && record.previous_serial.as_ref() != Some(serial) =>
            {
                Err(Status::permission_denied(
                    "this certificate is not the one the host was issued",
                ))
            }
            Some(_) => Ok(certificate),
        }
    }

    /// A poll's part of application streams: stores its up batch, notes
    /// what it stored of the last down batch and its topics' report, and
    /// answers with the acknowledgement and the next down batch.
    async fn sync_streams(
        &self,
        request: &SyncRequest,
        state: &SiteState,
        (site, host): (&str, &str),
    ) -> Result<(Option<StreamAck>, Option<StreamBatch>), Status> {
        let refused = |err: streams::Refused| match err {
            streams::Refused::Store(err) => internal(err),
            refused => Status::invalid_argument(refused.to_string()),
        };
        if let Some(ack) = &request.stream_received {
            streams::delivered(self.store.as_ref(), (site, host), ack)
                .await
                .map_err(internal)?;
        }
        if let Some(report) = &request.streams {
            let topics = codec::decode_stream_report(report)
                .map_err(|err| Status::invalid_argument(err.to_string()))?;
            self.store
                .record_host_streams(site, host, &topics)
                .await
                .map_err(internal)?;
        }
        if let Some(report) = &request.cluster {
            let status = codec::decode_cluster_report(report)
                .map_err(|err| Status::invalid_argument(err.to_string()))?;
            self.fleet.pin_reported(site, &status).await.map_err(internal)?;
            self.fleet.presence.record_cluster(site, host, status);
        }
        let ack = match &request.stream_batch {
            Some(batch) => Some(
                streams::accept_up(
                    self.store.as_ref(),
                    &self.secrets,
                    &self.fleet.streams,
                    state,
                    (site, host),
                    batch,
                )
                .await
                .map_err(refused)?,
            ),
            None => None,
        };
        let down = streams::next_down(self.store.as_ref(), &self.secrets, state, (site, host))
            .await
            .map_err(refused)?;
        Ok((ack, down))
    }

    async fn enroll_checked(&self, request: EnrollRequest) -> Result<EnrollResponse, Status> {
        let (fingerprint, secret_hash) = auth::parse_join_token(&request.join_token).ok_or_else(|| {
            Status::invalid_argument("the join token is malformed (expected opj1.FINGERPRINT.SECRET)")
        })?;
        if !self.pki.trusts_fingerprint(fingerprint) {
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
        // A join token does not get a blocked host or site back in.
        if let Some(denied) = self.revocations.denied(&site, host, &serial) {
            tracing::warn!(%site, %host, "a blocked host tried to enroll; refused");
            return Err(Status::permission_denied(denied.message()));
        }
        let certificate_pem = self
            .pki
            .sign_host_csr(
                &request.csr_pem,
                (&site, host),
                &serial,
                self.certificates.lifetime,
            )
            .map_err(internal)?;
        self.store
            .record_issuer(&serial, &self.pki.issuer())
            .await
            .map_err(internal)?;
        tracing::info!(%site, %host, %serial, "host enrolled");
        if let Err(err) = self.fleet.recompute_site(&site).await {
            tracing::error!(%err, "recomputing desired state after enrollment");
        }
        Ok(EnrollResponse {
            certificate_pem,
            ca_pem: self.pki.trusted_pem(),
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

    async fn witness(&self, request: Request<WitnessRequest>) -> Result<Response<WitnessReply>, Status> {
        let HostCertificate { site, host, .. } = self.identity(&request).await?;
        let asked = request.into_inner();
        if asked.lost.is_empty() {
            // A probe: the host is alive and reaches the control plane.
            self.fleet.presence.heard(&site, &host);
            return Ok(Response::new(WitnessReply {
                verdict: outpost_proto::v1::witness_reply::Verdict::Denied as i32,
                reason: "heard".to_string(),
            }));
        }
        let range = outpost_api::limits::HOST_LOSS_AFTER;
        let after = Duration::from_millis(asked.host_loss_after_ms.clamp(range.min.0, range.max.0));
        let (lost_heard, _) = self.fleet.presence.contact(&site, &asked.lost);
        let (_, asker_session) = self.fleet.presence.contact(&site, &host);
        self.fleet.presence.heard(&site, &host);
        let evidence = crate::witness::Evidence {
            lost_heard,
            asker_session,
        };
        let verdict = self.fleet.witness.ask(
            &site,
            &host,
            &asked.lost,
            after,
            evidence,
            std::time::Instant::now(),
        );
        use outpost_proto::v1::witness_reply::Verdict as Wire;
        let (verdict, reason) = match verdict {
            crate::witness::Verdict::Granted => {
                tracing::info!(%site, %host, lost = %asked.lost, "witness: granted the lost host's singletons");
                (Wire::Granted, String::new())
            }
            crate::witness::Verdict::Denied(why) => (Wire::Denied, why),
            crate::witness::Verdict::Yielded(why) => (Wire::Yielded, why),
        };
        Ok(Response::new(WitnessReply {
            verdict: verdict as i32,
            reason,
        }))
    }

    async fn underlay_certificate(
        &self,
        request: Request<UnderlayRequest>,
    ) -> Result<Response<UnderlayReply>, Status> {
        let HostCertificate { site, host, .. } = self.identity(&request).await?;
        let asked = request.into_inner();
        if asked.csr_pem.len() > 16 << 10 {
            return Err(Status::invalid_argument("the CSR is larger than 16 KiB"));
        }
        let cert_pem = self
            .pki
            .sign_underlay_csr(&asked.csr_pem, &site, &host, asked.epoch)
            .map_err(|err| Status::invalid_argument(format!("{err:#}")))?;
        let keys = match self
            .store
            .record_host_key(&site, &host, asked.epoch, time::OffsetDateTime::now_utc())
            .await
        {
            Ok(keys) => keys,
            Err(StoreError::Conflict(why)) => return Err(Status::failed_precondition(why)),
            Err(err) => {
                tracing::warn!(%site, %host, err = %err, "recording an underlay key");
                return Err(Status::unavailable("the store failed; try again"));
            }
        };
        tracing::info!(%site, %host, epoch = asked.epoch, rotated = keys.hosts_rotated, hosts = keys.hosts, "issued an underlay certificate");
        if keys.retiring.is_none() && keys.hosts_rotated >= keys.hosts {
            // Possibly the end of a rotation: the site stops accepting the old epoch.
            if let Err(err) = self.fleet.recompute_site(&site).await {
                tracing::warn!(%site, err = %err, "recomputing the site after its keys changed");
            }
        }
        Ok(Response::new(UnderlayReply { cert_pem }))
    }

    async fn renew_certificate(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewReply>, Status> {
        let HostCertificate {
            site,
            host,
            serial,
            public_key,
            ..
        } = self.identity_even_expired(&request).await?;
        let csr_pem = request.into_inner().csr_pem;
        if csr_pem.len() > 16 << 10 {
            return Err(Status::invalid_argument("the CSR is larger than 16 KiB"));
        }
        // The host renews its own key: possession was proven in the handshake.
        use rcgen::PublicKeyData;
        let asked = rcgen::CertificateSigningRequestParams::from_pem(&csr_pem).map_err(|err| {
            Status::invalid_argument(format!("the CSR is not a valid PKCS#10 request: {err}"))
        })?;
        if asked.public_key.der_bytes() != public_key.as_slice() {
            return Err(Status::invalid_argument(
                "the CSR is not for the key of the certificate being renewed",
            ));
        }
        let new_serial = pki::new_serial();
        let certificate_pem = self
            .pki
            .sign_host_csr(&csr_pem, (&site, &host), &new_serial, self.certificates.lifetime)
            .map_err(|err| Status::invalid_argument(format!("{err:#}")))?;
        match self
            .store
            .renew_host_certificate(&site, &host, &serial, &new_serial)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(why)) => return Err(Status::permission_denied(why)),
            Err(err) => return Err(internal(err)),
        }
        self.store
            .record_issuer(&new_serial, &self.pki.issuer())
            .await
            .map_err(internal)?;
        tracing::info!(%site, %host, old = %serial, serial = %new_serial, "host certificate renewed");
        Ok(Response::new(RenewReply { certificate_pem }))
    }

    async fn sync(&self, request: Request<SyncRequest>) -> Result<Response<SyncResponse>, Status> {
        let certificate = self.identity(&request).await?;
        let HostCertificate {
            site,
            host,
            public_key,
            ..
        } = certificate.clone();
        if let Some(connection) = connection(&request) {
            book_when_closed(self.store.clone(), &site, &host, connection.traffic.clone());
        }
        let request = request.into_inner();
        let hello = request
            .hello
            .clone()
            .ok_or_else(|| Status::invalid_argument("a sync carries a hello"))?;
        check_protocol(&hello)?;
        record_hello(self.store.as_ref(), &self.fleet, &site, &host, &hello)
            .await
            .map_err(internal)?;
        if let Some(report) = request.status.clone() {
            record_status(self.store.as_ref(), &self.fleet, &site, &host, report)
                .await
                .map_err(internal)?;
        }
        let batch_ack = match &request.batch {
            Some(batch) => Some(BatchAck {
                through_seq: store_batch(self.store.as_ref(), &self.secrets, &site, &host, batch).await?,
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
        let (revision, state) = self
            .store
            .site_state(&site)
            .await
            .map_err(internal)?
            .unwrap_or_default();
        let manifest = if revision > 0 && revision as u64 != hello.applied_revision {
            let mut manifest = codec::full_manifest(revision as u64, &state).map_err(internal)?;
            let wanted = codec::secrets_to_send(None, &state);
            manifest.secrets = self.secrets.seal(&public_key, &wanted).await.map_err(internal)?;
            (manifest.head, manifest.head_signature) = self
                .pki
                .sign_state(&site, revision as u64, &state)
                .map_err(internal)?;
            Some(manifest)
        } else {
            None
        };
        let (stream_ack, stream_batch) = self.sync_streams(&request, &state, (&site, &host)).await?;
        tracing::debug!(%site, %host, revision = hello.applied_revision, sends = manifest.is_some(), "agent polled");
        Ok(Response::new(SyncResponse {
            manifest,
            batch_ack,
            interval_seconds: self.poll_interval.map_or(0, |i| i.as_secs() as u32),
            stream_ack,
            stream_batch,
            trust: trust_for(&self.pki, Some(&request.trust_digest), &certificate),
        }))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let certificate = self.identity(&request).await?;
        let HostCertificate {
            site,
            host,
            serial,
            public_key,
            ..
        } = certificate.clone();
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
            public_key,
            certificate,
            trust_told: Default::default(),
            secrets: self.secrets.clone(),
            pki: self.pki.clone(),
            revocations: self.revocations.clone(),
            sender,
            shutdown: self.shutdown.clone(),
            _live: self.live.clone(),
        };
        tokio::spawn(session.run(incoming));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// The CAs trusted now, for a host whose agent holds those of SHA-256
/// `digest` and presents `certificate`: `None` if it holds them and needs
/// no new certificate; with `renew` while a rotation is under way and its
/// certificate is of the previous CA.
pub(crate) fn trust_for(
    pki: &Pki,
    digest: Option<&str>,
    certificate: &HostCertificate,
) -> Option<TrustBundle> {
    use sha2::Digest;
    let ca_pem = pki.trusted_pem();
    let renew = pki.rotating() && certificate.issuer != pki.issuer();
    let held = digest.is_some_and(|digest| hex::encode(sha2::Sha256::digest(ca_pem.as_bytes())) == digest);
    (!held || renew).then_some(TrustBundle { ca_pem, renew })
}

pub(crate) fn check_protocol(hello: &Hello) -> Result<(), Status> {
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
pub(crate) async fn record_hello(
    store: &dyn Storage,
    fleet: &Fleet,
    site: &str,
    host: &str,
    hello: &Hello,
) -> Result<(), StoreError> {
    let facts = hello
        .facts
        .as_ref()
        .map(|f| f.labels.clone().into_iter().collect())
        .unwrap_or_default();
    // What peers dial must look like HOST:PORT; anything else is not kept.
    let address = hello.site_address.as_str();
    let address = if address.is_empty() || is_site_address(address) {
        address
    } else {
        tracing::warn!(%site, %host, %address, "ignored a site address that is not HOST:PORT");
        ""
    };
    fleet.host_returned(site, host).await?;
    if store.record_site_address(site, host, address).await? {
        tracing::info!(%site, %host, %address, "host's site address changed");
        fleet.recompute_site(site).await?;
    }
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

/// `HOST:PORT`, at most 255 bytes, without blanks.
fn is_site_address(address: &str) -> bool {
    address.len() <= 255
        && !address.chars().any(|c| c.is_whitespace() || c.is_control())
        && address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Stores a host's facts; recomputes its site if they changed.
pub(crate) async fn record_facts(
    store: &dyn Storage,
    fleet: &Fleet,
    site: &str,
    host: &str,
    facts: &BTreeMap<String, String>,
    version: &str,
    revision: i64,
) -> Result<(), StoreError> {
    let changed = store.record_hello(site, host, facts, version, revision).await?;
    if changed {
        fleet.recompute_site(site).await?;
    }
    Ok(())
}

/// Records a status report: the instances, the images the host pre-stages,
/// and the image digests either reports. A digest new to its application
/// version pins it for every site, so what sites run is recomputed then.
pub(crate) async fn record_status(
    store: &dyn Storage,
    fleet: &Fleet,
    site: &str,
    host: &str,
    report: StatusReport,
) -> Result<(), StoreError> {
    let digest = |application: &str, version: &str, image: &str, digest: &str| ImageDigest {
        application: application.to_string(),
        version: version.to_string(),
        image: image.to_string(),
        digest: digest.to_string(),
    };
    let digests: Vec<ImageDigest> = report
        .instances
        .iter()
        .filter(|i| !i.version.is_empty())
        .flat_map(|i| {
            i.image_digests
                .iter()
                .map(|(image, d)| digest(&i.application, &i.version, image, d))
        })
        .chain(
            report
                .images
                .iter()
                .filter(|i| i.present)
                .map(|i| digest(&i.application, &i.version, &i.image, &i.digest)),
        )
        .filter(|d| is_digest(&d.digest))
        .collect();
    // A host speaks only for images its own site runs or pre-stages: one
    // host must not choose the bytes of another site's application.
    let state = if digests.is_empty() && report.images.is_empty() {
        SiteState::default()
    } else {
        store
            .site_state(site)
            .await?
            .map(|(_, state)| state)
            .unwrap_or_default()
    };
    let names = |application: &str, version: &str, image: &str| {
        state.workloads.iter().chain(&state.staged).any(|w| {
            w.application == application
                && w.version == version
                && w.containers.iter().any(|c| c.image.as_str() == image)
        })
    };
    let digests: Vec<ImageDigest> = digests
        .into_iter()
        .filter(|d| names(&d.application, &d.version, &d.image))
        .collect();
    if store.record_digests(site, &digests).await? > 0 {
        tracing::info!(%site, %host, digests = digests.len(), "image digests recorded");
        fleet.recompute().await?;
    }
    let images: Vec<HostImage> = report
        .images
        .into_iter()
        .filter(|i| names(&i.application, &i.version, &i.image))
        .map(|i| HostImage {
            site: site.to_string(),
            host: host.to_string(),
            application: i.application,
            version: i.version,
            image: i.image,
            present: i.present,
            fetched: i.fetched,
            total: i.total,
            error: i.error,
        })
        .collect();
    let at = crate::store::now_rfc3339();
    let instances: Vec<InstanceRecord> = report
        .instances
        .into_iter()
        .filter_map(|i| {
            // The state is a word on the wire; one this build does not know
            // (an agent newer than the control plane) is left out, and said.
            let state: InstanceState = match i.state.parse() {
                Ok(state) => state,
                Err(why) => {
                    tracing::warn!(%site, %host, instance = %i.instance, %why, "instance status left out");
                    return None;
                }
            };
            Some(InstanceRecord {
                exit_code: state.has_exit_code().then_some(i.exit_code),
                site: site.to_string(),
                host: host.to_string(),
                instance: i.instance,
                application: i.application,
                service: i.service,
                spec_hash: i.spec_hash,
                state,
                reason: i.reason,
                updated_at: at.clone(),
            })
        })
        .collect();
    store.record_status(site, host, &instances, &images).await
}

/// `sha256:` and 64 lower-case hex digits: what an agent may report.
fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Stores a batch's new records; returns the sequence number to acknowledge.
/// An application owner's log lines are sealed under its tenant's key.
pub(crate) async fn store_batch(
    store: &dyn Storage,
    secrets: &Secrets,
    site: &str,
    host: &str,
    batch: &Batch,
) -> Result<u64, Status> {
    let mut records = codec::decode_batch(batch).map_err(|err| {
        let why = crate::error_chain(&err);
        tracing::warn!(%site, %host, %why, "refused a batch from an agent");
        Status::invalid_argument(why)
    })?;
    for record in &mut records {
        if let outpost_api::telemetry::Record::Log(chunk) = record {
            let context = crate::secrets::log_context(&chunk.application);
            for line in &mut chunk.lines {
                line.text = secrets
                    .seal_text(&chunk.application, &context, &line.text)
                    .await
                    .map_err(|err| internal(format!("{err:#}")))?;
            }
        }
    }
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
