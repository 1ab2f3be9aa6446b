//! One function per request, same shape each: check who asks, parse and bound the fields,
//! apply through the store or the actors, answer. Errors become wire errors in one place
//! (`RequestError::to_wire`).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{to_u32, Answer, AnswerFuture, Auth, Caller, RequestError};
use crate::actors::device::Ack as DeviceAck;
use crate::config::to_usize;
use crate::edge::RelayCtx;
use crate::ids::{AccountId, DeviceId, MsgId, MAX_DEVICES_PER_ACCOUNT};
use crate::registration::{codes, phone};
use crate::store::{IdentityKeys, IdentityOutcome, QueueItem};
use crate::wire::messages::{
    client_frame, server_frame, ChatStateEvent, ClaimKeys, ClaimedKeys, ClientFrame, CodeSent,
    DeviceKeys, KeysLow, KeysUploaded, OneTimeKey, Pong, ReceiptKind, RequestCode, SendChatState,
    SendReceipt, ServerAck, ServerFrame, Status, UploadKeys, Verified, VerifyCode,
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
        client_frame::Body::Send(s) => Some(run(req_id, async move {
            super::send::send(&ctx, &caller, s).await
        })),
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
    // A device's first identity keys (a new phone, or one registered again after a reinstall)
    // are announced to everyone who talks to the account: their clients then check the keys
    // they pinned before the next message (the safety number may have changed).
    let identity = if !u.identity_key.is_empty() || !u.signing_key.is_empty() {
        let ik = IdentityKeys {
            identity: key32(&u.identity_key, "identity_key")?,
            signing: key32(&u.signing_key, "signing_key")?,
        };
        if !crate::e2e::is_ed25519_public_key(&ik.signing) {
            return Err(RequestError::invalid(
                "signing_key is not an Ed25519 public key (not a point on the curve)",
            ));
        }
        if ctx
            .store
            .keys_identity(d)?
            .is_some_and(|stored| stored != ik)
        {
            return Err(identity_conflict());
        }
        Some(ik)
    } else if ctx.store.keys_identity(d)?.is_none() {
        return Err(RequestError::invalid(
            "the first upload must carry identity_key and signing_key",
        ));
    } else {
        None
    };
    let otks = u
        .one_time_keys
        .iter()
        .map(one_time_key)
        .collect::<Result<Vec<_>, _>>()?;
    let fallback = u.fallback_key.as_ref().map(one_time_key).transpose()?;
    // The one-time and fallback keys are stored before the identity: a device becomes
    // claimable when its identity is, and a claim from another thread must not find it
    // without a key to start a session with.
    if let Some((id, public)) = &fallback {
        ctx.store.keys_set_fallback(d, id, *public)?;
    }
    let held = ctx
        .store
        .keys_add_one_time(d, &otks, to_usize(ctx.cfg.keys.max_one_time_keys))?;
    let mut new_identity = false;
    if let Some(ik) = identity {
        match ctx.store.keys_set_identity(d, &ik)? {
            IdentityOutcome::Conflict => return Err(identity_conflict()),
            IdentityOutcome::Stored => new_identity = true,
            IdentityOutcome::Unchanged => {}
        }
    }
    ctx.durability.wait().await?;
    if new_identity {
        // The account's other devices hear of it too; a lone primary need not hear of itself.
        let others = ctx.store.devices(&d.account)?.len() > 1;
        super::announce_devices_to(ctx, &d.account, others).await?;
    }
    Ok(Body::KeysUploaded(KeysUploaded {
        one_time_keys: to_u32(held),
    }))
}

fn identity_conflict() -> RequestError {
    RequestError::invalid("identity keys cannot change; register again to reset them")
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
