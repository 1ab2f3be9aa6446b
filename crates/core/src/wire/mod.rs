//! The relaybox protocol, sans I/O: framing, the Noise handshake states and the protobuf
//! messages. Used by the relay's edges, the client SDK, the bench tool and the fuzz targets.
//!
//! Owns the byte formats. Does not own sockets, clocks or randomness beyond what snow draws
//! for ephemeral keys: callers pass bytes in and get bytes and typed values out.
//!
//! # Format
//!
//! ```text
//! frame      = length:u16-be payload[length]          (length ≤ MAX_FRAME_BYTES)
//! client #1  = VERSION:u8 pattern:u8 noise-msg         (pattern 1 = XX, 2 = IK)
//! relay  #1  = 0x00 noise-msg | 0x01 code:u16-be reason:utf8   (0x01 = plaintext refusal)
//! then       = noise-msg                               (handshake, then transport messages)
//! ```
//!
//! Transport plaintexts are `ClientFrame` / `ServerFrame` protobufs (see `proto/relaybox.proto`).

pub mod error;
pub mod frame;
pub mod handshake;
pub mod messages;
pub mod token;

pub use error::ProtocolError;
pub use frame::{FrameDecoder, MAX_FRAME_BYTES};
pub use handshake::{RelayIdentity, Transport};
