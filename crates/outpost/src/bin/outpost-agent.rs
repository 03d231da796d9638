//! `outpost-agent FLAGS` is `outpost agent FLAGS` in a binary without the
//! control plane, the CLI and the simulator: what a host needs, smaller on
//! disk and in memory (the agent's RSS budget counts the binary's pages).

use std::process::ExitCode;

use clap::Parser;

/// The Outpost edge agent of one host.
#[derive(Debug, Parser)]
#[command(name = "outpost-agent", version)]
struct Cli {
    #[command(flatten)]
    agent: outpost::agent::AgentArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // One thread, as `outpost agent` runs: the agent mostly waits.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(outpost::agent::run(cli.agent)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
