//! The public HTTP listener: WebSocket (`GET /v1/ws`), the chunked-HTTP stream
//! (`POST /v1/stream`, and the split mode `GET /v1/stream` + `POST /v1/stream/{sid}`), and the
//! blob routes (`blobs`). Plain HTTP, or HTTPS when `[tls]` names a certificate (`tls`).
//!
//! This module owns the actix-web server: binding, the app factory, admission of HTTP
//! sessions and stopping the workers with the relay. It owns no session logic: the WebSocket
//! and stream transports are [`FrameIo`](super::session::FrameIo) implementations that run the
//! shared [`session::run`](super::session::run) on the worker's local runtime.

pub mod blobs;
mod error;
mod stream;
pub mod tls;
mod ws;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpRequest, HttpServer};

pub use error::HttpError;
pub use stream::{MAX_UPLOAD_BYTES, SESSION_HEADER};

use super::limits::{Admission, Permit};
use super::RelayCtx;
use crate::shutdown::Shutdown;

/// How long the server waits for a new connection's request head.
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What HTTP handlers share besides the relay itself (`web::Data<Arc<HttpShared>>`).
pub struct HttpShared {
    /// The same admission as the TCP listener: one budget of connections per address.
    pub admission: Arc<Admission>,
    /// Split-mode sessions waiting for their uploads, by session id.
    pub(crate) split: stream::SplitRegistry,
    /// Source of the shutdown handle of every session this listener starts; taken away when
    /// shutdown begins (it is a drain handle: holding it would keep the relay waiting for this
    /// server, which stops only after the sessions drained).
    shutdown: Mutex<Option<Shutdown>>,
}

impl HttpShared {
    /// A shutdown handle for a new session, or `None` once the relay is shutting down.
    fn session_shutdown(&self) -> Option<Shutdown> {
        self.shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Shutdown::task)
    }
}

/// A bound, not yet running HTTP server.
pub struct Bound {
    server: Server,
    addr: SocketAddr,
}

impl Bound {
    /// The address the listener is bound to (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving on the current actix system. Stop it with [`HttpHandle::stop`].
    pub fn run(self) -> HttpHandle {
        let handle = self.server.handle();
        actix_rt::spawn(async move {
            if let Err(e) = self.server.await {
                tracing::error!(error = %e, "The HTTP server failed.");
            }
        });
        HttpHandle { handle }
    }
}

/// Stops the HTTP server's workers.
pub struct HttpHandle {
    handle: ServerHandle,
}

impl HttpHandle {
    /// Stops accepting, lets requests in flight finish (sessions have drained by now: they
    /// follow the relay's `Shutdown`), then stops the workers.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// Binds the public HTTP listener (before the relay reports ready, so a busy port or a bad
/// certificate fails the start). Sessions it starts follow `shutdown`.
pub fn bind(
    ctx: Arc<RelayCtx>,
    admission: Arc<Admission>,
    shutdown: &Shutdown,
) -> Result<Bound, HttpError> {
    let addr = ctx.cfg.listen.http;
    let grace = ctx.cfg.relay.shutdown_grace;
    let tls = if ctx.cfg.tls.enabled() {
        Some(tls::server_config(&ctx.cfg.tls)?)
    } else {
        None
    };
    let shared = Arc::new(HttpShared {
        admission,
        split: stream::SplitRegistry::default(),
        shutdown: Mutex::new(Some(shutdown.task())),
    });
    let mut stop = shutdown.listener();
    let watcher = shared.clone();
    actix_rt::spawn(async move {
        stop.recv().await;
        watcher
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    });
    let factory = move || {
        App::new()
            .app_data(web::Data::new(ctx.clone()))
            .app_data(web::Data::new(shared.clone()))
            .configure(routes)
            .configure(blobs::configure)
            .configure(crate::web::configure)
            .default_service(web::to(not_found))
    };
    let server = HttpServer::new(factory)
        // The relay owns signals; it stops this server after its sessions drained.
        .disable_signals()
        .shutdown_timeout(grace.as_secs().max(1))
        .client_request_timeout(REQUEST_HEAD_TIMEOUT)
        .backlog(super::tcp::LISTEN_BACKLOG);
    let server = match tls {
        Some(cfg) => server.bind_rustls_0_23(addr, cfg),
        None => server.bind(addr),
    }
    .map_err(|source| HttpError::Bind { addr, source })?;
    let bound = server.addrs().first().copied().ok_or(HttpError::Bind {
        addr,
        source: std::io::Error::other("no address bound"),
    })?;
    Ok(Bound {
        server: server.run(),
        addr: bound,
    })
}

/// The transport routes. Each resource answers 405 to other methods.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/ws")
            .route(web::get().to(ws::upgrade))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/stream")
            .route(web::post().to(stream::duplex))
            .route(web::get().to(stream::split_down))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/stream/{sid}")
            .route(web::post().to(stream::split_up))
            .default_service(web::to(method_not_allowed)),
    );
}

/// A known path with a method it does not serve.
async fn method_not_allowed(req: HttpRequest) -> HttpError {
    HttpError::MethodNotAllowed(req.method().to_string())
}

/// Any other path.
async fn not_found(req: HttpRequest) -> HttpError {
    HttpError::NotFound(req.path().chars().take(200).collect())
}

/// What a new HTTP session holds: its admission slot, its peer and its shutdown handle.
struct Admitted {
    permit: Permit,
    peer: SocketAddr,
    shutdown: Shutdown,
}

/// Admits an HTTP session from the request's peer, as the TCP listener admits a connection.
fn admit(shared: &HttpShared, req: &HttpRequest) -> Result<Admitted, HttpError> {
    let peer = req.peer_addr().ok_or(HttpError::NoPeerAddress)?;
    let shutdown = shared.session_shutdown().ok_or(HttpError::ShuttingDown)?;
    match shared.admission.admit(peer.ip()) {
        Ok(permit) => Ok(Admitted {
            permit,
            peer,
            shutdown,
        }),
        Err(refused) => {
            tracing::info!(%peer, reason = %refused.reason, "HTTP session refused.");
            Err(HttpError::Refused(refused))
        }
    }
}
