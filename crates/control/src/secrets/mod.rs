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
//! An application owner's secrets have their data keys wrapped by a key of
//! that tenant (itself wrapped by the key-encryption key, in the
//! `tenant_keys` table), and so are its log lines and stream records at
//! rest (`seal_text`, `open_text`): deleting the tenant deletes its key.
//!
//! **Architecture Invariant:** no value, in clear or sealed, is logged at
//! any level; types that hold one print `<redacted>` or their keys only.

pub mod keyring;

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// The key id of a data key wrapped by a tenant's key: `tenant:NAME`.
const TENANT_WRAPPED: &str = "tenant:";

/// What a text sealed under a tenant's key starts with, before its
/// base64 (`nonce | ciphertext | tag`).
const SEALED_TEXT: &str = "outpost-sealed:v1:";

/// What a sealed log line of `application` is bound to.
pub fn log_context(application: &str) -> String {
    format!("outpost/log/{application}")
}

/// What a sealed record of a topic is bound to.
pub fn stream_context(application: &str, topic: &str) -> String {
    format!("outpost/stream/{application}/{topic}")
}

fn tenant_context(tenant: &str) -> Vec<u8> {
    format!("outpost/tenant/{tenant}").into_bytes()
}

pub struct Secrets {
    store: Arc<dyn Storage>,
    keyring: Keyring,
    /// Tenants' keys, unwrapped, as they are first needed.
    tenant_keys: parking_lot::RwLock<HashMap<String, Zeroizing<Vec<u8>>>>,
}

impl Secrets {
    pub fn new(store: Arc<dyn Storage>, keyring: Keyring) -> Secrets {
        Secrets {
            store,
            keyring,
            tenant_keys: Default::default(),
        }
    }

    /// The key of an application owner: made and stored on first use.
    async fn tenant_key(&self, tenant: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        if let Some(key) = self.tenant_keys.read().get(tenant) {
            return Ok(key.clone());
        }
        let context = tenant_context(tenant);
        let (key_id, wrapped) = match self.store.tenant_key(tenant).await? {
            Some(stored) => stored,
            None => {
                let key = keyring::random::<32>()?;
                let (key_id, wrapped) = self.keyring.wrap(key.as_ref(), &context)?;
                self.store.add_tenant_key(tenant, &key_id, &wrapped).await?
            }
        };
        let key = self
            .keyring
            .unwrap(&key_id, &wrapped, &context)
            .with_context(|| format!("opening the key of tenant {tenant:?}"))?;
        self.tenant_keys.write().insert(tenant.to_string(), key.clone());
        Ok(key)
    }

    /// Drops a deleted tenant's key from memory (the store deleted it).
    pub fn forget_tenant(&self, tenant: &str) {
        self.tenant_keys.write().remove(tenant);
    }

    /// `text` of `owner` (an object name) as stored: sealed under its
    /// tenant's key for an application owner's, as it is for the
    /// provider's. `context` binds it to where it belongs.
    pub async fn seal_text(&self, owner: &str, context: &str, text: &str) -> anyhow::Result<String> {
        let Some((tenant, _)) = owner.split_once('.') else {
            return Ok(text.to_string());
        };
        let key = self.tenant_key(tenant).await?;
        let sealed = keyring::encrypt(&keyring::data_cipher(&key)?, text.as_bytes(), context.as_bytes())?;
        Ok(format!("{SEALED_TEXT}{}", STANDARD.encode(sealed)))
    }

    /// A stored text in clear: sealed ones opened with their tenant's key,
    /// or `<sealed …>` when that key is gone (the tenant was deleted).
    pub async fn open_text(&self, owner: &str, context: &str, text: &str) -> String {
        let (Some(sealed), Some((tenant, _))) = (text.strip_prefix(SEALED_TEXT), owner.split_once('.'))
        else {
            return text.to_string();
        };
        let open = async {
            let key = self
                .tenant_key_if_any(tenant)
                .await?
                .context("its tenant's key is gone")?;
            let sealed = STANDARD.decode(sealed)?;
            let plain = keyring::decrypt(&keyring::data_cipher(&key)?, &sealed, context.as_bytes())?;
            anyhow::Ok(String::from_utf8_lossy(&plain).into_owned())
        };
        match open.await {
            Ok(text) => text,
            Err(err) => {
                tracing::warn!(%owner, err = format!("{err:#}"), "a sealed record does not open");
                format!("<sealed under the key of tenant {tenant}, which does not open it>")
            }
        }
    }

    /// A tenant's key, without making one.
    async fn tenant_key_if_any(&self, tenant: &str) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
        if self.tenant_keys.read().contains_key(tenant) || self.store.tenant_key(tenant).await?.is_some() {
            return self.tenant_key(tenant).await.map(Some);
        }
        Ok(None)
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
        let tenant_key = match name.split_once('.') {
            Some((tenant, _)) => Some((
                tenant,
                self.tenant_key(tenant)
                    .await
                    .map_err(|err| invalid(format!("{err:#}")))?,
            )),
            None => None,
        };
        let encrypt = |version: u64| {
            self.encrypt(
                &name,
                version,
                &values,
                tenant_key.as_ref().map(|(t, k)| (*t, k.as_slice())),
            )
            .map_err(|err| format!("{err:#}"))
        };
        Ok(self.store.add_secret_version(new, &encrypt, actor).await?)
    }

    /// Encrypts a version under a data key of its own, wrapped by its
    /// tenant's key (`tenant`: its name and key) or else by the key-encryption key.
    fn encrypt(
        &self,
        name: &str,
        version: u64,
        values: &Values,
        tenant: Option<(&str, &[u8])>,
    ) -> anyhow::Result<Encrypted> {
        let context = context(name, version);
        let data_key = keyring::random::<32>()?;
        let ciphertext = keyring::encrypt(
            &keyring::data_cipher(data_key.as_ref())?,
            &values.encode(),
            &context,
        )?;
        let (key_id, data_key) = match tenant {
            Some((tenant, key)) => (
                format!("{TENANT_WRAPPED}{tenant}"),
                keyring::encrypt(&keyring::data_cipher(key)?, data_key.as_ref(), &context)?,
            ),
            None => self.keyring.wrap(data_key.as_ref(), &context)?,
        };
        Ok(Encrypted {
            key_id,
            data_key,
            ciphertext,
        })
    }

    async fn decrypt(&self, stored: &StoredSecret) -> Result<Values, SecretError> {
        let context = context(&stored.name, stored.version);
        let tenant_key = match stored.encrypted.key_id.strip_prefix(TENANT_WRAPPED) {
            Some(tenant) => Some(
                self.tenant_key(tenant)
                    .await
                    .map_err(|source| SecretError::Decrypt {
                        name: stored.name.clone(),
                        version: stored.version,
                        source,
                    })?,
            ),
            None => None,
        };
        let open = || -> anyhow::Result<Values> {
            let encrypted = &stored.encrypted;
            let data_key = match &tenant_key {
                Some(key) => keyring::decrypt(&keyring::data_cipher(key)?, &encrypted.data_key, &context)?,
                None => self
                    .keyring
                    .unwrap(&encrypted.key_id, &encrypted.data_key, &context)?,
            };
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
            let values = self.decrypt(&stored).await?;
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
        let mut values = self.decrypt(&stored).await?;
        let value = values.0.remove(key).unwrap_or_default();
        Ok((stored.version, value))
    }

    /// Rotates the key-encryption key: a new key, every data key and
    /// tenant key re-wrapped (a data key a tenant's key wraps stays as it
    /// is), then the old keys dropped from the file. A running control
    /// plane keeps serving throughout.
    pub async fn rotate_key(&self) -> anyhow::Result<(String, usize)> {
        let id = self.keyring.add_key()?;
        let rewrap = |stored: &StoredSecret| {
            let context = context(&stored.name, stored.version);
            let encrypted = &stored.encrypted;
            if encrypted.key_id.starts_with(TENANT_WRAPPED) {
                return Ok((encrypted.key_id.clone(), encrypted.data_key.clone()));
            }
            self.keyring
                .unwrap(&encrypted.key_id, &encrypted.data_key, &context)
                .and_then(|data_key| self.keyring.wrap(&data_key, &context))
                .map_err(|err| format!("secret {:?} version {}: {err:#}", stored.name, stored.version))
        };
        let count = self.store.rewrap_secrets(&rewrap).await?;
        let rewrap_tenant = |tenant: &str, key_id: &str, wrapped: &[u8]| {
            let context = tenant_context(tenant);
            self.keyring
                .unwrap(key_id, wrapped, &context)
                .and_then(|key| self.keyring.wrap(&key, &context))
                .map_err(|err| format!("the key of tenant {tenant:?}: {err:#}"))
        };
        self.store.rewrap_tenant_keys(&rewrap_tenant).await?;
        if let Some(authority) = self.store.authority().await? {
            let files = self.open_authority(&authority)?;
            let resealed = self.seal_authority(&files, authority.generation + 1)?;
            self.store.save_authority(&resealed).await?;
        }
        self.keyring.drop_old_keys()?;
        Ok((id, count))
    }
}

/// What the CA files are bound to when sealed.
const AUTHORITY_CONTEXT: &[u8] = b"outpost/authority";

impl Secrets {
    /// Seals the CA files (by name) for the store, where replicas share
    /// them, under the key-encryption key every replica is given.
    pub fn seal_authority(
        &self,
        files: &BTreeMap<String, String>,
        generation: i64,
    ) -> anyhow::Result<crate::store::SealedAuthority> {
        let plain = Zeroizing::new(serde_json::to_vec(files)?);
        let (key_id, sealed) = self.keyring.wrap(&plain, AUTHORITY_CONTEXT)?;
        Ok(crate::store::SealedAuthority {
            key_id,
            sealed,
            generation,
        })
    }

    /// The CA files a replica stored.
    pub fn open_authority(
        &self,
        authority: &crate::store::SealedAuthority,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let plain = self
            .keyring
            .unwrap(&authority.key_id, &authority.sealed, AUTHORITY_CONTEXT)
            .with_context(|| {
                format!(
                    "the store's CA is sealed with key-encryption key {:?}, which this control plane's \
                     key file does not open: give every replica the same --secrets-key-file",
                    authority.key_id
                )
            })?;
        Ok(serde_json::from_slice(&plain)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqlStore;

    #[tokio::test]
    async fn a_tenants_texts_are_sealed_under_its_own_key_and_bound_to_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Storage> = Arc::new(SqlStore::open(&dir.path().join("outpost.db")).await.unwrap());
        let keyring = open_keyring(dir.path(), None).unwrap();
        let secrets = Secrets::new(store.clone(), keyring);
        let context = stream_context("acme.web", "receipts");

        // The provider's text is stored as it is; a tenant's is sealed.
        assert_eq!(
            secrets.seal_text("web", &context, "plain").await.unwrap(),
            "plain"
        );
        let sealed = secrets.seal_text("acme.web", &context, "total=12").await.unwrap();
        assert!(
            sealed.starts_with(SEALED_TEXT) && !sealed.contains("total"),
            "{sealed}"
        );
        assert_eq!(secrets.open_text("acme.web", &context, &sealed).await, "total=12");
        // Another tenant's key, or another place, does not open it.
        let elsewhere = stream_context("acme.web", "prices");
        assert!(
            secrets
                .open_text("acme.web", &elsewhere, &sealed)
                .await
                .starts_with("<sealed")
        );
        assert!(
            secrets
                .open_text("globex.web", &context, &sealed)
                .await
                .starts_with("<sealed")
        );

        // Deleting the tenant deletes its key: what it sealed stays sealed.
        let tenant = "apiVersion: outpost/v1\nkind: Tenant\nmetadata: {name: acme}\nspec: {sites: \"\"}\n";
        let documents = outpost_api::parse_documents("t.yaml", tenant).unwrap();
        store.apply(&documents, "test", Default::default()).await.unwrap();
        store
            .delete(outpost_api::manifest::Kind::Tenant, "acme", false)
            .await
            .unwrap();
        secrets.forget_tenant("acme");
        assert!(
            secrets
                .open_text("acme.web", &context, &sealed)
                .await
                .starts_with("<sealed")
        );
    }
}
