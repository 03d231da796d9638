//! Serving HTTPS: a TLS accept loop in front of the axum router, with
//! deadlines for the handshake and for request headers, and graceful
//! shutdown (stop accepting, let requests in flight finish).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How often HTTP/2 connections are pinged, and how long a ping may wait.
const H2_KEEPALIVE: Duration = Duration::from_secs(30);
/// How long requests in flight may take to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The API's TLS: the serving certificate of the CAs in force at each
/// handshake (a CA rotation takes effect without a restart).
pub fn tls_config(pki: &Arc<crate::pki::Pki>) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(pki.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The next connection. Failures (out of file descriptors and the like)
/// are logged and retried after a pause: the listener keeps serving.
pub(crate) async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(err) => {
                tracing::warn!(%err, address = ?listener.local_addr().ok(), "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A TLS handshake that must finish within `HANDSHAKE_TIMEOUT`; a failure
/// is logged at debug level (scanners and bad clients are common).
pub(crate) async fn handshake<IO>(acceptor: &TlsAcceptor, io: IO, peer: SocketAddr) -> Option<TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(err)) => {
            tracing::debug!(%peer, %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE)
        .keep_alive_timeout(H2_KEEPALIVE);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        // The client's address, for the audit trail.
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some(stream) = handshake(&acceptor, tcp, peer).await else {
                return;
            };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing anyway"),
    }
}
