//! Backup archives: `relaybox backup` (online, through the admin API) and `relaybox restore`
//! (offline, into an empty data directory).
//!
//! # Format
//!
//! A POSIX tar archive (`tar -tvf` lists it) holding, in this order:
//!
//! ```text
//! store.rbx        a consistent image of the store (store::backup docs give its format)
//! relay.key        the relay's Noise static key, so clients' pinned key stays valid
//! audit.log        the admin audit log, if any, and its rotated files (audit.log.1 …)
//! blobs/…          every blob file (not blobs/tmp/: unfinished uploads)
//! MANIFEST.json    last: format, versions, creation time, and the size and SHA-256 of
//!                  every file above
//! ```
//!
//! The manifest comes last so that it can hold the checksums of what was streamed before it,
//! and so that an archive cut short anywhere is missing it. Restore refuses an archive
//! without one, with a file that is not listed, missing or different, or with an entry
//! outside the names above (a path with `..`, an absolute path, a link). `admin.token` is
//! not included: a restored relay generates a new one.

mod create;
mod restore;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use create::create;
pub use restore::restore;

/// `format` in every manifest.
pub const FORMAT: &str = "relaybox-backup";
/// Version of the archive layout written by this build.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "MANIFEST.json";
pub const STORE_IMAGE: &str = "store.rbx";
/// The blob directory inside the data directory, and its temporary uploads.
pub const BLOBS_DIR: &str = "blobs";
pub const BLOBS_TMP: &str = "tmp";
/// The MQTT bridge's device homes (`<data_dir>/mqtt/devices/{id}/`): the keys the relay holds
/// for each bridged device. Without them a restored relay could not speak for its devices.
pub const MQTT_DIR: &str = "mqtt";

/// Every file under `<data_dir>/mqtt/` (device states are replaced by rename, so each file read
/// is whole), as (archive name, path), sorted. Temporary files of a save in progress are left.
pub fn mqtt_files(data_dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![(MQTT_DIR.to_owned(), data_dir.join(MQTT_DIR))];
    while let Some((rel, dir)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let kind = entry.file_type()?;
            let child = format!("{rel}/{name}");
            if kind.is_dir() {
                stack.push((child, entry.path()));
            } else if kind.is_file() && !name.ends_with(".tmp") {
                out.push((child, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}
/// Largest manifest read on restore.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// The last entry of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub relaybox_version: String,
    pub schema_version: u32,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub created_at_ms: u64,
    pub store_trees: u64,
    pub store_entries: u64,
    pub files: Vec<FileEntry>,
}

/// One file of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// Why a backup or restore failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Restore only writes into a new or empty directory (the operator's choice to make).
    #[error("the data directory {0} is not empty; restore only into a new or empty directory")]
    NotEmpty(PathBuf),
    /// The archive ends early: a partial download or copy (the file's fault).
    #[error("the backup is truncated: {0}")]
    Truncated(String),
    /// The archive is damaged or was not written by relaybox (the file's fault).
    #[error("the backup is corrupt: {0}")]
    Corrupt(String),
    /// A file's content differs from its checksum in the manifest (the file's fault).
    #[error("the backup is corrupt: {path} does not match its checksum in the manifest")]
    Checksum { path: String },
    /// Written by a newer relaybox.
    #[error("the backup has format version {0}; this relaybox reads version {FORMAT_VERSION}")]
    Version(u32),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Blob files and their total size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BlobUsage {
    pub files: u64,
    pub bytes: u64,
}

/// Every regular file under `<data_dir>/blobs/` except `blobs/tmp/`, as (path relative to
/// the data directory with `/` separators, absolute path). Non-UTF-8 names are skipped.
pub fn blob_files(data_dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let root = data_dir.join(BLOBS_DIR);
    let mut out = Vec::new();
    let mut stack = vec![(BLOBS_DIR.to_owned(), root)];
    while let Some((rel, dir)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %entry.path().display(), "Skipping a blob file whose name is not UTF-8.");
                continue;
            };
            let kind = entry.file_type()?;
            let child = format!("{rel}/{name}");
            if kind.is_dir() {
                if rel == BLOBS_DIR && name == BLOBS_TMP {
                    continue;
                }
                stack.push((child, entry.path()));
            } else if kind.is_file() {
                out.push((child, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// How many blob files `<data_dir>/blobs/` holds and their bytes.
pub fn blob_usage(data_dir: &Path) -> std::io::Result<BlobUsage> {
    let mut usage = BlobUsage::default();
    for (_, path) in blob_files(data_dir)? {
        match std::fs::metadata(&path) {
            Ok(m) => {
                usage.files += 1;
                usage.bytes += m.len();
            }
            // Removed by the garbage collector since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(usage)
}

/// A reader or writer that hashes and counts what passes through it.
struct Hashing<T> {
    inner: T,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        use sha2::Digest;
        Self {
            inner,
            hasher: sha2::Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (u64, String) {
        use sha2::Digest;
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl<T: std::io::Read> std::io::Read for Hashing<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<T: std::io::Write> std::io::Write for Hashing<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
