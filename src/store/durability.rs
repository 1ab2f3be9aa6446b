//! The durability barrier: a group commit. Writers call [`Durability::wait`] after their
//! writes; one task flushes sled and fsyncs the data files for everyone who waited while the
//! previous flush ran, so one fsync covers many writers.

use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, oneshot};

use super::StoreError;

type Waiter = oneshot::Sender<Result<(), String>>;

/// Handle to the group-commit task. Cheap to clone.
#[derive(Clone)]
pub struct Durability {
    tx: mpsc::UnboundedSender<Waiter>,
}

impl Durability {
    pub(super) fn spawn(db: sled::Db, dir: PathBuf) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(db, dir, rx));
        Self { tx }
    }

    /// Returns once every write made before this call is on disk.
    pub async fn wait(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| StoreError::BarrierClosed)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Io(std::io::Error::other(e))),
            Err(_) => Err(StoreError::BarrierClosed),
        }
    }
}

async fn run(db: sled::Db, dir: PathBuf, mut rx: mpsc::UnboundedReceiver<Waiter>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = commit(&db, &dir).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, waiters = batch.len(), "Durability barrier failed; writes are not acknowledged.");
        }
        for w in batch.drain(..) {
            // A waiter that gave up (its connection closed) does not matter.
            let _ = w.send(result.clone());
        }
    }
}

async fn commit(db: &sled::Db, dir: &Path) -> Result<(), String> {
    db.flush_async().await.map_err(|e| e.to_string())?;
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || fsync_dir(&dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// fsyncs every regular file in `dir` (sled's `db` and `conf`, its snapshots) and the
/// directory itself, so renames and new files are durable too. sled's own flush already
/// fsyncs its log; this covers the rest and filesystems where that is not enough.
pub(super) fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}
