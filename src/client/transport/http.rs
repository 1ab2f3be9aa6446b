//! Chunked HTTP at `<http>/v1/stream`: the same `u16`-length-prefixed frames as TCP inside
//! chunked bodies.
//!
//! - [`DuplexLink`]: one `POST /v1/stream` whose request body streams up while its response
//!   body streams down (hyper's HTTP/1.1 client reads the response while still sending).
//! - [`SplitLink`]: a long-lived `GET /v1/stream` down (its response names the session in the
//!   `relaybox-session` header) and short `POST /v1/stream/{sid}` up, one at a time, on a
//!   second connection.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{connect_http, BaseUrl};
use crate::client::connection::ClientError;
use crate::wire::frame::{self, FrameDecoder, MAX_FRAME_BYTES};
use crate::wire::messages::ErrorCode;
use crate::wire::ProtocolError;

/// Response header of `GET /v1/stream` naming the split-mode session.
const SESSION_HEADER: &str = "relaybox-session";
/// Frames queued for the request body before writes wait.
const UP_QUEUE_FRAMES: usize = 16;
/// Most bytes of an error response body read for its message.
const ERROR_BODY_BYTES: usize = 4096;

/// The streaming request body of the duplex stream: whatever `write` queues, as chunks.
struct UpBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for UpBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

/// The error for a non-success status: admission refusals become the protocol's refusals
/// (so the client's rate-limit retry applies), the rest keep the relay's message.
pub(crate) fn status_error(status: u16, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    match status {
        429 => ClientError::Protocol(ProtocolError::Refused {
            code: ErrorCode::RateLimited,
            reason: message,
        }),
        503 => ClientError::Protocol(ProtocolError::Refused {
            code: ErrorCode::TooManyConnections,
            reason: message,
        }),
        _ => ClientError::Http { status, message },
    }
}

/// An HTTP/1.1 connection: its request sender and the task driving it (aborted on drop).
struct Conn<B> {
    sender: SendRequest<B>,
    driver: JoinHandle<()>,
}

impl<B> Drop for Conn<B> {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn handshake<B>(base: &BaseUrl, ca: Option<&std::path::Path>) -> Result<Conn<B>, ClientError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = connect_http(base, ca).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ClientError::HttpTransport(e.to_string()))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP connection to the relay ended.");
        }
    });
    Ok(Conn { sender, driver })
}

fn request<B>(
    base: &BaseUrl,
    method: ::http::Method,
    path: &str,
    body: B,
) -> Result<::http::Request<B>, ClientError> {
    ::http::Request::builder()
        .method(method)
        .uri(base.path(path))
        .header(::http::header::HOST, base.authority())
        .header(::http::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .map_err(|e| ClientError::HttpTransport(e.to_string()))
}

/// Checks the status; on failure reads the relay's error message.
async fn check(
    res: ::http::Response<Incoming>,
    ok: u16,
) -> Result<::http::Response<Incoming>, ClientError> {
    let status = res.status().as_u16();
    if status == ok {
        return Ok(res);
    }
    let body = Limited::new(res.into_body(), ERROR_BODY_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Err(status_error(status, &body))
}

/// The relay → client half: frames out of a chunked response body.
struct Down {
    body: Incoming,
    decoder: FrameDecoder,
}

impl Down {
    fn new(body: Incoming) -> Self {
        Self {
            body,
            decoder: FrameDecoder::new(MAX_FRAME_BYTES),
        }
    }

    /// Cancel-safe: a chunk is taken whole into the decoder or not at all.
    async fn read(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(f);
            }
            match self.body.frame().await {
                None => return Err(ClientError::Closed(None)),
                Some(Err(e)) => return Err(ClientError::HttpTransport(e.to_string())),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.decoder.extend(&data);
                    }
                }
            }
        }
    }
}

/// The answer to the duplex POST: awaited by the first read, so that a proxy that holds the
/// request (and so the answer) back is caught by the handshake's deadline.
type PendingResponse = std::pin::Pin<
    Box<dyn std::future::Future<Output = hyper::Result<::http::Response<Incoming>>> + Send>,
>;

enum DuplexDown {
    Waiting(PendingResponse),
    Open(Down),
}

/// A full-duplex chunked stream.
pub(crate) struct DuplexLink {
    up: mpsc::Sender<Bytes>,
    down: DuplexDown,
    _conn: Conn<UpBody>,
}

impl DuplexLink {
    pub(crate) async fn open(
        base: &BaseUrl,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        let mut conn = handshake::<UpBody>(base, ca).await?;
        let (up, rx) = mpsc::channel::<Bytes>(UP_QUEUE_FRAMES);
        let req = request(base, ::http::Method::POST, "/v1/stream", UpBody(rx))?;
        // hyper queues the request at once; the body streams as `write` feeds it.
        let res = Box::pin(conn.sender.send_request(req));
        Ok(Self {
            up,
            down: DuplexDown::Waiting(res),
            _conn: conn,
        })
    }

    pub(crate) async fn write(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let bytes = Bytes::from(frame::encode(payload)?);
        self.up
            .send(bytes)
            .await
            .map_err(|_| ClientError::Closed(None))
    }

    /// Cancel-safe: the pending answer stays stored until it arrives.
    pub(crate) async fn read(&mut self) -> Result<Vec<u8>, ClientError> {
        if let DuplexDown::Waiting(res) = &mut self.down {
            let res = res
                .await
                .map_err(|e| ClientError::HttpTransport(e.to_string()))?;
            let res = check(res, 200).await?;
            self.down = DuplexDown::Open(Down::new(res.into_body()));
        }
        match &mut self.down {
            DuplexDown::Open(down) => down.read().await,
            DuplexDown::Waiting(_) => Err(ClientError::Unexpected("stream not open".into())),
        }
    }
}

/// Split mode: a chunked GET down, short POSTs up.
pub(crate) struct SplitLink {
    base: BaseUrl,
    ca: Option<std::path::PathBuf>,
    sid: String,
    up: Conn<Full<Bytes>>,
    down: Down,
    _down_conn: Conn<Empty<Bytes>>,
}

impl SplitLink {
    pub(crate) async fn open(
        base: &BaseUrl,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        let mut down_conn = handshake::<Empty<Bytes>>(base, ca).await?;
        let req = request(base, ::http::Method::GET, "/v1/stream", Empty::new())?;
        let res = down_conn
            .sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::HttpTransport(e.to_string()))?;
        let res = check(res, 200).await?;
        let sid = res
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ClientError::HttpTransport(format!(
                    "the relay's answer has no {SESSION_HEADER} header"
                ))
            })?
            .to_owned();
        let up = handshake::<Full<Bytes>>(base, ca).await?;
        Ok(Self {
            base: base.clone(),
            ca: ca.map(std::path::Path::to_owned),
            sid,
            up,
            down: Down::new(res.into_body()),
            _down_conn: down_conn,
        })
    }

    /// One POST per message, awaited, so uploads arrive in order.
    pub(crate) async fn write(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let body = Full::new(Bytes::from(frame::encode(payload)?));
        let path = format!("/v1/stream/{}", self.sid);
        let req = request(&self.base, ::http::Method::POST, &path, body)?;
        // The relay (or a proxy) closes an idle keep-alive connection: open a new one for the
        // next upload. Only before sending: a request that may have arrived is never repeated.
        if self.up.sender.ready().await.is_err() {
            self.up = handshake::<Full<Bytes>>(&self.base, self.ca.as_deref()).await?;
        }
        let res = self
            .up
            .sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::HttpTransport(e.to_string()))?;
        match check(res, 204).await {
            Ok(_) => Ok(()),
            // The session ended (the relay closed it): report it as a closed connection.
            Err(ClientError::Http { status: 404, .. }) => Err(ClientError::Closed(None)),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn read(&mut self) -> Result<Vec<u8>, ClientError> {
        self.down.read().await
    }
}
