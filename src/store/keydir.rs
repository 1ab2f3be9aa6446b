//! The key directory: each device's end-to-end identity keys, one-time keys and fallback key.
//! The relay holds public keys only.

use serde::{Deserialize, Serialize};

use super::{decode, encode, keys, Store, StoreError};
use crate::ids::DeviceId;

/// A device's long-term end-to-end public keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityKeys {
    /// Curve25519 identity key.
    pub identity: [u8; 32],
    /// Ed25519 signing key.
    pub signing: [u8; 32],
}

/// What publishing identity keys did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityOutcome {
    Stored,
    Unchanged,
    /// The device already published different identity keys; they are kept.
    Conflict,
}

/// One key bundle claimed for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKey {
    pub identity: IdentityKeys,
    /// `(key_id, public key)` of a one-time key (now removed) or the fallback key.
    pub key: Option<(Vec<u8>, [u8; 32])>,
    pub is_fallback: bool,
}

#[derive(Serialize, Deserialize)]
struct Fallback {
    key_id: Vec<u8>,
    public: [u8; 32],
}

impl Store {
    /// Publishes identity keys; they may not change once set.
    pub fn keys_set_identity(
        &self,
        d: &DeviceId,
        ik: &IdentityKeys,
    ) -> Result<IdentityOutcome, StoreError> {
        let _gate = self.writing();
        let k = keys::device(d);
        match self
            .t
            .device_identitykeys
            .compare_and_swap(&k, None::<&[u8]>, Some(encode(ik)))?
        {
            Ok(()) => Ok(IdentityOutcome::Stored),
            Err(cur) => {
                let cur: Option<IdentityKeys> = cur
                    .current
                    .map(|v| decode("device_identitykeys", &v))
                    .transpose()?;
                Ok(if cur.as_ref() == Some(ik) {
                    IdentityOutcome::Unchanged
                } else {
                    IdentityOutcome::Conflict
                })
            }
        }
    }

    pub fn keys_identity(&self, d: &DeviceId) -> Result<Option<IdentityKeys>, StoreError> {
        self.t
            .device_identitykeys
            .get(keys::device(d))?
            .map(|v| decode("device_identitykeys", &v))
            .transpose()
    }

    /// Adds one-time keys, up to `max` held; returns how many the device now holds.
    pub fn keys_add_one_time(
        &self,
        d: &DeviceId,
        otks: &[(Vec<u8>, [u8; 32])],
        max: usize,
    ) -> Result<usize, StoreError> {
        let _gate = self.writing();
        let mut held = self.keys_one_time_count(d)?;
        for (id, public) in otks {
            if held >= max {
                break;
            }
            if self
                .t
                .deviceotk_publickey
                .insert(keys::otk(d, id), &public[..])?
                .is_none()
            {
                held += 1;
            }
        }
        Ok(held)
    }

    pub fn keys_set_fallback(
        &self,
        d: &DeviceId,
        key_id: &[u8],
        public: [u8; 32],
    ) -> Result<(), StoreError> {
        let _gate = self.writing();
        let fb = Fallback {
            key_id: key_id.to_vec(),
            public,
        };
        self.t
            .device_fallbackkey
            .insert(keys::device(d), encode(&fb))?;
        Ok(())
    }

    pub fn keys_one_time_count(&self, d: &DeviceId) -> Result<usize, StoreError> {
        Ok(self
            .t
            .deviceotk_publickey
            .scan_prefix(keys::device(d))
            .count())
    }

    /// Claims one key for `d`: a one-time key (removed, so no two senders get the same one)
    /// or, when none is left, the fallback key. With `prefer_fallback` the fallback key is
    /// given if there is one (a one-time key only if not). `None` if the device published no
    /// identity.
    pub fn keys_claim(
        &self,
        d: &DeviceId,
        prefer_fallback: bool,
    ) -> Result<Option<ClaimedKey>, StoreError> {
        let _gate = self.writing();
        let Some(identity) = self.keys_identity(d)? else {
            return Ok(None);
        };
        let prefix = keys::device(d);
        if prefer_fallback {
            if let Some(f) = self
                .t
                .device_fallbackkey
                .get(&prefix)?
                .map(|v| decode::<Fallback>("device_fallbackkey", &v))
                .transpose()?
            {
                return Ok(Some(ClaimedKey {
                    identity,
                    key: Some((f.key_id, f.public)),
                    is_fallback: true,
                }));
            }
        }
        // Removal decides the winner when two claims race for the same first key.
        for kv in self.t.deviceotk_publickey.scan_prefix(&prefix) {
            let (k, _) = kv?;
            if let Some(v) = self.t.deviceotk_publickey.remove(&k)? {
                let public = <[u8; 32]>::try_from(v.as_ref())
                    .map_err(|_| super::corrupt("deviceotk_publickey", "key is not 32 bytes"))?;
                let key_id = k[prefix.len()..].to_vec();
                return Ok(Some(ClaimedKey {
                    identity,
                    key: Some((key_id, public)),
                    is_fallback: false,
                }));
            }
        }
        let fallback: Option<Fallback> = self
            .t
            .device_fallbackkey
            .get(&prefix)?
            .map(|v| decode("device_fallbackkey", &v))
            .transpose()?;
        let key = fallback.map(|f| (f.key_id, f.public));
        let is_fallback = key.is_some();
        Ok(Some(ClaimedKey {
            identity,
            key,
            is_fallback,
        }))
    }
}
