//! `outpost up`: the quickstart. Starts a control plane on embedded
//! defaults, points the CLI at it (context `up`), applies the examples that
//! ship inside the binary, enrolls this machine as the host of site `local`
//! with an agent running in the same process, shows the `hello` deployment
//! converging, and serves until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use outpost_api::client_config::ClientConfig;
use outpost_api::manifest::Kind;
use outpost_api::wire::{DeploymentSiteState, DeploymentStatus, SourceFile};
use outpost_cli::client::{config_path, load_config};
use outpost_cli::{Client, commands};
use outpost_control::{Config, ControlPlane};
use tokio::sync::watch;

/// The example manifests, compiled in so `up` works from any directory.
const EXAMPLES: [(&str, &str); 4] = [
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
    (
        "examples/quickstart.yaml",
        include_str!("../../../examples/quickstart.yaml"),
    ),
];
/// The quickstart's site and host (this machine).
const SITE: &str = "local";
const HOST: &str = "local";

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
        advertise: None,
        retention: Default::default(),
        poll_interval: None,
        max_unauthenticated_per_source: outpost_control::agent_listener::MAX_UNAUTHENTICATED_PER_SOURCE,
        secrets_key_file: None,
        store: None,
        streams_nats: None,
        site_key_rotation: None,
        host_certificates: Default::default(),
        oidc: None,
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
    outpost_files::write_private(&user_config, text.as_bytes())?;

    let (url, agent_url) = (control.url.clone(), control.agent_url.clone());
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        outpost::process::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(control.serve(until_stopped(stopped.clone())));

    let client = Client::new(&context)?;
    let files = EXAMPLES
        .iter()
        .map(|(name, content)| SourceFile {
            name: name.to_string(),
            content: content.to_string(),
        })
        .collect();
    let applied = commands::apply(&client, commands::validate(files)?, false).await?;
    let me = std::env::args().next().unwrap_or_else(|| "outpost".to_string());
    println!("Outpost is up.");
    println!(
        "  control plane  {url}  (agents: {agent_url}; data in {})",
        data_dir.display()
    );
    println!(
        "  CLI context    \"up\", now current in {}",
        user_config.display()
    );
    // The console's one-time sign-in link; a failure here costs the link, not `up`.
    let root = url.trim_end_matches('/');
    match client.create_sign_in_link().await {
        Ok(link) => println!(
            "  console        {root}/ui/  (sign in once, within 15 minutes: {root}/ui/signin?link={})",
            link.token
        ),
        Err(err) => println!("  console        {root}/ui/  (no sign-in link: {err:#})"),
    }
    println!();
    println!("Applied the examples:");
    for line in applied.lines() {
        println!("  {line}");
    }

    // This machine becomes the one host of site `local`.
    let agent_dir = data_dir.join("agent");
    let join_token = match outpost_agent::identity::load(&agent_dir)? {
        Some(_) => None,
        None => Some(client.create_join_token(SITE, Some("10m")).await?.token),
    };
    let agent = tokio::spawn(outpost_agent::run(
        outpost_agent::Config {
            data_dir: agent_dir,
            server: Some(agent_url),
            join_token,
            host_name: Some(HOST.to_string()),
            registry_auth: None,
            queue_limit: outpost_agent::outbox::DEFAULT_LIMIT,
            metrics_listen: None,
            sample_every: outpost_agent::samples::SAMPLE_EVERY,
            mode: outpost_agent::session::Mode::Stream,
            runtime: outpost_agent::RuntimeKind::Docker,
            secrets_dir: outpost_agent::DEFAULT_SECRETS_DIR.into(),
            image_budget: outpost_agent::images::DEFAULT_BUDGET,
            site: None,
            streams_listen: outpost_agent::streams::endpoint::DEFAULT_LISTEN.parse().ok(),
        },
        stopped.clone(),
    ));
    println!();
    println!("Starting the agent of site \"{SITE}\" and deploying hello:");
    watch_hello(&client, &agent).await;

    println!();
    println!("Try, in another terminal:");
    println!("  {me} get sites");
    println!("  {me} get deployments");
    println!("  {me} get hosts");
    println!("  {me} describe deployment hello");
    println!("  docker ps --filter label=io.outpost.site={SITE}");
    println!();
    println!("Press Ctrl-C to stop (containers keep running; the data stays for the next `up`).");
    if let Ok(Err(err)) = agent.await {
        eprintln!("error: the local agent stopped: {err:#}");
    }
    server.await.context("the control plane task failed")?;
    Ok(())
}

/// Prints the `hello` deployment's state on site `local` as it changes,
/// until it is up to date (or a minute has passed, or the agent failed).
async fn watch_hello(client: &Client, agent: &tokio::task::JoinHandle<Result<()>>) {
    let mut last = String::new();
    for _ in 0..120 {
        if agent.is_finished() {
            println!("  the agent stopped; see the error below");
            return;
        }
        let status = client
            .get(Kind::Deployment, "hello")
            .await
            .ok()
            .and_then(|object| object.status)
            .and_then(|status| serde_json::from_value::<DeploymentStatus>(status).ok());
        if let Some(site) = status
            .as_ref()
            .and_then(|s| s.sites.iter().find(|s| s.site == SITE))
        {
            let state = serde_json::to_value(site.state)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let line = if site.reason.is_empty() {
                state
            } else {
                format!("{state}: {}", site.reason)
            };
            if line != last {
                println!("  {SITE}: {line}");
                last = line;
            }
            match site.state {
                DeploymentSiteState::UpToDate => return,
                DeploymentSiteState::Failed if site.reason.contains("outpost-local/busybox") => {
                    println!(
                        "  the image is missing: build it with scripts/busybox-image (no registry needed)"
                    );
                    return;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("  still not up to date after a minute; `outpost describe deployment hello` says why");
}
