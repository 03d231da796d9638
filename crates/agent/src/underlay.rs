//! The site's underlay keys: what a host presents to, and accepts from, the
//! other hosts of its site (`crate::peers`, and so the site network).
//!
//! Each host makes its own key per key epoch and has the control plane
//! certify it (`AgentGateway/UnderlayCertificate`): the certificate names
//! the site, the host and the epoch (`outpost_proto::identity::underlay_uri`).
//! The desired state says which epochs the site's hosts accept
//! (`SiteState::key_epochs`, oldest first). A host presents the oldest
//! accepted epoch it holds a key of, and asks for a key of the newest as
//! soon as it sees it. So during a rotation (two epochs accepted) every
//! host keeps presenting the old key, which all accept, while each gets a
//! new one; once every host has one, the control plane drops the old epoch
//! and the hosts present the new keys, which all accept already: no
//! connection fails. A host that was away asks for a key of the current
//! epoch when it is back. A host the control plane no longer knows gets no
//! new key, and its old one stops working when its epoch is dropped.
//!
//! Keys are files in the data directory (`underlay-EPOCH.key`, mode 0600,
//! and `underlay-EPOCH.crt`); those of epochs no longer accepted are
//! deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use outpost_api::workload::SiteState;
use outpost_files::write_private;
use outpost_proto::v1::UnderlayRequest;
use outpost_proto::v1::agent_gateway_client::AgentGatewayClient;
use parking_lot::RwLock;
use rcgen::{CertificateParams, KeyPair};
use rustls::ClientConfig;
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// How long a host waits before it asks again for a key it was refused or
/// could not get.
const RETRY: Duration = Duration::from_secs(5);

/// How long a host still accepts an epoch its site retired at the end of
/// a rotation: the other hosts learn of the retirement a moment apart, and
/// until they do they present keys of it.
const GRACE: Duration = Duration::from_secs(30);

pub struct Keys {
    dir: PathBuf,
    held: RwLock<BTreeMap<u64, Arc<CertifiedKey>>>,
    accepted: RwLock<Vec<u64>>,
    /// Epochs retired at the end of a rotation, accepted until then.
    graced: RwLock<Vec<(u64, std::time::Instant)>>,
    /// Epochs dropped at once (`--at-once`): connections on them end.
    revoked: watch::Sender<Vec<u64>>,
}

fn paths(dir: &Path, epoch: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("underlay-{epoch}.key")),
        dir.join(format!("underlay-{epoch}.crt")),
    )
}

impl Keys {
    /// The keys this host holds, from `data_dir`.
    pub fn load(data_dir: &Path) -> Result<Keys> {
        let mut held = BTreeMap::new();
        let entries =
            std::fs::read_dir(data_dir).with_context(|| format!("reading {}", data_dir.display()))?;
        for name in entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
        {
            let Some(epoch) = name
                .strip_prefix("underlay-")
                .and_then(|rest| rest.strip_suffix(".crt"))
                .and_then(|epoch| epoch.parse::<u64>().ok())
            else {
                continue;
            };
            let (key, cert) = paths(data_dir, epoch);
            let read = |path: &Path| {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
            };
            let key = zeroize::Zeroizing::new(read(&key)?);
            held.insert(
                epoch,
                crate::tls::certified(&read(&cert)?, &key, "an underlay key")?,
            );
        }
        Ok(Keys {
            dir: data_dir.to_path_buf(),
            held: RwLock::new(held),
            accepted: RwLock::new(Vec::new()),
            graced: RwLock::new(Vec::new()),
            revoked: watch::channel(Vec::new()).0,
        })
    }

    /// The epochs the site's hosts accept, oldest first (none known yet:
    /// empty).
    pub fn accepted(&self) -> Vec<u64> {
        self.accepted.read().clone()
    }

    /// The key to present: the oldest accepted epoch held, else the newest
    /// held.
    pub fn presented(&self) -> Option<Arc<CertifiedKey>> {
        let held = self.held.read();
        let accepted = self.accepted.read();
        accepted
            .iter()
            .find_map(|epoch| held.get(epoch))
            .or_else(|| held.values().next_back())
            .cloned()
    }

    fn holds(&self, epoch: u64) -> bool {
        self.held.read().contains_key(&epoch)
    }

    /// Whether a peer's key of `epoch` is accepted now.
    pub fn accepts(&self, epoch: u64) -> bool {
        self.accepted.read().contains(&epoch)
            || self
                .graced
                .read()
                .iter()
                .any(|(e, until)| *e == epoch && std::time::Instant::now() < *until)
    }

    /// Tells when an epoch is dropped at once (its relays end).
    pub fn revoked(&self) -> watch::Receiver<Vec<u64>> {
        self.revoked.subscribe()
    }

    /// Takes the site's accepted epochs; forgets keys of older ones.
    /// Whether they changed. An epoch dropped while the newest stays (the
    /// end of a rotation) is still accepted for `GRACE`; one dropped with
    /// a new newest (a rotation `--at-once`) is revoked.
    pub fn accept(&self, epochs: &[u64]) -> bool {
        let before = self.accepted.read().clone();
        if before == epochs {
            return false;
        }
        let dropped = before.iter().filter(|e| !epochs.contains(e)).copied();
        if !before.is_empty() && before.last() == epochs.last() {
            let until = std::time::Instant::now() + GRACE;
            self.graced.write().extend(dropped.map(|e| (e, until)));
        } else {
            let dropped: Vec<u64> = dropped.collect();
            self.graced.write().clear();
            if !dropped.is_empty() {
                self.revoked.send_modify(|revoked| revoked.extend(dropped));
            }
        }
        *self.accepted.write() = epochs.to_vec();
        if let Some(oldest) = epochs.first() {
            let dropped: Vec<u64> = self.held.read().keys().filter(|e| *e < oldest).copied().collect();
            for epoch in dropped {
                self.held.write().remove(&epoch);
                let (key, cert) = paths(&self.dir, epoch);
                let _ = std::fs::remove_file(key);
                let _ = std::fs::remove_file(cert);
            }
        }
        true
    }

    /// Makes a key of `epoch` and has the control plane at `server`
    /// certify it.
    async fn obtain(&self, epoch: u64, server: &str, tls: Arc<ClientConfig>) -> Result<()> {
        let key = KeyPair::generate().context("generating an underlay key")?;
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .context("making the certificate request")?;
        let channel = crate::tls::channel(server, tls).await?;
        let reply = AgentGatewayClient::new(channel)
            .underlay_certificate(UnderlayRequest { csr_pem: csr, epoch })
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .into_inner();
        let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
        let certified = crate::tls::certified(&reply.cert_pem, &key_pem, "an underlay key")?;
        let (key_path, cert_path) = paths(&self.dir, epoch);
        write_private(&key_path, key_pem.as_bytes())?;
        write_private(&cert_path, reply.cert_pem.as_bytes())?;
        self.held.write().insert(epoch, certified);
        Ok(())
    }
}

/// Follows the site's accepted epochs in `desired` and gets a key of the
/// newest, through the control plane at `server`, until `shutdown`.
/// `changed` runs whenever the accepted epochs change (connections kept
/// on older keys are dropped).
pub async fn keep(
    keys: Arc<Keys>,
    mut desired: watch::Receiver<(u64, SiteState)>,
    (server, tls): (String, Arc<ClientConfig>),
    changed: impl Fn() + Send + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let epochs = desired.borrow_and_update().1.key_epochs.clone();
        if keys.accept(&epochs) {
            tracing::info!(?epochs, "the site's accepted underlay key epochs");
            changed();
        }
        let mut retry = false;
        if let Some(newest) = epochs.last().copied().filter(|e| !keys.holds(*e)) {
            match keys.obtain(newest, &server, tls.clone()).await {
                Ok(()) => tracing::info!(epoch = newest, "holding an underlay key"),
                Err(err) => {
                    tracing::warn!(
                        epoch = newest,
                        err = format!("{err:#}"),
                        "getting an underlay key; will retry"
                    );
                    retry = true;
                }
            }
        }
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RETRY), if retry => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key of `epoch` certified by a throwaway CA, as the files hold it.
    fn write_key(dir: &Path, epoch: u64) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let (key_path, cert_path) = paths(dir, epoch);
        write_private(&key_path, key.serialize_pem().as_bytes()).unwrap();
        write_private(&cert_path, cert.pem().as_bytes()).unwrap();
    }

    #[test]
    fn a_host_presents_the_oldest_accepted_key_and_forgets_older_ones() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        for epoch in [1, 2, 3] {
            write_key(dir.path(), epoch);
        }
        let keys = Keys::load(dir.path()).unwrap();
        let presented = |keys: &Keys| {
            let key = keys.presented().unwrap();
            let held = keys.held.read();
            *held.iter().find(|(_, k)| Arc::ptr_eq(k, &key)).unwrap().0
        };
        assert_eq!(presented(&keys), 3, "nothing accepted known yet: the newest");
        assert!(keys.accept(&[2, 3]));
        assert!(!keys.accept(&[2, 3]), "no change");
        assert_eq!(presented(&keys), 2, "a rotation to 3 under way: the old key");
        assert!(!paths(dir.path(), 1).0.exists(), "epoch 1's key is deleted");
        assert!(keys.accept(&[3]));
        assert_eq!(presented(&keys), 3);
        assert_eq!(Keys::load(dir.path()).unwrap().held.read().len(), 1);
        assert!(
            keys.accepts(2),
            "retired at the end of a rotation: accepted a while"
        );
        assert!(!keys.accepts(1));
        assert!(keys.revoked().borrow().is_empty());
        assert!(keys.accept(&[4]), "a rotation at once");
        assert!(!keys.accepts(3) && !keys.accepts(2));
        assert_eq!(*keys.revoked().borrow(), [3]);
        assert!(
            keys.presented().is_none(),
            "no key of epoch 4 yet, none of 3 kept"
        );
    }
}
