//! Outpost's contract with its users: manifest types, quantities, the
//! selector language and validation. No I/O lives here.

pub mod client_config;
pub mod diagnostic;
pub mod limits;
pub mod manifest;
pub mod metrics;
pub mod quantity;
pub mod rollout;
pub mod schema;
pub mod selector;
pub mod telemetry;
pub mod validate;
pub mod wire;
pub mod workload;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use manifest::{Kind, Manifest};
pub use selector::Selector;
pub use validate::{Document, check_batch, parse_documents, parse_files};
