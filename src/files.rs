//! The data directory's own files that are not the store's: the directory itself (private to
//! the relay's user) and the relay's Noise static key. The store, the blob files and the audit
//! log each own theirs. Low in the module graph: the relay, its backup and the client use it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::wire::handshake::StaticKeypair;

/// File name of the relay's Noise static private key inside the data directory.
pub const RELAY_KEY_FILE: &str = "relay.key";

/// Creates `dir` (and parents) readable only by the relay's user.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}

/// Reads the relay's static key, generating and saving one on first start.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<StaticKeypair> {
    match std::fs::read(path) {
        Ok(bytes) => parse_key(&bytes).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = StaticKeypair::generate();
            write_key(path, &key)?;
            tracing::info!(path = %path.display(), relay_key = %hex::encode(key.public), "Generated the relay's static key.");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn parse_key(bytes: &[u8]) -> anyhow::Result<StaticKeypair> {
    let text = std::str::from_utf8(bytes)
        .context("key file is not text")?
        .trim();
    let raw = hex::decode(text).context("key file is not hex")?;
    let private = <[u8; 32]>::try_from(raw.as_slice())
        .map_err(|_| anyhow::anyhow!("key must be 32 bytes, got {}", raw.len()))?;
    Ok(StaticKeypair::from_private(private))
}

/// Writes a key file atomically (temporary file, fsync, rename), mode 0600.
pub fn write_key(path: &Path, key: &StaticKeypair) -> anyhow::Result<()> {
    write_private(path, &hex::encode(key.private))
}

/// Writes `text` and a newline to `path` atomically (temporary file, fsync, rename, directory
/// fsync), mode 0600: secrets of the data directory (the relay key, the admin token).
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    writeln!(f, "{text}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
