//! The control plane under test: a real `outpost control` process, started
//! from this same binary, whose memory and CPU are read from `/proc`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

pub struct ControlProcess {
    child: Child,
    exe: PathBuf,
    data_dir: PathBuf,
    /// Its `--store` and `--secrets-key-file`, kept for a restart.
    args: Vec<String>,
    pub url: String,
    pub agent_url: String,
    log: PathBuf,
}

/// `host:port` of an `https://host:port` URL.
fn address(url: &str) -> &str {
    url.trim_start_matches("https://")
}

impl ControlProcess {
    /// Starts `outpost control` on free loopback ports, with its store in
    /// `store` (PostgreSQL) if given and its secrets key in `key_file` (one
    /// file for replicas) if given; its log goes to `DATA_DIR.log`.
    pub async fn start(
        exe: &Path,
        data_dir: &Path,
        store: Option<&str>,
        key_file: Option<&Path>,
    ) -> Result<ControlProcess> {
        let log = data_dir.with_extension("log");
        let mut args = Vec::new();
        if let Some(store) = store {
            args.extend(["--store".to_string(), store.to_string()]);
        }
        if let Some(key_file) = key_file {
            args.extend(["--secrets-key-file".to_string(), key_file.display().to_string()]);
        }
        let (child, url, agent_url) = spawn(exe, data_dir, &args, "127.0.0.1:0", "127.0.0.1:0", &log).await?;
        Ok(ControlProcess {
            child,
            exe: exe.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            args,
            url,
            agent_url,
            log,
        })
    }

    pub fn pid(&self) -> Result<u32> {
        self.child.id().context("the control plane has exited")
    }

    /// Where its log is, beside the other replicas'.
    pub fn log_dir(&self) -> PathBuf {
        self.log.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    pub fn admin_config(&self) -> PathBuf {
        self.data_dir.join("admin.yaml")
    }

    /// Stops it the way an operator would (SIGTERM) and waits for the exit.
    pub async fn stop(&mut self) -> Result<()> {
        let pid = self.pid()?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("the control plane did not stop within a minute of SIGTERM")??;
        if !status.success() {
            bail!("the control plane exited with {status}");
        }
        Ok(())
    }

    /// Kills it outright (SIGKILL), as when its machine is lost.
    pub async fn kill(&mut self) -> Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// Starts it again on the same ports and data.
    pub async fn start_again(&mut self) -> Result<()> {
        let (child, _, _) = spawn(
            &self.exe,
            &self.data_dir,
            &self.args,
            address(&self.url),
            address(&self.agent_url),
            &self.log,
        )
        .await?;
        self.child = child;
        Ok(())
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn spawn(
    exe: &Path,
    data_dir: &Path,
    args: &[String],
    listen: &str,
    agent_listen: &str,
    log: &Path,
) -> Result<(Child, String, String)> {
    let mut child = Command::new(exe)
        .args(["control", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", listen, "--agent-listen", agent_listen])
        .args(args)
        // Every simulated site dials from 127.0.0.1, like hosts behind one
        // NAT: the per-address cap on unauthenticated connections would
        // turn most of a reconnect storm away.
        .args(["--max-unauthenticated-per-source", "20000"])
        .env(
            "RUST_LOG",
            std::env::var("OUTPOST_SIM_CONTROL_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} control", exe.display()))?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .await
        .with_context(|| format!("opening {}", log.display()))?;
    let listening = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            file.write_all(line.as_bytes()).await?;
            file.write_all(b"\n").await?;
            if line.contains("control plane listening") {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|word| word.strip_prefix(name))
                        .map(str::to_string)
                };
                return Ok::<_, anyhow::Error>(field("url=").zip(field("agents=")));
            }
        }
        Ok(None)
    })
    .await
    .context("the control plane did not start listening within a minute")??;
    let Some((url, agent_url)) = listening else {
        bail!("the control plane exited before listening; see {}", log.display());
    };
    // Keep draining its log so that it never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = file.write_all(line.as_bytes()).await;
            let _ = file.write_all(b"\n").await;
        }
    });
    Ok((child, url, agent_url))
}

/// Resident memory of a process, in bytes.
pub fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kib * 1024)
}

/// CPU time a process has used (user + system).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(')').context("unreadable stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15; USER_HZ is 100 on Linux.
    Ok(Duration::from_millis((ticks(11) + ticks(12)) * 10))
}

/// The replicas' logs from a moment on: what they wrote since.
pub struct LogsFrom(Vec<(std::path::PathBuf, u64)>);

impl LogsFrom {
    pub fn now(dir: &std::path::Path) -> Result<LogsFrom> {
        let mut logs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log") {
                let length = std::fs::metadata(&path)?.len();
                logs.push((path, length));
            }
        }
        Ok(LogsFrom(logs))
    }

    /// Whether a line written since contains `text`.
    pub fn contain(&self, text: &str) -> Result<bool> {
        use std::io::{Read, Seek};
        for (path, from) in &self.0 {
            let mut file = std::fs::File::open(path)?;
            file.seek(std::io::SeekFrom::Start(*from))?;
            let mut since = String::new();
            file.read_to_string(&mut since)?;
            if since.contains(text) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
