//! API tokens: random, shown once, kept only as a SHA-256 hash. A token has
//! 256 random bits, so a fast hash is enough (there is nothing to brute-force
//! the way there is with a password).

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A new token: `opt_` and 64 hex digits.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("opt_{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A join token: `opj1.CA_FINGERPRINT.SECRET`. The fingerprint lets a new
/// host trust the control plane before it has the CA; only the secret's
/// hash is stored, and it works once.
pub fn new_join_token(ca_fingerprint: &str) -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    (format!("opj1.{ca_fingerprint}.{secret}"), hash_token(&secret))
}

/// Splits a join token into (CA fingerprint, hash of the secret).
pub fn parse_join_token(token: &str) -> Option<(&str, String)> {
    let mut parts = token.trim().split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("opj1"), Some(fingerprint), Some(secret), None)
            if fingerprint.len() == 64
                && secret.len() == 64
                && secret.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Some((fingerprint, hash_token(secret)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 68);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert!(!hash_token(&a).contains(&a[4..]));
    }

    #[test]
    fn join_tokens_pin_the_ca_and_hide_the_secret() {
        let fingerprint = "ab".repeat(32);
        let (token, stored) = new_join_token(&fingerprint);
        let (pinned, hash) = parse_join_token(&token).unwrap();
        assert_eq!((pinned, hash.as_str()), (fingerprint.as_str(), stored.as_str()));
        assert!(!token.contains(&stored));
        for bad in [
            "",
            "opj1",
            "opj2.x.y",
            &token.replace("opj1.", "opj1.x."),
            &token[..token.len() - 1],
        ] {
            assert_eq!(parse_join_token(bad), None, "{bad}");
        }
    }
}
