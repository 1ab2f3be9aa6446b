//! Blobs: end-to-end encrypted media and history files that clients upload and download over
//! HTTP. This module owns the files on disk (`files`: content addressed, written atomically)
//! and the capability URLs the relay signs (`capability`). It does not own the metadata (that
//! is `store::blobs`, the only code that touches sled) nor the HTTP routes (`edge::http::blobs`).
//!
//! # Layout under the data directory
//!
//! ```text
//! blobs/ab/abcdef…   one file per blob, named by the SHA-256 of its content, immutable
//! blobs/tmp/…        uploads in progress; removed on start and on any failed upload
//! ```

pub mod capability;
pub mod files;
pub mod gc;

use std::fmt;

pub use capability::{Capability, CapabilityError, Method};
pub use files::{BlobFiles, WriteError};

/// What sessions and HTTP handlers need to serve blobs: the files, and the key that signs
/// capability URLs (kept in the store, so URLs survive a restart).
#[derive(Debug, Clone)]
pub struct Blobs {
    pub files: BlobFiles,
    pub url_key: [u8; 32],
}

/// Most segments one blob may have (thumbnail, mid, high, full, and room to spare).
pub const MAX_SEGMENTS: usize = 16;

/// Length of a blob id: lowercase hex of a SHA-256 digest.
pub const BLOB_ID_CHARS: usize = 64;

/// A blob's id: the lowercase hex SHA-256 of its (encrypted) content. Constructed only from a
/// validated string, so it is always safe to use as a file name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId(String);

/// Why a string is not a blob id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadBlobId {
    /// Path syntax (`/`, `\`, `..`, `%`): an attempt to leave the blob directory.
    #[error("blob id contains path syntax")]
    Traversal,
    /// Anything else that is not 64 lowercase hex characters.
    #[error("blob id must be 64 lowercase hex characters (a SHA-256)")]
    Malformed,
}

impl BlobId {
    pub fn parse(s: &str) -> Result<Self, BadBlobId> {
        if s.contains(['/', '\\', '%']) || s.contains("..") {
            return Err(BadBlobId::Traversal);
        }
        let ok = s.len() == BLOB_ID_CHARS
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadBlobId::Malformed)
        }
    }

    /// The id of `content`.
    pub fn of(content: &[u8]) -> Self {
        use sha2::Digest;
        Self(hex::encode(sha2::Sha256::digest(content)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_sha256_hex_is_a_blob_id() {
        let good = BlobId::of(b"x");
        assert_eq!(BlobId::parse(good.as_str()).unwrap(), good);
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"0".repeat(65)] {
            assert_eq!(BlobId::parse(bad), Err(BadBlobId::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn path_syntax_is_reported_as_traversal() {
        for bad in ["..", "../etc/passwd", "a/b", "a\\b", "%2e%2e", "ab%2Fcd"] {
            assert_eq!(BlobId::parse(bad), Err(BadBlobId::Traversal), "{bad:?}");
        }
    }
}
