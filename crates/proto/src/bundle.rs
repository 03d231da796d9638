//! Signed offline bundles: what a site without an uplink needs to run a
//! new release, carried on a disk (`outpost bundle create` / `import`).
//!
//! A bundle file is, in order:
//! - `MAGIC`;
//! - the header's length (4 bytes, big-endian) and the header: JSON of
//!   [`Header`], the desired state of every site the deployment covers
//!   and the SHA-256 of the image archive;
//! - the signature's length (4 bytes) and the signature: ECDSA P-256 by
//!   the control plane's CA key over `CONTEXT` and the header's SHA-256;
//! - the image archive (`docker save` of the release's images).
//!
//! The signature covers the header, and the header the archive, so a
//! changed or cut byte anywhere is found. A host checks the signature
//! against the CA it enrolled with: a bundle of another control plane
//! fails there. `CONTEXT` separates these signatures from the
//! certificates the same key signs (those sign DER, which begins `0x30`).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use outpost_api::workload::SiteState;
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8] = b"OUTPOST-BUNDLE-1\n";
const CONTEXT: &[u8] = b"outpost-bundle-v1\0";
/// The most a header may take: a deployment over many sites.
pub const MAX_HEADER: u32 = 256 << 20;
const MAX_SIGNATURE: u32 = 1024;

/// What a bundle says: the release, where it goes, and its images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub deployment: String,
    pub version: String,
    /// When the control plane signed it (milliseconds since the epoch):
    /// of two bundles for one site, the later wins.
    pub created_ms: u64,
    /// Per site: the desired state with the deployment at `version`.
    pub sites: BTreeMap<String, SiteBundle>,
    /// The image references the archive holds.
    pub images: Vec<String>,
    pub archive_sha256: String,
    pub archive_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteBundle {
    /// The site's revision at the control plane when the bundle was made:
    /// a host that already holds a later one refuses the bundle.
    pub revision: u64,
    pub state: SiteState,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("this is not an Outpost bundle (it does not begin with {:?})", String::from_utf8_lossy(MAGIC).trim())]
    NotABundle,
    #[error("the bundle is truncated: it ends inside its {0}")]
    Truncated(&'static str),
    #[error("the bundle's {what} claims {claimed} bytes, more than the {limit} allowed")]
    TooLarge {
        what: &'static str,
        claimed: u32,
        limit: u32,
    },
    #[error(
        "the bundle's signature does not match: it was changed after signing, or another control plane signed it"
    )]
    BadSignature,
    #[error("the CA certificate cannot be read: {0}")]
    Ca(String),
    #[error("the bundle's header is not readable")]
    Header(#[source] serde_json::Error),
    #[error("the image archive is {found}, the signed header says {expected}: the bundle was changed or cut")]
    Archive { expected: String, found: String },
    #[error("reading the bundle")]
    Io(#[source] std::io::Error),
}

/// What is signed: the context and the header's digest.
fn signed_message(header: &[u8]) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, header);
    [CONTEXT, digest.as_ref()].concat()
}

/// Signs a header with `sign` (the CA key's ECDSA P-256, ASN.1 DER).
pub fn sign<E>(header: &[u8], sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>) -> Result<Vec<u8>, E> {
    sign(&signed_message(header))
}

/// Writes a bundle: the signed head, then the archive.
pub fn write_head(out: &mut impl Write, header: &[u8], signature: &[u8]) -> std::io::Result<()> {
    out.write_all(MAGIC)?;
    for part in [header, signature] {
        out.write_all(&(part.len() as u32).to_be_bytes())?;
        out.write_all(part)?;
    }
    Ok(())
}

/// Reads the signed head of a bundle, leaving `input` at its archive.
pub fn read_head(input: &mut impl Read) -> Result<(Vec<u8>, Vec<u8>), BundleError> {
    let mut magic = vec![0; MAGIC.len()];
    read_exact(input, &mut magic, "beginning")?;
    if magic != MAGIC {
        return Err(BundleError::NotABundle);
    }
    let header = read_part(input, "header", MAX_HEADER)?;
    let signature = read_part(input, "signature", MAX_SIGNATURE)?;
    Ok((header, signature))
}

fn read_part(input: &mut impl Read, what: &'static str, limit: u32) -> Result<Vec<u8>, BundleError> {
    let mut length = [0; 4];
    read_exact(input, &mut length, what)?;
    let claimed = u32::from_be_bytes(length);
    if claimed > limit {
        return Err(BundleError::TooLarge { what, claimed, limit });
    }
    let mut part = vec![0; claimed as usize];
    read_exact(input, &mut part, what)?;
    Ok(part)
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), BundleError> {
    input.read_exact(buf).map_err(|err| match err.kind() {
        std::io::ErrorKind::UnexpectedEof => BundleError::Truncated(what),
        _ => BundleError::Io(err),
    })
}

/// Checks a head's signature against the CA (PEM) and reads its header.
pub fn verify(header: &[u8], signature: &[u8], ca_pem: &str) -> Result<Header, BundleError> {
    ca_signed(&signed_message(header), signature, ca_pem)?;
    serde_json::from_slice(header).map_err(BundleError::Header)
}

/// Checks that a CA of `ca_pem` signed `message` (ECDSA P-256, ASN.1 DER).
/// `ca_pem` may hold several: during a CA rotation a host trusts the new
/// CA and the old one (`outpost control rotate-ca`).
pub(crate) fn ca_signed(message: &[u8], signature: &[u8], ca_pem: &str) -> Result<(), BundleError> {
    let mut any = false;
    for der in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let der = der.map_err(|e| BundleError::Ca(e.to_string()))?;
        let (_, ca) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| BundleError::Ca(e.to_string()))?;
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            ca.public_key().subject_public_key.data.as_ref(),
        );
        if key.verify(message, signature).is_ok() {
            return Ok(());
        }
        any = true;
    }
    if any {
        Err(BundleError::BadSignature)
    } else {
        Err(BundleError::Ca("no CERTIFICATE block".to_string()))
    }
}

/// Hashes what it reads, to check the archive against the header.
pub struct Hashing<R> {
    inner: R,
    context: ring::digest::Context,
    bytes: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            context: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
        }
    }

    /// The SHA-256 (hex) and length of everything read.
    pub fn finish(self) -> (String, u64) {
        let digest = self.context.finish();
        (hex::encode(digest.as_ref()), self.bytes)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.context.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Checks a whole archive against the header without keeping it.
pub fn check_archive(header: &Header, archive: impl Read) -> Result<(), BundleError> {
    let mut hashing = Hashing::new(archive);
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(BundleError::Io)?;
    let (sha256, bytes) = hashing.finish();
    if sha256 != header.archive_sha256 || bytes != header.archive_bytes {
        return Err(BundleError::Archive {
            expected: format!(
                "{} bytes with SHA-256 {}",
                header.archive_bytes, header.archive_sha256
            ),
            found: format!("{bytes} bytes with SHA-256 {sha256}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA key and its certificate (PEM), as the control plane has them.
    fn ca() -> (rcgen::KeyPair, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        (key, pem)
    }

    fn bundle_bytes(key: &rcgen::KeyPair, archive: &[u8]) -> Vec<u8> {
        use rcgen::SigningKey;
        let mut hashing = Hashing::new(archive);
        std::io::copy(&mut hashing, &mut std::io::sink()).unwrap();
        let (archive_sha256, archive_bytes) = hashing.finish();
        let header = Header {
            deployment: "pos".into(),
            version: "2".into(),
            created_ms: 1,
            sites: [(
                "shop".to_string(),
                SiteBundle {
                    revision: 4,
                    state: SiteState::default(),
                },
            )]
            .into(),
            images: vec!["registry.example/pos:2".into()],
            archive_sha256,
            archive_bytes,
        };
        let json = serde_json::to_vec(&header).unwrap();
        let signature = sign(&json, |m| key.sign(m)).unwrap();
        let mut out = Vec::new();
        write_head(&mut out, &json, &signature).unwrap();
        out.extend_from_slice(archive);
        out
    }

    /// Reads, verifies and checks a whole bundle.
    fn open(bytes: &[u8], ca_pem: &str) -> Result<Header, BundleError> {
        let mut input = bytes;
        let (header, signature) = read_head(&mut input)?;
        let header = verify(&header, &signature, ca_pem)?;
        check_archive(&header, input)?;
        Ok(header)
    }

    #[test]
    fn a_bundle_opens_with_its_ca_and_nothing_else() {
        let (key, pem) = ca();
        let good = bundle_bytes(&key, b"the image archive");
        assert_eq!(open(&good, &pem).unwrap().sites["shop"].revision, 4);

        let (_, foreign) = ca();
        assert!(matches!(open(&good, &foreign), Err(BundleError::BadSignature)));

        // A byte changed in the header (its version), in the archive, or
        // the file cut anywhere: each is found.
        let at = good.windows(3).position(|w| w == b"\"2\"").unwrap() + 1;
        let mut header = good.clone();
        header[at] = b'3';
        assert!(matches!(open(&header, &pem), Err(BundleError::BadSignature)));
        let mut archive = good.clone();
        let last = archive.len() - 1;
        archive[last] ^= 1;
        assert!(matches!(open(&archive, &pem), Err(BundleError::Archive { .. })));
        for cut in [5, MAGIC.len() + 10, good.len() - 3] {
            let error = open(&good[..cut], &pem).unwrap_err();
            assert!(
                matches!(error, BundleError::Truncated(_) | BundleError::Archive { .. }),
                "cut at {cut}: {error}"
            );
        }
        assert!(matches!(
            open(b"PK\x03\x04 a zip file, not a bundle", &pem),
            Err(BundleError::NotABundle)
        ));
    }
}
