//! Abuse state: blocks between accounts, each account's sliding-window metrics
//! (`abuse_stats`), and its verdict record (ban, watch, punishment history).
//!
//! Metrics are counted in memory ([`StatsCache`]): a send reads and updates its sender's
//! record under one lock, with no sled read or write. [`Store::abuse_stats_flush`] writes the
//! changed records to sled in one batch: `app.rs` calls it every half second, the monitor's
//! evaluation ([`Store::abuse_active`]) and a backup image call it first, and so does
//! [`Store::flush`] at shutdown. A crash may lose the last half second of metrics (a window
//! that only delays a verdict), never a message. The bans and the blocks, read on every
//! send, are also kept in memory ([`BanCache`], [`BlockCache`]), in step with sled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::abuse_stats::{AbuseStats, SendFacts};
use super::{decode, encode, keys, Store, StoreError};
use crate::ids::AccountId;

const STATS: &str = "account_abusestats";
const RECORD: &str = "account_abuserecord";
/// Verdicts kept per account (older ones are dropped; the audit log has them all).
pub const MAX_HISTORY: usize = 50;

/// A ban in force (or that was, until `until_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub since_ms: u64,
    /// `None`: permanent.
    pub until_ms: Option<u64>,
    /// Which offence this is (1 for the first), after history decay.
    pub offence: u32,
    pub reason: String,
}

impl Ban {
    pub fn active(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|u| u > now_ms)
    }
}

/// An account on the watch list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub since_ms: u64,
    pub reason: String,
    /// `monitor`, or the operator (`token:…`).
    pub by: String,
}

/// One decision about an account, for its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub at_ms: u64,
    /// `ban`, `watch`, `unwatch` or `lift`.
    pub kind: String,
    pub detail: String,
    pub by: String,
}

/// Everything decided about one account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbuseRecord {
    pub ban: Option<Ban>,
    pub watch: Option<Watch>,
    /// Offences counted for the ladder (reset by `abuse.history_decay`).
    pub offences: u32,
    pub last_offence_ms: u64,
    /// Newest last, at most [`MAX_HISTORY`].
    pub history: Vec<Verdict>,
}

impl AbuseRecord {
    /// The ban in force at `now_ms`, if any.
    pub fn active_ban(&self, now_ms: u64) -> Option<&Ban> {
        self.ban.as_ref().filter(|b| b.active(now_ms))
    }

    pub fn log(&mut self, v: Verdict) {
        self.history.push(v);
        let extra = self.history.len().saturating_sub(MAX_HISTORY);
        self.history.drain(..extra);
    }
}

/// The bans on record (in force or past), kept in step with sled by `abuse_record_put`:
/// `ban_of`, read on every send, is a hash lookup. Loaded when the store opens.
#[derive(Clone, Default)]
pub(super) struct BanCache(Arc<std::sync::RwLock<HashMap<String, Ban>>>);

impl BanCache {
    pub(super) fn load(tree: &sled::Tree) -> Result<Self, StoreError> {
        let mut bans = HashMap::new();
        for kv in tree.iter() {
            let (k, v) = kv?;
            let rec: AbuseRecord = decode(RECORD, &v)?;
            if let (Some(ban), Ok(account)) = (rec.ban, std::str::from_utf8(&k)) {
                bans.insert(account.to_owned(), ban);
            }
        }
        Ok(Self(Arc::new(std::sync::RwLock::new(bans))))
    }
}

/// Every block (its sled key), kept in step with sled by `block_set`. Blocks are few: a
/// person blocks a handful of accounts. Loaded when the store opens.
#[derive(Clone, Default)]
pub(super) struct BlockCache(Arc<std::sync::RwLock<std::collections::HashSet<Vec<u8>>>>);

impl BlockCache {
    pub(super) fn load(tree: &sled::Tree) -> Result<Self, StoreError> {
        let mut blocks = std::collections::HashSet::new();
        for k in tree.iter().keys() {
            blocks.insert(k?.to_vec());
        }
        Ok(Self(Arc::new(std::sync::RwLock::new(blocks))))
    }
}

/// Each recently active account's metrics, the truth for the send path; sled holds them as
/// of the last [`Store::abuse_stats_flush`]. An entry leaves when the monitor forgets the
/// account's idle metrics, so the map holds the accounts active within the window.
#[derive(Clone, Default)]
pub(super) struct StatsCache(Arc<Mutex<HashMap<String, CachedStats>>>);

struct CachedStats {
    stats: AbuseStats,
    /// Changed since it was last written to sled.
    dirty: bool,
}

impl StatsCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedStats>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store {
    /// `blocker` blocks (or, with `on = false`, unblocks) `blocked`. Answers whether anything
    /// changed.
    pub fn block_set(
        &self,
        blocker: &AccountId,
        blocked: &AccountId,
        on: bool,
    ) -> Result<bool, StoreError> {
        let _gate = self.writing();
        let k = keys::account_item(blocker, blocked.as_str().as_bytes());
        let mut blocks = self.blocks.0.write().unwrap_or_else(|p| p.into_inner());
        let before = if on {
            let before = self.t.blockeraccount_.insert(&k, &[])?;
            blocks.insert(k);
            before
        } else {
            let before = self.t.blockeraccount_.remove(&k)?;
            blocks.remove(&k);
            before
        };
        Ok(before.is_some() != on)
    }

    /// Whether `blocker` has blocked `other` (asked for every recipient of every send, and
    /// answered from memory).
    pub fn is_blocked(&self, blocker: &AccountId, other: &AccountId) -> Result<bool, StoreError> {
        let blocks = self.blocks.0.read().unwrap_or_else(|p| p.into_inner());
        Ok(!blocks.is_empty()
            && blocks.contains(&keys::account_item(blocker, other.as_str().as_bytes())))
    }

    /// The accounts `blocker` has blocked.
    pub fn blocked_by(&self, blocker: &AccountId) -> Result<Vec<AccountId>, StoreError> {
        let prefix = keys::account_prefix(blocker);
        let mut out = Vec::new();
        for k in self.t.blockeraccount_.scan_prefix(&prefix).keys() {
            let k = k?;
            if let Ok(a) = std::str::from_utf8(&k[prefix.len()..]).map(AccountId::parse) {
                out.extend(a.ok());
            }
        }
        Ok(out)
    }

    fn stats_update(
        &self,
        account: &AccountId,
        f: impl Fn(&mut AbuseStats),
    ) -> Result<(), StoreError> {
        let mut cache = self.abuse_metrics.lock();
        let entry = match cache.entry(account.to_string()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                // A record that does not decode (an older layout) starts again: metrics are
                // a window, losing one only delays a verdict.
                let stats = self
                    .t
                    .account_abusestats
                    .get(account.as_str())?
                    .and_then(|b| postcard::from_bytes(&b).ok())
                    .unwrap_or_default();
                e.insert(CachedStats {
                    stats,
                    dirty: false,
                })
            }
        };
        f(&mut entry.stats);
        entry.dirty = true;
        Ok(())
    }

    /// Writes the metrics changed since the last call to sled, in one batch (made durable by
    /// sled's next flush or the next durability barrier).
    pub fn abuse_stats_flush(&self) -> Result<(), StoreError> {
        let _gate = self.writing();
        self.abuse_stats_write_back()
    }

    /// [`Store::abuse_stats_flush`] for a caller that holds the write gate.
    pub(super) fn abuse_stats_write_back(&self) -> Result<(), StoreError> {
        let mut cache = self.abuse_metrics.lock();
        let mut batch = sled::Batch::default();
        let mut any = false;
        for (account, c) in cache.iter_mut().filter(|(_, c)| c.dirty) {
            batch.insert(account.as_bytes(), encode(&c.stats));
            c.dirty = false;
            any = true;
        }
        if any {
            self.t.account_abusestats.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Whether `account` messaged `peer` within the window ending at `now_ms`.
    pub fn abuse_knows_peer(
        &self,
        account: &AccountId,
        peer: &str,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<bool, StoreError> {
        if let Some(c) = self.abuse_metrics.lock().get(account.as_str()) {
            return Ok(c.stats.knows_peer(peer, now_ms, window_ms));
        }
        Ok(self
            .abuse_stats(account)?
            .is_some_and(|s| s.knows_peer(peer, now_ms, window_ms)))
    }

    /// Counts one send of `sender` in its metrics.
    pub fn abuse_count_send(
        &self,
        sender: &AccountId,
        facts: SendFacts<'_>,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<(), StoreError> {
        self.stats_update(sender, |s| s.record_send(facts, now_ms, window_ms))
    }

    /// Counts one block received by `account`.
    pub fn abuse_count_block(
        &self,
        account: &AccountId,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<(), StoreError> {
        self.stats_update(account, |s| s.record_block(now_ms, window_ms))
    }

    /// `account`'s metrics record, if it has one.
    pub fn abuse_stats(&self, account: &AccountId) -> Result<Option<AbuseStats>, StoreError> {
        if let Some(c) = self.abuse_metrics.lock().get(account.as_str()) {
            return Ok(Some(c.stats.clone()));
        }
        match self.t.account_abusestats.get(account.as_str())? {
            Some(v) => Ok(Some(decode(STATS, &v)?)),
            None => Ok(None),
        }
    }

    /// Every account with a metrics record (active recently), as counted up to now.
    pub fn abuse_active(&self) -> Result<Vec<(AccountId, AbuseStats)>, StoreError> {
        self.abuse_stats_flush()?;
        let mut out = Vec::new();
        for kv in self.t.account_abusestats.iter() {
            let (k, v) = kv?;
            let Some(a) = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| AccountId::parse(s).ok())
            else {
                continue;
            };
            if let Ok(s) = postcard::from_bytes::<AbuseStats>(&v) {
                out.push((a, s));
            }
        }
        Ok(out)
    }

    /// Deletes `account`'s metrics if they are still `seen` (nothing was counted since).
    pub fn abuse_stats_forget(
        &self,
        account: &AccountId,
        seen: &AbuseStats,
    ) -> Result<(), StoreError> {
        let _gate = self.writing();
        let mut cache = self.abuse_metrics.lock();
        if let Some(c) = cache.get(account.as_str()) {
            // The cached record is the truth, sled's may be older.
            if c.stats == *seen {
                cache.remove(account.as_str());
                self.t.account_abusestats.remove(account.as_str())?;
            }
            return Ok(());
        }
        let _ = self.t.account_abusestats.compare_and_swap(
            account.as_str(),
            Some(encode(seen)),
            None::<&[u8]>,
        )?;
        Ok(())
    }

    /// `account`'s verdict record (empty if none).
    pub fn abuse_record(&self, account: &AccountId) -> Result<AbuseRecord, StoreError> {
        match self.t.account_abuserecord.get(account.as_str())? {
            Some(v) => decode(RECORD, &v),
            None => Ok(AbuseRecord::default()),
        }
    }

    /// Whether `account` has a verdict record.
    pub fn abuse_has_record(&self, account: &AccountId) -> Result<bool, StoreError> {
        Ok(self.t.account_abuserecord.contains_key(account.as_str())?)
    }

    pub fn abuse_record_put(
        &self,
        account: &AccountId,
        rec: &AbuseRecord,
    ) -> Result<(), StoreError> {
        let _gate = self.writing();
        // The cache follows the record under one lock, so a reader never sees the cache
        // behind a record that was written.
        let mut bans = self.bans.0.write().unwrap_or_else(|p| p.into_inner());
        self.t
            .account_abuserecord
            .insert(account.as_str(), encode(rec))?;
        match &rec.ban {
            Some(ban) => bans.insert(account.to_string(), ban.clone()),
            None => bans.remove(account.as_str()),
        };
        Ok(())
    }

    /// Every account with a verdict record.
    pub fn abuse_records(&self) -> Result<Vec<(AccountId, AbuseRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.t.account_abuserecord.iter() {
            let (k, v) = kv?;
            let Some(a) = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| AccountId::parse(s).ok())
            else {
                continue;
            };
            out.push((a, decode(RECORD, &v)?));
        }
        Ok(out)
    }

    /// The ban in force on `account` at `now_ms`, if any (read on every send, from memory).
    pub fn ban_of(&self, account: &AccountId, now_ms: u64) -> Result<Option<Ban>, StoreError> {
        let bans = self.bans.0.read().unwrap_or_else(|p| p.into_inner());
        Ok(bans
            .get(account.as_str())
            .filter(|b| b.active(now_ms))
            .cloned())
    }
}
