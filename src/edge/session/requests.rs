//! One function per request, same shape each: check who asks, parse and bound the fields,
//! apply through the store or the actors, answer. Errors become wire errors in one place
//! (`RequestError::to_wire`).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{to_u32, Answer, AnswerFuture, Auth, Caller, RequestError};
use crate::actors::device::Ack as DeviceAck;
use crate::config::to_usize;
use crate::e2e::{OLM_TYPE_NORMAL, OLM_TYPE_PRE_KEY};
use crate::edge::RelayCtx;
use crate::ids::{AccountId, DeviceId, MsgId, MAX_DEVICES_PER_ACCOUNT};
use crate::registration::{codes, phone};
use crate::store::msglog::Appended;
use crate::store::{BlobScope, IdentityKeys, IdentityOutcome, QueueItem, QueueRecord};
use crate::wire::messages::{
    client_frame, server_frame, ChatStateEvent, ClaimKeys, ClaimedKeys, ClientFrame, CodeSent,
    DeviceKeys, KeysLow, KeysUploaded, MessageKind, OneTimeKey, Pong, ReceiptKind, RequestCode,
    Send, SendChatState, SendReceipt, ServerAck, ServerFrame, Status, UploadKeys, Verified,
    VerifyCode,
};

type Body = server_frame::Body;

/// Most one-time keys in one upload.
pub const MAX_KEYS_PER_UPLOAD: usize = 200;
/// Longest one-time key id.
pub const MAX_KEY_ID_BYTES: usize = 64;
pub use crate::wire::messages::MAX_RECEIPT_IDS;
/// Most seqs in one Ack.
pub const MAX_ACK_SEQS: usize = 1024;

/// Starts a request. Frames that need no answer are handled here and yield `None`.
pub(super) fn dispatch(
    ctx: &Arc<RelayCtx>,
    caller: &Caller,
    session_id: u64,
    cf: ClientFrame,
) -> Option<AnswerFuture> {
    let req_id = cf.req_id;
    let Some(body) = cf.body else {
        return Some(answer_now(
            req_id,
            Err(RequestError::invalid("frame has no body")),
        ));
    };
    let (ctx, caller) = (ctx.clone(), caller.clone());
    match body {
        client_frame::Body::Ack(ack) => {
            if let Auth::Device(d) = &caller.auth {
                let seqs: Vec<u64> = ack.seqs.into_iter().take(MAX_ACK_SEQS).collect();
                ctx.directory.get(d).do_send(DeviceAck { session_id, seqs });
            }
            None
        }
        client_frame::Body::ChatState(cs) => {
            if cs.group.is_empty() {
                chat_state(&ctx, &caller, cs);
            } else if let Ok(me) = device_of(&caller).cloned() {
                actix::spawn(async move {
                    if let Err(e) = super::groups::chat_state(&ctx, &me, &cs.group, cs.state).await
                    {
                        tracing::debug!(error = %e, "Group chat state dropped.");
                    }
                });
            }
            None
        }
        client_frame::Body::Pong(_) => None,
        client_frame::Body::Ping(p) => {
            Some(answer_now(req_id, Ok(Body::Pong(Pong { nonce: p.nonce }))))
        }
        client_frame::Body::RequestCode(r) => {
            Some(run(
                req_id,
                async move { request_code(&ctx, &caller, r).await },
            ))
        }
        client_frame::Body::VerifyCode(v) => Some(Box::pin(async move {
            match verify_code(&ctx, &caller, v).await {
                Ok((device, body)) => Answer {
                    frame: frame(req_id, body),
                    became: Some(device),
                },
                Err(e) => answer(req_id, Err(e)),
            }
        })),
        client_frame::Body::UploadKeys(u) => {
            Some(run(
                req_id,
                async move { upload_keys(&ctx, &caller, u).await },
            ))
        }
        client_frame::Body::ClaimKeys(c) => {
            Some(run(
                req_id,
                async move { claim_keys(&ctx, &caller, c).await },
            ))
        }
        client_frame::Body::Send(s) => {
            Some(run(req_id, async move { send(&ctx, &caller, s).await }))
        }
        client_frame::Body::Receipt(r) => {
            Some(run(req_id, async move { receipt(&ctx, &caller, r).await }))
        }
        client_frame::Body::GetStatus(_) => Some(run(req_id, async move { status(&ctx, &caller) })),
        client_frame::Body::CreateGroup(c) => Some(run(req_id, async move {
            super::abuse::not_banned(&ctx, &device_of(&caller)?.account)?;
            super::groups::create(&ctx, &caller, c).await
        })),
        client_frame::Body::UpdateGroup(u) => Some(run(req_id, async move {
            super::abuse::not_banned(&ctx, &device_of(&caller)?.account)?;
            super::groups::update(&ctx, &caller, u).await
        })),
        client_frame::Body::GetGroup(g) => Some(run(req_id, async move {
            super::groups::get(&ctx, &caller, g).await
        })),
        client_frame::Body::LinkDevice(l) => Some(run(req_id, async move {
            super::account::link(&ctx, &caller, l).await
        })),
        client_frame::Body::UnlinkDevice(u) => Some(run(req_id, async move {
            super::account::unlink(&ctx, &caller, u).await
        })),
        client_frame::Body::GetDevices(g) => Some(run(req_id, async move {
            match super::entities::devices(&ctx, &caller, &g.account).await {
                Some(entity) => entity,
                None => super::account::devices(&ctx, &caller, g),
            }
        })),
        client_frame::Body::UploadContacts(u) => Some(run(req_id, async move {
            super::account::contacts(&ctx, &caller, u).await
        })),
        client_frame::Body::SetPrivacy(p) => Some(run(req_id, async move {
            super::account::privacy(&ctx, &caller, p).await
        })),
        client_frame::Body::Mute(m) => Some(run(req_id, async move {
            super::account::mute(&ctx, &caller, m).await
        })),
        client_frame::Body::RegisterPush(r) => Some(run(req_id, async move {
            super::account::push(&ctx, &caller, r).await
        })),
        client_frame::Body::RequestUpload(r) => Some(answer_now(
            req_id,
            super::blobs::request_upload(&ctx, &caller, r),
        )),
        client_frame::Body::RequestDownload(r) => Some(answer_now(
            req_id,
            super::blobs::request_download(&ctx, &caller, r),
        )),
        client_frame::Body::Entity(r) => Some(run(req_id, async move {
            super::entities::request(&ctx, &caller, r).await
        })),
        client_frame::Body::Block(b) => Some(run(req_id, async move {
            super::abuse::block(&ctx, &caller, b).await
        })),
        client_frame::Body::GetBlocked(_) => {
            Some(answer_now(req_id, super::abuse::blocked(&ctx, &caller)))
        }
    }
}

fn frame(req_id: u64, body: Body) -> ServerFrame {
    ServerFrame {
        req_id,
        body: Some(body),
    }
}

/// The answer to a finished request; refusals are logged once, here, at the level their
/// fault calls for.
fn answer(req_id: u64, r: Result<Body, RequestError>) -> Answer {
    let body = match r {
        Ok(body) => body,
        Err(e) => {
            if e.is_relay_fault() {
                tracing::error!(error = %e, "Request failed on the relay side.");
            } else {
                tracing::debug!(error = %e, "Request refused.");
            }
            Body::Error(e.to_wire())
        }
    };
    Answer {
        frame: frame(req_id, body),
        became: None,
    }
}

fn answer_now(req_id: u64, r: Result<Body, RequestError>) -> AnswerFuture {
    Box::pin(std::future::ready(answer(req_id, r)))
}

fn run(
    req_id: u64,
    fut: impl std::future::Future<Output = Result<Body, RequestError>> + 'static,
) -> AnswerFuture {
    Box::pin(async move { answer(req_id, fut.await) })
}

pub(super) fn device_of(caller: &Caller) -> Result<&DeviceId, RequestError> {
    match &caller.auth {
        Auth::Device(d) => Ok(d),
        Auth::Anonymous { .. } => Err(RequestError::NotAuthenticated),
    }
}

pub(super) fn account(s: &str) -> Result<AccountId, RequestError> {
    AccountId::parse(s).map_err(|e| RequestError::invalid(e.to_string()))
}

pub(super) fn key32(b: &[u8], what: &str) -> Result<[u8; 32], RequestError> {
    <[u8; 32]>::try_from(b)
        .map_err(|_| RequestError::invalid(format!("{what} must be 32 bytes, got {}", b.len())))
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// RequestCode: the same answer whether or not the number is registered.
async fn request_code(
    ctx: &RelayCtx,
    caller: &Caller,
    r: RequestCode,
) -> Result<Body, RequestError> {
    let reg = &ctx.cfg.registration;
    let phone = phone::normalise(&r.phone, reg.default_country.as_ref())?;
    super::abuse::not_banned(ctx, &phone)?;
    let now = crate::clock::now_ms();
    {
        let mut limits = ctx.limits();
        limits
            .codes_per_address
            .check(&caller.peer.ip().to_string(), now)
            .map_err(|r| RequestError::RateLimited(r.0))?;
        limits
            .codes_per_number
            .check(phone.as_str(), now)
            .map_err(|r| RequestError::RateLimited(r.0))?;
    }
    let (code, rec) = codes::issue(
        &ctx.code_secret,
        &phone,
        reg.code_digits,
        now,
        ms(reg.code_ttl),
        reg.max_attempts,
    );
    ctx.store.code_put(&phone, &rec)?;
    ctx.durability.wait().await?;
    ctx.verifier
        .send(&phone, &code, reg.verifier_timeout)
        .await?;
    Ok(Body::CodeSent(CodeSent {
        phone: phone.to_string(),
        expires_in_ms: ms(reg.code_ttl),
    }))
}

/// VerifyCode: on success the session's Noise key becomes the account's primary device.
async fn verify_code(
    ctx: &RelayCtx,
    caller: &Caller,
    v: VerifyCode,
) -> Result<(DeviceId, Body), RequestError> {
    let Auth::Anonymous { client_static } = caller.auth else {
        return Err(RequestError::invalid(
            "this session is already a device; verify from a registration session",
        ));
    };
    let phone = phone::normalise(&v.phone, ctx.cfg.registration.default_country.as_ref())?;
    super::abuse::not_banned(ctx, &phone)?;
    let now = crate::clock::now_ms();
    let Some(mut rec) = ctx.store.code_get(&phone)? else {
        return Err(codes::CodeError::Expired.into());
    };
    match codes::check(&mut rec, &ctx.code_secret, &phone, &v.code, now) {
        Ok(()) => {
            // Counted once the code is right; refused, the code stays valid for a retry.
            ctx.limits()
                .registrations_per_address
                .check(&caller.peer.ip().to_string(), now)
                .map_err(|r| RequestError::RateLimited(r.0))?;
            ctx.store.code_remove(&phone)?
        }
        Err(e @ (codes::CodeError::Wrong { .. } | codes::CodeError::Malformed)) => {
            ctx.store.code_put(&phone, &rec)?;
            ctx.durability.wait().await?;
            return Err(e.into());
        }
        Err(e) => {
            ctx.store.code_remove(&phone)?;
            ctx.durability.wait().await?;
            return Err(e.into());
        }
    }
    let device = ctx.store.register_primary(&phone, client_static, now)?;
    let token = super::login::rotate_token(ctx, &device, None)
        .map_err(|_| RequestError::invalid("token"))?;
    ctx.durability.wait().await?;
    tracing::info!(account = %phone, "Device registered.");
    let body = Body::Verified(Verified {
        account: phone.to_string(),
        device: device.device,
        token,
    });
    Ok((device, body))
}

/// UploadKeys: identity keys once, one-time keys up to the cap, a fallback key.
async fn upload_keys(ctx: &RelayCtx, caller: &Caller, u: UploadKeys) -> Result<Body, RequestError> {
    let d = device_of(caller)?;
    if u.one_time_keys.len() > MAX_KEYS_PER_UPLOAD {
        return Err(RequestError::invalid(format!(
            "at most {MAX_KEYS_PER_UPLOAD} one-time keys per upload"
        )));
    }
    if !u.identity_key.is_empty() || !u.signing_key.is_empty() {
        let ik = IdentityKeys {
            identity: key32(&u.identity_key, "identity_key")?,
            signing: key32(&u.signing_key, "signing_key")?,
        };
        if !crate::e2e::is_ed25519_public_key(&ik.signing) {
            return Err(RequestError::invalid(
                "signing_key is not an Ed25519 public key (not a point on the curve)",
            ));
        }
        if ctx.store.keys_set_identity(d, &ik)? == IdentityOutcome::Conflict {
            return Err(RequestError::invalid(
                "identity keys cannot change; register again to reset them",
            ));
        }
    } else if ctx.store.keys_identity(d)?.is_none() {
        return Err(RequestError::invalid(
            "the first upload must carry identity_key and signing_key",
        ));
    }
    let otks = u
        .one_time_keys
        .iter()
        .map(one_time_key)
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(fb) = &u.fallback_key {
        let (id, public) = one_time_key(fb)?;
        ctx.store.keys_set_fallback(d, &id, public)?;
    }
    let held = ctx
        .store
        .keys_add_one_time(d, &otks, to_usize(ctx.cfg.keys.max_one_time_keys))?;
    ctx.durability.wait().await?;
    Ok(Body::KeysUploaded(KeysUploaded {
        one_time_keys: to_u32(held),
    }))
}

fn one_time_key(k: &OneTimeKey) -> Result<(Vec<u8>, [u8; 32]), RequestError> {
    if k.key_id.is_empty() || k.key_id.len() > MAX_KEY_ID_BYTES {
        return Err(RequestError::invalid(format!(
            "key_id must be 1..={MAX_KEY_ID_BYTES} bytes"
        )));
    }
    Ok((k.key_id.clone(), key32(&k.public_key, "public_key")?))
}

/// Claims one key of device `d` for `claimer` (`None` if it published none) and warns it if
/// its one-time keys run low. Not durable until the caller waits for the barrier.
///
/// A one-time key is given only to a claimer that did not claim `d` in the last day (one that
/// did holds a session already) and while `d` has given fewer than
/// `keys.one_time_claims_per_device_per_hour`; otherwise the fallback key, so no claimer or
/// group of claimers can drain `d`'s one-time keys.
pub(super) fn claim_one(
    ctx: &RelayCtx,
    claimer: &AccountId,
    d: &DeviceId,
) -> Result<Option<DeviceKeys>, RequestError> {
    let now = crate::clock::now_ms();
    let prefer_fallback = {
        let mut limits = ctx.limits();
        let pair = format!("{claimer}\0{d}");
        let repeat = limits.claim_pairs.check(&pair, now).is_err();
        repeat
            || limits
                .one_time_claims_per_device
                .check(&d.to_string(), now)
                .is_err()
    };
    let Some(claimed) = ctx.store.keys_claim(d, prefer_fallback)? else {
        return Ok(None);
    };
    let held = ctx.store.keys_one_time_count(d)?;
    let warn = held < to_usize(ctx.cfg.keys.one_time_keys_low)
        && ctx
            .limits()
            .keys_low_warnings
            .check(&d.to_string(), now)
            .is_ok();
    if warn {
        let low = KeysLow {
            remaining: to_u32(held),
            wanted: ctx.cfg.keys.one_time_keys_wanted,
        };
        ctx.directory.ephemeral(d, frame(0, Body::KeysLow(low)));
    }
    Ok(Some(DeviceKeys {
        device: d.device,
        identity_key: claimed.identity.identity.to_vec(),
        signing_key: claimed.identity.signing.to_vec(),
        one_time_key: claimed.key.map(|(key_id, public)| OneTimeKey {
            key_id,
            public_key: public.to_vec(),
        }),
        is_fallback: claimed.is_fallback,
        account: String::new(),
    }))
}

/// ClaimKeys: one key per requested device; warns devices whose one-time keys run low.
async fn claim_keys(ctx: &RelayCtx, caller: &Caller, c: ClaimKeys) -> Result<Body, RequestError> {
    let me = device_of(caller)?.account.clone();
    if let Some(entity) = super::entities::claim_keys(ctx, caller, &c.account).await {
        return entity;
    }
    let target = account(&c.account)?;
    let devices = ctx.store.devices(&target)?;
    if devices.is_empty() {
        return Err(RequestError::UnknownAccount);
    }
    if c.devices.len() > MAX_DEVICES_PER_ACCOUNT {
        return Err(RequestError::invalid("too many devices requested"));
    }
    let wanted: Vec<u32> = devices
        .into_iter()
        .map(|(no, _)| no)
        .filter(|no| c.devices.is_empty() || c.devices.contains(no))
        .collect();
    let n = u32::try_from(wanted.len()).unwrap_or(u32::MAX);
    ctx.limits()
        .claims_per_account
        .check_n(me.as_str(), n, crate::clock::now_ms())
        .map_err(|r| RequestError::RateLimited(r.0))?;
    let mut out = Vec::new();
    for no in wanted {
        out.extend(claim_one(ctx, &me, &DeviceId::new(target.clone(), no))?);
    }
    // A claimed one-time key must not be handed out again after a crash.
    ctx.durability.wait().await?;
    Ok(Body::ClaimedKeys(ClaimedKeys {
        account: target.to_string(),
        devices: out,
    }))
}

/// Refuses enum values the contract does not name, so that nothing unknown is stored and
/// forwarded to a recipient that could not interpret it.
fn check_kinds(s: &Send) -> Result<(), RequestError> {
    match MessageKind::try_from(s.kind) {
        Ok(MessageKind::Chat | MessageKind::Control) => {}
        _ => {
            return Err(RequestError::invalid(format!(
                "send kind {} is not MESSAGE_KIND_CHAT (1) or MESSAGE_KIND_CONTROL (2)",
                s.kind
            )))
        }
    }
    if let Some(e) = s
        .envelopes
        .iter()
        .find(|e| e.olm_type != OLM_TYPE_PRE_KEY && e.olm_type != OLM_TYPE_NORMAL)
    {
        return Err(RequestError::invalid(format!(
            "envelope for device {} has olm_type {}; it is 0 (pre-key) or 1 (normal)",
            e.device, e.olm_type
        )));
    }
    Ok(())
}

/// Send: validate, dedupe by msg_id, check the envelopes cover exactly the recipient's
/// devices, queue one entry per device, wait for the durability barrier, then ServerAck.
async fn send(ctx: &RelayCtx, caller: &Caller, s: Send) -> Result<Body, RequestError> {
    let me = device_of(caller)?.clone();
    super::abuse::not_banned(ctx, &me.account)?;
    let msg_id = MsgId::from_slice(&s.msg_id).map_err(|e| RequestError::invalid(e.to_string()))?;
    if s.group.is_empty() {
        account(&s.to)?;
    }
    let m = &ctx.cfg.messaging;
    if s.envelopes.is_empty() || s.envelopes.len() > to_usize(m.max_envelopes) {
        return Err(RequestError::invalid(format!(
            "a send carries 1..={} envelopes",
            m.max_envelopes
        )));
    }
    if let Some(e) = s
        .envelopes
        .iter()
        .find(|e| e.ciphertext.is_empty() || e.ciphertext.len() > to_usize(m.max_ciphertext_bytes))
    {
        return Err(RequestError::invalid(format!(
            "ciphertext for device {} must be 1..={} bytes",
            e.device, m.max_ciphertext_bytes
        )));
    }
    check_kinds(&s)?;
    let blobs = super::blobs::shared(ctx, &me.account, &s.blobs)?;
    if let Some(ts) = ctx.store.seen_get(&me.account, &msg_id)? {
        ctx.durability.wait().await?;
        return Ok(Body::ServerAck(ServerAck {
            msg_id: msg_id.0.to_vec(),
            timestamp_ms: ts,
        }));
    }
    // A retry of a stored message is acknowledged above even on a full disk; a new one is not.
    ctx.store.ensure_space()?;
    // A concurrent retry of the same msg_id on this session waits for the first to finish.
    if !caller.sending.borrow_mut().insert(msg_id) {
        return Err(RequestError::invalid(
            "a send with this msg_id is already in progress",
        ));
    }
    let _guard = SendingGuard {
        set: caller.sending.clone(),
        msg_id,
    };
    let peer = if s.group.is_empty() {
        s.to.clone()
    } else {
        s.group.clone()
    };
    if super::entities::is_entity_send(ctx, &s)? {
        // Admitted and counted past its own device check (`entities::deliver`).
        return super::entities::send(ctx, &me, msg_id, s, &blobs).await;
    }
    let size = s.envelopes.first().map_or(0, |e| e.ciphertext.len());
    // Who receives which envelope: every device of the recipient (1:1), or of every member
    // (group), except the sending device; anything else is a mismatch.
    let targets: Vec<DeviceId> = if s.group.is_empty() {
        let to = account(&s.to)?;
        let current: BTreeSet<u32> = ctx
            .store
            .devices(&to)?
            .into_iter()
            .map(|(no, _)| no)
            .filter(|&no| !(to == me.account && no == me.device))
            .collect();
        if current.is_empty() && to == me.account {
            return Err(RequestError::invalid(
                "a send to your own account goes to your other devices, and this account has none; message another account or a group",
            ));
        }
        if current.is_empty() {
            return Err(RequestError::UnknownAccount);
        }
        let addressed: BTreeSet<u32> = s.envelopes.iter().map(|e| e.device).collect();
        if addressed.len() != s.envelopes.len() {
            return Err(RequestError::invalid("two envelopes for the same device"));
        }
        if addressed != current {
            return Err(RequestError::MismatchedDevices(
                current.into_iter().collect(),
            ));
        }
        s.envelopes
            .iter()
            .map(|e| DeviceId::new(to.clone(), e.device))
            .collect()
    } else {
        let targets = s
            .envelopes
            .iter()
            .map(|e| account(&e.account).map(|a| DeviceId::new(a, e.device)))
            .collect::<Result<Vec<_>, _>>()?;
        let addressed: BTreeSet<(String, u32)> = targets
            .iter()
            .map(|d| (d.account.to_string(), d.device))
            .collect();
        if addressed.len() != targets.len() {
            return Err(RequestError::invalid("two envelopes for the same device"));
        }
        super::groups::check_send(ctx, &me, &s.group, addressed).await?;
        targets
    };
    // Only now, past the device check: a MISMATCHED_DEVICES answer and its retry cost one
    // token between them, not two.
    super::abuse::admit_send(ctx, &me.account, &peer)?;
    // A blocker's devices get nothing from the blocked account; the sender is answered as
    // for an offline recipient (proto: "Blocking").
    let mut blocked_by = BTreeSet::new();
    for d in &targets {
        if d.account != me.account && ctx.store.is_blocked(&d.account, &me.account)? {
            blocked_by.insert(d.account.clone());
        }
    }
    for b in &blocked_by {
        tracing::debug!(sender = %me.account, recipient = %b, reason = "blocked", "Message not queued.");
    }
    let symmetric = if s.group.is_empty() {
        ctx.store.has_contact(&account(&s.to)?, &me.account)?
    } else {
        true
    };
    let now = crate::clock::now_ms();
    let group = s.group;
    let recipients =
        recipient_accounts(targets.iter().filter(|d| !blocked_by.contains(&d.account)));
    let entries: Vec<(DeviceId, QueueRecord)> = s
        .envelopes
        .into_iter()
        .zip(targets)
        .filter(|(_, d)| !blocked_by.contains(&d.account))
        .map(|(e, d)| {
            let rec = QueueRecord {
                enqueued_at_ms: now,
                item: QueueItem::Message {
                    msg_id: msg_id.0,
                    from: me.account.to_string(),
                    from_device: me.device,
                    timestamp_ms: now,
                    olm_type: e.olm_type,
                    ciphertext: e.ciphertext,
                    kind: s.kind,
                    group: group.clone(),
                },
            };
            (d, rec)
        })
        .collect();
    if !blobs.is_empty() {
        // A group passes the right to whoever is a member when they fetch.
        let accounts: Vec<AccountId> = recipients.iter().filter_map(|a| account(a).ok()).collect();
        let scopes: Vec<BlobScope<'_>> = if group.is_empty() {
            accounts.iter().map(BlobScope::Account).collect()
        } else {
            vec![BlobScope::Group(&group)]
        };
        super::blobs::grant(ctx, &blobs, &scopes)?;
    }
    // One log record: the entries for every target device and the dedupe record together,
    // so a retry after a crash is deduplicated if and only if the entries survived.
    let (seq, timestamp_ms) =
        match ctx
            .store
            .send_append(&me.account, &msg_id, now, recipients, entries)?
        {
            Appended::Written { last_seq, .. } => (last_seq, now),
            // A retry from another session of the account raced this one.
            Appended::Duplicate { timestamp_ms, seq } => (seq, timestamp_ms),
        };
    super::abuse::count_send(
        ctx,
        &me.account,
        crate::store::SendFacts {
            peer: &peer,
            symmetric,
            size: u32::try_from(size).unwrap_or(u32::MAX),
        },
    )?;
    if blobs.is_empty() {
        // The abuse metrics reach sled's disk with its next flush; a crash may lose the last
        // moments of them, never a message.
        ctx.durability.wait_log(seq).await?;
    } else {
        // The blob rights are sled records: durable before the message is acknowledged.
        ctx.durability.wait().await?;
    }
    crate::telemetry::metrics::message_accepted();
    Ok(Body::ServerAck(ServerAck {
        msg_id: msg_id.0.to_vec(),
        timestamp_ms,
    }))
}

/// Removes a msg_id from the session's in-progress set however the send ends.
struct SendingGuard {
    set: std::rc::Rc<std::cell::RefCell<std::collections::HashSet<MsgId>>>,
    msg_id: MsgId,
}

impl Drop for SendingGuard {
    fn drop(&mut self) {
        self.set.borrow_mut().remove(&self.msg_id);
    }
}

/// Receipt (read / played): queued for every device of the original sender.
async fn receipt(ctx: &RelayCtx, caller: &Caller, r: SendReceipt) -> Result<Body, RequestError> {
    let me = device_of(caller)?.clone();
    super::abuse::not_banned(ctx, &me.account)?;
    let to = account(&r.to)?;
    let kind = ReceiptKind::try_from(r.kind).unwrap_or(ReceiptKind::Unspecified);
    if !matches!(kind, ReceiptKind::Read | ReceiptKind::Played) {
        return Err(RequestError::invalid(
            "clients send READ or PLAYED receipts; DELIVERED comes from the relay",
        ));
    }
    if r.msg_ids.is_empty() || r.msg_ids.len() > MAX_RECEIPT_IDS {
        return Err(RequestError::invalid(format!(
            "a receipt names 1..={MAX_RECEIPT_IDS} msg_ids"
        )));
    }
    let msg_ids = r
        .msg_ids
        .iter()
        .map(|m| MsgId::from_slice(m).map(|m| m.0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RequestError::invalid(e.to_string()))?;
    let targets = match super::entities::receipt_targets(ctx, &me.account, &to)? {
        Some(staff) => staff,
        None if ctx.store.account_exists(&to)? => vec![to],
        None => return Err(RequestError::UnknownAccount),
    };
    for m in &msg_ids {
        check_receipt_right(ctx, &me.account, &targets, &MsgId(*m))?;
    }
    let now = crate::clock::now_ms();
    let item = QueueItem::Receipt {
        from: me.account.to_string(),
        from_device: me.device,
        kind: kind as i32,
        msg_ids,
        timestamp_ms: now,
    };
    for to in &targets {
        if ctx.store.is_blocked(to, &me.account)? {
            tracing::debug!(sender = %me.account, recipient = %to, reason = "blocked", "Receipt not queued.");
            continue;
        }
        ctx.directory.enqueue_account(to, item.clone()).await?;
    }
    ctx.durability.wait().await?;
    Ok(Body::ServerAck(ServerAck {
        msg_id: Vec::new(),
        timestamp_ms: now,
    }))
}

/// The distinct accounts of the devices a message is queued for (its receipt rights).
pub(super) fn recipient_accounts<'a>(devices: impl Iterator<Item = &'a DeviceId>) -> Vec<String> {
    let set: BTreeSet<String> = devices.map(|d| d.account.to_string()).collect();
    set.into_iter().collect()
}

/// A READ or PLAYED receipt for `msg` may come only from an account the message was queued
/// for by one of `senders` (the receipt's targets). The relay keeps that record as long as
/// the msg_id dedupe record: `messaging.retention`, and the sender's newest
/// `SEEN_PER_SENDER` messages.
fn check_receipt_right(
    ctx: &RelayCtx,
    me: &AccountId,
    senders: &[AccountId],
    msg: &MsgId,
) -> Result<(), RequestError> {
    let mut known = false;
    for sender in senders {
        match ctx.store.seen_recipients(sender, msg)? {
            // A record from before recipients were kept: it cannot tell, so it admits.
            Some(None) => return Ok(()),
            Some(Some(list)) if list.iter().any(|a| a == me.as_str()) => return Ok(()),
            Some(Some(_)) => known = true,
            None => {}
        }
    }
    Err(RequestError::invalid(if known {
        format!(
            "msg_id {} was not sent to this account; only its recipients may send receipts for it",
            hex::encode(msg.0)
        )
    } else {
        format!(
            "msg_id {} is not a message the relay holds a record of from this sender (never sent, or older than its retention)",
            hex::encode(msg.0)
        )
    }))
}

/// Chat state: to the recipient's online devices only; never stored, never answered.
fn chat_state(ctx: &RelayCtx, caller: &Caller, cs: SendChatState) {
    let (Ok(me), Ok(to)) = (device_of(caller), AccountId::parse(&cs.to)) else {
        return;
    };
    let refused = super::abuse::not_banned(ctx, &me.account).is_err()
        || ctx.store.is_blocked(&to, &me.account).unwrap_or(true)
        || ctx.store.is_blocked(&me.account, &to).unwrap_or(true);
    if refused {
        return;
    }
    let Ok(devices) = ctx.store.devices(&to) else {
        return;
    };
    let event = ChatStateEvent {
        from: me.account.to_string(),
        from_device: me.device,
        state: cs.state,
        group: String::new(),
    };
    for (no, _) in devices {
        ctx.directory.ephemeral(
            &DeviceId::new(to.clone(), no),
            frame(0, Body::ChatState(event.clone())),
        );
    }
}

fn status(ctx: &RelayCtx, caller: &Caller) -> Result<Body, RequestError> {
    let d = device_of(caller)?;
    Ok(Body::Status(Status {
        account: d.account.to_string(),
        device: d.device,
        devices: ctx
            .store
            .devices(&d.account)?
            .into_iter()
            .map(|(no, _)| no)
            .collect(),
        one_time_keys: to_u32(ctx.store.keys_one_time_count(d)?),
        queued: u64::try_from(ctx.store.queue_len(d)?).unwrap_or(u64::MAX),
    }))
}
