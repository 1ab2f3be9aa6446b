//! Edges turn a transport into actor messages and back. They own sockets and no business
//! state. Every client transport shares one session implementation (`session`): a device
//! attached over TCP behaves exactly as it would over any later transport, because the only
//! per-transport code is a [`session::FrameIo`] implementation.

pub mod admin;
pub mod context;
pub mod http;
pub mod limits;
pub mod mqtt;
pub mod session;
pub mod tcp;

pub use context::RelayCtx;
