//! Who a host certificate speaks for. The control plane's CA names a
//! host's site and host in a URI subject alternative name,
//! `outpost://site/SITE/host/HOST`; the agent gateway and a site's peers
//! believe nothing else.

/// The identity a host certificate carries, as a URI subject alternative name.
pub fn host_identity_uri(site: &str, host: &str) -> String {
    format!("outpost://site/{site}/host/{host}")
}

/// Who a host certificate names, and its serial (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCertificate {
    pub site: String,
    pub host: String,
    pub serial: String,
    /// The certificate's public key: an uncompressed P-256 point.
    pub public_key: Vec<u8>,
    /// When it became and stops being valid, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// The CA that signed it, by its name (RFC 4514).
    pub issuer: String,
}

/// The site, host, serial and public key of a host certificate.
pub fn host_certificate(cert_der: &[u8]) -> Option<HostCertificate> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    let (site, host) = names.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => {
            let (site, host) = uri.strip_prefix("outpost://site/")?.split_once("/host/")?;
            Some((site.to_string(), host.to_string()))
        }
        _ => None,
    })?;
    Some(HostCertificate {
        site,
        host,
        serial: hex::encode(cert.raw_serial()),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        issuer: cert.issuer().to_string(),
    })
}

/// The identity an underlay certificate carries (the site network's key of
/// `host` of `site`, of key epoch `epoch`), as a URI subject alternative
/// name. Distinct from a host identity: the agent gateway takes none.
pub fn underlay_uri(site: &str, host: &str, epoch: u64) -> String {
    format!("outpost://underlay/{site}/{host}/{epoch}")
}

/// Who an underlay certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderlayCertificate {
    pub site: String,
    pub host: String,
    pub epoch: u64,
}

/// The site, host and key epoch of an underlay certificate.
pub fn underlay_certificate(cert_der: &[u8]) -> Option<UnderlayCertificate> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    names.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => {
            let mut parts = uri.strip_prefix("outpost://underlay/")?.split('/');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(site), Some(host), Some(epoch), None) => Some(UnderlayCertificate {
                    site: site.to_string(),
                    host: host.to_string(),
                    epoch: epoch.parse().ok()?,
                }),
                _ => None,
            }
        }
        _ => None,
    })
}
