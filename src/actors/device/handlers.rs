//! One `impl Handler` per message of `messages.rs`, in the same order.

use actix::prelude::*;

use super::messages::*;
use super::{Attached, Device, Push};

impl Handler<Attach> for Device {
    type Result = ();

    fn handle(&mut self, msg: Attach, _: &mut Self::Context) {
        if let Some(old) = self.session.take() {
            // The old session may already be gone; either way it must not receive more.
            let _ = old.tx.try_send(Push::Replaced);
        }
        self.detach();
        self.session = Some(Attached {
            id: msg.session_id,
            tx: msg.tx,
        });
        self.last_active = std::time::Instant::now();
        self.pump();
    }
}

impl Handler<Detach> for Device {
    type Result = ();

    fn handle(&mut self, msg: Detach, _: &mut Self::Context) {
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.id == msg.session_id)
        {
            self.detach();
            self.last_active = std::time::Instant::now();
        }
    }
}

impl Handler<Enqueue> for Device {
    type Result = Result<u64, crate::store::StoreError>;

    fn handle(&mut self, msg: Enqueue, ctx: &mut Self::Context) -> Self::Result {
        let seq = self.store.queue_push(&self.id, &msg.record)?;
        self.keep_hot(seq, &msg.record);
        self.pending_durable.insert(seq);
        if self.session.is_none() {
            let muted = self.is_muted(&msg.record.item);
            self.directory.notifier().waiting(&self.id, muted);
        }
        self.last_active = std::time::Instant::now();
        // One barrier wait in flight per device: entries queued meanwhile wait for the next.
        self.unwaited.push(seq);
        if !self.waiting {
            self.wait_durable(ctx);
        }
        Ok(seq)
    }
}

impl Handler<Durable> for Device {
    type Result = ();

    fn handle(&mut self, msg: Durable, ctx: &mut Self::Context) {
        for seq in msg.seqs {
            self.pending_durable.remove(&seq);
        }
        self.waiting = false;
        if !self.unwaited.is_empty() {
            self.wait_durable(ctx);
        }
        self.pump();
    }
}

impl Handler<Ack> for Device {
    type Result = ();

    fn handle(&mut self, msg: Ack, _: &mut Self::Context) {
        if self.session.as_ref().is_none_or(|s| s.id != msg.session_id) {
            return;
        }
        let mut routes = Vec::new();
        for seq in msg.seqs {
            // Only entries pushed to this session can be acknowledged by it.
            if !self.inflight.remove(&seq) {
                continue;
            }
            self.hot.remove(&seq);
            match self.store.queue_remove(&self.id, seq) {
                Ok(Some(rec)) => {
                    crate::telemetry::metrics::message_delivered();
                    routes.extend(self.receipt_route(&rec));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(device = %self.id, error = %e, "Deleting an acknowledged entry failed.")
                }
            }
        }
        self.receipts_delivered(routes);
        self.last_active = std::time::Instant::now();
        self.pump();
    }
}

impl Handler<Revoke> for Device {
    type Result = ();

    fn handle(&mut self, _: Revoke, ctx: &mut Self::Context) {
        if let Some(s) = self.session.take() {
            let _ = s.tx.try_send(Push::Revoked);
        }
        self.detach();
        self.directory.forget(&self.id, &ctx.address());
        ctx.stop();
    }
}

impl Handler<Ephemeral> for Device {
    type Result = ();

    fn handle(&mut self, msg: Ephemeral, _: &mut Self::Context) {
        if let Some(s) = &self.session {
            // Ephemeral by definition: a full session buffer drops it.
            let _ = s.tx.try_send(Push::Frame(Box::new(msg.frame)));
        }
    }
}

impl Handler<IsOnline> for Device {
    type Result = bool;

    fn handle(&mut self, _: IsOnline, _: &mut Self::Context) -> bool {
        self.session.is_some()
    }
}
