//! Retirement: what closed segments still hold moves to sled, durably, before the segments
//! are deleted (see the module docs of `msglog`).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{remove_pending, Shared};
use crate::ids::{AccountId, DeviceId};
use crate::store::trees::Trees;
use crate::store::{encode, keys, queue, QueueRecord, StoreError};

/// sled's key for the last retired seq.
pub(in crate::store) const RETIRED_UPTO_KEY: &str = "log_retired_upto";

/// What retirement needs of sled.
pub(in crate::store) struct Retirer {
    pub db: sled::Db,
    pub t: Trees,
    /// sled's directory (its data files are fsynced after the copy).
    pub db_dir: PathBuf,
    pub seen_counts: queue::SeenCounts,
}

impl Retirer {
    /// Moves every entry and dedupe record with seq at most `upto` from the log's memory to
    /// sled and makes sled durable; the caller then deletes the segments.
    pub(super) fn retire(&self, shared: &Shared, upto: u64) -> Result<(), StoreError> {
        type Entry = (DeviceId, u64, Arc<QueueRecord>);
        type SeenRecord = (String, [u8; 16], super::Seen);
        // Copied under the lock, written to sled without it (appends and acks go on), removed
        // from memory under it again: in between, both hold them, and readers take sled's.
        let (entries, seen): (Vec<Entry>, Vec<SeenRecord>) = {
            let st = shared.lock();
            let entries = st
                .pending
                .iter()
                .flat_map(|(d, e)| {
                    e.range(..=upto)
                        .map(|(&s, r)| (d.clone(), s, Arc::clone(r)))
                })
                .collect();
            let seen = st
                .seen
                .iter()
                .flat_map(|(sender, s)| {
                    s.order
                        .iter()
                        .filter_map(|m| s.map.get(m).map(|v| (m, v)))
                        .filter(|(_, v)| v.seq <= upto)
                        .map(|(m, v)| (sender.clone(), *m, v.clone()))
                })
                .collect();
            (entries, seen)
        };
        let mut batch = sled::Batch::default();
        for (d, seq, rec) in &entries {
            batch.insert(keys::queue(d, *seq), encode(&**rec));
        }
        self.t.deviceseq_queuerecord.apply_batch(batch)?;
        for (sender, msg_id, s) in &seen {
            let Ok(sender) = AccountId::parse(sender) else {
                continue;
            };
            queue::seen_insert(
                &self.t,
                &self.seen_counts,
                &sender,
                msg_id,
                s.timestamp_ms,
                s.seq,
                &s.recipients,
            )?;
        }
        self.t
            .meta_value
            .insert(RETIRED_UPTO_KEY, &upto.to_be_bytes())?;
        self.db.flush()?;
        crate::store::durability::fsync_dir(&self.db_dir)?;
        let acked_meanwhile: Vec<(DeviceId, u64)> = {
            let mut st = shared.lock();
            let gone = entries
                .into_iter()
                .filter(|(d, seq, _)| remove_pending(&mut st, d, *seq).is_none())
                .map(|(d, seq, _)| (d, seq))
                .collect();
            for (sender, _, _) in &seen {
                if let Some(s) = st.seen.get_mut(sender) {
                    while let Some(front) = s.order.front() {
                        if s.map.get(front).is_some_and(|v| v.seq > upto) {
                            break;
                        }
                        if let Some(m) = s.order.pop_front() {
                            s.map.remove(&m);
                        }
                    }
                    if s.order.is_empty() {
                        st.seen.remove(sender);
                    }
                }
            }
            shared.epoch.fetch_add(1, Ordering::AcqRel);
            gone
        };
        for (d, seq) in acked_meanwhile {
            self.t.deviceseq_queuerecord.remove(keys::queue(&d, seq))?;
        }
        tracing::debug!(upto, "Message-log segments retired.");
        Ok(())
    }
}
