//! Send: one message, to every device of one account (1:1) or of a group's members, each
//! device with its own end-to-end envelope.
//!
//! # One Send, from the socket to the disk and back
//!
//! 1. The session (`edge::session`) reads the socket into the thread's read buffer, and
//!    decrypts the frame (Noise) where the decoder holds it into one `Bytes`, which prost
//!    decodes as the `ClientFrame`: each envelope's ciphertext is a slice of it, not a copy.
//!    `requests::dispatch` starts [`send`] as the request's future, on the session's task.
//! 2. [`send`] checks the fields ([`check_fields`]), answers a retry of a stored msg_id from
//!    the log's in-memory dedupe records, and works out the target devices
//!    ([`targets`]: every current device of the recipient, or what the group's Thread actor
//!    allows). Business-entity sends branch off to `entities::send` here.
//! 3. One record goes into the message log (`Store::send_append`): the entries for every
//!    target device and the msg_id's dedupe record, appended under the log's lock on this
//!    task, no I/O. The sender's abuse metrics are counted in memory.
//! 4. The send waits for the log's writer thread to make that record durable (one `write` and
//!    one `fdatasync` for the whole group of records appended meanwhile), then answers
//!    ServerAck.
//! 5. The same commit wakes the commit dispatcher (`app.rs`), which sends one `Durable` to
//!    each target device's actor; an actor with a live session reads its new entries from the
//!    log's in-memory index and pushes them to the session (the ciphertext still the same
//!    shared buffer), which encrypts every frame waiting into one buffer and writes it with
//!    one write.
//! 6. The recipient's Ack reaches its device actor, which removes the entries and queues the
//!    DELIVERED receipts for the sender's devices, as one more log record.

use std::collections::BTreeSet;

use super::requests::{account, device_of, recipient_accounts};
use super::{Caller, RequestError};
use crate::config::to_usize;
use crate::e2e::{OLM_TYPE_NORMAL, OLM_TYPE_PRE_KEY};
use crate::edge::RelayCtx;
use crate::ids::{DeviceId, MsgId};
use crate::store::msglog::Appended;
use crate::store::{BlobScope, QueueItem, QueueRecord};
use crate::wire::messages::{server_frame, Envelope, MessageKind, Send, ServerAck};

type Body = server_frame::Body;

/// Send: validate, dedupe by msg_id, check the envelopes cover exactly the recipient's
/// devices, queue one entry per device in one log record, wait for its fsync, then ServerAck.
pub(super) async fn send(ctx: &RelayCtx, caller: &Caller, s: Send) -> Result<Body, RequestError> {
    let me = device_of(caller)?.clone();
    super::abuse::not_banned(ctx, &me.account)?;
    let msg_id = MsgId::from_slice(&s.msg_id).map_err(|e| RequestError::invalid(e.to_string()))?;
    check_fields(ctx, &s)?;
    let blobs = super::blobs::shared(ctx, &me.account, &s.blobs)?;
    if let Some(ts) = ctx.store.seen_get(&me.account, &msg_id)? {
        ctx.durability.wait().await?;
        return Ok(ack(msg_id, ts));
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
    if super::entities::is_entity_send(ctx, &s)? {
        // Admitted and counted past its own device check (`entities::deliver`).
        return super::entities::send(ctx, &me, msg_id, s, &blobs).await;
    }
    let peer = if s.group.is_empty() {
        s.to.clone()
    } else {
        s.group.clone()
    };
    let size = first_size(&s.envelopes);
    let targets = targets(ctx, &me, &s).await?;
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
        let accounts: Vec<_> = recipients.iter().filter_map(|a| account(a).ok()).collect();
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
            size,
        },
    )?;
    if blobs.is_empty() {
        // The abuse metrics are written back to sled apart (`store::abuse`); a crash may lose
        // the last moments of them, never a message.
        ctx.durability.wait_log(seq).await?;
    } else {
        // The blob rights are sled records: durable before the message is acknowledged.
        ctx.durability.wait().await?;
    }
    crate::telemetry::metrics::message_accepted();
    Ok(ack(msg_id, timestamp_ms))
}

fn ack(msg_id: MsgId, timestamp_ms: u64) -> Body {
    Body::ServerAck(ServerAck {
        msg_id: msg_id.0.to_vec(),
        timestamp_ms,
    })
}

/// The fields a Send must have whoever it goes to: a recipient, 1..=max envelopes each of
/// 1..=max bytes, and kinds the contract names.
fn check_fields(ctx: &RelayCtx, s: &Send) -> Result<(), RequestError> {
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
    check_kinds(s)
}

/// Who receives which envelope, in envelope order: every device of the recipient (1:1) or of
/// every member (group), except the sending device; anything else is a mismatch.
async fn targets(ctx: &RelayCtx, me: &DeviceId, s: &Send) -> Result<Vec<DeviceId>, RequestError> {
    if !s.group.is_empty() {
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
        super::groups::check_send(ctx, me, &s.group, addressed).await?;
        return Ok(targets);
    }
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
    check_addressed(&s.envelopes, current)?;
    Ok(s.envelopes
        .iter()
        .map(|e| DeviceId::new(to.clone(), e.device))
        .collect())
}

/// The envelopes name each of `current` (one account's devices) exactly once: otherwise two
/// envelopes for one device, or MISMATCHED_DEVICES with the current list.
pub(super) fn check_addressed(
    envelopes: &[Envelope],
    current: BTreeSet<u32>,
) -> Result<(), RequestError> {
    let addressed: BTreeSet<u32> = envelopes.iter().map(|e| e.device).collect();
    if addressed.len() != envelopes.len() {
        return Err(RequestError::invalid("two envelopes for the same device"));
    }
    if addressed != current {
        return Err(RequestError::MismatchedDevices(
            current.into_iter().collect(),
        ));
    }
    Ok(())
}

/// The size of a send's first envelope, for the sender's abuse metrics.
pub(super) fn first_size(envelopes: &[Envelope]) -> u32 {
    envelopes
        .first()
        .map_or(0, |e| u32::try_from(e.ciphertext.len()).unwrap_or(u32::MAX))
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

/// Removes a msg_id from the session's in-progress set however the send ends.
struct SendingGuard {
    set: std::rc::Rc<std::cell::RefCell<crate::maps::FastSet<MsgId>>>,
    msg_id: MsgId,
}

impl Drop for SendingGuard {
    fn drop(&mut self) {
        self.set.borrow_mut().remove(&self.msg_id);
    }
}
