//! Where the store is when it is not SQLite in the data directory: a
//! PostgreSQL URL, as `--store` takes it, and opening either.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{SqlStore, Storage};

/// Where the store is: a PostgreSQL URL, as `--store` takes it. It may
/// hold a password, so it prints (`{:?}`) without one and has no Display.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// The whole URL, password included: for connecting, never for a log.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreUrl({})", redacted(&self.0))
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(StoreUrl(url.to_string()))
        } else {
            Err(format!(
                "{url:?} is not a PostgreSQL URL (postgres://USER@HOST[:PORT]/DATABASE); \
                 leave --store out to keep the store in SQLite in the data directory"
            ))
        }
    }
}

/// Opens the store: PostgreSQL at `store`, or SQLite in `data_dir`.
pub async fn open_store(data_dir: &Path, store: Option<&StoreUrl>) -> Result<Arc<dyn Storage>> {
    let store = match store {
        Some(StoreUrl(url)) => SqlStore::connect_postgres(url)
            .await
            .with_context(|| format!("opening the store in PostgreSQL ({})", redacted(url)))?,
        None => SqlStore::open(&data_dir.join("outpost.db"))
            .await
            .context("opening the store")?,
    };
    Ok(Arc::new(store))
}

/// A database URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
