//! Muted threads per account, and push endpoints per device.

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
        self.t.accountthread_muteuntil.insert(
            keys::account_item(account, thread.as_bytes()),
            &until_ms.to_be_bytes(),
        )?;
        Ok(())
    }

    pub fn mute_clear(&self, account: &AccountId, thread: &str) -> Result<(), StoreError> {
        let _gate = self.writing();
        self.t
            .accountthread_muteuntil
            .remove(keys::account_item(account, thread.as_bytes()))?;
        Ok(())
    }

    /// Whether `thread` is muted for `account` at `now_ms`. An expired mute is removed.
    pub fn muted(
        &self,
        account: &AccountId,
        thread: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let k = keys::account_item(account, thread.as_bytes());
        let Some(v) = self.t.accountthread_muteuntil.get(&k)? else {
            return Ok(false);
        };
        let until = <[u8; 8]>::try_from(v.as_ref())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        if until > now_ms {
            return Ok(true);
        }
        // Expired on its own: forget it (a racing new mute is kept by compare-and-swap).
        let _ = self
            .t
            .accountthread_muteuntil
            .compare_and_swap(&k, Some(v), None::<&[u8]>)?;
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
