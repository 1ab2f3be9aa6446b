//! `GET /v1/ws`: the Noise protocol over WebSocket, one Noise message per binary message.
//! The same bytes as a TCP frame without the `u16` length prefix (WebSocket frames itself).
//!
//! Anything else a peer sends ends the session with a specific close code: a text message
//! 1003 (unsupported data), a message above the frame limit 1009 (message too big), a broken
//! WebSocket frame 1002 (protocol error). Fragmented binary messages are reassembled up to the
//! frame limit; pings are answered.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason};

use super::{admit, HttpError, HttpShared};
use crate::edge::session::{self, FrameIo, SessionError};
use crate::edge::RelayCtx;
use crate::wire::frame::MAX_FRAME_BYTES;
use crate::wire::ProtocolError;

/// A WebSocket connection as a [`FrameIo`].
pub struct WsFrames {
    rx: AggregatedMessageStream,
    tx: actix_ws::Session,
    max_frame: usize,
    /// How the WebSocket is closed when the session ends (set by the read side).
    close: Rc<RefCell<Option<CloseReason>>>,
}

impl WsFrames {
    fn fail(&self, code: CloseCode, why: &str, e: SessionError) -> SessionError {
        *self.close.borrow_mut() = Some(CloseReason {
            code,
            description: Some(why.to_owned()),
        });
        e
    }
}

impl FrameIo for WsFrames {
    async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        loop {
            let msg = match self.rx.recv().await {
                None => return Ok(None),
                Some(Ok(m)) => m,
                Some(Err(actix_ws::ProtocolError::Overflow)) => {
                    let e = ProtocolError::FrameTooLarge {
                        len: self.max_frame + 1,
                    };
                    return Err(self.fail(CloseCode::Size, "message too big", e.into()));
                }
                // actix-http reports a frame with reserved bits set as an `InvalidData` I/O
                // error; that is the peer breaking the protocol (RFC 6455 §5.2), not the
                // connection breaking.
                Some(Err(actix_ws::ProtocolError::Io(e)))
                    if e.kind() == std::io::ErrorKind::InvalidData =>
                {
                    let why = format!("bad WebSocket frame: {e}");
                    let err = SessionError::NotAFrame(why.clone());
                    return Err(self.fail(CloseCode::Protocol, &why, err));
                }
                // The connection broke (the peer went away without a close frame).
                Some(Err(actix_ws::ProtocolError::Io(e))) => return Err(SessionError::Io(e)),
                Some(Err(e)) => {
                    let why = format!("bad WebSocket frame: {e}");
                    let err = SessionError::NotAFrame(why.clone());
                    return Err(self.fail(CloseCode::Protocol, &why, err));
                }
            };
            match msg {
                AggregatedMessage::Binary(b) => {
                    if b.len() > self.max_frame {
                        let e = ProtocolError::FrameTooLarge { len: b.len() };
                        return Err(self.fail(CloseCode::Size, "message too big", e.into()));
                    }
                    return Ok(Some(b.to_vec()));
                }
                AggregatedMessage::Text(_) => {
                    let why = "text message; relaybox speaks binary messages only";
                    let e = SessionError::NotAFrame(why.to_owned());
                    return Err(self.fail(CloseCode::Unsupported, why, e));
                }
                AggregatedMessage::Ping(p) => {
                    if self.tx.pong(&p).await.is_err() {
                        return Ok(None);
                    }
                }
                AggregatedMessage::Pong(_) => {}
                AggregatedMessage::Close(_) => return Ok(None),
            }
        }
    }

    async fn write_frame(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        self.tx
            .binary(payload.to_vec())
            .await
            .map_err(|_| SessionError::Closed)
    }

    /// A WebSocket message carries one frame's payload, without the length header.
    async fn write_frames(&mut self, framed: Vec<u8>) -> Result<(), SessionError> {
        for payload in crate::wire::frame::payloads(&framed) {
            self.write_frame(payload).await?;
        }
        Ok(())
    }

    fn set_max_frame(&mut self, bytes: usize) {
        self.max_frame = bytes;
    }
}

/// `GET /v1/ws`: upgrades to WebSocket and runs a session over it.
pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    ctx: web::Data<Arc<RelayCtx>>,
    shared: web::Data<Arc<HttpShared>>,
) -> Result<HttpResponse, HttpError> {
    // Check the upgrade before taking an admission slot: a plain GET is not a session.
    let (res, tx, rx) =
        actix_ws::handle(&req, body).map_err(|e| HttpError::NotWebSocket(e.to_string()))?;
    let admitted = admit(&shared, &req)?;
    let rx = rx
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    let close = Rc::new(RefCell::new(None));
    let io = WsFrames {
        rx,
        tx: tx.clone(),
        max_frame: MAX_FRAME_BYTES,
        close: close.clone(),
    };
    let ctx = ctx.get_ref().clone();
    // Sessions hold `Rc`s: they run on this worker's local runtime.
    actix_web::rt::spawn(async move {
        let _permit = admitted.permit;
        let _counted = crate::telemetry::metrics::connection("ws");
        tracing::debug!(peer = %admitted.peer, "WebSocket session opened.");
        session::run(ctx, io, admitted.peer, admitted.shutdown).await;
        let reason = close.borrow_mut().take().unwrap_or(CloseReason {
            code: CloseCode::Normal,
            description: None,
        });
        let _ = tx.close(Some(reason)).await;
    });
    Ok(res)
}
