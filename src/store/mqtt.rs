//! The MQTT bridge's durable state: provisioned devices, the down outbox and the up-dedup
//! records. Owns their encoding; the bridge (`edge::mqtt`) decides what goes in them.
//!
//! Crash ordering: a down message is written to the outbox, made durable, and only then
//! acknowledged to the relay's queue (the bridge waits on the durability barrier), so a crash
//! loses neither copy. An outbox entry is removed only on the broker's PubAck.

use serde::{Deserialize, Serialize};

use super::{decode, encode, Store, StoreError};
use crate::ids::{Handle, MsgId};

const DEVICES: &str = "mqttdevice_record";
const OUTBOX: &str = "seq_mqttoutbox";

/// A provisioned MQTT device: the account `@{id}`, device 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttDeviceRecord {
    /// A human name shown to operators.
    pub name: String,
    /// Groups the device posts to and receives from.
    pub threads: Vec<String>,
    /// Groups the bridge has joined the device to (the rest are joined on the next start).
    pub joined: Vec<String>,
    pub created_at_ms: u64,
}

/// One message waiting to be published to `{prefix}/dev/{device}/down`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub device: String,
    /// The JSON document published, as built by the bridge.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

fn down_key(device: &Handle, msg_id: &MsgId) -> Vec<u8> {
    let mut k = Vec::with_capacity(device.as_str().len() + 1 + msg_id.0.len());
    k.extend_from_slice(device.as_str().as_bytes());
    k.push(super::keys::SEP);
    k.extend_from_slice(&msg_id.0);
    k
}

fn seen_key(device: &Handle, payload_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(device.as_str().len() + 1 + payload_id.len());
    k.extend_from_slice(device.as_str().as_bytes());
    k.push(super::keys::SEP);
    k.extend_from_slice(payload_id.as_bytes());
    k
}

impl Store {
    /// Records (or replaces) a provisioned device.
    pub fn mqtt_device_put(&self, id: &Handle, rec: &MqttDeviceRecord) -> Result<(), StoreError> {
        let _gate = self.writing();
        self.t.mqttdevice_record.insert(id.as_str(), encode(rec))?;
        Ok(())
    }

    pub fn mqtt_device(&self, id: &Handle) -> Result<Option<MqttDeviceRecord>, StoreError> {
        self.t
            .mqttdevice_record
            .get(id.as_str())?
            .map(|v| decode(DEVICES, &v))
            .transpose()
    }

    /// Every provisioned device, by id.
    pub fn mqtt_devices(&self) -> Result<Vec<(Handle, MqttDeviceRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.t.mqttdevice_record.iter() {
            let (k, v) = kv?;
            let id = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| Handle::parse(s).ok())
                .ok_or_else(|| super::corrupt(DEVICES, "bad device id"))?;
            out.push((id, decode(DEVICES, &v)?));
        }
        Ok(out)
    }

    /// Whether `account` is a bridged MQTT device (the relay is its end-to-end endpoint).
    pub fn is_bridged(&self, account: &crate::ids::AccountId) -> Result<bool, StoreError> {
        match account.handle() {
            Some(h) => Ok(self.t.mqttdevice_record.contains_key(h.as_str())?),
            None => Ok(false),
        }
    }

    /// Forgets a device's bridge records (its outbox entries and dedup records too). `false`
    /// if it was not provisioned.
    pub fn mqtt_device_remove(&self, id: &Handle) -> Result<bool, StoreError> {
        let _gate = self.writing();
        let existed = self.t.mqttdevice_record.remove(id.as_str())?.is_some();
        for (seq, rec) in self.mqtt_outbox_after(None, usize::MAX)? {
            if rec.device == id.as_str() {
                self.t.seq_mqttoutbox.remove(seq.to_be_bytes())?;
            }
        }
        let prefix = seen_key(id, "");
        for tree in [
            &self.t.mqttdevicepayloadid_timestamp,
            &self.t.mqttdevicemsgid_sender,
        ] {
            for k in tree.scan_prefix(&prefix).keys() {
                tree.remove(k?)?;
            }
        }
        Ok(existed)
    }

    /// Whether the up message `payload_id` of `device` was already sent on.
    pub fn mqtt_up_seen(&self, device: &Handle, payload_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .t
            .mqttdevicepayloadid_timestamp
            .contains_key(seen_key(device, payload_id))?)
    }

    /// Marks an up message as sent on (after the relay acknowledged it).
    pub fn mqtt_up_mark(
        &self,
        device: &Handle,
        payload_id: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let _gate = self.writing();
        self.t
            .mqttdevicepayloadid_timestamp
            .insert(seen_key(device, payload_id), &now_ms.to_be_bytes())?;
        Ok(())
    }

    /// Deletes up dedup records and down-message records older than `before_ms`; returns
    /// how many.
    pub fn mqtt_up_sweep(&self, before_ms: u64) -> Result<usize, StoreError> {
        let _gate = self.writing();
        let mut n = 0;
        for tree in [
            &self.t.mqttdevicepayloadid_timestamp,
            &self.t.mqttdevicemsgid_sender,
        ] {
            for kv in tree.iter() {
                let (k, v) = kv?;
                let at = v
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                if at < before_ms {
                    tree.remove(k)?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Remembers who sent the down message `msg_id` to `device`, so that the device's ack
    /// becomes a receipt to them, also after a restart. Not durable until the barrier (the
    /// bridge awaits it with the outbox entry's). Kept for the retention period.
    pub fn mqtt_down_put(
        &self,
        device: &Handle,
        msg_id: &MsgId,
        sender: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let _gate = self.writing();
        let mut v = Vec::with_capacity(8 + sender.len());
        v.extend_from_slice(&now_ms.to_be_bytes());
        v.extend_from_slice(sender.as_bytes());
        self.t
            .mqttdevicemsgid_sender
            .insert(down_key(device, msg_id), v)?;
        Ok(())
    }

    /// The sender of the down message `msg_id` to `device`, if the relay still knows it.
    pub fn mqtt_down_sender(
        &self,
        device: &Handle,
        msg_id: &MsgId,
    ) -> Result<Option<String>, StoreError> {
        let Some(v) = self
            .t
            .mqttdevicemsgid_sender
            .get(down_key(device, msg_id))?
        else {
            return Ok(None);
        };
        let sender = v
            .get(8..)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| {
                super::corrupt("mqttdevicemsgid_sender", "not a timestamp and a sender")
            })?;
        Ok(Some(sender.to_owned()))
    }

    /// Appends a down message; returns its seq. Not durable until the barrier.
    pub fn mqtt_outbox_push(&self, rec: &OutboxRecord) -> Result<u64, StoreError> {
        let _gate = self.writing();
        let seq = self.db.generate_id()?;
        self.t
            .seq_mqttoutbox
            .insert(seq.to_be_bytes(), encode(rec))?;
        Ok(seq)
    }

    /// Up to `max` outbox entries after `after` (all from the start with `None`), in order.
    pub fn mqtt_outbox_after(
        &self,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<(u64, OutboxRecord)>, StoreError> {
        let range = match after {
            Some(s) => self
                .t
                .seq_mqttoutbox
                .range(s.saturating_add(1).to_be_bytes()..),
            None => self.t.seq_mqttoutbox.iter(),
        };
        let mut out = Vec::new();
        for kv in range.take(max) {
            let (k, v) = kv?;
            let seq = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| super::corrupt(OUTBOX, "bad key"))?;
            out.push((seq, decode(OUTBOX, &v)?));
        }
        Ok(out)
    }

    /// Removes a published entry (the broker acknowledged it).
    pub fn mqtt_outbox_remove(&self, seq: u64) -> Result<(), StoreError> {
        let _gate = self.writing();
        self.t.seq_mqttoutbox.remove(seq.to_be_bytes())?;
        Ok(())
    }

    /// Entries waiting in the outbox.
    pub fn mqtt_outbox_len(&self) -> usize {
        self.t.seq_mqttoutbox.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn outbox_keeps_order_and_forgets_acknowledged_entries() {
        let (_d, s) = store();
        let rec = |n: u8| OutboxRecord {
            device: "fridge-3".into(),
            payload: vec![n],
        };
        let a = s.mqtt_outbox_push(&rec(1)).unwrap();
        let b = s.mqtt_outbox_push(&rec(2)).unwrap();
        let c = s.mqtt_outbox_push(&rec(3)).unwrap();
        let all = s.mqtt_outbox_after(None, 10).unwrap();
        assert_eq!(all.iter().map(|e| e.0).collect::<Vec<_>>(), vec![a, b, c]);
        assert_eq!(s.mqtt_outbox_after(Some(a), 1).unwrap()[0].0, b);
        s.mqtt_outbox_remove(b).unwrap();
        assert_eq!(s.mqtt_outbox_len(), 2);
        assert_eq!(s.mqtt_outbox_after(Some(a), 10).unwrap()[0].1, rec(3));
    }

    #[test]
    fn devices_and_dedup_records_round_trip_and_are_removed_together() {
        let (_d, s) = store();
        let id = Handle::parse("fridge-3").unwrap();
        let other = Handle::parse("fridge-30").unwrap();
        let rec = MqttDeviceRecord {
            name: "Fridge".into(),
            threads: vec!["g1".into()],
            joined: vec![],
            created_at_ms: 7,
        };
        s.mqtt_device_put(&id, &rec).unwrap();
        s.mqtt_device_put(&other, &rec).unwrap();
        assert_eq!(s.mqtt_device(&id).unwrap(), Some(rec));
        s.mqtt_up_mark(&id, "m1", 5).unwrap();
        s.mqtt_up_mark(&other, "m1", 5).unwrap();
        assert!(s.mqtt_up_seen(&id, "m1").unwrap());
        assert!(!s.mqtt_up_seen(&id, "m2").unwrap());
        assert!(s.mqtt_device_remove(&id).unwrap());
        assert!(!s.mqtt_up_seen(&id, "m1").unwrap());
        assert!(
            s.mqtt_up_seen(&other, "m1").unwrap(),
            "a prefix of another id is kept"
        );
        assert_eq!(s.mqtt_devices().unwrap().len(), 1);
        assert_eq!(s.mqtt_up_sweep(6).unwrap(), 1);
    }
}
