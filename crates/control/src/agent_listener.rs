//! The agent port's front door. It faces the internet, so it accepts
//! connections itself rather than leaving them to the gRPC server:
//!
//! - a TLS handshake must finish within [`crate::server::HANDSHAKE_TIMEOUT`] (10 s);
//! - a connection without a host certificate (one that can only enroll)
//!   is closed after [`UNAUTHENTICATED_IDLE`] without traffic;
//! - one source address may hold at most [`MAX_UNAUTHENTICATED_PER_SOURCE`]
//!   such connections, handshakes included; past that, new ones close at once;
//! - a host certificate on the deny list is refused at the handshake;
//! - an expired host certificate is refused, unless it expired within the
//!   operator's grace (`--host-cert-grace`): then it may only renew itself.
//!
//! What passes carries its byte counter, its peer and its host certificate
//! to the gateway as tonic connect info ([`AgentConnectInfo`]).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Result;
use futures_util::Stream;
use outpost_proto::traffic::{Counted, Traffic};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::pki::{self, HostCertificate, Pki};
use crate::revocation::Revocations;

/// How long a connection without a host certificate may stay silent.
/// Enrollment is one call; nothing else can be done without a certificate.
pub const UNAUTHENTICATED_IDLE: Duration = Duration::from_secs(30);
/// Connections without a host certificate (handshakes included) that one
/// source address may hold, by default. Hosts behind one NAT share an
/// address, but each holds such a connection only for the moment of its
/// handshake (`outpost control --max-unauthenticated-per-source` raises it).
pub const MAX_UNAUTHENTICATED_PER_SOURCE: usize = 256;

/// The gateway's TLS: our serving certificate; host certificates are
/// optional (a new host enrolls without one) and checked against the CAs
/// trusted at the handshake (both during a CA rotation), with `grace` for
/// one that expired.
pub fn tls_config(pki: &Arc<Pki>, grace: Duration) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(Arc::new(WithGrace {
            pki: pki.clone(),
            grace,
            provider: rustls::crypto::CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider())),
        }))
        .with_cert_resolver(pki.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Whether a certificate that expired at `not_after` may still renew at
/// `now` (both in seconds since the Unix epoch).
fn within_grace(not_after: i64, now: u64, grace: Duration) -> bool {
    let expired_for = i128::from(now) - i128::from(not_after);
    expired_for >= 0 && expired_for <= i128::from(grace.as_secs())
}

/// Client certificates as rustls's WebPKI verifier judges them, but for one
/// allowance: a host certificate that expired at most `grace` ago passes if
/// it was valid in its last second (chain, signature, usage), so that its
/// agent can renew it. The gateway takes such a certificate for a renewal
/// and nothing else (`Gateway::identity`).
#[derive(Debug)]
struct WithGrace {
    pki: Arc<Pki>,
    grace: Duration,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl WithGrace {
    /// WebPKI's verifier over the CAs trusted now.
    fn inner(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let roots = self
            .pki
            .trusted_roots()
            .map_err(|e| rustls::Error::General(format!("{e:#}")))?;
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl ClientCertVerifier for WithGrace {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: the CAs change with a rotation, and agents present their
    /// one certificate whatever the hints.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let inner = self.inner()?;
        let verified = inner.verify_client_cert(end_entity, intermediates, now);
        let Err(rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) = &verified
        else {
            return verified;
        };
        match pki::host_certificate(end_entity) {
            Some(host) if within_grace(host.not_after, now.as_secs(), self.grace) => {
                let last_valid =
                    UnixTime::since_unix_epoch(Duration::from_secs(host.not_after.max(0) as u64));
                inner.verify_client_cert(end_entity, intermediates, last_valid)
            }
            _ => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What the gateway learns about a connection.
#[derive(Debug, Clone)]
pub struct AgentConnectInfo {
    pub remote: Option<SocketAddr>,
    pub traffic: Arc<Traffic>,
    /// The host certificate it presented, if any.
    pub certificate: Option<HostCertificate>,
}

/// Counts a source address's unauthenticated connections; one slot each,
/// given back on drop.
#[derive(Clone)]
struct Sources {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    limit: usize,
}

struct Slot {
    sources: Sources,
    ip: IpAddr,
}

impl Sources {
    fn new(limit: usize) -> Sources {
        Sources {
            counts: Arc::default(),
            limit,
        }
    }

    fn take(&self, ip: IpAddr) -> Option<Slot> {
        let mut counts = self.counts.lock();
        let count = counts.entry(ip).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            sources: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.sources.counts.lock();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Accepts agent connections until the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    revocations: Arc<Revocations>,
    max_unauthenticated_per_source: usize,
) -> impl Stream<Item = io::Result<AgentConnection>> {
    let (sender, receiver) = mpsc::channel(64);
    let sources = Sources::new(max_unauthenticated_per_source);
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls),
        revocations,
        sources,
        sender,
    ));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    revocations: Arc<Revocations>,
    sources: Sources,
    sender: mpsc::Sender<io::Result<AgentConnection>>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = crate::server::accept(&listener) => accepted,
            () = sender.closed() => return,
        };
        let Some(slot) = sources.take(peer.ip()) else {
            tracing::debug!(%peer, "too many unauthenticated connections from this address; closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let revocations = revocations.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let traffic = Arc::new(Traffic::default());
            let counted = Counted::new(tcp, traffic.clone());
            let Some(tls) = crate::server::handshake(&acceptor, counted, peer).await else {
                return;
            };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|leaf| pki::host_certificate(leaf));
            let (certificate, slot) = match certificate {
                None => (None, Some(slot)),
                Some(None) => {
                    tracing::debug!(%peer, "a certificate of our CA that names no host; closed");
                    return;
                }
                Some(Some(certificate))
                    if let Some(denied) =
                        revocations.denied(&certificate.site, &certificate.host, &certificate.serial) =>
                {
                    tracing::warn!(%peer, site = %certificate.site, host = %certificate.host, "{}: the connection is closed", denied.message());
                    return;
                }
                // Authenticated: no longer counted against its address.
                Some(Some(certificate)) => (Some(certificate), None),
            };
            let idle = slot.as_ref().map(|_| UNAUTHENTICATED_IDLE);
            let connection = AgentConnection {
                io: IdleLimit::new(tls, idle),
                info: AgentConnectInfo {
                    remote: Some(peer),
                    traffic,
                    certificate,
                },
                _slot: slot,
            };
            let _ = sender.send(Ok(connection)).await;
        });
    }
}

/// An accepted agent connection, TLS done.
pub struct AgentConnection {
    io: IdleLimit<TlsStream<Counted<TcpStream>>>,
    info: AgentConnectInfo,
    /// Held while the connection is unauthenticated.
    _slot: Option<Slot>,
}

impl Connected for AgentConnection {
    type ConnectInfo = AgentConnectInfo;

    fn connect_info(&self) -> AgentConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for AgentConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A stream that fails with `TimedOut` once nothing has been read for its
/// limit (no limit: it never does).
struct IdleLimit<S> {
    inner: S,
    limit: Option<Duration>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> IdleLimit<S> {
    fn new(inner: S, limit: Option<Duration>) -> Self {
        IdleLimit {
            inner,
            limit,
            deadline: limit.map(|limit| Box::pin(tokio::time::sleep(limit))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleLimit<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if let (Some(deadline), Some(limit)) = (this.deadline.as_mut(), this.limit) {
                    deadline.as_mut().reset(tokio::time::Instant::now() + limit);
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "an unauthenticated connection stayed idle too long",
                ))),
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleLimit<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn an_expired_certificate_renews_only_within_the_grace() {
        let grace = Duration::from_secs(3600);
        assert!(within_grace(1000, 1000, grace));
        assert!(within_grace(1000, 4600, grace));
        assert!(!within_grace(1000, 4601, grace), "past the grace: enroll again");
        assert!(!within_grace(1000, 999, grace), "not expired: nothing to allow");
        assert!(!within_grace(1000, 1001, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_times_out_and_a_busy_one_does_not() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut limited = IdleLimit::new(near, Some(Duration::from_secs(30)));
        let mut buf = [0u8; 4];
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(20)).await;
            tokio::io::AsyncWriteExt::write_all(&mut far, b"ping")
                .await
                .unwrap();
            limited.read_exact(&mut buf).await.unwrap();
        }
        let err = limited.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_source_holds_a_bounded_number_of_slots() {
        let sources = Sources::new(MAX_UNAUTHENTICATED_PER_SOURCE);
        let ip: IpAddr = [192, 0, 2, 1].into();
        let slots: Vec<Slot> = (0..MAX_UNAUTHENTICATED_PER_SOURCE)
            .map(|_| sources.take(ip).unwrap())
            .collect();
        assert!(sources.take(ip).is_none());
        assert!(sources.take([192, 0, 2, 2].into()).is_some());
        drop(slots);
        assert!(sources.take(ip).is_some());
    }
}
