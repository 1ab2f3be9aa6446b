//! One handler per message of `messages.rs`.

use actix::{Context, Handler};

use super::messages::Evaluate;
use super::AbuseMonitor;

impl Handler<Evaluate> for AbuseMonitor {
    type Result = ();

    fn handle(&mut self, msg: Evaluate, _: &mut Context<Self>) {
        if let Err(e) = self.evaluate(msg.watched_only) {
            tracing::error!(error = %e, "Abuse evaluation failed.");
        }
    }
}
