//! Abuse for operators: list accounts with their metrics and verdicts, show one with its
//! history, lift a ban, put an account on the watch list. The audit record of each request
//! comes from the scope (`mod.rs`); the monitor audits its own verdicts (`actors::abuse`).

use std::collections::{BTreeMap, HashMap};

use actix_web::{get, post, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::ErrorBody;
use super::{account_param, only_params, query_number, AdminError, State};
use crate::actors::abuse::{refresh_gauges, until_text};
use crate::edge::RelayCtx;
use crate::ids::AccountId;
use crate::store::{AbuseRecord, Verdict, Watch, WindowMetrics};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 10_000;

pub(super) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_abuse)
        .service(show_abuse)
        .service(lift_verdict)
        .service(watch_account);
}

/// A ban.
#[derive(Serialize, ToSchema)]
struct BanView {
    active: bool,
    since_ms: u64,
    /// Absent for a permanent ban.
    #[serde(skip_serializing_if = "Option::is_none")]
    until_ms: Option<u64>,
    /// RFC 3339, or `permanent`.
    until: String,
    offence: u32,
    reason: String,
}

/// An account on the watch list.
#[derive(Serialize, ToSchema)]
struct WatchView {
    since_ms: u64,
    reason: String,
    /// `monitor`, or the operator (`token:…`).
    by: String,
}

impl From<Watch> for WatchView {
    fn from(w: Watch) -> Self {
        Self {
            since_ms: w.since_ms,
            reason: w.reason,
            by: w.by,
        }
    }
}

/// One decision about an account.
#[derive(Serialize, ToSchema)]
struct VerdictView {
    at_ms: u64,
    /// `ban`, `watch`, `unwatch` or `lift`.
    kind: String,
    detail: String,
    by: String,
}

impl From<Verdict> for VerdictView {
    fn from(v: Verdict) -> Self {
        Self {
            at_ms: v.at_ms,
            kind: v.kind,
            detail: v.detail,
            by: v.by,
        }
    }
}

/// An account's abuse metrics and verdict.
#[derive(Serialize, ToSchema)]
struct Row {
    account: String,
    /// `banned`, `watched` or `none`.
    #[schema(value_type = String)]
    verdict: &'static str,
    metrics: WindowMetrics,
    offences: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ban: Option<BanView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    watch: Option<WatchView>,
}

/// Accounts with abuse metrics or a verdict.
#[derive(Serialize, ToSchema)]
struct RowList {
    accounts: Vec<Row>,
}

/// One account's abuse metrics, verdict and history.
#[derive(Serialize, ToSchema)]
struct Detail {
    #[serde(flatten)]
    row: Row,
    registered: bool,
    last_offence_ms: u64,
    /// Oldest first.
    history: Vec<VerdictView>,
    /// The window the metrics cover, in seconds.
    window_secs: u64,
}

fn window_ms(ctx: &RelayCtx) -> u64 {
    u64::try_from(ctx.cfg.abuse.window.as_millis()).unwrap_or(u64::MAX)
}

fn row(ctx: &RelayCtx, account: &AccountId, rec: &AbuseRecord) -> Result<Row, AdminError> {
    let now = crate::clock::now_ms();
    let metrics = ctx
        .store
        .abuse_stats(account)?
        .map(|s| s.metrics(now, window_ms(ctx)))
        .unwrap_or_default();
    let ban = rec.ban.as_ref().map(|b| BanView {
        active: b.active(now),
        since_ms: b.since_ms,
        until_ms: b.until_ms,
        until: until_text(b.until_ms),
        offence: b.offence,
        reason: b.reason.clone(),
    });
    let verdict = if rec.active_ban(now).is_some() {
        "banned"
    } else if rec.watch.is_some() {
        "watched"
    } else {
        "none"
    };
    Ok(Row {
        account: account.to_string(),
        verdict,
        metrics,
        offences: rec.offences,
        ban,
        watch: rec.watch.clone().map(WatchView::from),
    })
}

/// GET /v1/abuse?verdict=banned|watched|any&limit=N: accounts active in the window or with a
/// verdict, in account order.
#[utoipa::path(
    tag = "abuse",
    params(
        ("verdict" = Option<String>, Query, description = "Which accounts (default any)", pattern = "^(banned|watched|any)$"),
        ("limit" = Option<u32>, Query, description = "At most this many (default 100)", minimum = 1, maximum = 10000),
    ),
    responses(
        (status = 200, description = "Accounts with metrics or a verdict", body = RowList),
        (status = 400, description = "A bad or unknown query parameter", body = ErrorBody),
    ),
)]
#[get("/abuse")]
async fn list_abuse(
    state: State,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, AdminError> {
    only_params(&q, &["verdict", "limit"])?;
    let limit = query_number(&q, "limit", DEFAULT_PAGE, 1..=MAX_PAGE)?;
    let filter = q.get("verdict").map_or("any", String::as_str);
    if !["banned", "watched", "any"].contains(&filter) {
        return Err(AdminError::bad(
            "verdict",
            format!("must be banned, watched or any, got {filter:?}"),
        ));
    }
    let ctx = &state.ctx;
    let mut accounts: BTreeMap<AccountId, AbuseRecord> =
        ctx.store.abuse_records()?.into_iter().collect();
    for (a, _) in ctx.store.abuse_active()? {
        accounts.entry(a).or_default();
    }
    let mut rows = Vec::new();
    for (a, rec) in &accounts {
        let r = row(ctx, a, rec)?;
        if filter == "any" || r.verdict == filter {
            rows.push(r);
        }
        if rows.len() >= limit {
            break;
        }
    }
    Ok(HttpResponse::Ok().json(RowList { accounts: rows }))
}

/// An account the relay knows: registered, or with abuse metrics or a verdict.
fn known(ctx: &RelayCtx, text: &str) -> Result<(AccountId, bool), AdminError> {
    let a = account_param(ctx, "account", text)?;
    let registered = ctx.store.account_exists(&a)?;
    if !registered && !ctx.store.abuse_has_record(&a)? && ctx.store.abuse_stats(&a)?.is_none() {
        return Err(AdminError::NotFound(format!("no account {a}")));
    }
    Ok((a, registered))
}

/// GET /v1/abuse/{account}: metrics, verdicts and history of one account.
#[utoipa::path(
    tag = "abuse",
    params(("account" = String, Path, description = "A phone number or an @handle", example = "+14155550101", pattern = "^(\\+[1-9][0-9]{7,14}|@[a-z0-9][a-z0-9.-]{0,31})$")),
    responses(
        (status = 200, description = "The account's metrics, verdict and history", body = Detail),
        (status = 400, description = "Not an account", body = ErrorBody),
        (status = 404, description = "The relay knows no such account", body = ErrorBody),
    ),
)]
#[get("/abuse/{account}")]
async fn show_abuse(state: State, path: web::Path<String>) -> Result<HttpResponse, AdminError> {
    let ctx = &state.ctx;
    let (a, registered) = known(ctx, &path)?;
    let rec = ctx.store.abuse_record(&a)?;
    Ok(HttpResponse::Ok().json(Detail {
        row: row(ctx, &a, &rec)?,
        registered,
        last_offence_ms: rec.last_offence_ms,
        history: rec.history.into_iter().map(VerdictView::from).collect(),
        window_secs: ctx.cfg.abuse.window.as_secs(),
    }))
}

/// POST /v1/abuse/{account}/lift: ends the account's ban now and takes it off the watch
/// list. Its offence count stays (the ladder continues from it until it decays).
#[utoipa::path(
    tag = "abuse",
    params(("account" = String, Path, description = "A phone number or an @handle", example = "+14155550101", pattern = "^(\\+[1-9][0-9]{7,14}|@[a-z0-9][a-z0-9.-]{0,31})$")),
    responses(
        (status = 200, description = "The account after the lift", body = Row),
        (status = 400, description = "Not an account", body = ErrorBody),
        (status = 404, description = "The relay knows no such account", body = ErrorBody),
        (status = 409, description = "Neither banned nor watched", body = ErrorBody),
        (status = 503, description = "The store could not make the change durable", body = ErrorBody),
    ),
)]
#[post("/abuse/{account}/lift")]
async fn lift_verdict(state: State, path: web::Path<String>) -> Result<HttpResponse, AdminError> {
    let ctx = &state.ctx;
    let (a, _) = known(ctx, &path)?;
    let now = crate::clock::now_ms();
    let mut rec = ctx.store.abuse_record(&a)?;
    let was_banned = rec.active_ban(now).is_some();
    if !was_banned && rec.watch.is_none() {
        return Err(AdminError::Conflict(format!(
            "{a} is neither banned nor on the watch list"
        )));
    }
    if let Some(b) = rec.ban.as_mut().filter(|b| b.active(now)) {
        b.until_ms = Some(now);
    }
    rec.watch = None;
    rec.log(Verdict {
        at_ms: now,
        kind: "lift".into(),
        detail: if was_banned {
            "ban lifted by an operator".into()
        } else {
            "taken off the watch list by an operator".into()
        },
        by: state.token.fingerprint(),
    });
    ctx.store.abuse_record_put(&a, &rec)?;
    ctx.durability
        .wait()
        .await
        .map_err(|e| AdminError::Unavailable(e.to_string()))?;
    tracing::info!(account = %a, was_banned, "Abuse verdict lifted by an operator.");
    refresh_gauges(&ctx.store, now);
    Ok(HttpResponse::Ok().json(row(ctx, &a, &rec)?))
}

/// POST /v1/abuse/{account}/watch: puts the account on the watch list (evaluated every
/// `abuse.watch_evaluate_every`, with `abuse.watched_min_messages`).
#[utoipa::path(
    tag = "abuse",
    params(("account" = String, Path, description = "A phone number or an @handle", example = "+14155550101", pattern = "^(\\+[1-9][0-9]{7,14}|@[a-z0-9][a-z0-9.-]{0,31})$")),
    responses(
        (status = 200, description = "The account on the watch list", body = Row),
        (status = 400, description = "Not an account", body = ErrorBody),
        (status = 404, description = "The relay knows no such account", body = ErrorBody),
        (status = 409, description = "Already on the watch list", body = ErrorBody),
        (status = 503, description = "The store could not make the change durable", body = ErrorBody),
    ),
)]
#[post("/abuse/{account}/watch")]
async fn watch_account(state: State, path: web::Path<String>) -> Result<HttpResponse, AdminError> {
    let ctx = &state.ctx;
    let (a, _) = known(ctx, &path)?;
    let now = crate::clock::now_ms();
    let mut rec = ctx.store.abuse_record(&a)?;
    if rec.watch.is_some() {
        return Err(AdminError::Conflict(format!(
            "{a} is already on the watch list"
        )));
    }
    let by = state.token.fingerprint();
    rec.watch = Some(Watch {
        since_ms: now,
        reason: "put on the watch list by an operator".into(),
        by: by.clone(),
    });
    rec.log(Verdict {
        at_ms: now,
        kind: "watch".into(),
        detail: "put on the watch list by an operator".into(),
        by,
    });
    ctx.store.abuse_record_put(&a, &rec)?;
    ctx.durability
        .wait()
        .await
        .map_err(|e| AdminError::Unavailable(e.to_string()))?;
    refresh_gauges(&ctx.store, now);
    Ok(HttpResponse::Ok().json(row(ctx, &a, &rec)?))
}
