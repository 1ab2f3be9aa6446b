//! The browser companion's session, sans I/O: what the CLI client's `Client` does, driven by
//! bytes instead of sockets, so the page's JavaScript only moves WebSocket messages and
//! shows events.
//!
//! Owns the device's state (Noise static key, pairing secret, account and device, token,
//! pinned relay key, Olm account and sessions, known device lists, the outbox of messages not
//! yet acknowledged by the relay) and the connection's protocol state (handshake, requests
//! matched to answers by `req_id`). Does not own the WebSocket, storage or the clock: the page
//! passes bytes and times in, takes frames ([`Companion::take_outgoing`]) and events
//! ([`Companion::take_events`]) out, and stores [`Companion::save`] (encrypted) after every
//! call, before it sends what the call produced: an `Ack` deletes the relay's copy.
//!
//! Every input from the network is checked; a frame that cannot be read becomes an
//! [`Event::BadFrame`] and the session goes on.

use std::collections::{BTreeSet, HashMap, VecDeque};

use base64::Engine as _;
use relaybox_core::e2e::payload::{HistoryEntry, Media};
use relaybox_core::e2e::{E2e, E2ePickle};
use relaybox_core::wire::handshake::{ClientIk, ClientXx, StaticKeypair, Transport};
use relaybox_core::wire::messages::{client_frame, Ack, ClientFrame, DeviceKeys, Login};
use relaybox_core::wire::ProtocolError;
use serde::{Deserialize, Serialize};

mod connection;
mod frames;
mod groups;
mod media;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
mod trust;

/// Prefix of a pairing code (the CLI's `relaybox client link` reads the same format).
pub const PAIRING_PREFIX: &str = "rbx1:";
/// One-time keys published at link time and on each keys-low notice.
pub const ONE_TIME_KEYS_BATCH: usize = 50;
/// Times a send is re-encrypted after a mismatched-devices answer.
const MISMATCH_RETRIES: u32 = 3;
/// Message ids remembered to hide redeliveries.
const SEEN_IDS: usize = 2048;
/// Layout version of [`Stored`].
const STATE_VERSION: u32 = 1;
/// Longest text the page may send, in bytes (the inner message's own limit).
pub const MAX_TEXT_BYTES: usize = relaybox_core::e2e::payload::MAX_BODY_BYTES;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Something the page shows. Serialised as JSON with a `type` tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The primary linked this browser: it is now `device` of `account`.
    Linked { account: String, device: u32 },
    /// Logged in (after a link, a reload or a reconnect).
    Ready {
        account: String,
        device: u32,
        resumed: bool,
    },
    /// Not linked yet: the relay does not know this key. Try again shortly.
    WaitingForLink,
    /// The resumption was refused (stale token, new relay key): reconnect, with a full
    /// handshake this time.
    Reconnect,
    /// A text (or a payload this build cannot show, `body` empty and `kind` "unknown").
    Message {
        thread: String,
        from: String,
        from_device: u32,
        msg_id: String,
        at_ms: u64,
        kind: &'static str,
        body: String,
        group: Option<String>,
        muted: bool,
        reply_to: Option<String>,
        /// For `kind` "media": its segments, thumbnail first, its blob id, and the original
        /// message this re-sends after a recall.
        segments: Vec<media::SegmentInfo>,
        blob: Option<String>,
        resend_of: Option<String>,
    },
    /// Recent history from the account's primary.
    History { entries: Vec<HistoryEntry> },
    /// The relay stored a message of ours (one tick).
    Sent { msg_id: String, timestamp_ms: u64 },
    /// A message of ours could not be sent.
    SendFailed { msg_id: String, error: String },
    /// Delivered / read / played ticks.
    Receipt {
        from: String,
        kind: &'static str,
        msg_ids: Vec<String>,
    },
    /// Recent history from the account's primary waits in an encrypted blob: fetch it like
    /// media (`request_media`, then `open_history`).
    HistoryBlob { msg_id: String },
    /// Where to fetch the media of `msg_id` (path and query on this origin; add `&seg=N`).
    MediaUrl { msg_id: String, url: String },
    /// A thread's mute changed (`until_ms` 0 and not `forever`: unmuted).
    Muted {
        thread: String,
        until_ms: u64,
        forever: bool,
    },
    /// A group's subject and members (after the page or a send asked the relay).
    GroupInfo {
        group: String,
        subject: String,
        members: Vec<String>,
    },
    /// Typing, recording, stopped.
    ChatState {
        from: String,
        state: &'static str,
        group: Option<String>,
    },
    Presence {
        account: String,
        available: bool,
        last_seen_ms: u64,
    },
    /// A group changed.
    Group {
        group: String,
        actor: String,
        op: String,
        accounts: Vec<String>,
        subject: String,
    },
    /// A message that arrived but could not be decrypted or read.
    Undecryptable {
        from: String,
        msg_id: String,
        error: String,
    },
    /// A frame from the relay that could not be read; the session goes on.
    BadFrame { error: String },
    /// The relay refused or ended the session, or answered a request with an error.
    /// `code` is the wire's name (e.g. `ERROR_CODE_UNKNOWN_DEVICE`).
    RelayError {
        code: String,
        message: String,
        retry_after_ms: u64,
    },
    /// The safety number with `account` (after `verify_contact`): 60 digits, grouped for
    /// reading aloud, as a QR code, and the devices whose key changed (not accepted).
    SafetyNumber {
        account: String,
        digits: String,
        grouped: String,
        qr_svg: String,
        changed: Vec<u32>,
    },
    /// A device of `account` presented a new identity key: its messages are held, and
    /// messages to it refused, until the user accepts it (`accept_key`).
    KeyChanged {
        account: String,
        device: u32,
        warning: String,
    },
    /// This device was unlinked (or logged out): its state is gone.
    LoggedOut { reason: String },
}

/// A message the user sent that the relay has not acknowledged yet; kept across reloads and
/// reconnects and re-sent with the same `msg_id`.
#[derive(Clone, Serialize, Deserialize)]
struct Outgoing {
    msg_id: [u8; 16],
    to: String,
    /// The encoded inner message (encrypted anew per attempt).
    inner: Vec<u8>,
    #[serde(default)]
    attempts: u32,
    /// `to` is a group id: one envelope per device of every member.
    #[serde(default)]
    group: bool,
}

/// Prefix of group ids (accounts start with `+` or `@`).
pub const GROUP_ID_PREFIX: char = 'g';

/// What the page stores, encrypted, between visits.
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    noise_private: [u8; 32],
    link_secret: Option<Vec<u8>>,
    account: Option<String>,
    device: u32,
    token: Option<Vec<u8>>,
    relay_key: Option<[u8; 32]>,
    keys_published: bool,
    e2e: E2ePickle,
    peers: HashMap<String, Vec<u32>>,
    outbox: Vec<Outgoing>,
    seen: VecDeque<[u8; 16]>,
    #[serde(default)]
    media: Vec<(String, Media)>,
    #[serde(default)]
    changed: BTreeSet<(String, u32)>,
    #[serde(default)]
    held: Vec<Vec<u8>>,
}

/// The connection's protocol state.
enum Conn {
    Closed,
    /// XX message 1 sent; `login` goes in message 3.
    XxSent {
        state: ClientXx,
        login: Login,
    },
    /// XX message 3 sent; the relay's `LoginResult` is the first transport message.
    XxResult {
        transport: Transport,
        relay_key: [u8; 32],
    },
    /// IK message 1 sent.
    IkSent {
        state: ClientIk,
    },
    Ready {
        transport: Transport,
    },
}

/// What an outstanding request was for.
enum Pending {
    UploadKeys,
    Devices {
        msg_id: [u8; 16],
    },
    Claim {
        msg_id: [u8; 16],
    },
    Send {
        msg_id: [u8; 16],
    },
    /// A group's members and their devices, for a send (`msg_id`) or just to show it.
    Group {
        msg_id: Option<[u8; 16]>,
    },
    /// Key claims for a group send, one member account at a time: the ones still to claim.
    GroupClaim {
        msg_id: [u8; 16],
        rest: Vec<(String, Vec<u32>)>,
    },
    /// A media download URL.
    Download {
        msg_id: String,
    },
    /// This device's own unlink ("log out").
    LogOut,
    /// A safety number: our own account's devices, then their keys, then the peer's keys.
    VerifyOwnDevices {
        peer: String,
    },
    VerifyOwnKeys {
        peer: String,
    },
    VerifyPeerKeys {
        peer: String,
        mine: Vec<(u32, [u8; 32])>,
    },
    /// Receipts and the like: only an error is worth showing.
    Other,
}

/// Why the page's call failed (shown to the user as text).
#[derive(Debug, PartialEq, Eq)]
pub struct WebError(pub String);

impl std::fmt::Display for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ProtocolError> for WebError {
    fn from(e: ProtocolError) -> Self {
        Self(e.to_string())
    }
}

/// One browser device.
pub struct Companion {
    noise: StaticKeypair,
    link_secret: Option<Vec<u8>>,
    account: Option<String>,
    device: u32,
    token: Option<Vec<u8>>,
    relay_key: Option<[u8; 32]>,
    keys_published: bool,
    e2e: E2e,
    peers: HashMap<String, Vec<u32>>,
    outbox: Vec<Outgoing>,
    seen: VecDeque<[u8; 16]>,
    /// Media pointers and keys of received messages, oldest first.
    media: Vec<(String, Media)>,
    /// Peer devices whose identity key changed, not yet accepted.
    changed: BTreeSet<(String, u32)>,
    /// Deliveries from those devices (protobuf), held undecrypted until accepted.
    held: Vec<Vec<u8>>,
    /// Members of groups this device sent to, by group id (asked again after a change).
    groups: HashMap<String, Vec<String>>,
    /// Keys claimed for a group send in progress, by msg_id.
    claimed: HashMap<[u8; 16], HashMap<(String, u32), DeviceKeys>>,
    /// The next connection skips IK (it was refused).
    force_xx: bool,
    conn: Conn,
    next_req_id: u64,
    pending: HashMap<u64, Pending>,
    /// Queue seqs processed but not yet acknowledged.
    unacked: Vec<u64>,
    out: VecDeque<Vec<u8>>,
    events: Vec<Event>,
}

impl Default for Companion {
    fn default() -> Self {
        Self::new()
    }
}

impl Companion {
    /// A new, unlinked browser device with fresh keys.
    pub fn new() -> Self {
        Self {
            noise: StaticKeypair::generate(),
            link_secret: None,
            account: None,
            device: 0,
            token: None,
            relay_key: None,
            keys_published: false,
            e2e: E2e::new(),
            peers: HashMap::new(),
            outbox: Vec::new(),
            seen: VecDeque::new(),
            media: Vec::new(),
            changed: BTreeSet::new(),
            held: Vec::new(),
            groups: HashMap::new(),
            claimed: HashMap::new(),
            force_xx: false,
            conn: Conn::Closed,
            next_req_id: 1,
            pending: HashMap::new(),
            unacked: Vec::new(),
            out: VecDeque::new(),
            events: Vec::new(),
        }
    }

    /// The device as [`Companion::save`] left it.
    pub fn restore(bytes: &[u8]) -> Result<Self, WebError> {
        let s: Stored = serde_json::from_slice(bytes)
            .map_err(|e| WebError(format!("the stored device is unreadable: {e}")))?;
        if s.version != STATE_VERSION {
            return Err(WebError(format!(
                "the stored device has layout {} (this page reads {STATE_VERSION})",
                s.version
            )));
        }
        let e2e = E2e::from_pickle(s.e2e)
            .map_err(|e| WebError(format!("the stored keys are unreadable: {e}")))?;
        Ok(Self {
            noise: StaticKeypair::from_private(s.noise_private),
            link_secret: s.link_secret,
            account: s.account,
            device: s.device,
            token: s.token,
            relay_key: s.relay_key,
            keys_published: s.keys_published,
            e2e,
            peers: s.peers,
            outbox: s.outbox,
            seen: s.seen,
            media: s.media,
            changed: s.changed,
            held: s.held,
            ..Self::new()
        })
    }

    /// Everything to keep between visits (secrets included: store it encrypted).
    pub fn save(&self) -> Vec<u8> {
        let s = Stored {
            version: STATE_VERSION,
            noise_private: self.noise.private,
            link_secret: self.link_secret.clone(),
            account: self.account.clone(),
            device: self.device,
            token: self.token.clone(),
            relay_key: self.relay_key,
            keys_published: self.keys_published,
            e2e: self.e2e.to_pickle(),
            peers: self.peers.clone(),
            outbox: self.outbox.clone(),
            seen: self.seen.clone(),
            media: self.media.clone(),
            changed: self.changed.clone(),
            held: self.held.clone(),
        };
        // Plain structs, strings, integers and byte arrays always serialise.
        serde_json::to_vec(&s).unwrap_or_default()
    }

    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    pub fn device(&self) -> u32 {
        self.device
    }

    /// Messages typed but not yet acknowledged by the relay.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// The pairing code to show (and to type into `relaybox client link`): `rbx1:` and the
    /// base64 of this device's Noise public key and a one-time secret. `None` once linked.
    pub fn pairing_code(&mut self) -> Option<String> {
        if self.account.is_some() {
            return None;
        }
        let secret = self
            .link_secret
            .get_or_insert_with(|| rand::random::<[u8; 16]>().to_vec())
            .clone();
        let mut raw = self.noise.public.to_vec();
        raw.extend_from_slice(&secret);
        Some(format!("{PAIRING_PREFIX}{}", B64.encode(raw)))
    }

    /// Whether the session is logged in.
    pub fn is_ready(&self) -> bool {
        matches!(self.conn, Conn::Ready { .. })
    }

    /// The next WebSocket message to send.
    pub fn take_outgoing(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Sends a frame; requests get a `req_id` and a note of what they were for.
    fn send_frame(&mut self, body: client_frame::Body, pending: Option<Pending>) {
        let Conn::Ready { transport } = &mut self.conn else {
            return;
        };
        let req_id = match pending {
            Some(p) => {
                let id = self.next_req_id;
                self.next_req_id += 1;
                self.pending.insert(id, p);
                id
            }
            None => 0,
        };
        match transport.encrypt(&ClientFrame {
            req_id,
            body: Some(body),
        }) {
            Ok(bytes) => self.out.push_back(bytes),
            Err(e) => self.events.push(Event::BadFrame {
                error: format!("could not encrypt a frame: {e}"),
            }),
        }
    }

    fn upload_keys(&mut self) {
        let keys = self.e2e.keys_to_upload(ONE_TIME_KEYS_BATCH);
        self.send_frame(
            client_frame::Body::UploadKeys(keys),
            Some(Pending::UploadKeys),
        );
    }

    /// "Log out": asks the relay to unlink this device (the relay then ends the session and
    /// tells the account's other devices). The page forgets its state on
    /// [`Event::LoggedOut`], or when the connection closes first.
    pub fn log_out(&mut self) {
        if self.is_ready() {
            let u = relaybox_core::wire::messages::UnlinkDevice {
                device: self.device,
            };
            self.send_frame(client_frame::Body::UnlinkDevice(u), Some(Pending::LogOut));
        } else {
            self.logged_out(
                "logged out on this page while offline; unlink it from the phone too".into(),
            );
        }
    }

    /// Acknowledges the queue items just processed. The page saves the state (with the
    /// ratchets that decrypted them) before it sends this.
    fn flush_acks(&mut self) {
        let seqs = std::mem::take(&mut self.unacked);
        if !seqs.is_empty() {
            self.send_frame(client_frame::Body::Ack(Ack { seqs }), None);
        }
    }
}
