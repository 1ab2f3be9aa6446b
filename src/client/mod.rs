//! The client SDK: a device's state ([`state::State`]), its connection ([`connection`]) and the
//! operations a chat client needs (register, verify, send, receive, receipts, chat states),
//! with end-to-end encryption by the `e2e` layer. The relay only ever sees ciphertext.
//! `cli` turns these into `relaybox client …` commands.

pub mod cli;
pub mod connection;
pub mod devices;
pub mod entities;
pub mod entity_cli;
mod groups;
pub mod media;
pub mod settings;
pub mod state;
pub mod transport;
pub mod trust;

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use anyhow::{bail, Context as _};

use crate::e2e::payload::{HistoryEntry, Inner, Payload};
use crate::e2e::E2eError;
use crate::ids::MsgId;
use crate::wire::messages::{
    client_frame, server_frame, Ack, ChatState, ClaimKeys, CodeSent, DeviceKeys, Envelope,
    ErrorCode, GetDevices, GetStatus, GroupOp, MessageKind, ReceiptKind, RequestCode, Send,
    SendChatState, SendReceipt, ServerAck, Status, Verified, VerifyCode,
};
use connection::{ClientError, Connection, Identity};
use state::State;
use transport::TransportKind;

/// One-time keys uploaded at registration and on each keys-low notice.
pub const ONE_TIME_KEYS_BATCH: usize = 50;
/// Times a send is retried after a mismatched-devices answer.
const MISMATCH_RETRIES: usize = 3;

/// Something that arrived for this device.
#[derive(Debug, Clone)]
pub enum Event {
    Message {
        from: String,
        from_device: u32,
        msg_id: MsgId,
        timestamp_ms: u64,
        inner: Inner,
        /// The group, for a group message.
        group: Option<String>,
        /// The user muted this thread: show it silently.
        muted: bool,
        /// A business-entity thread: which entity, which customer, and (for a customer) the
        /// agent who answered.
        entity: Option<entities::EntityVia>,
    },
    /// A message that could not be decrypted (shown so the user knows something was lost).
    Undecryptable {
        from: String,
        from_device: u32,
        msg_id: MsgId,
        error: String,
    },
    Receipt {
        from: String,
        kind: ReceiptKind,
        msg_ids: Vec<MsgId>,
    },
    ChatState {
        from: String,
        state: ChatState,
        group: Option<String>,
    },
    /// A group changed (someone was added, removed, promoted, left, or the subject changed).
    Group {
        group: String,
        actor: String,
        op: GroupOp,
        accounts: Vec<String>,
        subject: String,
    },
    /// A device of `account` presented a new identity key. Its messages are held, and messages
    /// to it refused, until the user accepts the key ([`trust`]).
    KeyChanged { account: String, device: u32 },
    /// A correspondent's device list changed.
    DevicesChanged { account: String, devices: Vec<u32> },
    /// A contact came online or went offline.
    Presence {
        account: String,
        available: bool,
        last_seen_ms: u64,
    },
    /// Recent history arrived from the account's primary (this is a newly linked device).
    History { from: String, entries: usize },
    /// The administrator of `entity` assigned `customer`'s thread to this account and handed
    /// over its recent history.
    Handover {
        entity: String,
        customer: String,
        from: String,
        entries: usize,
    },
    /// A customer thread of an entity this account serves changed hands.
    EntityRouting {
        entity: String,
        customer: String,
        kind: crate::wire::messages::EntityEventKind,
        agent: String,
        actor: String,
    },
}

/// A client: its state plus, once connected, its connection.
pub struct Client {
    pub state: State,
    conn: Option<Connection>,
    /// Events decoded but not yet returned by `next_event`.
    ready: VecDeque<Event>,
    /// Queue seqs processed but not yet acknowledged to the relay.
    unacked: Vec<u64>,
    /// The relay asked for more one-time keys.
    keys_low: bool,
    /// History blobs announced by our primary, to download before the next event.
    history_blobs: Vec<devices::HistoryPointer>,
    /// Deliveries of a msg_id this client had already seen (the relay redelivers what was not
    /// acknowledged before a reconnect or a crash); hidden from the application, counted for
    /// the crash-loop checker and `relaybox bench`.
    pub redeliveries: u64,
}

impl Client {
    /// Opens the client in `home`. `relay` overrides the saved relay address.
    pub fn open(home: &Path, relay: Option<&str>) -> anyhow::Result<Self> {
        let mut state = State::load_or_new(home, relay.unwrap_or(cli::DEFAULT_RELAY))?;
        if let Some(r) = relay {
            state.relay = r.to_owned();
        }
        Ok(Self {
            state,
            conn: None,
            ready: VecDeque::new(),
            unacked: Vec::new(),
            keys_low: false,
            history_blobs: Vec::new(),
            redeliveries: 0,
        })
    }

    /// Chooses the transport (and, for WebSocket and chunked HTTP, the relay's HTTP base URL);
    /// remembered with the state at the next save.
    pub fn use_transport(&mut self, kind: TransportKind, http: Option<&str>) {
        self.state.transport = kind;
        if let Some(url) = http {
            self.state.http = Some(url.to_owned());
        }
        self.disconnect();
    }

    /// The transport of the live connection, if connected.
    pub fn connected_over(&self) -> Option<TransportKind> {
        self.conn.as_ref().map(Connection::transport)
    }

    /// Pins the relay's static key out of band (an operator published it).
    pub fn pin_relay_key(&mut self, key: [u8; 32]) {
        self.state.relay_key = Some(key);
    }

    async fn connect_as(&mut self, who: Identity) -> anyhow::Result<()> {
        let (conn, est) = Connection::connect_to(
            &self.state.target(),
            &self.state.noise,
            self.state.relay_key,
            &who,
        )
        .await?;
        if let Some(old) = self.state.relay_key {
            if old != est.relay_key {
                tracing::warn!(
                    pinned = %hex::encode(old),
                    presented = %hex::encode(est.relay_key),
                    "The relay's key changed since this client pinned it."
                );
            }
        }
        self.state.relay_key = Some(est.relay_key);
        if self.state.transport == TransportKind::Http
            && conn.transport() == TransportKind::HttpSplit
        {
            // Something on the way buffers request bodies: skip the probe from now on.
            tracing::info!("The chunked HTTP stream is held back on the way to the relay; using split mode from now on.");
            self.state.transport = TransportKind::HttpSplit;
        }
        if matches!(who, Identity::Device { .. }) {
            self.state.token = Some(est.token);
        }
        self.state.save()?;
        self.conn = Some(conn);
        Ok(())
    }

    /// The live device connection, connecting (IK, else XX) if needed.
    pub async fn conn(&mut self) -> anyhow::Result<&mut Connection> {
        if self.conn.is_none() {
            let who = Identity::Device {
                account: self.state.account()?.to_owned(),
                device: self.state.device,
                token: self.state.token.clone(),
            };
            self.connect_as(who).await?;
        }
        self.conn.as_mut().context("not connected")
    }

    /// Drops the connection (the next call reconnects).
    pub fn disconnect(&mut self) {
        self.conn = None;
        // Unsent acks die with the session: the relay redelivers, and `first_sight` hides the
        // repeats.
        self.unacked.clear();
    }

    /// Asks the relay to send a verification code to `phone`.
    pub async fn register(&mut self, phone: &str) -> anyhow::Result<CodeSent> {
        self.connect_as(Identity::Register).await?;
        let body = client_frame::Body::RequestCode(RequestCode {
            phone: phone.to_owned(),
        });
        let answer = self
            .conn
            .as_mut()
            .context("not connected")?
            .request(body)
            .await?;
        self.conn = None;
        match answer {
            server_frame::Body::CodeSent(c) => Ok(c),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Proves ownership of `phone` with `code`; this client becomes the account's primary
    /// device and publishes its end-to-end keys.
    pub async fn verify(&mut self, phone: &str, code: &str) -> anyhow::Result<Verified> {
        self.connect_as(Identity::Register).await?;
        let body = client_frame::Body::VerifyCode(VerifyCode {
            phone: phone.to_owned(),
            code: code.to_owned(),
        });
        let conn = self.conn.as_mut().context("not connected")?;
        let v = match conn.request(body).await? {
            server_frame::Body::Verified(v) => v,
            other => bail!("unexpected answer {other:?}"),
        };
        self.state.account = Some(v.account.clone());
        self.state.device = v.device;
        self.state.token = Some(v.token.clone());
        self.state.save()?;
        self.upload_keys().await?;
        Ok(v)
    }

    /// Publishes a batch of one-time keys (and the identity and fallback keys if new).
    pub async fn upload_keys(&mut self) -> anyhow::Result<u32> {
        let keys = self.state.e2e.keys_to_upload(ONE_TIME_KEYS_BATCH);
        let answer = self
            .conn()
            .await?
            .request(client_frame::Body::UploadKeys(keys))
            .await?;
        self.state.save()?;
        match answer {
            server_frame::Body::KeysUploaded(k) => Ok(k.one_time_keys),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Sends a text message to every device of `to`.
    pub async fn send_text(&mut self, to: &str, text: &str) -> anyhow::Result<(MsgId, ServerAck)> {
        let inner = Inner::new(
            crate::clock::now_ms(),
            Payload::Text {
                body: text.to_owned(),
            },
        );
        let msg_id = MsgId::random();
        let ack = self.send_inner(to, msg_id, &inner).await?;
        self.remember_sent(to, &inner);
        Ok((msg_id, ack))
    }

    /// Encrypts `inner` once per device of `to` and sends it with `msg_id` (a retry with the
    /// same id is idempotent). Follows the relay's mismatched-devices answers.
    pub async fn send_inner(
        &mut self,
        to: &str,
        msg_id: MsgId,
        inner: &Inner,
    ) -> anyhow::Result<ServerAck> {
        self.send_to_account(to, msg_id, inner, MessageKind::Chat, &HashMap::new())
            .await
    }

    async fn send_to_account(
        &mut self,
        to: &str,
        msg_id: MsgId,
        inner: &Inner,
        kind: MessageKind,
        bundles: &HashMap<(String, u32), DeviceKeys>,
    ) -> anyhow::Result<ServerAck> {
        let plaintext = inner.encode();
        for _ in 0..=MISMATCH_RETRIES {
            let mut devices = self.devices_of(to).await?;
            if to == self.state.account()? {
                let me = self.state.device;
                devices.retain(|&d| d != me);
            }
            let envelopes = self
                .encrypt_for(&[(to.to_owned(), devices)], &plaintext, false, bundles)
                .await?;
            let send = Send {
                msg_id: msg_id.0.to_vec(),
                to: to.to_owned(),
                envelopes,
                kind: kind as i32,
                group: String::new(),
                on_behalf_of: String::new(),
                blobs: inner.blobs(),
            };
            match self
                .conn()
                .await?
                .request(client_frame::Body::Send(send))
                .await
            {
                Ok(server_frame::Body::ServerAck(ack)) => return Ok(ack),
                Ok(other) => bail!("unexpected answer {other:?}"),
                Err(ClientError::Relay(e)) if e.code() == ErrorCode::MismatchedDevices => {
                    let mut devices = e.devices.clone();
                    if to == self.state.account()? {
                        devices.push(self.state.device);
                        devices.sort_unstable();
                    }
                    self.set_devices(to, devices);
                }
                Err(e) => return Err(e.into()),
            }
        }
        bail!("the recipient's devices kept changing; try again")
    }

    /// The known devices of `account`, asking the relay if this client knows none.
    async fn devices_of(&mut self, account: &str) -> anyhow::Result<Vec<u32>> {
        if let Some(d) = self.state.peers.get(account) {
            return Ok(d.clone());
        }
        let req = GetDevices {
            account: account.to_owned(),
        };
        match self
            .conn()
            .await?
            .request(client_frame::Body::GetDevices(req))
            .await?
        {
            server_frame::Body::Devices(d) => {
                self.set_devices(account, d.devices.clone());
                Ok(d.devices)
            }
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Records a peer's device list, forgetting sessions with devices that are gone.
    fn set_devices(&mut self, account: &str, devices: Vec<u32>) {
        if let Some(old) = self.state.peers.get(account) {
            for d in old.clone() {
                if !devices.contains(&d) {
                    self.state.e2e.forget(account, d);
                }
            }
        }
        self.state.peers.insert(account.to_owned(), devices);
    }

    /// One envelope per (account, device), claiming keys and starting sessions where needed.
    /// `bundles` holds keys claimed already (history transfer).
    async fn encrypt_for(
        &mut self,
        targets: &[(String, Vec<u32>)],
        plaintext: &[u8],
        group: bool,
        bundles: &HashMap<(String, u32), DeviceKeys>,
    ) -> anyhow::Result<Vec<Envelope>> {
        let mut envelopes = Vec::new();
        for (account, devices) in targets {
            let missing: Vec<u32> = devices
                .iter()
                .copied()
                .filter(|&d| {
                    (!self.state.e2e.has_session(account, d) || self.must_recheck(account, d))
                        && !bundles.contains_key(&(account.clone(), d))
                })
                .collect();
            let mut claimed: HashMap<u32, DeviceKeys> = HashMap::new();
            if !missing.is_empty() {
                for dk in self.claim(account, &missing).await? {
                    claimed.insert(dk.device, dk);
                }
            }
            for &d in devices {
                if self.is_changed(account, d) {
                    // Refused until the user accepts the new key; in a group the device is
                    // left out rather than stopping the message to everyone else.
                    if group {
                        tracing::warn!(account = %account, device = d, "Group member device has a changed identity key; left out until it is accepted.");
                        continue;
                    }
                    bail!("{}", trust::key_changed_warning(account, d));
                }
                let has_session = self.state.e2e.has_session(account, d);
                let supplied = bundles
                    .get(&(account.clone(), d))
                    .or_else(|| claimed.get(&d));
                let bundle = if has_session && !self.must_recheck(account, d) {
                    None
                } else if has_session {
                    // A re-check: with the session, a bundle is only compared with the pinned
                    // key. A device that published no keys keeps its session.
                    supplied
                } else {
                    // In a group, a device without usable keys is left out (the relay allows
                    // it) rather than stopping the message to everyone else.
                    if supplied.is_none() && group {
                        tracing::warn!(account = %account, device = d, "Group member device has no published keys; left out.");
                        continue;
                    }
                    if supplied.is_none() {
                        bail!("device {d} of {account} has not published its keys yet; try again shortly");
                    }
                    supplied
                };
                let mut env = match self.state.e2e.encrypt(account, d, bundle, plaintext) {
                    Ok(env) => {
                        if bundle.is_some() {
                            self.state.trust.recheck.remove(&(account.clone(), d));
                        }
                        env
                    }
                    Err(E2eError::IdentityChanged { .. }) => {
                        let peer = (account.clone(), d);
                        self.state.trust.recheck.remove(&peer);
                        self.state.trust.changed.insert(peer);
                        self.state.save()?;
                        if group {
                            tracing::warn!(account = %account, device = d, "Group member device has a changed identity key; left out until it is accepted.");
                            continue;
                        }
                        bail!("{}", trust::key_changed_warning(account, d));
                    }
                    Err(e) if group && bundle.is_some() => {
                        tracing::warn!(account = %account, device = d, error = %e, "Group member device's keys are unusable; left out.");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                if group {
                    env.account = account.clone();
                }
                envelopes.push(env);
            }
        }
        self.state.save()?;
        Ok(envelopes)
    }

    /// Claims one key bundle for each of `devices` of `to` (all if empty).
    async fn claim(&mut self, to: &str, devices: &[u32]) -> anyhow::Result<Vec<DeviceKeys>> {
        let req = ClaimKeys {
            account: to.to_owned(),
            devices: devices.to_vec(),
        };
        match self
            .conn()
            .await?
            .request(client_frame::Body::ClaimKeys(req))
            .await?
        {
            server_frame::Body::ClaimedKeys(c) => Ok(c.devices),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    fn remember_sent(&mut self, thread: &str, inner: &Inner) {
        if let (Payload::Text { body }, Some(me)) = (&inner.payload, self.state.account.clone()) {
            self.state.remember(HistoryEntry {
                thread: thread.to_owned(),
                from: me,
                at_ms: inner.sent_at_ms,
                body: body.clone(),
            });
            let _ = self.state.save();
        }
    }

    /// Waits for the next event, decrypting and acknowledging as it goes.
    ///
    /// Cancel-safe (the chat loop races it against the keyboard): a frame is turned into an
    /// event and a pending ack in one synchronous step, and both survive a cancelled await.
    pub async fn next_event(&mut self) -> anyhow::Result<Event> {
        let r = self.next_event_inner().await;
        if r.is_err() {
            // A failed connection is not reused; the next call reconnects.
            self.disconnect();
        }
        r
    }

    async fn next_event_inner(&mut self) -> anyhow::Result<Event> {
        loop {
            if !self.unacked.is_empty() {
                let seqs = self.unacked.clone();
                let ack = client_frame::Body::Ack(Ack { seqs });
                self.conn().await?.send_only(ack).await?;
                self.unacked.clear();
            }
            for pointer in std::mem::take(&mut self.history_blobs) {
                let event = self.receive_history_blob(pointer).await;
                self.ready.push_back(event);
            }
            if let Some(e) = self.ready.pop_front() {
                return Ok(e);
            }
            let frame = self.conn().await?.next_push().await?;
            if let Some(body) = frame.body {
                self.absorb(body)?;
            }
            if self.keys_low {
                self.keys_low = false;
                self.upload_keys().await?;
            }
        }
    }

    /// Turns one push into events and acks, synchronously. The ratchet state is saved before
    /// the ack is queued: an ack deletes the relay's copy.
    fn absorb(&mut self, body: server_frame::Body) -> anyhow::Result<()> {
        match body {
            server_frame::Body::Deliver(d) => {
                if self.state.first_sight(&d.msg_id) {
                    let event = self.open_delivery(&d);
                    self.ready.extend(event);
                } else {
                    self.redeliveries += 1;
                }
                self.state.save()?;
                self.unacked.push(d.seq);
            }
            server_frame::Body::Receipt(r) => {
                let kind = ReceiptKind::try_from(r.kind).unwrap_or(ReceiptKind::Unspecified);
                let msg_ids = r
                    .msg_ids
                    .iter()
                    .filter_map(|m| MsgId::from_slice(m).ok())
                    .collect();
                self.ready.push_back(Event::Receipt {
                    from: r.from,
                    kind,
                    msg_ids,
                });
                self.unacked.push(r.seq);
            }
            server_frame::Body::ChatState(c) => {
                let state = ChatState::try_from(c.state).unwrap_or(ChatState::Unspecified);
                let group = (!c.group.is_empty()).then_some(c.group);
                self.ready.push_back(Event::ChatState {
                    from: c.from,
                    state,
                    group,
                });
            }
            server_frame::Body::GroupEvent(g) => {
                let op = GroupOp::try_from(g.op).unwrap_or(GroupOp::Unspecified);
                let me = self.state.account.clone().unwrap_or_default();
                let gone = matches!(op, GroupOp::Remove | GroupOp::Leave)
                    && (g.accounts.contains(&me) || (op == GroupOp::Leave && g.actor == me));
                if gone {
                    self.state.groups.remove(&g.group);
                } else {
                    // Fetched again (with devices) before the next send to the group.
                    self.state.groups.remove(&g.group);
                }
                self.state.save()?;
                self.ready.push_back(Event::Group {
                    group: g.group,
                    actor: g.actor,
                    op,
                    accounts: g.accounts,
                    subject: g.subject,
                });
                self.unacked.push(g.seq);
            }
            server_frame::Body::DevicesChanged(c) => {
                self.recheck_keys(&c.account, &c.devices);
                self.set_devices(&c.account, c.devices.clone());
                self.state.save()?;
                self.ready.push_back(Event::DevicesChanged {
                    account: c.account,
                    devices: c.devices,
                });
                self.unacked.push(c.seq);
            }
            server_frame::Body::Presence(p) => {
                self.ready.push_back(Event::Presence {
                    account: p.account,
                    available: p.available,
                    last_seen_ms: p.last_seen_ms,
                });
            }
            server_frame::Body::EntityEvent(e) => {
                self.ready.push_back(Event::EntityRouting {
                    kind: crate::wire::messages::EntityEventKind::try_from(e.kind)
                        .unwrap_or(crate::wire::messages::EntityEventKind::Unspecified),
                    entity: e.entity,
                    customer: e.customer,
                    agent: e.agent,
                    actor: e.actor,
                });
                self.unacked.push(e.seq);
            }
            server_frame::Body::KeysLow(_) => self.keys_low = true,
            _ => {}
        }
        Ok(())
    }

    /// Decrypts one delivery into what it means to the user. A delivery from a device whose
    /// identity key changed is held until the user accepts the key ([`trust`]).
    fn open_delivery(&mut self, d: &crate::wire::messages::Deliver) -> Option<Event> {
        let msg_id = MsgId::from_slice(&d.msg_id).unwrap_or(MsgId([0; 16]));
        let (peer, peer_device) = d.encrypted_by();
        if self.is_changed(peer, peer_device) {
            return Some(self.hold(d));
        }
        let decrypted = self
            .state
            .e2e
            .decrypt(peer, peer_device, d.olm_type, &d.ciphertext)
            .and_then(|plain| Inner::decode(&plain));
        match decrypted {
            Ok(inner) => self.received(d, msg_id, inner),
            Err(E2eError::IdentityChanged { .. }) => Some(self.hold(d)),
            Err(e) => Some(undecryptable(&d.from, d.from_device, msg_id, e.to_string())),
        }
    }

    /// What a decrypted message means to the user; history from our own primary is merged.
    fn received(
        &mut self,
        d: &crate::wire::messages::Deliver,
        msg_id: MsgId,
        inner: Inner,
    ) -> Option<Event> {
        if !d.entity.is_empty() {
            return self.received_entity(d, msg_id, inner);
        }
        let group = (!d.group.is_empty()).then(|| d.group.clone());
        match &inner.payload {
            Payload::History { .. } | Payload::HistoryBlob { .. }
                if Some(&d.from) != self.state.account.as_ref() =>
            {
                // Only the account's own devices may hand it history.
                return Some(undecryptable(
                    &d.from,
                    d.from_device,
                    msg_id,
                    "history from another account ignored".into(),
                ));
            }
            Payload::HistoryBlob {
                blob,
                size,
                key,
                entries,
            } => {
                self.history_blobs.push(devices::HistoryPointer {
                    from: d.from.clone(),
                    from_device: d.from_device,
                    msg_id,
                    blob: blob.clone(),
                    size: *size,
                    key: key.clone(),
                    entries: *entries,
                });
                return None;
            }
            Payload::Media(_) | Payload::Recall { .. } => {}
            Payload::History { entries, .. } => {
                if Some(&d.from) != self.state.account.as_ref() {
                    // Only the account's own devices may hand it history.
                    return Some(undecryptable(
                        &d.from,
                        d.from_device,
                        msg_id,
                        "history from another account ignored".into(),
                    ));
                }
                for e in entries {
                    if !self.state.history.contains(e) {
                        self.state.remember(e.clone());
                    }
                }
                return Some(Event::History {
                    from: d.from.clone(),
                    entries: entries.len(),
                });
            }
            Payload::Text { body } => {
                let thread = group.clone().unwrap_or_else(|| d.from.clone());
                self.state.remember(HistoryEntry {
                    thread,
                    from: d.from.clone(),
                    at_ms: inner.sent_at_ms,
                    body: body.clone(),
                });
            }
            Payload::Unknown => {}
        }
        Some(Event::Message {
            from: d.from.clone(),
            from_device: d.from_device,
            msg_id,
            timestamp_ms: d.timestamp_ms,
            inner,
            group,
            muted: d.muted,
            entity: None,
        })
    }

    /// Tells `to` that its messages were read or played.
    pub async fn receipt(
        &mut self,
        to: &str,
        kind: ReceiptKind,
        msg_ids: &[MsgId],
    ) -> anyhow::Result<()> {
        let r = SendReceipt {
            to: to.to_owned(),
            kind: kind as i32,
            msg_ids: msg_ids.iter().map(|m| m.0.to_vec()).collect(),
        };
        self.conn()
            .await?
            .request(client_frame::Body::Receipt(r))
            .await?;
        Ok(())
    }

    /// Shows `to` that this user is typing, recording or stopped.
    pub async fn chat_state(&mut self, to: &str, state: ChatState) -> anyhow::Result<()> {
        let s = SendChatState {
            group: String::new(),
            to: to.to_owned(),
            state: state as i32,
        };
        self.conn()
            .await?
            .send_only(client_frame::Body::ChatState(s))
            .await?;
        Ok(())
    }

    pub async fn status(&mut self) -> anyhow::Result<Status> {
        match self
            .conn()
            .await?
            .request(client_frame::Body::GetStatus(GetStatus {}))
            .await?
        {
            server_frame::Body::Status(s) => Ok(s),
            other => bail!("unexpected answer {other:?}"),
        }
    }
}

fn undecryptable(from: &str, from_device: u32, msg_id: MsgId, error: String) -> Event {
    Event::Undecryptable {
        from: from.to_owned(),
        from_device,
        msg_id,
        error,
    }
}
