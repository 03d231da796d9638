//! The key-encryption keys: a file outside the database (mode 0600), in
//! the data directory as `secrets.key` or wherever `--secrets-key-file`
//! says. Each line is `ID BASE64` (32 bytes); the first is the one new
//! data keys are wrapped with. A rotation adds a key in front, re-wraps
//! every data key, then drops the old ones; a running control plane that
//! meets a key id it does not know reads the file again, so it keeps
//! working through a rotation made by another process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use parking_lot::RwLock;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The file's name in the data directory.
pub const KEY_FILE: &str = "secrets.key";

type Key = Zeroizing<[u8; 32]>;

pub struct Keyring {
    path: PathBuf,
    /// Every key ever read from the file, by id: a data key wrapped by a
    /// key a rotation dropped still opens until the re-wrap is read.
    keys: RwLock<HashMap<String, Key>>,
    current: RwLock<String>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("current", &*self.current.read())
            .finish_non_exhaustive()
    }
}

fn key_id(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..6])
}

pub(super) fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>> {
    let mut bytes = Zeroizing::new([0u8; N]);
    SystemRandom::new()
        .fill(bytes.as_mut())
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(bytes)
}

/// Reads the file: (id, key) in order, the current one first.
fn read(path: &Path) -> Result<Vec<(String, Key)>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the secrets key file {}", path.display()))?,
    );
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("{}:{}: not `ID BASE64-OF-32-BYTES`", path.display(), n + 1);
        let (id, encoded) = line.split_once(' ').with_context(bad)?;
        let bytes = Zeroizing::new(STANDARD.decode(encoded.trim()).ok().with_context(bad)?);
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            bail!(bad());
        }
        key.copy_from_slice(&bytes);
        if key_id(key.as_ref()) != id {
            bail!("{}:{}: the id does not match the key", path.display(), n + 1);
        }
        keys.push((id.to_string(), key));
    }
    if keys.is_empty() {
        bail!("the secrets key file {} holds no key", path.display());
    }
    Ok(keys)
}

fn write(path: &Path, keys: &[(String, Key)]) -> Result<()> {
    let mut text = Zeroizing::new(String::from(
        "# Outpost's secrets key-encryption keys: the first wraps new data keys.\n# Keep this file private (0600) and out of backups of the database.\n",
    ));
    for (id, key) in keys {
        text.push_str(&format!("{id} {}\n", STANDARD.encode(key.as_ref())));
    }
    outpost_files::write_private(path, text.as_bytes())
}

impl Keyring {
    /// Opens the key file, creating it with a fresh key if it is missing.
    pub fn open(path: &Path) -> Result<Keyring> {
        if !path.exists() {
            let key: Key = random()?;
            write(path, &[(key_id(key.as_ref()), key)])?;
            tracing::info!(path = %path.display(), "created the secrets key file");
        }
        check_private(path)?;
        let keys = read(path)?;
        let current = keys[0].0.clone();
        Ok(Keyring {
            path: path.to_path_buf(),
            keys: RwLock::new(keys.into_iter().collect()),
            current: RwLock::new(current),
        })
    }

    /// Re-reads the file (after a rotation by another process).
    fn reload(&self) -> Result<()> {
        let keys = read(&self.path)?;
        *self.current.write() = keys[0].0.clone();
        self.keys.write().extend(keys);
        Ok(())
    }

    fn key(&self, id: &str) -> Result<LessSafeKey> {
        if !self.keys.read().contains_key(id) {
            self.reload()?;
        }
        let keys = self.keys.read();
        let key = keys.get(id).with_context(|| {
            format!(
                "no key {id:?} in {} (was it replaced without a rotation?)",
                self.path.display()
            )
        })?;
        aead(key.as_ref())
    }

    /// Wraps a data key with the current key: (key id, wrapped).
    pub fn wrap(&self, data_key: &[u8], context: &[u8]) -> Result<(String, Vec<u8>)> {
        let id = self.current.read().clone();
        Ok((id.clone(), encrypt(&self.key(&id)?, data_key, context)?))
    }

    pub fn unwrap(&self, id: &str, wrapped: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        decrypt(&self.key(id)?, wrapped, context)
            .with_context(|| format!("the data key does not open with key {id:?}"))
    }

    /// Step one of a rotation: a new key goes in front of the file, and is
    /// the current one from now on.
    pub fn add_key(&self) -> Result<String> {
        let mut keys = read(&self.path)?;
        let key: Key = random()?;
        let id = key_id(key.as_ref());
        keys.insert(0, (id.clone(), key));
        write(&self.path, &keys)?;
        self.reload()?;
        Ok(id)
    }

    /// The last step: only the current key stays in the file.
    pub fn drop_old_keys(&self) -> Result<usize> {
        let mut keys = read(&self.path)?;
        let dropped = keys.len() - 1;
        keys.truncate(1);
        write(&self.path, &keys)?;
        Ok(dropped)
    }

    pub fn current(&self) -> String {
        self.current.read().clone()
    }
}

/// A key file others can read is refused: it opens every secret.
fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "the secrets key file {} is mode {:04o}; it must be readable by its owner only (chmod 600)",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

fn aead(key: &[u8]) -> Result<LessSafeKey> {
    let key = UnboundKey::new(&AES_256_GCM, key).map_err(|_| anyhow::anyhow!("not an AES-256 key"))?;
    Ok(LessSafeKey::new(key))
}

/// AES-256-GCM with a random nonce: `nonce | ciphertext | tag`.
pub(super) fn encrypt(key: &LessSafeKey, plain: &[u8], context: &[u8]) -> Result<Vec<u8>> {
    let nonce = random::<NONCE_LEN>()?;
    let mut out = nonce.to_vec();
    let mut body = Zeroizing::new(plain.to_vec());
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(*nonce),
        Aad::from(context),
        &mut *body,
    )
    .map_err(|_| anyhow::anyhow!("encryption failed"))?;
    out.extend_from_slice(&body);
    Ok(out)
}

pub(super) fn decrypt(key: &LessSafeKey, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN {
        bail!("the ciphertext is too short");
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow::anyhow!("bad nonce"))?;
    let mut body = Zeroizing::new(body.to_vec());
    let plain = key
        .open_in_place(nonce, Aad::from(context), &mut body)
        .map_err(|_| anyhow::anyhow!("the ciphertext does not open (wrong key, or altered)"))?;
    Ok(Zeroizing::new(plain.to_vec()))
}

/// A data key's cipher.
pub(super) fn data_cipher(key: &[u8]) -> Result<LessSafeKey> {
    aead(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_across_a_rotation_made_by_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let running = Keyring::open(&path).unwrap();
        let (old_id, wrapped) = running.wrap(b"0123456789abcdef0123456789abcdef", b"ctx").unwrap();

        // Another process rotates: a new key, the re-wrap, old keys dropped.
        let rotating = Keyring::open(&path).unwrap();
        let new_id = rotating.add_key().unwrap();
        let plain = rotating.unwrap(&old_id, &wrapped, b"ctx").unwrap();
        let (id, rewrapped) = rotating.wrap(&plain, b"ctx").unwrap();
        assert_eq!(id, new_id);
        assert_eq!(rotating.drop_old_keys().unwrap(), 1);

        // The running one opens both the old wrap (its key is still in
        // memory) and the new one (read from the file when first met).
        assert_eq!(&*running.unwrap(&old_id, &wrapped, b"ctx").unwrap(), &*plain);
        assert_eq!(&*running.unwrap(&new_id, &rewrapped, b"ctx").unwrap(), &*plain);
        assert_eq!(running.current(), new_id);
        assert!(
            running.unwrap(&new_id, &rewrapped, b"other").is_err(),
            "bound to its context"
        );
    }

    #[test]
    fn a_readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        Keyring::open(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Keyring::open(&path).unwrap_err().to_string();
        assert!(err.contains("mode 0644"), "{err}");
    }
}
