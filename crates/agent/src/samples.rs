//! CPU and memory of the host and of each instance it runs, one sample per
//! period (`SAMPLE_EVERY` by default), queued for the control plane. CPU is the average over
//! the period (cores in use, from the counters' difference), memory what is
//! in use at the sample. One record per period keeps an idle site within
//! its traffic budget (BENCHMARKS.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use outpost_api::telemetry::{InstanceMetrics, MetricSample, Record, now};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::outbox::Outbox;
use crate::runtime::Runtime;

/// The default period: one record per quarter hour.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(900);

/// The host's CPU counters from `/proc/stat`: (busy, total) in clock ticks.
fn host_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// Memory in use from `/proc/meminfo`: MemTotal − MemAvailable, in bytes.
fn host_memory(meminfo: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    };
    Some((field("MemTotal:")? - field("MemAvailable:")?) * 1024)
}

fn cores(cpus: usize, before: (u64, u64), after: (u64, u64)) -> f64 {
    let (busy, total) = (after.0.saturating_sub(before.0), after.1.saturating_sub(before.1));
    if total == 0 {
        return 0.0;
    }
    busy as f64 / total as f64 * cpus as f64
}

/// Runs until `shutdown`; the first period only takes the baseline.
pub async fn sample(
    runtime: Arc<dyn Runtime>,
    outbox: Arc<dyn Outbox>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let mut host_before = host_cpu_ticks(&read("/proc/stat"));
    // Each container's CPU time (ns) at the previous sample.
    let mut before: HashMap<String, u64> = HashMap::new();
    let mut at = Instant::now();
    let mut tick = tokio::time::interval(every);
    let mut first = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let elapsed = at.elapsed().as_nanos().max(1) as f64;
        at = Instant::now();
        let Ok(observed) = runtime.observe().await else {
            continue;
        };
        let mut instances = Vec::new();
        let mut now_cpu = HashMap::new();
        for o in observed.iter().filter(|o| o.running) {
            let Ok(Some((cpu_ns, memory_bytes))) = runtime.usage(&o.id).await else {
                continue;
            };
            now_cpu.insert(o.id.clone(), cpu_ns);
            let Some(previous) = before.get(&o.id) else {
                continue;
            };
            instances.push(InstanceMetrics {
                application: o.application.clone(),
                instance: o.instance.clone(),
                cpu: cpu_ns.saturating_sub(*previous) as f64 / elapsed,
                memory_bytes,
            });
        }
        before = now_cpu;
        let host_after = host_cpu_ticks(&read("/proc/stat"));
        let host_cpu = match (host_before, host_after) {
            (Some(b), Some(a)) => cores(cpus, b, a),
            _ => 0.0,
        };
        host_before = host_after;
        if std::mem::replace(&mut first, false) {
            continue;
        }
        let sample = MetricSample {
            at: now(),
            host_cpu,
            host_memory_bytes: host_memory(&read("/proc/meminfo")).unwrap_or(0),
            instances,
        };
        if let Err(err) = outbox.push(&[Record::Metrics(sample)]).await {
            tracing::warn!(err = format!("{err:#}"), "cannot queue a metrics sample");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_figures_from_proc() {
        let stat = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\n";
        assert_eq!(host_cpu_ticks(stat), Some((200, 1000)));
        assert_eq!(cores(4, (200, 1000), (700, 2000)), 2.0);
        assert_eq!(cores(4, (200, 1000), (200, 1000)), 0.0);
        let meminfo = "MemTotal:        8000 kB\nMemFree:  100 kB\nMemAvailable:    6000 kB\n";
        assert_eq!(host_memory(meminfo), Some(2000 * 1024));
        assert_eq!(host_memory("garbage"), None);
    }
}
