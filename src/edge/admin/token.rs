//! The operator API's bearer token: 32 random bytes, hex, in `<data_dir>/admin.token`
//! (mode 0600), generated on first start and kept. Anyone who can read that file is an
//! operator; the listener is loopback-only, so that means a local user with access to the
//! data directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// File name of the token inside the data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// The token the relay accepts.
pub struct AdminToken(String);

impl AdminToken {
    /// Reads `path`, generating and writing a new token (atomically, mode 0600) if it does
    /// not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let token = text.trim().to_owned();
                if token.len() < 32 {
                    anyhow::bail!(
                        "{} holds no usable token (fewer than 32 characters); delete it to generate a new one",
                        path.display()
                    );
                }
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "The admin token file is readable by other users; chmod 600 it.");
                }
                Ok(Self(token))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = hex::encode(rand::random::<[u8; 32]>());
                crate::files::write_private(path, &token)?;
                tracing::info!(path = %path.display(), "Generated the admin API token.");
                Ok(Self(token))
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Whether `presented` is the token, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// Names the token in the audit log without revealing it: `token:` and the first
    /// 8 hex digits of its SHA-256.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        format!("token:{}", hex::encode(&digest[..4]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_created_private_then_read_back_and_compared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);
        let first = AdminToken::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = AdminToken::load_or_create(&path).unwrap();
        assert!(again.matches(&first.0));
        assert!(!again.matches("wrong"));
        assert!(!again.matches(""));
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert!(!first.fingerprint().contains(&first.0[..8]));
    }
}
