//! The control plane's storage, behind a trait so PostgreSQL can join
//! SQLite (the default, embedded in the data directory).
//!
//! **Architecture Invariant:** an apply is one transaction: either every
//! object of the batch is stored or none is, and checks that span objects
//! (a deployment naming an application) run inside it.

mod sqlite;

use async_trait::async_trait;
use outpost_api::Diagnostics;
use outpost_api::manifest::Kind;
use outpost_api::validate::Document;
use outpost_api::wire::{ApplicationVersion, ApplyResult, StoredObject};

pub use sqlite::SqliteStore;

/// How many versions of each application are kept (plus any a deployment pins).
pub const KEPT_VERSIONS: i64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The batch conflicts with what is stored; nothing was changed.
    #[error("the manifests are not valid")]
    Invalid(Diagnostics),
    #[error("{kind} {name:?} not found")]
    NotFound { kind: Kind, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("storage failed: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::Internal(err.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(err: serde_json::Error) -> Self {
        StoreError::Internal(format!("stored JSON is damaged: {err}"))
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or updates every object of the batch, all or nothing.
    /// With `dry_run`, reports what would change and stores nothing.
    async fn apply(
        &self,
        documents: &[Document],
        actor: &str,
        dry_run: bool,
    ) -> Result<Vec<ApplyResult>, StoreError>;

    async fn get(&self, kind: Kind, name: &str) -> Result<Option<StoredObject>, StoreError>;

    async fn list(&self, kind: Kind) -> Result<Vec<StoredObject>, StoreError>;

    /// Deletes an object; refuses an application that a deployment uses.
    async fn delete(&self, kind: Kind, name: &str, actor: &str) -> Result<StoredObject, StoreError>;

    /// The kept versions of an application, newest first.
    async fn application_history(&self, name: &str) -> Result<Vec<ApplicationVersion>, StoreError>;

    /// Stores the hash of a new API token.
    async fn add_api_token(&self, name: &str, token_hash: &str) -> Result<(), StoreError>;

    /// The name of the token with this hash, if there is one.
    async fn api_token_name(&self, token_hash: &str) -> Result<Option<String>, StoreError>;

    /// Flushes and closes; called on shutdown.
    async fn close(&self);
}
