//! Free space on the data directory's filesystem. Writes that clients start (a send, a blob
//! upload) are refused with [`StoreError::StorageFull`] while the free space is below the
//! watermark (`relay.min_free_disk_bytes`), so sled never meets a full disk in the middle of
//! a write, and what the relay already acknowledged stays readable and deliverable (deliveries
//! and acks, which shrink the store, go on).
//!
//! Every send asks, so a check far above the watermark is answered from the last `statvfs`
//! for [`FRESH_MS`]: nothing the relay writes in that time comes near [`FAR_BYTES`]. Within
//! that margin, or below the watermark, every check asks the filesystem, so a refusal is
//! exact and the relay resumes by itself the moment space is freed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::{Store, StoreError};

/// How long a check far above the watermark is trusted.
const FRESH_MS: u64 = 20;
/// How far above the watermark "far" is: more than the log and sled can write in
/// [`FRESH_MS`] (the log's segment is 16 MiB; a fast disk writes a few MiB in 20 ms).
const FAR_BYTES: u64 = 256 << 20;

/// The watermark, whether the last check was below it (to log only the changes), and the
/// last answer far above it with its time.
#[derive(Clone, Default)]
pub(super) struct Watermark {
    min_free_bytes: Arc<AtomicU64>,
    below: Arc<AtomicBool>,
    /// When (clock ms) the filesystem last answered "far above"; 0: not trusted.
    far_at_ms: Arc<AtomicU64>,
}

impl Store {
    /// Sets the free-space watermark; 0 turns the check off.
    pub fn set_min_free_disk_bytes(&self, bytes: u64) {
        self.space.min_free_bytes.store(bytes, Ordering::Relaxed);
        self.space.far_at_ms.store(0, Ordering::Relaxed);
    }

    /// Free bytes (for an unprivileged process) on the data directory's filesystem.
    pub fn free_disk_bytes(&self) -> Result<u64, StoreError> {
        let st = rustix::fs::statvfs(&self.dir).map_err(std::io::Error::from)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// `Ok` when a new write may start: free space is at or above the watermark.
    pub fn ensure_space(&self) -> Result<(), StoreError> {
        self.ensure_space_for(0)
    }

    /// `Ok` when `bytes` more (a blob upload) still leave the watermark free.
    pub fn ensure_space_for(&self, bytes: u64) -> Result<(), StoreError> {
        let min_free_bytes = self.space.min_free_bytes.load(Ordering::Relaxed);
        if min_free_bytes == 0 {
            return Ok(());
        }
        let now = crate::clock::now_ms();
        if bytes == 0 && now.saturating_sub(self.space.far_at_ms.load(Ordering::Relaxed)) < FRESH_MS
        {
            return Ok(());
        }
        let free_bytes = self.free_disk_bytes()?;
        let far = free_bytes.saturating_sub(min_free_bytes) > FAR_BYTES;
        self.space
            .far_at_ms
            .store(if far { now } else { 0 }, Ordering::Relaxed);
        let below = free_bytes < min_free_bytes;
        if self.space.below.swap(below, Ordering::Relaxed) != below {
            if below {
                tracing::error!(
                    free_bytes,
                    min_free_bytes,
                    dir = %self.dir.display(),
                    "Free disk space is below relay.min_free_disk_bytes; refusing new messages and uploads with storage_full until space is freed."
                );
            } else {
                tracing::info!(
                    free_bytes,
                    min_free_bytes,
                    "Free disk space is back above relay.min_free_disk_bytes; accepting messages again."
                );
            }
        }
        if below || free_bytes < min_free_bytes.saturating_add(bytes) {
            return Err(StoreError::StorageFull {
                free_bytes,
                min_free_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_watermark_above_the_free_space_refuses_and_zero_turns_the_check_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.ensure_space().unwrap();
        let free = s.free_disk_bytes().unwrap();
        assert!(free > 0);
        s.set_min_free_disk_bytes(u64::MAX);
        match s.ensure_space() {
            Err(StoreError::StorageFull { min_free_bytes, .. }) => {
                assert_eq!(min_free_bytes, u64::MAX)
            }
            other => panic!("expected StorageFull, got {other:?}"),
        }
        s.set_min_free_disk_bytes(1);
        s.ensure_space().unwrap();
        s.set_min_free_disk_bytes(0);
        s.ensure_space().unwrap();
    }
}
