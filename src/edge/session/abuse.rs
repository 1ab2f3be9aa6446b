//! Abuse on the session side: blocking requests, the ban check every traffic-making request
//! passes, the per-account rate limits of sends and new conversations, and counting a send in
//! the sender's metrics. Verdicts are the abuse monitor's (`actors::abuse`); this only
//! enforces them.

use super::requests::{account, device_of};
use super::{Caller, RequestError};
use crate::edge::RelayCtx;
use crate::ids::AccountId;
use crate::store::SendFacts;
use crate::wire::messages::{server_frame, Block, BlockedList};

type Body = server_frame::Body;

fn window_ms(ctx: &RelayCtx) -> u64 {
    u64::try_from(ctx.cfg.abuse.window.as_millis()).unwrap_or(u64::MAX)
}

/// Refuses with BANNED while `account` is banned.
pub(super) fn not_banned(ctx: &RelayCtx, account: &AccountId) -> Result<(), RequestError> {
    match ctx.store.ban_of(account, crate::clock::now_ms())? {
        Some(ban) => Err(RequestError::Banned {
            until_ms: ban.until_ms,
        }),
        None => Ok(()),
    }
}

/// Takes a send token of `me`, and a new-conversation token when `peer` (an account, or a
/// group id) was not messaged in the window.
///
/// A bridged MQTT device is not limited here: the site's broker and its ACL meter it, the
/// operator provisioned it, and a refusal would only make the bridge hold the message at the
/// broker (`edge::mqtt::device`). Its traffic is still counted in its metrics.
pub(super) fn admit_send(ctx: &RelayCtx, me: &AccountId, peer: &str) -> Result<(), RequestError> {
    if ctx.store.is_bridged(me)? {
        return Ok(());
    }
    let now = crate::clock::now_ms();
    let new_peer = !ctx.store.abuse_knows_peer(me, peer, now, window_ms(ctx))?;
    let mut limits = ctx.limits();
    limits
        .sends_per_account
        .check(me.as_str(), now)
        .map_err(|r| RequestError::RateLimited(r.0))?;
    if new_peer {
        limits
            .new_conversations_per_account
            .check(me.as_str(), now)
            .map_err(|r| RequestError::RateLimited(r.0))?;
    }
    Ok(())
}

/// Counts an accepted send in `me`'s metrics (before the send's durability barrier, which
/// makes it durable too).
pub(super) fn count_send(
    ctx: &RelayCtx,
    me: &AccountId,
    facts: SendFacts<'_>,
) -> Result<(), RequestError> {
    let now = crate::clock::now_ms();
    ctx.store.abuse_count_send(me, facts, now, window_ms(ctx))?;
    Ok(())
}

/// Block / unblock: answered with the account's block list.
pub(super) async fn block(ctx: &RelayCtx, caller: &Caller, b: Block) -> Result<Body, RequestError> {
    let me = device_of(caller)?.account.clone();
    let other = account(&b.account)?;
    if other == me {
        return Err(RequestError::invalid("an account cannot block itself"));
    }
    if !ctx.store.account_exists(&other)? {
        return Err(RequestError::UnknownAccount);
    }
    let changed = ctx.store.block_set(&me, &other, !b.unblock)?;
    if changed && !b.unblock {
        ctx.store
            .abuse_count_block(&other, crate::clock::now_ms(), window_ms(ctx))?;
    }
    ctx.durability.wait().await?;
    tracing::debug!(blocker = %me, blocked = %other, unblock = b.unblock, "Block list changed.");
    blocked(ctx, caller)
}

/// GetBlocked: the account's block list.
pub(super) fn blocked(ctx: &RelayCtx, caller: &Caller) -> Result<Body, RequestError> {
    let me = &device_of(caller)?.account;
    Ok(Body::Blocked(BlockedList {
        accounts: ctx
            .store
            .blocked_by(me)?
            .into_iter()
            .map(|a| a.to_string())
            .collect(),
    }))
}
