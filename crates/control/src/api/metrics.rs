//! `GET /metrics`: the fleet in the Prometheus text format.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::status::Snapshot;

/// `GET /metrics`: the fleet in the Prometheus text format.
pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snapshot = Snapshot::take(state.store.as_ref(), &state.fleet.presence).await?;
    let hosts = snapshot.hosts();
    let mut out = outpost_api::metrics::Exposition::default();
    let online = hosts.iter().filter(|h| h.online).count();
    out.family(
        "outpost_hosts",
        "gauge",
        "Enrolled hosts, by whether their agent is connected.",
    )
    .sample("outpost_hosts", &[("state", "online")], online as f64)
    .sample(
        "outpost_hosts",
        &[("state", "offline")],
        (hosts.len() - online) as f64,
    );
    out.family(
        "outpost_enrollments_failed_total",
        "counter",
        "Enrollments refused since start (bad, unknown, used or expired join tokens, taken host names).",
    )
    .sample(
        "outpost_enrollments_failed_total",
        &[],
        state.enrollments.failed_total() as f64,
    );
    out.family(
        "outpost_enrollments_throttled_total",
        "counter",
        "Enrollment attempts refused because their address had failed too often.",
    )
    .sample(
        "outpost_enrollments_throttled_total",
        &[],
        state.enrollments.throttled_total() as f64,
    );
    let mut states: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for state in hosts.iter().flat_map(|h| h.instances.values()) {
        *states.entry(state.as_str()).or_default() += 1;
    }
    out.family(
        "outpost_instances",
        "gauge",
        "Instances as their hosts last reported them, by state.",
    );
    for (state, count) in states {
        out.sample("outpost_instances", &[("state", state)], count as f64);
    }
    type PerHost = (
        &'static str,
        &'static str,
        &'static str,
        fn(&outpost_api::wire::HostInfo) -> f64,
    );
    let per_host: [PerHost; 4] = [
        (
            "outpost_host_online",
            "gauge",
            "1 while the host's agent is connected.",
            |h| u8::from(h.online).into(),
        ),
        (
            "outpost_agent_received_bytes_total",
            "counter",
            "Bytes received from the host's agent, counted at the socket (TLS included); booked every heartbeat and when a session ends.",
            |h| h.bytes_received as f64,
        ),
        (
            "outpost_agent_sent_bytes_total",
            "counter",
            "Bytes sent to the host's agent, counted at the socket (TLS included); booked every heartbeat and when a session ends.",
            |h| h.bytes_sent as f64,
        ),
        (
            "outpost_agent_dropped_records_total",
            "counter",
            "Events, log chunks and samples the host's agent dropped because its queue was full.",
            |h| h.dropped as f64,
        ),
    ];
    for (name, kind, help, value) in per_host {
        out.family(name, kind, help);
        for host in &hosts {
            out.sample(name, &[("site", &host.site), ("host", &host.name)], value(host));
        }
    }
    let samples = state.store.latest_samples().await?;
    out.family(
        "outpost_host_cpu_cores",
        "gauge",
        "Cores in use on the host, averaged over its last sampling period.",
    );
    for (site, host, sample) in &samples {
        out.sample(
            "outpost_host_cpu_cores",
            &[("site", site), ("host", host)],
            sample.host_cpu,
        );
    }
    out.family(
        "outpost_host_memory_bytes",
        "gauge",
        "Memory in use on the host at its last sample.",
    );
    for (site, host, sample) in &samples {
        let memory = sample.host_memory_bytes as f64;
        out.sample(
            "outpost_host_memory_bytes",
            &[("site", site), ("host", host)],
            memory,
        );
    }
    type Field = fn(&outpost_api::telemetry::InstanceMetrics) -> f64;
    let per_instance: [(&str, &str, Field); 2] = [
        (
            "outpost_instance_cpu_cores",
            "Cores an instance used, averaged over its host's last sampling period.",
            |i| i.cpu,
        ),
        (
            "outpost_instance_memory_bytes",
            "Memory an instance used at its host's last sample.",
            |i| i.memory_bytes as f64,
        ),
    ];
    for (name, help, value) in per_instance {
        out.family(name, "gauge", help);
        for (site, host, sample) in &samples {
            for i in &sample.instances {
                let labels = [
                    ("site", site.as_str()),
                    ("host", host),
                    ("application", &i.application),
                    ("instance", &i.instance),
                ];
                out.sample(name, &labels, value(i));
            }
        }
    }
    let topics = state.store.host_streams().await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    type TopicField = fn(&outpost_api::stream::TopicStatus, u64) -> f64;
    let per_topic: [(&str, &str, &str, TopicField); 5] = [
        (
            "outpost_stream_backlog_records",
            "gauge",
            "Records of an application topic on a host's disk (up topics: not yet stored here), as last reported.",
            |t, _| t.backlog_records as f64,
        ),
        (
            "outpost_stream_backlog_bytes",
            "gauge",
            "Bytes of an application topic on a host's disk, as last reported.",
            |t, _| t.backlog_bytes as f64,
        ),
        (
            "outpost_stream_lag_seconds",
            "gauge",
            "Age of the oldest record of an up topic that is not stored here yet.",
            |t, now| t.lag_ms(now) as f64 / 1000.0,
        ),
        (
            "outpost_stream_dropped_records_total",
            "counter",
            "Records a host dropped from a full topic, oldest first.",
            |t, _| t.dropped_records as f64,
        ),
        (
            "outpost_stream_dropped_bytes_total",
            "counter",
            "Bytes of the records a host dropped from a full topic.",
            |t, _| t.dropped_bytes as f64,
        ),
    ];
    for (name, kind, help, value) in per_topic {
        out.family(name, kind, help);
        for (site, topic) in &topics {
            let labels = [
                ("site", site.as_str()),
                ("host", &topic.host),
                ("application", &topic.application),
                ("topic", &topic.topic),
                ("direction", topic.direction.as_str()),
            ];
            out.sample(name, &labels, value(topic, now_ms));
        }
    }
    let clusters = state.fleet.presence.clusters();
    let mut clusters: Vec<_> = clusters
        .iter()
        .flat_map(|(site, hosts)| hosts.iter().map(move |h| (site, h)))
        .collect();
    clusters.sort_by(|a, b| (a.0, &a.1.host).cmp(&(b.0, &b.1.host)));
    type ClusterField = fn(&outpost_api::wire::ClusterStatus) -> f64;
    let per_host: [(&str, &str, ClusterField); 3] = [
        (
            "outpost_cluster_peers_heard",
            "Peers a host of a site cluster heard within hostLossAfter, as it last reported.",
            |c| c.hears.len() as f64,
        ),
        (
            "outpost_cluster_epoch",
            "The site's placement epoch as a host of it holds it (grows with every move the site decides).",
            |c| c.epoch as f64,
        ),
        (
            "outpost_cluster_moved_instances",
            "Instances the site moved off lost hosts, in the ledger a host holds.",
            |c| c.moved.len() as f64,
        ),
    ];
    let role = "outpost_cluster_role";
    out.family(
        role,
        "gauge",
        "A host's role in its site's Raft group (1 for the role it last reported; sites of three hosts or more).",
    );
    for (site, host) in &clusters {
        if let Some(r) = &host.role {
            out.sample(
                role,
                &[("site", site.as_str()), ("host", &host.host), ("role", r)],
                1.0,
            );
        }
    }
    for (name, help, value) in per_host {
        out.family(name, "gauge", help);
        for (site, host) in &clusters {
            out.sample(
                name,
                &[("site", site.as_str()), ("host", &host.host)],
                value(host),
            );
        }
    }
    Ok((
        [(header::CONTENT_TYPE, outpost_api::metrics::CONTENT_TYPE)],
        out.finish(),
    )
        .into_response())
}
