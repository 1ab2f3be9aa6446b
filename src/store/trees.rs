//! Every sled tree, declared once, in sorted order. Names are `<key>_<value>`; the comment on
//! each gives the composite key (`‖` is concatenation; encoders are in `keys`).

use super::StoreError;

#[derive(Clone)]
pub(super) struct Trees {
    /// account → bytes:u64-be counted against the account's quota: the stored blobs it owns
    /// plus what its pending uploads reserved (`blobaccount_reservedbytes`).
    pub account_blobbytes: sled::Tree,
    /// account → AbuseRecord: ban, watch list entry, punishment history.
    pub account_abuserecord: sled::Tree,
    /// account → AbuseStats: sliding-window abuse metrics.
    pub account_abusestats: sled::Tree,
    /// account → postcard Vec<String>: the account's uploaded contacts (E.164).
    pub account_contacts: sled::Tree,
    /// account → last_seen_ms:u64-be.
    pub account_lastseen: sled::Tree,
    /// account → next companion device number:u32-be (never reused).
    pub account_nextdevice: sled::Tree,
    /// account → presence privacy (the PresencePrivacy number, one byte).
    pub account_privacy: sled::Tree,
    /// device ‖ → DeviceRecord. `device = account ‖ 0x00 ‖ device_no:u32-be`, so a prefix scan
    /// with `account ‖ 0x00` lists an account's devices.
    pub accountdevice_record: sled::Tree,
    /// account ‖ 0x00 ‖ group → (): the groups an account is a member of.
    pub accountgroup_: sled::Tree,
    /// account ‖ 0x00 ‖ thread → until_ms:u64-be (u64::MAX = forever): muted threads.
    pub accountthread_muteuntil: sled::Tree,
    /// blocker ‖ 0x00 ‖ blocked account → (): blocks.
    pub blockeraccount_: sled::Tree,
    /// blob id (64 lowercase hex characters) → BlobRecord (pending, stored or tombstone).
    pub blob_record: sled::Tree,
    /// blob id ‖ 0x00 ‖ account → bytes:u64-be: quota an account reserved for its pending
    /// upload of the blob (counted in `account_blobbytes` until the upload completes or lapses).
    pub blobaccount_reservedbytes: sled::Tree,
    /// blob id ‖ 0x00 ‖ tag ‖ scope → (): who may fetch a blob (`a` account, `g` group, `e`
    /// entity; see `blob_access`).
    pub blobscope_: sled::Tree,
    /// contact ‖ 0x00 ‖ account → (): reverse contacts, "who has `contact` in their list".
    pub contactaccount_: sled::Tree,
    /// device → fallback OneTimeKey (key_id, public key).
    pub device_fallbackkey: sled::Tree,
    /// device → IdentityKeys (curve25519 identity, ed25519 signing).
    pub device_identitykeys: sled::Tree,
    /// device → one-time secret of a pending companion link.
    pub device_linksecret: sled::Tree,
    /// device → push endpoint URL (utf-8).
    pub device_pushendpoint: sled::Tree,
    /// device → id:u64-be of the one valid resumption token.
    pub device_tokenid: sled::Tree,
    /// device ‖ key_id → one-time public key.
    pub deviceotk_publickey: sled::Tree,
    /// device ‖ seq:u64-be → QueueRecord. `seq` comes from sled's monotonic id generator.
    pub deviceseq_queuerecord: sled::Tree,
    /// entity handle (`@name`) → EntityRecord.
    pub entity_record: sled::Tree,
    /// entity ‖ 0x00 ‖ customer account → EntityThreadRecord: one customer thread.
    pub entitycustomer_thread: sled::Tree,
    /// expires_ms:u64-be ‖ blob id → (): when each blob or pending upload lapses (the GC).
    pub expiry_blob: sled::Tree,
    /// group id → GroupRecord.
    pub group_record: sled::Tree,
    /// name (utf-8) → value. Schema version and the relay's secrets.
    pub meta_value: sled::Tree,
    /// MQTT device id (handle, utf-8) → MqttDeviceRecord.
    pub mqttdevice_record: sled::Tree,
    /// MQTT device id ‖ 0x00 ‖ payload id (utf-8) → timestamp_ms:u64-be (up dedup).
    pub mqttdevicepayloadid_timestamp: sled::Tree,
    /// A bridged device's down messages, for turning its acks into receipts: `handle ‖ 0x00 ‖
    /// msg_id` → `at_ms:u64-be ‖ sender`.
    pub mqttdevicemsgid_sender: sled::Tree,
    /// Noise static public key → device: finds a linked companion by its key.
    pub noisestatic_device: sled::Tree,
    /// phone (E.164) → pending verification CodeRecord.
    pub phone_coderecord: sled::Tree,
    /// phone (E.164) → entity handle (utf-8): an entity's phone alias.
    pub phone_entity: sled::Tree,
    /// sender account ‖ 0x00 ‖ msg_id[16] → timestamp_ms:u64-be ‖ id:u64-be ‖ recipients
    /// (dedupe of retries; `id` orders it in `senderid_msgid`; `recipients` is the postcard
    /// list of the accounts the message was queued for, so only they may send receipts for
    /// it). Older records lack the recipients, or hold the timestamp only. Written by releases
    /// before the message log; read at open, and emptied by the retention sweep.
    pub sendermsgid_timestamp: sled::Tree,
    /// sender account ‖ 0x00 ‖ id:u64-be → msg_id[16]: the dedupe records of a sender, oldest
    /// first, so only its newest [`super::SEEN_PER_SENDER`] are kept.
    pub senderid_msgid: sled::Tree,
    /// sender account ‖ 0x00 ‖ seq:u64-be → postcard Vec<SeenRecord>: a sender's dedupe
    /// records of one retired log segment (`seen.rs`), keyed by the first one's seq.
    pub senderseq_seenbatch: sled::Tree,
    /// seq:u64-be → OutboxRecord: MQTT down messages awaiting the broker's PubAck.
    pub seq_mqttoutbox: sled::Tree,
    /// Not a tree: how many accounts, devices, groups, blobs and retired queue entries the
    /// trees hold, moved by whoever writes them (`stats.rs`).
    pub counts: std::sync::Arc<super::stats::Counts>,
}

impl Trees {
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            account_blobbytes: db.open_tree("account_blobbytes")?,
            account_abuserecord: db.open_tree("account_abuserecord")?,
            account_abusestats: db.open_tree("account_abusestats")?,
            account_contacts: db.open_tree("account_contacts")?,
            account_lastseen: db.open_tree("account_lastseen")?,
            account_nextdevice: db.open_tree("account_nextdevice")?,
            account_privacy: db.open_tree("account_privacy")?,
            accountdevice_record: db.open_tree("accountdevice_record")?,
            accountgroup_: db.open_tree("accountgroup_")?,
            accountthread_muteuntil: db.open_tree("accountthread_muteuntil")?,
            blockeraccount_: db.open_tree("blockeraccount_")?,
            blob_record: db.open_tree("blob_record")?,
            blobaccount_reservedbytes: db.open_tree("blobaccount_reservedbytes")?,
            blobscope_: db.open_tree("blobscope_")?,
            contactaccount_: db.open_tree("contactaccount_")?,
            device_fallbackkey: db.open_tree("device_fallbackkey")?,
            device_identitykeys: db.open_tree("device_identitykeys")?,
            device_linksecret: db.open_tree("device_linksecret")?,
            device_pushendpoint: db.open_tree("device_pushendpoint")?,
            device_tokenid: db.open_tree("device_tokenid")?,
            deviceotk_publickey: db.open_tree("deviceotk_publickey")?,
            deviceseq_queuerecord: db.open_tree("deviceseq_queuerecord")?,
            entity_record: db.open_tree("entity_record")?,
            entitycustomer_thread: db.open_tree("entitycustomer_thread")?,
            expiry_blob: db.open_tree("expiry_blob")?,
            group_record: db.open_tree("group_record")?,
            meta_value: db.open_tree("meta_value")?,
            mqttdevice_record: db.open_tree("mqttdevice_record")?,
            mqttdevicepayloadid_timestamp: db.open_tree("mqttdevicepayloadid_timestamp")?,
            mqttdevicemsgid_sender: db.open_tree("mqttdevicemsgid_sender")?,
            noisestatic_device: db.open_tree("noisestatic_device")?,
            phone_coderecord: db.open_tree("phone_coderecord")?,
            phone_entity: db.open_tree("phone_entity")?,
            sendermsgid_timestamp: db.open_tree("sendermsgid_timestamp")?,
            senderid_msgid: db.open_tree("senderid_msgid")?,
            senderseq_seenbatch: db.open_tree("senderseq_seenbatch")?,
            seq_mqttoutbox: db.open_tree("seq_mqttoutbox")?,
            counts: Default::default(),
        })
    }
}
