//! Blob metadata: who uploaded a blob, its size, segments and expiry, the per-account usage
//! that quotas are checked against, and the expiry index the garbage collector walks. The
//! files themselves are `crate::blob`'s; this module never touches them.
//!
//! A blob's life: `Pending` (an upload URL was handed out) → `Stored` (the file is in place)
//! → `Gone` (expired or purged; a tombstone, so that its id answers 410 and not 404). A
//! pending record that is never completed disappears when its URL expires.

use serde::{Deserialize, Serialize};

use super::{decode, encode, Store, StoreError};
use crate::blob::BlobId;
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
    /// expires. Milliseconds since the Unix epoch; `u64::MAX` for a tombstone.
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
        self.t.blob_record.insert(id.as_str(), encode(rec))?;
        if let Some(old) = old {
            if old.expires_ms != rec.expires_ms {
                self.t.expiry_blob.remove(expiry_key(old.expires_ms, id))?;
            }
        }
        Ok(())
    }

    /// Records that an upload of `id` may start (until `until_ms`), unless it is stored.
    pub fn blob_pending(
        &self,
        id: &BlobId,
        size: u64,
        segments: &[u64],
        until_ms: u64,
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
        let rec = BlobRecord {
            size,
            segments: segments.to_vec(),
            state: BlobState::Pending { gone_at_ms },
            expires_ms: until_ms,
        };
        self.blob_put(id, &rec, old.as_ref())?;
        Ok(PendingOutcome::Pending)
    }

    /// Bytes of stored blobs `account` holds.
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
    /// `owner`; it expires at `expires_ms`. Charges the owner's quota.
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
        let delta = i128::from(size);
        if let Err(used) = self.blob_charge(&owner.account, delta, quota)? {
            return Ok(CommitOutcome::QuotaExceeded { used });
        }
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
    /// becomes a tombstone and its bytes leave the owner's usage; a lapsed upload vanishes
    /// (or returns to its earlier tombstone). `indexed_ms` is the expiry-index entry that led
    /// here, if any. Returns whether a stored file must now be deleted; the caller deletes it
    /// after this returns.
    pub fn blob_expire(
        &self,
        id: &BlobId,
        indexed_ms: Option<u64>,
        now_ms: u64,
        force: bool,
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
        self.t.expiry_blob.remove(expiry_key(old.expires_ms, id))?;
        match &old.state {
            BlobState::Stored { owner, .. } => {
                let tomb = BlobRecord {
                    size: old.size,
                    segments: old.segments.clone(),
                    state: BlobState::Gone { at_ms: now_ms },
                    expires_ms: u64::MAX,
                };
                self.t.blob_record.insert(id.as_str(), encode(&tomb))?;
                if let Ok(a) = AccountId::parse(owner) {
                    let _ = self.blob_charge(&a, -i128::from(old.size), u64::MAX)?;
                }
                Ok(true)
            }
            BlobState::Pending {
                gone_at_ms: Some(at),
            } => {
                let tomb = BlobRecord {
                    state: BlobState::Gone { at_ms: *at },
                    expires_ms: u64::MAX,
                    ..old.clone()
                };
                self.t.blob_record.insert(id.as_str(), encode(&tomb))?;
                Ok(false)
            }
            BlobState::Pending { gone_at_ms: None } => {
                self.t.blob_record.remove(id.as_str())?;
                Ok(false)
            }
            BlobState::Gone { .. } => Ok(false),
        }
    }

    /// Stored blobs and their bytes, for operators.
    pub fn blob_totals(&self) -> Result<(u64, u64), StoreError> {
        let (mut count, mut bytes) = (0u64, 0u64);
        for v in self.t.blob_record.iter().values() {
            let rec: BlobRecord = decode(TREE, &v?)?;
            if matches!(rec.state, BlobState::Stored { .. }) {
                count += 1;
                bytes = bytes.saturating_add(rec.size);
            }
        }
        Ok((count, bytes))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dev(no: u32) -> DeviceId {
        DeviceId::new(AccountId::parse("+14155550100").unwrap(), no)
    }

    #[test]
    fn a_blob_goes_pending_stored_gone_and_its_bytes_follow_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = BlobId::of(b"x");
        let a = &dev(0).account;
        assert_eq!(
            store.blob_pending(&id, 10, &[4, 6], 100).unwrap(),
            PendingOutcome::Pending
        );
        assert_eq!(
            store.blob_usage(a).unwrap(),
            0,
            "pending uploads cost nothing yet"
        );
        assert_eq!(
            store.blob_commit(&id, &dev(0), 10, 5, 1000, 15).unwrap(),
            CommitOutcome::Stored
        );
        assert_eq!(store.blob_usage(a).unwrap(), 10);
        assert_eq!(
            store.blob_pending(&id, 10, &[], 100).unwrap(),
            PendingOutcome::AlreadyStored
        );

        let other = BlobId::of(b"y");
        store.blob_pending(&other, 10, &[], 100).unwrap();
        assert_eq!(
            store.blob_commit(&other, &dev(1), 10, 5, 1000, 15).unwrap(),
            CommitOutcome::QuotaExceeded { used: 10 },
            "the quota is per account, across its devices"
        );

        // Nothing is due before its time; then the stored blob becomes a tombstone.
        let due = store.blob_due(999, 10).unwrap();
        assert!(due.iter().all(|(_, d)| *d != id));
        let due = store.blob_due(1000, 10).unwrap();
        let (at, _) = due.iter().find(|(_, d)| *d == id).unwrap();
        assert!(store.blob_expire(&id, Some(*at), 1000, false).unwrap());
        assert!(matches!(
            store.blob(&id).unwrap().unwrap().state,
            BlobState::Gone { .. }
        ));
        assert_eq!(store.blob_usage(a).unwrap(), 0);
        assert!(
            !store.blob_expire(&id, None, 2000, true).unwrap(),
            "already gone"
        );

        // A lapsed upload leaves no record; one over a tombstone returns to the tombstone.
        assert!(!store.blob_expire(&other, Some(100), 100, false).unwrap());
        assert_eq!(store.blob(&other).unwrap(), None);
        store.blob_pending(&id, 10, &[], 3000).unwrap();
        assert!(!store.blob_expire(&id, Some(3000), 3000, false).unwrap());
        assert!(matches!(
            store.blob(&id).unwrap().unwrap().state,
            BlobState::Gone { .. }
        ));
        assert!(store.blob_due(u64::MAX - 1, 10).unwrap().is_empty());
    }
}
