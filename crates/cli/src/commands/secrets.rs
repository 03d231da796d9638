//! Secrets: `secret set` (values from arguments, files or stdin, never from
//! a manifest), `secret reveal`, and the secret side of `get`, `describe`
//! and `delete`. Nothing here prints a value except `reveal`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use outpost_api::secret::{MAX_SECRET_BYTES, SecretSetRequest, SecretSummary, check_secret_key};
use zeroize::Zeroizing;

use crate::client::Client;
use crate::output::{self, Format, Table, age};

/// What `outpost secret set` was given.
#[derive(Debug)]
pub struct SecretSet<'a> {
    pub name: &'a str,
    /// `KEY=VALUE`, or `KEY=-` for standard input.
    pub values: &'a [String],
    /// `KEY=PATH`.
    pub from_files: &'a [String],
    pub sites: Option<&'a str>,
    pub images: Option<&'a [String]>,
}

fn split_pair<'a>(pair: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    let (key, value) = pair
        .split_once('=')
        .with_context(|| format!("{flag}{pair:?} is not KEY=VALUE"))?;
    check_secret_key(key).map_err(|e| anyhow::anyhow!("{flag}{e}"))?;
    Ok((key, value))
}

/// Reads the values: arguments, files and at most one `-` (standard input).
fn read_values(set: &SecretSet<'_>, stdin: &mut dyn Read) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>> {
    let mut values = BTreeMap::new();
    let mut used_stdin = false;
    let mut insert = |key: &str, value: Zeroizing<Vec<u8>>| {
        if values.insert(key.to_string(), value).is_some() {
            bail!("key {key:?} is given twice");
        }
        Ok(())
    };
    for pair in set.values {
        let (key, value) = split_pair(pair, "")?;
        if value == "-" {
            if used_stdin {
                bail!("only one key can read standard input (KEY=-)");
            }
            used_stdin = true;
            let mut bytes = Zeroizing::new(Vec::new());
            stdin
                .take(MAX_SECRET_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .context("reading the value from standard input")?;
            insert(key, bytes)?;
        } else {
            insert(key, Zeroizing::new(value.as_bytes().to_vec()))?;
        }
    }
    for pair in set.from_files {
        let (key, path) = split_pair(pair, "--from-file ")?;
        let path = Path::new(path);
        let size = std::fs::metadata(path)
            .with_context(|| format!("--from-file {key}: reading {}", path.display()))?
            .len();
        if size > MAX_SECRET_BYTES as u64 {
            bail!(
                "--from-file {key}: {} holds {size} bytes; a secret holds at most {MAX_SECRET_BYTES} (512 KiB)",
                path.display()
            );
        }
        let bytes =
            std::fs::read(path).with_context(|| format!("--from-file {key}: reading {}", path.display()))?;
        insert(key, Zeroizing::new(bytes))?;
    }
    if values.is_empty() {
        bail!("give at least one KEY=VALUE (or --from-file KEY=PATH)");
    }
    Ok(values)
}

/// `outpost secret set NAME KEY=VALUE... [--from-file KEY=PATH]... [--sites SELECTOR] [--images PATTERN...]`.
pub async fn secret_set(client: &Client, set: &SecretSet<'_>, stdin: &mut dyn Read) -> Result<String> {
    if let Some(images) = set.images
        && let Some(pair) = images.iter().find(|i| i.contains('='))
    {
        bail!("--images {pair:?} looks like KEY=VALUE: put --images after the values");
    }
    let values = read_values(set, stdin)?;
    let size: usize = values.values().map(|v| v.len()).sum();
    if size > MAX_SECRET_BYTES {
        bail!(
            "secret {:?} holds {size} bytes; at most {MAX_SECRET_BYTES} (512 KiB) fit",
            set.name
        );
    }
    let request = SecretSetRequest {
        name: set.name.to_string(),
        values: values
            .iter()
            .map(|(k, v)| (k.clone(), STANDARD.encode(&**v)))
            .collect(),
        sites: set.sites.map(str::to_string),
        images: set.images.map(<[String]>::to_vec),
    };
    let stored = client.set_secret(&request).await?;
    Ok(format!(
        "secret/{} version {} stored ({} key{}: {})\n",
        stored.name,
        stored.version,
        stored.keys.len(),
        if stored.keys.len() == 1 { "" } else { "s" },
        stored.keys.join(", ")
    ))
}

/// `outpost secret reveal NAME KEY`: the value as it was stored.
pub async fn secret_reveal(client: &Client, name: &str, key: &str) -> Result<Vec<u8>> {
    let revealed = client.reveal_secret(name, key).await?;
    STANDARD
        .decode(&revealed.value)
        .context("the control plane's answer is not base64")
}

fn where_text(sites: Option<&str>, images: &[String]) -> (String, String) {
    (
        sites.unwrap_or("<all>").to_string(),
        if images.is_empty() {
            "<any>".to_string()
        } else {
            images.join(", ")
        },
    )
}

fn held_text(secret: &SecretSummary) -> String {
    if secret.sites_by_version.is_empty() {
        return "<none>".to_string();
    }
    secret
        .sites_by_version
        .iter()
        .rev()
        .map(|(version, sites)| format!("v{version}: {sites}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `outpost get secrets`: names, keys, versions, ages and who holds what.
pub async fn get_secrets(client: &Client, name: Option<&str>, format: Format) -> Result<String> {
    let mut secrets = client.secrets().await?;
    if let Some(name) = name {
        secrets.retain(|s| s.name == name);
        if secrets.is_empty() {
            bail!("secret {name:?} not found");
        }
    }
    match format {
        Format::Json => output::json(&serde_json::json!({ "items": secrets })),
        Format::Yaml => output::yaml(&serde_json::json!({ "items": secrets })),
        Format::Table | Format::Wide if secrets.is_empty() => {
            Ok("no secrets yet (outpost secret set NAME KEY=VALUE)\n".to_string())
        }
        Format::Table | Format::Wide => {
            let wide = format == Format::Wide;
            let mut header = vec!["NAME", "KEYS", "VERSION", "SITES BY VERSION", "AGE"];
            if wide {
                header.extend(["MAY REACH", "IMAGES"]);
            }
            let mut table = Table::new(&header);
            for secret in &secrets {
                let mut row = vec![
                    secret.name.clone(),
                    secret.keys.join(","),
                    secret.version.to_string(),
                    held_text(secret),
                    age(&secret.created_at),
                ];
                if wide {
                    let (sites, images) = where_text(secret.sites.as_deref(), &secret.images);
                    row.extend([sites, images]);
                }
                table.row(row);
            }
            Ok(table.render())
        }
    }
}

/// `outpost describe secret NAME`.
pub async fn describe_secret(client: &Client, name: &str) -> Result<String> {
    let detail = client.secret(name).await?;
    let secret = &detail.summary;
    let (sites, images) = where_text(secret.sites.as_deref(), &secret.images);
    let mut out = String::new();
    let _ = writeln!(out, "Name:        {}", secret.name);
    let _ = writeln!(out, "Kind:        Secret");
    let _ = writeln!(out, "Version:     {}", secret.version);
    let _ = writeln!(out, "Keys:        {}", secret.keys.join(", "));
    let _ = writeln!(out, "May reach:   {sites}");
    let _ = writeln!(out, "Images:      {images}");
    super::write_times(&mut out, &secret.created_at, &secret.updated_at);
    let used_by = if detail.deployments.is_empty() {
        "<none>".to_string()
    } else {
        detail.deployments.join(", ")
    };
    let _ = writeln!(out, "Used by:     {used_by}");
    if detail.holders.is_empty() {
        out.push_str("Holders:     <none> (no placed workload refers to it)\n");
    } else {
        out.push_str("Holders:\n");
        let mut table = Table::new(&["SITE", "HOST", "VERSION", "DELIVERED"]);
        for holder in &detail.holders {
            table.row(vec![
                holder.site.clone(),
                holder.host.clone(),
                holder.version.to_string(),
                if holder.delivered { "yes" } else { "pending" }.to_string(),
            ]);
        }
        for line in table.render().lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    Ok(out)
}

/// `outpost delete secret NAME`.
pub async fn delete_secret(client: &Client, name: &str) -> Result<String> {
    let deleted = client.delete_secret(name).await?;
    Ok(format!(
        "secret/{} deleted (every version, up to {})\n",
        deleted.name, deleted.version
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set<'a>(values: &'a [String], from_files: &'a [String]) -> SecretSet<'a> {
        SecretSet {
            name: "db",
            values,
            from_files,
            sites: None,
            images: None,
        }
    }

    #[test]
    fn values_come_from_arguments_files_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert");
        std::fs::write(&path, [0u8, 1, 2]).unwrap();
        let values = vec!["user=app".to_string(), "password=-".to_string()];
        let files = vec![format!("cert={}", path.display())];
        let read = read_values(&set(&values, &files), &mut &b"s3cret\n"[..]).unwrap();
        assert_eq!(&**read["user"], b"app");
        assert_eq!(&**read["password"], b"s3cret\n");
        assert_eq!(&**read["cert"], &[0u8, 1, 2]);
    }

    #[test]
    fn bad_values_are_named() {
        let err = |values: &[&str]| {
            let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            read_values(&set(&values, &[]), &mut &b""[..])
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(&["novalue"]), "\"novalue\" is not KEY=VALUE");
        assert_eq!(err(&["a=1", "a=2"]), "key \"a\" is given twice");
        assert_eq!(
            err(&["a=-", "b=-"]),
            "only one key can read standard input (KEY=-)"
        );
        assert!(err(&["a/b=1"]).contains("is not a secret key"));
        assert_eq!(err(&[]), "give at least one KEY=VALUE (or --from-file KEY=PATH)");
    }
}
