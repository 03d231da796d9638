//! The host's identity: a key made here (it never leaves the host), the
//! certificate the control plane signed for it, and the CA to trust. All
//! kept in the data directory; enrollment happens once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use outpost_proto::seal::HostKey;
use outpost_proto::v1::EnrollRequest;
use outpost_proto::v1::agent_gateway_client::AgentGatewayClient;
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
    pub tls: Arc<ClientConfig>,
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

/// The CA an enrolled host trusts, as PEM (what offline bundles are
/// checked against).
pub fn ca_pem(data_dir: &Path) -> Result<String> {
    let path = paths(data_dir).ca;
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
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
    let (ca, cert) = (read(&paths.ca)?, read(&paths.cert)?);
    Ok(Some(Credentials {
        identity,
        tls: tls::mutual(&ca, &cert, &key)?,
        host_key: host_key(&key)?,
        peer_tls: Arc::new(crate::peers::PeerTls::new(
            &ca,
            Arc::new(crate::underlay::Keys::load(data_dir)?),
        )?),
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
    let tls = tls::mutual(&response.ca_pem, &response.certificate_pem, &key)?;
    Ok(Credentials {
        identity,
        tls,
        host_key: host_key(&key)?,
        peer_tls: Arc::new(crate::peers::PeerTls::new(
            &response.ca_pem,
            Arc::new(crate::underlay::Keys::load(data_dir)?),
        )?),
    })
}
