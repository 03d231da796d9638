//! The signed head of a site's desired state: the control plane signs the
//! site, the revision and a digest of the state with its CA key (as it
//! signs bundles), so that the hosts of a site can hand each other the
//! newest state one of them received, and a host takes it only if the
//! control plane made it for its site.

use outpost_api::workload::SiteState;
use serde::{Deserialize, Serialize};

use crate::bundle::{BundleError, ca_signed};

const CONTEXT: &[u8] = b"outpost-site-state-v1\0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub site: String,
    pub revision: u64,
    /// `digest` of the state.
    pub digest: String,
}

/// What identifies a state the way a host holds it: its workloads by key,
/// the staged ones, the peers and `hostLossAfter`, without the placement
/// failures (which the control plane keeps to itself).
pub fn digest(state: &SiteState) -> String {
    let mut held = SiteState {
        failures: Vec::new(),
        ..state.clone()
    };
    held.workloads.sort_by_key(|w| w.key());
    let json = serde_json::to_vec(&held).unwrap_or_default();
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &json))
}

fn message(head: &[u8]) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, head);
    [CONTEXT, digest.as_ref()].concat()
}

/// The head of `state` at `revision` for `site`, and its signature by
/// `sign` (the CA key).
pub fn sign<E>(
    site: &str,
    revision: u64,
    state: &SiteState,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<(Vec<u8>, Vec<u8>), E> {
    let head = Head {
        site: site.to_string(),
        revision,
        digest: digest(state),
    };
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let signature = sign(&message(&head))?;
    Ok((head, signature))
}

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error(transparent)]
    Signature(#[from] BundleError),
    #[error("the head is not readable: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("the head is for site {0}")]
    OtherSite(String),
    #[error("the state does not match its head (revision {0})")]
    Mismatch(u64),
}

/// Checks that the control plane (the CA in `ca_pem`) signed `head` for
/// `site`, and that `state` is the state it names; returns its revision.
pub fn verify(
    head: &[u8],
    signature: &[u8],
    ca_pem: &str,
    site: &str,
    state: &SiteState,
) -> Result<u64, HeadError> {
    ca_signed(&message(head), signature, ca_pem)?;
    let head: Head = serde_json::from_slice(head)?;
    if head.site != site {
        return Err(HeadError::OtherSite(head.site));
    }
    if head.digest != digest(state) {
        return Err(HeadError::Mismatch(head.revision));
    }
    Ok(head.revision)
}
