//! Every message the `Device` actor accepts.

use actix::prelude::*;
use tokio::sync::mpsc;

use super::Push;
use crate::wire::messages::ServerFrame;

/// A session of this device completed its handshake; deliver to it from now on. Replaces any
/// earlier session (which is told [`Push::Replaced`]); unacknowledged entries are re-sent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach {
    pub session_id: u64,
    pub tx: mpsc::Sender<Push>,
}

/// The session `session_id` ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach {
    pub session_id: u64,
}

/// Entries for this device up to seq `upto` are durable (sent by the relay's commit
/// dispatcher): deliver them, or tell the push notifier if the device is offline.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Durable {
    pub upto: u64,
}

/// The session `session_id` acknowledged these entries.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ack {
    pub session_id: u64,
    pub seqs: Vec<u64>,
}

/// The device was unlinked: close its session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Revoke;

/// An ephemeral frame (chat state, keys-low notice): sent if a session is live, else dropped.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Ephemeral {
    pub frame: ServerFrame,
}

/// Whether a session is attached now (for operators: `GET /v1/accounts/{phone}`).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsOnline;
