//! The control plane's certificate authority, its serving certificate, and
//! host certificates for enrolled agents.
//!
//! The CA is made on first start and kept in `DATA_DIR/tls` (keys mode
//! 0600). The server certificate is signed afresh at every start, so a new
//! `--tls-san` takes effect without touching the CA that clients trust.
//!
//! `rotate` brings in a new CA, cross-signed by the old one, which stays
//! trusted until `retire`: hosts learn both over their sessions, renew
//! their certificates under the new one, and no session ends. A
//! host certificate names its site and host in a URI subject alternative
//! name, `outpost://site/SITE/host/HOST`: the only identity the agent
//! gateway believes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use outpost_files::{create_private_dir, write_private};
pub use outpost_proto::identity::{HostCertificate, host_certificate, host_identity_uri};

use anyhow::{Context, Result};
use parking_lot::RwLock;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// The control plane's CAs. `authority` is swapped whole by a rotation;
/// every signature and every TLS handshake reads the one in force.
pub struct Pki {
    dir: PathBuf,
    names: Vec<String>,
    authority: RwLock<Arc<Authority>>,
    /// Raised by one at each rotation and retirement: sessions tell their
    /// hosts the new CAs.
    changed: watch::Sender<u64>,
}

/// One state of the CAs: the current CA (which signs), and while a
/// rotation is under way the previous one (still trusted) with the current
/// CA cross-signed by it, so that a host that trusts only the previous CA
/// still reaches the control plane.
struct Authority {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    previous: Option<(String, CertificateDer<'static>)>,
    /// The serving certificate and its chain: the current CA, then the
    /// cross-signed CA and the previous CA while there is one.
    server: Arc<CertifiedKey>,
}

/// Valid from a little before now (for clocks behind ours: an hour, or a
/// tenth of a short lifetime, so that agents still renew at two thirds of
/// the life they were given) for `lifetime`.
fn validity(params: &mut CertificateParams, lifetime: time::Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - (lifetime / 10_i32).min(time::Duration::hours(1));
    params.not_after = now + lifetime;
}

/// The files of the CAs in the TLS directory.
const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const PREVIOUS_CERT: &str = "ca-previous.crt";
const CROSS_CERT: &str = "ca-cross.crt";

/// A CA certificate for `key`, named `name`, valid ten years.
fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, time::Duration::days(3650));
    params
}

/// The CA files in `dir`, by name: what replicas share (sealed) through
/// the store. Empty when the directory holds no CA yet.
pub fn read_files(dir: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    let mut files = std::collections::BTreeMap::new();
    for name in [CA_CERT, CA_KEY, PREVIOUS_CERT, CROSS_CERT] {
        match fs::read_to_string(dir.join(name)) {
            Ok(text) => {
                files.insert(name.to_string(), text);
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("reading {}", dir.join(name).display())),
        }
    }
    Ok(files)
}

/// Puts the CA files another replica stored in `dir` (keys mode 0600),
/// and removes those it does not have: the key and certificate last, so
/// a crash leaves either set whole enough to load.
pub fn write_files(dir: &Path, files: &std::collections::BTreeMap<String, String>) -> Result<()> {
    create_private_dir(dir)?;
    for name in [CA_CERT, CA_KEY] {
        if !files.contains_key(name) {
            anyhow::bail!("the stored CA has no {name}");
        }
    }
    for name in [PREVIOUS_CERT, CROSS_CERT] {
        match files.get(name) {
            Some(text) => write_private(&dir.join(name), text.as_bytes())?,
            None => match fs::remove_file(dir.join(name)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(err).with_context(|| format!("removing {}", dir.join(name).display()));
                }
                _ => {}
            },
        }
    }
    for name in [CA_KEY, CA_CERT] {
        let next = dir.join(format!("{name}.next"));
        write_private(&next, files[name].as_bytes())?;
        fs::rename(&next, dir.join(name)).with_context(|| format!("installing {name}"))?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

impl Authority {
    /// Loads the CAs from `dir` and signs a server certificate for `names`.
    fn load(dir: &Path, names: &[String]) -> Result<Authority> {
        let ca_pem = read(&dir.join(CA_CERT))?;
        let key = KeyPair::from_pem(&read(&dir.join(CA_KEY))?).context("parsing the CA key")?;
        let ca_der = pem_to_der(&ca_pem)?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, key).context("loading the CA certificate")?;
        let previous = match dir.join(PREVIOUS_CERT) {
            path if path.exists() => {
                let pem = read(&path)?;
                let der = pem_to_der(&pem)?;
                Some((pem, der))
            }
            _ => None,
        };
        let server = server_certificate(&issuer, names)?;
        let mut chain = vec![server.cert.der().clone(), ca_der.clone()];
        if let Some((_, previous)) = &previous {
            chain.push(pem_to_der(&read(&dir.join(CROSS_CERT))?)?);
            chain.push(previous.clone());
        }
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key.serialize_der()));
        let key = rustls::crypto::ring::sign::any_supported_type(&key).context("loading the server key")?;
        Ok(Authority {
            ca_pem,
            ca_der,
            issuer,
            previous,
            server: Arc::new(CertifiedKey::new(chain, key)),
        })
    }
}

impl Pki {
    /// Loads the CAs from `dir` (making one on first start) and signs a
    /// server certificate for `names` (DNS names or IP addresses).
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Pki> {
        create_private_dir(dir)?;
        if !dir.join(CA_CERT).exists() {
            let key = KeyPair::generate().context("generating the CA key")?;
            let cert = ca_params("Outpost control plane CA")
                .self_signed(&key)
                .context("signing the CA certificate")?;
            write_private(&dir.join(CA_KEY), key.serialize_pem().as_bytes())?;
            write_private(&dir.join(CA_CERT), cert.pem().as_bytes())?;
        }
        Ok(Pki {
            authority: RwLock::new(Arc::new(Authority::load(dir, names)?)),
            dir: dir.to_path_buf(),
            names: names.to_vec(),
            changed: watch::channel(0).0,
        })
    }

    /// Where the CA files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn authority(&self) -> Arc<Authority> {
        self.authority.read().clone()
    }

    /// The current CA, PEM: what new clients are told to trust.
    pub fn ca_pem(&self) -> String {
        self.authority().ca_pem.clone()
    }

    /// Every CA trusted now, PEM, the current one first: what hosts keep
    /// as their `ca.crt`.
    pub fn trusted_pem(&self) -> String {
        let authority = self.authority();
        match &authority.previous {
            Some((previous, _)) => format!("{}{previous}", authority.ca_pem),
            None => authority.ca_pem.clone(),
        }
    }

    /// Every CA trusted now, as a root store (host certificates of either
    /// are accepted while a rotation is under way).
    pub fn trusted_roots(&self) -> Result<rustls::RootCertStore> {
        let authority = self.authority();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(authority.ca_der.clone())?;
        if let Some((_, previous)) = &authority.previous {
            roots.add(previous.clone())?;
        }
        Ok(roots)
    }

    /// The current CA's name (RFC 4514), as certificates it signs name
    /// their issuer (each CA a rotation makes has a name of its own).
    pub fn issuer(&self) -> String {
        x509_parser::parse_x509_certificate(&self.authority().ca_der)
            .map(|(_, ca)| ca.subject().to_string())
            .unwrap_or_default()
    }

    /// Whether a rotation is under way (a previous CA is still trusted).
    pub fn rotating(&self) -> bool {
        self.authority().previous.is_some()
    }

    /// Changes at each rotation and retirement.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// How many rotations and retirements there were since the start.
    pub fn generation(&self) -> u64 {
        *self.changed.borrow()
    }

    /// Introduces a new CA: it signs from now on (hosts, heads, bundles,
    /// the serving certificate), cross-signed by the current one, which
    /// stays trusted until `retire`. Refused while a rotation is under way.
    pub fn rotate(&self) -> Result<String> {
        let old = self.authority();
        if old.previous.is_some() {
            anyhow::bail!(
                "a CA rotation is under way: retire the previous CA first (outpost control rotate-ca --retire)"
            );
        }
        let name = format!(
            "Outpost control plane CA {}",
            time::OffsetDateTime::now_utc().unix_timestamp()
        );
        let key = KeyPair::generate().context("generating the new CA key")?;
        let cert = ca_params(&name).self_signed(&key).context("signing the new CA")?;
        let cross = ca_params(&name)
            .signed_by(&key, &old.issuer)
            .context("cross-signing the new CA")?;
        // The previous CA and the cross-signed one first, then the new key
        // and certificate: a crash in between leaves the old CA in force.
        write_private(&self.dir.join(PREVIOUS_CERT), old.ca_pem.as_bytes())?;
        write_private(&self.dir.join(CROSS_CERT), cross.pem().as_bytes())?;
        write_private(&self.dir.join("ca-next.key"), key.serialize_pem().as_bytes())?;
        write_private(&self.dir.join("ca-next.crt"), cert.pem().as_bytes())?;
        fs::rename(self.dir.join("ca-next.key"), self.dir.join(CA_KEY))
            .context("installing the new CA key")?;
        fs::rename(self.dir.join("ca-next.crt"), self.dir.join(CA_CERT)).context("installing the new CA")?;
        self.reload()?;
        Ok(self.ca_fingerprint())
    }

    /// Stops trusting the previous CA (after every host holds a
    /// certificate of the current one: the caller checks).
    pub fn retire(&self) -> Result<()> {
        if !self.rotating() {
            anyhow::bail!("no previous CA to retire (outpost control rotate-ca introduces a new one)");
        }
        fs::remove_file(self.dir.join(CROSS_CERT)).context("removing the cross-signed CA")?;
        fs::remove_file(self.dir.join(PREVIOUS_CERT)).context("removing the previous CA")?;
        self.reload()
    }

    /// Reads the CAs from the directory again (another replica rotated or
    /// retired, and `write_files` put its CAs there).
    pub fn reload(&self) -> Result<()> {
        *self.authority.write() = Arc::new(Authority::load(&self.dir, &self.names)?);
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// SHA-256 of the CA certificate, hex: what join tokens pin.
    pub fn ca_fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.authority().ca_der))
    }

    /// Whether `fingerprint` is that of a CA trusted now (a join token
    /// made before a rotation still pins the previous CA).
    pub fn trusts_fingerprint(&self, fingerprint: &str) -> bool {
        let authority = self.authority();
        std::iter::once(&authority.ca_der)
            .chain(authority.previous.as_ref().map(|(_, der)| der))
            .any(|der| hex::encode(Sha256::digest(der)) == fingerprint)
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
        let cert = params.signed_by(&csr.public_key, &self.authority().issuer)?;
        Ok(cert.pem())
    }
}

/// The serving certificate of the CAs in force, for every TLS handshake
/// (the API's and the agent port's).
impl ResolvesServerCert for Pki {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.authority().server.clone())
    }
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
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
        outpost_proto::head::sign(site, revision, state, |message| {
            self.authority().issuer.key().sign(message)
        })
        .context("signing the state's head")
    }

    pub fn sign_bundle(&self, header: &[u8]) -> Result<Vec<u8>> {
        use rcgen::SigningKey;
        outpost_proto::bundle::sign(header, |message| self.authority().issuer.key().sign(message))
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
                issuer: pki.issuer(),
            }
        );

        // The CA survives a restart: same fingerprint.
        let again = Pki::load_or_create(dir.path(), &["localhost".to_string()]).unwrap();
        assert_eq!(again.ca_fingerprint(), pki.ca_fingerprint());
    }
}
