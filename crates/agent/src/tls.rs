//! TLS for the agent's outbound connection. Before enrollment the agent
//! trusts only a CA whose SHA-256 matches the fingerprint in its join
//! token; afterwards it trusts the CA it received and presents its host
//! certificate (mutual TLS).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

pub(crate) fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// How a verifier built with `checked` judges a server's certificate.
pub(crate) trait CertificateCheck: std::fmt::Debug + Send + Sync {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error>;
}

/// A server verifier that judges the certificate with its check and the
/// handshake's signatures as rustls does.
#[derive(Debug)]
struct Checked<C> {
    check: C,
    provider: Arc<CryptoProvider>,
}

/// A server verifier judging certificates with `check`.
pub(crate) fn checked(check: impl CertificateCheck + 'static) -> Arc<dyn ServerCertVerifier> {
    Arc::new(Checked {
        check,
        provider: provider(),
    })
}

impl<C: CertificateCheck> ServerCertVerifier for Checked<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check.check(end_entity, intermediates, server_name, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

/// Trusts a server whose chain includes the CA with the pinned fingerprint.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
}

impl CertificateCheck for PinnedCa {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|cert| hex::encode(Sha256::digest(cert.as_ref())) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the control plane's CA does not match the join token's fingerprint".to_string(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        // Through a cross-signed CA, if the control plane rotated its CA
        // since the token was made.
        verify_chain(roots, end_entity, intermediates, server_name, now)
    }
}

/// WebPKI's judgement of a server's chain against `roots`.
pub(crate) fn verify_chain(
    roots: RootCertStore,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    verifier.verify_server_cert(end_entity, intermediates, server_name, &[], now)?;
    Ok(())
}

/// For enrollment: no client certificate, the CA pinned by fingerprint.
pub fn pinned(fingerprint: &str) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(checked(PinnedCa {
            fingerprint: fingerprint.to_ascii_lowercase(),
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A certificate chain and its key, as rustls presents them; `what` names
/// them in errors (`the host key`).
pub(crate) fn certified(cert_pem: &str, key_pem: &str, what: &str) -> Result<Arc<CertifiedKey>> {
    let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading the certificate of {what}"))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .with_context(|| format!("reading {what}"))?
        .with_context(|| format!("the file of {what} holds no key"))?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .with_context(|| format!("loading {what}"))?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

/// The host certificate the agent presents to the control plane. A
/// renewal swaps it in place: connections made after present the new one,
/// those already open keep theirs (the control plane accepts both).
#[derive(Debug)]
pub struct HostCert {
    current: parking_lot::RwLock<Arc<CertifiedKey>>,
}

impl HostCert {
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Arc<HostCert>> {
        Ok(Arc::new(HostCert {
            current: parking_lot::RwLock::new(certified(cert_pem, key_pem, "the host key")?),
        }))
    }

    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        *self.current.write() = certified(cert_pem, key_pem, "the host key")?;
        Ok(())
    }

    /// The certificate presented now, as DER.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.current.read().cert[0].clone()
    }
}

impl ResolvesClientCert for HostCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// For sessions: trust the control plane's CAs as they are at each
/// connection, present the host certificate.
pub fn mutual(trust: Arc<crate::trust::Trust>, host_cert: Arc<HostCert>) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(checked(crate::trust::TrustedCas(trust)))
        .with_client_cert_resolver(host_cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    // A resumed TLS session would carry the certificate it began with, so
    // a renewed certificate would never be seen: every connection does a
    // full handshake (agents connect rarely).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The control plane's URLs in `--server URL1,URL2,...`: each must be
/// `https://`. One URL may also name a DNS name with several addresses
/// (each is tried in turn).
pub fn servers(list: &str) -> Result<Vec<&str>> {
    let servers: Vec<&str> = list.split(',').map(str::trim).collect();
    for server in &servers {
        if server.is_empty() {
            anyhow::bail!("--server {list:?}: an empty URL in the list (URL1,URL2,...)");
        }
        let uri: Uri = server
            .parse()
            .with_context(|| format!("--server: {server:?} is not a URL"))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            anyhow::bail!("--server: {server:?} must be https://HOST[:PORT]");
        }
    }
    Ok(servers)
}

/// Opens a gRPC channel to the control plane (`https://host:port`, or a
/// list of replicas `URL1,URL2,...`: from a random one, then the others in
/// turn, so that a fleet spreads over the replicas and a replica that is
/// gone costs one refused connection) over our own TLS. Its bytes count as
/// the uplink's.
pub async fn channel(server: &str, tls: Arc<ClientConfig>) -> Result<Channel> {
    let servers = servers(server)?;
    let first = rand::random_range(0..servers.len());
    let mut failures = Vec::new();
    for index in (first..servers.len()).chain(0..first) {
        match connect(servers[index], None, tls.clone(), Some(crate::uplink::traffic())).await {
            Ok(channel) => return Ok(channel),
            Err(err) => failures.push(err),
        }
    }
    match failures.len() {
        1 => Err(failures.remove(0)),
        _ => Err(anyhow::anyhow!(
            "no replica answered: {}",
            failures
                .iter()
                .map(|err| format!("{err:#}"))
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
}

/// Opens a gRPC channel to a host of this site (`crate::peers`): the TLS
/// name is the peer's host name (its verifier checks the certificate's
/// identity instead), and the bytes stay on the site's network, off the
/// uplink's count.
pub async fn peer_channel(server: &str, host: &str, tls: Arc<ClientConfig>) -> Result<Channel> {
    connect(server, Some(host), tls, None).await
}

async fn connect(
    server: &str,
    name: Option<&str>,
    tls: Arc<ClientConfig>,
    traffic: Option<Arc<outpost_proto::traffic::Traffic>>,
) -> Result<Channel> {
    let uri: Uri = server
        .parse()
        .with_context(|| format!("{server:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        anyhow::bail!("{server:?} must start with https://");
    }
    let host = uri
        .host()
        .context("the server URL has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(7801);
    let name = name.unwrap_or(&host).to_string();
    let name =
        ServerName::try_from(name.clone()).with_context(|| format!("{name:?} is not a valid server name"))?;
    let connector = tower::service_fn(move |_: Uri| {
        let (tls, host, name, traffic) = (tls.clone(), host.clone(), name.clone(), traffic.clone());
        async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            // Counted below TLS: what the link carries, handshakes included.
            let traffic = traffic.unwrap_or_default();
            let stream = TlsConnector::from(tls)
                .connect(name, outpost_proto::traffic::Counted::new(tcp, traffic))
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    // The scheme here is only a label: TLS happens in the connector.
    let endpoint = Endpoint::from_shared(format!("http://{}:{port}", uri.host().unwrap_or_default()))?
        .connect_timeout(Duration::from_secs(10))
        // Rare pings: the heartbeats already show the link is alive.
        .http2_keep_alive_interval(Duration::from_secs(300))
        .keep_alive_timeout(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    endpoint.connect_with_connector(connector).await.map_err(|err| {
        // tonic's message repeats its source; the root cause says it once.
        let mut cause: &dyn std::error::Error = &err;
        while let Some(source) = cause.source() {
            cause = source;
        }
        anyhow::anyhow!("connecting to {server}: {cause}")
    })
}
