//! Noise handshake states, sans I/O. Each state consumes `self` and returns the next one, so
//! a handshake cannot be driven out of order.
//!
//! First contact is `Noise_XX` (two round trips: `e` → `e, ee, s, es` → `s, se` + login, then
//! the relay's `LoginResult` with a resumption token). A reconnect is `Noise_IK` against the
//! pinned relay key (one round trip: login and token in message 1, `LoginResult` in message 2).
//! Both use the prologue [`PROLOGUE`] and the version/pattern bytes, so a downgrade or a
//! cross-protocol replay fails the handshake.

use prost::Message;
use snow::resolvers::{CryptoResolver, DefaultResolver};
#[cfg(not(target_arch = "wasm32"))]
use snow::resolvers::{FallbackResolver, RingResolver};
use snow::{Builder, HandshakeState, TransportState};

use super::frame::{FRAME_HEADER_BYTES, MAX_FRAME_BYTES};
use super::messages::{ErrorCode, Login, LoginResult};
use super::ProtocolError;

/// Protocol version byte that opens the client's first frame. (The refusal of another
/// version in [`accept`] names it; a test keeps the two in step.)
pub const VERSION: u8 = 1;
/// Pattern byte for first contact.
pub const PATTERN_XX: u8 = 1;
/// Pattern byte for resumption.
pub const PATTERN_IK: u8 = 2;
/// Noise protocol name of first contact.
pub const XX_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Noise protocol name of resumption.
pub const IK_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Mixed into every handshake hash.
pub const PROLOGUE: &[u8] = b"relaybox/1";
/// Bytes of a Noise AEAD tag.
pub const TAG_BYTES: usize = 16;
/// Largest plaintext a transport message can carry.
pub const MAX_PLAINTEXT_BYTES: usize = MAX_FRAME_BYTES - TAG_BYTES;
/// Relay reply marker: a Noise message follows.
const REPLY_NOISE: u8 = 0x00;
/// Relay reply marker: a plaintext refusal (`code:u16-be reason:utf8`) follows.
const REPLY_REFUSED: u8 = 0x01;

/// An X25519 static key pair (a device's or the relay's transport identity).
#[derive(Clone)]
pub struct StaticKeypair {
    pub private: [u8; 32],
    pub public: [u8; 32],
}

/// The relay's static key pair.
pub type RelayIdentity = StaticKeypair;

impl StaticKeypair {
    /// Derives the public half with x25519-dalek.
    pub fn from_private(private: [u8; 32]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(private);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Self { private, public }
    }

    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        let secret = x25519_dalek::StaticSecret::random();
        Self::from_private(secret.to_bytes())
    }
}

impl std::fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private half.
        write!(f, "StaticKeypair({})", hex::encode(self.public))
    }
}

/// Which implementation of the Noise primitives a handshake uses. Both speak the same
/// protocol byte for byte; the handshake tests run one against the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Crypto {
    /// The host's choice: ring for ChaChaPoly, RustCrypto for the rest; on wasm32 (where ring
    /// needs clang) the same as [`Crypto::Portable`].
    #[default]
    Native,
    /// snow's default resolver only (RustCrypto): what the browser companion runs.
    Portable,
}

/// The crypto the relay and the SDK use: ring for ChaChaPoly (fast for small messages), the
/// default resolver for 25519 and BLAKE2s. Public so the conformance test checks this exact
/// resolver against the published Noise test vectors.
#[cfg(not(target_arch = "wasm32"))]
pub fn resolver() -> FallbackResolver {
    FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver))
}

/// On wasm32 the default (RustCrypto) resolver does everything.
#[cfg(target_arch = "wasm32")]
pub fn resolver() -> DefaultResolver {
    DefaultResolver
}

fn builder(params: &str) -> Result<Builder<'static>, ProtocolError> {
    builder_using(params, Crypto::Native)
}

fn builder_using(params: &str, crypto: Crypto) -> Result<Builder<'static>, ProtocolError> {
    let params = params
        .parse()
        .map_err(|_| ProtocolError::BadKey("unsupported noise parameters"))?;
    let resolver: Box<dyn CryptoResolver + Send> = match crypto {
        Crypto::Native => Box::new(resolver()),
        Crypto::Portable => Box::new(DefaultResolver),
    };
    Ok(Builder::with_resolver(params, resolver).prologue(PROLOGUE)?)
}

/// Most bytes a handshake message of the patterns used here adds to its payload: an
/// ephemeral key (32), an encrypted static key (32 + 16) and the payload's tag (16).
const HANDSHAKE_OVERHEAD: usize = 32 + 48 + 16;

// The buffers are sized to the message, not to the Noise maximum: zeroing 64 KiB four times
// per login cost more than the rest of the handshake's bookkeeping.
fn write_msg(hs: &mut HandshakeState, payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut out = vec![0u8; (payload.len() + HANDSHAKE_OVERHEAD).min(MAX_FRAME_BYTES)];
    let n = hs.write_message(payload, &mut out)?;
    out.truncate(n);
    Ok(out)
}

fn read_msg(hs: &mut HandshakeState, msg: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut out = vec![0u8; msg.len()];
    let n = hs.read_message(msg, &mut out)?;
    out.truncate(n);
    Ok(out)
}

fn remote_static(hs: &HandshakeState) -> Result<[u8; 32], ProtocolError> {
    hs.get_remote_static()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or(ProtocolError::Missing("remote static key"))
}

fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> Result<M, ProtocolError> {
    M::decode(bytes).map_err(|source| ProtocolError::Decode { what, source })
}

/// The relay's plaintext refusal of a first frame it cannot accept (garbage, a wrong relay key).
pub fn refusal(code: ErrorCode, reason: &str) -> Vec<u8> {
    let mut out = vec![REPLY_REFUSED];
    let code = u16::try_from(code as i32).unwrap_or(0);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..reason.len().min(200)]);
    out
}

/// The relay's plaintext refusal in a frame where a Noise message was expected (after XX
/// message 3 that the relay could not read), or `None` if the frame is not one.
pub fn as_refusal(frame: &[u8]) -> Option<ProtocolError> {
    match frame {
        [REPLY_REFUSED, rest @ ..] => parse_reply(&[&[REPLY_REFUSED], rest].concat()).err(),
        _ => None,
    }
}

/// Splits the relay's first reply into its Noise message or a refusal.
fn parse_reply(reply: &[u8]) -> Result<&[u8], ProtocolError> {
    match reply.split_first() {
        Some((&REPLY_NOISE, rest)) => Ok(rest),
        Some((&REPLY_REFUSED, rest)) if rest.len() >= 2 => {
            let code = i32::from(u16::from_be_bytes([rest[0], rest[1]]));
            Err(ProtocolError::Refused {
                code: ErrorCode::try_from(code).unwrap_or(ErrorCode::Unspecified),
                reason: String::from_utf8_lossy(&rest[2..]).into_owned(),
            })
        }
        _ => Err(ProtocolError::BadPreamble("relay reply has no marker")),
    }
}

fn with_marker(marker: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(marker);
    out.extend(body);
    out
}

// ----------------------------------------------------------------------------------------
// Client side
// ----------------------------------------------------------------------------------------

/// Client, XX: message 1 sent, waiting for the relay's message 2.
pub struct ClientXx {
    hs: HandshakeState,
}

impl ClientXx {
    /// Starts first contact. Returns the state and the first frame's payload.
    pub fn start(device: &StaticKeypair) -> Result<(Self, Vec<u8>), ProtocolError> {
        Self::start_using(device, Crypto::Native)
    }

    /// As [`ClientXx::start`], with the primitives of `crypto`.
    pub fn start_using(
        device: &StaticKeypair,
        crypto: Crypto,
    ) -> Result<(Self, Vec<u8>), ProtocolError> {
        let mut hs = builder_using(XX_PARAMS, crypto)?
            .local_private_key(&device.private)?
            .build_initiator()?;
        let msg = write_msg(&mut hs, &[])?;
        let mut payload = vec![VERSION, PATTERN_XX];
        payload.extend(msg);
        Ok((Self { hs }, payload))
    }

    /// Reads message 2 and writes message 3 carrying `login`. Returns the transport, the
    /// payload of frame 3, and the relay's static key (to pin). The relay's `LoginResult`
    /// arrives as the first transport message.
    pub fn finish(
        mut self,
        reply: &[u8],
        login: &Login,
    ) -> Result<(Transport, Vec<u8>, [u8; 32]), ProtocolError> {
        read_msg(&mut self.hs, parse_reply(reply)?)?;
        let relay_static = remote_static(&self.hs)?;
        let msg3 = write_msg(&mut self.hs, &login.encode_to_vec())?;
        Ok((
            Transport::new(self.hs.into_transport_mode()?),
            msg3,
            relay_static,
        ))
    }
}

/// Client, IK: message 1 (with login and token) sent, waiting for the relay's answer.
pub struct ClientIk {
    hs: HandshakeState,
}

impl ClientIk {
    /// Starts a resumption against the pinned `relay_static` key.
    pub fn start(
        device: &StaticKeypair,
        relay_static: &[u8; 32],
        login: &Login,
    ) -> Result<(Self, Vec<u8>), ProtocolError> {
        Self::start_using(device, relay_static, login, Crypto::Native)
    }

    /// As [`ClientIk::start`], with the primitives of `crypto`.
    pub fn start_using(
        device: &StaticKeypair,
        relay_static: &[u8; 32],
        login: &Login,
        crypto: Crypto,
    ) -> Result<(Self, Vec<u8>), ProtocolError> {
        let mut hs = builder_using(IK_PARAMS, crypto)?
            .local_private_key(&device.private)?
            .remote_public_key(relay_static)?
            .build_initiator()?;
        let msg = write_msg(&mut hs, &login.encode_to_vec())?;
        let mut payload = vec![VERSION, PATTERN_IK];
        payload.extend(msg);
        Ok((Self { hs }, payload))
    }

    /// Reads message 2. The login succeeded only if the result is `ok`.
    pub fn finish(mut self, reply: &[u8]) -> Result<(Transport, LoginResult), ProtocolError> {
        let payload = read_msg(&mut self.hs, parse_reply(reply)?)?;
        let result = decode(&payload, "LoginResult")?;
        Ok((Transport::new(self.hs.into_transport_mode()?), result))
    }
}

// ----------------------------------------------------------------------------------------
// Relay side
// ----------------------------------------------------------------------------------------

/// What the relay makes of a client's first frame.
pub enum Accepted {
    /// First contact: send `reply` and wait for message 3.
    Xx { state: RelayXx, reply: Vec<u8> },
    /// Resumption: check the login and token, then answer with [`RelayIk::respond`].
    Ik(RelayIk),
}

/// Reads the first frame of a connection.
pub fn accept(relay: &RelayIdentity, first: &[u8]) -> Result<Accepted, ProtocolError> {
    let (&version, rest) = first
        .split_first()
        .ok_or(ProtocolError::BadPreamble("empty frame"))?;
    if version != VERSION {
        return Err(ProtocolError::BadPreamble(
            "unsupported protocol version (this relay speaks version 1)",
        ));
    }
    let (&pattern, msg) = rest
        .split_first()
        .ok_or(ProtocolError::BadPreamble("no pattern"))?;
    match pattern {
        PATTERN_XX => {
            let mut hs = builder(XX_PARAMS)?
                .local_private_key(&relay.private)?
                .build_responder()?;
            read_msg(&mut hs, msg)?;
            let reply = with_marker(REPLY_NOISE, write_msg(&mut hs, &[])?);
            Ok(Accepted::Xx {
                state: RelayXx { hs },
                reply,
            })
        }
        PATTERN_IK => {
            let mut hs = builder(IK_PARAMS)?
                .local_private_key(&relay.private)?
                .build_responder()?;
            let payload = read_msg(&mut hs, msg)?;
            let login = decode(&payload, "Login")?;
            let client_static = remote_static(&hs)?;
            Ok(Accepted::Ik(RelayIk {
                hs,
                login,
                client_static,
            }))
        }
        _ => Err(ProtocolError::BadPreamble("unknown handshake pattern")),
    }
}

/// Relay, XX: message 2 sent, waiting for message 3.
pub struct RelayXx {
    hs: HandshakeState,
}

impl RelayXx {
    /// Reads message 3. Returns the transport, the client's login and its static key. The
    /// caller answers with a `LoginResult` as the first transport message.
    ///
    /// A message 3 that Noise rejects is an error (there is no transport to answer over: the
    /// caller sends a plaintext [`refusal`]); one that decrypts but does not carry a `Login`
    /// still yields the transport, so the caller can answer `LoginResult{MALFORMED}` over it.
    #[allow(clippy::type_complexity)] // one use, and naming the triple would hide it
    pub fn finish(
        mut self,
        msg3: &[u8],
    ) -> Result<(Transport, Result<Login, ProtocolError>, [u8; 32]), ProtocolError> {
        let payload = read_msg(&mut self.hs, msg3)?;
        let login = decode(&payload, "Login");
        let client_static = remote_static(&self.hs)?;
        Ok((
            Transport::new(self.hs.into_transport_mode()?),
            login,
            client_static,
        ))
    }
}

/// Relay, IK: message 1 read; the login and the client's static key are known.
pub struct RelayIk {
    hs: HandshakeState,
    /// The login (with token) the client sent in message 1.
    pub login: Login,
    /// The client's static key, authenticated by the handshake.
    pub client_static: [u8; 32],
}

impl RelayIk {
    /// Writes message 2 carrying `result`; returns the reply payload and the transport.
    pub fn respond(mut self, result: &LoginResult) -> Result<(Transport, Vec<u8>), ProtocolError> {
        let msg = write_msg(&mut self.hs, &result.encode_to_vec())?;
        Ok((
            Transport::new(self.hs.into_transport_mode()?),
            with_marker(REPLY_NOISE, msg),
        ))
    }
}

// ----------------------------------------------------------------------------------------
// Transport
// ----------------------------------------------------------------------------------------

/// An established Noise session: encrypts and decrypts whole protobuf messages.
pub struct Transport {
    state: TransportState,
}

impl Transport {
    fn new(state: TransportState) -> Self {
        Self { state }
    }

    /// Encrypts one message into one frame payload.
    pub fn encrypt<M: Message>(&mut self, msg: &M) -> Result<Vec<u8>, ProtocolError> {
        self.encrypt_bytes(&msg.encode_to_vec())
    }

    /// Encrypts bytes that need not be a message: the relay's test hook uses it to send a
    /// frame a client cannot decode (see `edge::session`, `FAILPOINTS`).
    pub fn encrypt_bytes(&mut self, plain: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        if plain.len() > MAX_PLAINTEXT_BYTES {
            return Err(ProtocolError::FrameTooLarge {
                len: plain.len() + TAG_BYTES,
            });
        }
        let mut out = vec![0u8; plain.len() + TAG_BYTES];
        let n = self.state.write_message(plain, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Encrypts one message and appends it to `out` as a whole frame (length header, then
    /// the Noise message): a batch of frames made this way is one buffer, written at once.
    /// The message is encoded into this thread's scratch buffer, so nothing is allocated but
    /// `out`'s growth.
    pub fn encrypt_framed<M: Message>(
        &mut self,
        msg: &M,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        let plain_len = msg.encoded_len();
        if plain_len > MAX_PLAINTEXT_BYTES {
            return Err(ProtocolError::FrameTooLarge {
                len: plain_len + TAG_BYTES,
            });
        }
        SCRATCH.with_borrow_mut(|plain| {
            plain.clear();
            // A Vec grows as needed, so encoding cannot run out of room.
            msg.encode(plain)
                .map_err(|_| ProtocolError::FrameTooLarge {
                    len: plain_len + TAG_BYTES,
                })?;
            let start = out.len();
            out.resize(start + FRAME_HEADER_BYTES + plain.len() + TAG_BYTES, 0);
            let body = &mut out[start + FRAME_HEADER_BYTES..];
            let n = match self.state.write_message(plain, body) {
                Ok(n) => n,
                Err(e) => {
                    out.truncate(start);
                    return Err(e.into());
                }
            };
            out.truncate(start + FRAME_HEADER_BYTES + n);
            let len = u16::try_from(n).map_err(|_| ProtocolError::FrameTooLarge { len: n })?;
            out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&len.to_be_bytes());
            Ok(())
        })
    }

    /// Decrypts one frame payload into a message. The plaintext lives in this thread's
    /// scratch buffer only while it is decoded.
    pub fn decrypt<M: Message + Default>(
        &mut self,
        payload: &[u8],
        what: &'static str,
    ) -> Result<M, ProtocolError> {
        SCRATCH.with_borrow_mut(|out| {
            out.clear();
            out.resize(payload.len(), 0);
            let n = self.state.read_message(payload, out)?;
            decode(&out[..n], what)
        })
    }

    /// Decrypts one frame payload into a message whose `Bytes` fields (a message's
    /// ciphertexts) are slices of the decrypted frame, not copies of it: the relay decodes
    /// every `ClientFrame` this way, so an envelope reaches the queue without being copied.
    pub fn decrypt_shared<M: Message + Default>(
        &mut self,
        payload: &[u8],
        what: &'static str,
    ) -> Result<M, ProtocolError> {
        let mut out = vec![0u8; payload.len()];
        let n = self.state.read_message(payload, &mut out)?;
        out.truncate(n);
        M::decode(prost::bytes::Bytes::from(out))
            .map_err(|source| ProtocolError::Decode { what, source })
    }
}

thread_local! {
    /// Plaintext of the frame being encrypted or decrypted on this thread. It grows to the
    /// largest frame seen (at most 64 KiB) and is reused, so a frame allocates no plaintext
    /// buffer of its own, and a connection holds none while idle.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
