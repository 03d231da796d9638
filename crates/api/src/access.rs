//! Who may do what, as the contract states it: the roles an API token
//! carries, what each role may do (`Role::allows`), and the REST bodies of
//! API tokens (`/api/v1/tokens`), the audit trail (`/api/v1/audit`) and
//! blocks (`/api/v1/block`). The control plane's policy layer applies these
//! to every route; the written table in its tests is checked against them.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The tenant that owns sites and hosts: there is exactly one.
pub const PROVIDER: &str = "provider";

/// The longest an API token may live.
pub const MAX_TOKEN_TTL: crate::quantity::Duration = crate::quantity::Duration(400 * 86_400_000);

/// What a token may do. Every route needs exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Read sites, hosts, applications, deployments, rollouts, events,
    /// logs, streams and the names of secrets (never their values).
    Read,
    /// Apply, plan and delete applications and deployments, label them,
    /// drive rollouts, make bundles and publish to streams.
    Deploy,
    /// Sites and hosts: apply, label and delete sites, join tokens, host
    /// labels, underlay keys, block and unblock.
    Edge,
    /// Make, list and revoke API tokens.
    Tokens,
    /// Set and delete secrets.
    SecretWrite,
    /// Reveal a secret's value.
    SecretRead,
    /// Read and verify the audit trail.
    Audit,
    /// Read what spans the whole fleet: Prometheus metrics and the blocks
    /// in force. Every role of the site provider may; no application owner.
    Fleet,
}

impl Access {
    pub const ALL: [Access; 8] = [
        Access::Read,
        Access::Deploy,
        Access::Edge,
        Access::Tokens,
        Access::SecretWrite,
        Access::SecretRead,
        Access::Audit,
        Access::Fleet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Deploy => "deploy",
            Access::Edge => "edge",
            Access::Tokens => "tokens",
            Access::SecretWrite => "secret-write",
            Access::SecretRead => "secret-read",
            Access::Audit => "audit",
            Access::Fleet => "fleet",
        }
    }
}

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Apply, rollouts and labels, and read.
    Operator,
    /// Read only.
    Viewer,
    /// Sites, hosts, tokens and blocks, and read.
    EdgeAdmin,
    /// Secrets (set, delete, reveal), and read.
    SecretAdmin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Operator,
        Role::Viewer,
        Role::EdgeAdmin,
        Role::SecretAdmin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::EdgeAdmin => "edge-admin",
            Role::SecretAdmin => "secret-admin",
        }
    }

    /// Whether this role may do `access`. Deny by default: a new kind of
    /// access is refused to every role but `admin` until it is listed here.
    pub fn allows(self, access: Access) -> bool {
        use Access::*;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(access, Read | Fleet | Deploy),
            Role::Viewer => matches!(access, Read | Fleet),
            Role::EdgeAdmin => matches!(access, Read | Fleet | Edge | Tokens),
            Role::SecretAdmin => matches!(access, Read | Fleet | SecretWrite | SecretRead),
        }
    }
}

impl Role {
    /// Whether this role may do everything `other` may: a token may only
    /// make or revoke tokens of roles its own covers, so no token can mint
    /// a stronger one.
    pub fn covers(self, other: Role) -> bool {
        Access::ALL
            .into_iter()
            .all(|access| !other.allows(access) || self.allows(access))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!("{text:?} is not a role (use {})", names.join(", "))
            })
    }
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    /// The user or robot the token is for.
    pub user: String,
    /// `admin`, `operator`, `viewer`, `edge-admin` or `secret-admin`.
    pub role: String,
    /// The tenant it acts in (default `provider`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// A selector of the sites it may see and act on (default: all the
    /// tenant's sites).
    #[serde(default)]
    pub sites: Option<String>,
    /// How long it stays valid, such as `90d` (the default; at most 400d).
    #[serde(default)]
    pub ttl: Option<String>,
}

/// An API token as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// Names the token in lists, the audit trail and `token revoke`.
    pub name: String,
    pub user: String,
    pub role: Role,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// `None`: never expires (the admin token written at first start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// The answer to `POST /api/v1/tokens`: the token, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenCreated {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// `GET /api/v1/login`: where to sign in (public).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginConfig {
    /// The OpenID Connect provider's issuer URL.
    pub issuer: String,
    /// The client id the control plane accepts ID tokens for.
    pub client_id: String,
}

/// `POST /api/v1/login` (public): an ID token from the provider, traded
/// for an API token of the role its claims map to.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    pub id_token: String,
}

/// One entry of the audit trail: a change, a read of a secret's value or a
/// refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    /// The token's name (`-` when no valid token was sent).
    pub token: String,
    pub user: String,
    pub tenant: String,
    /// The method and route, such as `POST /apply`.
    pub action: String,
    /// The objects it named, such as `Application/web` or `host/s1/h1`.
    pub objects: Vec<String>,
    /// The client's address.
    pub source: String,
    /// The HTTP status it was answered with.
    pub status: u16,
    /// `ok`, or the error code (`forbidden`, `not_found`, …).
    pub result: String,
}

/// The answer to `GET /api/v1/audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditVerification {
    /// Entries whose hash was checked.
    pub verified: u64,
    /// Entries from before the trail was chained (upgraded data), not checked.
    pub unchained: u64,
    /// The first entry that does not follow from the one before it: it or
    /// an entry before it was changed, deleted or added behind the control
    /// plane's back. `None`: the trail is intact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What a block cuts off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BlockTarget {
    /// One host, named `SITE/HOST`.
    Host,
    /// Every host of a site.
    Site,
    /// An application owner: its tokens stop working.
    Tenant,
}

impl BlockTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockTarget::Host => "host",
            BlockTarget::Site => "site",
            BlockTarget::Tenant => "tenant",
        }
    }
}

/// `POST /api/v1/block` and `POST /api/v1/unblock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockRequest {
    pub target: BlockTarget,
    /// `SITE/HOST` for a host, `SITE` for a site, `TENANT` for a tenant.
    pub name: String,
    /// Also tell the hosts, if connected, to delete their secrets and stop
    /// their workloads (block only; an unblock cannot undo it).
    #[serde(default)]
    pub wipe: bool,
}

/// A block in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    pub target: BlockTarget,
    pub name: String,
    pub wipe: bool,
    pub blocked_at: String,
    pub blocked_by: String,
}

/// `GET /api/v1/ca`, and the answer of a rotation or a retirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaStatus {
    /// SHA-256 of the current CA (what new join tokens pin).
    pub fingerprint: String,
    /// The CA's name, as the certificates it signs name their issuer.
    pub name: String,
    /// Whether the previous CA is still trusted (a rotation under way).
    pub rotating: bool,
    /// Hosts (`SITE/HOST`) whose certificate the current CA has not signed
    /// yet; the previous CA is retired once there are none.
    pub hosts_to_renew: Vec<String>,
    /// Sites whose hosts are still taking new underlay keys.
    pub sites_to_rekey: Vec<String>,
}

/// `POST /api/v1/ca/retire`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaRetireRequest {
    /// Retire even though these hosts hold certificates of the previous CA
    /// (they must then be enrolled again).
    #[serde(default)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_from_their_names_and_nothing_else() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        let err = "root".parse::<Role>().unwrap_err();
        assert!(
            err.contains("\"root\" is not a role (use admin, operator"),
            "{err}"
        );
    }

    #[test]
    fn only_admin_reads_the_audit_trail_and_every_role_reads_status() {
        for role in Role::ALL {
            assert!(role.allows(Access::Read), "{role}");
            assert_eq!(role.allows(Access::Audit), role == Role::Admin, "{role}");
        }
        assert!(!Role::Operator.allows(Access::Edge));
        assert!(!Role::Viewer.allows(Access::SecretRead));
        assert!(!Role::EdgeAdmin.allows(Access::SecretRead));
        assert!(Role::SecretAdmin.allows(Access::SecretRead));
    }

    #[test]
    fn no_role_but_admin_covers_a_role_that_can_do_more() {
        for role in Role::ALL {
            assert!(Role::Admin.covers(role));
            assert!(role.covers(Role::Viewer));
            assert!(role.covers(role));
        }
        assert!(Role::EdgeAdmin.covers(Role::Viewer));
        assert!(!Role::EdgeAdmin.covers(Role::Admin));
        assert!(!Role::EdgeAdmin.covers(Role::SecretAdmin));
        assert!(!Role::Operator.covers(Role::EdgeAdmin));
    }
}
