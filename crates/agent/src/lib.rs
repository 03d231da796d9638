//! The Outpost edge agent: enrollment, the outbound channel to the control
//! plane, the local store and the reconciler.

pub mod plan;
