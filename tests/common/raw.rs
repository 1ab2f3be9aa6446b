//! The hostile-peer layer: a raw-frame client written from the contract (`relaybox.proto` and
//! the README's protocol section), not from the SDK. It speaks Noise through `snow` directly
//! and builds every `ClientFrame` by hand, so a test can do what the contract allows but the
//! SDK never does: ack each Deliver on its own frame, send receipts for messages it never got,
//! skip a handshake step, send garbage where a Noise message belongs, or set enum fields to
//! values the schema does not name.
//!
//! It borrows only the generated message types and the frame length prefix from the crate;
//! the handshake (prologue, version and pattern bytes, reply markers) is spelled out here as
//! the README states it, so a change to the contract breaks these tests too.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::Duration;

use prost::Message;
use relaybox::wire::messages::{
    client_frame, login, server_frame, ClientFrame, DeviceLogin, ErrorCode, Login, LoginResult,
    ServerFrame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::PATIENCE;

/// The contract's Noise parameters and prologue (README, "Protocol contract").
pub const XX: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
pub const PROLOGUE: &[u8] = b"relaybox/1";
/// The version byte that opens a client's first frame, then the pattern byte (1 = XX).
pub const VERSION: u8 = 1;
pub const PATTERN_XX: u8 = 1;

/// Reads and writes `u16`-length-prefixed frames on a TCP stream.
pub struct Frames {
    pub stream: TcpStream,
}

impl Frames {
    pub async fn connect(addr: &str) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the relay");
        stream.set_nodelay(true).unwrap();
        Self { stream }
    }

    /// Connects from `source`, another loopback address such as 127.0.0.2, so that the
    /// relay sees a client at another address (per-address limits).
    pub async fn connect_from(addr: &str, source: std::net::IpAddr) -> Self {
        let target: std::net::SocketAddr = addr.parse().expect("relay address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::new(source, 0))
            .expect("bind the source address");
        let stream = socket.connect(target).await.expect("connect to the relay");
        stream.set_nodelay(true).unwrap();
        Self { stream }
    }

    /// Writes one frame: `len:u16-be` then the payload.
    pub async fn write(&mut self, payload: &[u8]) {
        let len = u16::try_from(payload.len()).expect("frame fits u16");
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        self.stream.write_all(&out).await.expect("write frame");
    }

    /// Reads one frame, or `None` when the relay closed the connection.
    pub async fn read(&mut self) -> Option<Vec<u8>> {
        let fut = async {
            let mut len = [0u8; 2];
            self.stream.read_exact(&mut len).await.ok()?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            self.stream.read_exact(&mut buf).await.ok()?;
            Some(buf)
        };
        tokio::time::timeout(PATIENCE, fut)
            .await
            .expect("relay neither answered nor closed in time")
    }
}

/// A plaintext refusal from the relay's first reply (`0x01 code:u16-be reason`).
pub fn as_refusal(reply: &[u8]) -> Option<(ErrorCode, String)> {
    match reply {
        [0x01, hi, lo, reason @ ..] => Some((
            ErrorCode::try_from(i32::from(u16::from_be_bytes([*hi, *lo])))
                .unwrap_or(ErrorCode::Unspecified),
            String::from_utf8_lossy(reason).into_owned(),
        )),
        _ => None,
    }
}

/// XX up to and including the relay's message 2: what is left is to write message 3.
pub struct HalfOpen {
    pub frames: Frames,
    pub hs: snow::HandshakeState,
}

impl HalfOpen {
    /// Sends XX message 1 with `key` (a device's X25519 private key) and reads message 2.
    pub async fn start(addr: &str, key: &[u8; 32]) -> Self {
        Self::start_on(Frames::connect(addr).await, key).await
    }

    /// [`HalfOpen::start`] over a connection already made (e.g. [`Frames::connect_from`]).
    pub async fn start_on(mut frames: Frames, key: &[u8; 32]) -> Self {
        let mut hs = snow::Builder::new(XX.parse().unwrap())
            .prologue(PROLOGUE)
            .unwrap()
            .local_private_key(key)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut buf = vec![0u8; 65535];
        let n = hs.write_message(&[], &mut buf).unwrap();
        let mut first = vec![VERSION, PATTERN_XX];
        first.extend_from_slice(&buf[..n]);
        frames.write(&first).await;
        let reply = frames.read().await.expect("message 2");
        assert_eq!(
            reply[0],
            0x00,
            "expected a Noise reply, got {:?}",
            as_refusal(&reply)
        );
        hs.read_message(&reply[1..], &mut buf)
            .expect("read message 2");
        Self { frames, hs }
    }

    /// Writes message 3 carrying `payload` (normally an encoded `Login`) and returns the
    /// transport with the relay's first transport message, decoded as a `LoginResult`.
    pub async fn finish(mut self, payload: &[u8]) -> (RawClient, Option<LoginResult>) {
        let mut buf = vec![0u8; 65535];
        let n = self.hs.write_message(payload, &mut buf).unwrap();
        self.frames.write(&buf[..n]).await;
        let mut client = RawClient {
            frames: self.frames,
            noise: self.hs.into_transport_mode().unwrap(),
            next_req: 1,
            pushes: VecDeque::new(),
        };
        let result = match client.frames.read().await {
            Some(f) => client.open(&f).and_then(|p| LoginResult::decode(&*p).ok()),
            None => None,
        };
        (client, result)
    }
}

/// A logged-in raw client.
pub struct RawClient {
    pub frames: Frames,
    pub noise: snow::TransportState,
    next_req: u64,
    /// Pushes read while waiting for an answer, in arrival order.
    pub pushes: VecDeque<ServerFrame>,
}

impl RawClient {
    /// Logs in as a registered device over XX.
    pub async fn login(addr: &str, key: &[u8; 32], account: &str, device: u32) -> Self {
        let login = Login {
            kind: Some(login::Kind::Device(DeviceLogin {
                account: account.to_owned(),
                device,
                token: Vec::new(),
            })),
        };
        let (c, result) = HalfOpen::start(addr, key)
            .await
            .finish(&login.encode_to_vec())
            .await;
        let result = result.expect("a LoginResult");
        assert!(
            matches!(
                result.result,
                Some(relaybox::wire::messages::login_result::Result::Ok(_))
            ),
            "login refused: {result:?}"
        );
        c
    }

    /// Registers `phone` by code loop-back with `key` (XX with a `Register` login, then
    /// RequestCode and VerifyCode with the code `code_for` reads), and returns the session,
    /// now that device. It uploads no keys: a device the SDK would never leave keyless.
    pub async fn register(
        addr: &str,
        key: &[u8; 32],
        phone: &str,
        code_for: impl FnOnce(&str) -> String,
    ) -> Self {
        use relaybox::wire::messages::{Register, RequestCode, VerifyCode};
        let login = Login {
            kind: Some(login::Kind::Register(Register {})),
        };
        let (mut c, _) = HalfOpen::start(addr, key)
            .await
            .finish(&login.encode_to_vec())
            .await;
        let sent = c
            .request(client_frame::Body::RequestCode(RequestCode {
                phone: phone.to_owned(),
            }))
            .await;
        assert!(matches!(sent, server_frame::Body::CodeSent(_)), "{sent:?}");
        let code = code_for(phone);
        let verified = c
            .request(client_frame::Body::VerifyCode(VerifyCode {
                phone: phone.to_owned(),
                code,
            }))
            .await;
        assert!(
            matches!(verified, server_frame::Body::Verified(_)),
            "{verified:?}"
        );
        c
    }

    /// Logs in as the device an SDK client registered.
    pub async fn login_as(addr: &str, c: &relaybox::client::Client) -> Self {
        let account = c.state.account.clone().expect("registered");
        Self::login(addr, &c.state.noise.private, &account, c.state.device).await
    }

    fn open(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; frame.len()];
        let n = self.noise.read_message(frame, &mut out).ok()?;
        out.truncate(n);
        Some(out)
    }

    /// Encrypts and writes one frame with an explicit `req_id` (0 for no answer).
    pub async fn send_frame(&mut self, req_id: u64, body: client_frame::Body) {
        let plain = ClientFrame {
            req_id,
            body: Some(body),
        }
        .encode_to_vec();
        self.send_plain(&plain).await;
    }

    /// Encrypts any bytes as one transport message (a frame that is not a `ClientFrame`).
    pub async fn send_plain(&mut self, plain: &[u8]) {
        let mut out = vec![0u8; plain.len() + 16];
        let n = self.noise.write_message(plain, &mut out).unwrap();
        self.frames.write(&out[..n]).await;
    }

    /// Writes bytes that are not a Noise message at all.
    pub async fn send_garbage(&mut self, bytes: &[u8]) {
        self.frames.write(bytes).await;
    }

    /// The next frame from the relay, or `None` when it closed.
    pub async fn recv(&mut self) -> Option<ServerFrame> {
        if let Some(p) = self.pushes.pop_front() {
            return Some(p);
        }
        self.recv_wire().await
    }

    async fn recv_wire(&mut self) -> Option<ServerFrame> {
        let f = self.frames.read().await?;
        let plain = self.open(&f).expect("the relay's frame decrypts");
        Some(ServerFrame::decode(&*plain).expect("a ServerFrame"))
    }

    /// Sends a request and returns its answer's body; pushes read meanwhile are kept.
    pub async fn request(&mut self, body: client_frame::Body) -> server_frame::Body {
        let req_id = self.next_req;
        self.next_req += 1;
        self.send_frame(req_id, body).await;
        loop {
            let f = self
                .recv_wire()
                .await
                .expect("relay closed before answering");
            if f.req_id == req_id {
                return f.body.expect("answer has a body");
            }
            self.pushes.push_back(f);
        }
    }

    /// The next frame within `wait`, or `None` if nothing came.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<ServerFrame> {
        if let Some(p) = self.pushes.pop_front() {
            return Some(p);
        }
        tokio::time::timeout(wait, self.recv_wire())
            .await
            .ok()
            .flatten()
    }
}

/// The error of an answer, or a panic naming what came instead.
pub fn expect_error(body: server_frame::Body) -> (ErrorCode, String) {
    match body {
        server_frame::Body::Error(e) => (e.code(), e.message),
        other => panic!("expected an error, got {other:?}"),
    }
}
