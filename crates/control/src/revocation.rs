//! The deny list of hosts: certificate serials that may never connect
//! again, and the hosts and sites blocked until an unblock. Kept in the
//! store and mirrored in memory, so that every TLS connection and every
//! gateway call can check it without a query, and live sessions of a
//! denied host end at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use outpost_api::access::{Block, BlockTarget};
use parking_lot::RwLock;

use tokio::sync::watch;

use crate::store::{RevokedCertificate, Storage, StoreError};

pub struct Revocations {
    serials: RwLock<HashSet<String>>,
    /// Blocked hosts (`SITE/HOST`) and sites, with whether to wipe them.
    blocks: RwLock<HashMap<(BlockTarget, String), bool>>,
    /// Bumped on every change, so sessions can check their own serial.
    changed: watch::Sender<u64>,
}

/// Why a host may not connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Revoked,
    /// Blocked; `wipe` when the host is to delete its secrets and stop its
    /// workloads.
    Blocked {
        wipe: bool,
    },
}

impl Denied {
    pub fn message(self) -> &'static str {
        match self {
            Denied::Revoked => "this host certificate is revoked",
            Denied::Blocked { .. } => "this host is blocked",
        }
    }
}

impl Revocations {
    /// The deny list as stored.
    pub async fn load(store: &dyn Storage) -> Result<Arc<Revocations>, StoreError> {
        let serials = store
            .revoked_certificates()
            .await?
            .into_iter()
            .map(|revoked| revoked.serial)
            .collect();
        let blocks = store
            .blocks()
            .await?
            .into_iter()
            .map(|block| ((block.target, block.name), block.wipe))
            .collect();
        Ok(Arc::new(Revocations {
            serials: RwLock::new(serials),
            blocks: RwLock::new(blocks),
            changed: watch::channel(0).0,
        }))
    }

    /// Reads the deny list again (another replica changed it), and tells
    /// sessions.
    pub async fn reload(&self, store: &dyn Storage) -> Result<(), StoreError> {
        let stored = Revocations::load(store).await?;
        *self.serials.write() = std::mem::take(&mut *stored.serials.write());
        *self.blocks.write() = std::mem::take(&mut *stored.blocks.write());
        self.changed.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Whether a host with this certificate may not connect, and why.
    pub fn denied(&self, site: &str, host: &str, serial: &str) -> Option<Denied> {
        if self.serials.read().contains(serial) {
            return Some(Denied::Revoked);
        }
        let blocks = self.blocks.read();
        let wipe = blocks
            .get(&(BlockTarget::Host, format!("{site}/{host}")))
            .or_else(|| blocks.get(&(BlockTarget::Site, site.to_string())))?;
        Some(Denied::Blocked { wipe: *wipe })
    }

    /// Whether an application owner is blocked: its tokens stop working.
    pub fn tenant_blocked(&self, tenant: &str) -> bool {
        self.blocks
            .read()
            .contains_key(&(BlockTarget::Tenant, tenant.to_string()))
    }

    /// Adds a block the store has just recorded, and tells sessions.
    pub fn block(&self, block: &Block) {
        self.blocks
            .write()
            .insert((block.target, block.name.clone()), block.wipe);
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// Removes a block the store has just lifted.
    pub fn unblock(&self, block: &Block) {
        self.blocks.write().remove(&(block.target, block.name.clone()));
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// Adds certificates the store has just revoked, and tells sessions.
    pub fn add(&self, revoked: &[RevokedCertificate]) {
        if revoked.is_empty() {
            return;
        }
        let mut serials = self.serials.write();
        for certificate in revoked {
            tracing::warn!(site = %certificate.site, host = %certificate.host, serial = %certificate.serial, "host certificate revoked");
            serials.insert(certificate.serial.clone());
        }
        drop(serials);
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// Changes whenever a certificate is revoked.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_serials_are_revoked_and_subscribers_told() {
        let revocations = empty();
        let told = revocations.subscribe();
        revocations.add(&[RevokedCertificate {
            serial: "0a1b".into(),
            site: "s".into(),
            host: "h".into(),
        }]);
        assert_eq!(revocations.denied("s", "h", "0a1b"), Some(Denied::Revoked));
        assert_eq!(revocations.denied("s", "h", "0a1c"), None);
        assert!(told.has_changed().unwrap());
    }

    fn empty() -> Revocations {
        Revocations {
            serials: RwLock::new(HashSet::new()),
            blocks: RwLock::new(HashMap::new()),
            changed: watch::channel(0).0,
        }
    }

    #[test]
    fn a_blocked_host_or_site_is_denied_until_unblocked() {
        let revocations = empty();
        let mut told = revocations.subscribe();
        let block = |target, name: &str, wipe| Block {
            target,
            name: name.into(),
            wipe,
            blocked_at: String::new(),
            blocked_by: String::new(),
        };
        revocations.block(&block(BlockTarget::Host, "s/h1", true));
        assert!(told.has_changed().unwrap());
        told.mark_unchanged();
        assert_eq!(
            revocations.denied("s", "h1", "1"),
            Some(Denied::Blocked { wipe: true })
        );
        assert_eq!(revocations.denied("s", "h2", "2"), None);
        assert_eq!(revocations.denied("s2", "h1", "3"), None);
        revocations.block(&block(BlockTarget::Site, "s2", false));
        assert_eq!(
            revocations.denied("s2", "any", "4"),
            Some(Denied::Blocked { wipe: false })
        );
        revocations.unblock(&block(BlockTarget::Host, "s/h1", false));
        assert_eq!(revocations.denied("s", "h1", "1"), None);
        assert!(told.has_changed().unwrap());
    }
}
