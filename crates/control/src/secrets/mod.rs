//! Secrets at the control plane: envelope encryption at rest, and sealing
//! to the host that receives them.
//!
//! Each version's values are encrypted (AES-256-GCM) with a data key of its
//! own; the data key is wrapped by the key-encryption key (`keyring.rs`),
//! which never enters the database. Both are bound to `NAME/VERSION`, so a
//! row cannot be passed off as another. Values are in clear only in memory,
//! for the moment it takes to seal them for one host
//! (`outpost_proto::seal`) or to answer an audited reveal.
//!
//! **Architecture Invariant:** no value, in clear or sealed, is logged at
//! any level; types that hold one print `<redacted>` or their keys only.

pub mod keyring;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use outpost_api::manifest::ObjectName;
use outpost_api::secret::{self, MAX_SECRET_BYTES, MAX_SECRET_KEYS, SecretPolicy, SecretSetRequest};
use outpost_api::selector::Selector;
use outpost_proto::seal::{self, Values};
use outpost_proto::v1::SealedSecret;
use zeroize::Zeroizing;

use crate::fleet::Inputs;
use crate::store::{Encrypted, NewSecretVersion, Storage, StoreError, StoredSecret};
pub use keyring::Keyring;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The request is wrong; nothing was stored.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key file does not open what the database holds.
    #[error("secret {name:?} version {version} cannot be decrypted")]
    Decrypt {
        name: String,
        version: u64,
        #[source]
        source: anyhow::Error,
    },
    #[error("sealing secret {name:?} for a host failed")]
    Seal {
        name: String,
        #[source]
        source: seal::SealError,
    },
}

fn context(name: &str, version: u64) -> Vec<u8> {
    format!("outpost/secret/{name}/{version}").into_bytes()
}

pub struct Secrets {
    store: Arc<dyn Storage>,
    keyring: Keyring,
}

impl Secrets {
    pub fn new(store: Arc<dyn Storage>, keyring: Keyring) -> Secrets {
        Secrets { store, keyring }
    }

    /// Checks a set request, and stores the values as the secret's next
    /// version. `inputs` are what sites run now: a narrower `--sites` or
    /// `--images` that would take the secret from a deployment using it is
    /// refused.
    pub async fn set(
        &self,
        request: SecretSetRequest,
        inputs: &Inputs,
        actor: &str,
    ) -> Result<u64, SecretError> {
        let invalid = |message: String| SecretError::Invalid(message);
        let name = request
            .name
            .parse::<ObjectName>()
            .map_err(|err| invalid(format!("secret name: {err}")))?
            .to_string();
        if request.values.is_empty() {
            return Err(invalid("a secret needs at least one KEY=VALUE".to_string()));
        }
        if request.values.len() > MAX_SECRET_KEYS {
            return Err(invalid(format!(
                "secret {name:?} has {} keys; at most {MAX_SECRET_KEYS} fit",
                request.values.len()
            )));
        }
        let mut values = Values::default();
        for (key, encoded) in &request.values {
            secret::check_secret_key(key).map_err(invalid)?;
            let value = Zeroizing::new(
                STANDARD
                    .decode(encoded)
                    .map_err(|_| invalid(format!("the value of key {key:?} is not base64")))?,
            );
            values.0.insert(key.clone(), value);
        }
        if values.size() > MAX_SECRET_BYTES {
            return Err(invalid(format!(
                "secret {name:?} holds {} bytes; at most {MAX_SECRET_BYTES} (512 KiB) fit",
                values.size()
            )));
        }
        let previous = match self.store.secret(&name, None).await {
            Ok(previous) => Some(previous),
            Err(StoreError::SecretNotFound { .. }) => None,
            Err(err) => return Err(err.into()),
        };
        let sites = match request.sites {
            Some(text) if text.trim().is_empty() || text.trim() == "*" => None,
            Some(text) => {
                text.parse::<Selector>()
                    .map_err(|err| invalid(format!("--sites: {err}")))?;
                Some(text)
            }
            None => previous.as_ref().and_then(|p| p.sites.clone()),
        };
        let images = match request.images {
            Some(images) => {
                if let Some(bad) = images
                    .iter()
                    .find(|i| i.is_empty() || i.chars().any(char::is_whitespace))
                {
                    return Err(invalid(format!("--images: {bad:?} is not an image pattern")));
                }
                images
            }
            None => previous.as_ref().map(|p| p.images.clone()).unwrap_or_default(),
        };
        let policy = SecretPolicy {
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            keys: values.0.keys().cloned().collect(),
            sites: sites
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|_| invalid("--sites".into()))?,
            images: images.clone(),
        };
        if let Some(problem) = still_allowed(&name, &policy, inputs) {
            return Err(invalid(problem));
        }
        let new = NewSecretVersion {
            name: &name,
            keys: values.0.keys().cloned().collect(),
            sites,
            images,
            size: values.size() as u64,
        };
        let encrypt = |version: u64| {
            self.encrypt(&name, version, &values)
                .map_err(|err| format!("{err:#}"))
        };
        Ok(self.store.add_secret_version(new, &encrypt, actor).await?)
    }

    fn encrypt(&self, name: &str, version: u64, values: &Values) -> anyhow::Result<Encrypted> {
        let context = context(name, version);
        let data_key = keyring::random::<32>()?;
        let ciphertext = keyring::encrypt(
            &keyring::data_cipher(data_key.as_ref())?,
            &values.encode(),
            &context,
        )?;
        let (key_id, data_key) = self.keyring.wrap(data_key.as_ref(), &context)?;
        Ok(Encrypted {
            key_id,
            data_key,
            ciphertext,
        })
    }

    fn decrypt(&self, stored: &StoredSecret) -> Result<Values, SecretError> {
        let context = context(&stored.name, stored.version);
        let open = || -> anyhow::Result<Values> {
            let encrypted = &stored.encrypted;
            let data_key = self
                .keyring
                .unwrap(&encrypted.key_id, &encrypted.data_key, &context)?;
            let plain = keyring::decrypt(&keyring::data_cipher(&data_key)?, &encrypted.ciphertext, &context)?;
            Values::decode(&plain).context("the decrypted values are not readable")
        };
        open().map_err(|source| SecretError::Decrypt {
            name: stored.name.clone(),
            version: stored.version,
            source,
        })
    }

    /// The versions `wanted`, each sealed for the host whose public key is
    /// `host_key`. A version that is gone is skipped: the site's next
    /// state refers to a newer one.
    pub async fn seal(
        &self,
        host_key: &[u8],
        wanted: &BTreeSet<(String, u64)>,
    ) -> Result<Vec<SealedSecret>, SecretError> {
        let mut sealed = Vec::with_capacity(wanted.len());
        for (name, version) in wanted {
            let stored = match self.store.secret(name, Some(*version)).await {
                Ok(stored) => stored,
                Err(StoreError::SecretNotFound { .. }) => {
                    tracing::warn!(secret = %name, version, "a site refers to a secret version that is gone");
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            let values = self.decrypt(&stored)?;
            let bytes = seal::seal(host_key, &seal::context(name, *version), &values).map_err(|source| {
                SecretError::Seal {
                    name: name.clone(),
                    source,
                }
            })?;
            sealed.push(SealedSecret {
                name: name.clone(),
                version: *version,
                sealed: bytes,
            });
        }
        Ok(sealed)
    }

    /// One value of the newest version (the API's policy layer writes the
    /// reveal to the audit trail before the value leaves).
    pub async fn reveal(
        &self,
        name: &str,
        key: &str,
        actor: &str,
    ) -> Result<(u64, Zeroizing<Vec<u8>>), SecretError> {
        let stored = self.store.secret(name, None).await?;
        if !stored.keys.iter().any(|k| k == key) {
            return Err(SecretError::Invalid(format!(
                "secret {name:?} has no key {key:?} (it has {})",
                stored.keys.join(", ")
            )));
        }
        tracing::info!(%actor, secret = %name, %key, version = stored.version, "secret revealed");
        let mut values = self.decrypt(&stored)?;
        let value = values.0.remove(key).unwrap_or_default();
        Ok((stored.version, value))
    }

    /// Rotates the key-encryption key: a new key, every data key re-wrapped
    /// in one transaction, then the old keys dropped from the file. A
    /// running control plane keeps serving throughout.
    pub async fn rotate_key(&self) -> anyhow::Result<(String, usize)> {
        let id = self.keyring.add_key()?;
        let rewrap = |stored: &StoredSecret| {
            let context = context(&stored.name, stored.version);
            let encrypted = &stored.encrypted;
            self.keyring
                .unwrap(&encrypted.key_id, &encrypted.data_key, &context)
                .and_then(|data_key| self.keyring.wrap(&data_key, &context))
                .map_err(|err| format!("secret {:?} version {}: {err:#}", stored.name, stored.version))
        };
        let count = self.store.rewrap_secrets(&rewrap).await?;
        self.keyring.drop_old_keys()?;
        Ok((id, count))
    }
}

/// Why a deployment that uses `name` would lose it (a key it uses, a site
/// it runs on, an image it runs) under `policy`, if one would.
fn still_allowed(name: &str, policy: &SecretPolicy, inputs: &Inputs) -> Option<String> {
    let mut policies = inputs.secrets.clone();
    policies.insert(name.to_string(), policy.clone());
    for (deployment, spec) in inputs.deployments_using(name) {
        let deployment_name = deployment.metadata.name.as_str();
        let problem = secret::reference_problems(spec, &policies)
            .into_iter()
            .map(|(_, reason)| reason)
            .next()
            .or_else(|| {
                inputs
                    .sites
                    .iter()
                    .filter(|s| deployment.spec.sites.matches(&s.metadata.labels))
                    .find_map(|site| {
                        secret::site_refusal(
                            spec,
                            site.metadata.name.as_str(),
                            &site.metadata.labels,
                            &policies,
                        )
                    })
            });
        if let Some(reason) = problem {
            return Some(format!(
                "deployment {deployment_name:?} uses secret {name:?}, and with this version {reason}"
            ));
        }
    }
    None
}

/// Opens the key file (`--secrets-key-file`, or `secrets.key` in the data
/// directory).
pub fn open_keyring(data_dir: &Path, key_file: Option<&Path>) -> anyhow::Result<Keyring> {
    let path = key_file.map_or_else(|| data_dir.join(keyring::KEY_FILE), Path::to_path_buf);
    Keyring::open(&path)
}
