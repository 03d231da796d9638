//! Property test (issue 13): what arrives as a sealed secret is opened or
//! refused, never a panic, and a seal altered anywhere never opens.
//! `PROPTEST_CASES` sets the number of cases (`scripts/test` runs 2,000).

// Test setup: a panic is how it reports a failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use outpost_proto::seal::{self, HostKey, Values};
use proptest::prelude::*;
use zeroize::Zeroizing;

/// One host key for every case: making a key is the slow part.
static HOST: std::sync::LazyLock<HostKey> = std::sync::LazyLock::new(|| {
    let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    HostKey::from_pem(&pem).unwrap()
});

proptest! {
    #[test]
    fn arbitrary_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        prop_assert!(HOST.open(b"db/1", &bytes).is_err());
        let _ = Values::decode(&bytes);
    }

    #[test]
    fn an_altered_seal_never_opens(at in any::<usize>(), flip in 1u8..=255) {
        let host = &*HOST;
        let values = Values(BTreeMap::from([("password".to_string(), Zeroizing::new(b"s3cret".to_vec()))]));
        let mut sealed = seal::seal(host.public(), b"db/1", &values).unwrap();
        let at = at % sealed.len();
        sealed[at] ^= flip;
        prop_assert!(host.open(b"db/1", &sealed).is_err());
    }
}
