//! Account requests: linked devices, contacts, presence privacy, muting, push endpoints.

use super::{Caller, RequestError};
use crate::actors::thread::{self, GroupError, Info};
use crate::edge::RelayCtx;
use crate::ids::{AccountId, DeviceId, MAX_DEVICES_PER_ACCOUNT};
use crate::registration::phone;
use crate::store::{QueueItem, MUTE_FOREVER};
use crate::wire::messages::{
    server_frame, ContactsResult, Devices, Done, GetDevices, LinkDevice, Linked, Mute, Muted,
    PresencePrivacy, RegisterPush, ServerFrame, SetPrivacy, UnlinkDevice, UploadContacts,
};

type Body = server_frame::Body;

pub use crate::wire::messages::MAX_CONTACTS;
/// Longest push endpoint URL.
pub const MAX_ENDPOINT_BYTES: usize = 2_048;
/// Longest link secret.
pub const MAX_LINK_SECRET_BYTES: usize = 32;

fn primary(caller: &Caller) -> Result<&DeviceId, RequestError> {
    let me = super::requests::device_of(caller)?;
    if me.device != 0 {
        return Err(RequestError::NotAllowed(
            "only the primary device (device 0) may do that".into(),
        ));
    }
    Ok(me)
}

/// Tells everyone who talks to `account` (contacts who have it, members of its groups, and its
/// own devices) that its device list changed, then waits for durability.
pub(crate) async fn announce_devices(
    ctx: &RelayCtx,
    account: &AccountId,
) -> Result<(), RequestError> {
    announce_devices_to(ctx, account, true).await
}

/// [`announce_devices`], to the account's own devices only if `to_self`.
pub(crate) async fn announce_devices_to(
    ctx: &RelayCtx,
    account: &AccountId,
    to_self: bool,
) -> Result<(), RequestError> {
    let devices: Vec<u32> = ctx
        .store
        .devices(account)?
        .into_iter()
        .map(|(no, _)| no)
        .collect();
    let mut to: std::collections::BTreeSet<AccountId> =
        ctx.store.contact_of(account)?.into_iter().collect();
    for g in ctx.store.groups_of(account)? {
        if let Some(rec) = ctx.store.group(&g)? {
            to.extend(rec.members.keys().filter_map(|a| AccountId::parse(a).ok()));
        }
    }
    if to_self {
        to.insert(account.clone());
    }
    let item = QueueItem::DevicesChanged {
        account: account.to_string(),
        devices,
    };
    for a in &to {
        ctx.directory.enqueue_account(a, item.clone()).await?;
    }
    ctx.durability.wait().await?;
    Ok(())
}

/// LinkDevice: the primary adds a companion by the key in its pairing code.
pub(super) async fn link(
    ctx: &RelayCtx,
    caller: &Caller,
    l: LinkDevice,
) -> Result<Body, RequestError> {
    let me = primary(caller)?.clone();
    let key = super::requests::key32(&l.noise_static, "noise_static")?;
    if l.secret.is_empty() || l.secret.len() > MAX_LINK_SECRET_BYTES {
        return Err(RequestError::invalid(format!(
            "secret must be 1..={MAX_LINK_SECRET_BYTES} bytes"
        )));
    }
    if ctx.store.devices(&me.account)?.len() >= MAX_DEVICES_PER_ACCOUNT {
        return Err(RequestError::invalid(format!(
            "an account has at most {MAX_DEVICES_PER_ACCOUNT} devices"
        )));
    }
    let Some(d) = ctx
        .store
        .link_companion(&me.account, key, &l.secret, crate::clock::now_ms())?
    else {
        return Err(RequestError::invalid(
            "that device key is already registered",
        ));
    };
    announce_devices(ctx, &me.account).await?;
    tracing::info!(device = %d, "Companion device linked.");
    Ok(Body::Linked(Linked { device: d.device }))
}

/// UnlinkDevice: the primary removes a companion, its keys and its queue; or a companion
/// removes itself ("log out" on a linked browser or terminal).
pub(super) async fn unlink(
    ctx: &RelayCtx,
    caller: &Caller,
    u: UnlinkDevice,
) -> Result<Body, RequestError> {
    let caller_device = super::requests::device_of(caller)?;
    let me = if u.device != 0 && u.device == caller_device.device {
        caller_device.clone()
    } else {
        primary(caller)?.clone()
    };
    if u.device == 0 {
        return Err(RequestError::invalid(
            "the primary cannot unlink itself; register again instead",
        ));
    }
    let d = DeviceId::new(me.account.clone(), u.device);
    if !ctx.store.unlink(&d)? {
        return Err(RequestError::invalid(format!("no device {}", u.device)));
    }
    if let Some(addr) = ctx.directory.get_live(&d) {
        addr.do_send(crate::actors::device::Revoke);
    }
    announce_devices(ctx, &me.account).await?;
    tracing::info!(device = %d, "Companion device unlinked.");
    Ok(Body::Done(Done {}))
}

/// GetDevices: an account's current devices.
pub(super) fn devices(
    ctx: &RelayCtx,
    caller: &Caller,
    g: GetDevices,
) -> Result<Body, RequestError> {
    super::requests::device_of(caller)?;
    let a = super::requests::account(&g.account)?;
    let devices: Vec<u32> = ctx
        .store
        .devices(&a)?
        .into_iter()
        .map(|(no, _)| no)
        .collect();
    if devices.is_empty() {
        return Err(RequestError::UnknownAccount);
    }
    Ok(Body::Devices(Devices {
        bridged: ctx.store.is_bridged(&a)?,
        account: a.to_string(),
        devices,
        recipients: Vec::new(),
    }))
}

/// UploadContacts: replaces the list; answers which numbers are registered, and pushes the
/// presence this account may now see.
pub(super) async fn contacts(
    ctx: &RelayCtx,
    caller: &Caller,
    u: UploadContacts,
) -> Result<Body, RequestError> {
    let me = super::requests::device_of(caller)?.clone();
    if u.numbers.len() > MAX_CONTACTS {
        return Err(RequestError::invalid(format!(
            "at most {MAX_CONTACTS} contacts"
        )));
    }
    let country = ctx.cfg.registration.default_country.as_ref();
    let (mut valid, mut invalid) = (Vec::new(), Vec::new());
    for n in &u.numbers {
        // A contact is a phone number, or an operator-created `@handle` (a bridged device).
        let parsed = if n.starts_with('@') {
            AccountId::parse(n).map_err(|_| ())
        } else {
            phone::normalise(n, country).map_err(|_| ())
        };
        match parsed {
            Ok(a) if !valid.contains(&a) => valid.push(a),
            Ok(_) => {}
            Err(_) => invalid.push(n.chars().take(40).collect()),
        }
    }
    // Discovery answers which numbers are registered, so lookups are metered: numbers the
    // account did not hold already, per account and per address.
    let held: std::collections::HashSet<AccountId> =
        ctx.store.contacts(&me.account)?.into_iter().collect();
    let fresh = valid.iter().filter(|a| !held.contains(*a)).count();
    if fresh > 0 {
        let n = u32::try_from(fresh).unwrap_or(u32::MAX);
        let now = crate::clock::now_ms();
        let mut limits = ctx.limits();
        let ip = caller.peer.ip().to_string();
        let account = me.account.as_str();
        limits
            .contact_lookups_per_account
            .check_n(account, n, now)
            .and_then(|()| {
                limits.contact_lookups_per_ip.check_n(&ip, n, now).inspect_err(|_| {
                    limits.contact_lookups_per_account.give_back(account, n);
                })
            })
            .map_err(|r| {
                tracing::info!(account = %me.account, new_numbers = fresh, "Contact discovery over its hourly limit.");
                RequestError::RateLimited(r.0)
            })?;
    }
    ctx.store.contacts_set(&me.account, &valid)?;
    let mut registered = Vec::new();
    for a in &valid {
        if ctx.store.account_exists(a)? {
            registered.push(a.to_string());
        }
    }
    ctx.durability.wait().await?;
    for p in ctx.presence.snapshot_for(&ctx.store, &me.account)? {
        ctx.directory.ephemeral(
            &me,
            ServerFrame {
                req_id: 0,
                body: Some(Body::Presence(p)),
            },
        );
    }
    Ok(Body::Contacts(ContactsResult {
        registered,
        invalid,
    }))
}

/// SetPrivacy: who may see this account's presence.
pub(super) async fn privacy(
    ctx: &RelayCtx,
    caller: &Caller,
    p: SetPrivacy,
) -> Result<Body, RequestError> {
    let me = super::requests::device_of(caller)?;
    let value = PresencePrivacy::try_from(p.presence).unwrap_or(PresencePrivacy::Unspecified);
    if value == PresencePrivacy::Unspecified {
        return Err(RequestError::invalid(
            "presence must be EVERYONE, CONTACTS or NOBODY",
        ));
    }
    let byte = u8::try_from(value as i32).unwrap_or(0);
    ctx.store.privacy_set(&me.account, byte)?;
    ctx.durability.wait().await?;
    Ok(Body::Done(Done {}))
}

/// Mute: until a time, forever, or (groups) in proportion to the number of participants.
pub(super) async fn mute(ctx: &RelayCtx, caller: &Caller, m: Mute) -> Result<Body, RequestError> {
    let me = super::requests::device_of(caller)?.account.clone();
    let now = crate::clock::now_ms();
    let members = if thread::is_group_id(&m.thread) {
        let addr = ctx
            .directory
            .thread(&m.thread)?
            .ok_or(GroupError::Unknown)?;
        let rec = addr.send(Info { asker: me.clone() }).await.map_err(|_| {
            RequestError::Directory(crate::actors::directory::DirectoryError::Unavailable)
        })??;
        Some(rec.members.len())
    } else {
        super::requests::account(&m.thread)?;
        None
    };
    if m.unmute {
        ctx.store.mute_clear(&me, &m.thread)?;
        ctx.durability.wait().await?;
        return Ok(Body::Muted(Muted {
            thread: m.thread,
            until_ms: 0,
            forever: false,
        }));
    }
    let until = if m.forever {
        MUTE_FOREVER
    } else if m.until_ms > 0 {
        if m.until_ms <= now {
            return Err(RequestError::invalid("until_ms is in the past"));
        }
        m.until_ms
    } else if let Some(n) = members {
        let per = ctx.cfg.muting.per_participant;
        let span = per
            .saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
            .min(ctx.cfg.muting.max);
        now.saturating_add(u64::try_from(span.as_millis()).unwrap_or(u64::MAX))
    } else {
        MUTE_FOREVER
    };
    ctx.store.mute_set(&me, &m.thread, until)?;
    ctx.durability.wait().await?;
    let forever = until == MUTE_FOREVER;
    Ok(Body::Muted(Muted {
        thread: m.thread,
        until_ms: if forever { 0 } else { until },
        forever,
    }))
}

/// RegisterPush: where to wake this device when it is offline.
pub(super) async fn push(
    ctx: &RelayCtx,
    caller: &Caller,
    r: RegisterPush,
) -> Result<Body, RequestError> {
    let me = super::requests::device_of(caller)?;
    let url = r.endpoint.trim();
    if url.is_empty() {
        ctx.store.push_endpoint_set(me, None)?;
    } else {
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url.len() <= MAX_ENDPOINT_BYTES;
        if !ok {
            return Err(RequestError::invalid(format!(
                "endpoint must be an http(s) URL of at most {MAX_ENDPOINT_BYTES} bytes"
            )));
        }
        if let Err(e) = ctx.push_policy.check(url).await {
            tracing::info!(device = %me, error = %e, "Push endpoint refused.");
            return Err(RequestError::invalid(format!("push endpoint refused: {e}")));
        }
        ctx.store.push_endpoint_set(me, Some(url))?;
    }
    ctx.durability.wait().await?;
    Ok(Body::Done(Done {}))
}
