//! Secrets as the contract sees them: how containers refer to them, the
//! rule that says where a secret may go (`SecretPolicy`: its sites and
//! its images), and the REST bodies of `/api/v1/secrets`. Values never
//! pass through here except as the bytes of a set or a reveal.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diagnostic::Path;
use crate::manifest::{ApplicationSpec, Container, EnvValue};
use crate::selector::Selector;

/// The most a secret's values may hold together (the same bound as an
/// object's size).
pub const MAX_SECRET_BYTES: usize = crate::limits::MAX_OBJECT_BYTES;
/// The most keys one secret may hold.
pub const MAX_SECRET_KEYS: usize = 256;

/// A key of a secret: it becomes a file name, so letters, digits, '.', '_'
/// and '-', not starting with '.', at most 253 characters.
pub fn check_secret_key(key: &str) -> Result<(), String> {
    let valid = !key.is_empty()
        && key.len() <= 253
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a secret key (letters, digits, '.', '_' and '-', not starting with '.', at most 253 characters)"
        ))
    }
}

/// Whether `image` is one that `pattern` allows. `*` stands for any run of
/// characters; a pattern without a tag or digest allows every tag and
/// digest of its repository.
pub fn image_matches(pattern: &str, image: &str) -> bool {
    let repository = crate::workload::repository(image);
    glob(pattern.as_bytes(), image.as_bytes()) || glob(pattern.as_bytes(), repository.as_bytes())
}

/// `*` matches any run of bytes; everything else matches itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // The classic two-pointer match with one backtrack point: linear in
    // practice, and never recursive.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

/// Where the newest version of a secret may go, and what it holds: the
/// compile step and the apply's checks need this much, never the values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretPolicy {
    pub version: u64,
    pub keys: BTreeSet<String>,
    /// The sites it may ever reach; `None`: every site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<Selector>,
    /// The images that may receive it; empty: every image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

impl SecretPolicy {
    /// Why `image` may not receive this secret, if it may not.
    pub fn refuses_image(&self, name: &str, image: &str) -> Option<String> {
        if self.images.is_empty() || self.images.iter().any(|p| image_matches(p, image)) {
            return None;
        }
        Some(format!(
            "secret {name:?} may not go to image {image:?} (it allows {})",
            self.images.join(", ")
        ))
    }

    /// Why a site with these labels may not receive this secret, if it may not.
    pub fn refuses_site(&self, name: &str, site: &str, labels: &BTreeMap<String, String>) -> Option<String> {
        let selector = self.sites.as_ref()?;
        if selector.matches(labels) {
            return None;
        }
        Some(format!(
            "secret {name:?} may not reach site {site:?} (its sites: {selector})"
        ))
    }
}

/// One reference from a container to a secret: an env value, a whole
/// secret as a directory, or one key as a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretUse<'a> {
    pub secret: &'a str,
    pub key: Option<&'a str>,
    /// Where it sits in the container, for diagnostics: `env.NAME` or
    /// `secrets[N]`.
    pub field: UseField<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseField<'a> {
    Env(&'a str),
    File(usize),
    /// `imagePullSecret` (key `config.json`).
    PullSecret,
}

/// The key of a pull secret: a Docker `config.json`.
pub const PULL_SECRET_KEY: &str = "config.json";

impl Container {
    /// Every reference this container makes to a secret, env first.
    pub fn secret_uses(&self) -> impl Iterator<Item = SecretUse<'_>> {
        let env = self.env.iter().filter_map(|(name, value)| match value {
            EnvValue::Secret(r) => Some(SecretUse {
                secret: r.secret.as_str(),
                key: Some(r.key.as_str()),
                field: UseField::Env(name),
            }),
            EnvValue::Text(_) => None,
        });
        let files = self.secrets.iter().enumerate().map(|(i, mount)| SecretUse {
            secret: mount.secret.as_str(),
            key: mount.key.as_ref().map(|k| k.as_str()),
            field: UseField::File(i),
        });
        let pull = self.image_pull_secret.iter().map(|name| SecretUse {
            secret: name.as_str(),
            key: Some(PULL_SECRET_KEY),
            field: UseField::PullSecret,
        });
        env.chain(files).chain(pull)
    }

    /// Whether a new version of `secret` must replace this container: an
    /// env value cannot change in a running process, and a file's
    /// `onSecretChange` is `restart` unless it says otherwise.
    pub fn restarts_for(&self, secret: &str) -> bool {
        self.secret_uses().any(|u| {
            u.secret == secret
                && match u.field {
                    UseField::Env(_) => true,
                    UseField::File(_) => self
                        .on_secret_change
                        .as_ref()
                        .is_none_or(|change| change.as_str() == "restart"),
                    // New credentials serve the next pull; nothing restarts.
                    UseField::PullSecret => false,
                }
        })
    }
}

/// What is wrong with an application's references to secrets, as of the
/// stored secrets: a secret or key that does not exist, or an image the
/// secret does not allow. Each problem comes with its field path.
pub fn reference_problems(
    spec: &ApplicationSpec,
    secrets: &BTreeMap<String, SecretPolicy>,
) -> Vec<(Path, String)> {
    let mut problems = Vec::new();
    let spec_path = Path::root().field("spec");
    let services = spec_path.field("services");
    for (i, service) in spec.services.iter().enumerate() {
        let containers = services.index(i).field("containers");
        for (j, container) in service.containers.iter().enumerate() {
            let container_path = containers.index(j);
            let application_pull = spec
                .image_pull_secret
                .iter()
                .filter(|_| container.image_pull_secret.is_none())
                .map(|name| {
                    let used = SecretUse {
                        secret: name.as_str(),
                        key: Some(PULL_SECRET_KEY),
                        field: UseField::PullSecret,
                    };
                    (used, spec_path.field("imagePullSecret"))
                });
            let uses = container.secret_uses().map(|used| {
                let at = match used.field {
                    UseField::Env(name) => container_path.field("env").field(name),
                    UseField::File(k) => container_path.field("secrets").index(k),
                    UseField::PullSecret => container_path.field("imagePullSecret"),
                };
                (used, at)
            });
            for (used, at) in uses.chain(application_pull) {
                // A pull secret is a name alone; the others are maps.
                let (secret_at, key_at) = match used.field {
                    UseField::PullSecret => (at.clone(), at.clone()),
                    _ => (at.field("secret"), at.field("key")),
                };
                let Some(policy) = secrets.get(used.secret) else {
                    problems.push((
                        secret_at,
                        format!(
                            "secret {:?} does not exist (create it with `outpost secret set`)",
                            used.secret
                        ),
                    ));
                    continue;
                };
                if let Some(key) = used.key
                    && !policy.keys.contains(key)
                {
                    let keys: Vec<&str> = policy.keys.iter().map(String::as_str).collect();
                    problems.push((
                        key_at,
                        format!(
                            "secret {:?} has no key {key:?} (it has {})",
                            used.secret,
                            keys.join(", ")
                        ),
                    ));
                }
                if let Some(reason) = policy.refuses_image(used.secret, container.image.as_str()) {
                    problems.push((container_path.field("image"), reason));
                }
            }
        }
    }
    problems.sort_by_key(|(path, _)| path.to_string());
    problems.dedup();
    problems
}

/// The first secret an application refers to that may not reach a site
/// with these labels, and why.
pub fn site_refusal(
    spec: &ApplicationSpec,
    site: &str,
    labels: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, SecretPolicy>,
) -> Option<String> {
    spec.secret_uses()
        .find_map(|used| secrets.get(used.secret)?.refuses_site(used.secret, site, labels))
}

impl ApplicationSpec {
    /// Every reference it and its containers make to a secret.
    pub fn secret_uses(&self) -> impl Iterator<Item = SecretUse<'_>> {
        let pull = self.image_pull_secret.iter().map(|name| SecretUse {
            secret: name.as_str(),
            key: Some(PULL_SECRET_KEY),
            field: UseField::PullSecret,
        });
        self.services
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(Container::secret_uses)
            .chain(pull)
    }

    /// The spec with the application's pull secret given to every container
    /// that names none: what sites compile from.
    pub fn with_pull_secrets(mut self) -> ApplicationSpec {
        if let Some(name) = self.image_pull_secret.take() {
            for container in self.services.iter_mut().flat_map(|s| &mut s.containers) {
                container.image_pull_secret.get_or_insert_with(|| name.clone());
            }
        }
        self
    }

    /// Whether a container of it refers to `secret`.
    pub fn uses_secret(&self, secret: &str) -> bool {
        self.secret_uses().any(|u| u.secret == secret)
    }
}

/// What a rollout moves a site between when its application uses
/// secrets: the application's version and the version of each secret, as
/// one label (`2.0.0 (secrets pos-db@3, pos-tls@1)`), so that a new secret
/// version rolls out under the deployment's policy like a new application
/// version, and rolls back with it. Without secrets it is the version.
pub fn release(version: &str, secrets: &BTreeMap<String, u64>) -> String {
    if secrets.is_empty() {
        return version.to_string();
    }
    let pinned: Vec<String> = secrets.iter().map(|(name, v)| format!("{name}@{v}")).collect();
    format!("{version} (secrets {})", pinned.join(", "))
}

/// The application version and secret versions of a `release` label.
/// Versions hold no spaces, so a plain version reads back as itself.
pub fn split_release(label: &str) -> (&str, BTreeMap<String, u64>) {
    let Some((version, rest)) = label.split_once(" (secrets ") else {
        return (label, BTreeMap::new());
    };
    let secrets = rest
        .trim_end_matches(')')
        .split(", ")
        .filter_map(|pinned| {
            let (name, v) = pinned.split_once('@')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect();
    (version, secrets)
}

/// `POST /api/v1/secrets`: a new version of a secret. Values are base64;
/// `Debug` prints their keys only.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSetRequest {
    pub name: String,
    pub values: BTreeMap<String, String>,
    /// The sites it may reach; absent: as the previous version (every
    /// site for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<String>,
    /// The images that may receive it; absent: as the previous version
    /// (every image for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
}

impl std::fmt::Debug for SecretSetRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSetRequest")
            .field("name", &self.name)
            .field("values", &self.values.keys().collect::<Vec<_>>())
            .field("sites", &self.sites)
            .field("images", &self.images)
            .finish()
    }
}

/// One secret as `get secrets` lists it: never a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSummary {
    pub name: String,
    pub version: u64,
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    /// How many sites' desired state refers to each version.
    pub sites_by_version: BTreeMap<u64, usize>,
}

/// `GET /api/v1/secrets/{name}`: the summary and who holds what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretDetail {
    pub summary: SecretSummary,
    /// The deployments whose applications refer to it.
    pub deployments: Vec<String>,
    pub holders: Vec<SecretHolder>,
}

/// A host whose site's desired state refers to a version of the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretHolder {
    pub site: String,
    pub host: String,
    pub version: u64,
    /// Whether the host has acknowledged the revision that carries it.
    pub delivered: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretList {
    pub items: Vec<SecretSummary>,
}

/// `POST /api/v1/secrets/{name}/reveal`: one value, audited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevealRequest {
    pub key: String,
}

/// The revealed value, base64.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevealResponse {
    pub version: u64,
    pub value: String,
}

impl std::fmt::Debug for RevealResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevealResponse")
            .field("version", &self.version)
            .field("value", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_patterns() {
        assert!(image_matches("localhost:5000/pos", "localhost:5000/pos:1.2"));
        assert!(image_matches(
            "localhost:5000/pos",
            "localhost:5000/pos@sha256:abc"
        ));
        assert!(!image_matches("localhost:5000/pos", "localhost:5000/pos-evil:1"));
        assert!(image_matches(
            "registry.example/shop/*",
            "registry.example/shop/pos:2"
        ));
        assert!(!image_matches(
            "registry.example/shop/*",
            "registry.example/other/pos:2"
        ));
        assert!(image_matches("*", "anything:1"));
        assert!(image_matches(
            "outpost-local/busybox:1",
            "outpost-local/busybox:1"
        ));
        assert!(!image_matches(
            "outpost-local/busybox:1",
            "outpost-local/busybox:2"
        ));
        assert!(image_matches("a*b*c", "axxbyyc"));
        assert!(!image_matches("a*b*c", "axxbyy"));
    }

    #[test]
    fn release_labels_read_back() {
        let secrets = BTreeMap::from([("db".to_string(), 3), ("tls".to_string(), 1)]);
        let label = release("2.0.0", &secrets);
        assert_eq!(label, "2.0.0 (secrets db@3, tls@1)");
        assert_eq!(split_release(&label), ("2.0.0", secrets));
        assert_eq!(release("1.0+build", &BTreeMap::new()), "1.0+build");
        assert_eq!(split_release("1.0+build"), ("1.0+build", BTreeMap::new()));
    }

    #[test]
    fn secret_keys() {
        assert!(check_secret_key("tls.crt").is_ok());
        assert!(check_secret_key("DB_PASSWORD").is_ok());
        assert!(check_secret_key("..data").is_err());
        assert!(check_secret_key("a/b").is_err());
        assert!(check_secret_key("").is_err());
    }
}
