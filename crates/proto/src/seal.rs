//! Sealing a secret to one host: what the control plane sends in a site
//! manifest can be opened only with that host's private key.
//!
//! ECDH on P-256 between a fresh ephemeral key and the host's enrolled key
//! (the key of its TLS certificate), HKDF-SHA256 over the shared secret,
//! then AES-256-GCM. Each seal has its own ephemeral key, so its AEAD key is
//! used once and the nonce may be fixed. The context (`NAME/VERSION`) is
//! bound in both the key derivation and the AEAD, so a sealed version
//! cannot be passed off as another secret or version. The control plane
//! seals with `ring`; the agent opens with `p256`, since `ring` does not
//! do ECDH with a stored private key. Both are maintained crates; nothing
//! here is a primitive of its own.
//!
//! Layout: `1 | ephemeral public key (65 bytes, uncompressed) | ciphertext | tag`.

use prost::Message;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::SystemRandom;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

use crate::v1::SecretValues;

const FORMAT: u8 = 1;
const POINT: usize = 65;
const INFO: &[u8] = b"outpost/seal/v1";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the host key is not a P-256 public key")]
    HostKey,
    #[error("the host's private key is not a P-256 key in PKCS#8 PEM")]
    PrivateKey,
    #[error("not a sealed secret of this format")]
    Format,
    #[error("the sealed secret does not open with this host's key (sealed for another host, or altered)")]
    Open,
    #[error("the opened secret is not readable")]
    Values,
    #[error("the system's random source failed")]
    Random,
    #[error("deriving the sealing key failed")]
    Derive,
}

/// The values of a secret: key → bytes. Wiped from memory when dropped,
/// and never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Values(pub BTreeMap<String, Zeroizing<Vec<u8>>>);

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Values {
    /// The protobuf encoding (what is encrypted at rest and sealed).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let message = SecretValues {
            values: self.0.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect(),
        };
        let bytes = Zeroizing::new(message.encode_to_vec());
        wipe(message);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Values, SealError> {
        let message = SecretValues::decode(bytes).map_err(|_| SealError::Values)?;
        let values = Values(
            message
                .values
                .iter()
                .map(|(k, v)| (k.clone(), Zeroizing::new(v.clone())))
                .collect(),
        );
        wipe(message);
        Ok(values)
    }

    /// The bytes of all values together.
    pub fn size(&self) -> usize {
        self.0.values().map(|v| v.len()).sum()
    }
}

fn wipe(message: SecretValues) {
    for (_, value) in message.values {
        drop(Zeroizing::new(value));
    }
}

impl std::fmt::Debug for crate::v1::SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("sealed", &format_args!("<{} bytes>", self.sealed.len()))
            .finish()
    }
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

/// The context a sealed version is bound to.
pub fn context(name: &str, version: u64) -> Vec<u8> {
    format!("{name}/{version}").into_bytes()
}

fn aead_key(shared: &[u8], ephemeral: &[u8], host: &[u8], context: &[u8]) -> Result<LessSafeKey, SealError> {
    let salt = Salt::new(HKDF_SHA256, &[ephemeral, host].concat());
    let info = [INFO, context];
    let mut key = Zeroizing::new([0u8; 32]);
    salt.extract(shared)
        .expand(&info, &AES_256_GCM)
        .and_then(|okm| okm.fill(key.as_mut()))
        .map_err(|_| SealError::Derive)?;
    let key = UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| SealError::Derive)?;
    Ok(LessSafeKey::new(key))
}

/// Seals `values` for the host whose public key (an uncompressed P-256
/// point, as in its certificate) is `host`.
pub fn seal(host: &[u8], context: &[u8], values: &Values) -> Result<Vec<u8>, SealError> {
    if host.len() != POINT || host[0] != 4 {
        return Err(SealError::HostKey);
    }
    let rng = SystemRandom::new();
    let private = EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| SealError::Random)?;
    let public = private.compute_public_key().map_err(|_| SealError::Random)?;
    let ephemeral = public.as_ref().to_vec();
    let key = agree_ephemeral(private, &UnparsedPublicKey::new(&ECDH_P256, host), |shared| {
        aead_key(shared, &ephemeral, host, context)
    })
    .map_err(|_| SealError::HostKey)??;
    let mut sealed = Vec::with_capacity(1 + POINT + values.size() + 64);
    sealed.push(FORMAT);
    sealed.extend_from_slice(&ephemeral);
    let mut body = values.encode();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0; 12]),
        Aad::from(context),
        &mut *body,
    )
    .map_err(|_| SealError::Random)?;
    sealed.extend_from_slice(&body);
    Ok(sealed)
}

/// A host's private key, as the agent opens with it.
pub struct HostKey {
    secret: p256::SecretKey,
    public: Vec<u8>,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostKey(<redacted>)")
    }
}

impl HostKey {
    /// From the PKCS#8 PEM the host generated at enrollment.
    pub fn from_pem(pem: &str) -> Result<HostKey, SealError> {
        use p256::pkcs8::DecodePrivateKey;
        let secret = p256::SecretKey::from_pkcs8_pem(pem).map_err(|_| SealError::PrivateKey)?;
        let public =
            p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false)
                .as_bytes()
                .to_vec();
        Ok(HostKey { secret, public })
    }

    /// The uncompressed public point, as a seal needs it.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// Opens what `seal` sealed for this host, under the same context.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Values, SealError> {
        if sealed.len() < 1 + POINT + 16 || sealed[0] != FORMAT {
            return Err(SealError::Format);
        }
        let ephemeral = &sealed[1..1 + POINT];
        let point = p256::PublicKey::from_sec1_bytes(ephemeral).map_err(|_| SealError::Format)?;
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), point.as_affine());
        let key = aead_key(shared.raw_secret_bytes(), ephemeral, &self.public, context)?;
        let mut body = Zeroizing::new(sealed[1 + POINT..].to_vec());
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(context),
                &mut body,
            )
            .map_err(|_| SealError::Open)?;
        Values::decode(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_key() -> HostKey {
        let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        HostKey::from_pem(&pem).unwrap()
    }

    fn values() -> Values {
        Values(BTreeMap::from([
            ("password".to_string(), Zeroizing::new(b"hunter2".to_vec())),
            ("blob".to_string(), Zeroizing::new(vec![0, 255, 7])),
        ]))
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_host_and_context() {
        let host = host_key();
        let context = context("db", 3);
        let sealed = seal(host.public(), &context, &values()).unwrap();
        assert_eq!(host.open(&context, &sealed).unwrap(), values());
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "nothing in clear");

        let other = host_key();
        assert!(matches!(other.open(&context, &sealed), Err(SealError::Open)));
        assert!(matches!(
            host.open(&super::context("db", 4), &sealed),
            Err(SealError::Open)
        ));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(matches!(host.open(&context, &altered), Err(SealError::Open)));
        assert!(matches!(
            host.open(&context, &sealed[..20]),
            Err(SealError::Format)
        ));
        // Two seals of the same values differ (a fresh ephemeral key each).
        assert_ne!(sealed, seal(host.public(), &context, &values()).unwrap());
    }

    #[test]
    fn a_bad_host_key_is_refused() {
        assert!(matches!(seal(&[4; 10], b"x", &values()), Err(SealError::HostKey)));
        assert!(matches!(seal(&[4; 65], b"x", &values()), Err(SealError::HostKey)));
        assert!(matches!(HostKey::from_pem("nope"), Err(SealError::PrivateKey)));
    }

    #[test]
    fn values_never_print() {
        assert_eq!(format!("{:?}", values()), "{\"blob\", \"password\"}");
        let host = host_key();
        let sealed = crate::v1::SealedSecret {
            name: "db".into(),
            version: 3,
            sealed: seal(host.public(), b"x", &values()).unwrap(),
        };
        let printed = format!("{sealed:?}");
        assert!(
            printed.starts_with("SealedSecret { name: \"db\", version: 3, sealed: <"),
            "{printed}"
        );
        assert!(
            !format!("{host:?}").contains("Secret"),
            "the host key is redacted"
        );
        let manifest = crate::v1::SiteManifest {
            secrets: vec![sealed],
            ..Default::default()
        };
        assert!(
            format!("{manifest:?}").contains("bytes>"),
            "a manifest prints sealed secrets by size"
        );
    }
}
