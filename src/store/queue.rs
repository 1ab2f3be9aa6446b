//! Per-device delivery queues and the dedupe record of sent message ids.
//!
//! Only the device's actor writes its queue, so entries of one device are inserted in `seq`
//! order; `seq` comes from sled's monotonic id generator (unique across restarts).

use serde::{Deserialize, Serialize};

use super::{decode, encode, keys, Store, StoreError};
use crate::ids::{AccountId, DeviceId, MsgId};

const TREE: &str = "deviceseq_queuerecord";

/// A sender's dedupe records are pruned to its newest ones every PRUNE_EVERY records.
const PRUNE_EVERY: u32 = 64;

/// Per sender (key prefix), dedupe records written since its last prune. In memory: one
/// small entry per account that sent since the start.
#[derive(Clone, Default)]
pub(super) struct SeenCounts(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Vec<u8>, u32>>>,
);

impl SeenCounts {
    /// Counts one record for `prefix`; true when it is time to prune that sender.
    fn bump(&self, prefix: &[u8]) -> bool {
        // A poisoned lock only means another thread panicked mid-count; the counts are hints.
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(prefix.to_vec()).or_insert(0);
        *n += 1;
        if *n >= PRUNE_EVERY {
            *n = 0;
            true
        } else {
            false
        }
    }
}

/// A dedupe record's value: its timestamp and, unless it predates the order tree, its id.
fn seen_value(v: &[u8]) -> (u64, Option<u64>) {
    let ts = v
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes);
    let id = v
        .get(8..16)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes);
    (ts, id)
}

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
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
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
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
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
    /// Appends to the device's queue; returns the entry's seq.
    pub fn queue_push(&self, d: &DeviceId, rec: &QueueRecord) -> Result<u64, StoreError> {
        let _gate = self.writing();
        let seq = self.next_id()?;
        self.t
            .deviceseq_queuerecord
            .insert(keys::queue(d, seq), encode(rec))?;
        Ok(seq)
    }

    /// Up to `limit` entries with seq greater than `after` (all if `None`), in order.
    pub fn queue_range(
        &self,
        d: &DeviceId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, QueueRecord)>, StoreError> {
        self.queue_range_before(d, after, None, limit)
    }

    /// As [`Store::queue_range`], stopping before seq `before` (exclusive) if given.
    pub fn queue_range_before(
        &self,
        d: &DeviceId,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, QueueRecord)>, StoreError> {
        let start = match after {
            Some(s) => keys::queue(d, s.saturating_add(1)),
            None => keys::device(d),
        };
        let prefix = keys::device(d);
        let mut out = Vec::new();
        for kv in self.t.deviceseq_queuerecord.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let seq = keys::parse_queue_seq(&k).ok_or_else(|| super::corrupt(TREE, "bad key"))?;
            if before.is_some_and(|b| seq >= b) {
                break;
            }
            out.push((seq, decode(TREE, &v)?));
        }
        Ok(out)
    }

    /// Deletes an entry (the device acknowledged it); returns it if it existed.
    pub fn queue_remove(&self, d: &DeviceId, seq: u64) -> Result<Option<QueueRecord>, StoreError> {
        let _gate = self.writing();
        self.t
            .deviceseq_queuerecord
            .remove(keys::queue(d, seq))?
            .map(|v| decode(TREE, &v))
            .transpose()
    }

    pub fn queue_len(&self, d: &DeviceId) -> Result<usize, StoreError> {
        Ok(self
            .t
            .deviceseq_queuerecord
            .scan_prefix(keys::device(d))
            .count())
    }

    /// Deletes entries enqueued before `cutoff_ms` (retention ran out); returns the devices
    /// that lost entries and how many in total.
    pub fn queue_sweep(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let _gate = self.writing();
        let mut n = 0;
        for kv in self.t.deviceseq_queuerecord.iter() {
            let (k, v) = kv?;
            let rec: QueueRecord = decode(TREE, &v)?;
            if rec.enqueued_at_ms < cutoff_ms {
                self.t.deviceseq_queuerecord.remove(k)?;
                n += 1;
            }
        }
        for kv in self.t.sendermsgid_timestamp.iter() {
            let (k, v) = kv?;
            let (ts, id) = seen_value(&v);
            if ts < cutoff_ms {
                self.t.sendermsgid_timestamp.remove(&k)?;
                if let Some(id) = id {
                    let sender = &k[..k.len().saturating_sub(16)];
                    self.t.senderid_msgid.remove(keys::seen_order(sender, id))?;
                }
            }
        }
        Ok(n)
    }

    /// The timestamp given to a message already accepted from `sender` with `msg`, if any.
    pub fn seen_get(&self, sender: &AccountId, msg: &MsgId) -> Result<Option<u64>, StoreError> {
        Ok(self
            .t
            .sendermsgid_timestamp
            .get(keys::seen(sender, msg))?
            .map(|v| seen_value(&v).0))
    }

    /// Who may send receipts for `msg` from `sender`: `None` if the relay has no record of it
    /// (never sent, or forgotten: past the retention or the per-sender bound), `Some(None)` for
    /// a record written before recipients were recorded (anyone it reached may answer).
    pub fn seen_recipients(
        &self,
        sender: &AccountId,
        msg: &MsgId,
    ) -> Result<Option<Option<Vec<String>>>, StoreError> {
        let Some(v) = self.t.sendermsgid_timestamp.get(keys::seen(sender, msg))? else {
            return Ok(None);
        };
        match v.get(16..) {
            None | Some([]) => Ok(Some(None)),
            Some(rest) => Ok(Some(Some(decode("sendermsgid_timestamp", rest)?))),
        }
    }

    /// Records that `msg` from `sender` was accepted at `timestamp_ms` and queued for the
    /// devices of `recipients`. Write it *after* the queue entries it guards (see the module
    /// docs of `store`).
    pub fn seen_put(
        &self,
        sender: &AccountId,
        msg: &MsgId,
        timestamp_ms: u64,
        recipients: &[String],
    ) -> Result<(), StoreError> {
        let _gate = self.writing();
        let id = self.next_id()?;
        let prefix = keys::account_prefix(sender);
        self.t
            .senderid_msgid
            .insert(keys::seen_order(&prefix, id), &msg.0)?;
        let mut value = Vec::with_capacity(32);
        value.extend_from_slice(&timestamp_ms.to_be_bytes());
        value.extend_from_slice(&id.to_be_bytes());
        value.extend_from_slice(&encode(&recipients));
        self.t
            .sendermsgid_timestamp
            .insert(keys::seen(sender, msg), value)?;
        // Every PRUNE_EVERY-th record of a sender, forget its records beyond its newest
        // SEEN_PER_SENDER; a sender exceeds the bound by fewer than PRUNE_EVERY records (plus
        // PRUNE_EVERY after a restart, which forgets the counts).
        if self.seen_since_prune.bump(&prefix) {
            self.seen_prune(&prefix)?;
        }
        Ok(())
    }

    /// Deletes the dedupe records of the sender with key prefix `prefix` beyond its newest
    /// [`super::SEEN_PER_SENDER`].
    fn seen_prune(&self, prefix: &[u8]) -> Result<(), StoreError> {
        // The order tree sorts a sender's records oldest first: count them, drop the front.
        let count = self.t.senderid_msgid.scan_prefix(prefix).keys().count();
        let excess = count.saturating_sub(super::SEEN_PER_SENDER);
        let mut n = 0;
        for kv in self.t.senderid_msgid.scan_prefix(prefix).take(excess) {
            let (k, msg) = kv?;
            let mut seen = prefix.to_vec();
            seen.extend_from_slice(&msg);
            self.t.sendermsgid_timestamp.remove(seen)?;
            self.t.senderid_msgid.remove(k)?;
            n += 1;
        }
        tracing::trace!(
            pruned = n,
            "Dedupe records beyond the per-sender bound forgotten."
        );
        Ok(())
    }
}
