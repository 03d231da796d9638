//! The CAs this host trusts: its `ca.crt`, the control plane's CA and,
//! while `outpost control rotate-ca` runs its course, the new CA beside the
//! old one. The control plane sends them over the session (`TrustBundle`);
//! every check reads them as they are now: the uplink's TLS, peers' TLS,
//! signed heads and offline bundles. A session in progress is never ended
//! by a change: its TLS was already checked.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use outpost_files::write_private;
use parking_lot::RwLock;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

#[derive(Debug)]
pub struct Trust {
    path: PathBuf,
    pem: RwLock<String>,
}

/// The certificates of a PEM bundle; at least one.
fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the CA certificates")?;
    anyhow::ensure!(!certs.is_empty(), "no CA certificate in the bundle");
    Ok(certs)
}

impl Trust {
    /// The CAs in `path` (written at enrollment).
    pub fn open(path: PathBuf) -> Result<Arc<Trust>> {
        let pem = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        certificates(&pem).with_context(|| format!("reading {}", path.display()))?;
        Ok(Arc::new(Trust {
            path,
            pem: RwLock::new(pem),
        }))
    }

    /// The CAs as PEM, the current one first.
    pub fn pem(&self) -> String {
        self.pem.read().clone()
    }

    /// SHA-256 (hex) of the PEM: what a poll tells the control plane it holds.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.pem.read().as_bytes()))
    }

    /// The CAs as a root store.
    pub fn roots(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(&self.pem.read())? {
            roots.add(cert)?;
        }
        Ok(roots)
    }

    /// Takes the CAs the control plane sent: stored (mode 0600) and used
    /// from now on. Returns whether they changed.
    pub fn replace(&self, pem: &str) -> Result<bool> {
        if *self.pem.read() == pem {
            return Ok(false);
        }
        certificates(pem)?;
        write_private(&self.path, pem.as_bytes())?;
        *self.pem.write() = pem.to_string();
        Ok(true)
    }
}

/// Checks the control plane's certificate against the CAs trusted now.
#[derive(Debug)]
pub(crate) struct TrustedCas(pub Arc<Trust>);

impl crate::tls::CertificateCheck for TrustedCas {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let roots = self
            .0
            .roots()
            .map_err(|e| rustls::Error::General(format!("{e:#}")))?;
        crate::tls::verify_chain(roots, end_entity, intermediates, server_name, now)
    }
}
