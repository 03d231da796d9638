//! The state of an instance as its agent reports it: a word in the protocol
//! and the API, an enum everywhere else.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Not created yet (its image may be on the way).
    Pending,
    /// Running, its health probe not yet passed.
    Starting,
    /// Running, with no probe.
    Running,
    /// Running, its probe passing.
    Healthy,
    /// Running, its probe failing past the threshold.
    Unhealthy,
    /// Stopped; it will be restarted with backoff.
    Exited,
    /// Cannot run: a crash loop, or an image that cannot be had.
    Failed,
}

impl InstanceState {
    pub const ALL: [InstanceState; 7] = [
        InstanceState::Pending,
        InstanceState::Starting,
        InstanceState::Running,
        InstanceState::Healthy,
        InstanceState::Unhealthy,
        InstanceState::Exited,
        InstanceState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Healthy => "healthy",
            InstanceState::Unhealthy => "unhealthy",
            InstanceState::Exited => "exited",
            InstanceState::Failed => "failed",
        }
    }

    /// Running and not known to be unwell: what "up to date" needs.
    pub fn is_up(self) -> bool {
        matches!(self, InstanceState::Running | InstanceState::Healthy)
    }

    /// Whether the exit code the agent sent means something.
    pub fn has_exit_code(self) -> bool {
        matches!(self, InstanceState::Exited | InstanceState::Failed)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InstanceState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        InstanceState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| format!("{text:?} is not an instance state"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_match_serde() {
        for state in InstanceState::ALL {
            assert_eq!(state.as_str().parse::<InstanceState>(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        assert!("Running".parse::<InstanceState>().is_err());
    }
}
