//! The control plane as witness of a 2-host site's singletons: whether
//! this host may move its lost peer's singletons (`AgentGateway/Witness`,
//! `outpost_control::witness`), and when it must stop its own.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use outpost_api::manifest::Failover;
use outpost_api::workload::SiteState;
use outpost_proto::v1::agent_gateway_client::AgentGatewayClient;
use outpost_proto::v1::{WitnessRequest, witness_reply};
use tonic::transport::Channel;

use super::{Cluster, PING_TIMEOUT};

impl Cluster {
    /// The control plane's channel while a session lives (none: the
    /// uplink is down).
    pub fn witness_at(&self, channel: Option<Channel>) {
        *self.witness.lock() = channel;
    }

    /// Whether this host reached the witness within `hostLossAfter`.
    pub(super) fn has_uplink(&self) -> bool {
        let after = *self.after.lock();
        self.uplink_ok.lock().is_some_and(|at| at.elapsed() < after)
    }

    /// Asks the witness whether this host may move `lost`'s singletons.
    async fn ask_witness(&self, lost: &str, after: Duration) -> Result<witness_reply::Verdict> {
        let channel = self
            .witness
            .lock()
            .clone()
            .context("no session with the control plane")?;
        let asked = WitnessRequest {
            lost: lost.to_string(),
            host_loss_after_ms: after.as_millis() as u64,
        };
        let reply = tokio::time::timeout(PING_TIMEOUT, AgentGatewayClient::new(channel).witness(asked))
            .await
            .map_err(|_| anyhow::anyhow!("the witness did not answer within {PING_TIMEOUT:?}"))?
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .into_inner();
        if !reply.reason.is_empty() {
            tracing::debug!(%lost, reason = %reply.reason, "the witness answered");
        }
        Ok(reply.verdict())
    }

    /// Stops (or lets run again) this host's singletons.
    fn fence(&self, fenced: bool) {
        let was = self.fenced.swap(fenced, std::sync::atomic::Ordering::SeqCst);
        if was != fenced {
            if fenced {
                tracing::warn!("peer lost and its side may take over: this host stops its singletons");
            } else {
                tracing::info!("peer heard again: this host runs its singletons");
            }
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// What a 2-host site with singletons may do about a lost peer, with
    /// the control plane as witness: whether this host may move the
    /// peer's singletons (`true`), and whether it must stop its own. While
    /// the peer is heard, the host probes the witness every third of
    /// `hostLossAfter`, so that its pings tell the peer whether it has an
    /// uplink.
    pub(super) async fn witnessed(
        &self,
        effective: &SiteState,
        peer: &str,
        lost: bool,
        after: Duration,
    ) -> bool {
        let singletons_on = |host: &str| {
            effective
                .workloads
                .iter()
                .any(|w| w.failover == Failover::Singleton && w.instances.iter().any(|i| i.host == host))
        };
        if !lost {
            self.fence(false);
        }
        if !singletons_on(peer) && !singletons_on(&self.host) {
            return false;
        }
        let due = lost || self.uplink_ok.lock().is_none_or(|at| at.elapsed() >= after / 3);
        if !due {
            return false;
        }
        let verdict = self.ask_witness(if lost { peer } else { "" }, after).await;
        if verdict.is_ok() {
            *self.uplink_ok.lock() = Some(Instant::now());
        }
        match verdict {
            Ok(witness_reply::Verdict::Granted) => lost,
            Ok(witness_reply::Verdict::Yielded) => {
                self.fence(true);
                false
            }
            Ok(witness_reply::Verdict::Denied) => false,
            Err(err) => {
                // The peer may reach the witness and be granted this
                // host's singletons; if it had no uplink either, nobody
                // can, and they keep running here.
                let peer_had_uplink = self.peer_uplink.lock().get(peer).copied().unwrap_or(false);
                tracing::debug!(
                    err = format!("{err:#}"),
                    peer_had_uplink,
                    "the witness cannot be asked"
                );
                if lost && peer_had_uplink {
                    self.fence(true);
                }
                false
            }
        }
    }
}
