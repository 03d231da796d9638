//! Process setup the `outpost` and `outpost-agent` binaries share:
//! logging, the open-file limit and the stop signal.

/// Crates whose debug output carries request and response bodies: bollard
/// logs every container's create body and inspect answer, environment
/// values included, so an env secret would reach the log. They stay at
/// `info` whatever `RUST_LOG` says.
const BODY_LOGGERS: &[&str] = &["bollard=info"];

/// Logs to stderr, at `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,hyper=warn,openraft=warn"));
    for directive in BODY_LOGGERS {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Raises the soft limit on open files to the hard limit: the control
/// plane holds a socket per site and the agent port faces the internet,
/// and a soft limit of 1,024 would turn away the REST API long before the
/// hard limit is near.
pub fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%err, soft, hard, "could not raise the open-file limit");
            } else {
                tracing::debug!(from = soft, to = hard, "raised the open-file limit");
            }
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "could not read the open-file limit"),
    }
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
