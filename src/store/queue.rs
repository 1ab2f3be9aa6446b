//! Per-device delivery queues and the dedupe records of sent message ids.
//!
//! New entries and dedupe records are written to the message log (`msglog`); a device's queue
//! is the entries sled holds for it (moved there when their log segment retired, or written
//! by a release before the log), then the entries in the log, in seq order. Seqs come from
//! the log, above every seq sled's id generator handed out before it.

use serde::{Deserialize, Serialize};

use super::msglog::{self, Appended};
use super::{decode, keys, Store, StoreError};
use crate::ids::{AccountId, DeviceId, MsgId};

const TREE: &str = "deviceseq_queuerecord";

/// Something waiting for a device. The relay never sees plaintext: a message is the
/// ciphertext of one envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueItem {
    Message {
        msg_id: [u8; 16],
        from: String,
        from_device: u32,
        timestamp_ms: u64,
        olm_type: u32,
        /// Shared with the frame it arrived in and the frames it is pushed in (serialised as
        /// bytes, as `serde_bytes` did for the `Vec<u8>` it was).
        ciphertext: bytes::Bytes,
        kind: i32,
        /// Group id for a group message, empty for 1:1.
        group: String,
    },
    Receipt {
        from: String,
        from_device: u32,
        kind: i32,
        msg_ids: Vec<[u8; 16]>,
        timestamp_ms: u64,
    },
    /// A group changed (system event).
    GroupEvent {
        group: String,
        version: u64,
        actor: String,
        op: i32,
        accounts: Vec<String>,
        subject: String,
        timestamp_ms: u64,
    },
    /// A correspondent's device list changed.
    DevicesChanged { account: String, devices: Vec<u32> },
    /// A message of a business-entity customer thread (see `actors::entity`).
    EntityMessage {
        msg_id: [u8; 16],
        /// Who the recipient sees as the sender: the customer, or the entity's handle.
        from: String,
        from_device: u32,
        timestamp_ms: u64,
        olm_type: u32,
        /// Shared with the frame it arrived in and the frames it is pushed in (serialised as
        /// bytes, as `serde_bytes` did for the `Vec<u8>` it was).
        ciphertext: bytes::Bytes,
        kind: i32,
        entity: String,
        /// To a customer: the agent whose session encrypted it, and its display name.
        agent: String,
        agent_device: u32,
        attribution: String,
        /// To an agent or the administrator: whose thread it is.
        customer: String,
    },
    /// A customer thread's routing changed (ids only).
    EntityEvent {
        entity: String,
        customer: String,
        kind: i32,
        agent: String,
        actor: String,
        timestamp_ms: u64,
    },
}

/// A stored queue entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    pub enqueued_at_ms: u64,
    pub item: QueueItem,
}

impl Store {
    /// Appends to the device's queue (in the message log); returns the entry's seq. Not
    /// durable until the log's durable seq covers it (`Durability::wait` waits for that).
    pub fn queue_push(&self, d: &DeviceId, rec: &QueueRecord) -> Result<u64, StoreError> {
        self.queue_append(vec![(d.clone(), rec.clone())])
    }

    /// Appends entries for several devices as one log record; returns its last seq.
    pub fn queue_append(&self, entries: Vec<(DeviceId, QueueRecord)>) -> Result<u64, StoreError> {
        let _gate = self.writing();
        match self.log.append(enqueue_ops(entries), None)? {
            Appended::Written { last_seq, .. } => Ok(last_seq),
            Appended::Duplicate { seq, .. } => Ok(seq),
        }
    }

    /// Appends a Send: its entries and its dedupe record, as one log record, unless the
    /// sender's msg_id is already in the log (then nothing is written). Check sled's older
    /// dedupe records with [`Store::seen_get`] first.
    pub fn send_append(
        &self,
        sender: &AccountId,
        msg: &MsgId,
        timestamp_ms: u64,
        recipients: Vec<String>,
        entries: Vec<(DeviceId, QueueRecord)>,
    ) -> Result<Appended, StoreError> {
        let _gate = self.writing();
        let mut ops = enqueue_ops(entries);
        ops.push(msglog::Op::Seen {
            sender: sender.to_string(),
            msg_id: msg.0,
            timestamp_ms,
            recipients,
        });
        self.log.append(ops, Some((sender, &msg.0)))
    }

    /// Up to `limit` entries with seq greater than `after` (all if `None`), in order: sled's
    /// part of the queue (entries of offline devices whose log segment retired), then the
    /// log's, committed or not.
    pub fn queue_range(
        &self,
        d: &DeviceId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, QueueRecord)>, StoreError> {
        Ok(self.queue_next(d, after, u64::MAX, limit, false)?.0)
    }

    /// As [`Store::queue_range`], only entries up to seq `upto` (the log's durable seq, for
    /// delivery). With `skip_sled`, sled's part is not read. Also answers whether sled's part
    /// ended within these entries (so a reader may skip it until [`Store::queue_epoch`]
    /// changes).
    pub fn queue_next(
        &self,
        d: &DeviceId,
        after: Option<u64>,
        upto: u64,
        limit: usize,
        skip_sled: bool,
    ) -> Result<(Vec<(u64, QueueRecord)>, bool), StoreError> {
        let mut out = Vec::new();
        let mut sled_done = skip_sled;
        if !skip_sled {
            let start = match after {
                Some(s) => keys::queue(d, s.saturating_add(1)),
                None => keys::device(d),
            };
            let prefix = keys::device(d);
            sled_done = true;
            for kv in self.t.deviceseq_queuerecord.range(start..) {
                let (k, v) = kv?;
                if !k.starts_with(&prefix) {
                    break;
                }
                if out.len() >= limit {
                    sled_done = false;
                    break;
                }
                let seq =
                    keys::parse_queue_seq(&k).ok_or_else(|| super::corrupt(TREE, "bad key"))?;
                if seq > upto {
                    break;
                }
                out.push((seq, decode(TREE, &v)?));
            }
        }
        if out.len() < limit {
            // During a retirement an entry is in both; sled's copy was taken.
            let after = match (after, out.last()) {
                (a, Some((s, _))) => Some(a.map_or(*s, |a| a.max(*s))),
                (a, None) => a,
            };
            out.extend(self.log.range(d, after, upto, limit - out.len()));
        }
        Ok((out, sled_done))
    }

    /// Changes whenever entries move from the log to sled's part of the queues.
    pub fn queue_epoch(&self) -> u64 {
        self.log.epoch()
    }

    /// Deletes an entry (the device acknowledged it); returns it if it existed.
    pub fn queue_remove(&self, d: &DeviceId, seq: u64) -> Result<Option<QueueRecord>, StoreError> {
        Ok(self.queue_remove_many(d, &[seq])?.pop())
    }

    /// Deletes entries (the device acknowledged them) with one log record; returns those
    /// that existed, in the order of `seqs`.
    pub fn queue_remove_many(
        &self,
        d: &DeviceId,
        seqs: &[u64],
    ) -> Result<Vec<QueueRecord>, StoreError> {
        let _gate = self.writing();
        let from_log = self.log.remove(d, seqs)?;
        let mut out = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            if let Some((_, rec)) = from_log.iter().find(|(s, _)| *s == seq) {
                out.push(QueueRecord::clone(rec));
            } else if let Some(v) = self
                .t
                .counts
                .remove_retired(&self.t.deviceseq_queuerecord, keys::queue(d, seq))?
            {
                out.push(decode(TREE, &v)?);
            }
        }
        Ok(out)
    }

    pub fn queue_len(&self, d: &DeviceId) -> Result<usize, StoreError> {
        Ok(self
            .t
            .deviceseq_queuerecord
            .scan_prefix(keys::device(d))
            .count()
            + self.log.len_of(d))
    }

    /// Deletes entries enqueued before `cutoff_ms` (retention ran out) and dedupe records
    /// older than it; returns how many entries.
    pub fn queue_sweep(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let _gate = self.writing();
        let mut n = self.log.sweep(cutoff_ms)?;
        for kv in self.t.deviceseq_queuerecord.iter() {
            let (k, v) = kv?;
            let rec: QueueRecord = decode(TREE, &v)?;
            if rec.enqueued_at_ms < cutoff_ms {
                self.t
                    .counts
                    .remove_retired(&self.t.deviceseq_queuerecord, k)?;
                n += 1;
            }
        }
        let mut batches = self.seen_batches.lock().unwrap_or_else(|p| p.into_inner());
        super::seen::sweep(&self.t, &mut batches, cutoff_ms)?;
        Ok(n)
    }

    /// The timestamp given to a message already accepted from `sender` with `msg`, if the
    /// relay remembers it (from memory: see `seen.rs`).
    pub fn seen_get(&self, sender: &AccountId, msg: &MsgId) -> Result<Option<u64>, StoreError> {
        Ok(self.log.seen(sender, &msg.0).map(|s| s.timestamp_ms))
    }

    /// Who may send receipts for `msg` from `sender`: `None` if the relay has no record of it
    /// (never sent, or forgotten: past the retention or the per-sender bound), `Some(None)` for
    /// a record written before recipients were recorded (anyone it reached may answer).
    pub fn seen_recipients(
        &self,
        sender: &AccountId,
        msg: &MsgId,
    ) -> Result<Option<Option<Vec<String>>>, StoreError> {
        Ok(self.log.seen(sender, &msg.0).map(|s| s.recipients))
    }
}

/// The log ops that queue `entries`.
fn enqueue_ops(entries: Vec<(DeviceId, QueueRecord)>) -> Vec<msglog::Op> {
    entries
        .into_iter()
        .map(|(d, record)| msglog::Op::Enqueue {
            account: d.account.to_string(),
            device: d.device,
            record,
        })
        .collect()
}
