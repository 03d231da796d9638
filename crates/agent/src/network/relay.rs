//! The underlay between a site's hosts: a connection for a service that
//! runs on another host travels as one `SiteNetwork/Relay` stream over
//! the HTTP/2 connection the two agents keep, on the peers' mutual TLS
//! (the hosts' underlay keys, `crate::peers`). Many connections share one
//! TLS connection per pair of hosts; each ends on its own.
//!
//! The receiving host checks the asking host is a peer, that the
//! connection's application may reach the service (its own, or declared
//! `egress`), and connects only to an instance on itself: a relay is never
//! passed on.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context, Result};
use futures_util::Stream;
use outpost_api::workload::SiteState;
use outpost_proto::v1::RelayFrame;
use outpost_proto::v1::site_network_client::SiteNetworkClient;
use outpost_proto::v1::site_network_server::{SiteNetwork, SiteNetworkServer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::{Network, Target, allowed, ports};
use crate::peers::{PeerTls, peer_of};

/// Bytes per frame.
const FRAME: usize = 32 << 10;
/// Frames in flight per direction of one connection.
const WINDOW: usize = 8;

/// One connection relayed to a peer: frames out, frames in.
pub struct Relayed {
    outgoing: mpsc::Sender<RelayFrame>,
    incoming: Streaming<RelayFrame>,
}

/// Opens relays to the site's other hosts, over one connection per host.
pub struct Relays {
    site: String,
    tls: Arc<PeerTls>,
    desired: watch::Receiver<(u64, SiteState)>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Relays {
    pub fn new(site: &str, tls: Arc<PeerTls>, desired: watch::Receiver<(u64, SiteState)>) -> Arc<Relays> {
        Arc::new(Relays {
            site: site.to_string(),
            tls,
            desired,
            channels: Mutex::new(HashMap::new()),
        })
    }

    async fn channel(&self, host: &str) -> Result<Channel> {
        if let Some(channel) = self.channels.lock().get(host) {
            return Ok(channel.clone());
        }
        let address = self
            .desired
            .borrow()
            .1
            .peers
            .iter()
            .find(|p| p.host == host)
            .map(|p| p.address.clone())
            .with_context(|| format!("no address for host {host}"))?;
        let tls = self.tls.client(&self.site, host)?;
        let channel = tokio::time::timeout(
            super::CONNECT_TIMEOUT,
            crate::tls::peer_channel(&format!("https://{address}"), host, tls),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no connection to {host} within {:?}", super::CONNECT_TIMEOUT))??;
        self.channels.lock().insert(host.to_string(), channel.clone());
        Ok(channel)
    }

    /// Drops every kept connection (after the keys changed): the next
    /// relay to each host makes a new one.
    pub fn forget(&self) {
        self.channels.lock().clear();
    }

    /// Opens a relay to `target`'s `port` on `host`, for a connection of
    /// application `from`.
    pub async fn open(&self, host: &str, from: &str, target: &Target, port: u32) -> Result<Relayed> {
        let first = RelayFrame {
            application: target.application.clone(),
            service: target.service.clone(),
            port,
            from_application: from.to_string(),
            data: Vec::new(),
        };
        let mut last = None;
        // A kept connection may have died since: one more try on a new one.
        for _ in 0..2 {
            let channel = self.channel(host).await?;
            let (outgoing, frames) = mpsc::channel(WINDOW);
            let _ = outgoing.send(first.clone()).await;
            let opened = tokio::time::timeout(
                super::CONNECT_TIMEOUT,
                SiteNetworkClient::new(channel).relay(ReceiverStream::new(frames)),
            )
            .await;
            match opened {
                Ok(Ok(response)) => {
                    return Ok(Relayed {
                        outgoing,
                        incoming: response.into_inner(),
                    });
                }
                Ok(Err(status)) if status.code() != tonic::Code::Unavailable => {
                    anyhow::bail!("{host}: {}", status.message())
                }
                Ok(Err(status)) => last = Some(anyhow::anyhow!("{host}: {}", status.message())),
                Err(_) => last = Some(anyhow::anyhow!("{host} did not answer")),
            }
            self.channels.lock().remove(host);
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("{host} did not answer")))
    }
}

/// Copies between a local connection and a relay until both directions
/// end; each side's end closes the other side's writing half.
pub async fn pump<S>(local: S, relayed: Relayed)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (reading, writing) = tokio::io::split(local);
    // Dropping the sender when `reading` ends ends the request stream:
    // the peer's half-close.
    tokio::join!(
        send_frames(reading, relayed.outgoing, |frame| frame),
        write_frames(relayed.incoming, writing)
    );
}

/// Sends what `reading` yields, a frame at a time, until it ends or the
/// other side stops listening.
async fn send_frames<T>(
    mut reading: impl AsyncRead + Unpin,
    sender: mpsc::Sender<T>,
    wrap: impl Fn(RelayFrame) -> T,
) {
    let mut buffer = vec![0u8; FRAME];
    loop {
        match reading.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let frame = RelayFrame {
                    data: buffer[..n].to_vec(),
                    ..Default::default()
                };
                if sender.send(wrap(frame)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Writes the frames' bytes to `writing`; when they end, closes its
/// writing half.
async fn write_frames(mut frames: Streaming<RelayFrame>, mut writing: impl AsyncWrite + Unpin) {
    while let Ok(Some(frame)) = frames.message().await {
        if writing.write_all(&frame.data).await.is_err() {
            return;
        }
    }
    let _ = writing.shutdown().await;
}

/// Serves relays to this host's instances.
pub struct Service {
    site: String,
    network: Arc<Network>,
}

/// The `SiteNetwork` service for `--site-listen`.
pub fn service(site: &str, network: Arc<Network>) -> SiteNetworkServer<Service> {
    SiteNetworkServer::new(Service {
        site: site.to_string(),
        network,
    })
}

#[tonic::async_trait]
impl SiteNetwork for Service {
    type RelayStream = Pin<Box<dyn Stream<Item = Result<RelayFrame, Status>> + Send>>;

    async fn relay(
        &self,
        request: Request<Streaming<RelayFrame>>,
    ) -> Result<Response<Self::RelayStream>, Status> {
        let network = &self.network;
        let keys = network.relays.tls.keys();
        let Some(peer) = peer_of(&request, (&network.desired, keys), &self.site, &network.host) else {
            return Err(Status::permission_denied("not a peer of this site"));
        };
        let mut frames = request.into_inner();
        let first = frames
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the relay named no service"))?;
        let target = Target {
            application: first.application,
            service: first.service,
        };
        let port = first.port;
        {
            let desired = network.desired.borrow();
            let state = &desired.1;
            if !allowed(state, &first.from_application, &target) {
                tracing::warn!(peer = %peer.host, from = %first.from_application, application = %target.application, service = %target.service, "refused a relay the manifests do not allow");
                return Err(Status::permission_denied(format!(
                    "{} may not reach {}/{}",
                    first.from_application, target.application, target.service
                )));
            }
            if !ports(state, &target).contains(&port) {
                return Err(Status::not_found(format!(
                    "{}/{} has no TCP port {port}",
                    target.application, target.service
                )));
            }
        }
        let local = network
            .connect_local(&target, port)
            .await
            .map_err(|err| Status::not_found(format!("{err:#}")))?;
        let _ = local.set_nodelay(true);
        let (reading, writing) = local.into_split();
        let (sender, outgoing) = mpsc::channel(WINDOW);
        let mut writing = tokio::spawn(write_frames(frames, writing));
        let mut reading = tokio::spawn(send_frames(reading, sender, Ok));
        // A relay on a key whose epoch the site drops at once (`--at-once`) ends.
        let mut revoked = keys.revoked();
        tokio::spawn(async move {
            let dropped = revoked.wait_for(|revoked| revoked.contains(&peer.epoch));
            tokio::select! {
                _ = dropped => {
                    tracing::info!(peer = %peer.host, epoch = peer.epoch, "ending a relay on a key the site no longer accepts");
                    writing.abort();
                    reading.abort();
                }
                _ = async { let _ = tokio::join!(&mut writing, &mut reading); } => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(outgoing))))
    }
}
