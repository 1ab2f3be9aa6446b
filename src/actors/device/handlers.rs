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

impl Handler<Durable> for Device {
    type Result = ();

    fn handle(&mut self, msg: Durable, _: &mut Self::Context) {
        self.last_active = std::time::Instant::now();
        if self.session.is_some() {
            self.pump();
        } else {
            self.notify_offline(msg.upto);
        }
    }
}

impl Handler<Ack> for Device {
    type Result = ();

    fn handle(&mut self, msg: Ack, _: &mut Self::Context) {
        if self.session.as_ref().is_none_or(|s| s.id != msg.session_id) {
            return;
        }
        // Only entries pushed to this session can be acknowledged by it.
        let seqs: Vec<u64> = msg
            .seqs
            .into_iter()
            .filter(|s| self.inflight.remove(s))
            .collect();
        let mut routes = Vec::new();
        match self.store.queue_remove_many(&self.id, &seqs) {
            Ok(removed) => {
                for rec in &removed {
                    crate::telemetry::metrics::message_delivered();
                    routes.extend(self.receipt_route(rec));
                }
            }
            Err(e) => {
                tracing::error!(device = %self.id, error = %e, "Deleting acknowledged entries failed.")
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
