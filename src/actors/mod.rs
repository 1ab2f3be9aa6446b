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
