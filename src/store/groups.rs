//! Groups: subject, members (with admin flags) and a membership version, plus the index of
//! each account's groups. Only the group's `Thread` actor writes a group.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{decode, encode, keys, Store, StoreError};
use crate::ids::AccountId;

const TREE: &str = "group_record";

/// A stored group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub subject: String,
    /// Member account (E.164) → admin.
    pub members: BTreeMap<String, bool>,
    /// Incremented on every change.
    pub version: u64,
    pub created_at_ms: u64,
}

impl Store {
    pub fn group(&self, id: &str) -> Result<Option<GroupRecord>, StoreError> {
        self.t
            .group_record
            .get(id)?
            .map(|v| decode(TREE, &v))
            .transpose()
    }

    /// Writes a group and brings the member index in line with `previous` → `rec`.
    pub fn group_put(
        &self,
        id: &str,
        rec: &GroupRecord,
        previous: Option<&GroupRecord>,
    ) -> Result<(), StoreError> {
        let _gate = self.writing();
        // Index first: a crash between the two leaves an index entry for a member the group
        // does not list, which readers check against the record.
        for m in rec.members.keys() {
            if let Ok(a) = AccountId::parse(m) {
                self.t
                    .accountgroup_
                    .insert(keys::account_item(&a, id.as_bytes()), &[])?;
            }
        }
        if self.t.group_record.insert(id, encode(rec))?.is_none() {
            self.t.counts.group_added();
        }
        if let Some(prev) = previous {
            for m in prev
                .members
                .keys()
                .filter(|m| !rec.members.contains_key(*m))
            {
                if let Ok(a) = AccountId::parse(m) {
                    self.t
                        .accountgroup_
                        .remove(keys::account_item(&a, id.as_bytes()))?;
                }
            }
        }
        Ok(())
    }

    /// The ids of the groups `account` is a member of.
    pub fn groups_of(&self, account: &AccountId) -> Result<Vec<String>, StoreError> {
        let prefix = keys::account_prefix(account);
        let mut out = Vec::new();
        for k in self.t.accountgroup_.scan_prefix(&prefix).keys() {
            let k = k?;
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(out)
    }
}
