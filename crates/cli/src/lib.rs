//! The `outpost` command-line client: reads manifests, validates them
//! locally with the server's own rules, and talks to the REST API.

pub mod client;
pub mod commands;
pub mod login;
pub mod output;
pub mod streams;
pub mod telemetry;

pub use client::{CliError, Client};
