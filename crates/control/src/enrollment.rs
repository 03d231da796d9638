//! Failed enrollments: counted for `/metrics`, logged without flooding the
//! log, and throttled per source address, so that guessing join tokens
//! costs an attacker time and leaves a trace.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Failures one source address may have within [`WINDOW`] before its
/// further attempts are refused until the window has passed.
pub const MAX_FAILURES_PER_SOURCE: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(60);
/// At most one log line about failures per this period; the rest are counted.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Enrollments {
    failed: AtomicU64,
    throttled: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per source: when its window began, and its failures in it.
    sources: HashMap<IpAddr, (Instant, u32)>,
    last_log: Option<Instant>,
    /// Failures not logged since the last line.
    unlogged: u64,
}

impl Enrollments {
    /// Whether `source` may try now; `Err` says until when it may not.
    pub fn admit(&self, source: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let Some(source) = source else { return Ok(()) };
        let state = self.state.lock();
        match state.sources.get(&source) {
            Some((start, failures))
                if now.duration_since(*start) < WINDOW && *failures >= MAX_FAILURES_PER_SOURCE =>
            {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                Err(WINDOW - now.duration_since(*start))
            }
            _ => Ok(()),
        }
    }

    /// Records a failed enrollment from `source` and why it failed.
    pub fn failed(&self, source: Option<IpAddr>, why: &str, now: Instant) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock();
        if let Some(source) = source {
            // Forget windows that have passed, so the map stays small.
            if state.sources.len() > 10_000 {
                state
                    .sources
                    .retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            }
            let entry = state.sources.entry(source).or_insert((now, 0));
            if now.duration_since(entry.0) >= WINDOW {
                *entry = (now, 0);
            }
            entry.1 += 1;
        }
        state.unlogged += 1;
        if state
            .last_log
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            let failures = std::mem::take(&mut state.unlogged);
            state.last_log = Some(now);
            let source = source.map(|ip| ip.to_string()).unwrap_or_default();
            tracing::warn!(%source, %why, failures, "enrollment refused (failures since the last such line)");
        }
    }

    /// Failed enrollments since start.
    pub fn failed_total(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Attempts refused because their source had failed too often.
    pub fn throttled_total(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_that_keeps_failing_waits_out_its_window() {
        let enrollments = Enrollments::default();
        let start = Instant::now();
        let attacker: IpAddr = [198, 51, 100, 7].into();
        let neighbour: IpAddr = [198, 51, 100, 8].into();
        for _ in 0..MAX_FAILURES_PER_SOURCE {
            assert!(enrollments.admit(Some(attacker), start).is_ok());
            enrollments.failed(Some(attacker), "unknown join token", start);
        }
        let wait = enrollments
            .admit(Some(attacker), start + Duration::from_secs(15))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(45));
        assert!(enrollments.admit(Some(neighbour), start).is_ok());
        assert!(enrollments.admit(Some(attacker), start + WINDOW).is_ok());
        assert_eq!(enrollments.failed_total(), u64::from(MAX_FAILURES_PER_SOURCE));
        assert_eq!(enrollments.throttled_total(), 1);
    }
}
