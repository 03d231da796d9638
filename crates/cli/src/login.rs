//! `outpost login`: sign in with the OpenID Connect provider the control
//! plane names, by the device authorization grant (RFC 8628): the user
//! opens a page and approves; meanwhile the CLI polls the provider's token
//! endpoint for an ID token, which the control plane trades for an API
//! token that goes into the context.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use outpost_api::client_config::{ClientConfig, Context as ConfigContext};
use serde::Deserialize;

use crate::client::{Client, load_config};

/// How long the CLI waits for the user to approve.
const APPROVAL_WINDOW: Duration = Duration::from_secs(600);

#[derive(Debug, Deserialize)]
struct Discovery {
    device_authorization_endpoint: Option<String>,
    token_endpoint: String,
}

#[derive(Debug, Deserialize)]
struct DeviceAuthorization {
    device_code: String,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    #[serde(default)]
    interval: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct TokenReply {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Where the context to sign in lives: an existing one, or a new one for
/// this server and CA.
pub struct Target<'a> {
    pub config_path: &'a Path,
    pub context: &'a str,
    pub server: Option<&'a str>,
    pub ca_file: Option<&'a Path>,
}

/// Signs in and stores the API token in the context (the file stays 0600);
/// `tell` shows the user where to approve. Returns what to print.
pub async fn login(target: &Target<'_>, tell: impl Fn(&str)) -> Result<String> {
    let mut config = if target.config_path.exists() {
        load_config(target.config_path)?
    } else {
        ClientConfig::single(target.context, "", "", "")
    };
    let existing = config.context(Some(target.context)).cloned();
    let context = match (existing, target.server, target.ca_file) {
        (_, Some(server), Some(ca_file)) => ConfigContext {
            name: target.context.to_string(),
            server: server.to_string(),
            certificate_authority: std::fs::read_to_string(ca_file)
                .with_context(|| format!("reading {}", ca_file.display()))?,
            token: String::new(),
        },
        (Some(context), None, None) if !context.server.is_empty() => context,
        (_, None, None) => bail!(
            "no context named {:?} in {}: give --server URL and --ca-file FILE to make it",
            target.context,
            target.config_path.display()
        ),
        _ => bail!("--server and --ca-file go together"),
    };
    let client = Client::new(&context)?;
    let provider = client.login_config().await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("setting up HTTP")?;
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        provider.issuer.trim_end_matches('/')
    );
    let discovery: Discovery = read(http.get(&discovery_url), "the provider's discovery document").await?;
    let Some(device_endpoint) = discovery.device_authorization_endpoint else {
        bail!(
            "the provider at {} offers no device sign-in (device_authorization_endpoint)",
            provider.issuer
        );
    };
    let scope = "openid email profile groups";
    let device: DeviceAuthorization = read(
        http.post(&device_endpoint)
            .form(&[("client_id", provider.client_id.as_str()), ("scope", scope)]),
        "the provider's device authorization",
    )
    .await?;
    match &device.verification_uri_complete {
        Some(uri) => tell(&format!(
            "To sign in, open {uri}\n(or open {} and enter the code {})",
            device.verification_uri, device.user_code
        )),
        None => tell(&format!(
            "To sign in, open {} and enter the code {}",
            device.verification_uri, device.user_code
        )),
    }
    let mut interval = Duration::from_secs(device.interval.unwrap_or(5).max(1));
    let deadline = tokio::time::Instant::now() + APPROVAL_WINDOW;
    let id_token = loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the sign-in was not approved within {} minutes",
                APPROVAL_WINDOW.as_secs() / 60
            );
        }
        let reply: TokenReply = http
            .post(&discovery.token_endpoint)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device.device_code.as_str()),
                ("client_id", provider.client_id.as_str()),
            ])
            .send()
            .await
            .context("asking the provider for the token")?
            .json()
            .await
            .context("the provider's token answer is not JSON")?;
        match (reply.id_token, reply.error.as_deref()) {
            (Some(token), _) => break token,
            (None, Some("authorization_pending")) => {}
            (None, Some("slow_down")) => interval += Duration::from_secs(5),
            (None, Some(error)) => bail!(
                "the provider refused the sign-in: {error}{}",
                reply
                    .error_description
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            (None, None) => bail!("the provider's token answer holds no ID token"),
        }
    };
    let created = client.login(&id_token).await?;
    let context = ConfigContext {
        token: created.token,
        ..context
    };
    let current = config.current_context.clone();
    config.upsert(context);
    if target.config_path.exists() {
        // Signing in to one context does not switch away from another.
        config.current_context = current;
    }
    let text = serde_saphyr::to_string(&config).context("writing the configuration")?;
    if let Some(dir) = target.config_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    outpost_files::write_private(target.config_path, text.as_bytes())?;
    Ok(format!(
        "signed in as {}: {} in tenant {} until {} (context {})\n",
        created.info.user,
        created.info.role,
        created.info.tenant,
        created.info.expires_at.as_deref().unwrap_or("never"),
        target.context
    ))
}

async fn read<T: serde::de::DeserializeOwned>(request: reqwest::RequestBuilder, what: &str) -> Result<T> {
    let response = request
        .send()
        .await
        .with_context(|| format!("asking for {what}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("{what}: the provider answered {status}");
    }
    response
        .json()
        .await
        .with_context(|| format!("{what} is not JSON"))
}
