//! The end-to-end layer: the Olm account of one device and its sessions with peer devices.
//!
//! It owns the device's identity keys, its one-time and fallback keys, one short list of Olm
//! sessions per peer device, the encryption and decryption of envelopes for one peer device,
//! the versioned inner message ([`payload`]) and the pickle that persists all of it.
//!
//! It does not own the network (the client sends `UploadKeys`, `ClaimKeys` and `Send` and hands
//! bundles and deliveries in), nor files (the client stores the [`E2ePickle`], encrypted at
//! rest, wherever it keeps its state). It is sans-IO: the only outside input is the system RNG,
//! used by vodozemac. All cryptography is vodozemac's (Olm, `SessionConfig::version_2()`).
//!
//! # Sessions
//!
//! A peer device may hold several sessions with us (both sides started one at once, or the peer
//! restarted). We keep up to [`MAX_SESSIONS_PER_DEVICE`], most recently successful first, and
//! always encrypt with the first: a session that just decrypted a message moves to the front, so
//! both sides converge on the session the other one is using.
//!
//! # Identity keys
//!
//! The first session with a peer device pins its Curve25519 identity key (from the claimed
//! bundle, or from its first pre-key message). A later bundle or pre-key message with another
//! key fails with [`E2eError::IdentityChanged`]; the client tells the user, then calls
//! [`E2e::forget`] and retries. The client compares [`E2e::peer_identity_key`] with what it
//! expects (a verified safety number) to detect a relay that hands out its own keys.

mod error;
pub mod media;
pub mod payload;
mod pickle;
pub mod safety;
// In tests a panic is the failure report, so `unwrap` is the clearest assertion.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;

use vodozemac::olm::{
    Account, InboundCreationResult, Message, OlmMessage, PreKeyMessage, Session, SessionConfig,
};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey};

use crate::wire::messages::{DeviceKeys, Envelope, OneTimeKey, UploadKeys};

pub use error::E2eError;
pub use pickle::E2ePickle;

/// Length of every Curve25519 and Ed25519 public key on the wire.
pub const KEY_BYTES: usize = 32;
/// Longest one-time key id accepted in a claimed bundle. Ours are about 11 bytes.
pub const MAX_KEY_ID_BYTES: usize = 64;
/// Longest ciphertext `decrypt` looks at. Far above any inner message (and above the frame
/// limit); it bounds the work a hostile sender can cause.
pub const MAX_CIPHERTEXT_BYTES: usize = 1 << 20;
/// Sessions kept per peer device; older ones are dropped.
pub const MAX_SESSIONS_PER_DEVICE: usize = 4;

/// `olm_type` of a pre-key message (starts a session).
pub const OLM_TYPE_PRE_KEY: u32 = 0;
/// `olm_type` of a normal message.
pub const OLM_TYPE_NORMAL: u32 = 1;

/// A peer device: account (E.164) and device number.
type PeerId = (String, u32);

/// What we know about one peer device.
struct Peer {
    /// The Curve25519 identity key every session in `sessions` was made with.
    identity_key: Curve25519PublicKey,
    /// Never empty (an entry without sessions is removed); most recently successful first;
    /// at most [`MAX_SESSIONS_PER_DEVICE`].
    sessions: Vec<Session>,
}

impl Peer {
    /// Moves `sessions[index]` to the front, keeping the order of the others.
    fn promote(&mut self, index: usize) {
        self.sessions[..=index].rotate_right(1);
    }

    /// Adds a new session in front, dropping the oldest beyond the bound.
    fn push_front(&mut self, session: Session) {
        self.sessions.insert(0, session);
        self.sessions.truncate(MAX_SESSIONS_PER_DEVICE);
    }
}

/// The end-to-end state of one device: its Olm account and its sessions with peer devices.
pub struct E2e {
    /// Identity keys, unused one-time keys, current and previous fallback key.
    account: Account,
    /// Sessions per peer device, with the identity key they were made with.
    peers: HashMap<PeerId, Peer>,
    /// The next upload must carry a fresh fallback key: none was published yet, or a peer
    /// has used the published one (a fallback key is reusable, so it is rotated after use).
    fallback_due: bool,
}

impl Default for E2e {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for E2e {
    // Never prints secrets: only the public identity key and counts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("E2e")
            .field("identity_key", &self.account.curve25519_key().to_base64())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl E2e {
    /// A new device identity with fresh random keys and no sessions.
    pub fn new() -> Self {
        Self {
            account: Account::new(),
            peers: HashMap::new(),
            fallback_due: true,
        }
    }

    /// Our Curve25519 identity key (the `identity_key` of `UploadKeys`).
    pub fn identity_key(&self) -> [u8; KEY_BYTES] {
        self.account.curve25519_key().to_bytes()
    }

    /// Our Ed25519 signing key (the `signing_key` of `UploadKeys`).
    pub fn signing_key(&self) -> [u8; KEY_BYTES] {
        *self.account.ed25519_key().as_bytes()
    }

    /// The identity key our sessions with a peer device were made with, if we have any.
    pub fn peer_identity_key(&self, peer: &str, device: u32) -> Option<[u8; KEY_BYTES]> {
        self.peers
            .get(&(peer.to_owned(), device))
            .map(|p| p.identity_key.to_bytes())
    }

    /// Generates up to `count` new one-time keys and returns them as an UploadKeys (with
    /// identity/signing keys and a fresh fallback key if none is published yet, or the
    /// published one has been used), marking them published.
    ///
    /// `count` is capped at vodozemac's recommended number of published keys (50); pass what
    /// `KeysLow` asks for. The account keeps many more private keys than that, so keys still
    /// in the directory stay usable. If the upload fails the keys are simply never claimed.
    pub fn keys_to_upload(&mut self, count: usize) -> UploadKeys {
        let count = count.min(self.account.max_number_of_one_time_keys());
        self.account.generate_one_time_keys(count);
        if self.fallback_due {
            // vodozemac keeps the previous fallback key too, so bundles claimed just before
            // this rotation still start sessions.
            self.account.generate_fallback_key();
        }

        let mut one_time_keys: Vec<_> = self.account.one_time_keys().into_iter().collect();
        one_time_keys.sort_by_key(|(id, _)| *id);
        let one_time_keys = one_time_keys
            .into_iter()
            .map(|(id, key)| wire_key(id, key))
            .collect();
        let fallback_key = self
            .account
            .fallback_key()
            .into_iter()
            .next()
            .map(|(id, key)| wire_key(id, key));

        self.account.mark_keys_as_published();
        self.fallback_due = false;
        UploadKeys {
            identity_key: self.identity_key().to_vec(),
            signing_key: self.signing_key().to_vec(),
            one_time_keys,
            fallback_key,
        }
    }

    /// Encrypt for one peer device; if no session exists, `bundle` (from ClaimKeys) is
    /// required to create an outbound session. Returns an Envelope.
    ///
    /// With a session, a given bundle is only checked against the pinned identity key.
    pub fn encrypt(
        &mut self,
        peer: &str,
        device: u32,
        bundle: Option<&DeviceKeys>,
        plaintext: &[u8],
    ) -> Result<Envelope, E2eError> {
        let bundle = bundle.map(|b| Bundle::parse(device, b)).transpose()?;
        let state = match self.peers.entry((peer.to_owned(), device)) {
            Entry::Occupied(entry) => {
                let state = entry.into_mut();
                if bundle
                    .as_ref()
                    .is_some_and(|b| b.identity_key != state.identity_key)
                {
                    return Err(identity_changed(peer, device));
                }
                state
            }
            Entry::Vacant(entry) => {
                let bundle = bundle.ok_or_else(|| E2eError::NoSession {
                    peer: peer.to_owned(),
                    device,
                })?;
                let session = self.account.create_outbound_session(
                    SessionConfig::version_2(),
                    bundle.identity_key,
                    bundle.one_time_key,
                );
                entry.insert(Peer {
                    identity_key: bundle.identity_key,
                    sessions: vec![session],
                })
            }
        };
        let session = state
            .sessions
            .first_mut()
            .ok_or_else(|| E2eError::NoSession {
                peer: peer.to_owned(),
                device,
            })?;
        let (olm_type, ciphertext) = match session.encrypt(plaintext) {
            OlmMessage::PreKey(m) => (OLM_TYPE_PRE_KEY, m.to_bytes()),
            OlmMessage::Normal(m) => (OLM_TYPE_NORMAL, m.to_bytes()),
        };
        Ok(Envelope {
            device,
            olm_type,
            ciphertext: ciphertext.into(),
            account: String::new(),
        })
    }

    /// Whether we hold a session with that peer device.
    pub fn has_session(&self, peer: &str, device: u32) -> bool {
        self.peers.contains_key(&(peer.to_owned(), device))
    }

    /// Decrypt a delivered ciphertext (olm_type 0 = pre-key creates an inbound session,
    /// consuming the one-time key; 1 = normal).
    ///
    /// A pre-key message for a session we already hold (the peer has not yet seen our reply)
    /// is decrypted by that session; only a pre-key message for a new session creates one.
    /// A replayed first message is therefore refused even when it used the (reusable)
    /// fallback key, as long as the session is still held.
    pub fn decrypt(
        &mut self,
        peer: &str,
        device: u32,
        olm_type: u32,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, E2eError> {
        if ciphertext.len() > MAX_CIPHERTEXT_BYTES {
            return Err(E2eError::CiphertextTooLarge {
                len: ciphertext.len(),
            });
        }
        match olm_type {
            OLM_TYPE_PRE_KEY => {
                self.decrypt_pre_key(peer, device, PreKeyMessage::from_bytes(ciphertext)?)
            }
            OLM_TYPE_NORMAL => self.decrypt_normal(peer, device, Message::from_bytes(ciphertext)?),
            other => Err(E2eError::UnknownMessageType(other)),
        }
    }

    /// Forget sessions with a peer device (e.g. its identity key changed).
    pub fn forget(&mut self, peer: &str, device: u32) {
        self.peers.remove(&(peer.to_owned(), device));
    }

    /// Tries every session with the peer device, most recently successful first.
    fn decrypt_normal(
        &mut self,
        peer: &str,
        device: u32,
        message: Message,
    ) -> Result<Vec<u8>, E2eError> {
        let no_session = || E2eError::NoSession {
            peer: peer.to_owned(),
            device,
        };
        let state = self
            .peers
            .get_mut(&(peer.to_owned(), device))
            .ok_or_else(no_session)?;
        let message = OlmMessage::Normal(message);
        let mut first_error = None;
        // A failed decryption leaves a vodozemac session unchanged, so trying is harmless.
        for index in 0..state.sessions.len() {
            match state.sessions[index].decrypt(&message) {
                Ok(plaintext) => {
                    state.promote(index);
                    return Ok(plaintext);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.map_or_else(no_session, E2eError::from))
    }

    fn decrypt_pre_key(
        &mut self,
        peer: &str,
        device: u32,
        message: PreKeyMessage,
    ) -> Result<Vec<u8>, E2eError> {
        // Checked before the one-time key is consumed: a v1 (truncated MAC) session would be
        // created otherwise, whatever config we ask for.
        if message.message().mac_truncated() {
            return Err(E2eError::OutdatedOlmVersion);
        }
        check_contributory("pre-key identity key", message.identity_key())?;
        check_contributory("pre-key base key", message.base_key())?;

        let key = (peer.to_owned(), device);
        if let Some(state) = self.peers.get_mut(&key) {
            if state.identity_key != message.identity_key() {
                return Err(identity_changed(peer, device));
            }
            let session_id = message.session_id();
            if let Some(index) = state
                .sessions
                .iter()
                .position(|s| s.session_id() == session_id)
            {
                let plaintext = state.sessions[index].decrypt(&OlmMessage::PreKey(message))?;
                state.promote(index);
                return Ok(plaintext);
            }
        }

        let one_time_keys_before = self.account.stored_one_time_key_count();
        let InboundCreationResult { session, plaintext } = self
            .account
            .create_inbound_session(message.identity_key(), &message)?;
        if self.account.stored_one_time_key_count() == one_time_keys_before {
            // No one-time key was consumed, so the session used the fallback key.
            self.fallback_due = true;
        }
        match self.peers.entry(key) {
            Entry::Occupied(entry) => entry.into_mut().push_front(session),
            Entry::Vacant(entry) => {
                entry.insert(Peer {
                    identity_key: message.identity_key(),
                    sessions: vec![session],
                });
            }
        }
        Ok(plaintext)
    }
}

/// Whether `key` is an Ed25519 public key (a point on the curve), as a published
/// `signing_key` must be. The relay checks it on upload; a bundle holding another is unusable.
pub fn is_ed25519_public_key(key: &[u8; KEY_BYTES]) -> bool {
    Ed25519PublicKey::from_slice(key).is_ok()
}

/// A claimed `DeviceKeys`, validated.
struct Bundle {
    identity_key: Curve25519PublicKey,
    one_time_key: Curve25519PublicKey,
}

impl Bundle {
    /// Checks every length and key of a bundle claimed for `device`.
    fn parse(device: u32, keys: &DeviceKeys) -> Result<Self, E2eError> {
        if keys.device != device {
            return Err(E2eError::BundleDeviceMismatch {
                wanted: device,
                bundle: keys.device,
            });
        }
        let identity_key = curve_key("identity key", &keys.identity_key)?;
        // Not used by Olm itself (the protocol carries no key signatures yet), but a bundle
        // with a malformed signing key is malformed.
        let signing_key = key_bytes("signing key", &keys.signing_key)?;
        Ed25519PublicKey::from_slice(&signing_key).map_err(|_| E2eError::InvalidKey {
            what: "signing key",
        })?;
        let one_time = keys.one_time_key.as_ref().ok_or(E2eError::NoOneTimeKey)?;
        if one_time.key_id.is_empty() || one_time.key_id.len() > MAX_KEY_ID_BYTES {
            return Err(E2eError::KeyIdLength {
                len: one_time.key_id.len(),
            });
        }
        let one_time_key = curve_key("one-time key", &one_time.public_key)?;
        Ok(Self {
            identity_key,
            one_time_key,
        })
    }
}

/// Exactly [`KEY_BYTES`] bytes, or a specific error naming the key.
fn key_bytes(what: &'static str, bytes: &[u8]) -> Result<[u8; KEY_BYTES], E2eError> {
    bytes.try_into().map_err(|_| E2eError::KeyLength {
        what,
        len: bytes.len(),
    })
}

/// A Curve25519 public key that is 32 bytes and not of low order.
fn curve_key(what: &'static str, bytes: &[u8]) -> Result<Curve25519PublicKey, E2eError> {
    let key = Curve25519PublicKey::from_bytes(key_bytes(what, bytes)?);
    check_contributory(what, key)?;
    Ok(key)
}

/// Refuses low-order points: a Diffie-Hellman with one gives a constant, known to anyone.
/// x25519-dalek answers this (`was_contributory`); we do no curve arithmetic of our own.
fn check_contributory(what: &'static str, key: Curve25519PublicKey) -> Result<(), E2eError> {
    let probe = x25519_dalek::EphemeralSecret::random()
        .diffie_hellman(&x25519_dalek::PublicKey::from(key.to_bytes()));
    if probe.was_contributory() {
        Ok(())
    } else {
        Err(E2eError::InvalidKey { what })
    }
}

/// A vodozemac one-time or fallback key as published. The id is vodozemac's own text form
/// of its key counter (base64, about 11 bytes), unique per account.
fn wire_key(id: vodozemac::KeyId, key: Curve25519PublicKey) -> OneTimeKey {
    OneTimeKey {
        key_id: id.to_base64().into_bytes(),
        public_key: key.to_vec(),
    }
}

fn identity_changed(peer: &str, device: u32) -> E2eError {
    E2eError::IdentityChanged {
        peer: peer.to_owned(),
        device,
    }
}
