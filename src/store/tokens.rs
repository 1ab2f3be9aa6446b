//! Resumption token ids: the one valid token of each device, swapped atomically on use so a
//! token (and a replayed handshake carrying it) works once.

use super::{keys, Store, StoreError};
use crate::ids::DeviceId;

impl Store {
    /// Records `id` as the device's only valid token id.
    pub fn token_set(&self, d: &DeviceId, id: u64) -> Result<(), StoreError> {
        let _gate = self.writing();
        self.t
            .device_tokenid
            .insert(keys::device(d), &id.to_be_bytes())?;
        Ok(())
    }

    /// Replaces `presented` by `next` if `presented` is the current id. `false` means the
    /// token was already used, superseded or never issued.
    pub fn token_swap(&self, d: &DeviceId, presented: u64, next: u64) -> Result<bool, StoreError> {
        let _gate = self.writing();
        let swapped = self.t.device_tokenid.compare_and_swap(
            keys::device(d),
            Some(&presented.to_be_bytes()[..]),
            Some(&next.to_be_bytes()[..]),
        )?;
        Ok(swapped.is_ok())
    }
}
