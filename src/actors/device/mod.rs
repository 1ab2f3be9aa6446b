//! The `Device` actor: one per device. Owns the device's live session and the window of
//! pushed-but-unacknowledged entries; delivers the device's queue (the store's: sled's part,
//! then the message log's) as far as the log's durable seq, and removes what the device
//! acknowledges. Does not own handshakes or encryption (the session does) nor other devices'
//! queues. Entries are appended to the queue by whoever produces them (`Store::send_append`,
//! `Directory::enqueue`); the relay's commit dispatcher (`app.rs`) sends [`Durable`] to the
//! devices that got entries once the log made them durable.

mod handlers;
pub mod messages;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::ids::DeviceId;
use crate::store::{QueueItem, QueueRecord, Store};
use crate::wire::messages::{
    server_frame, Deliver, DevicesChanged, EntityEvent, GroupEvent, MessageKind, ReceiptEvent,
    ServerFrame,
};

pub use messages::*;

use super::Directory;

/// What a device actor hands to its live session.
#[derive(Debug)]
pub enum Push {
    /// Encrypt and send this frame. Boxed: the channel's slots are allocated in blocks, and
    /// an idle session should hold pointers, not frames.
    Frame(Box<ServerFrame>),
    /// A newer session of the same device took over: close this one.
    Replaced,
    /// The device was unlinked: close its session.
    Revoked,
}

/// The session currently attached to the device.
struct Attached {
    id: u64,
    tx: mpsc::Sender<Push>,
}

/// Settings every device actor shares.
#[derive(Clone, Debug)]
pub struct DeviceSettings {
    /// Most entries pushed and not yet acknowledged.
    pub window: usize,
    /// Stop the actor after this long with no session and no traffic.
    pub idle_stop: Duration,
}

pub struct Device {
    /// Which device this is.
    id: DeviceId,
    store: Store,
    /// To route delivered receipts to the senders' devices.
    directory: Directory,
    settings: DeviceSettings,
    /// The live session, if the device is online.
    session: Option<Attached>,
    /// Seqs pushed to the current session and not yet acknowledged (bounded by the window).
    inflight: BTreeSet<u64>,
    /// Highest seq pushed to the current session; the next push reads after it.
    pushed_upto: Option<u64>,
    /// Last attach, detach, commit or ack; drives the idle stop.
    last_active: Instant,
    /// sled's part of the queue was read to its end for this session, at this queue epoch:
    /// until the epoch changes (entries moved from the log to sled), only the log is read.
    sled_drained: Option<u64>,
    /// Entries up to this seq were announced to the push notifier (offline device).
    notified_upto: u64,
}

impl Device {
    pub fn new(id: DeviceId, store: Store, directory: Directory, settings: DeviceSettings) -> Self {
        Self {
            id,
            store,
            directory,
            settings,
            session: None,
            inflight: BTreeSet::new(),
            pushed_upto: None,
            last_active: Instant::now(),
            sled_drained: None,
            notified_upto: 0,
        }
    }

    /// Pushes durable queued entries to the live session while the window has room.
    fn pump(&mut self) {
        if self.session.is_none() {
            return;
        }
        let room = self.settings.window.saturating_sub(self.inflight.len());
        if room == 0 {
            return;
        }
        // Nothing the log could still lose is pushed.
        let durable = self.store.log().durable();
        let epoch = self.store.queue_epoch();
        let skip_sled = self.sled_drained == Some(epoch);
        let entries = match self.store.queue_next(
            &self.id,
            self.pushed_upto,
            durable,
            room,
            skip_sled,
        ) {
            Ok((entries, sled_done)) => {
                if sled_done {
                    self.sled_drained = Some(epoch);
                }
                entries
            }
            Err(e) => {
                tracing::error!(device = %self.id, error = %e, "Reading the delivery queue failed.");
                return;
            }
        };
        let Some(session) = &self.session else { return };
        for (seq, rec) in entries {
            let muted = self.is_muted(&rec.item);
            match session
                .tx
                .try_send(Push::Frame(Box::new(frame_of(seq, rec, muted))))
            {
                Ok(()) => {
                    self.inflight.insert(seq);
                    self.pushed_upto = Some(seq);
                }
                // The session is slow; it asks again when it drains (every Ack pumps).
                Err(mpsc::error::TrySendError::Full(_)) => break,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.detach();
                    break;
                }
            }
        }
    }

    /// Tells the push notifier about entries committed for this offline device (muted ones
    /// count as muted only if every new entry is).
    fn notify_offline(&mut self, upto: u64) {
        if upto <= self.notified_upto {
            return;
        }
        let after = Some(self.notified_upto);
        self.notified_upto = upto;
        let Ok((entries, _)) = self.store.queue_next(&self.id, after, upto, 64, true) else {
            return;
        };
        if entries.is_empty() {
            return;
        }
        let muted = entries.iter().all(|(_, r)| self.is_muted(&r.item));
        self.directory.notifier().waiting(&self.id, muted);
    }

    /// Whether this device's account muted the entry's thread.
    pub(super) fn is_muted(&self, item: &QueueItem) -> bool {
        thread_of(item).is_some_and(|t| {
            self.store
                .muted(&self.id.account, t, crate::clock::now_ms())
                .unwrap_or(false)
        })
    }

    fn detach(&mut self) {
        self.session = None;
        self.inflight.clear();
        self.pushed_upto = None;
        // The next session starts again from the queue's oldest entry.
        self.sled_drained = None;
    }

    /// Who a DELIVERED receipt for `rec` goes to, and as whom: the message's sender and this
    /// device's account. An entity message: the receipt goes to the agent who answered (the
    /// entity has no devices), and a customer's message is acknowledged to the customer as
    /// the entity. `None` for entries that are not messages.
    fn receipt_route(&self, rec: &QueueRecord) -> Option<(String, String, [u8; 16])> {
        match &rec.item {
            QueueItem::Message { msg_id, from, .. } => {
                Some((from.clone(), self.id.account.to_string(), *msg_id))
            }
            QueueItem::EntityMessage {
                msg_id,
                from,
                agent,
                entity,
                ..
            } => Some(if agent.is_empty() {
                (from.clone(), entity.clone(), *msg_id)
            } else {
                (agent.clone(), self.id.account.to_string(), *msg_id)
            }),
            _ => None,
        }
    }

    /// Queues DELIVERED receipts on every device of the messages' senders: one receipt per
    /// (sender, as whom) naming every message of that sender acknowledged in one Ack frame,
    /// not one per message; all of them in one log record.
    fn receipts_delivered(&self, routes: Vec<(String, String, [u8; 16])>) {
        let mut grouped: BTreeMap<(String, String), Vec<[u8; 16]>> = BTreeMap::new();
        for (to, as_who, msg_id) in routes {
            grouped.entry((to, as_who)).or_default().push(msg_id);
        }
        let now = crate::clock::now_ms();
        let mut entries = Vec::new();
        for ((to, as_who), msg_ids) in grouped {
            let Ok(account) = crate::ids::AccountId::parse(&to) else {
                continue;
            };
            let devices = match self.store.devices(&account) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(to = %account, error = %e, "Reading a sender's devices for a delivered receipt failed.");
                    continue;
                }
            };
            for chunk in msg_ids.chunks(crate::wire::messages::MAX_RECEIPT_IDS) {
                let item = QueueItem::Receipt {
                    from: as_who.clone(),
                    from_device: self.id.device,
                    kind: crate::wire::messages::ReceiptKind::Delivered as i32,
                    msg_ids: chunk.to_vec(),
                    timestamp_ms: now,
                };
                for (no, _) in &devices {
                    entries.push((
                        DeviceId::new(account.clone(), *no),
                        QueueRecord {
                            enqueued_at_ms: now,
                            item: item.clone(),
                        },
                    ));
                }
            }
        }
        if entries.is_empty() {
            return;
        }
        if let Err(e) = self.store.queue_append(entries) {
            tracing::warn!(device = %self.id, error = %e, "Queueing delivered receipts failed.");
        }
    }
}

/// The thread a queue entry belongs to (for muting): the group, else the other account.
pub fn thread_of(item: &QueueItem) -> Option<&str> {
    match item {
        QueueItem::Message { group, from, .. } => Some(if group.is_empty() { from } else { group }),
        QueueItem::EntityMessage { entity, .. } => Some(entity),
        QueueItem::GroupEvent { group, .. } => Some(group),
        _ => None,
    }
}

/// The frame a queue entry is pushed as.
pub fn frame_of(seq: u64, rec: QueueRecord, muted: bool) -> ServerFrame {
    let body = match rec.item {
        QueueItem::Message {
            msg_id,
            from,
            from_device,
            timestamp_ms,
            olm_type,
            ciphertext,
            kind,
            group,
        } => server_frame::Body::Deliver(Deliver {
            seq,
            msg_id: msg_id.to_vec(),
            from,
            from_device,
            timestamp_ms,
            olm_type,
            ciphertext,
            kind: MessageKind::try_from(kind).unwrap_or(MessageKind::Chat) as i32,
            group,
            muted,
            ..Deliver::default()
        }),
        QueueItem::Receipt {
            from,
            from_device,
            kind,
            msg_ids,
            timestamp_ms,
        } => server_frame::Body::Receipt(ReceiptEvent {
            seq,
            from,
            from_device,
            kind,
            msg_ids: msg_ids.iter().map(|m| m.to_vec()).collect(),
            timestamp_ms,
        }),
        QueueItem::GroupEvent {
            group,
            version,
            actor,
            op,
            accounts,
            subject,
            timestamp_ms,
        } => server_frame::Body::GroupEvent(GroupEvent {
            seq,
            group,
            version,
            actor,
            op,
            accounts,
            subject,
            timestamp_ms,
        }),
        QueueItem::DevicesChanged { account, devices } => {
            server_frame::Body::DevicesChanged(DevicesChanged {
                seq,
                account,
                devices,
            })
        }
        QueueItem::EntityMessage {
            msg_id,
            from,
            from_device,
            timestamp_ms,
            olm_type,
            ciphertext,
            kind,
            entity,
            agent,
            agent_device,
            attribution,
            customer,
        } => server_frame::Body::Deliver(Deliver {
            seq,
            msg_id: msg_id.to_vec(),
            from,
            from_device,
            timestamp_ms,
            olm_type,
            ciphertext,
            kind: MessageKind::try_from(kind).unwrap_or(MessageKind::Chat) as i32,
            group: String::new(),
            muted,
            entity,
            agent,
            agent_device,
            attribution,
            customer,
        }),
        QueueItem::EntityEvent {
            entity,
            customer,
            kind,
            agent,
            actor,
            timestamp_ms,
        } => server_frame::Body::EntityEvent(EntityEvent {
            seq,
            entity,
            customer,
            kind,
            agent,
            actor,
            timestamp_ms,
        }),
    };
    ServerFrame {
        req_id: 0,
        body: Some(body),
    }
}

impl Actor for Device {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        super::start_up(ctx, self.settings.idle_stop);
    }
}

impl super::Virtual for Device {
    /// Idle: no session attached and no message for `idle_stop`.
    fn idle_for(&self, idle_stop: Duration) -> bool {
        self.session.is_none() && self.last_active.elapsed() >= idle_stop
    }

    fn leave_directory(&self, ctx: &mut Context<Self>) {
        self.directory.forget(&self.id, &ctx.address());
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
