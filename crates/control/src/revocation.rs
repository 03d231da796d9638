//! The deny list of host certificates: serials that may never connect
//! again. Kept in the store and mirrored in memory, so that every TLS
//! connection and every gateway call can check it without a query, and
//! live sessions of a revoked host end at once.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::RwLock;

use tokio::sync::watch;

use crate::store::{RevokedCertificate, Storage, StoreError};

pub struct Revocations {
    serials: RwLock<HashSet<String>>,
    /// Bumped on every change, so sessions can check their own serial.
    changed: watch::Sender<u64>,
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
        Ok(Arc::new(Revocations {
            serials: RwLock::new(serials),
            changed: watch::channel(0).0,
        }))
    }

    pub fn is_revoked(&self, serial: &str) -> bool {
        self.serials.read().contains(serial)
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
        let revocations = Revocations {
            serials: RwLock::new(HashSet::new()),
            changed: watch::channel(0).0,
        };
        let told = revocations.subscribe();
        revocations.add(&[RevokedCertificate {
            serial: "0a1b".into(),
            site: "s".into(),
            host: "h".into(),
        }]);
        assert!(revocations.is_revoked("0a1b"));
        assert!(!revocations.is_revoked("0a1c"));
        assert!(told.has_changed().unwrap());
    }
}
