//! The message log: where queue entries, their removals and the dedupe records of Sends are
//! written, instead of one sled write each.
//!
//! # Format
//!
//! An append-only log of [`Record`]s (`format.rs`) in segment files `log/<first seq>.log` next
//! to sled's directory. A record is what one store call did, applied together or not at all:
//! a Send is one record (its entries for every target device and its dedupe record) whatever
//! its fan-out; an Ack is one record (the removals). Each record carries a CRC.
//!
//! # Group commit
//!
//! Callers append to an in-memory buffer under a mutex (a copy and a CRC) and get the seqs of
//! their entries back at once. One writer thread takes the whole buffer, writes it with one
//! `write` and makes it stable with one `fdatasync`, then publishes the durable seq: every
//! record appended while a commit runs forms the next group. A new segment file is created
//! and the directory fsynced before any record is written into it. A segment is grown with
//! zeros 1 MiB at a time ahead of its records, so that most fdatasyncs flush data only, not
//! the file's size; replay reads the zeros after the last record as the segment's end.
//!
//! A commit that would start less than `writer::LINGER` (400 µs) after the previous one started
//! waits out the rest of it (unless its group is already large, or a retirement or the
//! shutdown asks): on a fast disk a bare loop would commit a handful of records per
//! fdatasync, paying a wake-up, a write, a sync and the waiters' wake-ups for each. The linger
//! bounds the commits to a few thousand per second and adds at most that much to an ack.
//!
//! # What is acknowledged, and when a device sees an entry
//!
//! - A ServerAck waits until the durable seq covers the Send's record ([`MsgLog::wait`]).
//! - A device is pushed an entry only once the durable seq covers it (the device actor reads
//!   [`MsgLog::durable`]), so a crash can never make a recipient see a message that the
//!   sender was not acknowledged and that a retry would not deduplicate: the record that
//!   holds the entry also holds the dedupe record.
//! - A removal (ack) is not waited for: lost in a crash, it means one redelivery, which the
//!   client deduplicates by msg_id.
//!
//! # State in memory, and where entries go when their segment retires
//!
//! The entries not yet removed and the dedupe records of the live segments are kept in memory
//! (the *index*); delivery never reads the log back. The active segment is closed when it
//! passes [`SEGMENT_BYTES`] or its first record is [`ROLL_AFTER`] old; then, on a thread of
//! its own (a retirement never holds up a commit), every closed segment *retires*: the entries it still holds (devices that are offline) move to sled's queue tree
//! and its dedupe records to sled's dedupe trees, sled is made durable, the retired seq is
//! recorded in sled (`log_retired_upto`), and only then are the files deleted. sled is thus
//! the store-and-forward store for offline devices and the older dedupe records; the log holds
//! the traffic of the last seconds. Every queue entry in sled has a lower seq than every entry
//! of the same device still in the log, so a device's queue is sled's part, then the log's.
//!
//! # Recovery
//!
//! At open, the segments are read in order and their records applied to the index, skipping
//! what retired. The last segment ends at its first record that is cut short or fails its
//! CRC (a torn write at a crash or power cut; nothing after it was acknowledged, since a
//! ServerAck waits for the fdatasync that covers its record) and is truncated there. A bad
//! record in an earlier segment is corruption (those were fsynced whole before the next one
//! started), and the open fails naming the file. An entry found in both the log and sled (a
//! crash in the middle of a retirement) is kept once, in sled.

mod format;
mod retire;
mod writer;

use std::collections::{BTreeMap, VecDeque};

use crate::maps::FastMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub use format::{encode_into, scan, Op, Record, Stop};
pub(super) use retire::{Retirer, RETIRED_UPTO_KEY};

use super::{QueueRecord, StoreError};
use crate::ids::{AccountId, DeviceId};

/// A segment is closed once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// A segment is closed once its first record is this old (so that entries of offline devices
/// and dedupe records leave memory for sled within about twice this: the log's memory holds
/// seconds of traffic, and sled's dedupe records reach their per-sender bound as soon as
/// they would without the log).
pub const ROLL_AFTER: Duration = Duration::from_secs(2);
/// Dedupe records kept in memory per sender; older ones are found in sled once their segment
/// retired (where `store::SEEN_PER_SENDER` bounds them).
const SEEN_IN_MEMORY_PER_SENDER: usize = super::SEEN_PER_SENDER;

use super::seen::SeenRecord;

/// A commit: every seq up to `upto` is durable; `devices` got entries in it.
#[derive(Debug)]
pub struct Commit {
    pub upto: u64,
    pub devices: Vec<DeviceId>,
}

/// The outcome of an append that names a Send's msg_id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written: the record's seqs.
    Written { first_seq: u64, last_seq: u64 },
    /// The sender's msg_id is already in the log, accepted at this time.
    Duplicate { timestamp_ms: u64, seq: u64 },
}

/// A sender's newest dedupe records, oldest first.
#[derive(Default)]
struct SenderSeen {
    order: VecDeque<[u8; 16]>,
    map: FastMap<[u8; 16], SeenRecord>,
}

impl SenderSeen {
    /// Adds a record, forgetting the oldest beyond the per-sender bound.
    fn insert(&mut self, r: SeenRecord) {
        let msg_id = r.msg_id;
        if self.map.insert(msg_id, r).is_none() {
            self.order.push_back(msg_id);
        }
        while self.order.len() > SEEN_IN_MEMORY_PER_SENDER {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// Everything the appenders and the writer share, behind one mutex.
struct State {
    /// Framed records appended and not yet taken by the writer.
    buf: Vec<u8>,
    next_seq: u64,
    /// Last seq appended (0: none since the open).
    appended: u64,
    /// Devices with entries in `buf` (only collected when someone listens for commits).
    touched: Vec<DeviceId>,
    pending: FastMap<DeviceId, BTreeMap<u64, Arc<QueueRecord>>>,
    pending_count: usize,
    /// Every sender's newest dedupe records: the only place dedupe questions are answered
    /// from (sled's are loaded at open).
    seen: FastMap<String, SenderSeen>,
    /// Dedupe records of the live segments, by seq: written to sled when their segment
    /// retires.
    unpersisted: BTreeMap<u64, (String, [u8; 16])>,
    shutdown: bool,
    /// A retirement of every closed segment was asked for (`retire_all`); the generation
    /// counts completed ones.
    retire_asked: bool,
    retired_generation: u64,
    /// Why the last announced retirement left segments behind.
    retire_error: Option<String>,
    failed: Option<Arc<str>>,
}

impl State {
    /// Frames `record` into the buffer and moves the seqs past it; true if the buffer was
    /// empty (the writer may be asleep).
    fn write(&mut self, record: &Record) -> bool {
        let was_empty = self.buf.is_empty();
        encode_into(&mut self.buf, record);
        self.next_seq = record.last_seq().saturating_add(1);
        self.appended = record.last_seq();
        was_empty
    }

    fn new(next_seq: u64) -> Self {
        Self {
            buf: Vec::new(),
            next_seq,
            appended: 0,
            touched: Vec::new(),
            pending: FastMap::default(),
            pending_count: 0,
            seen: FastMap::default(),
            unpersisted: BTreeMap::new(),
            shutdown: false,
            retire_asked: false,
            retired_generation: 0,
            retire_error: None,
            failed: None,
        }
    }
}

/// Durable progress, as the waiters see it.
#[derive(Clone, Debug, Default)]
struct Progress {
    durable: u64,
    failed: Option<Arc<str>>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for work.
    work: Condvar,
    /// Synchronous waiters (`sync`, `retire_all`) wait here.
    done: Condvar,
    durable: AtomicU64,
    progress: tokio::sync::watch::Sender<Progress>,
    commits: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Commit>>>,
    /// Someone listens for commits (appends then note the devices they touch).
    listening: std::sync::atomic::AtomicBool,
    /// Bumped whenever entries move from the log to sled (a reader that skipped sled's part
    /// of a queue must look again).
    epoch: AtomicU64,
    dir: PathBuf,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state whole before anything that can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stops the writer (after it wrote what was appended) when the last handle is dropped.
struct Owner {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("The message log's writer thread panicked.");
            }
        }
    }
}

/// Handle to the log. Cheap to clone.
#[derive(Clone)]
pub struct MsgLog {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// What recovery found, for the open to finish with sled's help.
pub(super) struct Recovered {
    pub log: MsgLog,
    pub records: usize,
    pub truncated: Option<(PathBuf, Stop)>,
}

impl MsgLog {
    /// Opens (creating if needed) the log in `dir`, replays it skipping records at or before
    /// `retired_upto`, drops replayed entries for which `in_sled` is true (a retirement cut
    /// short), and starts the writer thread. New seqs start above `seq_floor` and every seq in
    /// the log.
    pub(super) fn open(
        dir: &Path,
        retired_upto: u64,
        seq_floor: u64,
        in_sled: impl Fn(&DeviceId, u64) -> Result<bool, StoreError>,
        preloaded: Vec<(String, SeenRecord)>,
        retirer: Retirer,
    ) -> Result<Recovered, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let replay = writer::replay(dir, retired_upto)?;
        let mut state = State::new(replay.last_seq.saturating_add(1).max(seq_floor).max(1));
        // sled's dedupe records (older), then the log's.
        for (sender, r) in preloaded {
            state.seen.entry(sender).or_default().insert(r);
        }
        let records = replay.records.len();
        for record in replay.records {
            apply(&mut state, record, false)?;
        }
        // Entries a cut-short retirement already copied to sled stay there only.
        let mut doubles = Vec::new();
        for (d, entries) in &state.pending {
            for &seq in entries.keys() {
                if in_sled(d, seq)? {
                    doubles.push((d.clone(), seq));
                }
            }
        }
        for (d, seq) in doubles {
            remove_pending(&mut state, &d, seq);
        }
        state.appended = state.next_seq - 1;
        let durable = state.appended;
        let (progress, _) = tokio::sync::watch::channel(Progress {
            durable,
            failed: None,
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            work: Condvar::new(),
            done: Condvar::new(),
            durable: AtomicU64::new(durable),
            progress,
            commits: Mutex::new(None),
            listening: std::sync::atomic::AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            dir: dir.to_owned(),
        });
        let writer = writer::Writer::new(Arc::clone(&shared), replay.segments, retirer)?;
        let handle = std::thread::Builder::new()
            .name("relaybox-log".into())
            .spawn(move || writer.run())?;
        let owner = Arc::new(Owner {
            shared: Arc::clone(&shared),
            writer: Mutex::new(Some(handle)),
        });
        Ok(Recovered {
            log: MsgLog {
                shared,
                _owner: owner,
            },
            records,
            truncated: replay.truncated,
        })
    }

    /// Appends one record of `ops`: `Enqueue` ops get consecutive seqs from the record's
    /// first. With `dedupe`, the sender's msg_id is checked first, under the same lock: a
    /// msg_id already in the log is not written again.
    pub fn append(
        &self,
        ops: Vec<Op>,
        dedupe: Option<(&AccountId, &[u8; 16])>,
    ) -> Result<Appended, StoreError> {
        let mut state = self.shared.lock();
        if let Some(f) = &state.failed {
            return Err(failed(f));
        }
        if let Some((sender, msg_id)) = dedupe {
            if let Some(s) = state
                .seen
                .get(sender.as_str())
                .and_then(|s| s.map.get(msg_id))
            {
                return Ok(Appended::Duplicate {
                    timestamp_ms: s.timestamp_ms,
                    seq: s.seq,
                });
            }
        }
        // Checked before anything is written, so that applying the record cannot fail half way.
        for op in &ops {
            if let Op::Enqueue {
                account, device, ..
            }
            | Op::Remove {
                account, device, ..
            } = op
            {
                device_id(account, *device)?;
            }
        }
        let record = Record {
            first_seq: state.next_seq,
            ops,
        };
        let was_empty = state.write(&record);
        let (first_seq, last_seq) = (record.first_seq, record.last_seq());
        let listening = self.shared.listening.load(Ordering::Acquire);
        apply(&mut state, record, listening)?;
        drop(state);
        if was_empty {
            self.shared.work.notify_one();
        }
        Ok(Appended::Written {
            first_seq,
            last_seq,
        })
    }

    /// Removes entries from a device's queue in the log and records the removal; returns the
    /// ones that were there (others may be in sled's part of the queue).
    pub fn remove(
        &self,
        d: &DeviceId,
        seqs: &[u64],
    ) -> Result<Vec<(u64, Arc<QueueRecord>)>, StoreError> {
        let mut state = self.shared.lock();
        let mut removed = Vec::new();
        if let Some(entries) = state.pending.get_mut(d) {
            for &seq in seqs {
                if let Some(rec) = entries.remove(&seq) {
                    removed.push((seq, rec));
                }
            }
            if entries.is_empty() {
                state.pending.remove(d);
            }
        }
        if removed.is_empty() {
            return Ok(removed);
        }
        state.pending_count -= removed.len();
        if let Some(f) = &state.failed {
            return Err(failed(f));
        }
        let record = Record {
            first_seq: state.next_seq,
            ops: vec![Op::Remove {
                account: d.account.to_string(),
                device: d.device,
                seqs: removed.iter().map(|(s, _)| *s).collect(),
            }],
        };
        let was_empty = state.write(&record);
        drop(state);
        if was_empty {
            self.shared.work.notify_one();
        }
        Ok(removed)
    }

    /// Up to `limit` entries of the device's queue in the log with seq above `after` and at
    /// most `upto`, in order.
    pub fn range(
        &self,
        d: &DeviceId,
        after: Option<u64>,
        upto: u64,
        limit: usize,
    ) -> Vec<(u64, QueueRecord)> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        if from > upto {
            return Vec::new();
        }
        let state = self.shared.lock();
        state.pending.get(d).map_or_else(Vec::new, |entries| {
            entries
                .range(from..=upto)
                .take(limit)
                .map(|(&seq, rec)| (seq, QueueRecord::clone(rec)))
                .collect()
        })
    }

    /// Entries of the device in the log.
    pub fn len_of(&self, d: &DeviceId) -> usize {
        self.shared.lock().pending.get(d).map_or(0, BTreeMap::len)
    }

    /// Entries of every device in the log.
    pub fn pending_count(&self) -> usize {
        self.shared.lock().pending_count
    }

    /// Every device's entries enqueued before `cutoff_ms`, and the dedupe records older than
    /// it, removed (retention ran out).
    pub fn sweep(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let expired: Vec<(DeviceId, Vec<u64>)> = {
            let state = self.shared.lock();
            state
                .pending
                .iter()
                .filter_map(|(d, entries)| {
                    let seqs: Vec<u64> = entries
                        .iter()
                        .filter(|(_, r)| r.enqueued_at_ms < cutoff_ms)
                        .map(|(s, _)| *s)
                        .collect();
                    (!seqs.is_empty()).then(|| (d.clone(), seqs))
                })
                .collect()
        };
        let mut n = 0;
        for (d, seqs) in expired {
            n += self.remove(&d, &seqs)?.len();
        }
        let mut state = self.shared.lock();
        state.seen.retain(|_, s| {
            s.map.retain(|_, r| r.timestamp_ms >= cutoff_ms);
            s.order.retain(|m| s.map.contains_key(m));
            !s.order.is_empty()
        });
        Ok(n)
    }

    /// Every entry of a device, removed (the device was unlinked).
    pub fn forget_device(&self, d: &DeviceId) -> Result<(), StoreError> {
        let seqs: Vec<u64> = self
            .shared
            .lock()
            .pending
            .get(d)
            .map(|e| e.keys().copied().collect())
            .unwrap_or_default();
        self.remove(d, &seqs).map(|_| ())
    }

    /// The dedupe record of `msg_id` from `sender`, if the relay remembers it.
    pub fn seen(&self, sender: &AccountId, msg_id: &[u8; 16]) -> Option<SeenRecord> {
        self.shared
            .lock()
            .seen
            .get(sender.as_str())
            .and_then(|s| s.map.get(msg_id))
            .cloned()
    }

    /// The highest seq on disk: entries up to it may be delivered.
    pub fn durable(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// The last seq appended.
    pub fn appended(&self) -> u64 {
        self.shared.lock().appended
    }

    /// Changes whenever entries moved to sled (see [`Shared::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::Acquire)
    }

    /// Waits until every seq up to `seq` is on disk.
    pub async fn wait(&self, seq: u64) -> Result<(), StoreError> {
        let mut rx = self.shared.progress.subscribe();
        loop {
            {
                let p = rx.borrow_and_update();
                if let Some(f) = &p.failed {
                    return Err(failed(f));
                }
                if p.durable >= seq {
                    return Ok(());
                }
            }
            rx.changed().await.map_err(|_| StoreError::BarrierClosed)?;
        }
    }

    /// Blocks until everything appended so far is on disk.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        let target = state.appended;
        self.shared.work.notify_one();
        loop {
            if let Some(f) = &state.failed {
                return Err(failed(f));
            }
            if self.durable() >= target {
                return Ok(());
            }
            state = self
                .shared
                .done
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Blocks until every entry and dedupe record appended so far is in sled, durably (for a
    /// consistent backup image of sled alone).
    pub fn retire_all(&self) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        let generation = state.retired_generation;
        state.retire_asked = true;
        self.shared.work.notify_one();
        loop {
            if let Some(f) = &state.failed {
                return Err(failed(f));
            }
            if state.retired_generation > generation {
                return match &state.retire_error {
                    None => Ok(()),
                    Some(e) => Err(StoreError::Io(std::io::Error::other(e.clone()))),
                };
            }
            state = self
                .shared
                .done
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// From now on, every commit is announced on the returned channel (the relay's dispatcher
    /// wakes the device actors that got entries). One listener.
    pub fn commits(&self) -> tokio::sync::mpsc::UnboundedReceiver<Commit> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self
            .shared
            .commits
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(tx);
        self.shared.listening.store(true, Ordering::Release);
        rx
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

/// What recovery makes of one segment's bytes, without touching a disk: how many whole
/// records it holds, the entries they leave queued, and why the valid part ended early, or
/// the error that would fail the open (a record naming a malformed account). For the fuzz
/// target and tests: [`MsgLog::open`] does the same over every segment file.
pub fn recover_bytes(bytes: &[u8]) -> Result<(usize, usize, Option<Stop>), StoreError> {
    let (records, _, stop) = scan(bytes);
    let mut state = State::new(1);
    let n = records.len();
    for record in records {
        apply(&mut state, record, false)?;
    }
    Ok((n, state.pending_count, stop))
}

fn failed(reason: &str) -> StoreError {
    StoreError::Io(std::io::Error::other(format!(
        "the message log cannot be written ({reason}); the relay accepts no messages until it is restarted"
    )))
}

/// Applies a record's ops to the index; with `touched`, notes the devices that got entries.
fn apply(state: &mut State, record: Record, touched: bool) -> Result<(), StoreError> {
    let mut seq = record.first_seq;
    for op in record.ops {
        match op {
            Op::Enqueue {
                account,
                device,
                record: rec,
            } => {
                let d = device_id(&account, device)?;
                if touched {
                    state.touched.push(d.clone());
                }
                if state
                    .pending
                    .entry(d)
                    .or_default()
                    .insert(seq, Arc::new(rec))
                    .is_none()
                {
                    state.pending_count += 1;
                }
                seq += 1;
            }
            Op::Seen {
                sender,
                msg_id,
                timestamp_ms,
                recipients,
            } => {
                state
                    .unpersisted
                    .insert(record.first_seq, (sender.clone(), msg_id));
                state.seen.entry(sender).or_default().insert(SeenRecord {
                    msg_id,
                    timestamp_ms,
                    seq: record.first_seq,
                    recipients: Some(recipients),
                });
            }
            Op::Remove {
                account,
                device,
                seqs,
            } => {
                let d = device_id(&account, device)?;
                for s in seqs {
                    remove_pending(state, &d, s);
                }
            }
        }
    }
    Ok(())
}

fn remove_pending(state: &mut State, d: &DeviceId, seq: u64) -> Option<Arc<QueueRecord>> {
    let entries = state.pending.get_mut(d)?;
    let rec = entries.remove(&seq)?;
    if entries.is_empty() {
        state.pending.remove(d);
    }
    state.pending_count -= 1;
    Some(rec)
}

fn device_id(account: &str, device: u32) -> Result<DeviceId, StoreError> {
    let a = AccountId::parse(account)
        .map_err(|e| super::corrupt("log", format!("bad account {account:?} in a record: {e}")))?;
    Ok(DeviceId::new(a, device))
}

#[cfg(test)]
mod tests;
