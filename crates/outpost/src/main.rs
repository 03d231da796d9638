//! The `outpost` binary: parses the command line, sets up logging and the
//! TLS provider, and hands over to the control plane or the CLI.

mod bundle;
mod flags;
mod up;

use outpost_api::access::BlockTarget;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{CommandFactory, Parser};
use outpost_cli::output;
use outpost_cli::{CliError, Client, commands};

use crate::flags::{
    AuditCommand, BlockCommand, BundleCommand, Cli, Command, ControlCommand, Object, Resource,
    RolloutCommand, SecretCommand, SimCommand, SimOutput, SiteCommand, StreamOutput, StreamsCommand,
    TokenCommand, UnblockCommand,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS provider for the whole process: ring (pure Rust build, no aws-lc).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The agent is small and mostly waits: one thread keeps its memory low
    // (issue: agent RSS budget). Everything else gets a thread per core.
    let builder = match cli.command {
        Command::Agent(_) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    let runtime = match builder {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): nothing to report.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Prints an error; manifest problems one per line, like a compiler.
fn report(err: &anyhow::Error) {
    if let Some(cli_error) = err.downcast_ref::<CliError>() {
        for diagnostic in &cli_error.diagnostics {
            eprintln!("{diagnostic}");
        }
        eprintln!("error: {}", cli_error.message);
    } else {
        eprintln!("error: {err:#}");
    }
}

/// The simulator's thousands of agents log only errors unless RUST_LOG
/// says otherwise (each would warn when the control plane restarts).
fn init_sim_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn client(cli: &Cli) -> Result<Client> {
    let path = outpost_cli::client::config_path(cli.config.as_deref())
        .context("no configuration file: pass --config FILE or set OUTPOST_CONFIG")?;
    let config = outpost_cli::client::load_config(&path)?;
    let context = config.context(cli.context.as_deref()).with_context(|| {
        let name = cli.context.as_deref().unwrap_or(&config.current_context);
        format!("{}: no context named {name:?}", path.display())
    })?;
    Client::new(context)
}

async fn run(cli: Cli) -> Result<()> {
    let output = match &cli.command {
        Command::Control {
            command:
                Some(ControlCommand::RotateCa {
                    retire,
                    force,
                    status,
                }),
            ..
        } => commands::rotate_ca(&client(&cli)?, *retire, *force, *status).await?,
        Command::Control {
            data_dir,
            secrets_key_file,
            store,
            command: Some(ControlCommand::RotateSecretsKey),
            ..
        } => {
            let (id, count) =
                outpost_control::rotate_secrets_key(data_dir, store.as_ref(), secrets_key_file.as_deref())
                    .await?;
            format!(
                "secrets key rotated: key {id} now wraps all {count} secret versions; the old key is gone from the key file\n"
            )
        }
        Command::Control {
            data_dir,
            secrets_key_file,
            store,
            command: None,
            listen,
            agent_listen,
            tls_san,
            advertise,
            event_retention,
            log_retention,
            metric_retention,
            stream_retention,
            streams_nats,
            site_key_rotation,
            host_cert_lifetime,
            host_cert_grace,
            oidc_issuer,
            oidc_client_id,
            oidc_role_map,
            poll_interval,
            max_unauthenticated_per_source,
        } => {
            if host_cert_lifetime.as_std() < std::time::Duration::from_secs(10) {
                anyhow::bail!("--host-cert-lifetime: at least 10s");
            }
            if site_key_rotation.is_some_and(|every| every.as_std() < std::time::Duration::from_secs(3600)) {
                anyhow::bail!("--site-key-rotation: rotate at most once an hour (1h or more)");
            }
            outpost::process::init_logging();
            outpost::process::raise_open_file_limit();
            let config = outpost_control::Config {
                data_dir: data_dir.clone(),
                listen: *listen,
                agent_listen: *agent_listen,
                tls_san: tls_san.clone(),
                advertise: advertise.clone(),
                poll_interval: poll_interval.map(|i| i.as_std().max(std::time::Duration::from_secs(1))),
                max_unauthenticated_per_source: (*max_unauthenticated_per_source).max(1),
                secrets_key_file: secrets_key_file.clone(),
                store: store.clone(),
                retention: outpost_control::Retention {
                    events: event_retention.as_std(),
                    logs: log_retention.as_std(),
                    metrics: metric_retention.as_std(),
                    streams: stream_retention.as_std(),
                },
                streams_nats: streams_nats.clone(),
                site_key_rotation: site_key_rotation.map(|every| every.as_std()),
                host_certificates: outpost_control::HostCertificates {
                    lifetime: host_cert_lifetime.as_std(),
                    grace: host_cert_grace.as_std(),
                },
                oidc: oidc_issuer
                    .clone()
                    .map(|issuer| outpost_control::oidc::OidcConfig {
                        issuer,
                        client_id: oidc_client_id.clone().unwrap_or_default(),
                        mappings: oidc_role_map.clone(),
                    }),
            };
            let control = outpost_control::ControlPlane::start(&config).await?;
            control.serve(outpost::process::shutdown_signal()).await;
            return Ok(());
        }
        Command::Agent(args) => return outpost::agent::run(args.clone()).await,
        Command::Up {
            data_dir,
            listen,
            agent_listen,
        } => {
            outpost::process::init_logging();
            outpost::process::raise_open_file_limit();
            return up::run(data_dir.clone(), *listen, *agent_listen, cli.config.clone()).await;
        }
        Command::Label { kind, name, labels } => {
            let kind = match kind {
                Resource::Kind(kind) => Some(*kind),
                Resource::Hosts => None,
                Resource::Secrets => {
                    anyhow::bail!("secrets have no labels (their --sites selector says where they may go)")
                }
            };
            commands::label(&client(&cli)?, kind, name, labels).await?
        }
        Command::Rollout { command } => {
            let client = client(&cli)?;
            match command {
                RolloutCommand::Status {
                    deployment,
                    watch: true,
                } => {
                    return commands::rollout_watch(&client, deployment).await;
                }
                RolloutCommand::Status {
                    deployment,
                    watch: false,
                } => commands::rollout_status(&client, deployment).await?.0,
                RolloutCommand::Promote { deployment } => {
                    commands::rollout_command(&client, deployment, "promote").await?
                }
                RolloutCommand::Pause { deployment } => {
                    commands::rollout_command(&client, deployment, "pause").await?
                }
                RolloutCommand::Resume { deployment } => {
                    commands::rollout_command(&client, deployment, "resume").await?
                }
                RolloutCommand::Abort { deployment } => {
                    commands::rollout_command(&client, deployment, "abort").await?
                }
                RolloutCommand::Undo {
                    deployment,
                    to_version,
                } => commands::rollout_undo(&client, deployment, to_version.as_deref()).await?,
            }
        }
        Command::Events { application, read } => {
            let filter = read.filter(application.clone(), None, false);
            return outpost_cli::telemetry::events(&client(&cli)?, &filter, read.output.into(), read.follow)
                .await;
        }
        Command::Streams {
            command:
                StreamsCommand::Read {
                    application,
                    topic,
                    read,
                },
        } => {
            let filter = read.filter(None, None, false);
            return outpost_cli::streams::read(
                &client(&cli)?,
                (application, topic),
                &filter,
                read.output.into(),
                read.follow,
            )
            .await;
        }
        Command::Streams {
            command:
                StreamsCommand::Publish {
                    application,
                    topic,
                    sites,
                    file,
                },
        } => {
            outpost_cli::streams::publish(&client(&cli)?, (application, topic), sites.as_deref(), file)
                .await?
        }
        Command::Logs {
            application,
            service,
            live,
            read,
        } => {
            let filter = read.filter(Some(application.clone()), service.clone(), *live);
            return outpost_cli::telemetry::logs(&client(&cli)?, &filter, read.output.into(), read.follow)
                .await;
        }
        Command::Site { command } => {
            let client = client(&cli)?;
            match command {
                SiteCommand::RotateKeys { site, at_once } => {
                    commands::rotate_keys(&client, site, *at_once).await?
                }
                SiteCommand::Keys { site } => commands::site_keys(&client, site).await?,
            }
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    site,
                    user,
                    role,
                    tenant,
                    sites,
                    ttl,
                    output,
                    quiet,
                },
        } => {
            let shown = match (quiet, output) {
                (true, _) => commands::TokenOutput::Quiet,
                (false, StreamOutput::Json) => commands::TokenOutput::Json,
                (false, StreamOutput::Text) => commands::TokenOutput::Text,
            };
            match (site, user) {
                (Some(site), _) => {
                    commands::create_join_token(&client(&cli)?, site, ttl.as_deref(), shown).await?
                }
                (None, user) => {
                    let request = outpost_api::access::TokenRequest {
                        user: user.clone().unwrap_or_default(),
                        role: role.clone().unwrap_or_default(),
                        tenant: tenant.clone(),
                        sites: sites.clone(),
                        ttl: ttl.clone(),
                    };
                    commands::create_api_token(&client(&cli)?, &request, shown).await?
                }
            }
        }
        Command::Token {
            command: TokenCommand::List { output },
        } => commands::list_api_tokens(&client(&cli)?, (*output).into()).await?,
        Command::Token {
            command: TokenCommand::Revoke { name },
        } => commands::revoke_api_token(&client(&cli)?, name).await?,
        Command::Login { server, ca_file } => {
            let config_path = outpost_cli::client::config_path(cli.config.as_deref())
                .context("no configuration file: pass --config FILE or set OUTPOST_CONFIG")?;
            let context = match &cli.context {
                Some(context) => context.clone(),
                None if config_path.exists() => {
                    outpost_cli::client::load_config(&config_path)?.current_context
                }
                None => "default".to_string(),
            };
            let target = outpost_cli::login::Target {
                config_path: &config_path,
                context: &context,
                server: server.as_deref(),
                ca_file: ca_file.as_deref(),
            };
            outpost_cli::login::login(&target, |text| eprintln!("{text}")).await?
        }
        Command::Audit {
            command: Some(AuditCommand::Verify),
            ..
        } => commands::verify_audit(&client(&cli)?).await?,
        Command::Audit {
            command: None,
            since,
            user,
            tenant,
            output,
        } => {
            commands::audit(
                &client(&cli)?,
                since.as_deref(),
                user.as_deref(),
                tenant.as_deref(),
                (*output).into(),
            )
            .await?
        }
        Command::Block { command } => {
            let client = client(&cli)?;
            match command {
                BlockCommand::Host { name, wipe } => {
                    commands::block(&client, BlockTarget::Host, name, *wipe, false).await?
                }
                BlockCommand::Site { name, wipe } => {
                    commands::block(&client, BlockTarget::Site, name, *wipe, false).await?
                }
                BlockCommand::Tenant { name } => {
                    commands::block(&client, BlockTarget::Tenant, name, false, false).await?
                }
                BlockCommand::List { output } => commands::blocks(&client, (*output).into()).await?,
            }
        }
        Command::Unblock { command } => {
            let (target, name) = match command {
                UnblockCommand::Host { name } => (BlockTarget::Host, name),
                UnblockCommand::Site { name } => (BlockTarget::Site, name),
                UnblockCommand::Tenant { name } => (BlockTarget::Tenant, name),
            };
            commands::block(&client(&cli)?, target, name, false, true).await?
        }
        Command::Sim {
            command:
                SimCommand::Bench {
                    sites,
                    start_delay,
                    idle,
                    concurrency,
                    crash_sites,
                    unhealthy_sites,
                    timeout,
                    work_dir,
                    output,
                    secret_bytes,
                    image_size,
                    pull_rate,
                    no_prestage,
                    wave_size,
                    stream_records,
                    store,
                    replicas,
                },
        } => {
            init_sim_logging();
            outpost::process::raise_open_file_limit();
            let temporary = work_dir.is_none();
            let work_dir = work_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join(format!("outpost-sim-{}", std::process::id())));
            let options = outpost_sim::bench::Options {
                sites: *sites,
                start_delay: start_delay.as_std(),
                idle: idle.as_std(),
                concurrency: (*concurrency).max(1),
                crash_sites: *crash_sites,
                unhealthy_sites: *unhealthy_sites,
                timeout: timeout.as_std(),
                work_dir: work_dir.clone(),
                secret_bytes: *secret_bytes,
                images: outpost_sim::runtime::Images {
                    bytes: image_size.0,
                    pull_delay: std::time::Duration::from_secs_f64(
                        image_size.0 as f64 / pull_rate.0.max(1) as f64,
                    ),
                },
                prestage: !no_prestage,
                wave_size: *wave_size,
                stream_records: *stream_records,
                store: store.as_ref().map(|url| url.as_str().to_string()),
                replicas: usize::from(*replicas),
            };
            let report = outpost_sim::bench::run(&options).await?;
            if temporary {
                let _ = std::fs::remove_dir_all(&work_dir);
            }
            match output {
                SimOutput::Text => format!("{report}\n"),
                SimOutput::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
            }
        }
        Command::Schema => {
            let mut text = serde_json::to_string_pretty(outpost_api::schema::manifest_schema())?;
            text.push('\n');
            text
        }
        Command::Completion { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "outpost", &mut std::io::stdout());
            return Ok(());
        }
        Command::Validate { files } => {
            let checked = commands::validate(commands::read_sources(files)?)?;
            format!("{} manifest(s) valid\n", checked.len())
        }
        Command::Apply { files, dry_run } => {
            let checked = commands::validate(commands::read_sources(files)?)?;
            commands::apply(&client(&cli)?, checked, *dry_run).await?
        }
        Command::Plan { files } => {
            let checked = commands::validate(commands::read_sources(files)?)?;
            commands::plan(&client(&cli)?, checked).await?
        }
        Command::Diff { files } => {
            let checked = commands::validate(commands::read_sources(files)?)?;
            commands::diff(&client(&cli)?, checked).await?
        }
        Command::Get {
            kind: Resource::Hosts,
            selector,
            site,
            output,
            ..
        } => {
            commands::get_hosts(
                &client(&cli)?,
                site.as_deref(),
                selector.as_deref(),
                (*output).into(),
            )
            .await?
        }
        Command::Get {
            kind: Resource::Kind(kind),
            name,
            selector,
            output,
            ..
        } => {
            commands::get(
                &client(&cli)?,
                *kind,
                name.as_deref(),
                selector.as_deref(),
                (*output).into(),
            )
            .await?
        }
        Command::Get {
            kind: Resource::Secrets,
            name,
            output,
            ..
        } => commands::get_secrets(&client(&cli)?, name.as_deref(), (*output).into()).await?,
        Command::Describe {
            kind: Object::Kind(kind),
            name,
        } => commands::describe(&client(&cli)?, *kind, name).await?,
        Command::Describe {
            kind: Object::Secret,
            name,
        } => commands::describe_secret(&client(&cli)?, name).await?,
        Command::Delete {
            kind: Object::Kind(kind),
            name,
            cascade,
        } => commands::delete(&client(&cli)?, *kind, name, *cascade).await?,
        Command::Delete {
            kind: Object::Secret,
            name,
            ..
        } => commands::delete_secret(&client(&cli)?, name).await?,
        Command::Bundle {
            command:
                BundleCommand::Create {
                    deployment,
                    version,
                    output,
                },
        } => bundle::create(&client(&cli)?, deployment, version.as_deref(), output).await?,
        Command::Bundle {
            command: BundleCommand::Import { file, data_dir },
        } => bundle::import(file, data_dir).await?,
        Command::Secret {
            command:
                SecretCommand::Set {
                    name,
                    values,
                    from_file,
                    sites,
                    images,
                },
        } => {
            let set = commands::SecretSet {
                name,
                values,
                from_files: from_file,
                sites: sites.as_deref(),
                images: images.as_deref(),
            };
            commands::secret_set(&client(&cli)?, &set, &mut std::io::stdin().lock()).await?
        }
        Command::Secret {
            command: SecretCommand::Reveal { name, key },
        } => {
            let value = commands::secret_reveal(&client(&cli)?, name, key).await?;
            output::print_bytes(&value)?;
            return Ok(());
        }
        Command::History { name, output, .. } => {
            commands::history(&client(&cli)?, name, (*output).into()).await?
        }
    };
    output::print(&output)?;
    Ok(())
}
