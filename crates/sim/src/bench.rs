//! The fleet benchmark: a real control plane process, N simulated sites
//! enrolled against it, then the numbers operators ask for: enrollment
//! rate, time from apply to every site running the new version, the
//! control plane's memory and CPU with the fleet idle, idle bytes per
//! site, and how long the fleet takes to come back after a control-plane
//! restart. It also checks, rather than assumes, that no site was lost and
//! nothing restarted needlessly.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, TryStreamExt};
use outpost_agent::outbox::MemoryOutbox;
use outpost_api::manifest::Kind;
use outpost_api::wire::{ApplyRequest, DeploymentSiteState, DeploymentStatus, SourceFile};
use outpost_cli::client::Client;
use serde::Serialize;
use tokio::sync::watch;

use crate::agent::{self, SimSite};
use crate::control::{self, ControlProcess};

const APPLICATION: &str = "sim-pos";
/// The up topic of `--stream-records`.
const STREAM: &str = "receipts";
/// Sites applied per request (one transaction each).
const SITES_PER_APPLY: usize = 1000;

/// What each simulated site may queue for the control plane (events).
const SITE_QUEUE_LIMIT: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct Options {
    pub sites: usize,
    /// How long a simulated container takes to start.
    pub start_delay: Duration,
    /// How long the idle fleet is watched for CPU and bytes.
    pub idle: Duration,
    /// Enrollments in flight at once.
    pub concurrency: usize,
    /// Sites whose containers crash once after the update (they must be
    /// restarted, and no other container may be).
    pub crash_sites: usize,
    /// Sites whose health probes fail for a while after the update: the
    /// control plane must report them, then see them recover.
    pub unhealthy_sites: usize,
    /// How long any one phase may take before the run fails.
    pub timeout: Duration,
    /// Where the control plane's data, its log and the agents' keys go.
    pub work_dir: PathBuf,
    /// With more than 0, a secret of this many bytes that every site's
    /// application mounts as a file (sealed per host, opened by each agent).
    pub secret_bytes: usize,
    /// What fetching an image costs each site.
    pub images: crate::runtime::Images,
    /// Whether the rollouts pre-stage images (`rollout.prestage`).
    pub prestage: bool,
    /// Waves of this many sites (0: one wave).
    pub wave_size: u32,
    /// With more than 0, every site's application declares an up topic,
    /// and each site produces this many 1 KiB records into it at once.
    pub stream_records: usize,
    /// The control plane's `--store` (PostgreSQL), if not SQLite.
    pub store: Option<String>,
    /// Control-plane replicas on that store (1: one control plane).
    pub replicas: usize,
}

/// Per-site latencies of one phase, in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    fn of(mut samples: Vec<Duration>) -> Spread {
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len().max(1));
            samples.get(rank - 1).map_or(0.0, Duration::as_secs_f64)
        };
        Spread {
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sites: usize,
    pub enroll_seconds: f64,
    pub enrolled_per_second: f64,
    /// From agents starting to each site running the first version.
    pub first_deploy: Spread,
    /// Of the largest replica.
    pub control_rss_mib: f64,
    /// Of one core, averaged over the idle window (all replicas together).
    pub control_idle_cpu_percent: f64,
    pub sim_rss_mib: f64,
    /// Both directions, at the agents' sockets (TLS included).
    pub idle_bytes_per_site_per_minute: f64,
    pub idle_seconds: f64,
    /// From the apply request to each site running the new version.
    pub update: Spread,
    /// From the apply request until the control plane reports every site up to date.
    pub update_reported_seconds: f64,
    pub replicas: usize,
    /// One control plane: from SIGTERM to every site connected again.
    /// Replicas: from the leader's SIGKILL to every site connected again.
    pub reconnect_seconds: f64,
    /// One control plane: from the new one listening to every site
    /// connected again. Replicas: from the SIGKILL to a new leader.
    pub reconnect_after_listening_seconds: f64,
    /// Replicas: the sites that lost their session with the killed replica.
    pub moved_sites: usize,
    pub crashed_sites_restarted: usize,
    /// Sites with failing probes that the control plane reported as not up
    /// to date (all of them recovered before the run ended).
    pub unhealthy_sites_reported: usize,
    /// Container starts beyond the two versions and the injected crashes.
    pub needless_restarts: u64,
    /// Sites the control plane does not report up to date at the end.
    pub sites_lost: usize,
    /// With `stream_records`: every site producing at once, until the
    /// control plane has stored every record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<StreamsReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamsReport {
    pub records: usize,
    pub seconds: f64,
    pub stored_per_second: f64,
    /// Both directions at the agents' sockets (TLS included), per 1,000
    /// records, against the records' own bytes.
    pub uplink_bytes_per_1000: f64,
    pub raw_bytes_per_1000: f64,
}

/// A record as a till might send one: about 1 KiB of JSON.
fn receipt(site: usize, n: usize) -> String {
    let lines: String = (0..12)
        .map(|i| {
            format!(
                "{{\"sku\":{},\"qty\":{},\"price\":{}.{:02}}},",
                10_000 + (n * 7 + i * 13) % 5000,
                1 + (n + i) % 4,
                (n * 31 + i * 17) % 90 + 1,
                (n + i * 3) % 100
            )
        })
        .collect();
    let mut record = format!(
        "{{\"store\":\"{}\",\"till\":{},\"receipt\":{n},\"lines\":[{}],\"note\":\"",
        site_name(site),
        n % 6,
        lines.trim_end_matches(',')
    );
    while record.len() < 1020 {
        record.push_str("paid by card; ");
    }
    record.truncate(1020);
    record.push_str("\"}");
    record
}

/// Every site produces `per_site` records at once; returns when the
/// control plane has stored them all.
async fn measure_streams(
    client: &Client,
    sites: &[SimSite],
    per_site: usize,
    timeout: Duration,
) -> Result<StreamsReport> {
    let key = outpost_agent::streams::TopicKey::new(APPLICATION, STREAM);
    let total = sites.len() * per_site;
    // Every site must hold the topic (its state declares it) first.
    let deadline = Instant::now() + timeout;
    while sites
        .iter()
        .any(|s| s.streams.as_ref().is_some_and(|st| st.declared(&key).is_none()))
    {
        if Instant::now() > deadline {
            bail!("the sites never declared the topic {STREAM}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bytes_before = total_bytes();
    let started = Instant::now();
    let raw: usize = futures_util::stream::iter(sites.iter().enumerate())
        .map(|(i, site)| {
            let key = key.clone();
            async move {
                let streams = site.streams.as_ref().context("a site without topics")?;
                let records: Vec<String> = (0..per_site).map(|n| receipt(i, n)).collect();
                for chunk in records.chunks(100) {
                    streams.produce(&key, chunk).await?;
                }
                Ok::<_, anyhow::Error>(records.iter().map(String::len).sum::<usize>())
            }
        })
        .buffer_unordered(sites.len())
        .try_fold(0, |sum, bytes| async move { Ok(sum + bytes) })
        .await?;
    loop {
        let newest = client
            .stream_records(APPLICATION, STREAM, &[("limit", "1".to_string())])
            .await?;
        if newest.first().is_some_and(|r| r.id as usize >= total) {
            break;
        }
        if started.elapsed() > timeout {
            bail!(
                "the control plane stored {:?} of {total} records",
                newest.first().map(|r| r.id)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = total_bytes() - bytes_before;
    Ok(StreamsReport {
        records: total,
        seconds,
        stored_per_second: total as f64 / seconds,
        uplink_bytes_per_1000: bytes as f64 * 1000.0 / total as f64,
        raw_bytes_per_1000: raw as f64 * 1000.0 / total as f64,
    })
}

fn progress(message: impl std::fmt::Display) {
    eprintln!("[sim] {message}");
}

fn site_name(i: usize) -> String {
    format!("sim-{i:05}")
}

fn sites_yaml(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            format!(
                "apiVersion: outpost/v1\nkind: Site\nmetadata:\n  name: {}\n  labels: {{ fleet: sim, region: r{} }}\nspec:\n  variables: {{ store_id: \"{i:05}\" }}\n",
                site_name(i),
                i % 8
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The secret every site's application refers to, with `--secret-bytes`.
const SECRET: &str = "sim-token";

fn application_yaml(version: &str, secret: bool, options: &Options) -> String {
    let waves = match options.wave_size {
        0 => String::new(),
        size => format!(", waves: {{ size: {size} }}"),
    };
    let rollout = format!("{{ prestage: {}{waves} }}", options.prestage);
    let streams = if options.stream_records > 0 {
        format!("\n  streams:\n    - {{ name: {STREAM}, direction: up, retention: 64Mi }}")
    } else {
        String::new()
    };
    let secrets = if secret {
        format!("\n          secrets: [{{ secret: {SECRET}, key: token, path: /run/secrets/token }}]")
    } else {
        String::new()
    };
    format!(
        "apiVersion: outpost/v1
kind: Application
metadata: {{ name: {APPLICATION} }}
spec:
  version: \"{version}\"
  services:
    - name: pos
      containers:
        - name: pos
          image: sim/pos:{version}
          env: {{ STORE: \"${{site.store_id}}\" }}
          resources: {{ cpu: 0.5, memory: 64Mi }}
          health: {{ tcp: {{ port: 8080 }}, interval: 5s, failureThreshold: 2 }}{secrets}{streams}
---
apiVersion: outpost/v1
kind: Deployment
metadata: {{ name: {APPLICATION} }}
spec:
  application: {APPLICATION}
  sites: fleet = sim
  rollout: {rollout}
"
    )
}

async fn apply(client: &Client, name: &str, content: String) -> Result<()> {
    client
        .apply(&ApplyRequest {
            files: vec![SourceFile {
                name: name.to_string(),
                content,
            }],
            dry_run: false,
        })
        .await
        .with_context(|| format!("applying {name}"))?;
    Ok(())
}

async fn deployment_status(client: &Client) -> Result<DeploymentStatus> {
    let object = client.get(Kind::Deployment, APPLICATION).await?;
    let status = object.status.context("the deployment has no status")?;
    Ok(serde_json::from_value(status)?)
}

/// Polls until the control plane reports `up_to_date` sites up to date.
async fn wait_reported(client: &Client, up_to_date: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = deployment_status(client).await?;
        if status.up_to_date == up_to_date {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "after {timeout:?} the control plane reports {} sites up to date, not {up_to_date} ({} progressing, {} failed, {} offline)",
                status.up_to_date,
                status.progressing,
                status.failed,
                status.offline
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits for every site to satisfy `done`, returning when each did.
async fn per_site<F>(
    sites: &[SimSite],
    start: Instant,
    timeout: Duration,
    what: &str,
    done: F,
) -> Result<Vec<Duration>>
where
    F: Fn(&SimSite) -> bool,
{
    let mut at: Vec<Option<Duration>> = vec![None; sites.len()];
    loop {
        for (site, at) in sites.iter().zip(at.iter_mut()).filter(|(_, at)| at.is_none()) {
            if done(site) {
                *at = Some(start.elapsed());
            }
        }
        let pending = at.iter().filter(|a| a.is_none()).count();
        if pending == 0 {
            return Ok(at.into_iter().flatten().collect());
        }
        if start.elapsed() > timeout {
            bail!(
                "{pending} of {} sites are not {what} after {timeout:?}",
                sites.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn run(options: &Options) -> Result<Report> {
    let n = options.sites;
    if n == 0 {
        bail!("--sites: at least one site is needed");
    }
    if options.crash_sites + options.unhealthy_sites > n {
        bail!(
            "--crash-sites {} and --unhealthy-sites {} must be different sites: together at most --sites {n}",
            options.crash_sites,
            options.unhealthy_sites
        );
    }
    if options.replicas > 1 && options.store.is_none() {
        bail!("--replicas: replicas share a PostgreSQL database; add --store postgres://...");
    }
    std::fs::create_dir_all(&options.work_dir)?;
    let exe = std::env::current_exe().context("finding this binary")?;
    // Replicas share one key file; the first one makes it.
    let key_file = (options.replicas > 1).then(|| options.work_dir.join("secrets.key"));
    let mut controls = Vec::with_capacity(options.replicas);
    for i in 0..options.replicas.max(1) {
        let dir = match i {
            0 => options.work_dir.join("control"),
            i => options.work_dir.join(format!("control-{i}")),
        };
        let control =
            ControlProcess::start(&exe, &dir, options.store.as_deref(), key_file.as_deref()).await?;
        progress(format!(
            "control plane pid {} at {} (log: {})",
            control.pid()?,
            control.url,
            dir.with_extension("log").display()
        ));
        controls.push(control);
    }
    // The first replica leads (it took the lock first); the API is asked
    // through the last, which outlives the leader's kill.
    let control = controls.last().context("no control plane")?;
    let config = outpost_cli::client::load_config(&control.admin_config())?;
    let context = config.context(None).context("admin.yaml has no context")?;
    let client = Client::new(context)?;

    for start in (0..n).step_by(SITES_PER_APPLY) {
        apply(
            &client,
            "sites.yaml",
            sites_yaml(start..(start + SITES_PER_APPLY).min(n)),
        )
        .await?;
    }
    let secret = options.secret_bytes > 0;
    if secret {
        let value: String = (0..options.secret_bytes)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let request = outpost_api::secret::SecretSetRequest {
            name: SECRET.to_string(),
            values: [(
                "token".to_string(),
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value),
            )]
            .into(),
            sites: None,
            images: None,
        };
        client.set_secret(&request).await.context("setting the secret")?;
    }
    apply(&client, "pos-1.yaml", application_yaml("1.0.0", secret, options)).await?;
    progress(format!("{n} sites and {APPLICATION} 1.0.0 applied"));

    let tokens: Vec<String> = futures_util::stream::iter(0..n)
        .map(|i| {
            let client = &client;
            async move {
                let token = client.create_join_token(&site_name(i), Some("1h")).await?;
                Ok::<_, anyhow::Error>(token.token)
            }
        })
        .buffered(32)
        .try_collect()
        .await?;

    let enroll_started = Instant::now();
    let agent_url = controls
        .iter()
        .map(|control| control.agent_url.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let keys = options.work_dir.join("agents");
    let credentials: Vec<_> = futures_util::stream::iter(tokens.into_iter().enumerate())
        .map(|(i, token)| {
            let (dir, server) = (keys.join(site_name(i)), agent_url.clone());
            async move { agent::enroll(&dir, &server, &token, "h1").await }
        })
        .buffered(options.concurrency)
        .try_collect()
        .await?;
    let enroll_seconds = enroll_started.elapsed().as_secs_f64();
    progress(format!("{n} hosts enrolled in {enroll_seconds:.1}s"));

    let (stop, shutdown) = watch::channel(false);
    let mut sites = Vec::with_capacity(n);
    for (i, c) in credentials.into_iter().enumerate() {
        let outbox = Arc::new(MemoryOutbox::new(SITE_QUEUE_LIMIT));
        let secrets = keys.join(site_name(i)).join("secrets");
        let streams = match options.stream_records {
            0 => None,
            _ => Some(Arc::new(outpost_agent::streams::Streams::in_memory().await?)),
        };
        sites.push(SimSite::start(
            c,
            secrets,
            options.start_delay,
            options.images,
            outbox,
            streams,
            shutdown.clone(),
        ));
    }
    let first_deploy = per_site(&sites, Instant::now(), options.timeout, "running 1.0.0", |s| {
        s.runs("1.0.0")
    })
    .await?;
    progress(format!("all {n} sites run 1.0.0"));
    wait_reported(&client, n, options.timeout).await?;

    // Idle: everything converged and reported; only heartbeats flow.
    let pids = controls
        .iter()
        .map(ControlProcess::pid)
        .collect::<Result<Vec<_>>>()?;
    let cpu = |pids: &[u32]| -> Result<Duration> {
        pids.iter()
            .map(|pid| control::cpu_time(*pid))
            .sum::<Result<Duration>>()
    };
    let (cpu_before, bytes_before) = (cpu(&pids)?, total_bytes());
    let idle_started = Instant::now();
    tokio::time::sleep(options.idle).await;
    let idle_seconds = idle_started.elapsed().as_secs_f64();
    let control_cpu = (cpu(&pids)? - cpu_before).as_secs_f64();
    let idle_bytes = total_bytes() - bytes_before;
    let control_rss = pids
        .iter()
        .map(|pid| control::rss(*pid))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or_default();
    let sim_rss = control::rss(std::process::id())?;
    progress(format!("idle for {idle_seconds:.0}s"));

    let streams = match options.stream_records {
        0 => None,
        per_site => {
            let report = measure_streams(&client, &sites, per_site, options.timeout).await?;
            progress(format!(
                "{} records from {n} sites stored in {:.1}s",
                report.records, report.seconds
            ));
            Some(report)
        }
    };

    let update_started = Instant::now();
    apply(&client, "pos-2.yaml", application_yaml("2.0.0", secret, options)).await?;
    let update = per_site(&sites, update_started, options.timeout, "running 2.0.0", |s| {
        s.runs("2.0.0")
    })
    .await?;
    wait_reported(&client, n, options.timeout).await?;
    let update_reported_seconds = update_started.elapsed().as_secs_f64();
    progress(format!("all {n} sites run 2.0.0"));

    let (reconnect_seconds, reconnect_after_listening_seconds, moved_sites) = if controls.len() == 1 {
        let control = &mut controls[0];
        let restart_started = Instant::now();
        control.stop().await?;
        per_site(&sites, Instant::now(), options.timeout, "disconnected", |s| {
            !*s.connected.borrow()
        })
        .await?;
        control.start_again().await?;
        let listening = Instant::now();
        per_site(&sites, listening, options.timeout, "connected again", |s| {
            *s.connected.borrow()
        })
        .await?;
        let reconnect_seconds = restart_started.elapsed().as_secs_f64();
        progress(format!(
            "all {n} sites reconnected {reconnect_seconds:.1}s after the restart began"
        ));
        (reconnect_seconds, listening.elapsed().as_secs_f64(), 0)
    } else {
        let (seconds, leader_seconds, moved) = fail_over(&mut controls[0], &sites, options.timeout).await?;
        progress(format!(
            "the leader killed: its {moved} sites connected elsewhere within {seconds:.1}s, a new leader after {leader_seconds:.1}s"
        ));
        // It comes back as a follower, for the rest of the run.
        controls[0].start_again().await?;
        (seconds, leader_seconds, moved)
    };

    let crashed = &sites[..options.crash_sites];
    let before: Vec<u64> = crashed.iter().map(|s| s.runtime.starts()).collect();
    for site in crashed {
        site.runtime.crash(137);
    }
    let restarted = per_site(
        crashed,
        Instant::now(),
        options.timeout,
        "restarted after a crash",
        |s| s.runs("2.0.0"),
    )
    .await?;
    for ((site, before), _) in crashed.iter().zip(before).zip(&restarted) {
        if site.runtime.starts() <= before {
            bail!("{} runs again without having been restarted", site.site);
        }
    }

    // Failing probes, on other sites than the crashed ones and once those
    // are reported healthy again: the control plane must see exactly these
    // sites fall out of "up to date", and see them come back.
    wait_reported(&client, n, options.timeout).await?;
    let unhealthy = &sites[n - options.unhealthy_sites..];
    let names: BTreeSet<&str> = unhealthy.iter().map(|s| s.site.as_str()).collect();
    for site in unhealthy {
        site.runtime.set_unhealthy(true);
    }
    let deadline = Instant::now() + options.timeout;
    let unhealthy_sites_reported = loop {
        let status = deployment_status(&client).await?;
        let behind: BTreeSet<&str> = status
            .sites
            .iter()
            .filter(|s| s.state != DeploymentSiteState::UpToDate)
            .map(|s| s.site.as_str())
            .collect();
        if behind == names {
            break behind.len();
        }
        if Instant::now() > deadline {
            bail!("the control plane reports {behind:?} not up to date, not the unhealthy sites {names:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for site in unhealthy {
        site.runtime.set_unhealthy(false);
    }

    // Nothing lost: the control plane sees every site up to date, and no
    // site started anything beyond its two versions and its injected crash.
    let sites_lost = match wait_reported(&client, n, options.timeout).await {
        Ok(()) => 0,
        Err(err) => {
            progress(format!("{err:#}"));
            n - deployment_status(&client).await?.up_to_date
        }
    };
    let starts: u64 = sites.iter().map(|s| s.runtime.starts()).sum();
    let expected = 2 * n as u64 + restarted.len() as u64;
    stop.send_replace(true);
    for control in &mut controls {
        control.stop().await?;
    }

    Ok(Report {
        sites: n,
        enroll_seconds,
        enrolled_per_second: n as f64 / enroll_seconds,
        first_deploy: Spread::of(first_deploy),
        control_rss_mib: control_rss as f64 / (1024.0 * 1024.0),
        control_idle_cpu_percent: 100.0 * control_cpu / idle_seconds,
        sim_rss_mib: sim_rss as f64 / (1024.0 * 1024.0),
        idle_bytes_per_site_per_minute: idle_bytes as f64 / n as f64 / (idle_seconds / 60.0),
        idle_seconds,
        update: Spread::of(update),
        update_reported_seconds,
        replicas: controls.len(),
        reconnect_seconds,
        reconnect_after_listening_seconds,
        moved_sites,
        crashed_sites_restarted: restarted.len(),
        unhealthy_sites_reported,
        needless_restarts: starts.saturating_sub(expected),
        sites_lost,
        streams,
    })
}

/// Kills the leader (SIGKILL, as when its machine is lost) and waits for
/// the sites whose sessions it held to connect to the other replicas, and
/// for one of those to lead. Returns the seconds to both and how many sites
/// moved.
async fn fail_over(
    leader: &mut ControlProcess,
    sites: &[SimSite],
    timeout: Duration,
) -> Result<(f64, f64, usize)> {
    let mut sessions: Vec<watch::Receiver<bool>> = sites.iter().map(|s| s.connected.clone()).collect();
    for session in &mut sessions {
        session.borrow_and_update();
    }
    let logs = control::LogsFrom::now(&leader.log_dir())?;
    let killed = Instant::now();
    leader.kill().await?;
    // The kernel closes the killed replica's sockets at once; its sites
    // notice within milliseconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let moved = sessions
        .iter()
        .filter(|s| s.has_changed().unwrap_or(false))
        .count();
    if moved == 0 {
        bail!("no site lost its session when the leader was killed");
    }
    // Both measured from the kill, each when it is first seen.
    let (mut connected, mut led) = (None, None);
    loop {
        if connected.is_none() && sites.iter().all(|s| *s.connected.borrow()) {
            connected = Some(killed.elapsed().as_secs_f64());
        }
        if led.is_none() && logs.contain("this replica leads now")? {
            led = Some(killed.elapsed().as_secs_f64());
        }
        if let (Some(connected), Some(led)) = (connected, led) {
            return Ok((connected, led, moved));
        }
        if killed.elapsed() > timeout {
            bail!(
                "after {timeout:?} of the leader's kill: every site connected {connected:?}, a new leader {led:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn total_bytes() -> u64 {
    let (sent, received) = outpost_agent::uplink::totals();
    sent + received
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spread = |s: &Spread| format!("p50 {:.2}s  p99 {:.2}s  max {:.2}s", s.p50, s.p99, s.max);
        writeln!(f, "sites                        {}", self.sites)?;
        writeln!(
            f,
            "enrollment                   {:.0} hosts/s ({:.1}s)",
            self.enrolled_per_second, self.enroll_seconds
        )?;
        writeln!(f, "first deployment             {}", spread(&self.first_deploy))?;
        writeln!(f, "apply -> running new version {}", spread(&self.update))?;
        writeln!(
            f,
            "apply -> all reported        {:.1}s",
            self.update_reported_seconds
        )?;
        writeln!(
            f,
            "control plane, idle          {:.0} MiB RSS, {:.1}% of a core",
            self.control_rss_mib, self.control_idle_cpu_percent
        )?;
        writeln!(
            f,
            "idle traffic                 {:.0} bytes per site per minute (over {:.0}s)",
            self.idle_bytes_per_site_per_minute, self.idle_seconds
        )?;
        if self.replicas > 1 {
            writeln!(
                f,
                "leader killed ({} replicas)  {} sites connected elsewhere {:.1}s after its SIGKILL, a new leader after {:.1}s",
                self.replicas,
                self.moved_sites,
                self.reconnect_seconds,
                self.reconnect_after_listening_seconds
            )?;
        } else {
            writeln!(
                f,
                "reconnect after restart      {:.1}s from SIGTERM, {:.1}s from listening",
                self.reconnect_seconds, self.reconnect_after_listening_seconds
            )?;
        }
        writeln!(f, "crashed sites restarted      {}", self.crashed_sites_restarted)?;
        writeln!(
            f,
            "unhealthy sites reported     {}",
            self.unhealthy_sites_reported
        )?;
        if let Some(streams) = &self.streams {
            writeln!(
                f,
                "stream records stored        {:.0}/s ({} from every site at once, {:.1}s)",
                streams.stored_per_second, streams.records, streams.seconds
            )?;
            writeln!(
                f,
                "stream bytes per 1,000       {:.0} on the uplink (TLS included), {:.0} of records",
                streams.uplink_bytes_per_1000, streams.raw_bytes_per_1000
            )?;
        }
        writeln!(f, "needless restarts            {}", self.needless_restarts)?;
        write!(f, "sites lost                   {}", self.sites_lost)
    }
}
