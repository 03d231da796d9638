//! The process runtime, for hosts without a container engine: each
//! container's `command` and `args` run as a native process with its env;
//! stdout and stderr go to `DATA_DIR/logs/NAME.log`. The agent restarts
//! processes as it restarts containers. Processes live and die with the
//! agent: after an agent restart they are started again from the local
//! store, and any left behind by an agent that was killed outright are
//! stopped first (each spawn records a pid file with its command line).
//! Ports, volumes, devices and limits do not apply to processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use parking_lot::Mutex;

use anyhow::{Context, Result};
use async_trait::async_trait;
use outpost_api::manifest::Health;
use tokio::sync::{mpsc, oneshot};

use super::Runtime;
use crate::plan::{Action, DesiredContainer, Observed};

/// Log files are started afresh once they pass this size.
const LOG_LIMIT: u64 = 10 << 20;

struct Process {
    id: String,
    spec: DesiredContainer,
    running: bool,
    exit_code: Option<i64>,
    kill: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct State {
    processes: BTreeMap<String, Process>,
    networks: BTreeSet<String>,
    started: u64,
}

pub struct Processes {
    log_dir: PathBuf,
    state: Arc<Mutex<State>>,
    changed: Mutex<Option<mpsc::Sender<()>>>,
}

/// Set in every process's environment (which survives `exec`), so that a
/// leftover process is recognised by more than its PID.
const MARKER: &str = "OUTPOST_PROCESS";

/// Stops processes an earlier agent started and could not stop (it was
/// killed outright): each has a pid file, and its environment must still
/// carry the marker with its name, so a reused PID is never touched.
fn stop_leftovers(log_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.extension().is_none_or(|e| e != "pid") {
            continue;
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        let _ = std::fs::remove_file(&path);
        let Some(pid) = pid else { continue };
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let marker = format!("{MARKER}={name}");
        if environ.split(|b| *b == 0).any(|entry| entry == marker.as_bytes()) {
            tracing::info!(pid, process = %name, "stopping a process left behind by an earlier agent");
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Processes {
    pub fn new(log_dir: PathBuf) -> Result<Processes> {
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        stop_leftovers(&log_dir);
        Ok(Processes {
            log_dir,
            state: Arc::new(Mutex::new(State::default())),
            changed: Mutex::new(None),
        })
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    fn spawn(&self, name: &str, spec: &DesiredContainer) -> Result<()> {
        let container = &spec.container;
        let mut argv = container.command.iter().chain(&container.args);
        let program = argv.next().with_context(|| {
            format!(
                "{}: the process runtime runs `command`, and this container has none",
                spec.name
            )
        })?;
        if !spec.prepared.mounts.is_empty() {
            anyhow::bail!(
                "{}: the process runtime cannot mount secret files (secrets as env values work)",
                spec.name
            );
        }
        let log_path = self.log_dir.join(format!("{}.log", spec.name));
        let name = name.to_string();
        if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > LOG_LIMIT) {
            let _ = std::fs::remove_file(&log_path);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut child = tokio::process::Command::new(program)
            .args(argv)
            .envs(
                super::environment(container, &spec.prepared)
                    .iter()
                    .map(|(name, value)| (name, value.as_str())),
            )
            .env(MARKER, &name)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let pid_path = self.log_dir.join(format!("{name}.pid"));
        if let Some(pid) = child.id() {
            let _ = std::fs::write(&pid_path, format!("{pid}\n"));
        }
        let (kill, killed) = oneshot::channel();
        let id = {
            let mut state = self.state();
            state.started += 1;
            let id = format!("process-{}", state.started);
            state.processes.insert(
                name.clone(),
                Process {
                    id: id.clone(),
                    spec: spec.clone(),
                    running: true,
                    exit_code: None,
                    kill: Some(kill),
                },
            );
            id
        };
        let state = self.state.clone();
        let changed = self.changed.lock().clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status.ok(),
                _ = killed => {
                    let _ = child.kill().await;
                    None
                }
            };
            let _ = std::fs::remove_file(&pid_path);
            let mut state = state.lock();
            if let Some(process) = state.processes.get_mut(&name).filter(|p| p.id == id) {
                process.running = false;
                process.exit_code = status.and_then(|s| s.code()).map(i64::from).or(Some(-1));
            }
            drop(state);
            if let Some(changed) = changed {
                let _ = changed.try_send(());
            }
        });
        Ok(())
    }
}

#[async_trait]
impl Runtime for Processes {
    async fn observe(&self) -> Result<Vec<Observed>> {
        Ok(self
            .state()
            .processes
            .iter()
            .map(|(name, p)| Observed {
                id: p.id.clone(),
                name: name.clone(),
                instance: p.spec.instance.clone(),
                application: p.spec.application.clone(),
                service: p.spec.service.clone(),
                spec_hash: p.spec.spec_hash.clone(),
                running: p.running,
                exit_code: p.exit_code,
            })
            .collect())
    }

    async fn networks(&self) -> Result<BTreeSet<String>> {
        Ok(self.state().networks.clone())
    }

    async fn apply(&self, action: &Action) -> Result<()> {
        match action {
            Action::EnsureNetwork { application } => {
                self.state().networks.insert(application.clone());
                Ok(())
            }
            Action::RemoveNetwork { application } => {
                self.state().networks.remove(application);
                Ok(())
            }
            Action::Create { name, want } => self.spawn(name, want),
            Action::Start { name, .. } => {
                let spec = self.state().processes.get(name).map(|p| p.spec.clone());
                let spec = spec.with_context(|| format!("{name} is not known"))?;
                self.spawn(name, &spec)
            }
            Action::Rename { from, to, .. } => {
                let mut state = self.state();
                if let Some(process) = state.processes.remove(from) {
                    state.processes.insert(to.clone(), process);
                }
                Ok(())
            }
            Action::Remove { name, .. } => {
                if let Some(mut process) = self.state().processes.remove(name)
                    && let Some(kill) = process.kill.take()
                {
                    let _ = kill.send(());
                }
                Ok(())
            }
        }
    }

    async fn probe(&self, _id: &str, _application: &str, health: &Health) -> Result<()> {
        if let Some(exec) = &health.exec {
            let (program, args) = exec.command.split_first().context("the check has no command")?;
            let status = tokio::process::Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .with_context(|| format!("running {program}"))?;
            return match status.code() {
                Some(0) => Ok(()),
                code => Err(anyhow::anyhow!("{} exited with {code:?}", exec.command.join(" "))),
            };
        }
        let port = match (&health.http, &health.tcp) {
            (Some(http), _) => http.port,
            (None, Some(tcp)) => tcp.port,
            (None, None) => return Ok(()),
        };
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port as u16))
            .await
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        match &health.http {
            Some(http) => super::http_get(&mut stream, "127.0.0.1", http.path.as_str()).await,
            None => Ok(()),
        }
    }

    fn overlap(&self) -> bool {
        false
    }

    fn changes(&self) -> mpsc::Receiver<()> {
        let (sender, receiver) = mpsc::channel(1);
        *self.changed.lock() = Some(sender);
        receiver
    }
}
