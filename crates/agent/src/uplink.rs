//! Bytes on the uplink, counted at the socket (TLS and HTTP/2 included):
//! what a metered link is billed for.

use std::sync::{Arc, LazyLock};

use outpost_proto::traffic::Traffic;

static UPLINK: LazyLock<Arc<Traffic>> = LazyLock::new(Default::default);

/// The counter every connection to the control plane adds to.
pub fn traffic() -> Arc<Traffic> {
    UPLINK.clone()
}

/// (sent, received) since the agent started.
pub fn totals() -> (u64, u64) {
    (UPLINK.sent(), UPLINK.received())
}
