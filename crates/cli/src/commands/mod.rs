//! The CLI's commands. Each returns the text to print, so tests can check it
//! and the binary only prints.

mod access;
mod describe;
mod get;
mod hosts;
mod input;
mod rollout;
mod secrets;

pub use access::{
    audit, block, blocks, create_api_token, list_api_tokens, revoke_api_token, rotate_ca, verify_audit,
};
pub use describe::describe;
pub use get::{delete, get, history};
pub use hosts::{TokenOutput, create_join_token, get_hosts, label, rotate_keys, site_keys};
pub use input::{Checked, apply, diff, plan, read_sources, validate};
pub use rollout::{rollout_command, rollout_status, rollout_undo, rollout_watch};
pub use secrets::{SecretSet, delete_secret, describe_secret, get_secrets, secret_reveal, secret_set};

use anyhow::{Context, Result};
use outpost_api::manifest::Kind;
use outpost_api::selector::Selector;
use std::collections::BTreeMap;

use outpost_api::wire::{SiteStatus, StoredObject};

pub(super) fn lower(kind: Kind) -> String {
    kind.as_str().to_ascii_lowercase()
}

/// The status the server attached to an object (empty if it sent none).
pub(super) fn status_of<T: serde::de::DeserializeOwned + Default>(object: &StoredObject) -> T {
    object
        .status
        .clone()
        .and_then(|status| serde_json::from_value(status).ok())
        .unwrap_or_default()
}

pub(super) fn selector_text(selector: &Selector) -> String {
    if selector.as_str().is_empty() {
        "<all>".to_string()
    } else {
        selector.as_str().to_string()
    }
}

/// A stored object as its manifest type.
pub(super) fn typed<T: serde::de::DeserializeOwned>(object: &StoredObject) -> Result<T> {
    let mut json = object.manifest_json();
    if let Some(map) = json.as_object_mut() {
        map.remove("kind");
    }
    serde_json::from_value(json).with_context(|| {
        format!(
            "{} {:?} from the server does not read as a manifest",
            object.kind, object.metadata.name
        )
    })
}

/// The `Created:` and `Updated:` lines of a `describe`, with ages.
pub(super) fn write_times(out: &mut String, created_at: &str, updated_at: &str) {
    use std::fmt::Write as _;
    let age = crate::output::age;
    let _ = writeln!(out, "Created:     {created_at} ({} ago)", age(created_at));
    let _ = writeln!(out, "Updated:     {updated_at} ({} ago)", age(updated_at));
}

pub(super) fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "<none>".to_string();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn site_state(status: &SiteStatus) -> &'static str {
    match (status.hosts, status.online) {
        (0, _) => "no-hosts",
        (_, true) => "online",
        (_, false) => "offline",
    }
}
