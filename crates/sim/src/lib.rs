//! The fleet simulator: N simulated sites, each the real agent stack (its
//! own key, certificate and TLS session, the real reconciler and prober)
//! with the container runtime and the local store replaced by in-memory
//! ones, against a real control plane process. `outpost sim` runs it.
//!
//! **Architecture Invariant:** only the runtime, the store and the host
//! facts are simulated; everything that talks to the control plane is the
//! code a real agent runs.

pub mod agent;
pub mod bench;
pub mod control;
pub mod runtime;
