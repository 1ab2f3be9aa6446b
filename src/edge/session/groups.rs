//! Group requests: create, update, info, and the membership check of a group send. The
//! group's `Thread` actor decides; this file parses, bounds and announces.

use super::{Caller, RequestError};
use crate::actors::thread::{self, CheckSend, GroupError, Info, Members, Update};
use crate::config::to_usize;
use crate::edge::RelayCtx;
use crate::ids::{AccountId, DeviceId};
use crate::store::{GroupRecord, QueueItem};
use crate::wire::messages::{
    server_frame, ChatStateEvent, CreateGroup, GetGroup, GroupInfo, GroupMember, GroupOp,
    ServerFrame, UpdateGroup,
};

type Body = server_frame::Body;

fn parse_accounts(list: &[String]) -> Result<Vec<AccountId>, RequestError> {
    list.iter()
        .map(|a| AccountId::parse(a).map_err(|e| RequestError::invalid(e.to_string())))
        .collect()
}

fn mailbox<T>(r: Result<T, actix::MailboxError>) -> Result<T, RequestError> {
    r.map_err(|_| RequestError::Directory(crate::actors::directory::DirectoryError::Unavailable))
}

/// The group's actor, or UNKNOWN_GROUP.
fn thread_of(ctx: &RelayCtx, id: &str) -> Result<actix::Addr<thread::Thread>, RequestError> {
    if !thread::is_group_id(id) {
        return Err(GroupError::Unknown.into());
    }
    ctx.directory.thread(id)?.ok_or(GroupError::Unknown.into())
}

/// The group as clients see it: members with their current devices.
pub(super) fn info(ctx: &RelayCtx, id: &str, rec: &GroupRecord) -> Result<GroupInfo, RequestError> {
    let mut members = Vec::with_capacity(rec.members.len());
    for (account, &admin) in &rec.members {
        let (devices, bridged) = match AccountId::parse(account) {
            Ok(a) => (
                ctx.store
                    .devices(&a)?
                    .into_iter()
                    .map(|(no, _)| no)
                    .collect(),
                ctx.store.is_bridged(&a)?,
            ),
            Err(_) => (Vec::new(), false),
        };
        members.push(GroupMember {
            account: account.clone(),
            admin,
            devices,
            bridged,
        });
    }
    Ok(GroupInfo {
        group: id.to_owned(),
        subject: rec.subject.clone(),
        members,
        version: rec.version,
    })
}

/// Queues a system event about `id` to every device of `to`, then waits for durability.
async fn announce(
    ctx: &RelayCtx,
    id: &str,
    rec: &GroupRecord,
    actor: &AccountId,
    op: GroupOp,
    accounts: &[AccountId],
    to: &[AccountId],
) -> Result<(), RequestError> {
    let item = QueueItem::GroupEvent {
        group: id.to_owned(),
        version: rec.version,
        actor: actor.to_string(),
        op: op as i32,
        accounts: accounts.iter().map(|a| a.to_string()).collect(),
        subject: rec.subject.clone(),
        timestamp_ms: crate::clock::now_ms(),
    };
    for a in to {
        ctx.directory.enqueue_account(a, item.clone()).await?;
    }
    ctx.durability.wait().await?;
    Ok(())
}

/// CreateGroup: the creator becomes the first admin.
pub(super) async fn create(
    ctx: &RelayCtx,
    caller: &Caller,
    c: CreateGroup,
) -> Result<Body, RequestError> {
    let me = super::requests::device_of(caller)?.account.clone();
    if c.subject.len() > thread::MAX_SUBJECT_BYTES {
        return Err(RequestError::invalid(format!(
            "subject is longer than {} bytes",
            thread::MAX_SUBJECT_BYTES
        )));
    }
    if let Some(why) = crate::names::refusal("a group subject", &c.subject) {
        return Err(RequestError::invalid(why));
    }
    let members = parse_accounts(&c.members)?;
    if members.len() + 1 > to_usize(ctx.cfg.groups.max_members) {
        return Err(RequestError::invalid(format!(
            "a group has at most {} members",
            ctx.cfg.groups.max_members
        )));
    }
    for m in &members {
        if !ctx.store.account_exists(m)? {
            return Err(GroupError::UnknownAccount(m.to_string()).into());
        }
    }
    let id = thread::new_group_id();
    let rec = thread::new_record(&me, &c.subject, &members, crate::clock::now_ms());
    ctx.store.group_put(&id, &rec, None)?;
    let all: Vec<AccountId> = rec
        .members
        .keys()
        .filter_map(|a| AccountId::parse(a).ok())
        .collect();
    announce(ctx, &id, &rec, &me, GroupOp::Create, &members, &all).await?;
    tracing::info!(group = %id, members = rec.members.len(), "Group created.");
    Ok(Body::GroupInfo(info(ctx, &id, &rec)?))
}

/// UpdateGroup: add, remove, leave, promote, set subject.
pub(super) async fn update(
    ctx: &RelayCtx,
    caller: &Caller,
    u: UpdateGroup,
) -> Result<Body, RequestError> {
    let me = super::requests::device_of(caller)?.account.clone();
    let op = GroupOp::try_from(u.op).unwrap_or(GroupOp::Unspecified);
    let accounts = parse_accounts(&u.accounts)?;
    let addr = thread_of(ctx, &u.group)?;
    let update = Update {
        actor: me.clone(),
        op,
        accounts: accounts.clone(),
        subject: u.subject,
        max_members: to_usize(ctx.cfg.groups.max_members),
        by_operator: false,
    };
    let (rec, tell) = mailbox(addr.send(update).await)??;
    announce(ctx, &u.group, &rec, &me, op, &accounts, &tell).await?;
    Ok(Body::GroupInfo(info(ctx, &u.group, &rec)?))
}

/// The operator adds `account` to `group` (a bridged device being provisioned). Members are
/// told as for any addition; the announced actor is the added account itself.
pub async fn operator_add(
    ctx: &RelayCtx,
    group: &str,
    account: &AccountId,
) -> Result<(), RequestError> {
    let addr = thread_of(ctx, group)?;
    let update = Update {
        actor: account.clone(),
        op: GroupOp::Add,
        accounts: vec![account.clone()],
        subject: String::new(),
        max_members: to_usize(ctx.cfg.groups.max_members),
        by_operator: true,
    };
    let (rec, tell) = mailbox(addr.send(update).await)??;
    announce(
        ctx,
        group,
        &rec,
        account,
        GroupOp::Add,
        std::slice::from_ref(account),
        &tell,
    )
    .await
}

/// GetGroup: members only.
pub(super) async fn get(
    ctx: &RelayCtx,
    caller: &Caller,
    g: GetGroup,
) -> Result<Body, RequestError> {
    let me = super::requests::device_of(caller)?.account.clone();
    let addr = thread_of(ctx, &g.group)?;
    let rec = mailbox(addr.send(Info { asker: me }).await)??;
    Ok(Body::GroupInfo(info(ctx, &g.group, &rec)?))
}

/// Checks a group send's envelopes against the membership, atomically with membership
/// changes (the thread actor serialises both).
pub(super) async fn check_send(
    ctx: &RelayCtx,
    sender: &DeviceId,
    group: &str,
    addressed: std::collections::BTreeSet<(String, u32)>,
) -> Result<(), RequestError> {
    let addr = thread_of(ctx, group)?;
    mailbox(
        addr.send(CheckSend {
            sender: sender.clone(),
            addressed,
        })
        .await,
    )??;
    Ok(())
}

/// A chat state to every online member device of a group but the sender's.
pub(super) async fn chat_state(
    ctx: &RelayCtx,
    me: &DeviceId,
    group: &str,
    state: i32,
) -> Result<(), RequestError> {
    let addr = thread_of(ctx, group)?;
    let members = mailbox(
        addr.send(Members {
            asker: me.account.clone(),
        })
        .await,
    )??;
    let event = ChatStateEvent {
        from: me.account.to_string(),
        from_device: me.device,
        state,
        group: group.to_owned(),
    };
    super::abuse::not_banned(ctx, &me.account)?;
    for m in members {
        // A blocker sees no typing from the account it blocked (proto: "Blocking").
        if m != me.account && ctx.store.is_blocked(&m, &me.account)? {
            continue;
        }
        for (no, _) in ctx.store.devices(&m)? {
            let d = DeviceId::new(m.clone(), no);
            if d != *me {
                let frame = ServerFrame {
                    req_id: 0,
                    body: Some(Body::ChatState(event.clone())),
                };
                ctx.directory.ephemeral(&d, frame);
            }
        }
    }
    Ok(())
}
