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

pub use crate::ids::{BadBlobId, BlobId, BLOB_ID_CHARS};
