//! The REST client: HTTPS that trusts only the control plane's own CA, the
//! context's bearer token, and server errors turned into `CliError`s that
//! keep every diagnostic.

use outpost_api::access::{
    AuditEntry, AuditVerification, Block, BlockRequest, TokenCreated, TokenInfo, TokenRequest,
};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use outpost_api::Diagnostic;
use outpost_api::client_config::{ClientConfig, Context};
use outpost_api::limits::MAX_BODY_BYTES;
use outpost_api::manifest::Kind;
use outpost_api::secret::{
    RevealRequest, RevealResponse, SecretDetail, SecretList, SecretSetRequest, SecretSummary,
};
use outpost_api::wire::{
    ApplicationVersion, ApplyRequest, ApplyResponse, ErrorBody, HostInfo, HostList, IDEMPOTENCY_KEY,
    JoinToken, JoinTokenRequest, LabelChange, ObjectList, StoredObject,
};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;

/// How long an apply whose connection dropped waits before it asks again.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// A response's body as `T`, or its error body as a `CliError`.
async fn read_response<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    let status = response.status();
    let bytes = response.bytes().await.context("reading the response")?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .context("the control plane sent a response this CLI cannot read");
    }
    let error = match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => CliError {
            message: body.error.message,
            diagnostics: body.error.diagnostics,
        },
        Err(_) => CliError {
            message: format!("the control plane answered {status}"),
            diagnostics: Vec::new(),
        },
    };
    Err(error.into())
}

/// The TLS certificate failure somewhere in an error's chain. An io::Error
/// hides what it wraps from `source()`, so those are opened too.
fn certificate_error(err: &(dyn std::error::Error + 'static)) -> Option<rustls::CertificateError> {
    if let Some(rustls::Error::InvalidCertificate(why)) = err.downcast_ref::<rustls::Error>() {
        return Some(why.clone());
    }
    let wrapped = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| certificate_error(inner));
    wrapped.or_else(|| err.source().and_then(certificate_error))
}

/// An error to show the operator as it is (exit code 1).
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for diagnostic in &self.diagnostics {
            write!(f, "\n  {diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Where the configuration comes from: `--config`, `$OUTPOST_CONFIG`, or
/// `~/.config/outpost/config.yaml`.
pub fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("OUTPOST_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    dirs::config_dir().map(|dir| dir.join("outpost").join("config.yaml"))
}

pub fn load_config(path: &Path) -> Result<ClientConfig> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "no configuration at {}: pass --config FILE or set OUTPOST_CONFIG (the control plane writes DATA_DIR/admin.yaml; `outpost up` sets up the default one)",
                path.display()
            )
        } else {
            anyhow::Error::new(err).context(format!("reading {}", path.display()))
        }
    })?;
    outpost_api::yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

impl Client {
    pub fn new(context: &Context) -> Result<Client> {
        let mut roots = rustls::RootCertStore::empty();
        let mut reader = context.certificate_authority.as_bytes();
        for cert in rustls_pemfile::certs(&mut reader) {
            roots
                .add(cert.context("the context's certificateAuthority is not PEM")?)
                .context("the context's certificateAuthority is not a usable certificate")?;
        }
        if roots.is_empty() {
            anyhow::bail!("context {:?} has no certificateAuthority", context.name);
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(Arc::new(roots))
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .user_agent(concat!("outpost/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("setting up HTTPS")?;
        Ok(Client {
            http,
            base: format!("{}/api/v1", context.server.trim_end_matches('/')),
            token: context.token.clone(),
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let response = request.send().await.map_err(|err| self.unreachable(&err, ""))?;
        read_response(response).await
    }

    fn unreachable(&self, err: &reqwest::Error, advice: &str) -> CliError {
        let mut cause: &dyn std::error::Error = err;
        while let Some(source) = cause.source() {
            cause = source;
        }
        let message = match certificate_error(err) {
            Some(why) => format!(
                "the control plane at {} presented a certificate this context does not trust ({why:?}): is certificateAuthority the CA of that control plane?",
                self.base
            ),
            None => format!("cannot reach the control plane at {}: {cause}{advice}", self.base),
        };
        CliError {
            message,
            diagnostics: Vec::new(),
        }
    }

    /// Sends an apply with an `Idempotency-Key`. If the connection drops
    /// after the request left, the apply may be stored with its answer lost:
    /// it is sent once more with the same key, and the control plane answers
    /// with the outcome it stored, so the operator learns what happened.
    pub async fn apply(&self, request: &ApplyRequest) -> Result<ApplyResponse> {
        let body = serde_json::to_vec(request).context("encoding the apply request")?;
        if body.len() > MAX_BODY_BYTES {
            return Err(CliError {
                message: format!(
                    "the manifests are too large to apply at once ({:.1} MiB; the limit is {} MiB): apply them in parts",
                    body.len() as f64 / f64::from(1u32 << 20),
                    MAX_BODY_BYTES >> 20
                ),
                diagnostics: Vec::new(),
            }
            .into());
        }
        let key = hex::encode(rand::random::<[u8; 16]>());
        let attempt = || {
            self.request(Method::POST, "/apply")
                .header(IDEMPOTENCY_KEY, &key)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
        };
        let response = match attempt().await {
            Ok(response) => response,
            // Refused before anything was sent: nothing can have been applied.
            Err(err) if err.is_connect() => return Err(self.unreachable(&err, "").into()),
            Err(_) => {
                tokio::time::sleep(RETRY_AFTER).await;
                attempt().await.map_err(|err| {
                    self.unreachable(
                        &err,
                        " (the connection dropped during the apply, so it may have been stored; run it again to see: an apply of what is already stored changes nothing)",
                    )
                })?
            }
        };
        read_response(response).await
    }

    pub async fn plan(&self, request: &ApplyRequest) -> Result<outpost_api::wire::PlanResponse> {
        self.send(self.request(Method::POST, "/plan").json(request)).await
    }

    pub async fn rollout(&self, deployment: &str) -> Result<outpost_api::wire::RolloutStatus> {
        self.send(self.request(
            Method::GET,
            &format!("/deployments/{}/rollout", encode(deployment)),
        ))
        .await
    }

    /// What an offline bundle of a deployment holds, or (with the archive's
    /// digest) its signed header.
    pub async fn bundle(
        &self,
        deployment: &str,
        request: &outpost_api::wire::BundleRequest,
    ) -> Result<outpost_api::wire::BundleResponse> {
        let path = format!("/deployments/{}/bundle", encode(deployment));
        self.send(self.request(Method::POST, &path).json(request)).await
    }

    pub async fn rollout_command(&self, deployment: &str, command: &str) -> Result<serde_json::Value> {
        let path = format!("/deployments/{}/rollout/{command}", encode(deployment));
        self.send(self.request(Method::POST, &path)).await
    }

    pub async fn rollout_undo(&self, deployment: &str, to_version: Option<&str>) -> Result<ApplyResponse> {
        let body = outpost_api::wire::UndoRequest {
            to_version: to_version.map(String::from),
        };
        let path = format!("/deployments/{}/rollout/undo", encode(deployment));
        self.send(self.request(Method::POST, &path).json(&body)).await
    }

    pub async fn list(&self, kind: Kind, selector: Option<&str>) -> Result<Vec<StoredObject>> {
        let mut request = self.request(Method::GET, &format!("/{}", kind.plural()));
        if let Some(selector) = selector {
            request = request.query(&[("selector", selector)]);
        }
        let list: ObjectList = self.send(request).await?;
        Ok(list.items)
    }

    pub async fn get(&self, kind: Kind, name: &str) -> Result<StoredObject> {
        self.send(self.request(Method::GET, &format!("/{}/{}", kind.plural(), encode(name))))
            .await
    }

    pub async fn delete(&self, kind: Kind, name: &str, cascade: bool) -> Result<StoredObject> {
        let mut request = self.request(Method::DELETE, &format!("/{}/{}", kind.plural(), encode(name)));
        if cascade {
            request = request.query(&[("cascade", "true")]);
        }
        self.send(request).await
    }

    pub async fn rotate_keys(&self, site: &str, at_once: bool) -> Result<outpost_api::wire::SiteKeys> {
        let body = outpost_api::wire::RotateKeysRequest { at_once };
        let path = format!("/sites/{}/rotate-keys", encode(site));
        self.send(self.request(Method::POST, &path).json(&body)).await
    }

    pub async fn site_keys(&self, site: &str) -> Result<outpost_api::wire::SiteKeys> {
        let path = format!("/sites/{}/keys", encode(site));
        self.send(self.request(Method::GET, &path)).await
    }

    /// Where to sign in (needs no token).
    pub async fn login_config(&self) -> Result<outpost_api::access::LoginConfig> {
        self.send(self.http.get(format!("{}/login", self.base))).await
    }

    /// Trades an ID token for an API token (needs no token).
    pub async fn login(&self, id_token: &str) -> Result<TokenCreated> {
        let body = outpost_api::access::LoginRequest {
            id_token: id_token.to_string(),
        };
        self.send(self.http.post(format!("{}/login", self.base)).json(&body))
            .await
    }

    /// A one-time sign-in link's token for the caller itself (the console
    /// signs in with it at `/ui/signin?link=TOKEN`).
    pub async fn create_sign_in_link(&self) -> Result<TokenCreated> {
        self.send(self.request(Method::POST, "/login/links")).await
    }

    pub async fn create_api_token(&self, request: &TokenRequest) -> Result<TokenCreated> {
        self.send(self.request(Method::POST, "/tokens").json(request))
            .await
    }

    pub async fn api_tokens(&self) -> Result<Vec<TokenInfo>> {
        self.send(self.request(Method::GET, "/tokens")).await
    }

    pub async fn revoke_api_token(&self, name: &str) -> Result<TokenInfo> {
        self.send(self.request(Method::DELETE, &format!("/tokens/{}", encode(name))))
            .await
    }

    /// The audit trail; `query` holds `since`, `user`, `tenant`, `limit`.
    pub async fn audit(&self, query: &[(&str, String)]) -> Result<Vec<AuditEntry>> {
        self.send(self.request(Method::GET, "/audit").query(query)).await
    }

    pub async fn verify_audit(&self) -> Result<AuditVerification> {
        self.send(self.request(Method::GET, "/audit/verify")).await
    }

    /// `POST /block` or, with `lift`, `POST /unblock`.
    pub async fn block(&self, request: &BlockRequest, lift: bool) -> Result<Block> {
        let path = if lift { "/unblock" } else { "/block" };
        self.send(self.request(Method::POST, path).json(request)).await
    }

    /// `GET /ca`, `POST /ca/rotate` or `POST /ca/retire`.
    pub async fn ca(&self, action: Option<&str>, force: bool) -> Result<outpost_api::access::CaStatus> {
        match action {
            None => self.send(self.request(Method::GET, "/ca")).await,
            Some("retire") => {
                let body = outpost_api::access::CaRetireRequest { force };
                self.send(self.request(Method::POST, "/ca/retire").json(&body))
                    .await
            }
            Some(action) => {
                self.send(self.request(Method::POST, &format!("/ca/{action}")))
                    .await
            }
        }
    }

    pub async fn blocks(&self) -> Result<Vec<Block>> {
        self.send(self.request(Method::GET, "/blocks")).await
    }

    pub async fn create_join_token(&self, site: &str, ttl: Option<&str>) -> Result<JoinToken> {
        let body = JoinTokenRequest {
            ttl: ttl.map(str::to_string),
        };
        self.send(
            self.request(Method::POST, &format!("/sites/{}/tokens", encode(site)))
                .json(&body),
        )
        .await
    }

    pub async fn label(&self, kind: Kind, name: &str, change: &LabelChange) -> Result<StoredObject> {
        let path = format!("/{}/{}/labels", kind.plural(), encode(name));
        self.send(self.request(Method::PATCH, &path).json(change)).await
    }

    pub async fn label_host(
        &self,
        site: &str,
        host: &str,
        change: &LabelChange,
    ) -> Result<serde_json::Value> {
        let path = format!("/hosts/{}/{}/labels", encode(site), encode(host));
        self.send(self.request(Method::PATCH, &path).json(change)).await
    }

    pub async fn hosts(&self, site: Option<&str>) -> Result<Vec<HostInfo>> {
        let mut request = self.request(Method::GET, "/hosts");
        if let Some(site) = site {
            request = request.query(&[("site", site)]);
        }
        let list: HostList = self.send(request).await?;
        Ok(list.items)
    }

    pub async fn events(&self, query: &[(&str, String)]) -> Result<Vec<outpost_api::telemetry::StoredEvent>> {
        let list: outpost_api::telemetry::EventList = self
            .send(self.request(Method::GET, "/events").query(query))
            .await?;
        Ok(list.items)
    }

    pub async fn logs(&self, query: &[(&str, String)]) -> Result<Vec<outpost_api::telemetry::StoredLogLine>> {
        let list: outpost_api::telemetry::LogList =
            self.send(self.request(Method::GET, "/logs").query(query)).await?;
        Ok(list.items)
    }

    pub async fn stream_records(
        &self,
        application: &str,
        topic: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<outpost_api::stream::StoredRecord>> {
        let path = format!("/streams/{application}/{topic}");
        let list: outpost_api::stream::StoredRecords =
            self.send(self.request(Method::GET, &path).query(query)).await?;
        Ok(list.records)
    }

    /// Publishes each line of `ndjson` as a record of a down topic.
    pub async fn publish(
        &self,
        application: &str,
        topic: &str,
        sites: Option<&str>,
        ndjson: Vec<u8>,
    ) -> Result<outpost_api::stream::Published> {
        let path = format!("/streams/{application}/{topic}");
        let query: Vec<(&str, &str)> = sites.map(|s| ("sites", s)).into_iter().collect();
        let request = self
            .request(Method::POST, &path)
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(ndjson);
        self.send(request).await
    }

    pub async fn set_secret(&self, request: &SecretSetRequest) -> Result<SecretSummary> {
        self.send(self.request(Method::POST, "/secrets").json(request))
            .await
    }

    pub async fn secrets(&self) -> Result<Vec<SecretSummary>> {
        let list: SecretList = self.send(self.request(Method::GET, "/secrets")).await?;
        Ok(list.items)
    }

    pub async fn secret(&self, name: &str) -> Result<SecretDetail> {
        self.send(self.request(Method::GET, &format!("/secrets/{}", encode(name))))
            .await
    }

    pub async fn reveal_secret(&self, name: &str, key: &str) -> Result<RevealResponse> {
        let body = RevealRequest { key: key.to_string() };
        let path = format!("/secrets/{}/reveal", encode(name));
        self.send(self.request(Method::POST, &path).json(&body)).await
    }

    pub async fn delete_secret(&self, name: &str) -> Result<SecretSummary> {
        self.send(self.request(Method::DELETE, &format!("/secrets/{}", encode(name))))
            .await
    }

    pub async fn history(&self, application: &str) -> Result<Vec<ApplicationVersion>> {
        self.send(self.request(
            Method::GET,
            &format!("/applications/{}/history", encode(application)),
        ))
        .await
    }
}

/// Names are DNS labels, but a mistyped one must not break the URL.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
