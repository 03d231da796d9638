//! The control plane's certificate authority, its serving certificate, and
//! host certificates for enrolled agents.
//!
//! The CA is made on first start and kept in `DATA_DIR/tls` (keys mode
//! 0600). The server certificate is signed afresh at every start, so a new
//! `--tls-san` takes effect without touching the CA that clients trust. A
//! host certificate names its site and host in a URI subject alternative
//! name, `outpost://site/SITE/host/HOST`: the only identity the agent
//! gateway believes.

use std::fs;
use std::path::Path;

use outpost_files::{create_private_dir, write_private};
pub use outpost_proto::identity::{HostCertificate, host_certificate, host_identity_uri};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

pub struct Pki {
    pub ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: PrivateKeyDer<'static>,
    /// The same certificate chain and key as PEM, for the gRPC server.
    pub server_chain_pem: String,
    pub server_key_pem: String,
}

/// Valid from a little before now (for clocks behind ours: an hour, or a
/// tenth of a short lifetime, so that agents still renew at two thirds of
/// the life they were given) for `lifetime`.
fn validity(params: &mut CertificateParams, lifetime: time::Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - (lifetime / 10_i32).min(time::Duration::hours(1));
    params.not_after = now + lifetime;
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
            validity(&mut params, time::Duration::days(3650));
            let cert = params.self_signed(&key).context("signing the CA certificate")?;
            write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
            fs::write(&ca_cert_path, cert.pem())
                .with_context(|| format!("writing {}", ca_cert_path.display()))?;
            (cert.pem(), key)
        };
        let ca_der = pem_to_der(&ca_pem)?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key).context("loading the CA certificate")?;
        let server = server_certificate(&issuer, names)?;
        Ok(Pki {
            server_chain: vec![server.cert.der().clone(), ca_der.clone()],
            server_chain_pem: format!("{}{ca_pem}", server.cert.pem()),
            server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key.serialize_der())),
            server_key_pem: server.key.serialize_pem(),
            ca_pem,
            ca_der,
            issuer,
        })
    }

    /// SHA-256 of the CA certificate, hex: what join tokens pin.
    pub fn ca_fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.ca_der))
    }

    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// Signs a host's CSR with the given serial (from [`new_serial`]),
    /// valid for `lifetime`. Only the public key is taken from the request:
    /// the identity (site and host) is set here, never by the agent.
    pub fn sign_host_csr(
        &self,
        csr_pem: &str,
        (site, host): (&str, &str),
        serial: &str,
        lifetime: std::time::Duration,
    ) -> Result<String> {
        let name = format!("{host}.{site}");
        let lifetime = time::Duration::try_from(lifetime).context("the certificate lifetime is too long")?;
        self.sign_client_csr(csr_pem, &name, &host_identity_uri(site, host), serial, lifetime)
            .context("signing the host certificate")
    }

    /// Signs a key a host made for its site's underlay (the site network):
    /// a certificate naming the site, host and key epoch
    /// (`outpost_proto::identity::underlay_uri`), which the site's hosts
    /// accept from each other while their site accepts the epoch, and the
    /// agent gateway never takes for a host's identity.
    pub fn sign_underlay_csr(&self, csr_pem: &str, site: &str, host: &str, epoch: u64) -> Result<String> {
        let name = format!("{host}.{site} underlay {epoch}");
        let uri = outpost_proto::identity::underlay_uri(site, host, epoch);
        self.sign_client_csr(csr_pem, &name, &uri, &new_serial(), time::Duration::days(365))
            .context("signing the underlay certificate")
    }

    /// A client certificate valid for `lifetime` for the public key of
    /// `csr_pem`, named `common_name` and the URI `uri`: only the key is
    /// taken from the request, the names are set here, never by the agent.
    fn sign_client_csr(
        &self,
        csr_pem: &str,
        common_name: &str,
        uri: &str,
        serial: &str,
        lifetime: time::Duration,
    ) -> Result<String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .context("the CSR is not a valid PKCS#10 request")?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.subject_alt_names = vec![SanType::URI(
            uri.to_string()
                .try_into()
                .context("building the certificate's name")?,
        )];
        params.serial_number = Some(SerialNumber::from_slice(
            &hex::decode(serial).context("the serial is not hex")?,
        ));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, lifetime);
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(cert.pem())
    }
}

struct ServerCertificate {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn server_certificate(issuer: &Issuer<'static, KeyPair>, names: &[String]) -> Result<ServerCertificate> {
    let key = KeyPair::generate().context("generating the server key")?;
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
    validity(&mut params, time::Duration::days(365));
    let cert = params
        .signed_by(&key, issuer)
        .context("signing the server certificate")?;
    Ok(ServerCertificate { cert, key })
}

impl Pki {
    /// Signs the header of an offline bundle with the CA key, which every
    /// enrolled host already trusts (see `outpost_proto::bundle`).
    /// Signs the head of a site's desired state (see
    /// `outpost_proto::head`): the head, and its signature.
    pub fn sign_state(
        &self,
        site: &str,
        revision: u64,
        state: &outpost_api::workload::SiteState,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        use rcgen::SigningKey;
        outpost_proto::head::sign(site, revision, state, |message| self.issuer.key().sign(message))
            .context("signing the state's head")
    }

    pub fn sign_bundle(&self, header: &[u8]) -> Result<Vec<u8>> {
        use rcgen::SigningKey;
        outpost_proto::bundle::sign(header, |message| self.issuer.key().sign(message))
            .context("signing the bundle")
    }
}

/// A fresh serial for a host certificate: 16 random bytes as hex. The
/// first byte is non-zero with its top bit clear, so the DER integer is
/// positive and already minimal, and reads back as the same 16 bytes.
pub fn new_serial() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    hex::encode(bytes)
}

fn pem_to_der(pem: &str) -> Result<CertificateDer<'static>> {
    let mut reader = pem.as_bytes();
    rustls_pemfile::certs(&mut reader)
        .next()
        .context("the CA file holds no certificate")?
        .context("parsing the CA certificate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_certificates_carry_the_identity_the_ca_chose() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &["localhost".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut request = CertificateParams::default();
        // The agent claims another identity in its CSR; it must be ignored.
        request.subject_alt_names = vec![SanType::URI(
            host_identity_uri("other", "evil").try_into().unwrap(),
        )];
        let csr = request.serialize_request(&key).unwrap().pem().unwrap();
        let serial = new_serial();
        let lifetime = std::time::Duration::from_secs(30 * 86_400);
        let pem = pki
            .sign_host_csr(&csr, ("store-042", "till-1"), &serial, lifetime)
            .unwrap();
        let der = pem_to_der(&pem).unwrap();
        let certificate = host_certificate(&der).unwrap();
        let expected_end = time::OffsetDateTime::now_utc().unix_timestamp() + 30 * 86_400;
        assert!(
            (certificate.not_after - expected_end).abs() < 60,
            "{certificate:?}"
        );
        assert_eq!(
            certificate,
            HostCertificate {
                site: "store-042".to_string(),
                host: "till-1".to_string(),
                serial,
                public_key: key.public_key_raw().to_vec(),
                not_before: certificate.not_before,
                not_after: certificate.not_after,
            }
        );

        // The CA survives a restart: same fingerprint.
        let again = Pki::load_or_create(dir.path(), &["localhost".to_string()]).unwrap();
        assert_eq!(again.ca_fingerprint(), pki.ca_fingerprint());
    }
}
