//! What the session does with each frame from the relay, and the user's actions that become
//! frames: sending a text (devices, key claims, encryption per device, mismatched devices),
//! receipts and chat states.

use std::collections::HashMap;

use relaybox_core::e2e::payload::{Inner, Payload};
use relaybox_core::e2e::E2eError;
use relaybox_core::ids::MsgId;
use relaybox_core::wire::messages::{
    client_frame, server_frame, ChatState, ClaimKeys, Deliver, DeviceKeys, ErrorCode, GetDevices,
    GroupOp, MessageKind, Pong, ReceiptKind, Send, SendChatState, SendReceipt, ServerFrame,
};

use super::{
    Companion, Event, Outgoing, Pending, WebError, MAX_TEXT_BYTES, MISMATCH_RETRIES, SEEN_IDS,
};

impl Companion {
    /// One decrypted frame: an answer to a request, or a push.
    pub(super) fn frame(&mut self, f: ServerFrame) {
        if f.req_id != 0 {
            let pending = self.pending.remove(&f.req_id);
            return self.answer(pending, f.body);
        }
        let Some(body) = f.body else {
            return self.events.push(Event::BadFrame {
                error: "an empty frame".into(),
            });
        };
        match body {
            server_frame::Body::Ping(p) => {
                self.send_frame(client_frame::Body::Pong(Pong { nonce: p.nonce }), None)
            }
            server_frame::Body::Closing(e) => self.relay_error(e),
            server_frame::Body::Deliver(d) => {
                let seq = d.seq;
                self.deliver(d);
                self.unacked.push(seq);
            }
            server_frame::Body::Receipt(r) => {
                let kind = match ReceiptKind::try_from(r.kind) {
                    Ok(ReceiptKind::Delivered) => "delivered",
                    Ok(ReceiptKind::Read) => "read",
                    Ok(ReceiptKind::Played) => "played",
                    _ => "unknown",
                };
                self.events.push(Event::Receipt {
                    from: r.from,
                    kind,
                    msg_ids: r.msg_ids.iter().map(hex::encode).collect(),
                });
                self.unacked.push(r.seq);
            }
            server_frame::Body::ChatState(c) => {
                let state = match ChatState::try_from(c.state) {
                    Ok(ChatState::Composing) => "composing",
                    Ok(ChatState::Recording) => "recording",
                    _ => "paused",
                };
                self.events.push(Event::ChatState {
                    from: c.from,
                    state,
                    group: (!c.group.is_empty()).then_some(c.group),
                });
            }
            server_frame::Body::Presence(p) => self.events.push(Event::Presence {
                account: p.account,
                available: p.available,
                last_seen_ms: p.last_seen_ms,
            }),
            server_frame::Body::GroupEvent(g) => {
                let op = GroupOp::try_from(g.op)
                    .map(|o| {
                        o.as_str_name()
                            .trim_start_matches("GROUP_OP_")
                            .to_lowercase()
                    })
                    .unwrap_or_else(|_| "unknown".into());
                self.groups.remove(&g.group);
                self.events.push(Event::Group {
                    group: g.group,
                    actor: g.actor,
                    op,
                    accounts: g.accounts,
                    subject: g.subject,
                });
                self.unacked.push(g.seq);
            }
            server_frame::Body::DevicesChanged(c) => {
                self.set_devices(&c.account, c.devices);
                self.unacked.push(c.seq);
            }
            server_frame::Body::EntityEvent(e) => self.unacked.push(e.seq),
            server_frame::Body::KeysLow(_) => self.upload_keys(),
            other => self.events.push(Event::BadFrame {
                error: format!("an unexpected push ({})", push_name(&other)),
            }),
        }
    }

    /// The answer to the request `pending` was for.
    fn answer(&mut self, pending: Option<Pending>, body: Option<server_frame::Body>) {
        use server_frame::Body as B;
        match (pending, body) {
            (None, _) => self.events.push(Event::BadFrame {
                error: "an answer to no request".into(),
            }),
            (Some(Pending::Send { msg_id }), Some(B::Error(e)))
                if e.code() == ErrorCode::MismatchedDevices =>
            {
                let (to, group) = self
                    .op(msg_id)
                    .map(|o| (o.to.clone(), o.group))
                    .unwrap_or_default();
                if group {
                    for m in e.members {
                        self.set_devices(&m.account, m.devices);
                    }
                    self.groups.remove(&to);
                    let n = self.op_mut(msg_id).map(|o| {
                        o.attempts += 1;
                        o.attempts
                    });
                    return match n {
                        Some(n) if n <= MISMATCH_RETRIES => self.start_send(msg_id),
                        _ => self.fail(msg_id, "the group's devices kept changing"),
                    };
                }
                let mut devices = e.devices;
                if Some(to.as_str()) == self.account.as_deref() {
                    devices.push(self.device);
                    devices.sort_unstable();
                }
                self.set_devices(&to, devices);
                let attempts = self.op_mut(msg_id).map(|o| {
                    o.attempts += 1;
                    o.attempts
                });
                match attempts {
                    Some(n) if n <= MISMATCH_RETRIES => self.claim_and_send(msg_id),
                    _ => self.fail(msg_id, "the recipient's devices kept changing"),
                }
            }
            (Some(Pending::LogOut), Some(B::Error(e))) => self.logged_out(format!(
                "logged out on this page; the relay refused the unlink ({})",
                e.message
            )),
            (Some(p), Some(B::Error(e))) => {
                if let Pending::Devices { msg_id }
                | Pending::Claim { msg_id }
                | Pending::Send { msg_id }
                | Pending::GroupClaim { msg_id, .. }
                | Pending::Group {
                    msg_id: Some(msg_id),
                } = p
                {
                    // Kept for the next login when the relay may do better later.
                    let transient = matches!(
                        e.code(),
                        ErrorCode::Internal | ErrorCode::ShuttingDown | ErrorCode::RateLimited
                    );
                    if !transient {
                        self.fail(
                            msg_id,
                            &format!("{}: {}", e.code().as_str_name(), e.message),
                        );
                        return;
                    }
                }
                self.relay_error(e);
            }
            (Some(Pending::UploadKeys), Some(B::KeysUploaded(_))) => self.keys_published = true,
            (Some(Pending::Devices { msg_id }), Some(B::Devices(d))) => {
                self.set_devices(&d.account, d.devices);
                self.claim_and_send(msg_id);
            }
            (Some(Pending::Claim { msg_id }), Some(B::ClaimedKeys(c))) => {
                let bundles = c.devices.into_iter().map(|d| (d.device, d)).collect();
                self.encrypt_and_send(msg_id, &bundles);
            }
            (Some(Pending::Send { msg_id }), Some(B::ServerAck(a))) => {
                self.outbox.retain(|o| o.msg_id != msg_id);
                self.events.push(Event::Sent {
                    msg_id: hex::encode(msg_id),
                    timestamp_ms: a.timestamp_ms,
                });
            }
            (Some(Pending::Group { msg_id }), Some(B::GroupInfo(g))) => self.group_info(g, msg_id),
            (Some(Pending::GroupClaim { msg_id, rest }), Some(B::ClaimedKeys(c))) => {
                self.group_claimed(msg_id, c, rest)
            }
            (Some(Pending::Download { msg_id }), Some(B::BlobUrl(u))) => self.media_url(msg_id, u),
            (Some(Pending::Other), Some(B::Muted(m))) => self.events.push(Event::Muted {
                thread: m.thread,
                until_ms: m.until_ms,
                forever: m.forever,
            }),
            (Some(Pending::VerifyOwnDevices { peer }), Some(B::Devices(d))) => {
                self.verify_own_devices(peer, d.devices)
            }
            (Some(Pending::VerifyOwnKeys { peer }), Some(B::ClaimedKeys(c))) => {
                self.verify_own_keys(peer, c)
            }
            (Some(Pending::VerifyPeerKeys { peer, mine }), Some(B::ClaimedKeys(c))) => {
                self.verify_peer_keys(peer, mine, c)
            }
            (Some(Pending::LogOut), _) => self.logged_out("you logged out on this page".into()),
            (Some(Pending::Other), _) => {}
            (Some(_), other) => self.events.push(Event::BadFrame {
                error: format!(
                    "an unexpected answer ({})",
                    other.as_ref().map_or("empty", push_name)
                ),
            }),
        }
    }

    /// A delivered message: decrypted, read, shown. Never fails the session.
    fn deliver(&mut self, d: Deliver) {
        let msg_id = hex::encode(&d.msg_id);
        let Ok(id) = <[u8; 16]>::try_from(d.msg_id.as_slice()) else {
            return self.events.push(Event::Undecryptable {
                from: d.from,
                msg_id,
                error: "a message id that is not 16 bytes".into(),
            });
        };
        if self.seen.contains(&id) {
            return; // A redelivery (our ack was lost with the connection).
        }
        if self.seen.len() >= SEEN_IDS {
            self.seen.pop_front();
        }
        self.seen.push_back(id);
        self.open(d);
    }

    /// Decrypts and shows one delivery; one from a device whose key changed is held.
    pub(super) fn open(&mut self, d: Deliver) {
        let msg_id = hex::encode(&d.msg_id);
        let (peer, peer_device) = d.encrypted_by();
        let peer = peer.to_owned();
        if self.is_changed(&peer, peer_device) {
            return self.hold(&d, &peer, peer_device);
        }
        let inner = match self
            .e2e
            .decrypt(&peer, peer_device, d.olm_type, &d.ciphertext)
            .and_then(|plain| Inner::decode(&plain))
        {
            Ok(inner) => inner,
            Err(E2eError::IdentityChanged { .. }) => {
                return self.hold(&d, &peer, peer_device);
            }
            Err(e) => {
                return self.events.push(Event::Undecryptable {
                    from: d.from,
                    msg_id,
                    error: e.to_string(),
                })
            }
        };
        let mine = Some(d.from.as_str()) == self.account.as_deref();
        let group = (!d.group.is_empty()).then(|| d.group.clone());
        if let Some(g) = &group {
            if !self.groups.contains_key(g) {
                // Learn its subject and members (shown in the chat list).
                self.groups.insert(g.clone(), Vec::new());
                self.ask_group(g, None);
            }
        }
        let mut segments = Vec::new();
        let (mut blob, mut resend_of) = (None, None);
        let (kind, body) = match inner.payload {
            Payload::History { entries, .. } if mine => {
                return self.events.push(Event::History { entries });
            }
            Payload::History { .. } | Payload::HistoryBlob { .. } if !mine => {
                return self.events.push(Event::Undecryptable {
                    from: d.from,
                    msg_id,
                    error: "history from another account ignored".into(),
                });
            }
            Payload::HistoryBlob {
                blob, size, key, ..
            } => {
                self.keep_history_blob(&msg_id, blob, size, key);
                return self.events.push(Event::HistoryBlob { msg_id });
            }
            Payload::Text { body } => ("text", body),
            Payload::Media(m) => {
                let n = m.segments.len();
                blob = Some(m.blob.clone());
                resend_of = m.resend_of.clone().filter(|r| r.len() == 32);
                segments = self.keep_media(&msg_id, m);
                ("media", format!("image ({n} sizes)"))
            }
            Payload::Recall { .. } => return,
            _ => ("unknown", String::new()),
        };
        self.events.push(Event::Message {
            thread: group.clone().unwrap_or_else(|| d.from.clone()),
            from: d.from,
            from_device: d.from_device,
            msg_id,
            at_ms: inner.sent_at_ms,
            kind,
            body,
            group,
            muted: d.muted,
            reply_to: inner.reply_to,
            segments,
            blob,
            resend_of,
        });
    }

    /// Queues a text to `to` (an account or a group) and, if connected, sends it. Returns its
    /// msg_id. While offline it waits in the outbox and goes with the same id after the next
    /// login.
    pub fn send_text(
        &mut self,
        to: &str,
        text: &str,
        now_ms: u64,
        reply_to: Option<String>,
    ) -> Result<String, WebError> {
        if text.is_empty() || text.len() > MAX_TEXT_BYTES {
            return Err(WebError(format!(
                "a message has 1 to {MAX_TEXT_BYTES} bytes"
            )));
        }
        let mut inner = Inner::new(
            now_ms,
            Payload::Text {
                body: text.to_owned(),
            },
        );
        inner.reply_to = reply_to.filter(|r| r.len() == 32 && hex::decode(r).is_ok());
        self.queue(to, inner)
    }

    /// Puts `inner` for `to` (an account or a group) in the outbox under a new msg_id and, if
    /// connected, starts sending it.
    pub(super) fn queue(&mut self, to: &str, inner: Inner) -> Result<String, WebError> {
        let group = super::groups::is_group_id(to);
        if !group {
            relaybox_core::ids::AccountId::parse(to).map_err(|e| WebError(e.to_string()))?;
        }
        let msg_id = MsgId::random().0;
        self.outbox.push(Outgoing {
            msg_id,
            to: to.to_owned(),
            inner: inner.encode(),
            attempts: 0,
            group,
        });
        if self.is_ready() {
            self.start_send(msg_id);
        }
        Ok(hex::encode(msg_id))
    }

    /// First step of a send: the recipient's device list, from memory or the relay.
    pub(super) fn start_send(&mut self, msg_id: [u8; 16]) {
        let Some((to, group)) = self.op(msg_id).map(|o| (o.to.clone(), o.group)) else {
            return;
        };
        if group {
            self.group_claim(msg_id);
        } else if self.peers.contains_key(&to) {
            self.claim_and_send(msg_id);
        } else {
            self.send_frame(
                client_frame::Body::GetDevices(GetDevices { account: to }),
                Some(Pending::Devices { msg_id }),
            );
        }
    }

    /// The recipient's devices (without this one), in order.
    pub(super) fn targets(&self, to: &str) -> Vec<u32> {
        let mut devices = self.peers.get(to).cloned().unwrap_or_default();
        if Some(to) == self.account.as_deref() {
            devices.retain(|&d| d != self.device);
        }
        devices
    }

    /// Claims keys for devices without a session, then encrypts and sends.
    fn claim_and_send(&mut self, msg_id: [u8; 16]) {
        let Some(to) = self.op(msg_id).map(|o| o.to.clone()) else {
            return;
        };
        let missing: Vec<u32> = self
            .targets(&to)
            .into_iter()
            .filter(|&d| !self.e2e.has_session(&to, d))
            .collect();
        if missing.is_empty() {
            self.encrypt_and_send(msg_id, &HashMap::new());
        } else {
            self.send_frame(
                client_frame::Body::ClaimKeys(ClaimKeys {
                    account: to,
                    devices: missing,
                }),
                Some(Pending::Claim { msg_id }),
            );
        }
    }

    fn encrypt_and_send(&mut self, msg_id: [u8; 16], bundles: &HashMap<u32, DeviceKeys>) {
        let Some(op) = self.op(msg_id).cloned() else {
            return;
        };
        let mut envelopes = Vec::new();
        for d in self.targets(&op.to) {
            if self.is_changed(&op.to, d) {
                let warning = super::trust::key_changed_warning(&op.to, d);
                return self.fail(msg_id, &warning);
            }
            let bundle = (!self.e2e.has_session(&op.to, d))
                .then(|| bundles.get(&d))
                .flatten();
            if bundle.is_none() && !self.e2e.has_session(&op.to, d) {
                return self.fail(
                    msg_id,
                    &format!("device {d} of {} has not published its keys yet", op.to),
                );
            }
            match self.e2e.encrypt(&op.to, d, bundle, &op.inner) {
                Ok(env) => envelopes.push(env),
                Err(e) => return self.fail(msg_id, &e.to_string()),
            }
        }
        let inner = Inner::decode(&op.inner).ok();
        let send = Send {
            msg_id: msg_id.to_vec(),
            to: op.to,
            envelopes,
            kind: MessageKind::Chat as i32,
            blobs: inner.map(|i| i.blobs()).unwrap_or_default(),
            ..Default::default()
        };
        self.send_frame(
            client_frame::Body::Send(send),
            Some(Pending::Send { msg_id }),
        );
    }

    pub(super) fn fail(&mut self, msg_id: [u8; 16], error: &str) {
        self.outbox.retain(|o| o.msg_id != msg_id);
        self.events.push(Event::SendFailed {
            msg_id: hex::encode(msg_id),
            error: error.to_owned(),
        });
    }

    pub(super) fn op(&self, msg_id: [u8; 16]) -> Option<&Outgoing> {
        self.outbox.iter().find(|o| o.msg_id == msg_id)
    }

    fn op_mut(&mut self, msg_id: [u8; 16]) -> Option<&mut Outgoing> {
        self.outbox.iter_mut().find(|o| o.msg_id == msg_id)
    }

    /// Records a peer's device list, forgetting sessions with devices that are gone.
    pub(super) fn set_devices(&mut self, account: &str, devices: Vec<u32>) {
        if let Some(old) = self.peers.get(account) {
            for d in old.clone() {
                if !devices.contains(&d) {
                    self.e2e.forget(account, d);
                }
            }
        }
        self.peers.insert(account.to_owned(), devices);
    }

    /// Tells `to` (the sender's account, also for a group message) that the user has read
    /// `msg_ids` (lowercase hex).
    pub fn mark_read(&mut self, to: &str, msg_ids: &[String]) {
        let ids: Vec<Vec<u8>> = msg_ids
            .iter()
            .filter_map(|m| hex::decode(m).ok())
            .filter(|m| m.len() == 16)
            .collect();
        if ids.is_empty() || !self.is_ready() {
            return;
        }
        let r = SendReceipt {
            to: to.to_owned(),
            kind: ReceiptKind::Read as i32,
            msg_ids: ids,
        };
        self.send_frame(client_frame::Body::Receipt(r), Some(Pending::Other));
    }

    /// Mutes `thread` (an account or a group) forever, or unmutes it. The relay then marks its
    /// deliveries muted and keeps push notifications for it silent.
    pub fn mute(&mut self, thread: &str, mute: bool) {
        let m = relaybox_core::wire::messages::Mute {
            thread: thread.to_owned(),
            until_ms: 0,
            forever: mute,
            unmute: !mute,
        };
        self.send_frame(client_frame::Body::Mute(m), Some(Pending::Other));
    }

    /// Shows `to` that the user is typing (`composing`), recording, or stopped (`paused`).
    pub fn chat_state(&mut self, to: &str, state: &str) {
        let state = match state {
            "composing" => ChatState::Composing,
            "recording" => ChatState::Recording,
            _ => ChatState::Paused,
        };
        let (group, to) = if super::groups::is_group_id(to) {
            (to.to_owned(), String::new())
        } else {
            (String::new(), to.to_owned())
        };
        let s = SendChatState {
            group,
            to,
            state: state as i32,
        };
        self.send_frame(client_frame::Body::ChatState(s), None);
    }
}

/// A frame body's name, for messages about unexpected frames.
fn push_name(body: &server_frame::Body) -> &'static str {
    use server_frame::Body as B;
    match body {
        B::Error(_) => "error",
        B::Deliver(_) => "deliver",
        B::Receipt(_) => "receipt",
        B::Linked(_) => "linked",
        B::Devices(_) => "devices",
        B::ServerAck(_) => "server ack",
        B::ClaimedKeys(_) => "claimed keys",
        B::KeysUploaded(_) => "keys uploaded",
        B::BlobUrl(_) => "blob url",
        _ => "other",
    }
}
