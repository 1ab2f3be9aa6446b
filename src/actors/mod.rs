//! Actors own the state that must be serialised. Today: one [`device::Device`] per device
//! (its queue, its live session, its delivery window), one [`thread::Thread`] per group, one
//! [`entity::Entity`] per business entity (its agents and the routing of its customer threads),
//! the [`directory::Directory`] that maps ids to live actors and activates them on first use,
//! the [`abuse::AbuseMonitor`] that turns abuse metrics into verdicts, the
//! [`presence::Presence`] registry that pushes online/last-seen to interested devices, and the
//! [`notifier::Notifier`] that wakes offline devices through their push targets
//! ([`push_target`]).
//!
//! Actors are virtual: activated from the store when first addressed, stopped when idle, their
//! state written through to the store. Sessions (edges) talk to them in messages.

pub mod abuse;
pub mod device;
pub mod directory;
pub mod entity;
pub mod notifier;
pub mod presence;
pub mod push_target;
pub mod thread;

pub use directory::Directory;

use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context};

/// Mailbox bound of every state actor (Device, Thread, Entity): a flood of senders waits for
/// room (backpressure) instead of growing the relay's memory without limit.
pub const MAILBOX_CAPACITY: usize = 256;

/// A virtual actor that stops itself when idle, as the shared start-up ([`start_up`]) runs it.
pub trait Virtual: Actor<Context = Context<Self>> {
    /// Whether the actor has been idle for `idle_stop` and may stop.
    fn idle_for(&self, idle_stop: Duration) -> bool;
    /// Takes the actor out of the directory, so the next message activates a fresh one.
    fn leave_directory(&self, ctx: &mut Context<Self>);
}

/// The start-up every state actor shares: the mailbox bound, and a sweep every half
/// `idle_stop` (at least 100 ms) that stops the actor once it is idle.
pub fn start_up<A: Virtual>(ctx: &mut Context<A>, idle_stop: Duration) {
    ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    let every = (idle_stop / 2).max(Duration::from_millis(100));
    ctx.run_interval(every, move |act, ctx| {
        if act.idle_for(idle_stop) {
            act.leave_directory(ctx);
            ctx.stop();
        }
    });
}
