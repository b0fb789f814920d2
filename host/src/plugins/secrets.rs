//! Encryption at rest for plugin-instance secrets (API tokens, client
//! secrets). ChaCha20-Poly1305 with a random nonce per value; the associated
//! data binds each ciphertext to its instance and field, so a value copied
//! into another record does not decrypt.
//!
//! The key comes from configuration (`secret_key` / `COHORT_SECRET_KEY`) or
//! from `<data_dir>/secret.key`, generated once with mode 0600. Backups hold
//! ciphertext only: restoring them needs the same key.

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::config::Secret;

/// Why the key could not be loaded, or a value not decrypted.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The configured or stored key is not 32 bytes of base64.
    #[error("the secret key must be 32 bytes, base64-encoded: {0}")]
    BadKey(String),
    /// The key file could not be read or created.
    #[error("cannot read or create the secret key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A stored value does not decrypt with this key (wrong key, or tampering).
    #[error("a stored secret cannot be decrypted; is this the key it was written with?")]
    Decrypt,
}

/// Encrypts and decrypts secrets with the server's key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
    backup: cohort_storage::BackupKey,
}

/// The HKDF label of the backup key: a key of its own, so that nothing the
/// backup format does with it bears on the key that seals secrets.
const BACKUP_KEY_LABEL: &[u8] = b"cohort backup authentication v1";

impl SecretBox {
    /// The configured key, or the key file in `data_dir` (created when absent).
    pub fn open(configured: Option<&Secret>, data_dir: &Path) -> Result<SecretBox, SecretError> {
        let encoded = match configured {
            Some(s) => s.expose().trim().to_owned(),
            None => {
                let path = data_dir.join("secret.key");
                let io = |source| SecretError::Io {
                    path: path.display().to_string(),
                    source,
                };
                match std::fs::read_to_string(&path) {
                    Ok(s) => s.trim().to_owned(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let mut key = [0u8; 32];
                        rand::fill(&mut key);
                        let encoded = B64.encode(key);
                        let mut options = std::fs::OpenOptions::new();
                        options.write(true).create_new(true);
                        #[cfg(unix)]
                        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                        let mut file = options.open(&path).map_err(io)?;
                        file.write_all(encoded.as_bytes()).map_err(io)?;
                        file.sync_all().map_err(io)?;
                        encoded
                    }
                    Err(e) => return Err(io(e)),
                }
            }
        };
        let bytes = B64
            .decode(encoded.as_bytes())
            .map_err(|e| SecretError::BadKey(e.to_string()))?;
        if bytes.len() != 32 {
            return Err(SecretError::BadKey(format!("got {} bytes", bytes.len())));
        }
        let mut backup = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(None, &bytes)
            .expand(BACKUP_KEY_LABEL, &mut backup)
            .map_err(|e| SecretError::BadKey(e.to_string()))?;
        Ok(SecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
            backup: cohort_storage::BackupKey::new(backup),
        })
    }

    /// The key `backup` files are authenticated with, derived from this one.
    pub fn backup_key(&self) -> &cohort_storage::BackupKey {
        &self.backup
    }

    /// Only the key given, or the key file named (a source server's, for a
    /// restore): never generates one.
    pub fn from_key_file(path: &Path) -> Result<SecretBox, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Io {
            path: path.display().to_string(),
            source,
        })?;
        SecretBox::open(Some(&Secret::new(text)), path)
    }

    /// Encrypt `plain` for `context` (e.g. `instance-id/field`).
    pub fn seal(&self, context: &str, plain: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("encryption with a valid key cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        B64.encode(out)
    }

    /// Decrypt a value sealed for `context`.
    pub fn open_value(&self, context: &str, sealed: &str) -> Result<String, SecretError> {
        let bytes = B64.decode(sealed).map_err(|_| SecretError::Decrypt)?;
        if bytes.len() < 12 {
            return Err(SecretError::Decrypt);
        }
        let (nonce, body) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| SecretError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_bound_to_context_and_key_file_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::open(None, dir.path()).unwrap();
        let sealed = a.seal("i1/token", "hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(a.open_value("i1/token", &sealed).unwrap(), "hunter2");
        assert!(a.open_value("i2/token", &sealed).is_err());
        let b = SecretBox::open(None, dir.path()).unwrap();
        assert_eq!(b.open_value("i1/token", &sealed).unwrap(), "hunter2");
        let other = SecretBox::open(Some(&Secret::new(B64.encode([7u8; 32]))), dir.path()).unwrap();
        assert!(other.open_value("i1/token", &sealed).is_err());
        assert!(SecretBox::open(Some(&Secret::new("short")), dir.path()).is_err());
    }
}
