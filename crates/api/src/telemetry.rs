//! What agents send up besides status: events, log lines and metric
//! samples. Agents queue these records on disk and the control plane keeps
//! them for a retention period; the same types travel in the agent
//! protocol (as JSON inside a compressed batch) and in the REST API.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One record in an agent's outbound queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Record {
    Event(Event),
    Log(LogChunk),
    Metrics(MetricSample),
}

/// What happened, in the words `outpost events` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// A container started (first start or a restart).
    Started,
    /// A container stopped running; `exitCode` says how.
    Exited,
    /// A health probe failed past its threshold.
    Unhealthy,
    /// An unhealthy instance passes its probe again.
    Healthy,
    /// An instance cannot run: a crash loop, a refused create, a failed pull.
    Failed,
    /// The control plane found no host of the site able to run a deployment.
    PlacementFailed,
    /// An image was pulled onto the host.
    ImagePulled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Exited => "exited",
            EventKind::Unhealthy => "unhealthy",
            EventKind::Healthy => "healthy",
            EventKind::Failed => "failed",
            EventKind::PlacementFailed => "placementFailed",
            EventKind::ImagePulled => "imagePulled",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("unknown event kind {s:?}"))
    }
}

/// One event as the agent records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// When it happened on the host (RFC 3339, UTC).
    pub at: String,
    pub kind: EventKind,
    #[serde(default)]
    pub application: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub instance: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// Lines a container wrote, collected since the previous chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogChunk {
    /// When the chunk was collected (RFC 3339, UTC).
    pub at: String,
    pub application: String,
    pub service: String,
    pub instance: String,
    pub container: String,
    /// `stdout` or `stderr` and the line, oldest first.
    pub lines: Vec<LogLine>,
    /// Lines the agent skipped because the container wrote more than its
    /// bound allows between two collections.
    #[serde(default)]
    pub skipped: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// When the container wrote it (RFC 3339, UTC), if the runtime says.
    #[serde(default)]
    pub at: String,
    pub stream: String,
    pub text: String,
}

/// CPU and memory of the host and of each instance it runs, averaged over
/// the sampling period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSample {
    pub at: String,
    /// Cores in use on the host (1.5 = one and a half cores).
    pub host_cpu: f64,
    pub host_memory_bytes: u64,
    pub instances: Vec<InstanceMetrics>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceMetrics {
    pub application: String,
    pub instance: String,
    pub cpu: f64,
    pub memory_bytes: u64,
}

/// An event as the control plane stores and serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    /// Increases with each event the control plane stores; `?after=` takes it.
    pub id: i64,
    pub site: String,
    /// Empty for events of the control plane itself.
    pub host: String,
    /// When it happened at the site.
    pub at: String,
    /// When the control plane received it (later than `at` after an outage).
    pub received_at: String,
    pub kind: EventKind,
    pub application: String,
    pub service: String,
    pub instance: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EventList {
    pub items: Vec<StoredEvent>,
}

/// Log lines as the control plane stores and serves them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredLogLine {
    pub id: i64,
    pub site: String,
    pub host: String,
    pub application: String,
    pub service: String,
    pub instance: String,
    pub container: String,
    #[serde(flatten)]
    pub line: LogLine,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogList {
    pub items: Vec<StoredLogLine>,
}

/// The current time as records carry it (RFC 3339, UTC, milliseconds).
pub fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let record = Record::Event(Event {
            at: now(),
            kind: EventKind::Exited,
            application: "pos".into(),
            service: "web".into(),
            instance: "web-0".into(),
            message: "web exited with 3".into(),
            exit_code: Some(3),
        });
        let json = serde_json::to_string(&record).unwrap();
        assert!(
            json.contains(r#""type":"event""#) && json.contains(r#""kind":"exited""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
        assert_eq!(
            "placementFailed".parse::<EventKind>(),
            Ok(EventKind::PlacementFailed)
        );
        assert!("crashed".parse::<EventKind>().unwrap_err().contains("crashed"));
    }
}
