//! Accounts and devices for operators: list accounts, show one, remove a device.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{delete, get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::ErrorBody;
use super::{account_param, only_params, query_number, AdminError, State};
use crate::edge::RelayCtx;
use crate::ids::{DeviceId, DeviceNo};

/// Accounts per page when `limit` is not given, and the most a page may hold.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub(super) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_accounts)
        .service(show_account)
        .service(remove_device);
}

/// An account in a listing.
#[derive(Serialize, ToSchema)]
struct AccountRow {
    phone: String,
    devices: Vec<DeviceNo>,
    last_seen_ms: u64,
}

/// A page of accounts.
#[derive(Serialize, ToSchema)]
struct Page {
    accounts: Vec<AccountRow>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// GET /v1/accounts?limit=N&after=PHONE: accounts in phone-number order, a page at a time.
#[utoipa::path(
    tag = "accounts",
    params(
        ("limit" = Option<u32>, Query, description = "Accounts per page (default 100)", minimum = 1, maximum = 1000),
        ("after" = Option<String>, Query, description = "Start after this phone number (the previous page's `next`)", example = "+14155550101", pattern = "^(\\+[1-9][0-9]{7,14}|@[a-z0-9][a-z0-9.-]{0,31})$"),
    ),
    responses(
        (status = 200, description = "A page of accounts", body = Page),
        (status = 400, description = "A bad or unknown query parameter", body = ErrorBody),
    ),
)]
#[get("/accounts")]
async fn list_accounts(
    state: State,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, AdminError> {
    only_params(&q, &["limit", "after"])?;
    let limit = query_number(&q, "limit", DEFAULT_PAGE, 1..=MAX_PAGE)?;
    let after = match q.get("after") {
        Some(p) => Some(account_param(&state.ctx, "after", p)?),
        None => None,
    };
    let store = &state.ctx.store;
    // One more than asked tells whether there is a next page.
    let mut rows = store.accounts_page(after.as_ref(), limit + 1)?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let mut accounts = Vec::with_capacity(rows.len());
    for r in rows {
        accounts.push(AccountRow {
            last_seen_ms: store.last_seen(&r.account)?,
            phone: r.account.to_string(),
            devices: r.devices.iter().map(|(no, _)| *no).collect(),
        });
    }
    let next = more
        .then(|| accounts.last().map(|a| a.phone.clone()))
        .flatten();
    Ok(HttpResponse::Ok().json(Page { accounts, next }))
}

/// A device of an account.
#[derive(Serialize, ToSchema)]
struct AccountDevice {
    device: DeviceNo,
    registered_at_ms: u64,
    /// Whether a session of this device is attached now.
    online: bool,
    /// Entries waiting in its queue.
    queued: usize,
    /// The device's Noise static public key (hex): its transport identity.
    noise_static: String,
}

/// An account in detail.
#[derive(Serialize, ToSchema)]
struct AccountDetail {
    phone: String,
    last_seen_ms: u64,
    online: bool,
    devices: Vec<AccountDevice>,
    queued: usize,
}

/// GET /v1/accounts/{phone}: an account's devices, last seen and queued entries.
#[utoipa::path(
    tag = "accounts",
    params(("phone" = String, Path, description = "The account's phone number (E.164, or national in the default country)", example = "+14155550101", pattern = "^(\\+[1-9][0-9]{7,14}|@[a-z0-9][a-z0-9.-]{0,31})$")),
    responses(
        (status = 200, description = "The account", body = AccountDetail),
        (status = 400, description = "Not a phone number", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    ),
)]
#[get("/accounts/{phone}")]
async fn show_account(state: State, path: web::Path<String>) -> Result<HttpResponse, AdminError> {
    let ctx = &state.ctx;
    let account = account_param(ctx, "phone", &path)?;
    let devices = ctx.store.devices(&account)?;
    if devices.is_empty() {
        return Err(AdminError::NotFound(format!("no account {account}")));
    }
    let mut rows = Vec::with_capacity(devices.len());
    for (no, rec) in devices {
        let d = DeviceId::new(account.clone(), no);
        rows.push(AccountDevice {
            device: no,
            registered_at_ms: rec.registered_at_ms,
            online: is_online(ctx, &d).await,
            queued: ctx.store.queue_len(&d)?,
            noise_static: hex::encode(rec.noise_static),
        });
    }
    Ok(HttpResponse::Ok().json(AccountDetail {
        phone: account.to_string(),
        last_seen_ms: ctx.store.last_seen(&account)?,
        online: ctx.presence.is_online(&account),
        queued: rows.iter().map(|r| r.queued).sum(),
        devices: rows,
    }))
}

/// A removed device.
#[derive(Serialize, ToSchema)]
struct Removed {
    phone: String,
    device: DeviceNo,
    removed: bool,
}

/// DELETE /v1/accounts/{phone}/devices/{device}: removes a device as an unlink by the
/// account's primary does: its registration, keys, queue and token go, a connected session
/// is closed, and the account's correspondents learn the new device list. Removing device 0
/// (the primary, e.g. a lost phone) means the account must register again.
#[utoipa::path(
    tag = "accounts",
    params(
        ("phone" = String, Path, description = "The account's phone number", example = "+14155550101", pattern = "^(\\+[1-9][0-9]{7,14}|@[a-z0-9][a-z0-9.-]{0,31})$"),
        ("device" = u32, Path, description = "The device number (0 is the primary)"),
    ),
    responses(
        (status = 200, description = "The device was removed", body = Removed),
        (status = 400, description = "Not a phone number or not a device number", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
        (status = 503, description = "The relay is shutting down", body = ErrorBody),
    ),
)]
#[delete("/accounts/{phone}/devices/{device}")]
async fn remove_device(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AdminError> {
    let (p, dev) = path.into_inner();
    let account = account_param(&state.ctx, "phone", &p)?;
    let no: DeviceNo = dev.parse().map_err(|_| {
        AdminError::bad(
            "device",
            format!("must be a device number (0 is the primary), got {dev:?}"),
        )
    })?;
    let d = DeviceId::new(account.clone(), no);
    if !state.ctx.store.unlink(&d)? {
        return Err(AdminError::NotFound(format!("no device {no} on {account}")));
    }
    // The revoke and the announcement run on the relay's arbiter, where device actors live.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ctx = state.ctx.clone();
    let target = d.clone();
    let sent = state.relay.spawn_fn(move || {
        actix_rt::spawn(async move {
            let _ = tx.send(revoke_and_announce(ctx, target).await);
        });
    });
    if !sent {
        return Err(AdminError::Unavailable("the relay is shutting down".into()));
    }
    match rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(AdminError::Internal(e)),
        Err(_) => return Err(AdminError::Unavailable("the relay is shutting down".into())),
    }
    tracing::info!(device = %d, "Device removed by the operator.");
    Ok(HttpResponse::Ok().json(Removed {
        phone: account.to_string(),
        device: no,
        removed: true,
    }))
}

async fn revoke_and_announce(ctx: Arc<RelayCtx>, d: DeviceId) -> Result<(), String> {
    if let Some(addr) = ctx.directory.get_live(&d) {
        addr.do_send(crate::actors::device::Revoke);
    }
    crate::edge::session::announce_devices(&ctx, &d.account)
        .await
        .map_err(|e| e.to_string())
}

/// Whether the device has a session attached now. An actor that is not running has none;
/// one that stopped between lookup and question has none either.
async fn is_online(ctx: &RelayCtx, d: &DeviceId) -> bool {
    match ctx.directory.get_live(d) {
        Some(addr) => addr
            .send(crate::actors::device::IsOnline)
            .await
            .unwrap_or(false),
        None => false,
    }
}
