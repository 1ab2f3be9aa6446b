//! relaybox-core: the code the relay and every client share, with no I/O of its own.
//!
//! # Crate map
//!
//! ```text
//! wire/   the protocol, sans I/O: frames, Noise handshake states, protobuf messages, tokens
//! e2e/    the end-to-end layer (vodozemac Olm), the inner message schema, pickles
//! ids.rs  account (E.164 number or @handle), device and message ids
//! ```
//!
//! It builds for the host and for `wasm32-unknown-unknown`: the relay and the CLI client link
//! it natively, the browser companion (`web/`) as WebAssembly. On the host snow's ring
//! resolver handles ChaChaPoly; on wasm snow's default (RustCrypto) resolver does all of it.
//! Both speak the same `Noise_*_25519_ChaChaPoly_BLAKE2s`, byte for byte.

// Tests may unwrap: a panic there is a failed test, which is the point.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod e2e;
pub mod ids;
pub mod wire;
