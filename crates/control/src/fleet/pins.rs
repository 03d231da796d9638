//! Moves a site decided on its own, taken into central placement.
//!
//! When the hosts of a site move a lost host's instances (the agent's
//! `cluster` module), they report the move. Once the control plane has not
//! heard that host for the site's `hostLossAfter` either, it places those
//! instances where the site moved them: its desired state then says where
//! they run, and the site drops the move from its ledger. The pin lasts
//! until the lost host is heard again; then central placement is as before
//! (one restart per instance moved back). Pins live in memory: after a
//! restart, a site that still misses the host moves again and reports it.

use std::collections::HashMap;
use std::sync::Arc;

use outpost_api::wire::ClusterStatus;
use outpost_api::workload::{Moved, SiteState, apply_moves};
use parking_lot::Mutex;

use super::Fleet;
use crate::store::StoreError;

#[derive(Default)]
pub struct Pins {
    by_site: Mutex<HashMap<String, Vec<Moved>>>,
}

impl Pins {
    /// Places the pinned instances of each site where its hosts moved them.
    pub fn apply(&self, states: &mut std::collections::BTreeMap<String, SiteState>) {
        let pins = self.by_site.lock();
        for (site, state) in states.iter_mut() {
            if let Some(moved) = pins.get(site) {
                apply_moves(state, moved);
            }
        }
    }

    /// Adds moves not pinned yet; whether any was.
    fn add(&self, site: &str, moves: impl IntoIterator<Item = Moved>) -> bool {
        let mut pins = self.by_site.lock();
        let pinned = pins.entry(site.to_string()).or_default();
        let before = pinned.len();
        for moved in moves {
            if !pinned
                .iter()
                .any(|p| p.workload == moved.workload && p.instance == moved.instance)
            {
                pinned.push(moved);
            }
        }
        pinned.len() != before
    }

    /// Drops the pins off `host`; whether there were any.
    fn release(&self, site: &str, host: &str) -> bool {
        let mut pins = self.by_site.lock();
        let Some(pinned) = pins.get_mut(site) else {
            return false;
        };
        let before = pinned.len();
        pinned.retain(|m| m.from != host);
        let changed = pinned.len() != before;
        if pinned.is_empty() {
            pins.remove(site);
        }
        changed
    }
}

impl Fleet {
    /// A host reported its site's ledger and whom it hears: the hosts it
    /// hears (and itself) are back, and the moves off hosts this control
    /// plane has not heard for the site's `hostLossAfter` either are
    /// pinned; the others are looked at again after that long.
    pub async fn pin_reported(
        self: &Arc<Self>,
        site: &str,
        status: &ClusterStatus,
    ) -> Result<(), StoreError> {
        let alive = |host: &String| *host == status.host || status.hears.contains(host);
        let mut changed = false;
        for host in status.hears.iter().chain([&status.host]) {
            changed |= self.pins.release(site, host);
        }
        let moved: Vec<Moved> = status.moved.iter().filter(|m| !alive(&m.from)).cloned().collect();
        let after = match self.store.site_state(site).await? {
            Some((_, state)) if !moved.is_empty() => state.host_loss_after(),
            _ => Default::default(),
        };
        let (ready, waiting): (Vec<Moved>, Vec<Moved>) = moved
            .into_iter()
            .partition(|m| self.unheard(site, &m.from, after));
        if self.pins.add(site, ready) {
            tracing::info!(%site, "placing the instances the site moved where it moved them");
            changed = true;
        }
        if changed {
            self.recompute_site(site).await?;
        }
        if !waiting.is_empty() {
            let fleet = self.clone();
            let site = site.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let ready: Vec<Moved> = waiting
                    .into_iter()
                    .filter(|m| fleet.unheard(&site, &m.from, after))
                    .collect();
                if fleet.pins.add(&site, ready)
                    && let Err(err) = fleet.recompute_site(&site).await
                {
                    tracing::warn!(%site, %err, "placing the instances the site moved");
                }
            });
        }
        Ok(())
    }

    /// Whether this control plane has not heard `host` for `after`.
    fn unheard(&self, site: &str, host: &str, after: std::time::Duration) -> bool {
        let (heard, _) = self.presence.contact(site, host);
        heard.is_none_or(|at| at.elapsed() >= after)
    }

    /// A host was heard again: what its site moved off it goes back to
    /// central placement.
    pub async fn host_returned(&self, site: &str, host: &str) -> Result<(), StoreError> {
        if self.pins.release(site, host) {
            tracing::info!(%site, %host, "a host the site lost is back: central placement again");
            self.recompute_site(site).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(instance: &str, from: &str, to: &str) -> Moved {
        Moved {
            workload: "shop/web".into(),
            instance: instance.into(),
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn pins_are_added_once_and_released_by_the_host_they_moved_off() {
        let pins = Pins::default();
        assert!(pins.add("s", [moved("web-0", "h1", "h2")]));
        assert!(
            !pins.add("s", [moved("web-0", "h1", "h2")]),
            "the same move twice is one pin"
        );
        assert!(pins.add("s", [moved("web-1", "h3", "h2")]));
        assert!(!pins.release("s", "h2"), "h2 is where they went, not where from");
        assert!(pins.release("s", "h1"));
        assert_eq!(pins.by_site.lock()["s"], [moved("web-1", "h3", "h2")]);
        assert!(pins.release("s", "h3"));
        assert!(!pins.by_site.lock().contains_key("s"));
    }
}
