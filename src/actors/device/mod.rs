//! The `Device` actor: one per device. Owns the device's delivery queue (through the store),
//! its live session, and the window of pushed-but-unacknowledged entries. Does not own
//! handshakes or encryption (the session does) nor other devices' queues.

mod handlers;
pub mod messages;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::ids::DeviceId;
use crate::store::{Durability, QueueItem, QueueRecord, Store};
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
    durability: Durability,
    /// To route delivered receipts to the senders' devices.
    directory: Directory,
    settings: DeviceSettings,
    /// The live session, if the device is online.
    session: Option<Attached>,
    /// Seqs pushed to the current session and not yet acknowledged (bounded by the window).
    inflight: BTreeSet<u64>,
    /// Highest seq pushed to the current session; the next push reads after it.
    pushed_upto: Option<u64>,
    /// Seqs written to the store whose durability barrier has not completed. Nothing at or
    /// after the first of them is pushed, so a device never sees a message the relay could
    /// still lose.
    pending_durable: BTreeSet<u64>,
    /// Last attach, detach, enqueue or ack; drives the idle stop.
    last_active: Instant,
    /// The hot tail: entries this actor queued and that are not acknowledged yet, so that
    /// delivering what was just queued never reads the store.
    hot: BTreeMap<u64, QueueRecord>,
    /// Every queued entry at or after this seq is in `hot` (`None`: the store is read).
    hot_from: Option<u64>,
    /// The entries of the store before `hot_from` were all pushed to the current session.
    cold_drained: bool,
    /// Queued entries not yet covered by a barrier wait (one wait is in flight).
    unwaited: Vec<u64>,
    /// A barrier wait is in flight.
    waiting: bool,
}

/// Most entries the hot tail holds; past it the tail is dropped and delivery reads the store
/// until the next enqueue starts a new tail (a device offline for long does not hold memory).
pub const HOT_TAIL_ENTRIES: usize = 1024;

impl Device {
    pub fn new(
        id: DeviceId,
        store: Store,
        durability: Durability,
        directory: Directory,
        settings: DeviceSettings,
    ) -> Self {
        Self {
            id,
            store,
            durability,
            directory,
            settings,
            session: None,
            inflight: BTreeSet::new(),
            pushed_upto: None,
            pending_durable: BTreeSet::new(),
            last_active: Instant::now(),
            hot: BTreeMap::new(),
            hot_from: None,
            cold_drained: false,
            unwaited: Vec::new(),
            waiting: false,
        }
    }

    /// Pushes queued entries to the live session while the window has room.
    fn pump(&mut self) {
        if self.session.is_none() {
            return;
        }
        let room = self.settings.window.saturating_sub(self.inflight.len());
        if room == 0 {
            return;
        }
        // Nothing at or after the first entry still waiting for its barrier is pushed.
        let first_pending = self.pending_durable.first().copied();
        let mut entries = Vec::new();
        if !self.cold_drained {
            // The store holds what was queued before the hot tail (or everything, without one).
            let (before, up_to_tail) = match (first_pending, self.hot_from) {
                (Some(p), Some(h)) => (Some(p.min(h)), h <= p),
                (None, Some(h)) => (Some(h), true),
                (p, None) => (p, false),
            };
            match self
                .store
                .queue_range_before(&self.id, self.pushed_upto, before, room)
            {
                Ok(e) => {
                    // Fewer than asked, up to the tail: the rest is in memory.
                    self.cold_drained = up_to_tail && e.len() < room;
                    entries = e;
                }
                Err(e) => {
                    tracing::error!(device = %self.id, error = %e, "Reading the delivery queue failed.");
                    return;
                }
            }
        }
        if self.cold_drained {
            let from = self.pushed_upto.map_or(0, |p| p.saturating_add(1));
            let until = first_pending.unwrap_or(u64::MAX);
            let more = room - entries.len();
            entries.extend(
                self.hot
                    .range(from..until)
                    .take(more)
                    .map(|(&seq, rec)| (seq, rec.clone())),
            );
        }
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
        // The next session starts again from the store's oldest entry.
        self.cold_drained = false;
    }

    /// Starts one barrier wait covering every entry queued so far (written before the wait
    /// starts, so the commit it waits for covers them).
    fn wait_durable(&mut self, ctx: &mut Context<Self>) {
        let seqs = std::mem::take(&mut self.unwaited);
        self.waiting = true;
        let durability = self.durability.clone();
        let me = ctx.address();
        actix::spawn(async move {
            if let Err(e) = durability.wait().await {
                tracing::error!(error = %e, "Durability barrier failed for queued entries.");
            }
            me.do_send(Durable { seqs });
        });
    }

    /// Keeps a just-queued entry in the hot tail.
    fn keep_hot(&mut self, seq: u64, rec: &QueueRecord) {
        if self.hot.len() >= HOT_TAIL_ENTRIES {
            self.hot.clear();
            self.hot_from = None;
            self.cold_drained = false;
        }
        if self.hot_from.is_none() {
            // Seqs only grow, and only this actor queues for its device: everything from
            // here on passes through `keep_hot`.
            self.hot_from = Some(seq);
            self.cold_drained = false;
        }
        self.hot.insert(seq, rec.clone());
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
    /// not one per message.
    fn receipts_delivered(&self, routes: Vec<(String, String, [u8; 16])>) {
        let mut grouped: BTreeMap<(String, String), Vec<[u8; 16]>> = BTreeMap::new();
        for (to, as_who, msg_id) in routes {
            grouped.entry((to, as_who)).or_default().push(msg_id);
        }
        let now = crate::clock::now_ms();
        let mut receipts = Vec::new();
        for ((to, as_who), msg_ids) in grouped {
            let Ok(account) = crate::ids::AccountId::parse(&to) else {
                continue;
            };
            for chunk in msg_ids.chunks(crate::wire::messages::MAX_RECEIPT_IDS) {
                receipts.push((
                    account.clone(),
                    QueueItem::Receipt {
                        from: as_who.clone(),
                        from_device: self.id.device,
                        kind: crate::wire::messages::ReceiptKind::Delivered as i32,
                        msg_ids: chunk.to_vec(),
                        timestamp_ms: now,
                    },
                ));
            }
        }
        if receipts.is_empty() {
            return;
        }
        let directory = self.directory.clone();
        actix::spawn(async move {
            for (account, receipt) in receipts {
                if let Err(e) = directory.enqueue_account(&account, receipt).await {
                    tracing::warn!(to = %account, error = %e, "Queueing a delivered receipt failed.");
                }
            }
        });
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
        // A mailbox bound keeps a flood of senders from growing memory without limit.
        ctx.set_mailbox_capacity(256);
        let every = (self.settings.idle_stop / 2).max(Duration::from_millis(100));
        ctx.run_interval(every, |act, ctx| {
            let idle = act.session.is_none()
                && act.pending_durable.is_empty()
                && act.last_active.elapsed() >= act.settings.idle_stop;
            if idle {
                act.directory.forget(&act.id, &ctx.address());
                ctx.stop();
            }
        });
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
