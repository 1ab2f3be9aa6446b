//! One task per provisioned device: the device's end-to-end endpoint. It owns an SDK
//! [`Client`] logged in as `@{id}` device 0 over the relay's own TCP listener, so for people
//! the device is an ordinary member (same key directory, queue, receipts and groups code).
//!
//! - Up: dedup by (device, payload id) in the store, send with a msg_id derived from both (the
//!   relay's own send dedup catches a resend after a crash), and only after the relay's
//!   ServerAck (durable) acknowledge the MQTT publish.
//! - Down: a decrypted text goes to the durable outbox, the barrier is awaited, and only then
//!   is the relay's queue entry acknowledged (the SDK acks on the next `next_event` call).
//! - Ack topic: the device's acks become read receipts to the senders. Who sent each down
//!   message is in the store with its outbox entry (for the retention period), so an ack
//!   after a restart still becomes a receipt.
//! - Status topic: online / offline become the device account's presence.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Publish};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Notify;

use super::payload::{Down, Up};
use super::stats::{BridgeStats, DropReason};
use crate::client::connection::ClientError;
use crate::client::{Client, Event};
use crate::e2e::payload::{Inner, Payload};
use crate::edge::RelayCtx;
use crate::ids::{AccountId, DeviceId, Handle, MsgId};
use crate::shutdown::Shutdown;
use crate::store::OutboxRecord;
use crate::wire::messages::{ErrorCode, ReceiptKind};

/// Failed connections while sending one up message before leaving it to the broker's
/// redelivery (refusals that say "later" are retried without a bound).
const UP_ATTEMPTS: u32 = 5;
/// Longest wait between reconnection attempts to the relay.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Refusals after which the same send can succeed later (the relay is busy, full, or going
/// down): the up message is retried and not acknowledged to the broker.
fn is_transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::RateLimited
            | ErrorCode::StorageFull
            | ErrorCode::ShuttingDown
            | ErrorCode::Internal
            | ErrorCode::TooManyConnections
            | ErrorCode::SessionReplaced
    )
}

/// The relay's `retry_after_ms`, when it named one.
fn retry_after(e: &ClientError) -> Option<Duration> {
    match e {
        ClientError::Relay(err) | ClientError::Closed(Some(err)) if err.retry_after_ms > 0 => {
            Some(Duration::from_millis(err.retry_after_ms))
        }
        _ => None,
    }
}

/// What the poll task hands a device's task.
#[derive(Debug)]
pub enum Cmd {
    /// An up message (checked), with its publish to acknowledge once stored.
    Up(Box<Publish>, Up),
    /// Down ids the device acknowledged.
    Ack(Vec<String>),
    /// The device's retained status.
    Status(bool),
}

/// A device task before it runs.
pub struct DeviceTask {
    pub ctx: Arc<RelayCtx>,
    pub id: Handle,
    pub home: PathBuf,
    pub relay_addr: SocketAddr,
    pub mqtt: AsyncClient,
    pub wake: Arc<Notify>,
    pub stats: Arc<BridgeStats>,
}

/// The msg_id of an up message: the same for every redelivery of it.
pub fn up_msg_id(device: &Handle, payload_id: &str) -> MsgId {
    let mut h = Sha256::new();
    h.update(b"relaybox mqtt up\0");
    h.update(device.as_str().as_bytes());
    h.update([0]);
    h.update(payload_id.as_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    MsgId(id)
}

impl DeviceTask {
    fn account(&self) -> AccountId {
        AccountId::from_handle(&self.id)
    }

    pub async fn run(self, mut rx: UnboundedReceiver<Cmd>, mut stop: Shutdown) {
        let mut client = match Client::open(&self.home, Some(&self.relay_addr.to_string())) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(device = %self.id, error = %format!("{e:#}"), "Opening the bridged device's state failed; device disabled.");
                return;
            }
        };
        client.pin_relay_key(self.ctx.identity.public);
        let mut state = DeviceState { online: false };
        self.publish_keys(&mut client, &mut stop).await;
        let mut backoff = super::poll::RETRY;
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.on_cmd(&mut client, &mut state, cmd, &stop).await,
                    None => break,
                },
                ev = client.next_event() => match ev {
                    Ok(ev) => {
                        backoff = super::poll::RETRY;
                        self.on_event(ev).await;
                    }
                    Err(e) => {
                        if stop.is_shutdown() {
                            break;
                        }
                        tracing::warn!(device = %self.id, error = %format!("{e:#}"), "Bridged device lost its relay session; reconnecting.");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.recv() => break,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                },
                _ = stop.recv() => break,
            }
        }
        if state.online {
            self.ctx
                .presence
                .detached(&self.ctx.store, &self.ctx.directory, &self.account());
        }
    }

    /// Publishes the device's end-to-end keys on its first start.
    async fn publish_keys(&self, client: &mut Client, stop: &mut Shutdown) {
        let d = DeviceId::new(self.account(), 0);
        loop {
            match self.ctx.store.keys_identity(&d) {
                Ok(Some(_)) => return,
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(device = %self.id, error = %e, "Reading the device's keys failed.");
                    return;
                }
            }
            match client.upload_keys().await {
                Ok(n) => {
                    tracing::info!(device = %self.id, one_time_keys = n, "Bridged device published its keys.");
                    return;
                }
                Err(e) => {
                    client.disconnect();
                    tracing::warn!(device = %self.id, error = %format!("{e:#}"), "Publishing the bridged device's keys failed; retrying.");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(super::poll::RETRY) => {}
                _ = stop.recv() => return,
            }
        }
    }

    async fn on_cmd(
        &self,
        client: &mut Client,
        state: &mut DeviceState,
        cmd: Cmd,
        stop: &Shutdown,
    ) {
        match cmd {
            Cmd::Up(publish, up) => self.up(client, &publish, &up, stop).await,
            Cmd::Ack(ids) => {
                let mut by_sender: HashMap<String, Vec<MsgId>> = HashMap::new();
                for id in ids {
                    let known = match hex::decode(&id)
                        .ok()
                        .and_then(|b| MsgId::from_slice(&b).ok())
                    {
                        Some(m) => match self.ctx.store.mqtt_down_sender(&self.id, &m) {
                            Ok(sender) => sender.map(|s| (m, s)),
                            Err(e) => {
                                tracing::error!(device = %self.id, error = %e, "Reading the bridged device's down messages failed.");
                                None
                            }
                        },
                        None => None,
                    };
                    match known {
                        Some((m, sender)) => by_sender.entry(sender).or_default().push(m),
                        None => {
                            tracing::info!(device = %self.id, id = %id.chars().take(40).collect::<String>(), "Device acknowledged an unknown or old message id; ignored.")
                        }
                    }
                }
                for (sender, ids) in by_sender {
                    match client.receipt(&sender, ReceiptKind::Read, &ids).await {
                        Ok(()) => self.stats.message("down", "acked"),
                        Err(e) => {
                            client.disconnect();
                            tracing::warn!(device = %self.id, error = %format!("{e:#}"), "Sending a receipt for the device failed.");
                        }
                    }
                }
            }
            Cmd::Status(online) => {
                if online == state.online {
                    return;
                }
                state.online = online;
                let a = self.account();
                if online {
                    self.ctx
                        .presence
                        .attached(&self.ctx.store, &self.ctx.directory, &a);
                } else {
                    self.ctx
                        .presence
                        .detached(&self.ctx.store, &self.ctx.directory, &a);
                }
                tracing::info!(device = %self.id, online, "Bridged device presence changed.");
            }
        }
    }

    async fn up(&self, client: &mut Client, publish: &Publish, up: &Up, stop: &Shutdown) {
        match self.ctx.store.mqtt_up_seen(&self.id, &up.id) {
            Ok(true) => {
                self.stats.message("up", "duplicate");
                tracing::info!(device = %self.id, id = %up.id, "Up message redelivered; acknowledged without a resend.");
                self.ack(publish).await;
                return;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(device = %self.id, error = %e, "Reading up dedup failed; left to the broker.");
                return;
            }
        }
        let msg_id = up_msg_id(&self.id, &up.id);
        let inner = Inner::new(crate::clock::now_ms(), Payload::Text { body: up.body() });
        let mut attempt = 0;
        loop {
            let e = match client.send_group_inner(&up.thread, msg_id, &inner).await {
                Ok(_) => {
                    // Durable before the MQTT ack; should it fail, the relay's msg_id dedup
                    // still catches a redelivery.
                    let now = crate::clock::now_ms();
                    let marked = match self.ctx.store.mqtt_up_mark(&self.id, &up.id, now) {
                        Ok(()) => self.ctx.durability.wait().await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = marked {
                        tracing::warn!(device = %self.id, error = %e, "Recording up dedup failed.");
                    }
                    self.stats.message("up", "accepted");
                    tracing::debug!(device = %self.id, id = %up.id, msg_id = %msg_id, "Up message stored.");
                    failpoint_before_ack();
                    self.ack(publish).await;
                    return;
                }
                Err(e) => e,
            };
            let relay = e.downcast_ref::<ClientError>();
            match relay.and_then(ClientError::relay_code) {
                // The relay will take it later: not acked, so the broker keeps it, and this
                // device's next messages wait behind it (they arrive in order).
                Some(code) if is_transient(code) && stop.is_shutdown() => {
                    tracing::info!(device = %self.id, id = %up.id, "Relay stopping; the up message stays with the broker.");
                    return;
                }
                Some(code) if is_transient(code) => {
                    let wait = relay
                        .and_then(retry_after)
                        .unwrap_or(super::poll::RETRY)
                        .min(MAX_BACKOFF);
                    self.stats.message("up", "deferred");
                    tracing::debug!(device = %self.id, id = %up.id, code = ?code, wait = ?wait, "The relay deferred an up message; it is retried, not acknowledged.");
                    tokio::time::sleep(wait).await;
                }
                Some(_) => {
                    self.stats
                        .dropped(DropReason::RelayRefused, &publish.topic, &format!("{e:#}"));
                    self.ack(publish).await;
                    return;
                }
                None => {
                    attempt += 1;
                    if attempt >= UP_ATTEMPTS {
                        tracing::error!(device = %self.id, id = %up.id, "Up message not sent; the broker redelivers it on the next connection.");
                        return;
                    }
                    client.disconnect();
                    tracing::warn!(device = %self.id, attempt, error = %format!("{e:#}"), "Sending an up message failed; retrying.");
                    tokio::time::sleep(super::poll::RETRY * attempt).await;
                }
            }
        }
    }

    async fn ack(&self, publish: &Publish) {
        if let Err(e) = self.mqtt.ack(publish).await {
            tracing::warn!(device = %self.id, error = %e, "MQTT ack failed; the broker will redeliver.");
        }
    }

    async fn on_event(&self, ev: Event) {
        match ev {
            Event::Message {
                from,
                msg_id,
                inner,
                group,
                ..
            } => {
                let Payload::Text { body } = inner.payload else {
                    tracing::info!(device = %self.id, from = %from, "Non-text message for a bridged device ignored.");
                    return;
                };
                let down = Down {
                    id: msg_id.to_string(),
                    thread: group.unwrap_or_else(|| from.clone()),
                    from: from.clone(),
                    text: body,
                    ts: inner.sent_at_ms,
                };
                let rec = OutboxRecord {
                    device: self.id.as_str().to_owned(),
                    payload: serde_json::to_vec(&down).unwrap_or_default(),
                };
                let now = crate::clock::now_ms();
                let stored = match self
                    .ctx
                    .store
                    .mqtt_outbox_push(&rec)
                    .and_then(|_| self.ctx.store.mqtt_down_put(&self.id, &msg_id, &from, now))
                {
                    Ok(()) => {
                        // Counted as soon as the poll task can see it (it may publish it and
                        // count its removal before the barrier below returns).
                        self.stats.outbox_added();
                        self.ctx.durability.wait().await.map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = stored {
                    // A disk failure: the relay's copy is acknowledged on the next read, so
                    // this message is lost for the device. Say so loudly.
                    tracing::error!(device = %self.id, error = %e, "Writing the MQTT outbox failed.");
                    return;
                }
                self.wake.notify_one();
            }
            Event::Undecryptable { from, error, .. } => {
                tracing::warn!(device = %self.id, from = %from, error = %error, "A message for a bridged device could not be decrypted.");
            }
            _ => {}
        }
    }
}

struct DeviceState {
    online: bool,
}

/// Test support (as in sled's failpoints): with `FAILPOINTS=mqtt-before-ack` the
/// bridge stalls after an up message is stored and before its MQTT ack, so a test can kill
/// the relay in that window.
fn failpoint_before_ack() {
    if std::env::var("FAILPOINTS").as_deref() == Ok("mqtt-before-ack") {
        tracing::warn!("Failpoint mqtt-before-ack: stalling before the MQTT ack.");
        std::thread::sleep(Duration::from_secs(60));
    }
}
