//! The agent's `/metrics` (Prometheus text format), on a loopback address
//! by default: the uplink's bytes, the outbound queue, and the instances.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use outpost_api::metrics::{CONTENT_TYPE, Exposition};
use outpost_proto::v1::StatusReport;
use tokio::sync::watch;

use crate::outbox::Outbox;

/// Where the figures come from.
#[derive(Clone)]
pub struct Sources {
    pub outbox: Arc<dyn Outbox>,
    pub status: watch::Receiver<StatusReport>,
    pub connected: watch::Receiver<bool>,
}

fn render(sources: &Sources) -> String {
    let (sent, received) = crate::uplink::totals();
    let mut out = Exposition::default();
    out.family(
        "outpost_agent_uplink_sent_bytes_total",
        "counter",
        "Bytes sent to the control plane, counted at the socket (TLS included).",
    )
    .sample("outpost_agent_uplink_sent_bytes_total", &[], sent as f64)
    .family(
        "outpost_agent_uplink_received_bytes_total",
        "counter",
        "Bytes received from the control plane, counted at the socket (TLS included).",
    )
    .sample("outpost_agent_uplink_received_bytes_total", &[], received as f64)
    .family(
        "outpost_agent_connected",
        "gauge",
        "1 while a session with the control plane is up.",
    )
    .sample(
        "outpost_agent_connected",
        &[],
        u8::from(*sources.connected.borrow()).into(),
    )
    .family(
        "outpost_agent_queue_bytes",
        "gauge",
        "Bytes of events, logs and samples waiting for the control plane.",
    )
    .sample(
        "outpost_agent_queue_bytes",
        &[],
        sources.outbox.queued_bytes() as f64,
    )
    .family(
        "outpost_agent_queue_dropped_records_total",
        "counter",
        "Records dropped, oldest first, because the queue was full.",
    )
    .sample(
        "outpost_agent_queue_dropped_records_total",
        &[],
        sources.outbox.dropped() as f64,
    );
    out.family(
        "outpost_agent_instances",
        "gauge",
        "Instances on this host, by state.",
    );
    let mut states = std::collections::BTreeMap::<String, usize>::new();
    for status in sources.status.borrow().instances.iter() {
        *states.entry(status.state.clone()).or_default() += 1;
    }
    for (state, count) in &states {
        out.sample("outpost_agent_instances", &[("state", state)], *count as f64);
    }
    out.finish()
}

async fn metrics(State(sources): State<Sources>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&sources))
}

/// Serves `/metrics` until `shutdown`. A port already in use is logged,
/// not fatal: metrics are not worth stopping the workloads' keeper for.
pub async fn serve(listen: SocketAddr, sources: Sources, mut shutdown: watch::Receiver<bool>) {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::warn!(%listen, %err, "cannot serve metrics (pick another address with --metrics-listen)");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics at /metrics");
    }
    let app = Router::new().route("/metrics", get(metrics)).with_state(sources);
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::warn!(%err, "the metrics endpoint failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_figures_come_from_the_queue_and_the_instances() {
        let outbox = Arc::new(crate::outbox::MemoryOutbox::new(1 << 20));
        let status = vec![
            outpost_proto::v1::InstanceStatus {
                state: "running".into(),
                ..Default::default()
            },
            outpost_proto::v1::InstanceStatus {
                state: "running".into(),
                ..Default::default()
            },
            outpost_proto::v1::InstanceStatus {
                state: "exited".into(),
                ..Default::default()
            },
        ];
        let sources = Sources {
            outbox: outbox.clone(),
            status: watch::channel(StatusReport {
                instances: status,
                images: Vec::new(),
            })
            .1,
            connected: watch::channel(true).1,
        };
        let text = render(&sources);
        assert!(text.contains("outpost_agent_connected 1\n"), "{text}");
        assert!(
            text.contains("outpost_agent_instances{state=\"running\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("outpost_agent_instances{state=\"exited\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("outpost_agent_queue_bytes 0\n"), "{text}");
    }
}
