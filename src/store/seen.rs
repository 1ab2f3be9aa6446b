//! The dedupe records of accepted Sends, as sled keeps them for a restart.
//!
//! The relay answers every dedupe question from memory (the message log's index, `msglog`),
//! which holds each sender's newest [`super::SEEN_PER_SENDER`] records: those of the log's
//! live segments, and those loaded from sled at open. When a segment retires, its records go
//! to sled as one *batch* per sender (one sled write for all of that sender's records in the
//! segment, not one per message); a sender's batches older than its newest
//! `SEEN_PER_SENDER` records are deleted as new ones arrive, and the retention sweep deletes
//! batches whose newest record is past the retention. Records written by releases before the
//! log (one sled record per message in `sendermsgid_timestamp` / `senderid_msgid`) are loaded
//! too and left to the retention sweep.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::trees::Trees;
use super::{decode, encode, keys, StoreError};
use crate::ids::AccountId;

const TREE: &str = "senderseq_seenbatch";

/// One dedupe record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenRecord {
    pub msg_id: [u8; 16],
    pub timestamp_ms: u64,
    /// The seq of the log record that accepted it (orders a sender's records).
    pub seq: u64,
    /// The accounts it was queued for (who may send receipts for it); `None` for records of
    /// releases that did not keep them.
    pub recipients: Option<Vec<String>>,
}

/// The sled batches of each sender, oldest first, with their record counts: which ones fall
/// out of the per-sender bound when a new one is written.
#[derive(Default)]
pub(super) struct Batches(HashMap<String, VecDeque<(Vec<u8>, usize)>>);

/// Every dedupe record sled holds, per sender, oldest first, and the bookkeeping of batches.
pub(super) fn load(t: &Trees) -> Result<(Vec<(String, SeenRecord)>, Batches), StoreError> {
    let mut out: Vec<(String, SeenRecord)> = Vec::new();
    // Records of releases before the log: order by their id within each sender.
    let mut old: Vec<(String, u64, SeenRecord)> = Vec::new();
    for kv in t.sendermsgid_timestamp.iter() {
        let (k, v) = kv?;
        let Some(split) = k.len().checked_sub(17) else {
            continue;
        };
        let sender = String::from_utf8_lossy(&k[..split]).into_owned();
        let Ok(msg_id) = <[u8; 16]>::try_from(&k[split + 1..]) else {
            continue;
        };
        let (ts, id, recipients) = old_value(&v)?;
        old.push((
            sender,
            id,
            SeenRecord {
                msg_id,
                timestamp_ms: ts,
                seq: 0,
                recipients,
            },
        ));
    }
    old.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out.extend(old.into_iter().map(|(s, _, r)| (s, r)));
    let mut batches = Batches::default();
    for kv in t.senderseq_seenbatch.iter() {
        let (k, v) = kv?;
        let Some(split) = k.len().checked_sub(9) else {
            return Err(super::corrupt(TREE, "short key"));
        };
        let sender = String::from_utf8_lossy(&k[..split]).into_owned();
        let records: Vec<SeenRecord> = decode(TREE, &v)?;
        batches
            .0
            .entry(sender.clone())
            .or_default()
            .push_back((k.to_vec(), records.len()));
        out.extend(records.into_iter().map(|r| (sender.clone(), r)));
    }
    Ok((out, batches))
}

/// The timestamp, order id and recipients of a record written before the log.
fn old_value(v: &[u8]) -> Result<(u64, u64, Option<Vec<String>>), StoreError> {
    let ts = v
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes);
    let id = v
        .get(8..16)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes);
    let recipients = match v.get(16..) {
        None | Some([]) => None,
        Some(rest) => Some(decode("sendermsgid_timestamp", rest)?),
    };
    Ok((ts, id, recipients))
}

/// Writes one batch per sender (records oldest first) and deletes the sender's batches that
/// fall out of the per-sender bound. Not flushed: the caller makes sled durable.
pub(super) fn write_batches(
    t: &Trees,
    batches: &mut Batches,
    per_sender: Vec<(String, Vec<SeenRecord>)>,
) -> Result<(), StoreError> {
    for (sender, records) in per_sender {
        let (Ok(account), Some(first)) = (AccountId::parse(&sender), records.first()) else {
            continue;
        };
        let mut key = keys::account_prefix(&account);
        key.extend_from_slice(&first.seq.to_be_bytes());
        t.senderseq_seenbatch.insert(&key, encode(&records))?;
        let list = batches.0.entry(sender).or_default();
        list.push_back((key, records.len()));
        let mut total: usize = list.iter().map(|(_, n)| n).sum();
        while let Some((old, n)) = list.front() {
            if total - n < super::SEEN_PER_SENDER {
                break;
            }
            t.senderseq_seenbatch.remove(old)?;
            total -= n;
            list.pop_front();
        }
    }
    Ok(())
}

/// Deletes the dedupe records older than `cutoff_ms` (retention): batches whose newest record
/// is older, and records of releases before the log.
pub(super) fn sweep(t: &Trees, batches: &mut Batches, cutoff_ms: u64) -> Result<(), StoreError> {
    for kv in t.senderseq_seenbatch.iter() {
        let (k, v) = kv?;
        let records: Vec<SeenRecord> = decode(TREE, &v)?;
        if records.iter().all(|r| r.timestamp_ms < cutoff_ms) {
            t.senderseq_seenbatch.remove(&k)?;
            for list in batches.0.values_mut() {
                list.retain(|(key, _)| key.as_slice() != k.as_ref());
            }
        }
    }
    for kv in t.sendermsgid_timestamp.iter() {
        let (k, v) = kv?;
        let (ts, id, _) = old_value(&v)?;
        if ts < cutoff_ms {
            t.sendermsgid_timestamp.remove(&k)?;
            let sender = &k[..k.len().saturating_sub(16)];
            t.senderid_msgid.remove(keys::seen_order(sender, id))?;
        }
    }
    Ok(())
}
