//! Business-entity requests: a customer's route to the entity (GetDevices and Send to the
//! entity), an agent's answer as the entity (Send with `on_behalf_of`), and the staff's
//! EntityRequest (info, assign, release, close, agents). The entity's `Entity` actor decides;
//! this file parses, bounds, queues and announces. See DESIGN.md section 7.
//!
//! # Routing model
//!
//! A customer encrypts one envelope per *recipient device* of its thread (the administrator's,
//! or the assigned agent's [+ the administrator's when the entity copies them]), exactly as for
//! a group. When the routing changes, the customer's devices get a DevicesChanged for the
//! entity and re-fetch the list; a stale send is answered MISMATCHED_DEVICES with the current
//! list, so the customer's client re-keys to the agent without any action by the customer.
//! Agents answer with `Send{to: customer, on_behalf_of: entity}`: the customer sees the entity
//! as the sender, the agent's device as the session to decrypt with, and the agent's display
//! name (set by the relay) as attribution.

use std::collections::{BTreeMap, BTreeSet};

use actix::Addr;

use super::requests::{account, device_of};
use super::{Caller, RequestError};
use crate::actors::entity::{
    AddAgent, Assign, Change, CheckReply, Close, Entity, EntityError, EntityView, Release,
    RemoveAgent, Route, View, Who,
};
use crate::actors::thread::GroupError;
use crate::audit::AuditEntry;
use crate::blob::BlobId;
use crate::config::to_usize;
use crate::edge::RelayCtx;
use crate::ids::{AccountId, DeviceId, MsgId};
use crate::store::{BlobScope, QueueItem, QueueRecord};
use crate::wire::messages::{
    server_frame, Devices, EntityAgent, EntityEventKind, EntityInfo, EntityOp, EntityRequest,
    EntityThread, Envelope, MessageKind, Send, ServerAck,
};

type Body = server_frame::Body;

fn mailbox<T>(r: Result<T, actix::MailboxError>) -> Result<T, RequestError> {
    r.map_err(|_| RequestError::Directory(crate::actors::directory::DirectoryError::Unavailable))
}

/// The entity named by `id` (a handle or a phone alias), if it is one.
fn lookup(
    ctx: &RelayCtx,
    id: &AccountId,
) -> Result<Option<(AccountId, Addr<Entity>)>, RequestError> {
    Ok(ctx.directory.entity(id)?)
}

fn entity_of(ctx: &RelayCtx, s: &str) -> Result<(AccountId, Addr<Entity>), RequestError> {
    let id = account(s)?;
    lookup(ctx, &id)?.ok_or_else(|| EntityError::UnknownEntity(id.to_string()).into())
}

/// The current recipient accounts of `customer`'s thread with their devices; announces an
/// automatic assignment the routing made.
async fn route(
    ctx: &RelayCtx,
    handle: &AccountId,
    addr: &Addr<Entity>,
    customer: &AccountId,
) -> Result<Vec<(String, Vec<u32>)>, RequestError> {
    let rec = ctx
        .store
        .entity_get(handle)?
        .ok_or_else(|| EntityError::UnknownEntity(handle.to_string()))?;
    let admin = account(&rec.admin)?;
    let routed = mailbox(
        addr.send(Route {
            customer: customer.clone(),
            admin_online: ctx.presence.is_online(&admin),
            auto_assign_after: ctx.cfg.entities.auto_assign_after,
        })
        .await,
    )??;
    if let Some(change) = routed.change {
        announce(ctx, handle, &rec.admin, &[change]).await?;
    }
    let mut lists = Vec::new();
    for a in routed.recipients {
        let devices: Vec<u32> = ctx
            .store
            .devices(&a)?
            .into_iter()
            .map(|(no, _)| no)
            .collect();
        if !devices.is_empty() {
            lists.push((a.to_string(), devices));
        }
    }
    Ok(lists)
}

/// GetDevices for an entity: the recipient devices of the caller's customer thread (opening
/// it). `None` if `account` is not an entity.
pub(super) async fn devices(
    ctx: &RelayCtx,
    caller: &Caller,
    account_text: &str,
) -> Option<Result<Body, RequestError>> {
    let id = AccountId::parse(account_text).ok()?;
    let found = match lookup(ctx, &id) {
        Ok(f) => f?,
        Err(e) => return Some(Err(e)),
    };
    Some(
        async {
            let me = device_of(caller)?.account.clone();
            let (handle, addr) = found;
            let lists = route(ctx, &handle, &addr, &me).await?;
            Ok(Body::Devices(Devices {
                account: handle.to_string(),
                devices: Vec::new(),
                bridged: false,
                recipients: lists
                    .into_iter()
                    .map(|(account, devices)| crate::wire::messages::AccountDevices {
                        account,
                        devices,
                    })
                    .collect(),
            }))
        }
        .await,
    )
}

/// ClaimKeys for an entity: one key bundle per recipient device of the caller's customer
/// thread, each naming its account. `None` if `account` is not an entity.
pub(super) async fn claim_keys(
    ctx: &RelayCtx,
    caller: &Caller,
    account_text: &str,
) -> Option<Result<Body, RequestError>> {
    let id = AccountId::parse(account_text).ok()?;
    let found = match lookup(ctx, &id) {
        Ok(f) => f?,
        Err(e) => return Some(Err(e)),
    };
    Some(
        async {
            let me = device_of(caller)?.account.clone();
            let (handle, addr) = found;
            let mut out = Vec::new();
            for (a, devices) in route(ctx, &handle, &addr, &me).await? {
                let acc = account(&a)?;
                for no in devices {
                    if let Some(mut k) =
                        super::requests::claim_one(ctx, &me, &DeviceId::new(acc.clone(), no))?
                    {
                        k.account = a.clone();
                        out.push(k);
                    }
                }
            }
            // A claimed one-time key must not be handed out again after a crash.
            ctx.durability.wait().await?;
            Ok(Body::ClaimedKeys(crate::wire::messages::ClaimedKeys {
                account: handle.to_string(),
                devices: out,
            }))
        }
        .await,
    )
}

/// Where a customer's read or played receipt for the entity's messages goes: the thread's
/// agent, or the administrator. Read only (a receipt never opens or routes a thread). `None` if
/// `to` is not an entity.
pub(super) fn receipt_targets(
    ctx: &RelayCtx,
    customer: &AccountId,
    to: &AccountId,
) -> Result<Option<Vec<AccountId>>, RequestError> {
    let rec = match to.handle() {
        Some(_) => ctx.store.entity_get(to)?,
        None => ctx.store.entity_by_phone(to)?,
    };
    let Some(rec) = rec else {
        return Ok(None);
    };
    let handle = account(&rec.handle)?;
    let agent = ctx
        .store
        .entity_thread_get(&handle, customer)?
        .and_then(|t| t.agent)
        .filter(|a| rec.agents.contains_key(a));
    Ok(Some(vec![account(agent.as_deref().unwrap_or(&rec.admin))?]))
}

/// Whether a send is entity traffic: to an entity, or on behalf of one.
pub(super) fn is_entity_send(ctx: &RelayCtx, s: &Send) -> Result<bool, RequestError> {
    if !s.on_behalf_of.is_empty() {
        return Ok(true);
    }
    if !s.group.is_empty() {
        return Ok(false);
    }
    let to = account(&s.to)?;
    Ok(match to.handle() {
        Some(_) => ctx.store.entity_get(&to)?.is_some(),
        None => ctx.store.entity_by_phone(&to)?.is_some(),
    })
}

/// An entity send (validated, deduplicated and guarded by `requests::send`).
pub(super) async fn send(
    ctx: &RelayCtx,
    me: &DeviceId,
    msg_id: MsgId,
    s: Send,
    blobs: &[BlobId],
) -> Result<Body, RequestError> {
    if s.on_behalf_of.is_empty() {
        send_to_entity(ctx, me, msg_id, s, blobs).await
    } else {
        send_as_entity(ctx, me, msg_id, s, blobs).await
    }
}

/// A customer writes to the entity: one envelope per current recipient device.
async fn send_to_entity(
    ctx: &RelayCtx,
    me: &DeviceId,
    msg_id: MsgId,
    s: Send,
    blobs: &[BlobId],
) -> Result<Body, RequestError> {
    let (handle, addr) = entity_of(ctx, &s.to)?;
    let lists = route(ctx, &handle, &addr, &me.account).await?;
    let current: BTreeSet<(String, u32)> = lists
        .iter()
        .flat_map(|(a, ds)| ds.iter().map(move |&d| (a.clone(), d)))
        .collect();
    let addressed: BTreeSet<(String, u32)> = s
        .envelopes
        .iter()
        .map(|e| (e.account.clone(), e.device))
        .collect();
    if addressed.len() != s.envelopes.len() {
        return Err(RequestError::invalid("two envelopes for the same device"));
    }
    if addressed != current {
        return Err(GroupError::Mismatch(lists).into());
    }
    let now = crate::clock::now_ms();
    let size = super::send::first_size(&s.envelopes);
    let mut items = Vec::with_capacity(s.envelopes.len());
    for e in s.envelopes {
        let d = DeviceId::new(account(&e.account)?, e.device);
        items.push((
            d,
            QueueItem::EntityMessage {
                msg_id: msg_id.0,
                from: me.account.to_string(),
                from_device: me.device,
                timestamp_ms: now,
                olm_type: e.olm_type,
                ciphertext: e.ciphertext,
                kind: s.kind,
                entity: handle.to_string(),
                agent: String::new(),
                agent_device: 0,
                attribution: String::new(),
                customer: me.account.to_string(),
            },
        ));
    }
    let via = Via {
        entity: &handle,
        peer: handle.as_str(),
        size,
        blobs,
    };
    deliver(ctx, me, msg_id, now, items, via).await
}

/// An agent (or the administrator) answers a customer as the entity.
async fn send_as_entity(
    ctx: &RelayCtx,
    me: &DeviceId,
    msg_id: MsgId,
    s: Send,
    blobs: &[BlobId],
) -> Result<Body, RequestError> {
    let (handle, addr) = entity_of(ctx, &s.on_behalf_of)?;
    let customer = account(&s.to)?;
    let attribution = mailbox(
        addr.send(CheckReply {
            sender: me.account.clone(),
            customer: customer.clone(),
        })
        .await,
    )??;
    let current: BTreeSet<u32> = ctx
        .store
        .devices(&customer)?
        .into_iter()
        .map(|(no, _)| no)
        .collect();
    if current.is_empty() {
        return Err(RequestError::UnknownAccount);
    }
    super::send::check_addressed(&s.envelopes, current)?;
    let now = crate::clock::now_ms();
    let size = super::send::first_size(&s.envelopes);
    let items = s
        .envelopes
        .into_iter()
        .map(|e| {
            (
                DeviceId::new(customer.clone(), e.device),
                QueueItem::EntityMessage {
                    msg_id: msg_id.0,
                    from: handle.to_string(),
                    from_device: 0,
                    timestamp_ms: now,
                    olm_type: e.olm_type,
                    ciphertext: e.ciphertext,
                    kind: s.kind,
                    entity: handle.to_string(),
                    agent: me.account.to_string(),
                    agent_device: me.device,
                    attribution: attribution.clone(),
                    customer: customer.to_string(),
                },
            )
        })
        .collect();
    let via = Via {
        entity: &handle,
        peer: customer.as_str(),
        size,
        blobs,
    };
    deliver(ctx, me, msg_id, now, items, via).await
}

/// How an entity send goes: through which entity, to whom (for the sender's abuse
/// metrics), how big its first envelope is, and the blobs it names.
struct Via<'a> {
    entity: &'a AccountId,
    peer: &'a str,
    size: u32,
    blobs: &'a [BlobId],
}

use super::requests::recipient_accounts;

/// Passes on the right to fetch the send's blobs, queues the entries with the msg_id's dedupe
/// record, waits for durability, answers ServerAck.
async fn deliver(
    ctx: &RelayCtx,
    me: &DeviceId,
    msg_id: MsgId,
    now: u64,
    items: Vec<(DeviceId, QueueItem)>,
    via: Via<'_>,
) -> Result<Body, RequestError> {
    let Via {
        entity,
        peer,
        size,
        blobs,
    } = via;
    // Past the device check, as a person-to-person send: a MISMATCHED_DEVICES answer and its
    // retry cost one token between them.
    super::abuse::admit_send(ctx, &me.account, peer)?;
    let recipients = recipient_accounts(items.iter().map(|(d, _)| d));
    if !blobs.is_empty() {
        // The recipients, and the entity's staff: an agent the thread is handed to later
        // can fetch the media sent before.
        let accounts: Vec<AccountId> = recipients.iter().filter_map(|a| account(a).ok()).collect();
        let mut scopes: Vec<BlobScope<'_>> = accounts.iter().map(BlobScope::Account).collect();
        scopes.push(BlobScope::Entity(entity));
        super::blobs::grant(ctx, blobs, &scopes)?;
    }
    let entries = items
        .into_iter()
        .map(|(d, item)| {
            let rec = QueueRecord {
                enqueued_at_ms: now,
                item,
            };
            (d, rec)
        })
        .collect();
    // The entries and the dedupe record in one log record (see `store::msglog`).
    let timestamp_ms =
        match ctx
            .store
            .send_append(&me.account, &msg_id, now, recipients, entries)?
        {
            crate::store::msglog::Appended::Written { .. } => now,
            crate::store::msglog::Appended::Duplicate { timestamp_ms, .. } => timestamp_ms,
        };
    // A thread with a business is one the customer opened: counted as a conversation both
    // sides joined.
    super::abuse::count_send(
        ctx,
        &me.account,
        crate::store::SendFacts {
            peer,
            symmetric: true,
            size,
        },
    )?;
    // sled's writes of the entity's routing (and any blob rights) and the log's record.
    ctx.durability.wait().await?;
    crate::telemetry::metrics::message_accepted();
    Ok(Body::ServerAck(ServerAck {
        msg_id: msg_id.0.to_vec(),
        timestamp_ms,
    }))
}

/// Checks the bounds of a payload's envelopes (as a send's).
fn check_envelopes(ctx: &RelayCtx, envelopes: &[Envelope]) -> Result<(), RequestError> {
    let m = &ctx.cfg.messaging;
    if envelopes.is_empty() || envelopes.len() > to_usize(m.max_envelopes) {
        return Err(RequestError::invalid(format!(
            "an assignment payload carries 1..={} envelopes",
            m.max_envelopes
        )));
    }
    if envelopes
        .iter()
        .any(|e| e.ciphertext.is_empty() || e.ciphertext.len() > to_usize(m.max_ciphertext_bytes))
    {
        return Err(RequestError::invalid(format!(
            "each payload ciphertext must be 1..={} bytes",
            m.max_ciphertext_bytes
        )));
    }
    Ok(())
}

fn optional_account(s: &str, what: &str) -> Result<AccountId, RequestError> {
    if s.is_empty() {
        return Err(RequestError::invalid(format!("{what} is required")));
    }
    account(s)
}

/// EntityRequest from the administrator or an agent.
pub(super) async fn request(
    ctx: &RelayCtx,
    caller: &Caller,
    r: EntityRequest,
) -> Result<Body, RequestError> {
    let me = device_of(caller)?.clone();
    let (handle, addr) = entity_of(ctx, &r.entity)?;
    let who = Who::Account(me.account.clone());
    let op = EntityOp::try_from(r.op).unwrap_or(EntityOp::Unspecified);
    let rec = ctx
        .store
        .entity_get(&handle)?
        .ok_or_else(|| EntityError::UnknownEntity(handle.to_string()))?;
    let max_agents = to_usize(ctx.cfg.entities.max_agents);
    let mut view_customer = None;
    match op {
        EntityOp::Unspecified => {
            return Err(RequestError::invalid(
                "op must be INFO, ASSIGN, RELEASE, CLOSE, ADD_AGENT or REMOVE_AGENT",
            ))
        }
        EntityOp::Info => {
            if !r.customer.is_empty() {
                view_customer = Some(account(&r.customer)?);
            }
        }
        EntityOp::Assign => {
            let customer = optional_account(&r.customer, "customer")?;
            let agent = optional_account(&r.agent, "agent")?;
            // Who may assign is checked before the payload, so an agent trying to assign
            // learns that, not that its envelopes are wrong; the actor checks again.
            if me.account.as_str() != rec.admin {
                return Err(EntityError::NotAdmin(handle.to_string()).into());
            }
            if !rec.agents.contains_key(agent.as_str()) {
                return Err(EntityError::NotAgent(agent.to_string()).into());
            }
            check_envelopes(ctx, &r.payload)?;
            let current: BTreeSet<u32> = ctx
                .store
                .devices(&agent)?
                .into_iter()
                .map(|(no, _)| no)
                .collect();
            let addressed: BTreeSet<u32> = r.payload.iter().map(|e| e.device).collect();
            if addressed.len() != r.payload.len() {
                return Err(RequestError::invalid(
                    "two payload envelopes for the same device",
                ));
            }
            if addressed != current {
                return Err(RequestError::MismatchedDevices(
                    current.into_iter().collect(),
                ));
            }
            let change = mailbox(
                addr.send(Assign {
                    by: who.clone(),
                    customer: customer.clone(),
                    agent: agent.clone(),
                })
                .await,
            )??;
            // The handover travels end to end from the administrator's device to the agent's;
            // it is queued with the assignment and both become durable before the answer.
            let now = crate::clock::now_ms();
            let msg_id = MsgId::random();
            for e in r.payload {
                let rec = QueueRecord {
                    enqueued_at_ms: now,
                    item: QueueItem::EntityMessage {
                        msg_id: msg_id.0,
                        from: me.account.to_string(),
                        from_device: me.device,
                        timestamp_ms: now,
                        olm_type: e.olm_type,
                        ciphertext: e.ciphertext,
                        kind: MessageKind::Control as i32,
                        entity: handle.to_string(),
                        agent: String::new(),
                        agent_device: 0,
                        attribution: String::new(),
                        customer: customer.to_string(),
                    },
                };
                ctx.directory
                    .enqueue(&DeviceId::new(agent.clone(), e.device), rec)
                    .await?;
            }
            announce(ctx, &handle, &rec.admin, &[change]).await?;
        }
        EntityOp::Release | EntityOp::Close => {
            let customer = optional_account(&r.customer, "customer")?;
            let by = who.clone();
            let sent = if op == EntityOp::Release {
                addr.send(Release { by, customer }).await
            } else {
                addr.send(Close { by, customer }).await
            };
            let change = mailbox(sent)??;
            announce(ctx, &handle, &rec.admin, &[change]).await?;
        }
        EntityOp::AddAgent => {
            let agent = optional_account(&r.agent, "agent")?;
            mailbox(
                addr.send(AddAgent {
                    by: who.clone(),
                    agent: agent.clone(),
                    display_name: r.display_name,
                    max_agents,
                })
                .await,
            )??;
            audit(
                ctx,
                &who.label(),
                "entity agent added",
                &handle,
                None,
                Some(agent.as_str()),
            );
        }
        EntityOp::RemoveAgent => {
            let agent = optional_account(&r.agent, "agent")?;
            let (_, changes) = mailbox(
                addr.send(RemoveAgent {
                    by: who.clone(),
                    agent: agent.clone(),
                })
                .await,
            )??;
            announce(ctx, &handle, &rec.admin, &changes).await?;
            audit(
                ctx,
                &who.label(),
                "entity agent removed",
                &handle,
                None,
                Some(agent.as_str()),
            );
        }
    }
    let view = mailbox(
        addr.send(View {
            asker: who,
            customer: view_customer,
        })
        .await,
    )??;
    Ok(Body::EntityInfo(info(&view)))
}

/// The wire form of a view.
pub fn info(v: &EntityView) -> EntityInfo {
    EntityInfo {
        entity: v.record.handle.clone(),
        display_name: v.record.display_name.clone(),
        admin: v.record.admin.clone(),
        agents: v
            .record
            .agents
            .iter()
            .map(|(a, name)| EntityAgent {
                account: a.clone(),
                display_name: name.clone(),
                open_threads: v.load.get(a).copied().unwrap_or(0),
            })
            .collect(),
        threads: v
            .threads
            .iter()
            .map(|(c, t)| EntityThread {
                customer: c.to_string(),
                agent: t.agent.clone().unwrap_or_default(),
                open: t.open,
                updated_ms: t.updated_ms,
            })
            .collect(),
        policy: v.record.policy.as_str().to_owned(),
        copy_admin: v.record.copy_admin,
        phone: v.record.phone.clone(),
    }
}

/// Tells everyone concerned that threads' routing changed: an EntityEvent to the
/// administrator and the agents before and after, a DevicesChanged for the entity to the
/// customer (its client re-fetches the recipient devices); waits for durability; then writes
/// one audit line per change (ids only).
pub async fn announce(
    ctx: &RelayCtx,
    handle: &AccountId,
    admin: &str,
    changes: &[Change],
) -> Result<(), RequestError> {
    let now = crate::clock::now_ms();
    for ch in changes {
        let item = QueueItem::EntityEvent {
            entity: handle.to_string(),
            customer: ch.customer.to_string(),
            kind: ch.kind as i32,
            agent: ch
                .agent
                .clone()
                .or_else(|| ch.previous.clone())
                .unwrap_or_default(),
            actor: ch.by.clone(),
            timestamp_ms: now,
        };
        let tell: BTreeSet<&str> = [Some(admin), ch.agent.as_deref(), ch.previous.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        for a in tell {
            if let Ok(a) = AccountId::parse(a) {
                ctx.directory.enqueue_account(&a, item.clone()).await?;
            }
        }
        let changed = QueueItem::DevicesChanged {
            account: handle.to_string(),
            devices: Vec::new(),
        };
        ctx.directory.enqueue_account(&ch.customer, changed).await?;
    }
    ctx.durability.wait().await?;
    for ch in changes {
        let what = match ch.kind {
            EntityEventKind::Assigned => "entity thread assigned",
            EntityEventKind::Released => "entity thread released",
            EntityEventKind::Closed => "entity thread closed",
            EntityEventKind::AgentRemoved => "entity thread returned (agent removed)",
            EntityEventKind::Unspecified => "entity thread changed",
        };
        audit_change(ctx, ch, what, handle);
        tracing::info!(entity = %handle, customer = %ch.customer, agent = ?ch.agent, previous = ?ch.previous, by = %ch.by, "{}.", capitalise(what));
    }
    Ok(())
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn audit_change(ctx: &RelayCtx, ch: &Change, what: &str, handle: &AccountId) {
    let mut target = BTreeMap::from([
        ("entity".to_owned(), handle.to_string()),
        ("customer".to_owned(), ch.customer.to_string()),
    ]);
    if let Some(a) = &ch.agent {
        target.insert("agent".into(), a.clone());
    }
    if let Some(p) = &ch.previous {
        target.insert("previous".into(), p.clone());
    }
    write_audit(ctx, &ch.by, what, target);
}

/// One audit line for a client-initiated entity change.
pub fn audit(
    ctx: &RelayCtx,
    who: &str,
    what: &str,
    handle: &AccountId,
    customer: Option<&str>,
    agent: Option<&str>,
) {
    let mut target = BTreeMap::from([("entity".to_owned(), handle.to_string())]);
    if let Some(c) = customer {
        target.insert("customer".into(), c.to_owned());
    }
    if let Some(a) = agent {
        target.insert("agent".into(), a.to_owned());
    }
    write_audit(ctx, who, what, target);
}

fn write_audit(ctx: &RelayCtx, who: &str, what: &str, target: BTreeMap<String, String>) {
    ctx.audit
        .record(&AuditEntry::now(who, what, target, "ok", 0));
}
