//! The durability barrier: a group commit. Writers call [`Durability::wait`] after their
//! writes; one task flushes sled and fsyncs the data files for everyone who waited while the
//! previous flush ran, so one fsync covers many writers. The wait also covers everything
//! appended to the message log before it (which has its own group commit, `msglog`); a Send
//! waits for the log alone ([`MsgLog::wait`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::msglog::MsgLog;
use super::StoreError;

type Waiter = oneshot::Sender<Result<(), String>>;

/// Handle to the group-commit task. Cheap to clone.
#[derive(Clone)]
pub struct Durability {
    tx: mpsc::UnboundedSender<Waiter>,
    log: MsgLog,
}

impl Durability {
    /// Opens sled's data file (kept open for the life of the relay: sled never replaces it)
    /// and starts the group-commit task.
    pub(super) fn spawn(db: sled::Db, dir: PathBuf, log: MsgLog) -> std::io::Result<Self> {
        let data_file = Arc::new(std::fs::File::open(dir.join("db"))?);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(db, dir, data_file, rx));
        Ok(Self { tx, log })
    }

    /// Returns once every write made before this call is on disk: sled's and the log's.
    pub async fn wait(&self) -> Result<(), StoreError> {
        let appended = self.log.appended();
        self.wait_sled().await?;
        self.log.wait(appended).await
    }

    /// Returns once the log holds everything up to `seq` on disk (a Send's record).
    pub async fn wait_log(&self, seq: u64) -> Result<(), StoreError> {
        self.log.wait(seq).await
    }

    /// Returns once every sled write made before this call is on disk.
    pub async fn wait_sled(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let started = std::time::Instant::now();
        self.tx.send(tx).map_err(|_| StoreError::BarrierClosed)?;
        let answer = rx.await;
        crate::telemetry::metrics::barrier_latency(started.elapsed());
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Io(std::io::Error::other(e))),
            Err(_) => Err(StoreError::BarrierClosed),
        }
    }
}

async fn run(
    db: sled::Db,
    dir: PathBuf,
    data_file: Arc<std::fs::File>,
    mut rx: mpsc::UnboundedReceiver<Waiter>,
) {
    let mut batch = Vec::new();
    let mut known = DirListing::default();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let started = std::time::Instant::now();
        let result = commit(&db, &dir, &data_file, &mut known).await;
        tracing::trace!(
            waiters = batch.len(),
            took_us = started.elapsed().as_micros() as u64,
            "Group commit."
        );
        if let Err(e) = &result {
            tracing::error!(error = %e, waiters = batch.len(), "Durability barrier failed; writes are not acknowledged.");
        }
        for w in batch.drain(..) {
            // A waiter that gave up (its connection closed) does not matter.
            let _ = w.send(result.clone());
        }
    }
}

/// The data directory's file names at the last commit: new files (sled snapshots, a new
/// log segment) and renames need a directory fsync; an unchanged directory does not.
#[derive(Default)]
struct DirListing(Vec<std::ffi::OsString>);

async fn commit(
    db: &sled::Db,
    dir: &Path,
    data_file: &Arc<std::fs::File>,
    known: &mut DirListing,
) -> Result<(), String> {
    // sled's flush writes its log, but on Linux it makes it stable only with
    // `sync_file_range`, which writes the pages and neither the file's metadata (the new size
    // of a grown log) nor the disk's volatile cache: not durable against a power cut (the
    // power-loss test loses acknowledged messages without the fdatasync below). So the data
    // file is fdatasync'd after every flush; one call covers the whole group.
    db.flush_async().await.map_err(|e| e.to_string())?;
    let file = Arc::clone(data_file);
    tokio::task::spawn_blocking(move || file.sync_data())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    if names != known.0 {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || fsync_dir(&dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        known.0 = names;
    }
    Ok(())
}

/// fsyncs every regular file in `dir` (sled's `db` and `conf`, its snapshots) and the
/// directory itself, so renames and new files are durable too.
pub(super) fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}
