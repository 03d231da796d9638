//! `outpost up`: the quickstart. Starts a control plane on embedded
//! defaults, points the CLI at it (context `up`), applies the examples that
//! ship inside the binary, and serves until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use outpost_api::client_config::ClientConfig;
use outpost_api::wire::SourceFile;
use outpost_cli::client::{config_path, load_config};
use outpost_cli::{Client, commands};
use outpost_control::{Config, ControlPlane};

/// The example manifests, compiled in so `up` works from any directory.
const EXAMPLES: [(&str, &str); 3] = [
    (
        "examples/sites.yaml",
        include_str!("../../../examples/sites.yaml"),
    ),
    (
        "examples/pos-gateway.yaml",
        include_str!("../../../examples/pos-gateway.yaml"),
    ),
    (
        "examples/camera-analytics.yaml",
        include_str!("../../../examples/camera-analytics.yaml"),
    ),
];

pub async fn run(
    data_dir: Option<PathBuf>,
    listen: SocketAddr,
    agent_listen: SocketAddr,
    config_flag: Option<PathBuf>,
) -> Result<()> {
    let data_dir = match data_dir {
        Some(dir) => dir,
        None => dirs::data_dir()
            .context("no home directory to keep data in: pass --data-dir")?
            .join("outpost")
            .join("up"),
    };
    let control = ControlPlane::start(&Config {
        data_dir: data_dir.clone(),
        listen,
        agent_listen,
        tls_san: Vec::new(),
    })
    .await?;

    let admin = load_config(&control.admin_config)?;
    let mut context = admin.context(None).context("admin.yaml has no context")?.clone();
    context.name = "up".to_string();
    let user_config =
        config_path(config_flag.as_deref()).context("no home directory for the CLI configuration")?;
    let mut config = if user_config.exists() {
        load_config(&user_config)?
    } else {
        ClientConfig::default()
    };
    config.upsert(context.clone());
    if let Some(parent) = user_config.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let text = serde_saphyr::to_string(&config).context("writing the CLI configuration")?;
    outpost_control::pki::write_private(&user_config, text.as_bytes())?;

    let url = control.url.clone();
    let server = tokio::spawn(control.serve(crate::shutdown_signal()));

    let files = EXAMPLES
        .iter()
        .map(|(name, content)| SourceFile {
            name: name.to_string(),
            content: content.to_string(),
        })
        .collect();
    let applied = commands::apply(&Client::new(&context)?, commands::validate(files)?, false).await?;
    let me = std::env::args().next().unwrap_or_else(|| "outpost".to_string());
    println!("Outpost is up.");
    println!("  control plane  {url}  (data in {})", data_dir.display());
    println!(
        "  CLI context    \"up\", now current in {}",
        user_config.display()
    );
    println!();
    println!("Applied the examples:");
    for line in applied.lines() {
        println!("  {line}");
    }
    println!();
    println!("Try, in another terminal:");
    println!("  {me} get sites");
    println!("  {me} get deployments -o wide");
    println!("  {me} describe application pos-gateway");
    println!();
    println!("Deployments are stored and validated; edge agents, which run them, come next.");
    println!("Press Ctrl-C to stop (the data stays for the next `up`).");
    server.await.context("the control plane task failed")?;
    Ok(())
}
