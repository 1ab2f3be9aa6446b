//! The session every client transport shares: handshake (`login`), then a loop that decrypts
//! `ClientFrame`s, runs requests (`requests`) concurrently up to a bound, writes answers and
//! the device actor's pushes, pings an idle peer and closes a dead one.
//!
//! A transport plugs in by implementing [`FrameIo`]: read one frame payload, write one.

mod abuse;
mod account;
mod blobs;
mod entities;
mod error;
mod groups;
mod login;
mod requests;
mod send;

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

pub use account::MAX_CONTACTS;
pub(crate) use account::{announce_devices, announce_devices_to};
pub use blobs::BlobRefusal;
pub use entities::{announce as announce_entity_changes, info as entity_info};
pub use error::{RequestError, SessionError};
pub use groups::operator_add;

use crate::actors::device::{Attach, Detach, Push};
use crate::config::to_usize;
use crate::edge::RelayCtx;
use crate::ids::{DeviceId, MsgId};
use crate::registration::ratelimit::RateLimiter;
use crate::shutdown::Shutdown;
use crate::wire::messages::{
    server_frame, ClientFrame, Error, ErrorCode, KeysLow, Ping, ServerFrame,
};
use crate::wire::Transport;

/// Requests of one session running at once; reading pauses while the bound is reached.
pub const MAX_CONCURRENT_REQUESTS: usize = 64;
/// Most frames coalesced into one write.
const MAX_BATCH_FRAMES: usize = 64;

/// Pushes buffered between a device actor and its session beyond the delivery window.
const PUSH_SLACK: usize = 16;

/// One frame in, one frame out. Implementations must make `read_frame` cancel-safe (it is
/// raced against pushes and timers) and must not hold buffers while idle.
pub trait FrameIo {
    /// The next frame's payload; `Ok(None)` when the peer closed cleanly.
    fn read_frame(&mut self) -> impl Future<Output = Result<Option<Vec<u8>>, SessionError>>;
    /// The next frame's payload handed to `f` where the transport holds it (no copy of its
    /// own); `Ok(None)` when the peer closed cleanly. Cancel-safe like `read_frame`: `f`
    /// runs only once a whole frame is there, in the poll that completes the future.
    fn read_frame_with<R>(
        &mut self,
        f: impl FnOnce(&[u8]) -> R,
    ) -> impl Future<Output = Result<Option<R>, SessionError>> {
        async move { Ok(self.read_frame().await?.map(|p| f(&p))) }
    }
    /// Writes one frame payload (the implementation adds any framing).
    fn write_frame(&mut self, payload: &[u8]) -> impl Future<Output = Result<(), SessionError>>;
    /// Writes whole frames that lie back to back in `framed`, each a length header and a
    /// payload (`wire::frame`'s framing). A byte-stream transport writes the buffer as it is,
    /// in one write; one that carries a message per frame overrides this to split it.
    fn write_frames(&mut self, framed: Vec<u8>) -> impl Future<Output = Result<(), SessionError>>;
    /// Sets the largest frame accepted from now on (small during the handshake, so that a
    /// peer speaking another protocol is refused at once instead of awaited).
    fn set_max_frame(&mut self, bytes: usize);
}

/// Largest frame accepted before the handshake completes. XX message 1 is 34 bytes and an IK
/// message 1 with its login and token a few hundred; anything bigger is not a relaybox client.
pub const MAX_HANDSHAKE_FRAME_BYTES: usize = 2048;

/// Who the peer is.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Completed XX with a `Register` login: may only request and verify codes.
    Anonymous { client_static: [u8; 32] },
    /// An authenticated device.
    Device(DeviceId),
}

/// What a finished request hands back to the session loop.
pub(super) struct Answer {
    frame: ServerFrame,
    /// Set by a successful VerifyCode: the session is now this device.
    became: Option<DeviceId>,
}

type AnswerFuture = Pin<Box<dyn Future<Output = Answer>>>;

/// What one request needs besides the relay: who asks, and the msg_ids in flight here.
#[derive(Clone)]
pub(super) struct Caller {
    pub auth: Auth,
    pub peer: SocketAddr,
    /// msg_ids of Sends of this session still running, so a concurrent retry waits its turn.
    pub sending: Rc<RefCell<crate::maps::FastSet<MsgId>>>,
}

/// Runs one connection to completion. Never panics on peer input; logs why it ended.
pub async fn run<T: FrameIo>(ctx: Arc<RelayCtx>, mut io: T, peer: SocketAddr, shutdown: Shutdown) {
    let deadline = ctx.cfg.limits.handshake_timeout;
    io.set_max_frame(MAX_HANDSHAKE_FRAME_BYTES);
    // The handshake and the session run boxed: the connection's task then holds neither
    // state machine inline, and an idle session keeps only the serve loop's own state (the
    // handshake's is freed when it ends; inline, the task would stay as large as the larger
    // of the two for the connection's whole life).
    let handshake = Box::pin(login::handshake(&ctx, &mut io));
    let (transport, auth) = match tokio::time::timeout(deadline, handshake).await {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "Handshake failed.");
            return;
        }
        Err(_) => {
            let e =
                crate::wire::handshake::refusal(ErrorCode::HandshakeFailed, "handshake timed out");
            let _ = io.write_frame(&e).await;
            tracing::info!(%peer, "Handshake timed out.");
            return;
        }
    };
    io.set_max_frame(to_usize(ctx.cfg.limits.max_frame_bytes));
    match &auth {
        Auth::Device(d) => tracing::debug!(%peer, device = %d, "Session started."),
        Auth::Anonymous { .. } => tracing::debug!(%peer, "Registration session started."),
    }
    let mut session = Session {
        frames: RateLimiter::new(
            ctx.cfg.limits.frames_per_second_per_device.max(1),
            Duration::from_secs(1),
        ),
        ctx,
        io,
        transport,
        caller: Caller {
            auth,
            peer,
            sending: Rc::default(),
        },
        id: rand::random(),
        push_rx: None,
        attached: None,
        throttled: false,
    };
    let end = Box::pin(session.serve(shutdown)).await;
    session.detach();
    match end {
        Ok(()) | Err(SessionError::Closed) => tracing::debug!(%peer, "Session ended."),
        Err(e) => tracing::info!(%peer, error = %e, "Session closed."),
    }
}

struct Session<T> {
    ctx: Arc<RelayCtx>,
    io: T,
    transport: Transport,
    caller: Caller,
    /// Identifies this session to the device actor (a newer session replaces it).
    id: u64,
    push_rx: Option<mpsc::Receiver<Push>>,
    attached: Option<DeviceId>,
    /// Frames per second from this peer.
    frames: RateLimiter,
    /// Whether reading is paused by the frame limit (logged once per episode).
    throttled: bool,
}

impl<T: FrameIo> Session<T> {
    async fn serve(&mut self, mut shutdown: Shutdown) -> Result<(), SessionError> {
        if let Auth::Device(d) = self.caller.auth.clone() {
            self.attach(d).await;
        }
        let limits = self.ctx.cfg.limits.clone();
        let mut pending: FuturesUnordered<AnswerFuture> = FuturesUnordered::new();
        let mut last_rx = Instant::now();
        let mut ping = tokio::time::interval(limits.ping_interval);
        ping.tick().await;
        loop {
            tokio::select! {
                // Decrypted where the transport holds the frame, without a copy of its own.
                frame = self.io.read_frame_with(|payload| {
                    self.transport.decrypt_shared::<ClientFrame>(payload, "ClientFrame")
                }), if pending.len() < MAX_CONCURRENT_REQUESTS => {
                    let frame = match frame {
                        Ok(Some(f)) => f,
                        Ok(None) => return Err(SessionError::Closed),
                        Err(SessionError::Protocol(e)) => {
                            self.close(Error::new(e.code(), e.to_string())).await;
                            return Err(e.into());
                        }
                        Err(e) => return Err(e),
                    };
                    last_rx = Instant::now();
                    match frame {
                        Ok(cf) => {
                            if let Some(fut) = self.accept(cf).await? {
                                pending.push(fut);
                            }
                        }
                        Err(e) => {
                            self.close(malformed_frame(&e)).await;
                            return Err(e.into());
                        }
                    }
                }
                Some(answer) = pending.next() => {
                    // Every answer already finished goes out in the same write.
                    let mut out = Outgoing::default();
                    let mut next = Some(answer);
                    while let Some(answer) = next.take() {
                        if let Some(d) = answer.became {
                            self.flush(std::mem::take(&mut out)).await?;
                            self.caller.auth = Auth::Device(d.clone());
                            self.attach(d).await;
                        }
                        out.seal(&mut self.transport, &answer.frame)?;
                        if out.frames < MAX_BATCH_FRAMES {
                            next = futures::FutureExt::now_or_never(pending.next()).flatten();
                        }
                    }
                    self.flush(out).await?;
                }
                push = recv_push(&mut self.push_rx) => match push {
                    Some(Push::Frame(f)) => {
                        // Coalesce whatever else is already waiting into one write.
                        let mut out = Outgoing::default();
                        out.seal(&mut self.transport, &f)?;
                        let mut control = None;
                        if let Some(rx) = self.push_rx.as_mut() {
                            while out.frames < MAX_BATCH_FRAMES {
                                match rx.try_recv() {
                                    Ok(Push::Frame(f)) => out.seal(&mut self.transport, &f)?,
                                    Ok(other) => {
                                        control = Some(other);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                        }
                        self.flush(out).await?;
                        if let Some(push) = control {
                            return self.end_by(push).await;
                        }
                    }
                    Some(push) => return self.end_by(push).await,
                    None => self.push_rx = None,
                },
                _ = ping.tick() => {
                    let idle = last_rx.elapsed();
                    if idle >= limits.idle_timeout {
                        return Err(SessionError::Timeout("idle"));
                    }
                    if idle >= limits.ping_interval {
                        let nonce = rand::random();
                        self.send(&ServerFrame { req_id: 0, body: Some(server_frame::Body::Ping(Ping { nonce })) }).await?;
                    }
                }
                _ = shutdown.recv() => {
                    // Finish what was accepted (answers may be acks of durable writes), then go.
                    while let Some(answer) = pending.next().await {
                        self.send(&answer.frame).await?;
                    }
                    self.close(Error::new(ErrorCode::ShuttingDown, "relay is shutting down; reconnect later")).await;
                    return Ok(());
                }
            }
        }
    }

    /// Turns a frame into a running request (or handles it inline for frames with no answer).
    ///
    /// # The frame limit
    ///
    /// `limits.frames_per_second_per_device` meters every frame, but only a request (a
    /// non-zero `req_id`) can be refused: it gets `RATE_LIMITED` with `retry_after_ms`. A frame
    /// that needs no answer (Ack, Pong, ChatState) is never dropped: an Ack lost to a limiter
    /// would keep the device's delivery window shut until it reconnects. Over the limit the
    /// session instead stops reading until the bucket admits the frame again, so the peer is
    /// slowed by TCP backpressure and nothing it sent is lost.
    async fn accept(&mut self, cf: ClientFrame) -> Result<Option<AnswerFuture>, SessionError> {
        let req_id = cf.req_id;
        if req_id == 0 && !needs_no_answer(&cf) {
            let e = RequestError::invalid(
                "req_id 0 is reserved for frames that need no answer (Ack, Pong, ChatState); a request needs a non-zero req_id",
            )
            .to_wire();
            tracing::debug!(peer = %self.caller.peer, "Request with req_id 0 refused.");
            self.send(&ServerFrame {
                req_id: 0,
                body: Some(server_frame::Body::Error(e)),
            })
            .await?;
            return Ok(None);
        }
        loop {
            match self.frames.check("frames", crate::clock::now_ms()) {
                Ok(()) => break,
                Err(retry) if req_id != 0 => {
                    let e = RequestError::RateLimited(retry.0).to_wire();
                    self.send(&ServerFrame {
                        req_id,
                        body: Some(server_frame::Body::Error(e)),
                    })
                    .await?;
                    return Ok(None);
                }
                Err(retry) => {
                    if !self.throttled {
                        self.throttled = true;
                        tracing::debug!(peer = %self.caller.peer, retry_ms = retry.0, "Frames over limits.frames_per_second_per_device; reading paused.");
                    }
                    tokio::time::sleep(retry.as_duration().max(Duration::from_millis(1))).await;
                }
            }
        }
        self.throttled = false;
        let is_send = matches!(
            cf.body,
            Some(crate::wire::messages::client_frame::Body::Send(_))
        );
        let answer = requests::dispatch(&self.ctx, &self.caller, self.id, cf);
        Ok(match answer {
            Some(fut) if is_send => Some(timed_send(fut)),
            other => other,
        })
    }

    /// Closes the session for a control push from the device actor (replaced, revoked). The
    /// push loop never passes a frame here; one would be sent before the session ends.
    async fn end_by(&mut self, push: Push) -> Result<(), SessionError> {
        match push {
            Push::Replaced => {
                // The actor already serves the new session: no Detach, but this session no
                // longer counts for presence.
                if let Some(d) = self.attached.take() {
                    if self.counts_for_presence(&d) {
                        self.ctx.presence.detached(
                            &self.ctx.store,
                            &self.ctx.directory,
                            &d.account,
                        );
                    }
                }
                self.close(Error::new(
                    ErrorCode::SessionReplaced,
                    "another session of this device logged in",
                ))
                .await;
            }
            Push::Revoked => {
                self.close(Error::new(
                    ErrorCode::UnknownDevice,
                    "this device was unlinked by the account's primary",
                ))
                .await;
            }
            Push::Frame(f) => self.send(&f).await?,
        }
        Ok(())
    }

    /// A bridged MQTT device's session is the relay's own and always up; its presence comes
    /// from the device's status topic instead (`edge::mqtt`).
    fn counts_for_presence(&self, d: &DeviceId) -> bool {
        !self.ctx.store.is_bridged(&d.account).unwrap_or(false)
    }

    async fn attach(&mut self, d: DeviceId) {
        let window = to_usize(self.ctx.cfg.messaging.delivery_window);
        let (tx, rx) = mpsc::channel(window + PUSH_SLACK);
        self.push_rx = Some(rx);
        let addr = self.ctx.directory.get(&d);
        if addr
            .send(Attach {
                session_id: self.id,
                tx,
            })
            .await
            .is_err()
        {
            tracing::warn!(device = %d, "Device actor stopped while attaching.");
        }
        self.attached = Some(d.clone());
        if self.counts_for_presence(&d) {
            self.ctx
                .presence
                .attached(&self.ctx.store, &self.ctx.directory, &d.account);
        }
        self.warn_keys_low(&d).await;
        self.failpoint_malformed_frame(&d).await;
        match self.ctx.presence.snapshot_for(&self.ctx.store, &d.account) {
            Ok(events) => {
                for p in events {
                    let _ = self
                        .send(&ServerFrame {
                            req_id: 0,
                            body: Some(server_frame::Body::Presence(p)),
                        })
                        .await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "Reading presence for a new session failed."),
        }
    }

    /// Test support (as in sled's failpoints): with `FAILPOINTS=malformed-frame-to-companions`
    /// a companion (device > 0) gets, on attach, a transport message that is not a
    /// `ServerFrame`, so a test can show the client survives one (tests/web_companion.rs).
    async fn failpoint_malformed_frame(&mut self, d: &DeviceId) {
        if d.device == 0
            || std::env::var("FAILPOINTS").as_deref() != Ok("malformed-frame-to-companions")
        {
            return;
        }
        tracing::warn!(device = %d, "Failpoint malformed-frame-to-companions: sending a malformed frame.");
        if let Ok(bad) = self.transport.encrypt_bytes(b"\xff\xffnot a ServerFrame") {
            let mut framed = Vec::new();
            if crate::wire::frame::encode_into(&mut framed, &bad).is_ok() {
                let _ = self.io.write_frames(framed).await;
            }
        }
    }

    /// Tells a device that logs in with few one-time keys left to upload more.
    async fn warn_keys_low(&mut self, d: &DeviceId) {
        let keys = &self.ctx.cfg.keys;
        let Ok(has_identity) = self.ctx.store.keys_identity(d).map(|k| k.is_some()) else {
            return;
        };
        let Ok(held) = self.ctx.store.keys_one_time_count(d) else {
            return;
        };
        if has_identity && held < to_usize(keys.one_time_keys_low) {
            let low = KeysLow {
                remaining: to_u32(held),
                wanted: keys.one_time_keys_wanted,
            };
            let _ = self
                .send(&ServerFrame {
                    req_id: 0,
                    body: Some(server_frame::Body::KeysLow(low)),
                })
                .await;
        }
    }

    fn detach(&mut self) {
        if let Some(d) = self.attached.take() {
            if self.counts_for_presence(&d) {
                self.ctx
                    .presence
                    .detached(&self.ctx.store, &self.ctx.directory, &d.account);
            }
            if let Some(addr) = self.ctx.directory.get_live(&d) {
                addr.do_send(Detach {
                    session_id: self.id,
                });
            }
        }
    }

    async fn send(&mut self, frame: &ServerFrame) -> Result<(), SessionError> {
        let mut out = Outgoing::default();
        out.seal(&mut self.transport, frame)?;
        self.flush(out).await
    }

    /// Writes what [`Outgoing::seal`] encrypted, in order, with one write where the transport can.
    async fn flush(&mut self, out: Outgoing) -> Result<(), SessionError> {
        if out.frames == 0 {
            return Ok(());
        }
        match tokio::time::timeout(
            self.ctx.cfg.limits.write_timeout,
            self.io.write_frames(out.bytes),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(SessionError::Timeout("write")),
        }
    }

    /// Tells the peer why the relay closes the session (best effort).
    async fn close(&mut self, e: Error) {
        let _ = self
            .send(&ServerFrame {
                req_id: 0,
                body: Some(server_frame::Body::Closing(e)),
            })
            .await;
    }
}

/// Frames encrypted for one write: whole frames back to back (length header, Noise message),
/// as the transports send them. Built per wake-up and handed to the transport, so an idle
/// session holds no write buffer.
#[derive(Default)]
struct Outgoing {
    bytes: Vec<u8>,
    frames: usize,
}

impl Outgoing {
    /// Encrypts one frame onto the end (counting refusals for `/metrics`).
    fn seal(&mut self, transport: &mut Transport, frame: &ServerFrame) -> Result<(), SessionError> {
        if let Some(server_frame::Body::Error(e)) = &frame.body {
            crate::telemetry::metrics::request_error(e.code().as_str_name());
        }
        transport.encrypt_framed(frame, &mut self.bytes)?;
        self.frames += 1;
        Ok(())
    }
}

/// Measures a Send from its arrival to its `ServerAck` (the ack latency a sender sees, less
/// the network); a Send answered with an error is not an ack and is not measured.
fn timed_send(fut: AnswerFuture) -> AnswerFuture {
    let arrived = Instant::now();
    Box::pin(async move {
        let answer = fut.await;
        if matches!(answer.frame.body, Some(server_frame::Body::ServerAck(_))) {
            crate::telemetry::metrics::send_acked(arrived.elapsed());
        }
        answer
    })
}

/// The closing error for a frame after the handshake that is not a transport message of this
/// session (Noise rejects it) or not a `ClientFrame`: both are `MALFORMED`, the peer's fault.
fn malformed_frame(e: &crate::wire::ProtocolError) -> Error {
    match e {
        crate::wire::ProtocolError::Noise(_) => Error::new(
            ErrorCode::Malformed,
            format!("frame is not a Noise transport message of this session ({e})"),
        ),
        _ => Error::new(e.code(), e.to_string()),
    }
}

/// Frames the contract sends with `req_id` 0: they get no answer, so they cannot be refused.
fn needs_no_answer(cf: &ClientFrame) -> bool {
    use crate::wire::messages::client_frame::Body;
    matches!(
        cf.body,
        Some(Body::Ack(_) | Body::Pong(_) | Body::ChatState(_))
    )
}

async fn recv_push(rx: &mut Option<mpsc::Receiver<Push>>) -> Option<Push> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

pub(super) fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
