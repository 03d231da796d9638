//! The CLI's configuration file, also written by `outpost control` as
//! `admin.yaml`: named contexts, each a server URL, the CA certificate to
//! trust and an API token.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    #[serde(default = "kind")]
    pub kind: String,
    pub current_context: String,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

fn kind() -> String {
    "Config".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    pub name: String,
    /// `https://host:7800`.
    pub server: String,
    /// PEM of the control plane's CA certificate.
    pub certificate_authority: String,
    pub token: String,
}

impl ClientConfig {
    pub fn single(name: &str, server: &str, ca_pem: &str, token: &str) -> Self {
        ClientConfig {
            kind: kind(),
            current_context: name.to_string(),
            contexts: vec![Context {
                name: name.to_string(),
                server: server.to_string(),
                certificate_authority: ca_pem.to_string(),
                token: token.to_string(),
            }],
        }
    }

    /// The named context, or the current one.
    pub fn context(&self, name: Option<&str>) -> Option<&Context> {
        let name = name.unwrap_or(&self.current_context);
        self.contexts.iter().find(|c| c.name == name)
    }

    /// Adds or replaces a context and makes it current.
    pub fn upsert(&mut self, context: Context) {
        self.current_context = context.name.clone();
        match self.contexts.iter_mut().find(|c| c.name == context.name) {
            Some(existing) => *existing = context,
            None => self.contexts.push(context),
        }
    }
}
