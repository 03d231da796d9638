//! The documented bounds on what a manifest, a label change or an API body
//! may hold. Each is far above real use and far below what would let one
//! request exhaust the control plane or an agent; validation enforces them
//! and the README's "Limits" table lists them.

use crate::quantity::Duration;

/// Labels on one object or one host.
pub const MAX_LABELS: usize = 64;
/// Variables on one site.
pub const MAX_VARIABLES: usize = 256;
/// A site variable's name.
pub const MAX_VARIABLE_NAME: usize = 63;
/// A site variable's value, or an environment value, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;
/// A request body of the REST API, in bytes.
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// One object (Site, Application, Deployment) as JSON, in bytes.
pub const MAX_OBJECT_BYTES: usize = 512 << 10;

/// A closed range of durations a manifest field accepts.
#[derive(Debug, Clone, Copy)]
pub struct DurationRange {
    pub min: Duration,
    pub max: Duration,
}

impl DurationRange {
    const fn new(min_ms: u64, max_ms: u64) -> Self {
        DurationRange {
            min: Duration(min_ms),
            max: Duration(max_ms),
        }
    }

    /// An operator's message when `value` is outside, or nothing.
    pub fn check(self, value: Duration) -> Result<(), String> {
        if value.0 < self.min.0 || value.0 > self.max.0 {
            Err(format!(
                "{value} is out of range (from {} to {})",
                self.min, self.max
            ))
        } else {
            Ok(())
        }
    }
}

const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

/// A health probe's `interval`: a probe more often than once a second costs
/// an agent a core (`interval: 0s` once did).
pub const PROBE_INTERVAL: DurationRange = DurationRange::new(SECOND, HOUR);
/// A health probe's `timeout`.
pub const PROBE_TIMEOUT: DurationRange = DurationRange::new(100, 5 * MINUTE);
/// A site's `hostLossAfter`: long enough that a reboot of the site's
/// network is not a loss, short enough to matter.
pub const HOST_LOSS_AFTER: DurationRange = DurationRange::new(5 * SECOND, HOUR);
/// `hostLossAfter` when a site does not say.
pub const DEFAULT_HOST_LOSS_AFTER_MS: u64 = 30 * SECOND;
/// A rollout's `healthyFor`: `0s` promotes as soon as a wave is healthy.
pub const ROLLOUT_HEALTHY_FOR: DurationRange = DurationRange::new(0, 24 * HOUR);
/// A rollout's per-wave `timeout`.
pub const ROLLOUT_TIMEOUT: DurationRange = DurationRange::new(10 * SECOND, 7 * 24 * HOUR);
/// A rollout's `prestageTimeout`: how long a site may take to fetch images.
pub const ROLLOUT_PRESTAGE_TIMEOUT: DurationRange = DurationRange::new(10 * SECOND, 7 * 24 * HOUR);
/// The `prestageTimeout` of a rollout that gives none.
pub const DEFAULT_PRESTAGE_TIMEOUT: Duration = Duration(HOUR);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_include_their_ends() {
        assert!(PROBE_INTERVAL.check(Duration(1000)).is_ok());
        assert!(PROBE_INTERVAL.check(Duration(3_600_000)).is_ok());
        assert_eq!(
            PROBE_INTERVAL.check(Duration(0)).unwrap_err(),
            "0s is out of range (from 1s to 1h)"
        );
        assert!(PROBE_INTERVAL.check(Duration(3_600_001)).is_err());
    }
}
