//! The operator API: an actix-web server on its own loopback-only listener (`listen.admin`).
//!
//! # Routes
//!
//! Without a token (they reveal no ids, and the listener is loopback-only):
//! - `GET /healthz`: the process is alive.
//! - `GET /readyz`: the store is open and the listeners are bound; 503 during shutdown.
//! - `GET /metrics`: Prometheus (OpenMetrics text) metrics.
//! - `GET /v1/openapi.json`: the OpenAPI 3.1 description of every route (`openapi.rs` says
//!   why it needs no token).
//!
//! With `Authorization: Bearer <admin.token>`, every one audited (`audit.rs`):
//! - `GET /v1/accounts?limit=&after=`, `GET /v1/accounts/{phone}`,
//!   `DELETE /v1/accounts/{phone}/devices/{device}` (`accounts.rs`);
//! - `GET /v1/stats`, `GET /v1/blobs`, `GET /v1/audit?limit=`, `POST /v1/backup` (`ops.rs`);
//! - `GET|POST /v1/mqtt/devices`, `DELETE /v1/mqtt/devices/{id}`, `GET /v1/bridge` (`mqtt.rs`);
//! - `GET /v1/abuse?verdict=`, `GET /v1/abuse/{account}`, `POST /v1/abuse/{account}/lift`,
//!   `POST /v1/abuse/{account}/watch` (`abuse.rs`);
//! - `GET|POST /v1/entities`, `GET|PATCH /v1/entities/{entity}`, … (`entities.rs`).
//!
//! Every handler carries its `#[utoipa::path]` description beside its route attribute, and is
//! registered with `service(...)` in [`routes`], from which the OpenAPI description is
//! collected (`openapi.rs`). A new area adds a file with a `configure` function and one line
//! in [`routes`]; the token check and the audit record come from the scope, not from each
//! handler. Errors are JSON with one status per kind (`error.rs`); unknown routes answer 404
//! JSON, a known route with another method 405 with `Allow`.

mod abuse;
mod accounts;
mod entities;
mod error;
mod mqtt;
pub mod openapi;
mod ops;
pub mod token;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_actix_web::{scope, AppExt};

use crate::audit::AuditEntry;
pub use error::AdminError;
pub use token::AdminToken;

use crate::edge::RelayCtx;

/// What the admin handlers share.
pub struct AdminState {
    pub ctx: Arc<RelayCtx>,
    pub token: AdminToken,
    pub started: Instant,
    pub data_dir: PathBuf,
    /// The relay's own arbiter. Device actors live there, so work that may start one
    /// (announcing a device change) is sent there rather than run on the admin worker.
    pub relay: actix_rt::ArbiterHandle,
    /// Set once every listener is bound; `/readyz` answers 503 before.
    pub ready: AtomicBool,
    /// The MQTT bridge, when `mqtt.enabled` (`mqtt.rs`).
    pub mqtt: Option<Arc<crate::edge::mqtt::Bridge>>,
}

impl AdminState {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

type State = web::Data<AdminState>;

/// Binds the admin listener (before anything else starts, so a busy port fails the start).
/// Largest JSON request body the operator API accepts.
const JSON_BODY_LIMIT: usize = 64 * 1024;

pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Builds the admin server on `listener`. Run it by awaiting (or spawning) the returned
/// [`Server`]; stop it through its handle.
pub fn server(state: Arc<AdminState>, listener: std::net::TcpListener) -> std::io::Result<Server> {
    let data = web::Data::from(state);
    let spec = web::Data::new(openapi::Spec::build());
    Ok(HttpServer::new(move || {
        App::new()
            .into_utoipa_app()
            .app_data(data.clone())
            .app_data(spec.clone())
            // A body that is not the JSON a route expects gets our JSON error naming it,
            // not actix's plain-text default.
            .app_data(
                web::JsonConfig::default()
                    .limit(JSON_BODY_LIMIT)
                    .error_handler(|err, _req| {
                        AdminError::bad("body", format!("not the expected JSON: {err}")).into()
                    }),
            )
            .configure(routes)
            .default_service(web::to(not_found))
            .into_app()
    })
    // The API serves operators, not traffic: one worker thread is plenty.
    .workers(1)
    // The relay handles SIGTERM itself and stops this server in order.
    .disable_signals()
    .shutdown_timeout(2)
    .listen(listener)?
    .run())
}

/// Every route: the open ones, the description (before the `/v1` scope, so it needs no
/// token), then every authenticated one.
fn routes(cfg: &mut ServiceConfig) {
    ops::configure_open(cfg);
    cfg.service(openapi::serve).service(
        scope("/v1")
            .wrap(from_fn(authorize_and_audit))
            .configure(accounts::configure)
            .configure(ops::configure)
            .configure(mqtt::configure)
            .configure(entities::configure)
            .configure(abuse::configure)
            .default_service(web::to(not_found)),
    );
}

/// Whatever no route answers: 405 with `Allow` if the path names a route (with another
/// method), else 404.
async fn not_found(
    req: HttpRequest,
    spec: web::Data<openapi::Spec>,
) -> Result<HttpResponse, actix_web::Error> {
    match req.match_pattern() {
        Some(route) => {
            let err =
                AdminError::MethodNotAllowed(format!("{route} does not accept {}", req.method()));
            let mut res = actix_web::ResponseError::error_response(&err);
            if let Some(allow) = spec
                .allowed(&route)
                .and_then(|a| actix_web::http::header::HeaderValue::from_str(&a).ok())
            {
                res.headers_mut()
                    .insert(actix_web::http::header::ALLOW, allow);
            }
            Ok(res)
        }
        None => {
            Err(AdminError::NotFound(format!("no route {} {}", req.method(), req.path())).into())
        }
    }
}

/// Checks the bearer token, runs the request, and records it in the audit log.
async fn authorize_and_audit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(state) = req.app_data::<State>().cloned() else {
        return Err(AdminError::Internal("admin state missing".into()).into());
    };
    let action = format!(
        "{} {}",
        req.method(),
        req.match_pattern().unwrap_or_else(|| req.path().to_owned())
    );
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let refusal = match presented {
        None => Some("missing bearer token: send Authorization: Bearer <admin.token>"),
        Some(t) if !state.token.matches(t) => Some("wrong bearer token"),
        Some(_) => None,
    };
    if let Some(why) = refusal {
        let entry = AuditEntry::now("anonymous", action, BTreeMap::new(), "unauthorized", 401);
        state.ctx.audit.record(&entry);
        tracing::warn!(peer = ?req.peer_addr(), reason = why, "Admin request refused.");
        return Err(AdminError::Unauthorized(why).into());
    }
    let res = next.call(req).await?;
    let status = res.status();
    let target: BTreeMap<String, String> = res
        .request()
        .match_info()
        .iter()
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    let outcome = if status.is_success() {
        "ok".to_owned()
    } else {
        res.response()
            .error()
            .map(|e| e.to_string())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned())
    };
    let entry = AuditEntry::now(
        state.token.fingerprint(),
        action,
        target,
        outcome,
        status.as_u16(),
    );
    state.ctx.audit.record(&entry);
    Ok(res)
}

/// Reads an optional query parameter as a number in `range`.
fn query_number(
    q: &std::collections::HashMap<String, String>,
    name: &'static str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, AdminError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                AdminError::bad(
                    name,
                    format!(
                        "must be a whole number from {} to {}, got {v:?}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}

/// An account named by an operator (a path, query or body parameter): an `@handle`, a phone
/// number in canonical E.164 (taken as it is: it is the store's own form, so a number nobody
/// registered is simply not found), or a number in another form ("(415) 555 0100"),
/// normalised with the configured default country as registration does. The OpenAPI
/// description gives the first two as the parameter's pattern.
fn account_param(
    ctx: &crate::edge::RelayCtx,
    name: &'static str,
    text: &str,
) -> Result<crate::ids::AccountId, AdminError> {
    // In a query string an unencoded `+` arrives as a space.
    let text = match text.strip_prefix(' ') {
        Some(rest) => format!("+{rest}"),
        None => text.to_owned(),
    };
    let text = text.trim();
    if text.starts_with('@') {
        return crate::ids::AccountId::parse(text)
            .map_err(|e| AdminError::bad(name, e.to_string()));
    }
    if let Ok(a) = crate::ids::AccountId::parse_phone(text) {
        return Ok(a);
    }
    crate::registration::normalise(text, ctx.cfg.registration.default_country.as_ref()).map_err(
        |e| {
            AdminError::bad(
                name,
                format!("not a phone number or @handle ({e}): {text:?}"),
            )
        },
    )
}

/// A JSON request body that must be an object with `T`'s fields. serde also reads a struct
/// from a JSON array (`[null, null]` as positional fields), which an operator API must refuse
/// rather than take as "change nothing".
pub(super) struct Object<T>(pub T);

impl<T: serde::de::DeserializeOwned + 'static> actix_web::FromRequest for Object<T> {
    type Error = actix_web::Error;
    type Future = futures::future::LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let json = web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            let value = json.await?.into_inner();
            Ok(Object(from_object(value)?))
        })
    }
}

/// `value` as a `T`, if it is a JSON object.
fn from_object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, AdminError> {
    let kind = match &value {
        serde_json::Value::Object(_) => None,
        serde_json::Value::Array(_) => Some("an array"),
        serde_json::Value::String(_) => Some("a string"),
        serde_json::Value::Number(_) => Some("a number"),
        serde_json::Value::Bool(_) => Some("a boolean"),
        serde_json::Value::Null => Some("null"),
    };
    if let Some(kind) = kind {
        return Err(AdminError::bad(
            "body",
            format!("must be a JSON object, got {kind}"),
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| AdminError::bad("body", format!("not the expected JSON: {e}")))
}

/// Refuses query parameters other than `known`.
fn only_params(
    q: &std::collections::HashMap<String, String>,
    known: &[&'static str],
) -> Result<(), AdminError> {
    if let Some(k) = q.keys().find(|k| !known.contains(&k.as_str())) {
        let list = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        return Err(AdminError::BadParameter {
            parameter: "query",
            reason: format!("unknown parameter {k:?} (accepted: {list})"),
        });
    }
    Ok(())
}

/// Decodes `%XX` escapes of a route parameter for the audit log (the router keeps them).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
