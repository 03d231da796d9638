//! Sign-in with an OpenID Connect provider: the CLI gets an ID token from
//! the provider (the device authorization grant) and trades it here for an
//! API token (`POST /api/v1/login`). The ID token is checked with the
//! `openidconnect` crate against the provider's current keys (discovery and
//! JWKS on every sign-in, so a key rotation at the provider needs nothing
//! here): signature, issuer, audience (our client id) and expiry. Its
//! claims then pick a role and tenant through the operator's mappings
//! (`--oidc-role-map 'groups: retail-ops -> operator@provider'`), the first
//! that matches.

use std::collections::BTreeMap;
use std::str::FromStr;

use openidconnect::core::{
    CoreClient, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{AdditionalClaims, ClientId, HttpRequest, HttpResponse, IdToken, IssuerUrl, Nonce};
use outpost_api::access::{PROVIDER, Role};
use serde::{Deserialize, Serialize};

/// How long an API token made by a sign-in lives.
pub const SIGN_IN_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// A rule from a claim's value to a role in a tenant:
/// `CLAIM: VALUE -> ROLE[@TENANT]`, such as `groups: retail-ops -> operator@provider`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMapping {
    pub claim: String,
    pub value: String,
    pub role: Role,
    pub tenant: String,
}

impl FromStr for RoleMapping {
    type Err = String;

    fn from_str(text: &str) -> Result<RoleMapping, String> {
        let usage = || {
            format!("{text:?} is not CLAIM: VALUE -> ROLE[@TENANT] (such as groups: retail-ops -> operator)")
        };
        let (claim, rest) = text.split_once(':').ok_or_else(usage)?;
        let (value, target) = rest.split_once("->").ok_or_else(usage)?;
        let (claim, value, target) = (claim.trim(), value.trim(), target.trim());
        if claim.is_empty() || value.is_empty() || target.is_empty() {
            return Err(usage());
        }
        let (role, tenant) = target.split_once('@').unwrap_or((target, PROVIDER));
        let role: Role = role.trim().parse()?;
        // Whether an application owner exists is asked at each sign-in:
        // tenants come and go while the control plane runs.
        let tenant = tenant.trim();
        if tenant != PROVIDER {
            outpost_api::manifest::check_dns_label(tenant).map_err(|why| format!("tenant: {why}"))?;
        }
        Ok(RoleMapping {
            claim: claim.to_string(),
            value: value.to_string(),
            role,
            tenant: tenant.to_string(),
        })
    }
}

impl RoleMapping {
    /// Whether the claims hold this mapping's value: the claim equals it, or
    /// is a list that holds it.
    fn matches(&self, claims: &BTreeMap<String, serde_json::Value>) -> bool {
        match claims.get(&self.claim) {
            Some(serde_json::Value::String(value)) => *value == self.value,
            Some(serde_json::Value::Array(values)) => values.iter().any(|v| v.as_str() == Some(&self.value)),
            _ => false,
        }
    }
}

/// The provider the control plane trusts, and how its claims map to roles.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub mappings: Vec<RoleMapping>,
}

/// Who an ID token says signed in, and the role the mappings give them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The `email` claim, else the subject.
    pub user: String,
    pub role: Role,
    pub tenant: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The ID token is not one we accept (signature, issuer, audience,
    /// expiry, form).
    #[error("the ID token is not accepted: {0}")]
    Rejected(String),
    /// A valid token whose claims map to no role.
    #[error("{0}")]
    NoRole(String),
    /// The provider could not be asked for its keys.
    #[error("the identity provider could not be reached: {0}")]
    Provider(String),
}

/// The claims besides the standard ones, kept as they came.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
struct Extra(BTreeMap<String, serde_json::Value>);

impl AdditionalClaims for Extra {}

type Token = IdToken<Extra, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

pub struct Oidc {
    config: OidcConfig,
    http: reqwest::Client,
}

impl Oidc {
    pub fn new(config: OidcConfig) -> anyhow::Result<Oidc> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            // Discovery must not be redirected elsewhere (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Oidc { config, http })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Checks an ID token and maps its claims to a role.
    pub async fn sign_in(&self, id_token: &str) -> Result<SignedIn, SignInError> {
        let token: Token = id_token
            .trim()
            .parse()
            .map_err(|err| SignInError::Rejected(format!("it is not a JWT: {err}")))?;
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|err| SignInError::Provider(err.to_string()))?;
        let http = |request: HttpRequest| send(self.http.clone(), request);
        let metadata = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|err| SignInError::Provider(crate::error_chain(&err)))?;
        let client =
            CoreClient::from_provider_metadata(metadata, ClientId::new(self.config.client_id.clone()), None);
        let verifier = client.id_token_verifier();
        // The device grant carries no nonce; replay is bounded by expiry.
        let claims = token
            .claims(&verifier, |_: Option<&Nonce>| Ok::<(), String>(()))
            .map_err(|err| SignInError::Rejected(err.to_string()))?;
        let user = claims
            .email()
            .map(|email| email.as_str().to_string())
            .unwrap_or_else(|| claims.subject().as_str().to_string());
        let extra = &claims.additional_claims().0;
        let mapping = self
            .config
            .mappings
            .iter()
            .find(|mapping| mapping.matches(extra))
            .ok_or_else(|| {
                SignInError::NoRole(format!(
                    "{user} signed in, but no role mapping matches their claims"
                ))
            })?;
        Ok(SignedIn {
            user,
            role: mapping.role,
            tenant: mapping.tenant.clone(),
        })
    }
}

/// The `openidconnect` crate's HTTP client, on our reqwest.
async fn send(http: reqwest::Client, request: HttpRequest) -> Result<HttpResponse, reqwest::Error> {
    let request = reqwest::Request::try_from(request)?;
    let response = http.execute(request).await?;
    let mut reply = HttpResponse::new(Vec::new());
    *reply.status_mut() = response.status();
    *reply.headers_mut() = response.headers().clone();
    *reply.body_mut() = response.bytes().await?.to_vec();
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse_as_written_and_name_what_is_wrong() {
        let mapping: RoleMapping = "groups: retail-ops -> operator@provider".parse().unwrap();
        assert_eq!(
            mapping,
            RoleMapping {
                claim: "groups".into(),
                value: "retail-ops".into(),
                role: Role::Operator,
                tenant: PROVIDER.into(),
            }
        );
        assert_eq!(
            "email: ana@example.com -> viewer"
                .parse::<RoleMapping>()
                .unwrap()
                .role,
            Role::Viewer
        );
        for (bad, says) in [
            ("groups retail-ops", "is not CLAIM: VALUE -> ROLE"),
            ("groups: retail-ops", "is not CLAIM: VALUE -> ROLE"),
            ("groups: -> admin", "is not CLAIM: VALUE -> ROLE"),
            ("groups: x -> root", "\"root\" is not a role"),
            (
                "groups: x -> admin@Acme Corp",
                "tenant: \"Acme Corp\" is not a DNS label",
            ),
        ] {
            let err = bad.parse::<RoleMapping>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_mapping_matches_a_claim_or_a_member_of_a_list_claim() {
        let mapping: RoleMapping = "groups: retail-ops -> operator".parse().unwrap();
        let claims = |value: serde_json::Value| BTreeMap::from([("groups".to_string(), value)]);
        assert!(mapping.matches(&claims(serde_json::json!(["hr", "retail-ops"]))));
        assert!(mapping.matches(&claims(serde_json::json!("retail-ops"))));
        assert!(!mapping.matches(&claims(serde_json::json!(["retail-ops-eu"]))));
        assert!(!mapping.matches(&BTreeMap::new()));
    }
}
