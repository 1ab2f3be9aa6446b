//! Contacts (each account's uploaded list and the reverse index), presence privacy and
//! last-seen times.

use super::{decode, encode, keys, Store, StoreError};
use crate::ids::AccountId;

const TREE: &str = "account_contacts";

impl Store {
    /// Replaces `account`'s contact list and the reverse index.
    pub fn contacts_set(
        &self,
        account: &AccountId,
        contacts: &[AccountId],
    ) -> Result<(), StoreError> {
        let _gate = self.writing();
        let written = self.contacts_write(account, contacts);
        // After the writes, failed or not: no answer read before or during them is kept.
        self.contact_answers.clear();
        written
    }

    fn contacts_write(
        &self,
        account: &AccountId,
        contacts: &[AccountId],
    ) -> Result<(), StoreError> {
        let old = self.contacts(account)?;
        for c in &old {
            if !contacts.contains(c) {
                self.t
                    .contactaccount_
                    .remove(keys::account_item(c, account.as_bytes()))?;
            }
        }
        for c in contacts {
            self.t
                .contactaccount_
                .insert(keys::account_item(c, account.as_bytes()), &[])?;
        }
        let list: Vec<String> = contacts.iter().map(|c| c.to_string()).collect();
        self.t
            .account_contacts
            .insert(account.as_str(), encode(&list))?;
        Ok(())
    }

    /// `account`'s contact list.
    pub fn contacts(&self, account: &AccountId) -> Result<Vec<AccountId>, StoreError> {
        let list: Vec<String> = match self.t.account_contacts.get(account.as_str())? {
            Some(v) => decode(TREE, &v)?,
            None => Vec::new(),
        };
        Ok(list
            .iter()
            .filter_map(|s| AccountId::parse(s).ok())
            .collect())
    }

    /// Whether `account` has `other` in its contacts.
    pub fn has_contact(&self, account: &AccountId, other: &AccountId) -> Result<bool, StoreError> {
        let pair = (account.clone(), other.clone());
        let generation = match self.contact_answers.get(&pair) {
            Ok(known) => return Ok(known),
            Err(generation) => generation,
        };
        let answer = self
            .t
            .contactaccount_
            .contains_key(keys::account_item(other, account.as_bytes()))?;
        self.contact_answers.put(pair, answer, generation);
        Ok(answer)
    }

    /// The accounts that have `contact` in their contacts.
    pub fn contact_of(&self, contact: &AccountId) -> Result<Vec<AccountId>, StoreError> {
        let prefix = keys::account_prefix(contact);
        let mut out = Vec::new();
        for k in self.t.contactaccount_.scan_prefix(&prefix).keys() {
            let k = k?;
            if let Ok(a) = std::str::from_utf8(&k[prefix.len()..]).map(AccountId::parse) {
                out.extend(a.ok());
            }
        }
        Ok(out)
    }

    /// The account's presence privacy (the `PresencePrivacy` number), if set.
    pub fn privacy(&self, account: &AccountId) -> Result<Option<u8>, StoreError> {
        Ok(self
            .t
            .account_privacy
            .get(account.as_str())?
            .and_then(|v| v.first().copied()))
    }

    pub fn privacy_set(&self, account: &AccountId, value: u8) -> Result<(), StoreError> {
        let _gate = self.writing();
        self.t.account_privacy.insert(account.as_str(), &[value])?;
        Ok(())
    }

    pub fn last_seen(&self, account: &AccountId) -> Result<u64, StoreError> {
        Ok(self
            .t
            .account_lastseen
            .get(account.as_str())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    pub fn last_seen_set(&self, account: &AccountId, at_ms: u64) -> Result<(), StoreError> {
        let _gate = self.writing();
        self.t
            .account_lastseen
            .insert(account.as_str(), &at_ms.to_be_bytes())?;
        Ok(())
    }
}

/// Most `has_contact` answers kept; the cache is emptied when it is full.
const CONTACT_CACHE_ANSWERS: usize = 200_000;

/// `has_contact` answers by (account, other). A contact-list change empties it and moves the
/// generation on, so an answer read from sled before the change is not kept after it.
#[derive(Clone, Default)]
pub(super) struct ContactCache(std::sync::Arc<std::sync::Mutex<ContactAnswers>>);

#[derive(Default)]
pub(super) struct ContactAnswers {
    generation: u64,
    answers: crate::maps::FastMap<(AccountId, AccountId), bool>,
}

impl ContactCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, ContactAnswers> {
        // Each operation is one map update; a poisoned lock still holds true answers.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept answer, or else the generation to [`put`](Self::put) one read now with.
    fn get(&self, pair: &(AccountId, AccountId)) -> Result<bool, u64> {
        let c = self.lock();
        c.answers.get(pair).copied().ok_or(c.generation)
    }

    /// Keeps an answer read at `generation`, unless a change came since.
    fn put(&self, pair: (AccountId, AccountId), answer: bool, generation: u64) {
        let mut c = self.lock();
        if c.generation != generation {
            return;
        }
        if c.answers.len() >= CONTACT_CACHE_ANSWERS {
            c.answers.clear();
        }
        c.answers.insert(pair, answer);
    }

    fn clear(&self) {
        let mut c = self.lock();
        c.generation += 1;
        c.answers.clear();
    }
}
