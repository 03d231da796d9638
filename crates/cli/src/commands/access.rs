//! Who may act, and what they did: API tokens for users and robots, the
//! audit trail, and blocks of hosts and sites.

use std::fmt::Write as _;

use anyhow::{Result, bail};
use outpost_api::access::{BlockRequest, BlockTarget, TokenRequest};

use super::TokenOutput;
use crate::client::Client;
use crate::output::{self, Format, Table, age};

/// `outpost token create --user U --role R [--tenant T] [--sites SEL] [--ttl 90d]`.
pub async fn create_api_token(client: &Client, request: &TokenRequest, shown: TokenOutput) -> Result<String> {
    let created = client.create_api_token(request).await?;
    match shown {
        TokenOutput::Quiet => Ok(format!("{}\n", created.token)),
        TokenOutput::Json => output::json(&created),
        TokenOutput::Text => Ok(format!(
            "{}\n\nShown once. Token {} for {} as {} in tenant {}{}, valid until {}.\n",
            created.token,
            created.info.name,
            created.info.user,
            created.info.role,
            created.info.tenant,
            created
                .info
                .sites
                .as_deref()
                .map(|sites| format!(" on sites {sites}"))
                .unwrap_or_default(),
            created.info.expires_at.as_deref().unwrap_or("never"),
        )),
    }
}

/// `outpost token list`: never the tokens themselves.
pub async fn list_api_tokens(client: &Client, format: Format) -> Result<String> {
    let tokens = client.api_tokens().await?;
    match format {
        Format::Json => output::json(&tokens),
        Format::Yaml => output::yaml(&tokens),
        Format::Table | Format::Wide => {
            let mut table = Table::new(&[
                "NAME", "USER", "ROLE", "TENANT", "SITES", "EXPIRES", "STATE", "AGE",
            ]);
            let now = time::OffsetDateTime::now_utc();
            let past = |at: &str| {
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .is_ok_and(|at| at <= now)
            };
            for token in &tokens {
                let state = match (&token.revoked_at, &token.expires_at) {
                    (Some(_), _) => "revoked",
                    (None, Some(expires)) if past(expires) => "expired",
                    _ => "valid",
                };
                table.row(vec![
                    token.name.clone(),
                    token.user.clone(),
                    token.role.to_string(),
                    token.tenant.clone(),
                    token.sites.clone().unwrap_or_else(|| "<all>".to_string()),
                    token.expires_at.clone().unwrap_or_else(|| "never".to_string()),
                    state.to_string(),
                    age(&token.created_at),
                ]);
            }
            Ok(table.render())
        }
    }
}

/// `outpost token revoke NAME`.
pub async fn revoke_api_token(client: &Client, name: &str) -> Result<String> {
    let token = client.revoke_api_token(name).await?;
    Ok(format!(
        "token {} ({}) revoked; it fails from its next request\n",
        token.name, token.user
    ))
}

/// `outpost audit [--since] [--user] [--tenant] [-o json]`.
pub async fn audit(
    client: &Client,
    since: Option<&str>,
    user: Option<&str>,
    tenant: Option<&str>,
    format: Format,
) -> Result<String> {
    let mut query = Vec::new();
    if let Some(since) = since {
        query.push(("since", crate::telemetry::since_time(since)?));
    }
    if let Some(user) = user {
        query.push(("user", user.to_string()));
    }
    if let Some(tenant) = tenant {
        query.push(("tenant", tenant.to_string()));
    }
    let entries = client.audit(&query).await?;
    match format {
        Format::Json => output::json(&entries),
        Format::Yaml => output::yaml(&entries),
        Format::Table | Format::Wide => {
            let mut table = Table::new(&[
                "AT", "USER", "TOKEN", "TENANT", "ACTION", "OBJECTS", "FROM", "RESULT",
            ]);
            for entry in &entries {
                table.row(vec![
                    entry.at.clone(),
                    entry.user.clone(),
                    entry.token.clone(),
                    entry.tenant.clone(),
                    entry.action.clone(),
                    entry.objects.join(", "),
                    entry.source.clone(),
                    format!("{} {}", entry.status, entry.result),
                ]);
            }
            Ok(table.render())
        }
    }
}

/// `outpost audit verify`: fails (exit 1) when the chain is broken.
pub async fn verify_audit(client: &Client) -> Result<String> {
    let verification = client.verify_audit().await?;
    let older = match verification.unchained {
        0 => String::new(),
        n => format!(" ({n} older entries from before the chain are not covered)"),
    };
    match (verification.broken_at, verification.problem) {
        (None, _) => Ok(format!(
            "the audit trail is intact: {} entries verified{older}\n",
            verification.verified
        )),
        (Some(id), problem) => bail!(
            "the audit trail is broken at entry {id}: {}",
            problem.unwrap_or_default()
        ),
    }
}

/// `outpost block host SITE/HOST`, `block site SITE`, `block tenant T` and
/// their `unblock`s (`lift`).
pub async fn block(
    client: &Client,
    target: BlockTarget,
    name: &str,
    wipe: bool,
    lift: bool,
) -> Result<String> {
    let request = BlockRequest {
        target,
        name: name.to_string(),
        wipe,
    };
    let block = client.block(&request, lift).await?;
    let what = format!("{} {}", block.target.as_str(), block.name);
    Ok(if lift && target == BlockTarget::Tenant {
        format!("{what} unblocked: its tokens work again\n")
    } else if lift {
        format!("{what} unblocked: it may connect again\n")
    } else if target == BlockTarget::Tenant {
        format!("{what} blocked: its API tokens are refused and its followed streams ended\n")
    } else if block.wipe {
        format!(
            "{what} blocked: its sessions ended and its connections are refused; connected hosts were told to delete their secrets and stop their workloads\n"
        )
    } else {
        format!("{what} blocked: its sessions ended and its connections are refused\n")
    })
}

/// `outpost control rotate-ca [--retire [--force] | --status]`.
pub async fn rotate_ca(client: &Client, retire: bool, force: bool, status: bool) -> Result<String> {
    let action = match (retire, status) {
        (_, true) => None,
        (true, _) => Some("retire"),
        (false, false) => Some("rotate"),
    };
    let ca = client.ca(action, force).await?;
    let mut out = match action {
        Some("rotate") => format!(
            "new CA {} ({}) signs from now on; the previous CA stays trusted until `outpost control rotate-ca --retire`\n",
            &ca.fingerprint[..16],
            ca.name
        ),
        Some(_) => format!(
            "the previous CA is retired; only CA {} ({}) is trusted\n",
            &ca.fingerprint[..16],
            ca.name
        ),
        None => format!(
            "CA {} ({}){}\n",
            &ca.fingerprint[..16],
            ca.name,
            if ca.rotating {
                ", the previous CA still trusted"
            } else {
                ""
            }
        ),
    };
    if ca.rotating {
        if ca.hosts_to_renew.is_empty() && ca.sites_to_rekey.is_empty() {
            out.push_str("every host holds a certificate of the new CA: the previous one may be retired\n");
        } else {
            let _ = writeln!(
                out,
                "waiting for {} host(s) to renew their certificates and {} site(s) their underlay keys",
                ca.hosts_to_renew.len(),
                ca.sites_to_rekey.len()
            );
        }
    }
    Ok(out)
}

/// `outpost block list`.
pub async fn blocks(client: &Client, format: Format) -> Result<String> {
    let blocks = client.blocks().await?;
    match format {
        Format::Json => output::json(&blocks),
        Format::Yaml => output::yaml(&blocks),
        Format::Table | Format::Wide if blocks.is_empty() => Ok("nothing is blocked\n".to_string()),
        Format::Table | Format::Wide => {
            let mut table = Table::new(&["TARGET", "NAME", "WIPE", "BY", "AGE"]);
            for block in &blocks {
                table.row(vec![
                    block.target.as_str().to_string(),
                    block.name.clone(),
                    block.wipe.to_string(),
                    block.blocked_by.clone(),
                    age(&block.blocked_at),
                ]);
            }
            Ok(table.render())
        }
    }
}
