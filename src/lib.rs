//! relaybox: a single-binary, on-premise, end-to-end encrypted messaging relay.
//!
//! # Crate map
//!
//! Listed from the bottom up: a module imports only modules above it in this list (and the
//! core crate's). `tests/module_graph.rs` fails on an import loop between these modules.
//!
//! ```text
//! wire/, e2e/, ids  (crates/core) the protocol sans I/O, the end-to-end layer (vodozemac
//!                Olm), and the ids (account, device, message, group, blob)
//! clock, names   wall-clock milliseconds; which characters display names and subjects may hold
//! maps           the hash maps of the message path (foldhash)
//! shutdown       the graceful-stop signal shared by the relay's tasks
//! files          the data directory itself (private) and the relay's static key file
//! web            the browser companion's files, embedded, and their SHA-256
//! telemetry/     tracing setup and the Prometheus metrics
//! store/         the only code that knows how bytes reach the disk: sled (typed domain operations,
//!                the durability barrier) and the message log (`store::msglog`)
//! config/        the config tree, its layers (defaults < file < env < flags) and validation
//! audit          the operator audit log (rotated JSON lines)
//! registration/  phone normalisation, verification codes, rate limits, verifiers
//! actors/        actix actors owning serialised state: one Device actor per device, a Thread per
//!                group, an Entity per business (administrator, agents, assignment), the directory
//! blob/          blob files on disk (content addressed, atomic writes), signed URLs, the GC
//! backup/        backup archives (tar + manifest) and restore
//! client/        client SDK and the `relaybox client …` commands
//! edge/          transports: the Noise/TCP listener, HTTP, the admin API, the MQTT bridge, and
//!                the shared session logic
//! app.rs         the one place that wires store, actors and edges together (`relaybox serve`)
//! bench/         `relaybox bench`: load generators for relaybox, MQTT and NATS peers
//! ops/           operator commands: `relaybox admin`, `backup`, `restore`, manuals
//! cli.rs         the command line
//! ```
//!
//! The promises every module keeps: the relay cannot read messages; nothing acknowledged is
//! lost; bad input gets a specific error and never a panic.

// Tests may unwrap: a panic there is a failed test, which is the point.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod actors;
pub mod app;
pub mod audit;
pub mod backup;
pub mod bench;
pub mod blob;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod edge;
pub mod files;
pub mod maps;
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
