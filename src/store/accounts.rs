//! Accounts and their devices: who may log in with which Noise static key.

use serde::{Deserialize, Serialize};

use super::{decode, encode, keys, Store, StoreError};
use crate::ids::{AccountId, DeviceId, DeviceNo};

const TREE: &str = "accountdevice_record";

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The device's Noise static public key: its transport identity.
    pub noise_static: [u8; 32],
    pub registered_at_ms: u64,
}

impl Store {
    /// The device's record, if registered.
    pub fn device(&self, d: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        self.t
            .accountdevice_record
            .get(keys::device(d))?
            .map(|v| decode(TREE, &v))
            .transpose()
    }

    /// The account's devices in ascending order (empty if the account is unknown).
    pub fn devices(
        &self,
        account: &AccountId,
    ) -> Result<Vec<(DeviceNo, DeviceRecord)>, StoreError> {
        if let Some(hit) = self.devices.get(account) {
            return Ok(hit);
        }
        let out = self.devices_uncached(account)?;
        self.devices.put(account, &out);
        Ok(out)
    }

    fn devices_uncached(
        &self,
        account: &AccountId,
    ) -> Result<Vec<(DeviceNo, DeviceRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .t
            .accountdevice_record
            .scan_prefix(keys::account_prefix(account))
        {
            let (k, v) = kv?;
            let d = keys::parse_device(&k).ok_or_else(|| super::corrupt(TREE, "bad key"))?;
            out.push((d.device, decode(TREE, &v)?));
        }
        Ok(out)
    }

    /// Whether the account has any device.
    pub fn account_exists(&self, account: &AccountId) -> Result<bool, StoreError> {
        Ok(self
            .t
            .accountdevice_record
            .scan_prefix(keys::account_prefix(account))
            .next()
            .transpose()?
            .is_some())
    }

    /// Registers (or re-registers, after a new verification) the account's primary device with
    /// `noise_static`. A re-registration is a new phone: the old primary's keys, queue and
    /// token are dropped, so nothing meant for the old key is handed to the new one.
    pub fn register_primary(
        &self,
        account: &AccountId,
        noise_static: [u8; 32],
        now_ms: u64,
    ) -> Result<DeviceId, StoreError> {
        let _gate = self.writing();
        let d = DeviceId::new(account.clone(), 0);
        if let Some(old) = self.device(&d)? {
            if old.noise_static != noise_static {
                self.forget_device_state(&d)?;
                self.t.noisestatic_device.remove(old.noise_static)?;
            }
        }
        self.put_device(&d, noise_static, now_ms)?;
        Ok(d)
    }

    fn put_device(
        &self,
        d: &DeviceId,
        noise_static: [u8; 32],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.devices.forget(&d.account);
        let rec = DeviceRecord {
            noise_static,
            registered_at_ms: now_ms,
        };
        self.t
            .noisestatic_device
            .insert(noise_static, keys::device(d))?;
        let _counting = self.t.counts.account_change();
        let new_account = !self.account_exists(&d.account)?;
        let old = self
            .t
            .accountdevice_record
            .insert(keys::device(d), encode(&rec))?;
        if old.is_none() {
            self.t.counts.device_added(new_account);
        }
        Ok(())
    }

    /// Adds a companion device with `noise_static`, pending its first login with `secret`.
    /// Device numbers are never reused, so peers' sessions with an unlinked device can never
    /// be mistaken for a new one. `None` if the key is already registered.
    pub fn link_companion(
        &self,
        account: &AccountId,
        noise_static: [u8; 32],
        secret: &[u8],
        now_ms: u64,
    ) -> Result<Option<DeviceId>, StoreError> {
        let _gate = self.writing();
        if self.t.noisestatic_device.contains_key(noise_static)? {
            return Ok(None);
        }
        let next = self
            .t
            .account_nextdevice
            .update_and_fetch(account.as_str(), |old| {
                let n = old
                    .and_then(|v| <[u8; 4]>::try_from(v).ok())
                    .map(u32::from_be_bytes)
                    .unwrap_or(1);
                Some(n.saturating_add(1).to_be_bytes().to_vec())
            })?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| super::corrupt("account_nextdevice", "no value"))?;
        let d = DeviceId::new(account.clone(), next - 1);
        self.t.device_linksecret.insert(keys::device(&d), secret)?;
        self.put_device(&d, noise_static, now_ms)?;
        Ok(Some(d))
    }

    /// The device registered with this Noise static key.
    pub fn device_by_key(&self, noise_static: &[u8; 32]) -> Result<Option<DeviceId>, StoreError> {
        Ok(self
            .t
            .noisestatic_device
            .get(noise_static)?
            .and_then(|v| keys::parse_device(&v)))
    }

    /// Checks a companion's first login: `true` if no link is pending for `d` (the device
    /// already logged in once; its key alone authenticates it) or if `secret` matches the
    /// pending one, which is then consumed.
    pub fn check_link_secret(&self, d: &DeviceId, secret: &[u8]) -> Result<bool, StoreError> {
        let _gate = self.writing();
        let k = keys::device(d);
        match self.t.device_linksecret.get(&k)? {
            None => Ok(true),
            Some(pending) if pending.as_ref() == secret => {
                self.t.device_linksecret.remove(&k)?;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// Removes a companion: its registration, keys, queue, token and push endpoint.
    pub fn unlink(&self, d: &DeviceId) -> Result<bool, StoreError> {
        let _gate = self.writing();
        self.devices.forget(&d.account);
        let Some(rec) = self.device(d)? else {
            return Ok(false);
        };
        {
            let _counting = self.t.counts.account_change();
            if self
                .t
                .accountdevice_record
                .remove(keys::device(d))?
                .is_some()
            {
                let account_gone = !self.account_exists(&d.account)?;
                self.t.counts.device_removed(account_gone);
            }
        }
        self.t.noisestatic_device.remove(rec.noise_static)?;
        self.t.device_linksecret.remove(keys::device(d))?;
        self.t.device_pushendpoint.remove(keys::device(d))?;
        self.forget_device_state(d)?;
        Ok(true)
    }

    /// Removes a device's keys, queue and token (not its registration).
    fn forget_device_state(&self, d: &DeviceId) -> Result<(), StoreError> {
        let k = keys::device(d);
        self.t.device_identitykeys.remove(&k)?;
        self.t.device_fallbackkey.remove(&k)?;
        self.t.device_tokenid.remove(&k)?;
        self.log.forget_device(d)?;
        for key in self.t.deviceotk_publickey.scan_prefix(&k).keys() {
            self.t.deviceotk_publickey.remove(key?)?;
        }
        let queue = &self.t.deviceseq_queuerecord;
        for key in queue.scan_prefix(&k).keys() {
            self.t.counts.remove_retired(queue, key?)?;
        }
        Ok(())
    }
}

/// Most accounts whose device lists are cached; the cache is emptied when it is full.
const DEVICE_CACHE_ACCOUNTS: usize = 100_000;

type DeviceList = Vec<(DeviceNo, DeviceRecord)>;

/// A bounded in-memory copy of device lists.
#[derive(Clone, Default)]
pub(super) struct DeviceCache(
    std::sync::Arc<std::sync::Mutex<crate::maps::FastMap<AccountId, DeviceList>>>,
);

impl DeviceCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, crate::maps::FastMap<AccountId, DeviceList>> {
        // Entries are replaced whole; a poisoned lock still holds consistent lists.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, a: &AccountId) -> Option<DeviceList> {
        self.lock().get(a).cloned()
    }

    fn put(&self, a: &AccountId, list: &DeviceList) {
        let mut m = self.lock();
        if m.len() >= DEVICE_CACHE_ACCOUNTS {
            m.clear();
        }
        m.insert(a.clone(), list.clone());
    }

    fn forget(&self, a: &AccountId) {
        self.lock().remove(a);
    }
}
