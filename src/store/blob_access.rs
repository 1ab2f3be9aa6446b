//! Who may fetch a blob. The relay cannot read the messages that point at blobs, so the right
//! travels beside them, in the clear part of a `Send` (`Send.blobs`):
//!
//! - the account that uploaded the content holds it (all its devices: a linked companion
//!   fetches the history blob its primary uploaded);
//! - a 1:1 or entity message that names a blob passes the right to each recipient account;
//! - a group message passes it to the *group*, checked against the membership at fetch time,
//!   so a member removed later loses it;
//! - an entity message also passes it to the entity, so the agent a thread is handed to later
//!   can fetch the media sent before.
//!
//! A right outlives the blob's file: a recipient of an expired blob is told it is gone (and
//! recalls it), anyone else that it was never sent to them, so nobody learns which content
//! the relay holds or held.

use super::{Store, StoreError};
use crate::ids::AccountId;
use crate::ids::BlobId;

/// Separates the blob id from the scope in a key.
const SEP: u8 = 0;
/// Where a scope's name starts in a key: after `id ‖ 0x00 ‖ tag`.
const SCOPE_AT: usize = crate::ids::BLOB_ID_CHARS + 2;

/// Who a right was given to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobScope<'a> {
    /// Every device of one account.
    Account(&'a AccountId),
    /// Whoever is a member of the group when they fetch.
    Group(&'a str),
    /// The entity's administrator and its agents when they fetch.
    Entity(&'a AccountId),
}

impl BlobScope<'_> {
    fn tag(self) -> u8 {
        match self {
            Self::Account(_) => b'a',
            Self::Group(_) => b'g',
            Self::Entity(_) => b'e',
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::Account(a) | Self::Entity(a) => a.as_str(),
            Self::Group(g) => g,
        }
    }
}

/// `blob id ‖ 0x00 ‖ tag`: the prefix of one kind of scope of a blob.
fn prefix(id: &BlobId, tag: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.as_str().len() + 2);
    k.extend_from_slice(id.as_str().as_bytes());
    k.push(SEP);
    k.push(tag);
    k
}

fn key(id: &BlobId, scope: BlobScope<'_>) -> Vec<u8> {
    let mut k = prefix(id, scope.tag());
    k.extend_from_slice(scope.name().as_bytes());
    k
}

impl Store {
    /// Forgets every right to fetch `id` (its tombstone is dropped: the id is forgotten).
    pub(super) fn blob_revoke_all(&self, id: &BlobId) -> Result<(), StoreError> {
        let mut all = id.as_str().as_bytes().to_vec();
        all.push(SEP);
        for k in self.t.blobscope_.scan_prefix(all).keys() {
            self.t.blobscope_.remove(k?)?;
        }
        Ok(())
    }

    /// Gives `scope` the right to fetch `id`. Idempotent.
    pub fn blob_grant(&self, id: &BlobId, scope: BlobScope<'_>) -> Result<(), StoreError> {
        self.t.blobscope_.insert(key(id, scope), &[])?;
        Ok(())
    }

    /// Whether `account` may fetch `id`: it holds the right itself, or is a member of a group,
    /// or staff of an entity, that holds it.
    pub fn blob_may_fetch(&self, id: &BlobId, account: &AccountId) -> Result<bool, StoreError> {
        if self
            .t
            .blobscope_
            .contains_key(key(id, BlobScope::Account(account)))?
        {
            return Ok(true);
        }
        for k in self.t.blobscope_.scan_prefix(prefix(id, b'g')).keys() {
            let k = k?;
            let group = String::from_utf8_lossy(&k[SCOPE_AT..]);
            if self
                .group(&group)?
                .is_some_and(|g| g.members.contains_key(account.as_str()))
            {
                return Ok(true);
            }
        }
        for k in self.t.blobscope_.scan_prefix(prefix(id, b'e')).keys() {
            let k = k?;
            let Ok(handle) = AccountId::parse(&String::from_utf8_lossy(&k[SCOPE_AT..])) else {
                continue;
            };
            if handle == *account {
                return Ok(true);
            }
            if self.entity_get(&handle)?.is_some_and(|e| {
                e.admin == account.as_str() || e.agents.contains_key(account.as_str())
            }) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::{AssignPolicy, EntityRecord, GroupRecord};

    fn acc(s: &str) -> AccountId {
        AccountId::parse(s).unwrap()
    }

    #[test]
    fn a_right_reaches_its_account_the_groups_current_members_and_the_entitys_staff() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (alice, bob, carol) = (
            acc("+14155550101"),
            acc("+14155550102"),
            acc("+14155550103"),
        );
        let id = BlobId::of(b"x");
        let other = BlobId::of(b"y");
        assert!(
            !s.blob_may_fetch(&id, &alice).unwrap(),
            "nobody holds a right at first"
        );

        s.blob_grant(&id, BlobScope::Account(&alice)).unwrap();
        assert!(s.blob_may_fetch(&id, &alice).unwrap());
        assert!(!s.blob_may_fetch(&id, &bob).unwrap());
        assert!(
            !s.blob_may_fetch(&other, &alice).unwrap(),
            "rights are per blob"
        );

        let mut group = GroupRecord {
            subject: "shift".into(),
            members: BTreeMap::from([(bob.to_string(), true)]),
            version: 1,
            created_at_ms: 1,
        };
        s.group_put("g1", &group, None).unwrap();
        s.blob_grant(&id, BlobScope::Group("g1")).unwrap();
        assert!(s.blob_may_fetch(&id, &bob).unwrap());
        let before = group.clone();
        group.members.clear();
        group.members.insert(carol.to_string(), true);
        s.group_put("g1", &group, Some(&before)).unwrap();
        assert!(
            !s.blob_may_fetch(&id, &bob).unwrap(),
            "a removed member loses it"
        );
        assert!(
            s.blob_may_fetch(&id, &carol).unwrap(),
            "a new member gains it"
        );

        let dana = acc("+14155550104");
        let acme = acc("@acme");
        s.entity_create(&EntityRecord {
            handle: "@acme".into(),
            phone: String::new(),
            display_name: "Acme".into(),
            admin: alice.to_string(),
            agents: BTreeMap::from([(dana.to_string(), "Dana".into())]),
            policy: AssignPolicy::Manual,
            copy_admin: false,
            auto_assign_after_ms: None,
            next_round_robin: 0,
            created_ms: 1,
        })
        .unwrap();
        s.blob_grant(&other, BlobScope::Entity(&acme)).unwrap();
        assert!(s.blob_may_fetch(&other, &dana).unwrap(), "an agent");
        assert!(
            s.blob_may_fetch(&other, &alice).unwrap(),
            "the administrator"
        );
        assert!(!s.blob_may_fetch(&other, &carol).unwrap());
    }
}
