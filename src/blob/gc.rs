//! The blob garbage collector: every `blobs.gc_interval`, expired blobs lose their file and
//! their bytes leave the owner's quota (a tombstone stays, so their id answers 410 Gone), and
//! lapsed upload URLs leave no record. [`purge`] does the same to one blob at once (operators).

use std::sync::Arc;

use crate::edge::RelayCtx;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};

use super::{BlobFiles, BlobId};

/// Records handled per pass; the rest wait for the next tick.
const GC_BATCH: usize = 10_000;

/// Why a collection pass or a purge failed. (the relay's fault)
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("removing a blob file: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs until shutdown.
pub async fn run(ctx: Arc<RelayCtx>, mut stop: Shutdown) {
    let mut every = tokio::time::interval(ctx.cfg.blobs.gc_interval);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.recv() => return,
        }
        match collect(&ctx.store, &ctx.blobs.files, crate::clock::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "Expired blobs removed."),
            Err(e) => tracing::error!(error = %e, "Blob garbage collection failed."),
        }
    }
}

/// One pass: returns how many blob files were removed.
pub async fn collect(store: &Store, files: &BlobFiles, now_ms: u64) -> Result<usize, GcError> {
    let mut removed = 0;
    for (at, id) in store.blob_due(now_ms, GC_BATCH)? {
        // The record becomes a tombstone before the file goes: a crash in between leaves an
        // orphan file (wasted space), never a record pointing at nothing.
        if store.blob_expire(&id, Some(at), now_ms, false)? {
            files.remove(&id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes one blob now, leaving its tombstone. Returns whether it was stored.
pub async fn purge(store: &Store, files: &BlobFiles, id: &BlobId) -> Result<bool, GcError> {
    let was_stored = store.blob_expire(id, None, crate::clock::now_ms(), true)?;
    if was_stored {
        files.remove(id).await?;
    }
    Ok(was_stored)
}
