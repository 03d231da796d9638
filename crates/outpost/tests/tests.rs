//! Every integration test of the `outpost` binary, in one test binary so
//! that the harness (`suite/common`) compiles once (as ripgrep does).

#[path = "suite/common/mod.rs"]
mod common;

#[path = "suite/agent.rs"]
mod agent;
#[path = "suite/api.rs"]
mod api;
#[path = "suite/cli.rs"]
mod cli;
#[path = "suite/cluster.rs"]
mod cluster;
#[path = "suite/console.rs"]
mod console;
#[path = "suite/governance.rs"]
mod governance;
#[path = "suite/hardening.rs"]
mod hardening;
#[path = "suite/images.rs"]
mod images;
#[path = "suite/network.rs"]
mod network;
#[path = "suite/partition.rs"]
mod partition;
#[path = "suite/queue.rs"]
mod queue;
#[path = "suite/replicas.rs"]
mod replicas;
#[path = "suite/secrets.rs"]
mod secrets;
#[path = "suite/sim.rs"]
mod sim;
#[path = "suite/store.rs"]
mod store;
#[path = "suite/streams.rs"]
mod streams;
#[path = "suite/tenants.rs"]
mod tenants;
#[path = "suite/tidy.rs"]
mod tidy;
#[path = "suite/up.rs"]
mod up;
