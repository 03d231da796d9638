//! The host's identity: a key made here (it never leaves the host), the
//! certificate the control plane signed for it, and the CA to trust. All
//! kept in the data directory; enrollment happens once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use outpost_proto::seal::HostKey;
use outpost_proto::v1::agent_gateway_client::AgentGatewayClient;
use outpost_proto::v1::{EnrollRequest, RenewRequest};
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::tls;
use outpost_files::write_private;

/// What the agent knows about itself after enrollment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub server: String,
    pub site: String,
    pub host: String,
}

pub struct Credentials {
    pub identity: Identity,
    /// The CAs it trusts (`ca.crt`), kept current by the control plane.
    pub trust: Arc<crate::trust::Trust>,
    pub tls: Arc<ClientConfig>,
    /// The certificate `tls` presents, renewed in place (`renew`).
    pub host_cert: Arc<tls::HostCert>,
    /// The host's key, to open the secrets sealed to it.
    pub host_key: Arc<HostKey>,
    /// The host's certificate and key, for its site's other hosts.
    pub peer_tls: Arc<crate::peers::PeerTls>,
}

fn host_key(pem: &str) -> Result<Arc<HostKey>> {
    Ok(Arc::new(
        HostKey::from_pem(pem).context("reading the host key for secrets")?,
    ))
}

struct Paths {
    key: PathBuf,
    cert: PathBuf,
    ca: PathBuf,
    identity: PathBuf,
}

fn paths(data_dir: &Path) -> Paths {
    Paths {
        key: data_dir.join("host.key"),
        cert: data_dir.join("host.crt"),
        ca: data_dir.join("ca.crt"),
        identity: data_dir.join("identity.json"),
    }
}

/// Loads the credentials of an enrolled host, if it is one.
pub fn load(data_dir: &Path) -> Result<Option<Credentials>> {
    let paths = paths(data_dir);
    if !paths.identity.exists() {
        return Ok(None);
    }
    let read =
        |path: &Path| std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()));
    let identity: Identity = serde_json::from_str(&read(&paths.identity)?)
        .with_context(|| format!("reading {}", paths.identity.display()))?;
    let key = zeroize::Zeroizing::new(read(&paths.key)?);
    let cert = read(&paths.cert)?;
    let trust = crate::trust::Trust::open(paths.ca)?;
    let host_cert = tls::HostCert::new(&cert, &key)?;
    Ok(Some(Credentials {
        identity,
        tls: tls::mutual(trust.clone(), host_cert.clone())?,
        host_cert,
        host_key: host_key(&key)?,
        peer_tls: Arc::new(crate::peers::PeerTls::new(
            trust.clone(),
            Arc::new(crate::underlay::Keys::load(data_dir)?),
        )),
        trust,
    }))
}

/// The CA fingerprint a join token pins (`opj1.FINGERPRINT.SECRET`).
fn pinned_fingerprint(token: &str) -> Result<&str> {
    let mut parts = token.trim().split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("opj1"), Some(fingerprint), Some(_), None) if fingerprint.len() == 64 => Ok(fingerprint),
        _ => anyhow::bail!(
            "the join token is malformed (expected opj1.FINGERPRINT.SECRET, as `outpost token create` prints it)"
        ),
    }
}

/// Enrolls this host with a join token and stores the result.
pub async fn enroll(data_dir: &Path, server: &str, token: &str, host: &str) -> Result<Credentials> {
    let fingerprint = pinned_fingerprint(token)?;
    let paths = paths(data_dir);
    let key = KeyPair::generate().context("generating the host key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, host);
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .context("making the certificate request")?;
    write_private(&paths.key, key.serialize_pem().as_bytes())?;

    let channel = tls::channel(server, tls::pinned(fingerprint)).await?;
    let response = AgentGatewayClient::new(channel)
        .enroll(EnrollRequest {
            join_token: token.trim().to_string(),
            csr_pem: csr,
            host_name: host.to_string(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("enrollment refused: {}", status.message()))?
        .into_inner();
    write_private(&paths.cert, response.certificate_pem.as_bytes())?;
    write_private(&paths.ca, response.ca_pem.as_bytes())?;
    let identity = Identity {
        server: server.to_string(),
        site: response.site,
        host: response.host,
    };
    write_private(&paths.identity, &serde_json::to_vec_pretty(&identity)?)?;
    let key = zeroize::Zeroizing::new(key.serialize_pem());
    let host_cert = tls::HostCert::new(&response.certificate_pem, &key)?;
    let trust = crate::trust::Trust::open(paths.ca)?;
    let tls = tls::mutual(trust.clone(), host_cert.clone())?;
    Ok(Credentials {
        identity,
        tls,
        host_cert,
        host_key: host_key(&key)?,
        peer_tls: Arc::new(crate::peers::PeerTls::new(
            trust.clone(),
            Arc::new(crate::underlay::Keys::load(data_dir)?),
        )),
        trust,
    })
}

/// How soon a host certificate valid from `not_before` to `not_after`
/// (seconds since the Unix epoch) is renewed, seen at `now`: once two
/// thirds of its life have passed; at once if that time is past (an
/// expired certificate too: the control plane allows its renewal within
/// the operator's grace).
fn renew_in(not_before: i64, not_after: i64, now: i64) -> Duration {
    let at = not_before + (not_after - not_before) * 2 / 3;
    Duration::from_secs((at - now).max(0) as u64)
}

/// How long a failed renewal waits before it tries again.
const RENEW_RETRY: Duration = Duration::from_secs(5);

/// Keeps the host certificate fresh for as long as the agent runs: renews
/// it over the uplink with the same key, stores it (mode 0600) and presents
/// it on every connection made after. The session in progress goes on.
pub async fn renew(
    data_dir: PathBuf,
    host_cert: Arc<tls::HostCert>,
    (server, tls): (String, Arc<ClientConfig>),
    now: Arc<tokio::sync::Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let wait = match outpost_proto::identity::host_certificate(&host_cert.certificate()) {
            // At least a second apart, whatever the clocks say.
            Some(cert) => renew_in(
                cert.not_before,
                cert.not_after,
                time::OffsetDateTime::now_utc().unix_timestamp(),
            )
            .max(Duration::from_secs(1)),
            None => {
                tracing::warn!("the host certificate names no host; it is not renewed");
                return;
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = now.notified() => tracing::info!("renewing the host certificate: the control plane's CA changed"),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        match renew_once(&data_dir, &host_cert, &server, tls.clone()).await {
            Ok(()) => tracing::info!("host certificate renewed"),
            Err(err) => {
                tracing::warn!(
                    err = format!("{err:#}"),
                    "renewing the host certificate; will retry"
                );
                tokio::select! {
                    () = tokio::time::sleep(RENEW_RETRY) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    }
}

async fn renew_once(
    data_dir: &Path,
    host_cert: &tls::HostCert,
    server: &str,
    tls: Arc<ClientConfig>,
) -> Result<()> {
    let paths = paths(data_dir);
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(&paths.key).with_context(|| format!("reading {}", paths.key.display()))?,
    );
    let key = KeyPair::from_pem(&key_pem).context("reading the host key")?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .context("making the certificate request")?;
    let channel = tls::channel(server, tls).await?;
    let reply = AgentGatewayClient::new(channel)
        .renew_certificate(RenewRequest { csr_pem: csr })
        .await
        .map_err(|status| anyhow::anyhow!("renewal refused: {}", status.message()))?
        .into_inner();
    host_cert.replace(&reply.certificate_pem, &key_pem)?;
    write_private(&paths.cert, reply.certificate_pem.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_renewed_after_two_thirds_of_its_life_or_at_once() {
        assert_eq!(renew_in(0, 300, 0), Duration::from_secs(200));
        assert_eq!(renew_in(0, 300, 150), Duration::from_secs(50));
        assert_eq!(renew_in(0, 300, 250), Duration::ZERO);
        assert_eq!(renew_in(0, 300, 10_000), Duration::ZERO, "expired: at once");
    }
}
