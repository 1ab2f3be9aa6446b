//! The blob garbage collector: every `blobs.gc_interval`, expired blobs lose their file and
//! their bytes leave the owner's quota (a tombstone stays for `blobs.tombstone_retention`, so
//! their id answers 410 Gone; then the id is forgotten), and lapsed upload URLs give back
//! their reserved quota and leave no record. [`purge`] ends one blob at once (operators).

use crate::config::BlobsConfig;
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

/// Runs until shutdown. The first pass also removes orphan files (see [`reconcile`]).
pub async fn run(store: Store, files: BlobFiles, cfg: BlobsConfig, mut stop: Shutdown) {
    let tombstone_ms = tombstone_ms(&cfg);
    match reconcile(&store, &files).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "Orphan blob files removed."),
        Err(e) => tracing::error!(error = %e, "Checking blob files against the store failed."),
    }
    match store.blob_bound_tombstones(tombstone_ms) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            bounded = n,
            "Blob tombstones kept forever by an older relay now end."
        ),
        Err(e) => tracing::error!(error = %e, "Bounding old blob tombstones failed."),
    }
    let mut every = tokio::time::interval(cfg.gc_interval);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.recv() => return,
        }
        match collect(&store, &files, crate::clock::now_ms(), tombstone_ms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "Expired blobs removed."),
            Err(e) => tracing::error!(error = %e, "Blob garbage collection failed."),
        }
    }
}

/// How long a tombstone is kept, in milliseconds.
pub fn tombstone_ms(cfg: &BlobsConfig) -> u64 {
    u64::try_from(cfg.tombstone_retention.as_millis()).unwrap_or(u64::MAX)
}

/// One pass: returns how many blob files were removed. Tombstones made now are kept for
/// `tombstone_ms`; those whose time has come are dropped.
pub async fn collect(
    store: &Store,
    files: &BlobFiles,
    now_ms: u64,
    tombstone_ms: u64,
) -> Result<usize, GcError> {
    let mut removed = 0;
    for (at, id) in store.blob_due(now_ms, GC_BATCH)? {
        // The record becomes a tombstone before the file goes: a crash in between leaves an
        // orphan file (wasted space), never a record pointing at nothing.
        if store.blob_expire(&id, Some(at), now_ms, false, tombstone_ms)? {
            files.remove(&id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes one blob now, leaving its tombstone. Returns whether it was stored.
pub async fn purge(
    store: &Store,
    files: &BlobFiles,
    id: &BlobId,
    tombstone_ms: u64,
) -> Result<bool, GcError> {
    let was_stored = store.blob_expire(id, None, crate::clock::now_ms(), true, tombstone_ms)?;
    if was_stored {
        files.remove(id).await?;
    }
    Ok(was_stored)
}

/// Removes files that no record claims (left by a crash between an upload's rename and its
/// record after the upload lapsed) and files of tombstones (a crash between the tombstone and
/// the deletion). Files of pending uploads are left alone: one may be completing right now.
/// Returns how many went.
pub async fn reconcile(store: &Store, files: &BlobFiles) -> Result<usize, GcError> {
    use crate::store::BlobState;
    let mut removed = 0;
    for id in files.list()? {
        let keep = matches!(
            store.blob(&id)?.map(|r| r.state),
            Some(BlobState::Stored { .. } | BlobState::Pending { .. })
        );
        if !keep {
            files.remove(&id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, DeviceId};

    #[tokio::test]
    async fn files_without_a_stored_record_are_removed_and_stored_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let files = BlobFiles::open(dir.path()).unwrap();
        let body = |b: &'static [u8]| futures::stream::iter([Ok::<_, String>(b)]);
        let kept = BlobId::of(b"kept");
        let orphan = BlobId::of(b"orphan");
        files.write(&kept, 4, body(b"kept")).await.unwrap();
        files.write(&orphan, 6, body(b"orphan")).await.unwrap();
        let owner = DeviceId::new(AccountId::parse("+14155550100").unwrap(), 0);
        store
            .blob_pending(&kept, &owner.account, 4, &[], 100, 100)
            .unwrap();
        store.blob_commit(&kept, &owner, 4, 1, 1000, 100).unwrap();
        assert_eq!(reconcile(&store, &files).await.unwrap(), 1);
        assert_eq!(files.len(&kept).await, Some(4));
        assert_eq!(files.len(&orphan).await, None);
        // Expiry through the collector: the file goes, the tombstone stays.
        assert_eq!(collect(&store, &files, 1000, 500).await.unwrap(), 1);
        assert_eq!(files.len(&kept).await, None);
        assert!(matches!(
            store.blob(&kept).unwrap().unwrap().state,
            crate::store::BlobState::Gone { .. }
        ));
        // The tombstone is dropped `tombstone_ms` later.
        assert_eq!(collect(&store, &files, 1499, 500).await.unwrap(), 0);
        assert!(store.blob(&kept).unwrap().is_some());
        assert_eq!(collect(&store, &files, 1500, 500).await.unwrap(), 0);
        assert_eq!(store.blob(&kept).unwrap(), None);
    }
}
