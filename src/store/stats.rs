//! Read-only views for operators: how much the store holds, and a paged list of accounts.
//!
//! The counts are not scans: [`Counts`] is loaded once when the store opens (the one scan)
//! and then moved by every write of a counted tree, in the file that writes it (accounts and
//! devices in `accounts.rs`, groups in `groups.rs`, blobs in `blobs.rs`, the retired part of
//! the queues in `queue.rs`, `accounts.rs` and `msglog/retire.rs`; the log counts its own
//! pending entries). So `/metrics` and `/v1/stats` cost the same with a million accounts as
//! with none. The paged account list is a range read that serves the admin API only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::blobs::{BlobRecord, BlobState};
use super::trees::Trees;
use super::{decode, keys, DeviceRecord, Store, StoreError};
use crate::ids::{AccountId, DeviceNo};

/// How much the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub accounts: u64,
    pub devices: u64,
    pub groups: u64,
    /// Entries waiting in every device queue.
    pub queued: u64,
    /// Stored blobs (not pending uploads, not tombstones) and their bytes.
    pub blobs: u64,
    pub blob_bytes: u64,
}

/// The counts behind [`StoreCounts`], kept in step with the trees (see the module docs).
/// Shared by every clone of [`Trees`], so the message log's retirement moves them too.
#[derive(Debug, Default)]
pub(super) struct Counts {
    accounts: AtomicU64,
    devices: AtomicU64,
    groups: AtomicU64,
    /// Entries of `deviceseq_queuerecord`: the queues' part retired from the log to sled.
    retired_queued: AtomicU64,
    blobs: AtomicU64,
    blob_bytes: AtomicU64,
    /// Held while a device is added or removed, so that whether its account appears or goes
    /// is decided by one writer at a time (write paths share the store's gate).
    account_change: Mutex<()>,
    /// sled's size on disk and when it was read ([`Store::size_on_disk_recent`]).
    size_on_disk: Mutex<Option<(std::time::Instant, u64)>>,
}

fn add(n: &AtomicU64, by: u64) {
    n.fetch_add(by, Ordering::AcqRel);
}

/// Subtracts without wrapping: a count is never below zero, whatever the order of updates.
fn sub(n: &AtomicU64, by: u64) {
    let _ = n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        Some(v.saturating_sub(by))
    });
}

/// Whether `rec` is a stored blob, and its size.
fn stored(rec: Option<&BlobRecord>) -> Option<u64> {
    rec.filter(|r| matches!(r.state, BlobState::Stored { .. }))
        .map(|r| r.size)
}

impl Counts {
    /// Counts what `t` holds: the one scan, when the store opens.
    pub(super) fn load(&self, t: &Trees) -> Result<(), StoreError> {
        let (mut accounts, mut devices) = (0u64, 0u64);
        let mut last: Option<Vec<u8>> = None;
        for k in t.accountdevice_record.iter().keys() {
            let k = k?;
            devices += 1;
            let account = account_part(&k);
            if last.as_deref() != Some(account) {
                accounts += 1;
                last = Some(account.to_vec());
            }
        }
        let (mut blobs, mut blob_bytes) = (0u64, 0u64);
        for v in t.blob_record.iter().values() {
            let rec: BlobRecord = decode("blob_record", &v?)?;
            if let Some(size) = stored(Some(&rec)) {
                blobs += 1;
                blob_bytes = blob_bytes.saturating_add(size);
            }
        }
        self.accounts.store(accounts, Ordering::Relaxed);
        self.devices.store(devices, Ordering::Relaxed);
        self.groups
            .store(count(t.group_record.len()), Ordering::Relaxed);
        self.retired_queued
            .store(count(t.deviceseq_queuerecord.len()), Ordering::Relaxed);
        self.blobs.store(blobs, Ordering::Relaxed);
        self.blob_bytes.store(blob_bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Serialises the decision whether an account appears or goes (see the field).
    pub(super) fn account_change(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.account_change
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A device was added; `new_account` if its account had none before.
    pub(super) fn device_added(&self, new_account: bool) {
        add(&self.devices, 1);
        if new_account {
            add(&self.accounts, 1);
        }
    }

    /// A device was removed; `account_gone` if its account has none left.
    pub(super) fn device_removed(&self, account_gone: bool) {
        sub(&self.devices, 1);
        if account_gone {
            sub(&self.accounts, 1);
        }
    }

    pub(super) fn group_added(&self) {
        add(&self.groups, 1);
    }

    /// `n` queue entries were written to `deviceseq_queuerecord` (retired from the log).
    /// Called under the log's lock, where they leave its pending entries, so that a reader
    /// of both ([`Store::queue_depth`]) sees them in one place or the other.
    pub(in crate::store) fn retired_added(&self, n: usize) {
        add(&self.retired_queued, count(n));
    }

    /// Removes a retired queue entry from `deviceseq_queuerecord` and counts it if it was
    /// there; returns its value.
    pub(in crate::store) fn remove_retired(
        &self,
        tree: &sled::Tree,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<sled::IVec>, StoreError> {
        let old = tree.remove(key)?;
        if old.is_some() {
            sub(&self.retired_queued, 1);
        }
        Ok(old)
    }

    /// A blob record went from `old` to `new` (`None`: absent).
    pub(super) fn blob_changed(&self, old: Option<&BlobRecord>, new: Option<&BlobRecord>) {
        if let Some(size) = stored(old) {
            sub(&self.blobs, 1);
            sub(&self.blob_bytes, size);
        }
        if let Some(size) = stored(new) {
            add(&self.blobs, 1);
            add(&self.blob_bytes, size);
        }
    }
}

/// One account with its devices, for listings.
#[derive(Debug, Clone)]
pub struct AccountSummary {
    pub account: AccountId,
    pub devices: Vec<(DeviceNo, DeviceRecord)>,
}

/// How long [`Store::size_on_disk_recent`] reuses a reading: sled lists its blob directory to
/// answer, a cost a scrape must not pay every time.
const SIZE_ON_DISK_REUSE: std::time::Duration = std::time::Duration::from_secs(10);

/// How often [`Store::queue_depth`] rereads while retirements move its two halves.
const CONSISTENT_READ_TRIES: usize = 8;

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Counts {
    /// The counts, with `log_pending` queue entries still in the message log.
    fn snapshot(&self, log_pending: u64) -> StoreCounts {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        StoreCounts {
            accounts: get(&self.accounts),
            devices: get(&self.devices),
            groups: get(&self.groups),
            queued: get(&self.retired_queued).saturating_add(log_pending),
            blobs: get(&self.blobs),
            blob_bytes: get(&self.blob_bytes),
        }
    }
}

impl Store {
    /// How much the store holds, from the counts (no scan).
    pub fn counts(&self) -> StoreCounts {
        let mut c = self.t.counts.snapshot(0);
        c.queued = self.queue_depth();
        c
    }

    /// Approximate bytes on disk, read from sled at most every [`SIZE_ON_DISK_REUSE`].
    pub fn size_on_disk_recent(&self) -> Result<u64, StoreError> {
        let mut last = self
            .t
            .counts
            .size_on_disk
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((at, bytes)) = *last {
            if at.elapsed() < SIZE_ON_DISK_REUSE {
                return Ok(bytes);
            }
        }
        let bytes = self.size_on_disk()?;
        *last = Some((std::time::Instant::now(), bytes));
        Ok(bytes)
    }

    /// Entries waiting in every device queue: the log's pending ones and the retired ones.
    ///
    /// The retired count is read on both sides of the log's (which takes the log's lock): a
    /// retirement moves entries from the log to the count under that lock, so two equal reads
    /// mean the log's count saw the same retirements. After a few tries the last reading is
    /// taken (off by at most the retirement in flight).
    pub fn queue_depth(&self) -> u64 {
        let retired = &self.t.counts.retired_queued;
        let mut depth = 0;
        for _ in 0..CONSISTENT_READ_TRIES {
            let before = retired.load(Ordering::Acquire);
            let pending = count(self.log.pending_count());
            let after = retired.load(Ordering::Acquire);
            depth = after.saturating_add(pending);
            if before == after {
                break;
            }
        }
        depth
    }

    /// Up to `limit` accounts in phone-number order, starting after `after` (exclusive).
    pub fn accounts_page(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountSummary>, StoreError> {
        let start = match after {
            // `account ‖ 0x01` sorts after every `account ‖ 0x00 ‖ …` key of that account.
            Some(a) => {
                let mut k = a.as_str().as_bytes().to_vec();
                k.push(keys::SEP + 1);
                k
            }
            None => Vec::new(),
        };
        let mut out: Vec<AccountSummary> = Vec::new();
        for kv in self.t.accountdevice_record.range(start..) {
            let (k, v) = kv?;
            let d = keys::parse_device(&k)
                .ok_or_else(|| super::corrupt("accountdevice_record", "bad key"))?;
            let rec: DeviceRecord = super::decode("accountdevice_record", &v)?;
            let full = out.len() >= limit;
            match out.last_mut() {
                Some(last) if last.account == d.account => last.devices.push((d.device, rec)),
                _ if full => break,
                _ => out.push(AccountSummary {
                    account: d.account,
                    devices: vec![(d.device, rec)],
                }),
            }
        }
        Ok(out)
    }
}

fn account_part(k: &[u8]) -> &[u8] {
    let end = k.iter().position(|&b| b == keys::SEP).unwrap_or(k.len());
    &k[..end]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ids::BlobId;
    use crate::store::{CommitOutcome, GroupRecord, PendingOutcome, QueueItem, QueueRecord};

    /// The store's counts are `expect`, and are what a fresh scan of its trees finds.
    #[track_caller]
    fn check(s: &Store, expect: StoreCounts) {
        assert_eq!(s.counts(), expect);
        let scanned = Counts::default();
        scanned.load(&s.t).unwrap();
        assert_eq!(
            scanned.snapshot(count(s.log.pending_count())),
            expect,
            "a scan disagrees with the counts"
        );
    }

    fn msg(i: u8) -> QueueRecord {
        QueueRecord {
            enqueued_at_ms: 1,
            item: QueueItem::Message {
                msg_id: [i; 16],
                from: "+14155550199".into(),
                from_device: 0,
                timestamp_ms: 1,
                olm_type: 1,
                ciphertext: vec![i; 3].into(),
                kind: 1,
                group: String::new(),
            },
        }
    }

    #[test]
    fn the_counts_follow_every_change_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut want = StoreCounts::default();
        check(&s, want);

        let alice = AccountId::parse("+14155550101").unwrap();
        let bob = AccountId::parse("+14155550102").unwrap();
        let a0 = s.register_primary(&alice, [1; 32], 1).unwrap();
        want.accounts = 1;
        want.devices = 1;
        check(&s, want);
        // The same phone again, then a new phone: still one account with one device.
        s.register_primary(&alice, [1; 32], 2).unwrap();
        s.register_primary(&alice, [2; 32], 3).unwrap();
        check(&s, want);
        let a1 = s
            .link_companion(&alice, [3; 32], b"secret", 4)
            .unwrap()
            .unwrap();
        want.devices = 2;
        check(&s, want);
        let b0 = s.register_primary(&bob, [4; 32], 5).unwrap();
        want.accounts = 2;
        want.devices = 3;
        check(&s, want);

        let group = GroupRecord {
            subject: "tills".into(),
            members: BTreeMap::from([(alice.to_string(), true)]),
            version: 1,
            created_at_ms: 6,
        };
        s.group_put("g1", &group, None).unwrap();
        let changed = GroupRecord {
            version: 2,
            ..group.clone()
        };
        s.group_put("g1", &changed, Some(&group)).unwrap();
        want.groups = 1;
        check(&s, want);

        // Entries in the log, then retired to sled, then more in the log; acks of both.
        s.queue_push(&a0, &msg(1)).unwrap();
        let b_first = s.queue_push(&b0, &msg(2)).unwrap();
        s.queue_push(&a1, &msg(3)).unwrap();
        want.queued = 3;
        check(&s, want);
        s.log().retire_all().unwrap();
        check(&s, want);
        let b_second = s.queue_push(&b0, &msg(4)).unwrap();
        want.queued = 4;
        check(&s, want);
        assert_eq!(
            s.queue_remove_many(&b0, &[b_first, b_second])
                .unwrap()
                .len(),
            2
        );
        assert!(
            s.queue_remove(&b0, b_first).unwrap().is_none(),
            "gone already"
        );
        want.queued = 2;
        check(&s, want);

        // A blob counts once stored, not while pending, and not as a tombstone.
        let id = BlobId::of(b"photo");
        assert_eq!(
            s.blob_pending(&id, &alice, 10, &[], 100, 1000).unwrap(),
            PendingOutcome::Pending
        );
        check(&s, want);
        assert_eq!(
            s.blob_commit(&id, &a0, 10, 7, 10_000, 1000).unwrap(),
            CommitOutcome::Stored
        );
        want.blobs = 1;
        want.blob_bytes = 10;
        check(&s, want);
        let other = BlobId::of(b"voice");
        s.blob_pending(&other, &bob, 25, &[], 100, 1000).unwrap();
        s.blob_commit(&other, &b0, 25, 8, 10_000, 1000).unwrap();
        want.blobs = 2;
        want.blob_bytes = 35;
        check(&s, want);
        assert!(s.blob_expire(&id, None, 9, true, 500).unwrap());
        want.blobs = 1;
        want.blob_bytes = 25;
        check(&s, want);

        // Removing a device takes its queue with it; the last one takes the account.
        assert!(s.unlink(&a1).unwrap());
        want.devices = 2;
        want.queued = 1;
        check(&s, want);
        assert!(s.unlink(&a0).unwrap());
        assert!(!s.unlink(&a0).unwrap(), "gone already");
        want.accounts = 1;
        want.devices = 1;
        want.queued = 0;
        check(&s, want);

        // A restart loads what the counts said; acks after it count too.
        let b_third = s.queue_push(&b0, &msg(5)).unwrap();
        let b_fourth = s.queue_push(&b0, &msg(6)).unwrap();
        want.queued = 2;
        s.flush().unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        // The log may retire what it replayed as it starts; while it does, an entry is in
        // both places (and counted twice), so the numbers are read once it is done.
        s.log().retire_all().unwrap();
        check(&s, want);
        assert_eq!(
            s.queue_remove_many(&b0, &[b_third, b_fourth])
                .unwrap()
                .len(),
            2
        );
        want.queued = 0;
        check(&s, want);
    }
}
