//! A client's connection to the relay: a transport link (`transport`: TCP, WebSocket or
//! chunked HTTP), the Noise handshake (IK with the pinned key and token, falling back to XX),
//! then requests matched to answers by `req_id` and pushes buffered in arrival order. One
//! owner: `request` and `next_push` read the link themselves, answering the relay's pings on
//! the way (the HTTP transports' only task is hyper's connection driver).

use std::collections::VecDeque;
use std::time::Duration;

use super::transport::{Link, Target, TransportKind, DUPLEX_PROBE_TIMEOUT};
use crate::wire::handshake::{ClientIk, ClientXx, StaticKeypair, Transport};
use crate::wire::messages::{
    client_frame, login, login_result, server_frame, ClientFrame, CompanionLogin, DeviceLogin,
    Error, ErrorCode, Login, Pong, Register, ServerFrame,
};
use crate::wire::ProtocolError;

/// How long the client waits for the relay during the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes retried after the relay's rate limit refused them.
pub const RATE_LIMIT_RETRIES: u32 = 4;
/// How long the client waits for the answer to one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Failures of the client side of a connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the relay at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The relay answered with an error.
    #[error("relay: {0}")]
    Relay(Error),
    /// The relay closed the session (with its reason, if it gave one).
    #[error("the relay closed the connection{}", .0.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Closed(Option<Error>),
    #[error("timed out waiting for the relay ({0})")]
    Timeout(&'static str),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// The relay's HTTP URL is unusable. (the user's fault)
    #[error("bad relay URL: {0}")]
    BadUrl(String),
    /// TLS to an `https://` relay failed (untrusted certificate, wrong name, bad CA file).
    #[error("TLS: {0}")]
    Tls(String),
    /// The HTTP listener refused the request with this status.
    #[error("HTTP {status}: {message}")]
    Http { status: u16, message: String },
    /// The HTTP connection failed below the relay protocol.
    #[error("HTTP: {0}")]
    HttpTransport(String),
    /// The WebSocket failed or was closed with an error code.
    #[error("WebSocket: {0}")]
    WebSocket(String),
}

impl ClientError {
    /// The relay's error code, if the relay refused something.
    pub fn relay_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Relay(e) | Self::Closed(Some(e)) => Some(e.code()),
            Self::Protocol(ProtocolError::Refused { code, .. }) => Some(*code),
            _ => None,
        }
    }
}

/// Who logs in.
#[derive(Clone, Debug)]
pub enum Identity {
    /// An anonymous registration session.
    Register,
    /// A companion whose key a primary linked (first login carries the pairing secret).
    Companion { secret: Vec<u8> },
    /// A registered device, with its resumption token if it has one.
    Device {
        account: String,
        device: u32,
        token: Option<Vec<u8>>,
    },
}

/// What a completed handshake produced.
#[derive(Debug, Clone)]
pub struct Established {
    /// The relay's static key (pin it).
    pub relay_key: [u8; 32],
    /// The new resumption token (empty for registration sessions).
    pub token: Vec<u8>,
    /// Whether the one-round-trip IK resumption was used.
    pub resumed: bool,
    /// Who the relay says this session is (device sessions).
    pub account: String,
    pub device: u32,
}

pub struct Connection {
    raw: Link,
    transport: Transport,
    next_req_id: u64,
    pushes: VecDeque<ServerFrame>,
}

impl Connection {
    /// Connects and logs in: IK if a relay key is pinned and a token is held, else XX; an IK
    /// refusal (stale token, changed relay key) falls back to XX on a new connection.
    pub async fn connect(
        addr: &str,
        device_key: &StaticKeypair,
        pinned: Option<[u8; 32]>,
        who: &Identity,
    ) -> Result<(Self, Established), ClientError> {
        Self::connect_from(addr, None, device_key, pinned, who).await
    }

    /// As [`Connection::connect`], over the transport `target` names (TCP, WebSocket,
    /// chunked HTTP, or the first that works).
    pub async fn connect_to(
        target: &Target,
        device_key: &StaticKeypair,
        pinned: Option<[u8; 32]>,
        who: &Identity,
    ) -> Result<(Self, Established), ClientError> {
        Self::connect_target(target, None, device_key, pinned, who).await
    }

    /// As [`Connection::connect`], from a chosen local address (load tests spread many
    /// connections over several loopback addresses).
    pub async fn connect_from(
        addr: &str,
        local: Option<std::net::IpAddr>,
        device_key: &StaticKeypair,
        pinned: Option<[u8; 32]>,
        who: &Identity,
    ) -> Result<(Self, Established), ClientError> {
        Self::connect_target(&Target::tcp(addr), local, device_key, pinned, who).await
    }

    async fn connect_target(
        addr: &Target,
        local: Option<std::net::IpAddr>,
        device_key: &StaticKeypair,
        pinned: Option<[u8; 32]>,
        who: &Identity,
    ) -> Result<(Self, Established), ClientError> {
        if let (
            Some(relay_key),
            Identity::Device {
                account,
                device,
                token: Some(token),
            },
        ) = (pinned, who)
        {
            let login = device_login(account, *device, token.clone());
            match Self::ik(addr, local, device_key, &relay_key, &login).await {
                Ok(ok) => return Ok(ok),
                Err(e) if is_fallback(&e) => {
                    tracing::debug!(error = %e, "Resumption refused; falling back to a full handshake.");
                }
                Err(e) => return Err(e),
            }
        }
        let login = match who {
            Identity::Register => Login {
                kind: Some(login::Kind::Register(Register {})),
            },
            Identity::Device {
                account, device, ..
            } => device_login(account, *device, Vec::new()),
            Identity::Companion { secret } => Login {
                kind: Some(login::Kind::Companion(CompanionLogin {
                    secret: secret.clone(),
                })),
            },
        };
        // A relay that refuses the handshake for its rate limit is tried again shortly.
        let mut attempt = 0;
        loop {
            match Self::xx(addr, local, device_key, &login).await {
                Err(e)
                    if e.relay_code() == Some(ErrorCode::RateLimited)
                        && attempt < RATE_LIMIT_RETRIES =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    /// The transport this connection runs over.
    pub fn transport(&self) -> TransportKind {
        self.raw.kind()
    }

    fn new(raw: Link, transport: Transport) -> Self {
        Self {
            raw,
            transport,
            next_req_id: 1,
            pushes: VecDeque::new(),
        }
    }

    /// Opens a link and runs `handshake` over it. A full-duplex HTTP stream whose first reply
    /// does not come (a proxy holding the request body back) is retried in split mode.
    async fn with_link<F, Fut>(
        addr: &Target,
        local: Option<std::net::IpAddr>,
        handshake: F,
    ) -> Result<(Self, Established), ClientError>
    where
        F: Fn(Link, std::time::Duration) -> Fut,
        Fut: std::future::Future<Output = Result<(Self, Established), ClientError>>,
    {
        let link = Link::open(addr, local).await?;
        if link.kind() != TransportKind::Http || !addr.split_fallback() {
            return handshake(link, HANDSHAKE_TIMEOUT).await;
        }
        match handshake(link, DUPLEX_PROBE_TIMEOUT).await {
            Err(ClientError::Timeout("handshake")) => {
                tracing::info!("The chunked HTTP stream got no answer; retrying in split mode.");
                let split = addr.with_kind(TransportKind::HttpSplit);
                handshake(Link::open(&split, local).await?, HANDSHAKE_TIMEOUT).await
            }
            other => other,
        }
    }

    async fn ik(
        addr: &Target,
        local: Option<std::net::IpAddr>,
        key: &StaticKeypair,
        relay: &[u8; 32],
        login: &Login,
    ) -> Result<(Self, Established), ClientError> {
        Self::with_link(addr, local, |raw, first_reply| {
            Self::ik_over(raw, first_reply, key, relay, login)
        })
        .await
    }

    async fn ik_over(
        mut raw: Link,
        first_reply: std::time::Duration,
        key: &StaticKeypair,
        relay: &[u8; 32],
        login: &Login,
    ) -> Result<(Self, Established), ClientError> {
        let (state, first) = ClientIk::start(key, relay, login)?;
        raw.write(&first).await?;
        let reply = raw.read_timeout(first_reply).await?;
        let (transport, result) = state.finish(&reply)?;
        let ok = login_ok(result)?;
        let est = Established {
            relay_key: *relay,
            token: ok.token,
            resumed: true,
            account: ok.account,
            device: ok.device,
        };
        Ok((Self::new(raw, transport), est))
    }

    async fn xx(
        addr: &Target,
        local: Option<std::net::IpAddr>,
        key: &StaticKeypair,
        login: &Login,
    ) -> Result<(Self, Established), ClientError> {
        Self::with_link(addr, local, |raw, first_reply| {
            Self::xx_over(raw, first_reply, key, login)
        })
        .await
    }

    async fn xx_over(
        mut raw: Link,
        first_reply: std::time::Duration,
        key: &StaticKeypair,
        login: &Login,
    ) -> Result<(Self, Established), ClientError> {
        let (state, first) = ClientXx::start(key)?;
        raw.write(&first).await?;
        let reply = raw.read_timeout(first_reply).await?;
        let (mut transport, msg3, relay_key) = state.finish(&reply, login)?;
        raw.write(&msg3).await?;
        let result_frame = raw.read_timeout(HANDSHAKE_TIMEOUT).await?;
        // A message 3 the relay could not read is refused in plaintext.
        let result = match transport.decrypt(&result_frame, "LoginResult") {
            Ok(result) => result,
            Err(e) => {
                return Err(crate::wire::handshake::as_refusal(&result_frame)
                    .unwrap_or(e)
                    .into())
            }
        };
        let ok = login_ok(result)?;
        let est = Established {
            relay_key,
            token: ok.token,
            resumed: false,
            account: ok.account,
            device: ok.device,
        };
        Ok((Self::new(raw, transport), est))
    }

    /// Writes a frame. If the relay already closed the connection, the reason it sent (a
    /// `closing` frame still unread) is returned rather than a bare broken pipe.
    async fn write_raw(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        match self.raw.write(payload).await {
            Ok(()) => Ok(()),
            Err(ClientError::Io(e)) => {
                Err(self.closing_reason().await.unwrap_or(ClientError::Io(e)))
            }
            Err(e) => Err(e),
        }
    }

    /// Looks briefly for a `closing` frame among what the relay sent last.
    async fn closing_reason(&mut self) -> Option<ClientError> {
        let look = async {
            loop {
                let raw = self.raw.read().await.ok()?;
                let f: ServerFrame = self.transport.decrypt(&raw, "ServerFrame").ok()?;
                if let Some(server_frame::Body::Closing(e)) = f.body {
                    return Some(ClientError::Closed(Some(e)));
                }
            }
        };
        tokio::time::timeout(Duration::from_millis(200), look)
            .await
            .ok()
            .flatten()
    }

    async fn read_raw(&mut self) -> Result<Vec<u8>, ClientError> {
        self.raw.read().await
    }

    /// Sends a frame that expects no answer (Ack, chat state).
    pub async fn send_only(&mut self, body: client_frame::Body) -> Result<(), ClientError> {
        let payload = self.transport.encrypt(&ClientFrame {
            req_id: 0,
            body: Some(body),
        })?;
        self.write_raw(&payload).await
    }

    /// Sends a request and waits for its answer; pushes arriving meanwhile are kept.
    pub async fn request(
        &mut self,
        body: client_frame::Body,
    ) -> Result<server_frame::Body, ClientError> {
        let req_id = self.next_req_id;
        self.next_req_id += 1;
        let payload = self.transport.encrypt(&ClientFrame {
            req_id,
            body: Some(body),
        })?;
        self.write_raw(&payload).await?;
        let wait = async {
            loop {
                let f = self.read_frame().await?;
                if f.req_id == req_id {
                    return match f.body {
                        Some(server_frame::Body::Error(e)) => Err(ClientError::Relay(e)),
                        Some(body) => Ok(body),
                        None => Err(ClientError::Unexpected("empty answer".into())),
                    };
                }
                self.pushes.push_back(f);
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, wait)
            .await
            .map_err(|_| ClientError::Timeout("request"))?
    }

    /// Sends a request without waiting for its answer (pipelining, e.g. the bench tool);
    /// returns its `req_id`. Answers arrive through [`Connection::recv`].
    pub async fn send_request(&mut self, body: client_frame::Body) -> Result<u64, ClientError> {
        let req_id = self.next_req_id;
        self.next_req_id += 1;
        let payload = self.transport.encrypt(&ClientFrame {
            req_id,
            body: Some(body),
        })?;
        self.write_raw(&payload).await?;
        Ok(req_id)
    }

    /// The next frame of any kind (answers and pushes), pings answered on the way.
    pub async fn recv(&mut self) -> Result<ServerFrame, ClientError> {
        if let Some(f) = self.pushes.pop_front() {
            return Ok(f);
        }
        self.read_frame().await
    }

    /// The next push (Deliver, receipt, chat state, keys low). Cancel-safe.
    pub async fn next_push(&mut self) -> Result<ServerFrame, ClientError> {
        if let Some(f) = self.pushes.pop_front() {
            return Ok(f);
        }
        self.read_frame().await
    }

    /// Reads one frame, answering pings and turning a `closing` frame into an error.
    async fn read_frame(&mut self) -> Result<ServerFrame, ClientError> {
        loop {
            let raw = self.read_raw().await?;
            let f: ServerFrame = self.transport.decrypt(&raw, "ServerFrame")?;
            match f.body {
                Some(server_frame::Body::Ping(p)) => {
                    self.send_only(client_frame::Body::Pong(Pong { nonce: p.nonce }))
                        .await?;
                }
                Some(server_frame::Body::Closing(e)) => return Err(ClientError::Closed(Some(e))),
                _ => return Ok(f),
            }
        }
    }
}

fn device_login(account: &str, device: u32, token: Vec<u8>) -> Login {
    Login {
        kind: Some(login::Kind::Device(DeviceLogin {
            account: account.to_owned(),
            device,
            token,
        })),
    }
}

fn login_ok(
    result: crate::wire::messages::LoginResult,
) -> Result<crate::wire::messages::LoginOk, ClientError> {
    match result.result {
        Some(login_result::Result::Ok(ok)) => Ok(ok),
        Some(login_result::Result::Error(e)) => Err(ClientError::Relay(e)),
        None => Err(ClientError::Unexpected("empty login result".into())),
    }
}

/// Whether an IK failure should fall back to XX (rather than be reported).
fn is_fallback(e: &ClientError) -> bool {
    matches!(
        e.relay_code(),
        Some(ErrorCode::TokenInvalid | ErrorCode::HandshakeFailed)
    ) || matches!(e, ClientError::Protocol(ProtocolError::Noise(_)))
}
