//! Ingress: a service's `ingress.port` is served on every host of the site
//! its `ingress.hosts` selector picks (every host without one), and each
//! connection is carried to wherever the service runs now, like a
//! container's (`Network::carry`).
//!
//! Services that share a port are told apart by `ingress.host`: the TLS
//! server name of a connection that starts with a TLS hello (read with
//! rustls, the bytes passed on untouched: TLS ends at the service), else
//! the HTTP `Host` header. A connection that names no service of the port
//! goes to the one that declared no host, if one did; else it is closed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use outpost_api::workload::SiteState;
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::{Network, Target};

/// How long a client may take over the first bytes that name its service.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes read to find the service a connection names.
const FIRST_BYTES_LIMIT: usize = 16 << 10;

/// One service of an ingress port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    host: Option<String>,
    target: Target,
    port: u32,
}

type Routes = Arc<Mutex<Vec<Route>>>;

#[derive(Default)]
pub struct Ingress {
    ports: BTreeMap<u32, (Routes, JoinHandle<()>)>,
}

/// The routes of each ingress port this host serves.
fn wanted(state: &SiteState, host: &str) -> BTreeMap<u32, Vec<Route>> {
    let labels = state
        .peers
        .iter()
        .find(|p| p.host == host)
        .map(|p| p.labels.clone())
        .unwrap_or_default();
    let mut out: BTreeMap<u32, Vec<Route>> = BTreeMap::new();
    for workload in &state.workloads {
        let Some(ingress) = &workload.ingress else {
            continue;
        };
        if !ingress.hosts.as_ref().is_none_or(|s| s.matches(&labels)) {
            continue;
        }
        let first_tcp = outpost_api::manifest::tcp_ports(&workload.containers).next();
        let Some(port) = ingress.target_port.or(first_tcp) else {
            continue;
        };
        let route = Route {
            host: ingress.host.clone(),
            target: Target {
                application: workload.application.clone(),
                service: workload.service.clone(),
            },
            port,
        };
        let routes = out.entry(ingress.port).or_default();
        if !routes.contains(&route) {
            routes.push(route);
        }
    }
    out
}

impl Ingress {
    /// Listens on the ingress ports the desired state names for this host
    /// and stops listening on the others.
    pub async fn refresh(&mut self, network: &Arc<Network>) {
        let wanted = wanted(&network.desired.borrow().1, &network.host);
        self.ports.retain(|port, (_, task)| {
            let keep = wanted.contains_key(port);
            if !keep {
                task.abort();
                tracing::info!(port, "no longer serving the ingress port");
            }
            keep
        });
        for (port, routes) in wanted {
            if let Some((current, _)) = self.ports.get(&port) {
                *current.lock() = routes;
                continue;
            }
            let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port as u16)).await {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(port, %err, "cannot listen on the ingress port; will retry");
                    continue;
                }
            };
            tracing::info!(port, "serving the ingress port");
            let routes: Routes = Arc::new(Mutex::new(routes));
            let task = tokio::spawn(accept(listener, routes.clone(), network.clone()));
            self.ports.insert(port, (routes, task));
        }
    }

    pub fn stop(&mut self) {
        for (_, (_, task)) in std::mem::take(&mut self.ports) {
            task.abort();
        }
    }
}

async fn accept(listener: tokio::net::TcpListener, routes: Routes, network: Arc<Network>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (routes, network) = (routes.clone(), network.clone());
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            serve(client, routes, network).await;
        });
    }
}

async fn serve(mut client: TcpStream, routes: Routes, network: Arc<Network>) {
    let current = routes.lock().clone();
    let shared = current.len() > 1 || current.iter().any(|r| r.host.is_some());
    let mut first = Vec::new();
    let route = if shared {
        let named = tokio::time::timeout(FIRST_BYTES_TIMEOUT, read_name(&mut client, &mut first)).await;
        let named = named.ok().flatten();
        current
            .iter()
            .find(|r| r.host.is_some() && r.host == named)
            .or_else(|| current.iter().find(|r| r.host.is_none()))
            .cloned()
    } else {
        current.first().cloned()
    };
    let Some(route) = route else {
        return;
    };
    let from = route.target.application.clone();
    let stream = Prefixed { first, client };
    network.carry(stream, &from, &route.target, route.port).await;
}

/// Reads the client's first bytes into `first` until they name a host:
/// the TLS server name, or the HTTP `Host` (without its port).
async fn read_name(client: &mut TcpStream, first: &mut Vec<u8>) -> Option<String> {
    let mut buffer = [0u8; 2048];
    loop {
        let n = client.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        first.extend_from_slice(&buffer[..n]);
        match name_in(first) {
            Named::Yes(name) => return Some(name),
            Named::No => return None,
            Named::NeedMore if first.len() >= FIRST_BYTES_LIMIT => return None,
            Named::NeedMore => {}
        }
    }
}

enum Named {
    Yes(String),
    No,
    NeedMore,
}

fn name_in(bytes: &[u8]) -> Named {
    if bytes.first() == Some(&0x16) {
        let mut acceptor = rustls::server::Acceptor::default();
        let mut reader = bytes;
        if acceptor.read_tls(&mut reader).is_err() {
            return Named::No;
        }
        return match acceptor.accept() {
            Ok(Some(accepted)) => match accepted.client_hello().server_name() {
                Some(name) => Named::Yes(name.to_ascii_lowercase()),
                None => Named::No,
            },
            Ok(None) => Named::NeedMore,
            Err(_) => Named::No,
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(|host| {
                host.rsplit_once(':')
                    .map_or(host, |(name, _)| name)
                    .to_ascii_lowercase()
            })
            .map_or(Named::No, Named::Yes),
        Ok(httparse::Status::Partial) => Named::NeedMore,
        Err(_) => Named::No,
    }
}

/// A client connection whose first bytes were already read: they are read
/// again first.
struct Prefixed {
    first: Vec<u8>,
    client: TcpStream,
}

impl tokio::io::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            buf.put_slice(&self.first[..n]);
            self.first.drain(..n);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.client).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.client).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.client).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.client).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_names_its_service_by_http_host_or_tls_server_name() {
        let http = b"GET / HTTP/1.1\r\nHost: POS.local:8443\r\n\r\n";
        assert!(matches!(name_in(http), Named::Yes(name) if name == "pos.local"));
        assert!(matches!(name_in(&http[..20]), Named::NeedMore));
        assert!(matches!(name_in(b"\x00\x01binary"), Named::No));
        // A real client hello, made by rustls for the name prices.local.
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut client =
            rustls::ClientConnection::new(Arc::new(config), "prices.local".try_into().unwrap()).unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        assert!(matches!(name_in(&hello), Named::Yes(name) if name == "prices.local"));
        assert!(matches!(name_in(&hello[..hello.len() / 2]), Named::NeedMore));
    }
}
