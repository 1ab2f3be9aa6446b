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
        let d = DeviceId::new(account.clone(), 0);
        if let Some(old) = self.device(&d)? {
            if old.noise_static != noise_static {
                self.forget_device_state(&d)?;
            }
        }
        let rec = DeviceRecord {
            noise_static,
            registered_at_ms: now_ms,
        };
        self.t
            .accountdevice_record
            .insert(keys::device(&d), encode(&rec))?;
        Ok(d)
    }

    /// Removes a device's keys, queue and token (not its registration).
    fn forget_device_state(&self, d: &DeviceId) -> Result<(), StoreError> {
        let k = keys::device(d);
        self.t.device_identitykeys.remove(&k)?;
        self.t.device_fallbackkey.remove(&k)?;
        self.t.device_tokenid.remove(&k)?;
        for tree in [&self.t.deviceotk_publickey, &self.t.deviceseq_queuerecord] {
            for key in tree.scan_prefix(&k).keys() {
                tree.remove(key?)?;
            }
        }
        Ok(())
    }
}
