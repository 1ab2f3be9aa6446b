//! relaybox: a single-binary, on-premise, end-to-end encrypted messaging relay.
//!
//! # Crate map
//!
//! ```text
//! wire/      the protocol, sans I/O: frames, Noise handshake states, protobuf messages, tokens
//! store/     the only code that touches sled: typed domain operations + the durability barrier
//! actors/    actix actors that own serialised state: one Device actor per device, the directory
//! edge/      transports: the Noise/TCP listener and the session logic every transport shares
//! registration/  phone normalisation, verification codes, verifiers (log, command, webhook)
//! e2e/       the end-to-end layer (vodozemac Olm) used by the client
//! client/    client SDK and the `relaybox client …` commands
//! config.rs  the config tree, its layers (defaults < file < env < flags) and validation
//! app.rs     the one place that wires store, actors and edges together (`relaybox serve`)
//! ```
//!
//! The promises every module keeps: the relay cannot read messages; nothing acknowledged is
//! lost; bad input gets a specific error and never a panic.

pub mod actors;
pub mod clock;
pub mod ids;
pub mod wire;
pub mod store;
