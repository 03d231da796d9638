//! The hosts of one site fetch images from each other before they ask the
//! registry, so a site pulls each image over its uplink once.
//!
//! Each agent started with `--site-listen` serves `SitePeer` there. The
//! control plane tells every host of the site where the others listen
//! (`SiteState::peers`, kept in `agent.db` with the rest of the desired
//! state, so a site whose uplink is down still knows them). Both sides of a
//! peer connection present their host certificates, checked against the
//! control plane's CA; each accepts only a certificate naming its own
//! site and a host the control plane named as a peer (a host taken out of
//! the site is dropped from the list, and refused).
//!
//! A host that lacks an image asks each peer in turn: the first that holds
//! it streams `docker save` of it, which the asking host loads. So that a
//! site takes each image over its uplink once, hosts that find no peer
//! holding it do not all go to the registry at once: the first host of the
//! site (by name) pulls straight away, and every other waits `STAGGER` per
//! host before it, asking again meanwhile; a peer that says it is pulling
//! the image is waited for (up to `PULLING_WAIT`). A peer that
//! does not answer in `CONNECT_TIMEOUT`, or stalls for `IDLE_TIMEOUT` in the
//! middle of an image, is given up, and the next peer or the registry is
//! asked instead: a hung peer never stalls a pull.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use outpost_api::workload::{Peer, SiteState};
use outpost_proto::identity::underlay_certificate;
use outpost_proto::v1::site_peer_client::SitePeerClient;
use outpost_proto::v1::site_peer_server::{SitePeer, SitePeerServer};
use outpost_proto::v1::{ImageChunk, ImageRequest};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, ServerConfig};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::runtime::Runtime;

/// How long a peer may take to connect and say whether it holds an image.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a peer may go without sending a byte in the middle of an image.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connecting peer may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest image reference a peer may ask for.
const MAX_REFERENCE: usize = 512;

/// An image archive as it streams in or out.
pub type Archive = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// What a peer says when asked for an image.
pub enum Offer {
    /// It holds it: the image ID, and the archive streaming in.
    Holds(String, Archive),
    /// It is pulling it from its registry now.
    Pulling,
    /// Neither.
    Lacks,
}

/// How long a host waits before it pulls from the registry itself, per
/// place it takes in the site's order of hosts: the first pulls at once,
/// the others ask again meanwhile and find it pulling (or holding).
pub const STAGGER: Duration = Duration::from_secs(2);
/// How long a host waits for a peer that says it is pulling an image.
pub const PULLING_WAIT: Duration = Duration::from_secs(600);

/// Where this host listens for its site's other hosts, and where they
/// reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    pub listen: SocketAddr,
    pub address: String,
}

/// `--site-listen` and `--site-address`: the address peers dial defaults
/// to the one listened on, which then must name one interface.
pub fn listening(listen: Option<SocketAddr>, address: Option<&str>) -> Result<Option<Listening>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let address = match address {
        Some(address) => {
            let valid = address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            anyhow::ensure!(valid, "--site-address {address:?}: expected HOST:PORT");
            address.to_string()
        }
        None if listen.ip().is_unspecified() => anyhow::bail!(
            "--site-listen {listen} listens on every interface: say where the site's other hosts reach this one with --site-address HOST:PORT"
        ),
        None => listen.to_string(),
    };
    Ok(Some(Listening { listen, address }))
}

/// The CAs and the host's underlay keys (`crate::underlay`), for peer
/// connections. Each connection is checked against the CAs trusted at
/// its handshake (`crate::trust`).
pub struct PeerTls {
    trust: Arc<crate::trust::Trust>,
    keys: Arc<crate::underlay::Keys>,
    provider: Arc<CryptoProvider>,
}

impl PeerTls {
    pub fn new(trust: Arc<crate::trust::Trust>, keys: Arc<crate::underlay::Keys>) -> PeerTls {
        PeerTls {
            trust,
            keys,
            provider: crate::tls::provider(),
        }
    }

    pub fn keys(&self) -> &Arc<crate::underlay::Keys> {
        &self.keys
    }

    fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>> {
        let roots = Arc::new(self.trust.roots()?);
        Ok(WebPkiClientVerifier::builder_with_provider(roots, self.provider.clone()).build()?)
    }

    /// To serve peers: every client must present a certificate of our CA
    /// (each call checks it is an underlay key of a peer: `peer_of`).
    fn server(&self) -> Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(self.verifier()?)
            .with_cert_resolver(Arc::new(Presented(self.keys.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// To ask `host` of `site`: it must present an underlay key of that
    /// host, of an epoch the site accepts.
    pub(crate) fn client(&self, site: &str, host: &str) -> Result<Arc<ClientConfig>> {
        let verifier = crate::tls::checked(PeerIdentity {
            inner: self.verifier()?,
            site: site.to_string(),
            host: host.to_string(),
            keys: self.keys.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(Presented(self.keys.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Presents the underlay key `Keys::presented` picks, as server and client.
#[derive(Debug)]
struct Presented(Arc<crate::underlay::Keys>);

impl std::fmt::Debug for crate::underlay::Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("accepted", &self.accepted())
            .finish_non_exhaustive()
    }
}

impl rustls::server::ResolvesServerCert for Presented {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.presented()
    }
}

impl rustls::client::ResolvesClientCert for Presented {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.presented()
    }

    fn has_certs(&self) -> bool {
        self.0.presented().is_some()
    }
}

/// A peer's certificate is an underlay key (made for client auth): it is
/// checked as one, chained to our CA, must name the peer we dialled, and be
/// of an epoch the site accepts.
#[derive(Debug)]
struct PeerIdentity {
    inner: Arc<dyn ClientCertVerifier>,
    site: String,
    host: String,
    keys: Arc<crate::underlay::Keys>,
}

impl crate::tls::CertificateCheck for PeerIdentity {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        match underlay_certificate(end_entity) {
            Some(named) if named.site != self.site || named.host != self.host => {
                Err(rustls::Error::General(format!(
                    "the peer at this address is {}/{}, not {}/{}",
                    named.site, named.host, self.site, self.host
                )))
            }
            Some(named) if !self.keys.accepts(named.epoch) => Err(rustls::Error::General(format!(
                "{}'s key is of epoch {}, which the site no longer accepts",
                named.host, named.epoch
            ))),
            Some(_) => Ok(()),
            None => Err(rustls::Error::General(
                "the peer's certificate is no underlay key".to_string(),
            )),
        }
    }
}

/// The peer a call on `--site-listen` comes from: the host its underlay
/// key names, if that is a peer of our site (the control plane named it
/// in the desired state we hold) and its key's epoch is one the site
/// accepts; `None` for anyone else.
pub(crate) fn peer_of<T>(
    request: &Request<T>,
    (desired, keys): (&watch::Receiver<(u64, SiteState)>, &crate::underlay::Keys),
    site: &str,
    ours: &str,
) -> Option<outpost_proto::identity::UnderlayCertificate> {
    let certs = request.peer_certs()?;
    let named = underlay_certificate(certs.first()?)?;
    let known = named.site == site
        && named.host != ours
        && keys.accepts(named.epoch)
        && desired.borrow().1.peers.iter().any(|p| p.host == named.host);
    known.then_some(named)
}

/// Asks the site's other hosts for images.
pub struct Peers {
    site: String,
    host: String,
    tls: Arc<PeerTls>,
    desired: watch::Receiver<(u64, SiteState)>,
}

impl Peers {
    pub fn new(
        site: &str,
        host: &str,
        tls: Arc<PeerTls>,
        desired: watch::Receiver<(u64, SiteState)>,
    ) -> Peers {
        Peers {
            site: site.to_string(),
            host: host.to_string(),
            tls,
            desired,
        }
    }

    /// The site's other hosts, in the order they are asked.
    pub fn others(&self) -> Vec<Peer> {
        self.desired
            .borrow()
            .1
            .peers
            .iter()
            .filter(|p| p.host != self.host)
            .cloned()
            .collect()
    }

    /// Where this host comes in the site's order of hosts (by name): how
    /// many `STAGGER`s it lets pass before it pulls from the registry.
    pub fn rank(&self) -> u32 {
        self.desired
            .borrow()
            .1
            .peers
            .iter()
            .filter(|p| p.host < self.host)
            .count() as u32
    }

    /// Asks one peer for an image. The archive fails if the peer stalls
    /// for `IDLE_TIMEOUT`.
    pub async fn ask(&self, peer: &Peer, reference: &str) -> Result<Offer> {
        let tls = self.tls.client(&self.site, &peer.host)?;
        let server = format!("https://{}", peer.address);
        let asked = async {
            let channel = crate::tls::peer_channel(&server, &peer.host, tls).await?;
            let mut chunks = SitePeerClient::new(channel)
                .fetch_image(ImageRequest {
                    reference: reference.to_string(),
                })
                .await
                .map_err(|status| anyhow::anyhow!("{}", status.message()))?
                .into_inner();
            let first = chunks
                .message()
                .await
                .map_err(|status| anyhow::anyhow!("{}", status.message()))?
                .context("the peer closed the stream")?;
            anyhow::Ok((first, chunks))
        };
        let (first, chunks) = tokio::time::timeout(CONNECT_TIMEOUT, asked)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?}"))??;
        if first.image_id.is_empty() {
            return Ok(if first.pulling {
                Offer::Pulling
            } else {
                Offer::Lacks
            });
        }
        let host = peer.host.clone();
        let archive =
            futures_util::stream::unfold((chunks, Some(first.data)), move |(mut chunks, pending)| {
                let host = host.clone();
                async move {
                    if let Some(data) = pending.filter(|d| !d.is_empty()) {
                        return Some((Ok(Bytes::from(data)), (chunks, None)));
                    }
                    match tokio::time::timeout(IDLE_TIMEOUT, chunks.message()).await {
                        Err(_) => Some((
                            Err(anyhow::anyhow!("peer {host} sent nothing for {IDLE_TIMEOUT:?}")),
                            (chunks, None),
                        )),
                        Ok(Err(status)) => Some((
                            Err(anyhow::anyhow!("peer {host}: {}", status.message())),
                            (chunks, None),
                        )),
                        Ok(Ok(None)) => None,
                        Ok(Ok(Some(chunk))) => Some((Ok(Bytes::from(chunk.data)), (chunks, None))),
                    }
                }
            })
            .scan(false, |failed, item: Result<Bytes>| {
                // Nothing after the first error.
                let next = (!*failed).then_some(item);
                *failed |= next.as_ref().is_some_and(|i| i.is_err());
                std::future::ready(next)
            });
        Ok(Offer::Holds(first.image_id, Box::pin(archive)))
    }
}

struct Service {
    site: String,
    host: String,
    runtime: Arc<dyn Runtime>,
    desired: watch::Receiver<(u64, SiteState)>,
    keys: Arc<crate::underlay::Keys>,
}

#[tonic::async_trait]
impl SitePeer for Service {
    type FetchImageStream = Pin<Box<dyn Stream<Item = Result<ImageChunk, Status>> + Send>>;

    async fn fetch_image(
        &self,
        request: Request<ImageRequest>,
    ) -> Result<Response<Self::FetchImageStream>, Status> {
        let Some(named) = peer_of(&request, (&self.desired, &self.keys), &self.site, &self.host) else {
            return Err(Status::permission_denied("not a peer of this site"));
        };
        let reference = request.into_inner().reference;
        if reference.is_empty()
            || reference.len() > MAX_REFERENCE
            || reference.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Status::invalid_argument(format!(
                "the reference is empty, longer than {MAX_REFERENCE} bytes, or holds blanks"
            )));
        }
        let exported = self
            .runtime
            .export_image(&reference)
            .await
            .map_err(|err| Status::unavailable(format!("{err:#}")))?;
        let Some((image_id, archive)) = exported else {
            let none = ImageChunk {
                pulling: self.runtime.is_pulling(&reference),
                ..Default::default()
            };
            return Ok(Response::new(Box::pin(futures_util::stream::iter([Ok(none)]))));
        };
        tracing::info!(peer = %named.host, image = %reference, "serving an image to a peer");
        let first = ImageChunk {
            image_id,
            ..Default::default()
        };
        let rest = archive.map(|chunk| {
            chunk
                .map(|data| ImageChunk {
                    data: data.to_vec(),
                    ..Default::default()
                })
                .map_err(|err| Status::unavailable(format!("{err:#}")))
        });
        Ok(Response::new(Box::pin(
            futures_util::stream::iter([Ok(first)]).chain(rest),
        )))
    }
}

/// Binds `--site-listen` (at start, so a taken port stops the agent).
pub async fn bind(listening: &Listening) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listening.listen)
        .await
        .with_context(|| format!("--site-listen {}", listening.listen))
}

/// Serves the site's other hosts until `shutdown`.
pub async fn serve(
    (listener, listening): (tokio::net::TcpListener, Listening),
    tls: Arc<PeerTls>,
    (site, host): (String, String),
    runtime: Arc<dyn Runtime>,
    desired: watch::Receiver<(u64, SiteState)>,
    (cluster, network): (
        Option<Arc<crate::cluster::Cluster>>,
        Option<Arc<crate::network::Network>>,
    ),
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let cluster = cluster.map(|c| crate::cluster::service(c, desired.clone()));
    let network = network.map(|n| crate::network::relay::service(&site, n));
    // Built again for each connection: the CAs it trusts may have changed.
    tls.server()?;
    tracing::info!(listen = %listening.listen, address = %listening.address, "serving the site's other hosts");
    let (sender, connections) = tokio::sync::mpsc::channel(16);
    let keys = tls.keys().clone();
    let accepting = {
        let mut shutdown = shutdown.clone();
        async move {
            loop {
                let (tcp, remote) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            tracing::warn!(%err, "accepting a peer connection");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
                };
                // Relayed connections send small writes both ways (see `crate::network`).
                let _ = tcp.set_nodelay(true);
                let (tls, sender) = (tls.clone(), sender.clone());
                tokio::spawn(async move {
                    let acceptor = match tls.server() {
                        Ok(config) => tokio_rustls::TlsAcceptor::from(config),
                        Err(err) => {
                            tracing::warn!(%remote, err = format!("{err:#}"), "serving a peer's TLS");
                            return;
                        }
                    };
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send(Ok::<_, std::io::Error>(stream)).await;
                        }
                        Ok(Err(err)) => tracing::warn!(%remote, %err, "a peer's TLS handshake failed"),
                        Err(_) => tracing::warn!(%remote, "a peer's TLS handshake timed out"),
                    }
                });
            }
        }
    };
    tokio::spawn(accepting);
    let service = Service {
        site,
        host,
        runtime,
        desired,
        keys,
    };
    tonic::transport::Server::builder()
        .add_service(SitePeerServer::new(service))
        .add_optional_service(cluster)
        .add_optional_service(network)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(connections),
            async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            },
        )
        .await
        .context("serving peers")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA's certificate, as PEM.
    fn ca() -> String {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.self_signed(&ca_key).unwrap().pem()
    }

    /// containerd #4861: a peer that accepts and then says nothing must
    /// not hold a pull; it is given up after `CONNECT_TIMEOUT`.
    #[tokio::test]
    async fn a_hung_peer_is_given_up() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(crate::underlay::Keys::load(dir.path()).unwrap());
        std::fs::write(dir.path().join("ca.crt"), ca()).unwrap();
        let trust = crate::trust::Trust::open(dir.path().join("ca.crt")).unwrap();
        let tls = Arc::new(PeerTls::new(trust, keys));
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = hung.local_addr().unwrap().to_string();
        let held = tokio::spawn(async move {
            let (socket, _) = hung.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(socket);
        });
        let state = SiteState {
            peers: vec![Peer {
                host: "h2".into(),
                address,
                labels: Default::default(),
            }],
            ..Default::default()
        };
        let (_sender, desired) = watch::channel((1, state));
        let peers = Peers::new("shop", "h1", tls, desired);
        let started = std::time::Instant::now();
        let peer = peers.others().pop().unwrap();
        let asked = peers.ask(&peer, "registry.example/pos:1").await;
        let err = match asked {
            Err(err) => err.to_string(),
            Ok(_) => panic!("a silent peer offered something"),
        };
        assert!(err.contains("no answer within"), "{err}");
        assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(2));
        assert_eq!(peers.rank(), 0, "h1 comes before h2");
        held.abort();
    }

    #[test]
    fn the_address_peers_dial_must_name_one_interface() {
        let any: SocketAddr = "0.0.0.0:7803".parse().unwrap();
        let one: SocketAddr = "10.0.0.5:7803".parse().unwrap();
        assert_eq!(listening(None, None).unwrap(), None);
        assert_eq!(
            listening(Some(one), None).unwrap().unwrap().address,
            "10.0.0.5:7803"
        );
        let err = listening(Some(any), None).unwrap_err().to_string();
        assert!(err.contains("--site-address"), "{err}");
        assert_eq!(
            listening(Some(any), Some("till-2.local:7803"))
                .unwrap()
                .unwrap()
                .address,
            "till-2.local:7803"
        );
        let err = listening(Some(any), Some("till-2.local"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected HOST:PORT"), "{err}");
    }
}
