//! The one error type of the end-to-end layer. Every variant says who is at fault, so the
//! client can decide between "ask the user", "re-claim keys", "drop the message" and "bug".

use vodozemac::olm::{DecryptionError, SessionCreationError};

/// Something about keys, ciphertext or an inner message is wrong. Bytes from the network
/// produce one of these, never a panic.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// A key is not the expected 32 bytes. (the peer's or the directory's fault)
    #[error("{what} must be 32 bytes, got {len}")]
    KeyLength { what: &'static str, len: usize },
    /// A key has the right length but is unusable: not an Ed25519 point, or a low-order
    /// Curve25519 point that would make the key agreement predictable.
    /// (the peer's or the directory's fault)
    #[error("{what} is not a usable key")]
    InvalidKey { what: &'static str },
    /// A one-time key id is empty or longer than [`super::MAX_KEY_ID_BYTES`].
    /// (the peer's or the directory's fault)
    #[error("one-time key id of {len} bytes is out of bounds")]
    KeyIdLength { len: usize },
    /// The claimed bundle carries no one-time or fallback key: the peer device published
    /// none, so no session can be started with it yet. (the peer's side)
    #[error("the key bundle has no one-time key")]
    NoOneTimeKey,
    /// The bundle is for another device than the one being encrypted to. (caller's fault)
    #[error("key bundle is for device {bundle}, not device {wanted}")]
    BundleDeviceMismatch { wanted: u32, bundle: u32 },
    /// There is no session with that device and no bundle was given to start one; claim the
    /// device's keys and retry. (caller's side)
    #[error("no session with {peer} device {device}")]
    NoSession { peer: String, device: u32 },
    /// The peer device's identity key differs from the one our sessions were made with. The
    /// client must decide (show a "security code changed" notice), then call `forget` and
    /// retry. (the peer reinstalled, or someone is impersonating it)
    #[error("identity key of {peer} device {device} changed")]
    IdentityChanged { peer: String, device: u32 },
    /// The envelope's `olm_type` is neither 0 (pre-key) nor 1 (normal). (sender's fault)
    #[error("unknown olm message type {0}")]
    UnknownMessageType(u32),
    /// The ciphertext is longer than [`super::MAX_CIPHERTEXT_BYTES`]. (sender's fault)
    #[error("ciphertext of {len} bytes is too large")]
    CiphertextTooLarge { len: usize },
    /// The ciphertext does not decode as an Olm message of its type. (sender's fault)
    #[error("malformed olm message: {0}")]
    MalformedMessage(#[from] vodozemac::DecodeError),
    /// The pre-key message uses the Olm v1 (truncated MAC) format; relaybox only accepts
    /// `SessionConfig::version_2()`. (sender's fault, or a downgrade attempt)
    #[error("olm v1 sessions are not accepted")]
    OutdatedOlmVersion,
    /// None of our sessions with the device could decrypt the message: tampered, replayed,
    /// or for a session we no longer hold. (sender's or relay's fault)
    #[error("decryption failed: {0}")]
    Decryption(#[from] DecryptionError),
    /// A pre-key message could not start a session: its one-time key is unknown or already
    /// used, or its first message did not decrypt. (sender's fault, or a replay)
    #[error("cannot create inbound session: {0}")]
    SessionCreation(#[from] SessionCreationError),
    /// The pickle has a version this build does not understand. (local fault: downgrade)
    #[error("unsupported pickle version {0}")]
    PickleVersion(u32),
    /// The inner message has a major version this build does not understand; the sender
    /// runs a newer client. (sender's side: ask the user to update)
    #[error("unsupported inner message version {0}")]
    InnerVersion(u32),
    /// The inner message is not valid JSON of the expected shape. (sender's fault)
    #[error("malformed inner message: {0}")]
    InnerMalformed(#[source] serde_json::Error),
    /// The inner message (or its text body) exceeds its bound. (sender's fault)
    #[error("inner {what} of {len} bytes is too large")]
    InnerTooLarge { what: &'static str, len: usize },
    /// `reply_to` is not the hex form of a 16-byte message id. (sender's fault)
    #[error("reply_to is not a 32-character hex message id")]
    InvalidReplyTo,
    /// A media message names no segment, or more than the client accepts. (sender's fault)
    #[error("media message has {0} segments (1 to 16 allowed)")]
    InvalidMedia(usize),
}
