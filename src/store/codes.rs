//! Pending verification codes, one per phone number (stored hashed; see `registration::codes`).

use serde::{Deserialize, Serialize};

use super::{decode, encode, Store, StoreError};
use crate::ids::AccountId;

/// A pending code for one phone number, as persisted by the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CodeRecord {
    /// HMAC-SHA256(secret, phone || 0x00 || code). The code itself is never stored.
    pub hash: [u8; 32],
    /// The code is refused from this instant on (milliseconds since the Unix epoch).
    pub expires_at_ms: u64,
    /// Tries that may still be made; 0 means the record is void.
    pub attempts_left: u32,
    /// When the code was issued (milliseconds since the Unix epoch), e.g. for resend spacing.
    pub issued_at_ms: u64,
}

const TREE: &str = "phone_coderecord";

impl Store {
    pub fn code_get(&self, phone: &AccountId) -> Result<Option<CodeRecord>, StoreError> {
        self.t
            .phone_coderecord
            .get(phone.as_str())?
            .map(|v| decode(TREE, &v))
            .transpose()
    }

    pub fn code_put(&self, phone: &AccountId, rec: &CodeRecord) -> Result<(), StoreError> {
        let _gate = self.writing();
        self.t
            .phone_coderecord
            .insert(phone.as_str(), encode(rec))?;
        Ok(())
    }

    pub fn code_remove(&self, phone: &AccountId) -> Result<(), StoreError> {
        let _gate = self.writing();
        self.t.phone_coderecord.remove(phone.as_str())?;
        Ok(())
    }

    /// Drops codes that expired before `now_ms`; returns how many.
    pub fn code_sweep(&self, now_ms: u64) -> Result<usize, StoreError> {
        let _gate = self.writing();
        let mut n = 0;
        for kv in self.t.phone_coderecord.iter() {
            let (k, v) = kv?;
            let rec: CodeRecord = decode(TREE, &v)?;
            if rec.expires_at_ms <= now_ms {
                self.t.phone_coderecord.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
