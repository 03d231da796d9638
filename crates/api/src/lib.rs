//! Outpost's contract with its users: manifest types, quantities, the
//! selector language, validation, the REST and telemetry bodies, and the
//! documented limits. No I/O lives here.
//!
//! It also holds two pure engines that only the control plane runs:
//! compiling and placing what a site runs (`workload::compile_site`,
//! `workload::assign_hosts`) and the rollout state machine
//! (`rollout::RolloutState`). They stay here on purpose: their inputs and
//! outputs are contract types (a site's `SiteState` is what agents receive,
//! a `RolloutState` is what `GET /deployments/{name}/rollout` returns), and
//! here they cannot reach a store, a socket or a clock, so they are tested
//! as the pure functions they must remain (the rollout on an explicit
//! clock).

pub mod access;
pub mod client_config;
pub mod diagnostic;
pub mod instance;
pub mod limits;
pub mod manifest;
pub mod metrics;
pub mod quantity;
pub mod rollout;
pub mod schema;
pub mod secret;
pub mod selector;
pub mod stream;
pub mod telemetry;
pub mod tenancy;
pub mod validate;
pub mod wire;
pub mod workload;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use manifest::{Kind, Manifest};
pub use selector::Selector;
pub use validate::{Document, check_batch, parse_documents, parse_files};
