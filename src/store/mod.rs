//! The store: the only code that imports sled. It offers typed, domain-level operations
//! (register a device, enqueue, ack, claim a one-time key, …), owns key encoding (`keys`) and
//! the durability barrier (`durability`), and keeps the rest of the relay ignorant of the
//! engine, so that the engine could be changed here and nowhere else.
//!
//! # What sled guarantees, and what the relay does about it
//!
//! - **Writes are not durable when `insert` returns.** sled buffers writes in its log and
//!   fsyncs in the background (every 500 ms by default). Only after `flush`/`flush_async`
//!   returns are all earlier writes on disk. The relay therefore acknowledges nothing before
//!   [`Durability::wait`] returns: a group commit over `flush_async` (which writes sled's log
//!   but makes it stable only with `sync_file_range`) and an fdatasync of sled's data file,
//!   plus an fsync of any new file and of the directory whenever
//!   the directory's contents changed (sled snapshots, new segments), shared by every writer
//!   waiting at that moment.
//! - **Recovery yields a prefix.** After a crash sled recovers a prefix of the writes in the
//!   order they were made (its log is sequential), and so does the message log (`msglog`).
//!   Queue entries and the dedupe ("seen") record of a `Send` are one record of the message
//!   log, so a surviving dedupe record implies surviving entries, and a retry after a crash is
//!   deduplicated if and only if its entries survived.
//! - **Delivery follows durability.** A device is pushed an entry only once the message log's
//!   fdatasync covers it (`msglog`), so no recipient sees a message a crash could take back.
//! - **Single-key operations are atomic** (`insert`, `remove`, `compare_and_swap`); there are
//!   no multi-tree transactions here. Where two keys must change together, the code orders the
//!   writes so that every crash prefix is a state the relay can continue from, and says so.
//! - **Memory follows the data.** sled 0.34 keeps the records of a tree that only grows in
//!   memory whatever `cache_capacity` says (measured: about 150 bytes per dedupe record with a
//!   1 MiB cache). So nothing that grows with traffic stays: queue entries leave on ack, and the
//!   dedupe records are capped per sender ([`SEEN_PER_SENDER`]), in memory, where every dedupe
//!   question is answered, and in sled, where they are kept for a restart (`seen.rs`).
//! - **Messages do not go through sled on their way.** Queue entries, acks and dedupe records
//!   are written to the message log (`msglog`); sled holds the relay's state (accounts,
//!   devices, keys, groups, entities, contacts, mutes, blocks, bans), and the queue entries and
//!   dedupe records older than the log's last seconds, moved there when a segment retires
//!   (the dedupe records as one sled write per sender and segment, not one per message).
//! - **One process.** sled takes a file lock on the directory, so a second relay on the same
//!   data directory fails to start instead of corrupting it.
//! - **The on-disk format is tied to sled 0.34** (hence the exact pin in Cargo.toml).

mod abuse;
pub mod abuse_stats;
mod accounts;
mod backup;
mod blob_access;
mod blobs;
mod codes;
mod contacts;
mod durability;
mod entities;
mod groups;
mod keydir;
pub mod keys;
mod meta;
mod mqtt;
pub mod msglog;
mod mutes;
mod queue;
mod seen;
mod space;
mod stats;
mod tokens;
mod trees;

use std::path::{Path, PathBuf};

pub use abuse::{AbuseRecord, Ban, Verdict, Watch, MAX_HISTORY};
pub use abuse_stats::{AbuseStats, SendFacts, WindowMetrics};
pub use accounts::DeviceRecord;
pub use backup::ImageStats;
pub use blob_access::BlobScope;
pub use blobs::{BlobRecord, BlobState, CommitOutcome, PendingOutcome};
pub use codes::CodeRecord;
pub use durability::Durability;
pub use entities::{AssignPolicy, EntityRecord, EntityThreadRecord, RoutingStep};
pub use groups::GroupRecord;
pub use keydir::{ClaimedKey, IdentityKeys, IdentityOutcome};
pub use meta::SCHEMA_VERSION;

/// How many of a sender account's newest message ids the store remembers to deduplicate
/// retries (within `messaging.retention`). A client retries the messages it has in flight,
/// which is far fewer; the bound keeps the records, which are held in memory, from growing
/// with the traffic.
pub const SEEN_PER_SENDER: usize = 1024;

/// The store's page cache unless `relay.store_cache_bytes` says otherwise (16 MiB).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// The smallest page cache the relay accepts (1 MiB).
pub const MIN_CACHE_BYTES: u64 = 1024 * 1024;
pub use mqtt::{MqttDeviceRecord, OutboxRecord};
pub use mutes::MUTE_FOREVER;
pub use queue::{QueueItem, QueueRecord};
pub use stats::{AccountSummary, StoreCounts};
use trees::Trees;

/// Failures of the store. All of them are the relay's (or its disk's) fault, never a peer's.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (an I/O error, or corruption it detected).
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    /// Another process (a running relay) holds the database's lock.
    #[error("the database {} is in use by another process (is a relay running on this data directory? stop it first)", .0.display())]
    Locked(std::path::PathBuf),
    /// A stored value or key does not decode: the data directory is damaged or was written by
    /// an incompatible version.
    #[error("corrupt record in {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    /// Fsync of the data files failed.
    #[error("fsync of the data directory failed: {0}")]
    Io(#[from] std::io::Error),
    /// The durability task is gone (the relay is shutting down).
    #[error("durability barrier unavailable (shutting down)")]
    BarrierClosed,
    /// A store image being restored is damaged or not an image (the backup file's fault).
    #[error("bad store image: {0}")]
    BadImage(String),
    /// The data directory's filesystem has less free space than `relay.min_free_disk_bytes`:
    /// new writes are refused until space is freed (the operator's disk, not the peer).
    #[error("storage full: {free_bytes} bytes free, the relay keeps at least {min_free_bytes}")]
    StorageFull {
        free_bytes: u64,
        min_free_bytes: u64,
    },
}

/// How long an open waits for sled's file lock to be released (see `Store::open_with_cache`).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether sled refused to open because another handle holds the database's file lock. sled
/// reports it only as an `Other` I/O error with this message (sled 0.34, `config.rs`).
fn is_locked(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::Other
            && io.to_string().contains("could not acquire lock"))
}

/// A handle to the relay's database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    t: Trees,
    dir: PathBuf,
    /// Device lists read on every send, cached; every write of `accountdevice_record` goes
    /// through `accounts.rs`, which invalidates the account's entry.
    devices: accounts::DeviceCache,
    /// The write gate: shared by every write path, exclusive for a consistent export
    /// (`backup.rs`).
    gate: std::sync::Arc<std::sync::RwLock<()>>,
    /// See [`Store::next_id`].
    id_offset: u64,
    /// The free-space watermark (`space.rs`).
    space: space::Watermark,
    bans: abuse::BanCache,
    blocks: abuse::BlockCache,
    /// Each account's abuse metrics, counted in memory and written back in batches.
    abuse_metrics: abuse::StatsCache,
    entity_phones: entities::EntityPhones,
    mutes: mutes::MuteCache,
    /// Answers of `has_contact` (asked on every 1:1 send), dropped whole whenever any
    /// contact list changes (`contacts.rs` is the only writer of the reverse index).
    contact_answers: contacts::ContactCache,
    /// Queue entries and dedupe records (`msglog`).
    log: msglog::MsgLog,
    /// sled's dedupe batches per sender (`seen.rs`), for the retention sweep.
    seen_batches: std::sync::Arc<std::sync::Mutex<seen::Batches>>,
}

impl Store {
    /// Opens (creating if needed) the database under `dir/db` with the default cache.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (creating if needed) the database under `dir/db`, keeping at most `cache_bytes`
    /// of its pages in memory (`relay.store_cache_bytes`).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let path = dir.join("db");
        make_private(&path)?;
        let config = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_bytes.max(MIN_CACHE_BYTES));
        // sled releases its file lock when its background flusher notices that the last
        // handle was dropped, a moment after the drop: a reopen in the same process (a restore,
        // the offline commands, tests) may meet the lock still held. Wait a little for it;
        // another process holding it for longer is named in the error.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Err(e) if is_locked(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) if is_locked(&e) => return Err(StoreError::Locked(path)),
                other => break other?,
            }
        };
        let t = Trees::open(&db)?;
        meta::migrate(&t)?;
        // Before the log opens: its recovery may retire entries, which moves the counts.
        t.counts.load(&t)?;
        let id_offset = meta::id_offset(&t)?;
        let bans = abuse::BanCache::load(&t.account_abuserecord)?;
        let blocks = abuse::BlockCache::load(&t.blockeraccount_)?;
        let mutes = mutes::MuteCache::load(&t.accountthread_muteuntil)?;
        let entity_phones = entities::EntityPhones::load(&t.phone_entity)?;
        let (log, seen_batches) = open_log(dir, &db, &t, &path, id_offset)?;
        Ok(Self {
            id_offset,
            db,
            t,
            dir: path,
            devices: accounts::DeviceCache::default(),
            gate: std::sync::Arc::default(),
            space: space::Watermark::default(),
            bans,
            blocks,
            abuse_metrics: abuse::StatsCache::default(),
            entity_phones,
            mutes,
            contact_answers: contacts::ContactCache::default(),
            log,
            seen_batches,
        })
    }

    /// Starts the group-commit task. Call once, inside the runtime. Fails when sled's data
    /// file cannot be opened for the barrier's fdatasync.
    pub fn durability(&self) -> Result<Durability, StoreError> {
        Ok(Durability::spawn(
            self.db.clone(),
            self.dir.clone(),
            self.log.clone(),
        )?)
    }

    /// The message log (the device actors read its durable seq; the relay listens for its
    /// commits).
    pub fn log(&self) -> &msglog::MsgLog {
        &self.log
    }

    /// Flushes everything synchronously (shutdown, tests).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.abuse_stats_flush()?;
        self.log.sync()?;
        self.db.flush()?;
        durability::fsync_dir(&self.dir)?;
        Ok(())
    }

    /// Approximate bytes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// Opens the message log in `dir/log`, replaying what did not retire into sled yet.
fn open_log(
    dir: &Path,
    db: &sled::Db,
    t: &Trees,
    db_dir: &Path,
    id_offset: u64,
) -> Result<
    (
        msglog::MsgLog,
        std::sync::Arc<std::sync::Mutex<seen::Batches>>,
    ),
    StoreError,
> {
    let retired_upto = match t.meta_value.get(msglog::RETIRED_UPTO_KEY)? {
        None => 0,
        Some(v) => <[u8; 8]>::try_from(v.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt("meta_value", "log_retired_upto is not a u64"))?,
    };
    // New seqs sort after every seq sled's generator handed out (queues written before the
    // log, or restored from an image).
    let floor = db
        .generate_id()?
        .checked_add(id_offset)
        .ok_or_else(|| corrupt("meta_value", "id space exhausted"))?;
    let queue = t.deviceseq_queuerecord.clone();
    let (preloaded, batches) = seen::load(t)?;
    let batches = std::sync::Arc::new(std::sync::Mutex::new(batches));
    let retirer = msglog::Retirer {
        db: db.clone(),
        t: t.clone(),
        db_dir: db_dir.to_owned(),
        batches: batches.clone(),
    };
    let recovered = msglog::MsgLog::open(
        &dir.join("log"),
        retired_upto,
        floor,
        |d, seq| Ok(queue.contains_key(keys::queue(d, seq))?),
        preloaded,
        retirer,
    )?;
    if let Some((path, stop)) = &recovered.truncated {
        tracing::warn!(segment = %path.display(), reason = %stop, "Message log: a torn record at the end was cut off.");
    }
    tracing::debug!(records = recovered.records, "Message log replayed.");
    Ok((recovered.log, batches))
}

/// fsyncs every file under `dir`, every directory in it and `dir` itself (after a restore).
pub fn fsync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fsync_tree(&entry.path())?;
        }
    }
    durability::fsync_dir(dir)
}

/// Creates sled's directory 0700 and takes group and other access from everything already in
/// it (a data directory written before the relay set its umask had 0755 / 0644).
fn make_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

fn corrupt(tree: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree,
        detail: detail.to_string(),
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // postcard cannot fail to serialise the plain structs of this module into a Vec.
    postcard::to_allocvec(v).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(tree: &'static str, b: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(b).map_err(|e| corrupt(tree, e))
}

#[cfg(test)]
mod tests;
