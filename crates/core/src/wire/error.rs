//! Errors of the wire layer, and the one place that maps them to wire error codes.

use super::messages::ErrorCode;

/// Something about the bytes or the handshake is wrong. Every variant closes the connection
/// at worst; none panics.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The peer announced a frame longer than allowed. (peer's fault)
    #[error("frame of {len} bytes exceeds the limit")]
    FrameTooLarge { len: usize },
    /// The stream opens like another protocol (HTTP, TLS, SSH, MQTT): its first two bytes,
    /// read as a length, are too large. (peer's fault: a client at the wrong port)
    #[error(
        "{what} on the relay's Noise port (its first bytes read as a {len}-byte frame); HTTP, \
         WebSocket and HTTPS clients use listen.http"
    )]
    ForeignProtocol { len: usize, what: &'static str },
    /// The first frame is not `VERSION pattern noise-msg`. (peer's fault)
    #[error("bad handshake preamble: {0}")]
    BadPreamble(&'static str),
    /// Noise rejected a handshake or transport message (wrong key, tampering, garbage).
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    /// A protobuf did not decode. (peer's fault)
    #[error("malformed {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    /// A message decoded but lacks a required part. (peer's fault)
    #[error("missing {0}")]
    Missing(&'static str),
    /// The relay refused the handshake in plaintext (code and reason from the relay).
    #[error("relay refused the handshake: {code:?}: {reason}")]
    Refused { code: ErrorCode, reason: String },
    /// The relay's static key is not 32 bytes or otherwise unusable. (local fault)
    #[error("bad key: {0}")]
    BadKey(&'static str),
}

impl ProtocolError {
    /// The code sent to the peer for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::FrameTooLarge { .. } | Self::ForeignProtocol { .. } => ErrorCode::FrameTooLarge,
            Self::BadPreamble(_) | Self::Noise(_) | Self::BadKey(_) => ErrorCode::HandshakeFailed,
            Self::Decode { .. } | Self::Missing(_) => ErrorCode::Malformed,
            Self::Refused { code, .. } => *code,
        }
    }
}
