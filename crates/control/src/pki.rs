//! The control plane's certificate authority and its serving certificate.
//!
//! The CA is made on first start and kept in `DATA_DIR/tls` (keys mode
//! 0600). The server certificate is signed afresh at every start, so a new
//! `--tls-san` takes effect without touching the CA that clients trust.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

pub struct Pki {
    pub ca_pem: String,
    ca_der: Vec<u8>,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: PrivateKeyDer<'static>,
}

impl Pki {
    /// Loads the CA from `dir` (making it on first start) and signs a server
    /// certificate for `names` (DNS names or IP addresses).
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Pki> {
        create_private_dir(dir)?;
        let ca_cert_path = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        let (ca_pem, ca_key) = if ca_cert_path.exists() {
            let key_pem = fs::read_to_string(&ca_key_path)
                .with_context(|| format!("reading {}", ca_key_path.display()))?;
            let key = KeyPair::from_pem(&key_pem).context("parsing the CA key")?;
            let pem = fs::read_to_string(&ca_cert_path)
                .with_context(|| format!("reading {}", ca_cert_path.display()))?;
            (pem, key)
        } else {
            let key = KeyPair::generate().context("generating the CA key")?;
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, "Outpost control plane CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
            params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
            let cert = params.self_signed(&key).context("signing the CA certificate")?;
            write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
            fs::write(&ca_cert_path, cert.pem())
                .with_context(|| format!("writing {}", ca_cert_path.display()))?;
            (cert.pem(), key)
        };
        let ca_der = pem_to_der(&ca_pem)?;
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca_der.clone()), ca_key)
            .context("loading the CA certificate")?;

        let server_key = KeyPair::generate().context("generating the server key")?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "outpost control");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .with_context(|| format!("{name:?} is not a DNS name or IP address")),
            })
            .collect::<Result<_>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365);
        let server_cert = params
            .signed_by(&server_key, &issuer)
            .context("signing the server certificate")?;
        Ok(Pki {
            ca_pem,
            ca_der: ca_der.clone(),
            server_chain: vec![server_cert.der().clone(), CertificateDer::from(ca_der)],
            server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        })
    }

    /// SHA-256 of the CA certificate, hex: what join tokens pin.
    pub fn ca_fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.ca_der))
    }
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    let mut reader = pem.as_bytes();
    let cert = rustls_pemfile::certs(&mut reader)
        .next()
        .context("the CA file holds no certificate")?
        .context("parsing the CA certificate")?;
    Ok(cert.to_vec())
}

/// Creates a directory readable only by its owner (or tightens an existing one).
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))
}

/// Writes a file only its owner can read, atomically (temporary file, then rename).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    fs::set_permissions(&temporary, fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))
}
