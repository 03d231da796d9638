//! Registry credentials for image pulls, read from a Docker `config.json`
//! (`auths`), the file operators already have. A password never reaches a
//! log: the type's `Debug` redacts it.

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;

#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The registry host, such as `registry.example.com:5000` or `docker.io`.
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The registry host of an image reference; Docker Hub for bare names.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// Reads the `auths` of a Docker configuration file.
pub fn load(path: &Path) -> Result<Vec<Credential>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("reading registry credentials from {}", path.display()))
}

fn normalize(key: &str) -> String {
    let host = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

pub fn parse(text: &str) -> Result<Vec<Credential>> {
    let config: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(Vec::new());
    };
    let mut credentials = Vec::new();
    for (key, entry) in auths {
        let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).map(String::from);
        let (username, password) = match (field("username"), field("password"), field("auth")) {
            (Some(user), Some(password), _) => (user, password),
            (_, _, Some(auth)) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .with_context(|| format!("the auth of {key:?} is not base64 of user:password"))?;
                let (user, password) = decoded
                    .split_once(':')
                    .with_context(|| format!("the auth of {key:?} is not base64 of user:password"))?;
                (user.to_string(), password.to_string())
            }
            _ => continue,
        };
        credentials.push(Credential {
            registry: normalize(key),
            username,
            password,
        });
    }
    Ok(credentials)
}

/// The credential for an image, if one is known for its registry.
pub fn for_image<'a>(credentials: &'a [Credential], image: &str) -> Option<&'a Credential> {
    let registry = registry_of(image);
    credentials.iter().find(|c| c.registry == registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_config_and_matches_images() {
        let auth = base64::engine::general_purpose::STANDARD.encode("ci:s3cret");
        let text = format!(
            r#"{{ "auths": {{
                "registry.example.com": {{ "auth": "{auth}" }},
                "https://index.docker.io/v1/": {{ "username": "hub", "password": "pw" }},
                "localhost:5000": {{ "identitytoken": "x" }}
            }} }}"#
        );
        let credentials = parse(&text).unwrap();
        assert_eq!(credentials.len(), 2);
        let ci = for_image(&credentials, "registry.example.com/pos/api:1.4.2").unwrap();
        assert_eq!((ci.username.as_str(), ci.password.as_str()), ("ci", "s3cret"));
        assert_eq!(for_image(&credentials, "busybox:1.36").unwrap().username, "hub");
        assert_eq!(
            for_image(&credentials, "library/busybox").unwrap().username,
            "hub"
        );
        assert!(for_image(&credentials, "localhost:5000/x").is_none());
        assert!(
            !format!("{ci:?}").contains("s3cret"),
            "Debug must not show the password"
        );
        assert!(parse(r#"{"auths": {"r.io": {"auth": "!!"}}}"#).is_err());
    }

    #[test]
    fn registries_of_images() {
        assert_eq!(
            registry_of("registry.example.com:5000/a/b:1"),
            "registry.example.com:5000"
        );
        assert_eq!(registry_of("localhost/a"), "localhost");
        assert_eq!(registry_of("pos/api"), "docker.io");
        assert_eq!(registry_of("busybox"), "docker.io");
    }
}
