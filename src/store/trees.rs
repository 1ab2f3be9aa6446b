//! Every sled tree, declared once, in sorted order. Names are `<key>_<value>`; the comment on
//! each gives the composite key (`‖` is concatenation; encoders are in `keys`).

use super::StoreError;

#[derive(Clone)]
pub(super) struct Trees {
    /// device ‖ → DeviceRecord. `device = account ‖ 0x00 ‖ device_no:u32-be`, so a prefix scan
    /// with `account ‖ 0x00` lists an account's devices.
    pub accountdevice_record: sled::Tree,
    /// device → fallback OneTimeKey (key_id, public key).
    pub device_fallbackkey: sled::Tree,
    /// device → IdentityKeys (curve25519 identity, ed25519 signing).
    pub device_identitykeys: sled::Tree,
    /// device → id:u64-be of the one valid resumption token.
    pub device_tokenid: sled::Tree,
    /// device ‖ key_id → one-time public key.
    pub deviceotk_publickey: sled::Tree,
    /// device ‖ seq:u64-be → QueueRecord. `seq` comes from sled's monotonic id generator.
    pub deviceseq_queuerecord: sled::Tree,
    /// name (utf-8) → value. Schema version and the relay's secrets.
    pub meta_value: sled::Tree,
    /// phone (E.164) → pending verification CodeRecord.
    pub phone_coderecord: sled::Tree,
    /// sender account ‖ 0x00 ‖ msg_id[16] → timestamp_ms:u64-be (dedupe of retries).
    pub sendermsgid_timestamp: sled::Tree,
}

impl Trees {
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            accountdevice_record: db.open_tree("accountdevice_record")?,
            device_fallbackkey: db.open_tree("device_fallbackkey")?,
            device_identitykeys: db.open_tree("device_identitykeys")?,
            device_tokenid: db.open_tree("device_tokenid")?,
            deviceotk_publickey: db.open_tree("deviceotk_publickey")?,
            deviceseq_queuerecord: db.open_tree("deviceseq_queuerecord")?,
            meta_value: db.open_tree("meta_value")?,
            phone_coderecord: db.open_tree("phone_coderecord")?,
            sendermsgid_timestamp: db.open_tree("sendermsgid_timestamp")?,
        })
    }
}
