//! The agent protocol, generated from `proto/outpost/agent/v1/agent.proto`.
//!
//! **Architecture Invariant:** only this crate knows the protobuf wire
//! format; the payloads it carries are `outpost_api` types as JSON,
//! encoded and decoded by `codec` for both ends. It also holds the byte
//! counting both ends do at the socket, and what a host certificate says
//! of its holder (`identity`).

pub mod bundle;
pub mod codec;
pub mod head;
pub mod identity;
pub mod seal;
pub mod traffic;

/// The protocol version an agent states in its hello.
pub const PROTOCOL_VERSION: u32 = 1;

#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]
pub mod v1 {
    tonic::include_proto!("outpost.agent.v1");
}
