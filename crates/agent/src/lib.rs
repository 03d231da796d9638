//! The Outpost edge agent: enrollment, the outbound channel to the control
//! plane, the local store and the reconciler.

pub mod facts;
pub mod files;
pub mod identity;
pub mod plan;
pub mod runtime;
pub mod store;
pub mod tls;
