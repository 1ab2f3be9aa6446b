//! relaybox: a single-binary, on-premise, end-to-end encrypted messaging relay.
//!
//! # Crate map
//!
//! ```text
//! wire/          (crates/core) the protocol, sans I/O: frames, Noise states, protobuf messages
//! backup/        backup archives (tar + manifest) and restore
//! store/         the only code that knows how bytes reach the disk: sled (typed domain operations,
//!                the durability barrier) and the message log (`store::msglog`)
//! actors/        actix actors owning serialised state: one Device actor per device, a Thread per
//!                group, an Entity per business (administrator, agents, assignment), the directory
//! blob/          blob files on disk (content addressed, atomic writes), signed URLs, the GC
//! edge/          transports: the Noise/TCP listener, admission limits, the shared session logic
//! registration/  phone normalisation, verification codes, rate limits, verifiers
//! e2e/           (crates/core) the end-to-end layer (vodozemac Olm) used by clients
//! ids            (crates/core) account, device and message ids
//! web            the browser companion's files, embedded, and their SHA-256
//! client/        client SDK and the `relaybox client …` commands
//! bench/         `relaybox bench`: load generators for relaybox, MQTT and NATS peers
//! telemetry/     tracing setup and the Prometheus metrics
//! config/        the config tree, its layers (defaults < file < env < flags) and validation
//! clock, names   wall-clock milliseconds; which characters display names and subjects may hold
//! shutdown       the graceful-stop signal shared by the relay's tasks
//! app.rs         the one place that wires store, actors and edges together (`relaybox serve`)
//! ops/           operator commands: `relaybox admin`, `backup`, `restore`
//! cli.rs         the command line
//! ```
//!
//! The promises every module keeps: the relay cannot read messages; nothing acknowledged is
//! lost; bad input gets a specific error and never a panic.

// Tests may unwrap: a panic there is a failed test, which is the point.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod actors;
pub mod app;
pub mod backup;
pub mod bench;
pub mod blob;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod edge;
pub mod names;
pub mod ops;
pub mod registration;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod web;

// The client core lives in `crates/core` (it also builds for wasm32); these keep the paths
// `crate::wire`, `crate::e2e` and `crate::ids` of the rest of the relay unchanged.
pub use relaybox_core::{e2e, ids, wire};
