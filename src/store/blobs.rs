//! Blob metadata: who uploaded a blob, its size, segments and expiry, the per-account usage
//! that quotas are checked against, and the expiry index the garbage collector walks. The
//! files themselves are `crate::blob`'s; this module never touches them.
//!
//! A blob's life: `Pending` (an upload URL was handed out) → `Stored` (the file is in place)
//! → `Gone` (expired or purged; a tombstone, so that its id answers 410 and not 404) → no
//! record (the tombstone's own time ran out: the id and every right to fetch it are
//! forgotten). A pending record that is never completed disappears when its URL expires.
//!
//! # Quota
//!
//! An account's usage (`account_blobbytes`) counts the stored blobs it owns *and* the bytes
//! its pending uploads reserved when their URLs were handed out, so that uploads running at
//! once cannot together pass the quota. A reservation (`blobaccount_reservedbytes`) becomes
//! the stored blob's charge when the upload completes, and is given back when the pending
//! record lapses or another account completes the same content first.
//!
//! The usage is changed by compare-and-swap, not in a transaction with the records: each
//! step is ordered so that a crash between two writes can only under-count an account (it
//! may then store a little more than its quota), never lock it out for good.

use serde::{Deserialize, Serialize};

use super::{decode, encode, Store, StoreError};
use crate::ids::BlobId;
use crate::ids::{AccountId, DeviceId};

const TREE: &str = "blob_record";

/// What the relay knows of one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// Declared (pending) or actual (stored) size in bytes.
    pub size: u64,
    /// Ordered segment sizes; empty for a blob of one piece.
    pub segments: Vec<u64>,
    pub state: BlobState,
    /// When the record changes state on its own: a pending upload lapses, a stored blob
    /// expires, a tombstone is dropped. Milliseconds since the Unix epoch (`u64::MAX`: a
    /// tombstone written before tombstones were bounded, until the collector bounds it).
    pub expires_ms: u64,
}

/// Where a blob is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobState {
    /// An upload URL was handed out; no file yet. `gone_at_ms` keeps an earlier tombstone.
    Pending { gone_at_ms: Option<u64> },
    /// The file is in place; its bytes count against `owner`'s quota.
    Stored {
        owner: String,
        device: u32,
        created_ms: u64,
    },
    /// Expired or purged: the file is deleted.
    Gone { at_ms: u64 },
}

/// The answer to a new upload request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingOutcome {
    /// A pending record is in place; the client may upload.
    Pending,
    /// The same content is stored already.
    AlreadyStored,
    /// The account's stored blobs and pending uploads (`used` bytes) leave no room for this
    /// one; nothing was recorded.
    QuotaExceeded { used: u64 },
}

/// The answer to completing an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Stored,
    /// The owner's usage plus this blob would pass the quota; nothing was recorded.
    QuotaExceeded {
        used: u64,
    },
    /// There is no pending record (the URL lapsed or the blob was stored meanwhile).
    NotPending,
}

/// `expires_ms:u64-be ‖ id`: one entry of the expiry index.
fn expiry_key(expires_ms: u64, id: &BlobId) -> Vec<u8> {
    let mut k = expires_ms.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

/// `id ‖ 0x00 ‖ account`: one reservation.
fn reservation_key(id: &BlobId, account: &AccountId) -> Vec<u8> {
    let mut k = reservation_prefix(id);
    k.extend_from_slice(account.as_str().as_bytes());
    k
}

/// `id ‖ 0x00`: every reservation of a blob.
fn reservation_prefix(id: &BlobId) -> Vec<u8> {
    let mut k = id.as_str().as_bytes().to_vec();
    k.push(0);
    k
}

fn usage_of(v: Option<&[u8]>) -> u64 {
    v.and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

impl Store {
    pub fn blob(&self, id: &BlobId) -> Result<Option<BlobRecord>, StoreError> {
        self.t
            .blob_record
            .get(id.as_str())?
            .map(|v| decode(TREE, &v))
            .transpose()
    }

    fn blob_put(
        &self,
        id: &BlobId,
        rec: &BlobRecord,
        old: Option<&BlobRecord>,
    ) -> Result<(), StoreError> {
        // Index first: a crash between the two leaves an index entry the GC re-checks
        // against the record, never a record the GC cannot find.
        if rec.expires_ms != u64::MAX {
            self.t
                .expiry_blob
                .insert(expiry_key(rec.expires_ms, id), &[])?;
        }
        let before = self.t.blob_record.insert(id.as_str(), encode(rec))?;
        let before: Option<BlobRecord> = before.map(|v| decode(TREE, &v)).transpose()?;
        self.t.counts.blob_changed(before.as_ref(), Some(rec));
        if let Some(old) = old {
            if old.expires_ms != rec.expires_ms {
                self.t.expiry_blob.remove(expiry_key(old.expires_ms, id))?;
            }
        }
        Ok(())
    }

    /// Records that an upload of `id` by `account` may start (until `until_ms`) and reserves
    /// `size` bytes of the account's `quota` for it, unless the content is stored already.
    /// A repeated request of the same account re-sizes its one reservation.
    pub fn blob_pending(
        &self,
        id: &BlobId,
        account: &AccountId,
        size: u64,
        segments: &[u64],
        until_ms: u64,
        quota: u64,
    ) -> Result<PendingOutcome, StoreError> {
        let _gate = self.writing();
        let old = self.blob(id)?;
        let gone_at_ms = match &old {
            Some(BlobRecord {
                state: BlobState::Stored { .. },
                ..
            }) => return Ok(PendingOutcome::AlreadyStored),
            Some(BlobRecord {
                state: BlobState::Gone { at_ms },
                ..
            }) => Some(*at_ms),
            Some(BlobRecord {
                state: BlobState::Pending { gone_at_ms },
                ..
            }) => *gone_at_ms,
            None => None,
        };
        let key = reservation_key(id, account);
        let held = self.blob_reservation(id, account)?.unwrap_or(0);
        // The reservation is written before the usage grows: a crash in between under-counts.
        self.t
            .blobaccount_reservedbytes
            .insert(&key, &size.to_be_bytes()[..])?;
        let delta = i128::from(size) - i128::from(held);
        if let Err(used) = self.blob_charge(account, delta, quota)? {
            if held == 0 {
                self.t.blobaccount_reservedbytes.remove(&key)?;
            } else {
                self.t
                    .blobaccount_reservedbytes
                    .insert(&key, &held.to_be_bytes()[..])?;
            }
            return Ok(PendingOutcome::QuotaExceeded { used });
        }
        let rec = BlobRecord {
            size,
            segments: segments.to_vec(),
            state: BlobState::Pending { gone_at_ms },
            expires_ms: until_ms.max(old.as_ref().map_or(0, |o| match o.state {
                // Another account's pending upload of the same content keeps its time.
                BlobState::Pending { .. } => o.expires_ms,
                _ => 0,
            })),
        };
        self.blob_put(id, &rec, old.as_ref())?;
        Ok(PendingOutcome::Pending)
    }

    /// The bytes `account` reserved for its pending upload of `id`, if it has one.
    pub fn blob_reservation(
        &self,
        id: &BlobId,
        account: &AccountId,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self
            .t
            .blobaccount_reservedbytes
            .get(reservation_key(id, account))?
            .map(|v| usage_of(Some(&v))))
    }

    /// Gives back every reservation of `id` except `keep`'s (whose reservation has become its
    /// stored blob's charge), and forgets them all.
    fn blob_release(&self, id: &BlobId, keep: Option<&AccountId>) -> Result<(), StoreError> {
        let prefix = reservation_prefix(id);
        for item in self.t.blobaccount_reservedbytes.scan_prefix(&prefix) {
            let (k, v) = item?;
            let account = k
                .get(prefix.len()..)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|a| AccountId::parse(a).ok());
            // Forgotten first: a crash before the usage shrinks under-counts.
            self.t.blobaccount_reservedbytes.remove(&k)?;
            if let Some(a) = account {
                if Some(&a) != keep {
                    let _ = self.blob_charge(&a, -i128::from(usage_of(Some(&v))), u64::MAX)?;
                }
            }
        }
        Ok(())
    }

    /// Bytes counted against `account`'s quota: the stored blobs it owns and the
    /// reservations of its pending uploads.
    pub fn blob_usage(&self, account: &AccountId) -> Result<u64, StoreError> {
        Ok(usage_of(
            self.t.account_blobbytes.get(account.as_str())?.as_deref(),
        ))
    }

    /// Adds `delta` (may be negative) to `account`'s usage, refusing to pass `quota`.
    fn blob_charge(
        &self,
        account: &AccountId,
        delta: i128,
        quota: u64,
    ) -> Result<Result<(), u64>, StoreError> {
        loop {
            let old = self.t.account_blobbytes.get(account.as_str())?;
            let used = usage_of(old.as_deref());
            let new = i128::from(used) + delta;
            if delta > 0 && new > i128::from(quota) {
                return Ok(Err(used));
            }
            let new = u64::try_from(new.max(0)).unwrap_or(0);
            let swapped = self.t.account_blobbytes.compare_and_swap(
                account.as_str(),
                old,
                Some(&new.to_be_bytes()[..]),
            )?;
            if swapped.is_ok() {
                return Ok(Ok(()));
            }
            // Another upload of the same account changed the usage meanwhile: read again.
        }
    }

    /// Completes an upload: the file of `id` (of `size` bytes) is in place, uploaded by
    /// `owner`; it expires at `expires_ms`. The owner's reservation becomes the blob's charge
    /// (any difference to `size` is charged or given back); other accounts' reservations of
    /// the same content are given back.
    pub fn blob_commit(
        &self,
        id: &BlobId,
        owner: &DeviceId,
        size: u64,
        now_ms: u64,
        expires_ms: u64,
        quota: u64,
    ) -> Result<CommitOutcome, StoreError> {
        let _gate = self.writing();
        let Some(old) = self.blob(id)? else {
            return Ok(CommitOutcome::NotPending);
        };
        if !matches!(old.state, BlobState::Pending { .. }) {
            return Ok(CommitOutcome::NotPending);
        }
        let reserved = self.blob_reservation(id, &owner.account)?.unwrap_or(0);
        let delta = i128::from(size) - i128::from(reserved);
        if let Err(used) = self.blob_charge(&owner.account, delta, quota)? {
            return Ok(CommitOutcome::QuotaExceeded { used });
        }
        self.blob_release(id, Some(&owner.account))?;
        let rec = BlobRecord {
            size,
            segments: old.segments.clone(),
            state: BlobState::Stored {
                owner: owner.account.to_string(),
                device: owner.device,
                created_ms: now_ms,
            },
            expires_ms,
        };
        self.blob_put(id, &rec, Some(&old))?;
        Ok(CommitOutcome::Stored)
    }

    /// Ids whose record changes state at or before `now_ms` (expired blobs, lapsed uploads),
    /// at most `limit` of them.
    pub fn blob_due(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, BlobId)>, StoreError> {
        let _gate = self.writing();
        let mut out = Vec::new();
        let end = now_ms.saturating_add(1).to_be_bytes();
        for k in self.t.expiry_blob.range(..&end[..]).keys() {
            let k = k?;
            let at = k
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            let id = k
                .get(8..)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| BlobId::parse(s).ok());
            match (at, id) {
                (Some(at), Some(id)) => out.push((at, id)),
                _ => {
                    self.t.expiry_blob.remove(&k)?;
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Ends whatever `id` is if its time has come (or at once with `force`): a stored blob
    /// becomes a tombstone kept until `now_ms + tombstone_ms` and its bytes leave the owner's
    /// usage; a lapsed upload gives back its reservations and vanishes (or returns to its
    /// earlier tombstone); a tombstone whose time has come is dropped with every right to
    /// fetch the blob (never by `force`: a purge keeps the tombstone). `indexed_ms` is the
    /// expiry-index entry that led here, if any. Returns whether a stored file must now be
    /// deleted; the caller deletes it after this returns.
    pub fn blob_expire(
        &self,
        id: &BlobId,
        indexed_ms: Option<u64>,
        now_ms: u64,
        force: bool,
        tombstone_ms: u64,
    ) -> Result<bool, StoreError> {
        let _gate = self.writing();
        if let Some(at) = indexed_ms {
            self.t.expiry_blob.remove(expiry_key(at, id))?;
        }
        let Some(old) = self.blob(id)? else {
            return Ok(false);
        };
        if !force && old.expires_ms > now_ms {
            // Re-uploaded since it was indexed; its current entry is still in the index.
            return Ok(false);
        }
        let tomb = |at_ms: u64| BlobRecord {
            size: old.size,
            segments: old.segments.clone(),
            state: BlobState::Gone { at_ms },
            expires_ms: at_ms.saturating_add(tombstone_ms),
        };
        match &old.state {
            BlobState::Stored { owner, .. } => {
                self.blob_put(id, &tomb(now_ms), Some(&old))?;
                if let Ok(a) = AccountId::parse(owner) {
                    let _ = self.blob_charge(&a, -i128::from(old.size), u64::MAX)?;
                }
                Ok(true)
            }
            BlobState::Pending { gone_at_ms } => {
                self.blob_release(id, None)?;
                match gone_at_ms {
                    Some(at) if at.saturating_add(tombstone_ms) > now_ms => {
                        self.blob_put(id, &tomb(*at), Some(&old))?;
                    }
                    _ => self.blob_forget(id, &old)?,
                }
                Ok(false)
            }
            BlobState::Gone { .. } if force => Ok(false),
            BlobState::Gone { .. } => {
                self.blob_forget(id, &old)?;
                Ok(false)
            }
        }
    }

    /// Drops `id`'s record, its index entry and every right to fetch it.
    fn blob_forget(&self, id: &BlobId, old: &BlobRecord) -> Result<(), StoreError> {
        if let Some(before) = self.t.blob_record.remove(id.as_str())? {
            let before: BlobRecord = decode(TREE, &before)?;
            self.t.counts.blob_changed(Some(&before), None);
        }
        self.t.expiry_blob.remove(expiry_key(old.expires_ms, id))?;
        self.blob_revoke_all(id)
    }

    /// Gives tombstones written before tombstones were bounded (kept forever) their end,
    /// `tombstone_ms` after they were made, and indexes them for the collector. Returns how
    /// many were bounded. One pass over the blob records, at the collector's start.
    pub fn blob_bound_tombstones(&self, tombstone_ms: u64) -> Result<usize, StoreError> {
        let _gate = self.writing();
        let mut bounded = 0;
        for item in self.t.blob_record.iter() {
            let (k, v) = item?;
            let rec: BlobRecord = decode(TREE, &v)?;
            let (BlobState::Gone { at_ms }, u64::MAX) = (&rec.state, rec.expires_ms) else {
                continue;
            };
            let Some(id) = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| BlobId::parse(s).ok())
            else {
                continue;
            };
            let bounded_rec = BlobRecord {
                expires_ms: at_ms.saturating_add(tombstone_ms),
                ..rec.clone()
            };
            self.blob_put(&id, &bounded_rec, Some(&rec))?;
            bounded += 1;
        }
        Ok(bounded)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Tombstones in these tests last 500 ms.
    const TOMB: u64 = 500;

    fn dev(no: u32) -> DeviceId {
        DeviceId::new(AccountId::parse("+14155550100").unwrap(), no)
    }

    fn other_account() -> AccountId {
        AccountId::parse("+14155550199").unwrap()
    }

    #[test]
    fn a_blob_goes_pending_stored_gone_forgotten_and_its_bytes_follow_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = BlobId::of(b"x");
        let a = &dev(0).account;
        assert_eq!(
            store.blob_pending(&id, a, 10, &[4, 6], 100, 15).unwrap(),
            PendingOutcome::Pending
        );
        assert_eq!(
            store.blob_usage(a).unwrap(),
            10,
            "a pending upload reserves its bytes"
        );
        assert_eq!(store.blob_reservation(&id, a).unwrap(), Some(10));
        assert_eq!(
            store.blob_commit(&id, &dev(0), 10, 5, 1000, 15).unwrap(),
            CommitOutcome::Stored
        );
        assert_eq!(
            store.blob_usage(a).unwrap(),
            10,
            "the reservation became the charge"
        );
        assert_eq!(store.blob_reservation(&id, a).unwrap(), None);
        assert_eq!(
            store.blob_pending(&id, a, 10, &[], 100, 15).unwrap(),
            PendingOutcome::AlreadyStored
        );

        let other = BlobId::of(b"y");
        assert_eq!(
            store.blob_pending(&other, a, 10, &[], 100, 15).unwrap(),
            PendingOutcome::QuotaExceeded { used: 10 },
            "the quota is per account, across its devices, reservations included"
        );
        assert_eq!(
            store.blob(&other).unwrap(),
            None,
            "a refusal records nothing"
        );

        // Nothing is due before its time; then the stored blob becomes a tombstone.
        let due = store.blob_due(999, 10).unwrap();
        assert!(due.iter().all(|(_, d)| *d != id));
        let due = store.blob_due(1000, 10).unwrap();
        let (at, _) = due.iter().find(|(_, d)| *d == id).unwrap();
        assert!(store
            .blob_expire(&id, Some(*at), 1000, false, TOMB)
            .unwrap());
        let tomb = store.blob(&id).unwrap().unwrap();
        assert!(matches!(tomb.state, BlobState::Gone { at_ms: 1000 }));
        assert_eq!(tomb.expires_ms, 1000 + TOMB, "a tombstone has an end");
        assert_eq!(store.blob_usage(a).unwrap(), 0);
        assert!(
            !store.blob_expire(&id, None, 2000, true, TOMB).unwrap(),
            "already gone"
        );
        assert!(
            store.blob(&id).unwrap().is_some(),
            "a purge keeps the tombstone"
        );

        // A lapsed upload leaves no record and gives its reservation back; one over a
        // tombstone returns to the tombstone.
        store.blob_pending(&other, a, 10, &[], 100, 15).unwrap();
        assert_eq!(store.blob_usage(a).unwrap(), 10);
        assert!(!store
            .blob_expire(&other, Some(100), 100, false, TOMB)
            .unwrap());
        assert_eq!(store.blob(&other).unwrap(), None);
        assert_eq!(
            store.blob_usage(a).unwrap(),
            0,
            "the lapsed reservation is given back"
        );
        store.blob_pending(&id, a, 10, &[], 1200, 15).unwrap();
        assert!(!store
            .blob_expire(&id, Some(1200), 1200, false, TOMB)
            .unwrap());
        assert!(matches!(
            store.blob(&id).unwrap().unwrap().state,
            BlobState::Gone { .. }
        ));
        assert_eq!(store.blob_usage(a).unwrap(), 0);

        // The tombstone's own time comes: the id and the rights to fetch it are forgotten.
        store
            .blob_grant(&id, crate::store::BlobScope::Account(a))
            .unwrap();
        assert!(store.blob_may_fetch(&id, a).unwrap());
        let due = store.blob_due(1000 + TOMB, 10).unwrap();
        let (at, _) = due.iter().find(|(_, d)| *d == id).unwrap();
        assert!(!store
            .blob_expire(&id, Some(*at), 1000 + TOMB, false, TOMB)
            .unwrap());
        assert_eq!(store.blob(&id).unwrap(), None);
        assert!(!store.blob_may_fetch(&id, a).unwrap());
        assert!(store.blob_due(u64::MAX - 1, 10).unwrap().is_empty());
    }

    #[test]
    fn reservations_of_one_content_by_two_accounts_end_with_the_first_upload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = BlobId::of(b"shared");
        let (a, b) = (&dev(0).account, &other_account());
        store.blob_pending(&id, a, 10, &[], 100, 100).unwrap();
        store.blob_pending(&id, b, 10, &[], 100, 100).unwrap();
        // A repeated request re-sizes the one reservation instead of adding another.
        store.blob_pending(&id, b, 8, &[], 100, 100).unwrap();
        assert_eq!(store.blob_usage(b).unwrap(), 8);
        // The first upload completes (smaller than declared): its owner pays what it stored,
        // the other account gets its reservation back.
        assert_eq!(
            store.blob_commit(&id, &dev(0), 7, 5, 1000, 100).unwrap(),
            CommitOutcome::Stored
        );
        assert_eq!(store.blob_usage(a).unwrap(), 7);
        assert_eq!(store.blob_usage(b).unwrap(), 0);
        assert_eq!(store.blob_reservation(&id, b).unwrap(), None);
    }

    #[test]
    fn tombstones_of_an_older_relay_get_an_end_and_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = BlobId::of(b"old");
        let forever = BlobRecord {
            size: 3,
            segments: Vec::new(),
            state: BlobState::Gone { at_ms: 50 },
            expires_ms: u64::MAX,
        };
        store
            .t
            .blob_record
            .insert(id.as_str(), encode(&forever))
            .unwrap();
        assert!(store.blob_due(u64::MAX - 1, 10).unwrap().is_empty());
        assert_eq!(store.blob_bound_tombstones(TOMB).unwrap(), 1);
        assert_eq!(store.blob_bound_tombstones(TOMB).unwrap(), 0, "once");
        let due = store.blob_due(50 + TOMB, 10).unwrap();
        assert_eq!(due, vec![(50 + TOMB, id.clone())]);
        store
            .blob_expire(&id, Some(50 + TOMB), 50 + TOMB, false, TOMB)
            .unwrap();
        assert_eq!(store.blob(&id).unwrap(), None);
    }
}
