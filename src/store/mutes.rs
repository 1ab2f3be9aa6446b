//! Muted threads per account, and push endpoints per device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{keys, Store, StoreError};
use crate::ids::{AccountId, DeviceId};

/// `until` value of a mute without end.
pub const MUTE_FOREVER: u64 = u64::MAX;

impl Store {
    /// Mutes `thread` for `account` until `until_ms` ([`MUTE_FOREVER`] for no end).
    pub fn mute_set(
        &self,
        account: &AccountId,
        thread: &str,
        until_ms: u64,
    ) -> Result<(), StoreError> {
        let _gate = self.writing();
        let k = keys::account_item(account, thread.as_bytes());
        let mut mutes = self.mutes.lock();
        self.t
            .accountthread_muteuntil
            .insert(&k, &until_ms.to_be_bytes())?;
        mutes.insert(k, until_ms);
        Ok(())
    }

    pub fn mute_clear(&self, account: &AccountId, thread: &str) -> Result<(), StoreError> {
        let _gate = self.writing();
        let k = keys::account_item(account, thread.as_bytes());
        let mut mutes = self.mutes.lock();
        self.t.accountthread_muteuntil.remove(&k)?;
        mutes.remove(&k);
        Ok(())
    }

    /// Whether `thread` is muted for `account` at `now_ms` (asked for every push, and
    /// answered from memory). An expired mute is removed.
    pub fn muted(
        &self,
        account: &AccountId,
        thread: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        // Most sends meet no mute at all: no key is built then.
        if self.mutes.lock().is_empty() {
            return Ok(false);
        }
        let k = keys::account_item(account, thread.as_bytes());
        match self.mutes.lock().get(&k) {
            None => return Ok(false),
            Some(&until) if until > now_ms => return Ok(true),
            Some(_) => {}
        }
        // Expired on its own: forget it, unless a new mute was set meanwhile (the locks in
        // the writers' order: the gate, then the cache).
        let _gate = self.writing();
        let mut mutes = self.mutes.lock();
        if mutes.get(&k).is_some_and(|&until| until <= now_ms) {
            self.t.accountthread_muteuntil.remove(&k)?;
            mutes.remove(&k);
        }
        Ok(false)
    }

    pub fn push_endpoint(&self, d: &DeviceId) -> Result<Option<String>, StoreError> {
        Ok(self
            .t
            .device_pushendpoint
            .get(keys::device(d))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn push_endpoint_set(&self, d: &DeviceId, url: Option<&str>) -> Result<(), StoreError> {
        let _gate = self.writing();
        match url {
            Some(u) => self
                .t
                .device_pushendpoint
                .insert(keys::device(d), u.as_bytes())?,
            None => self.t.device_pushendpoint.remove(keys::device(d))?,
        };
        Ok(())
    }
}

/// Every mute (its sled key → until_ms), kept in step with sled by `mute_set`, `mute_clear`
/// and the removal of expired mutes, all under this lock. Loaded when the store opens.
#[derive(Clone, Default)]
pub(super) struct MuteCache(Arc<Mutex<HashMap<Vec<u8>, u64>>>);

impl MuteCache {
    pub(super) fn load(tree: &sled::Tree) -> Result<Self, StoreError> {
        let mut mutes = HashMap::new();
        for kv in tree.iter() {
            let (k, v) = kv?;
            let until = <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            mutes.insert(k.to_vec(), until);
        }
        Ok(Self(Arc::new(Mutex::new(mutes))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
