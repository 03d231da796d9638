//! What the `outpost` binary and the agent-only `outpost-agent` binary
//! share: the agent's command line and start, and the process setup.

pub mod agent;
pub mod process;
