//! The chunked-HTTP transport, for networks that pass only HTTP.
//!
//! Both directions carry the same `u16`-length-prefixed frames as TCP, so a proxy that
//! re-chunks a body cannot break a frame; the relay writes one frame per chunk.
//!
//! - Full duplex: `POST /v1/stream`, the request body streams client → relay while the
//!   response body streams relay → client, both chunked, for as long as the session lasts.
//! - Split, for proxies that buffer request bodies: `GET /v1/stream` opens the long-lived
//!   chunked response (relay → client) and names the session in the [`SESSION_HEADER`]
//!   response header; the client sends its frames in short `POST /v1/stream/{sid}` requests,
//!   one at a time, each answered `204` once its bytes are queued for the session. An unknown
//!   or ended session answers `404`, a malformed id `400`, an oversized upload `413`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{admit, Admitted, HttpError, HttpShared};
use crate::edge::session::{self, FrameIo, SessionError};
use crate::edge::RelayCtx;
use crate::wire::frame::{self, FrameDecoder, MAX_FRAME_BYTES};

/// Response header of `GET /v1/stream` naming the split-mode session.
pub const SESSION_HEADER: &str = "relaybox-session";
/// Content type of both stream directions.
pub const CONTENT_TYPE: &str = "application/octet-stream";
/// Chunks queued for the response before the session's writes wait for the peer.
const DOWN_QUEUE_CHUNKS: usize = 16;
/// Split-mode uploads queued for a session before further POSTs wait.
const UP_QUEUE_UPLOADS: usize = 4;
/// Largest split-mode upload: a few full frames.
pub const MAX_UPLOAD_BYTES: usize = 4 * (MAX_FRAME_BYTES + frame::FRAME_HEADER_BYTES);
/// Length of a split-mode session id in hex digits (128 random bits).
const SID_HEX_DIGITS: usize = 32;

/// Where the session's frames go: a bounded queue the response body drains.
struct Down {
    tx: mpsc::Sender<Bytes>,
}

impl Down {
    /// A queue and the response body that drains it.
    fn new() -> (Self, HttpResponse) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(DOWN_QUEUE_CHUNKS);
        let body = futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|chunk| chunk.map(Ok::<_, Infallible>))
        });
        let res = HttpResponse::Ok()
            .content_type(CONTENT_TYPE)
            // Ask proxies (nginx) not to buffer the stream, and caches not to keep it.
            .insert_header(("x-accel-buffering", "no"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .streaming(body);
        (Self { tx }, res)
    }

    /// One frame, one chunk.
    async fn write(&self, payload: &[u8]) -> Result<(), SessionError> {
        self.write_framed(frame::encode(payload)?).await
    }

    /// Frames already framed, as one chunk (the buffer becomes the chunk, uncopied).
    async fn write_framed(&self, framed: Vec<u8>) -> Result<(), SessionError> {
        self.tx
            .send(Bytes::from(framed))
            .await
            .map_err(|_| SessionError::Closed)
    }
}

/// A full-duplex chunked stream as a [`FrameIo`]: frames from the request body, frames to
/// the response body.
struct DuplexFrames {
    body: web::Payload,
    decoder: FrameDecoder,
    down: Down,
}

impl FrameIo for DuplexFrames {
    async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(Some(f));
            }
            // Both cancel-safe: a chunk is either returned whole by `next` or not taken at
            // all. A client gone from the response ends the session at once.
            let next = tokio::select! {
                next = self.body.next() => next,
                _ = self.down.tx.closed() => return Err(SessionError::Closed),
            };
            match next {
                Some(Ok(chunk)) => self.decoder.extend(&chunk),
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string()).into()),
                None if self.decoder.buffered() == 0 => return Ok(None),
                None => return Err(SessionError::Closed),
            }
        }
    }

    async fn write_frame(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        self.down.write(payload).await
    }

    async fn write_frames(&mut self, framed: Vec<u8>) -> Result<(), SessionError> {
        self.down.write_framed(framed).await
    }

    fn set_max_frame(&mut self, bytes: usize) {
        self.decoder.set_limit(bytes);
    }
}

/// `POST /v1/stream`: a full-duplex session over one chunked request and its response.
pub async fn duplex(
    req: HttpRequest,
    body: web::Payload,
    ctx: web::Data<Arc<RelayCtx>>,
    shared: web::Data<Arc<HttpShared>>,
) -> Result<HttpResponse, HttpError> {
    let admitted = admit(&shared, &req)?;
    let (down, res) = Down::new();
    let io = DuplexFrames {
        body,
        decoder: FrameDecoder::new(MAX_FRAME_BYTES),
        down,
    };
    spawn_session(ctx.get_ref().clone(), io, admitted, "chunked stream");
    Ok(res)
}

/// Split-mode sessions by id, shared by every worker (an upload may reach another worker
/// than its session's download).
#[derive(Default)]
pub(crate) struct SplitRegistry {
    uploads: Mutex<HashMap<String, mpsc::Sender<Bytes>>>,
}

impl SplitRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Bytes>>> {
        // Each operation is one map update; a poisoned lock is still consistent.
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A split-mode session as a [`FrameIo`]: frames from the uploads queued under its id,
/// frames to the long-lived response.
struct SplitFrames {
    sid: String,
    registry: Arc<HttpShared>,
    up: mpsc::Receiver<Bytes>,
    decoder: FrameDecoder,
    down: Down,
}

impl FrameIo for SplitFrames {
    async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(Some(f));
            }
            // Both cancel-safe. A client gone from the download ends the session at once.
            tokio::select! {
                chunk = self.up.recv() => match chunk {
                    Some(chunk) => self.decoder.extend(&chunk),
                    // Only the registry holds the sender and it lives as long as this session.
                    None => return Err(SessionError::Closed),
                },
                _ = self.down.tx.closed() => return Err(SessionError::Closed),
            }
        }
    }

    async fn write_frame(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        self.down.write(payload).await
    }

    async fn write_frames(&mut self, framed: Vec<u8>) -> Result<(), SessionError> {
        self.down.write_framed(framed).await
    }

    fn set_max_frame(&mut self, bytes: usize) {
        self.decoder.set_limit(bytes);
    }
}

impl Drop for SplitFrames {
    /// The session ended: its id answers 404 from now on.
    fn drop(&mut self) {
        self.registry.split.lock().remove(&self.sid);
    }
}

/// `GET /v1/stream`: opens a split-mode session; the response names it in [`SESSION_HEADER`].
pub async fn split_down(
    req: HttpRequest,
    ctx: web::Data<Arc<RelayCtx>>,
    shared: web::Data<Arc<HttpShared>>,
) -> Result<HttpResponse, HttpError> {
    let admitted = admit(&shared, &req)?;
    let sid = hex::encode(rand::random::<[u8; SID_HEX_DIGITS / 2]>());
    let (up_tx, up) = mpsc::channel(UP_QUEUE_UPLOADS);
    shared.split.lock().insert(sid.clone(), up_tx);
    let (down, mut res) = Down::new();
    let io = SplitFrames {
        sid: sid.clone(),
        registry: shared.get_ref().clone(),
        up,
        decoder: FrameDecoder::new(MAX_FRAME_BYTES),
        down,
    };
    if let Ok(value) = header::HeaderValue::from_str(&sid) {
        res.headers_mut()
            .insert(header::HeaderName::from_static(SESSION_HEADER), value);
    }
    spawn_session(ctx.get_ref().clone(), io, admitted, "split stream");
    Ok(res)
}

/// `POST /v1/stream/{sid}`: frames from the client for a split-mode session.
pub async fn split_up(
    sid: web::Path<String>,
    mut body: web::Payload,
    shared: web::Data<Arc<HttpShared>>,
) -> Result<HttpResponse, HttpError> {
    let sid = sid.into_inner();
    if sid.len() != SID_HEX_DIGITS || !sid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HttpError::MalformedSid);
    }
    let sid = sid.to_ascii_lowercase();
    let Some(tx) = shared.split.lock().get(&sid).cloned() else {
        return Err(HttpError::UnknownSid);
    };
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| HttpError::Body(e.to_string()))?;
        if bytes.len() + chunk.len() > MAX_UPLOAD_BYTES {
            return Err(HttpError::UploadTooLarge {
                limit: MAX_UPLOAD_BYTES,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.is_empty() {
        return Err(HttpError::EmptyUpload);
    }
    tx.send(bytes.freeze())
        .await
        .map_err(|_| HttpError::UnknownSid)?;
    Ok(HttpResponse::NoContent().finish())
}

/// Runs a session on this worker's local runtime (sessions hold `Rc`s).
fn spawn_session<T: FrameIo + 'static>(
    ctx: Arc<RelayCtx>,
    io: T,
    admitted: Admitted,
    what: &'static str,
) {
    actix_web::rt::spawn(async move {
        let _permit = admitted.permit;
        // Both stream modes count as the "http" transport.
        let _counted = crate::telemetry::metrics::connection("http");
        tracing::debug!(peer = %admitted.peer, transport = what, "HTTP session opened.");
        session::run(ctx, io, admitted.peer, admitted.shutdown).await;
    });
}
