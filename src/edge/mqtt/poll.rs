//! The one task that polls rumqttc's event loop. It never blocks on the relay: it parses and
//! checks each incoming publish, hands it to the device's task (which acknowledges it once it
//! is stored), and publishes the durable outbox, removing an entry only on the broker's
//! PubAck. Broker failures are retried with exponential backoff.
//!
//! Matching PubAcks to outbox entries: rumqttc assigns packet ids inside the event loop and
//! reports each first transmission as `Outgoing::Publish(pkid)`, in the order the publishes
//! were queued; `handed` is that queue, `inflight` maps a pkid to its outbox seq. A
//! retransmission (same pkid, session resumed) is already in `inflight`. When the broker did
//! not keep the session, rumqttc drops what it had queued, so the outbox is published again
//! from its start.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, Publish, QoS};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

use super::device::Cmd;
use super::payload;
use super::stats::{BridgeStats, DropReason};
use super::topics::{self, Kind, TopicError};
use crate::edge::RelayCtx;
use crate::ids::Handle;
use crate::shutdown::Shutdown;

/// Where the poll task sends a provisioned device's messages.
pub struct Route {
    pub tx: UnboundedSender<Cmd>,
    pub threads: Vec<String>,
}

/// Changes to the routes, from the admin API.
pub enum Control {
    Add(Handle, Route),
    Remove(Handle),
}

/// The poll task's state.
pub struct Poller {
    ctx: Arc<RelayCtx>,
    client: AsyncClient,
    devices: HashMap<Handle, Route>,
    wake: Arc<Notify>,
    stats: Arc<BridgeStats>,
    /// Outbox seqs queued to rumqttc, not yet given a packet id.
    handed: VecDeque<u64>,
    /// Packet id → outbox seq, awaiting PubAck.
    inflight: HashMap<u16, u64>,
    /// Last outbox seq queued to rumqttc.
    cursor: Option<u64>,
    connected: bool,
}

impl Poller {
    pub fn new(
        ctx: Arc<RelayCtx>,
        client: AsyncClient,
        wake: Arc<Notify>,
        stats: Arc<BridgeStats>,
    ) -> Self {
        Self {
            ctx,
            client,
            devices: HashMap::new(),
            wake,
            stats,
            handed: VecDeque::new(),
            inflight: HashMap::new(),
            cursor: None,
            connected: false,
        }
    }

    pub async fn run(
        mut self,
        mut eventloop: EventLoop,
        mut control: UnboundedReceiver<Control>,
        mut stop: Shutdown,
    ) {
        // Routes of the devices known at start, before any message from the broker.
        while let Ok(Control::Add(id, route)) = control.try_recv() {
            self.devices.insert(id, route);
        }
        let cfg = self.ctx.cfg.mqtt.clone();
        let mut backoff = cfg.reconnect_min;
        loop {
            tokio::select! {
                ev = eventloop.poll() => match ev {
                    Ok(ev) => {
                        if matches!(ev, Event::Incoming(Packet::ConnAck(_))) {
                            backoff = cfg.reconnect_min;
                        }
                        self.on_event(ev);
                    }
                    Err(e) => {
                        if self.connected {
                            tracing::warn!(error = %e, "MQTT broker connection lost; reconnecting.");
                        } else {
                            tracing::debug!(error = %e, retry_in = ?backoff, "MQTT broker unreachable.");
                        }
                        self.connected = false;
                        self.stats.set_connected(false);
                        self.stats.set_error(e.to_string());
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.recv() => break,
                        }
                        backoff = (backoff * 2).min(cfg.reconnect_max);
                    }
                },
                _ = self.wake.notified() => self.drain(),
                Some(c) = control.recv() => match c {
                    Control::Add(id, route) => {
                        self.devices.insert(id, route);
                    }
                    Control::Remove(id) => {
                        self.devices.remove(&id);
                    }
                },
                _ = stop.recv() => break,
            }
        }
        let _ = self.client.try_disconnect();
        tracing::info!("MQTT bridge stopped.");
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Incoming(Packet::ConnAck(c)) => {
                tracing::info!(
                    session_present = c.session_present,
                    "MQTT broker connected."
                );
                self.connected = true;
                self.stats.set_connected(true);
                if !c.session_present {
                    self.handed.clear();
                    self.inflight.clear();
                    self.cursor = None;
                }
                for t in topics::subscriptions(&self.ctx.cfg.mqtt.prefix) {
                    if let Err(e) = self.client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                        tracing::error!(topic = %t, error = %e, "MQTT subscribe could not be queued.");
                    }
                }
                self.drain();
            }
            Event::Incoming(Packet::Publish(p)) => self.on_publish(p),
            Event::Incoming(Packet::PubAck(a)) => {
                if let Some(seq) = self.inflight.remove(&a.pkid) {
                    if let Err(e) = self.ctx.store.mqtt_outbox_remove(seq) {
                        tracing::error!(error = %e, "Removing a published outbox entry failed.");
                    }
                    self.stats.message("down", "published");
                    self.stats.outbox_removed();
                    self.drain();
                }
            }
            Event::Incoming(Packet::SubAck(s)) => {
                let refused = s
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                if refused {
                    tracing::error!(
                        "The broker refused a subscription of the bridge; check its ACL."
                    );
                }
            }
            Event::Outgoing(Outgoing::Publish(pkid)) if !self.inflight.contains_key(&pkid) => {
                if let Some(seq) = self.handed.pop_front() {
                    self.inflight.insert(pkid, seq);
                }
            }
            _ => {}
        }
    }

    /// Queues outbox entries to rumqttc while the inflight window has room.
    fn drain(&mut self) {
        if !self.connected {
            return;
        }
        let room = usize::from(super::MAX_INFLIGHT)
            .saturating_sub(self.handed.len() + self.inflight.len());
        if room == 0 {
            return;
        }
        let entries = match self.ctx.store.mqtt_outbox_after(self.cursor, room) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "Reading the MQTT outbox failed.");
                return;
            }
        };
        let prefix = &self.ctx.cfg.mqtt.prefix;
        for (seq, rec) in entries {
            let topic = topics::down(prefix, &rec.device);
            match self
                .client
                .try_publish(topic, QoS::AtLeastOnce, false, rec.payload)
            {
                Ok(()) => {
                    self.handed.push_back(seq);
                    self.cursor = Some(seq);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "MQTT request queue full; the outbox waits.");
                    return;
                }
            }
        }
    }

    fn ack(&self, p: &Publish) {
        if let Err(e) = self.client.try_ack(p) {
            tracing::warn!(error = %e, "MQTT ack could not be queued; the broker will redeliver.");
        }
    }

    fn drop_msg(&self, p: &Publish, reason: DropReason, detail: &str) {
        self.stats.dropped(reason, &p.topic, detail);
        self.ack(p);
    }

    fn on_publish(&mut self, p: Publish) {
        let prefix = &self.ctx.cfg.mqtt.prefix;
        let max = usize::try_from(self.ctx.cfg.mqtt.max_payload_bytes).unwrap_or(usize::MAX);
        let (id, kind) = match topics::parse(prefix, &p.topic) {
            Ok(x) => x,
            Err(e @ TopicError::BadId(_)) => {
                return self.drop_msg(&p, DropReason::BadId, &e.to_string())
            }
            Err(e) => return self.drop_msg(&p, DropReason::Foreign, &e.to_string()),
        };
        let Some(route) = self.devices.get(&id) else {
            return self.drop_msg(&p, DropReason::UnknownDevice, "not provisioned");
        };
        let cmd = match kind {
            Kind::Up => match payload::parse_up(&p.payload, max, id.as_str()) {
                Ok(up) if !route.threads.contains(&up.thread) => {
                    let detail = format!(
                        "thread {:?}",
                        up.thread.chars().take(40).collect::<String>()
                    );
                    return self.drop_msg(&p, DropReason::ThreadNotAllowed, &detail);
                }
                Ok(up) => Cmd::Up(Box::new(p), up),
                Err(e) => return self.drop_payload(&p, e),
            },
            Kind::Ack => match payload::parse_ack(&p.payload, max) {
                Ok(doc) => {
                    self.ack(&p);
                    Cmd::Ack(doc.ids)
                }
                Err(e) => return self.drop_payload(&p, e),
            },
            Kind::Status => {
                let online = match p.payload.as_ref() {
                    b"online" => true,
                    b"offline" => false,
                    _ => {
                        return self.drop_msg(
                            &p,
                            DropReason::Malformed,
                            "status must be online or offline",
                        )
                    }
                };
                self.ack(&p);
                Cmd::Status(online)
            }
        };
        if route.tx.send(cmd).is_err() {
            tracing::error!(device = %id, "The device's bridge task is gone; message left to the broker.");
        }
    }

    fn drop_payload(&self, p: &Publish, e: payload::PayloadError) {
        let reason = match e {
            payload::PayloadError::Oversize { .. } => DropReason::Oversize,
            payload::PayloadError::Malformed(_) => DropReason::Malformed,
            payload::PayloadError::Impersonation(_) => DropReason::Impersonation,
            payload::PayloadError::BadId(_) => DropReason::BadId,
        };
        self.drop_msg(p, reason, &e.to_string());
    }
}

/// Waits between retries of a device task (also used by provisioning).
pub const RETRY: Duration = Duration::from_millis(500);
