//! Retirement: what closed segments still hold moves to sled, durably, before the segments
//! are deleted (see the module docs of `msglog`): queue entries not yet removed, and the
//! dedupe records as one batch per sender (`store::seen`), which stay in memory too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{remove_pending, Shared};
use crate::ids::DeviceId;
use crate::store::seen::{self, SeenRecord};
use crate::store::trees::Trees;
use crate::store::{encode, keys, QueueRecord, StoreError};

/// sled's key for the last retired seq.
pub(in crate::store) const RETIRED_UPTO_KEY: &str = "log_retired_upto";

/// What retirement needs of sled.
pub(in crate::store) struct Retirer {
    pub db: sled::Db,
    pub t: Trees,
    /// sled's directory (its data files are fsynced after the copy).
    pub db_dir: PathBuf,
    /// sled's dedupe batches per sender (shared with the retention sweep).
    pub batches: Arc<std::sync::Mutex<seen::Batches>>,
}

impl Retirer {
    /// Moves every entry and dedupe record with seq at most `upto` from the log's memory to
    /// sled and makes sled durable; the caller then deletes the segments.
    pub(super) fn retire(&self, shared: &Shared, upto: u64) -> Result<(), StoreError> {
        type Entry = (DeviceId, u64, Arc<QueueRecord>);
        // Copied under the lock, written to sled without it (appends and acks go on), removed
        // from memory under it again: in between, both hold them, and readers take sled's.
        let (entries, seen): (Vec<Entry>, Vec<(String, Vec<SeenRecord>)>) = {
            let st = shared.lock();
            let entries = st
                .pending
                .iter()
                .flat_map(|(d, e)| {
                    e.range(..=upto)
                        .map(|(&s, r)| (d.clone(), s, Arc::clone(r)))
                })
                .collect();
            // One batch per sender, oldest first; records the bound already forgot are not
            // written.
            let mut per_sender: BTreeMap<&str, Vec<SeenRecord>> = BTreeMap::new();
            for (sender, msg_id) in st.unpersisted.range(..=upto).map(|(_, v)| v) {
                if let Some(r) = st.seen.get(sender).and_then(|s| s.map.get(msg_id)) {
                    per_sender.entry(sender).or_default().push(r.clone());
                }
            }
            let seen = per_sender
                .into_iter()
                .map(|(s, r)| (s.to_owned(), r))
                .collect();
            (entries, seen)
        };
        let mut batch = sled::Batch::default();
        for (d, seq, rec) in &entries {
            batch.insert(keys::queue(d, *seq), encode(&**rec));
        }
        self.t.deviceseq_queuerecord.apply_batch(batch)?;
        {
            let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
            seen::write_batches(&self.t, &mut batches, seen)?;
        }
        self.t
            .meta_value
            .insert(RETIRED_UPTO_KEY, &upto.to_be_bytes())?;
        self.db.flush()?;
        crate::store::durability::fsync_dir(&self.db_dir)?;
        let acked_meanwhile: Vec<(DeviceId, u64)> = {
            let mut st = shared.lock();
            self.t.counts.retired_added(entries.len());
            let gone = entries
                .into_iter()
                .filter(|(d, seq, _)| remove_pending(&mut st, d, *seq).is_none())
                .map(|(d, seq, _)| (d, seq))
                .collect();
            let kept = st.unpersisted.split_off(&upto.saturating_add(1));
            st.unpersisted = kept;
            shared.epoch.fetch_add(1, Ordering::AcqRel);
            gone
        };
        for (d, seq) in acked_meanwhile {
            self.t
                .counts
                .remove_retired(&self.t.deviceseq_queuerecord, keys::queue(&d, seq))?;
        }
        tracing::debug!(upto, "Message-log segments retired.");
        Ok(())
    }
}
