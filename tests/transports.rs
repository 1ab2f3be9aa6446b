//! The three client transports through the real binary: Noise over TCP, WebSocket and chunked
//! HTTP (full duplex and split) carry the same conversation to the same result; curl drives
//! the chunked stream through the Noise handshake; a request-buffering proxy pushes the HTTP
//! transport into split mode; and every bad HTTP input gets its specific answer while the
//! relay keeps serving.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{next_event, Relay, PATIENCE};
use futures::{SinkExt, StreamExt};
use relaybox::client::transport::TransportKind;
use relaybox::client::{Client, Event};
use relaybox::e2e::payload::Payload;
use relaybox::wire::frame::{self, FrameDecoder, MAX_FRAME_BYTES};
use relaybox::wire::handshake::{ClientXx, StaticKeypair};
use relaybox::wire::messages::{
    login, login_result, ErrorCode, Login, LoginResult, ReceiptKind, Register,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Phone numbers per run: `+1415555{run}{person}`.
fn phone(run: usize, person: usize) -> String {
    format!("+1415555{run}{person:03}")
}

/// A registered client that talks to `relay` over `kind`.
async fn user_over(relay: &Relay, name: &str, phone: &str, kind: TransportKind) -> Client {
    let home = relay.dir.path().join(format!("client-{name}"));
    let mut c = Client::open(&home, Some(&relay.addr)).unwrap();
    c.use_transport(kind, Some(&format!("http://{}", relay.http_addr)));
    c.register(phone).await.unwrap();
    let code = relay.code_for(phone);
    c.verify(phone, &code).await.unwrap();
    if kind != TransportKind::Auto {
        assert_eq!(
            c.connected_over(),
            Some(kind),
            "{name} connected over the wrong transport"
        );
    }
    c
}

/// The next message event as `(from, group?, text)`, skipping other events.
async fn next_message(c: &mut Client) -> (String, Option<String>, String) {
    loop {
        if let Event::Message {
            from, group, inner, ..
        } = next_event(c).await
        {
            let Payload::Text { body } = inner.payload else {
                panic!("not text")
            };
            return (from, group.map(|_| "group".to_owned()), body);
        }
    }
}

/// The next receipt as `(from, kind)`, skipping other events.
async fn next_receipt(c: &mut Client) -> (String, ReceiptKind) {
    loop {
        if let Event::Receipt { from, kind, .. } = next_event(c).await {
            return (from, kind);
        }
    }
}

/// Register, verify, 1:1 send, receipts, group create and group message; returns what each
/// party saw, with phone numbers replaced by names.
async fn conversation(relay: &Relay, run: usize, kind: TransportKind) -> Vec<String> {
    let (a, b, c) = (phone(run, 1), phone(run, 2), phone(run, 3));
    let name = |p: &str| {
        if p == a {
            "alice"
        } else if p == b {
            "bob"
        } else if p == c {
            "carol"
        } else {
            "?"
        }
    };
    let k = kind.as_str();
    let mut alice = user_over(relay, &format!("alice-{k}"), &a, kind).await;
    let mut bob = user_over(relay, &format!("bob-{k}"), &b, kind).await;
    let mut carol = user_over(relay, &format!("carol-{k}"), &c, kind).await;
    let mut seen = Vec::new();

    let (msg_id, ack) = alice.send_text(&b, "hello bob").await.unwrap();
    assert!(ack.timestamp_ms > 0);
    let (from, _, text) = next_message(&mut bob).await;
    seen.push(format!("bob got {text:?} from {}", name(&from)));
    let (from, r) = next_receipt(&mut alice).await;
    seen.push(format!("alice got {r:?} from {}", name(&from)));
    bob.receipt(&a, ReceiptKind::Read, &[msg_id]).await.unwrap();
    let (from, r) = next_receipt(&mut alice).await;
    seen.push(format!("alice got {r:?} from {}", name(&from)));
    bob.send_text(&a, "hi alice").await.unwrap();
    let (from, _, text) = next_message(&mut alice).await;
    seen.push(format!("alice got {text:?} from {}", name(&from)));

    let info = alice
        .create_group("branch 12", &[b.clone(), c.clone()])
        .await
        .unwrap();
    seen.push(format!("group of {}", info.members.len()));
    alice
        .send_group_text(&info.group, "hello group")
        .await
        .unwrap();
    for (who, client) in [("bob", &mut bob), ("carol", &mut carol)] {
        let (from, group, text) = next_message(client).await;
        seen.push(format!(
            "{who} got {text:?} in {group:?} from {}",
            name(&from)
        ));
    }
    let mut receipts = vec![
        next_receipt(&mut alice).await,
        next_receipt(&mut alice).await,
    ];
    receipts.sort_by(|x, y| x.0.cmp(&y.0));
    for (from, r) in receipts {
        seen.push(format!("alice got {r:?} from {}", name(&from)));
    }
    // Every client still runs over the transport it was given (no silent fallback).
    for c in [&alice, &bob, &carol] {
        assert_eq!(c.connected_over(), Some(kind));
    }
    seen
}

#[tokio::test]
async fn the_same_conversation_gives_the_same_result_over_tcp_websocket_and_chunked_http() {
    let relay = Relay::start();
    let kinds = [
        TransportKind::Tcp,
        TransportKind::Ws,
        TransportKind::Http,
        TransportKind::HttpSplit,
    ];
    let mut results = Vec::new();
    for (run, kind) in kinds.into_iter().enumerate() {
        results.push((kind, conversation(&relay, run, kind).await));
    }
    let (_, tcp) = &results[0];
    assert_eq!(tcp.len(), 9, "{tcp:#?}");
    assert!(
        tcp.contains(&"bob got \"hello bob\" from alice".to_owned()),
        "{tcp:#?}"
    );
    for (kind, seen) in &results[1..] {
        assert_eq!(seen, tcp, "{kind:?} differs from TCP");
    }
    let logs = relay.logs();
    assert!(logs.contains("WebSocket session opened."), "{logs}");
    assert!(logs.contains("transport=\"chunked stream\""), "{logs}");
    assert!(logs.contains("transport=\"split stream\""), "{logs}");
}

/// The relay's static key from its ready line.
fn relay_key(relay: &Relay) -> [u8; 32] {
    let logs = relay.logs();
    let hex_key = logs
        .lines()
        .find(|l| l.contains("Relay ready."))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("relay_key="))
        })
        .unwrap();
    hex::decode(hex_key).unwrap().try_into().unwrap()
}

/// Reads frames from a child's stdout on a thread.
fn frames_of(mut out: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
        let mut buf = [0u8; 4096];
        loop {
            while let Ok(Some(f)) = d.next_frame() {
                if tx.send(f).is_err() {
                    return;
                }
            }
            match out.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => d.extend(&buf[..n]),
            }
        }
    });
    rx
}

#[tokio::test]
async fn curl_drives_the_chunked_stream_through_the_noise_handshake() {
    let relay = Relay::start();
    let mut curl = Command::new("curl")
        // `-T .` reads stdin without blocking, so curl reads the response while uploading.
        .args(["-sSN", "-X", "POST", "-T", "."])
        .args(["-H", "Content-Type: application/octet-stream"])
        .arg(format!("http://{}/v1/stream", relay.http_addr))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl is installed");
    let mut stdin = curl.stdin.take().unwrap();
    let frames = frames_of(curl.stdout.take().unwrap());

    // XX message 1 from relaybox::wire, up through curl's chunked request body…
    let key = StaticKeypair::generate();
    let (xx, first) = ClientXx::start(&key).unwrap();
    stdin.write_all(&frame::encode(&first).unwrap()).unwrap();
    stdin.flush().unwrap();
    // …message 2 back through curl's chunked response, while the request is still open.
    let reply = frames.recv_timeout(PATIENCE).expect("message 2 from curl");
    let register = Login {
        kind: Some(login::Kind::Register(Register {})),
    };
    let (mut transport, msg3, relay_static) = xx.finish(&reply, &register).unwrap();
    assert_eq!(
        relay_static,
        relay_key(&relay),
        "the relay proved its static key"
    );
    stdin.write_all(&frame::encode(&msg3).unwrap()).unwrap();
    stdin.flush().unwrap();
    let result = frames
        .recv_timeout(PATIENCE)
        .expect("login result from curl");
    let result: LoginResult = transport.decrypt(&result, "LoginResult").unwrap();
    assert!(
        matches!(result.result, Some(login_result::Result::Ok(_))),
        "{result:?}"
    );
    // Closing stdin ends the request body; the relay ends the session and curl exits 0.
    drop(stdin);
    let status = wait_with_patience(&mut curl);
    assert!(status.success(), "curl exited with {status}");
}

fn wait_with_patience(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "child did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `curl` with `args`; returns (HTTP status, body).
fn curl(args: &[&str], stdin: &[u8]) -> (u16, Vec<u8>) {
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = out.stdout;
    let split = text.iter().rposition(|&b| b == b'\n').unwrap();
    let status = String::from_utf8_lossy(&text[split + 1..])
        .trim()
        .parse()
        .unwrap();
    (status, text[..split].to_vec())
}

/// The `error` field of a JSON error body.
fn error_kind(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    v["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn bad_http_requests_get_specific_statuses_and_the_relay_keeps_serving() {
    let relay = Relay::start();
    let base = format!("http://{}", relay.http_addr);
    // Wrong path, wrong method.
    let (status, body) = curl(&[&format!("{base}/v2/nothing")], b"");
    assert_eq!((status, error_kind(&body).as_str()), (404, "not_found"));
    let (status, body) = curl(&["-X", "DELETE", &format!("{base}/v1/stream")], b"");
    assert_eq!(
        (status, error_kind(&body).as_str()),
        (405, "method_not_allowed")
    );
    let (status, body) = curl(&["-X", "PUT", &format!("{base}/v1/ws")], b"");
    assert_eq!(
        (status, error_kind(&body).as_str()),
        (405, "method_not_allowed")
    );
    // A plain GET where a WebSocket upgrade belongs.
    let (status, body) = curl(&[&format!("{base}/v1/ws")], b"");
    assert_eq!((status, error_kind(&body).as_str()), (400, "not_websocket"));
    // Split mode: malformed, unknown, empty and oversized uploads.
    let (status, body) = curl(
        &["-X", "POST", &format!("{base}/v1/stream/..%2F..%2Fetc")],
        b"",
    );
    assert_eq!(
        (status, error_kind(&body).as_str()),
        (400, "malformed_session_id")
    );
    let unknown = format!("{base}/v1/stream/{}", "ab".repeat(16));
    let (status, body) = curl(&["--data-binary", "@-", &unknown], b"\x00\x01x");
    assert_eq!(
        (status, error_kind(&body).as_str()),
        (404, "unknown_session")
    );
    // A live split session: its id takes uploads; empty and oversized ones are refused.
    let mut down = Command::new("curl")
        .args([
            "-sSN",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("{base}/v1/stream"),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut headers = String::new();
    let mut out = down.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while !headers.ends_with("\r\n\r\n") {
        assert_eq!(out.read(&mut byte).unwrap(), 1, "headers: {headers}");
        headers.push(byte[0] as char);
    }
    let sid = headers
        .lines()
        .find_map(|l| l.strip_prefix("relaybox-session: "))
        .unwrap_or_else(|| panic!("no session header in {headers}"))
        .trim()
        .to_owned();
    let up = format!("{base}/v1/stream/{sid}");
    let (status, body) = curl(&["--data-binary", "@-", &up], b"");
    assert_eq!((status, error_kind(&body).as_str()), (400, "empty_upload"));
    let big = vec![0u8; relaybox::edge::http::MAX_UPLOAD_BYTES + 1];
    let (status, body) = curl(&["--data-binary", "@-", &up], &big);
    assert_eq!(
        (status, error_kind(&body).as_str()),
        (413, "upload_too_large")
    );
    // Garbage as the first frame: the session refuses the handshake and ends; its id is gone.
    let (status, _) = curl(
        &["--data-binary", "@-", &up],
        &frame::encode(b"\x01\x01not noise").unwrap(),
    );
    assert_eq!(status, 204);
    let _ = wait_with_patience(&mut down);
    let (status, body) = curl(&["--data-binary", "@-", &up], b"\x00\x01x");
    assert_eq!(
        (status, error_kind(&body).as_str()),
        (404, "unknown_session")
    );

    // Garbage bytes in the full-duplex stream body: a plaintext refusal frame comes back.
    let (status, body) = curl(
        &[
            "-X",
            "POST",
            "--data-binary",
            "@-",
            &format!("{base}/v1/stream"),
        ],
        b"\x00\x10this is not noise",
    );
    assert_eq!(status, 200);
    let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
    d.extend(&body);
    let refusal = d.next_frame().unwrap().expect("a refusal frame");
    assert_eq!(refusal[0], 0x01, "a refusal, got {refusal:?}");
    let code =
        ErrorCode::try_from(i32::from(u16::from_be_bytes([refusal[1], refusal[2]]))).unwrap();
    assert_eq!(code, ErrorCode::HandshakeFailed);
    // A frame longer than the handshake allows: refused as too large.
    let (_, body) = curl(
        &[
            "-X",
            "POST",
            "--data-binary",
            "@-",
            &format!("{base}/v1/stream"),
        ],
        &[0xff, 0xff, 1, 2, 3],
    );
    let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
    d.extend(&body);
    let refusal = d.next_frame().unwrap().expect("a refusal frame");
    let code =
        ErrorCode::try_from(i32::from(u16::from_be_bytes([refusal[1], refusal[2]]))).unwrap();
    assert_eq!(code, ErrorCode::FrameTooLarge);

    // Still serving, over HTTP.
    let mut c = user_over(&relay, "probe", &phone(9, 1), TransportKind::Http).await;
    assert_eq!(c.status().await.unwrap().account, phone(9, 1));
}

async fn raw_ws(relay: &Relay) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(&relay.http_addr)
        .await
        .unwrap();
    let url = format!("ws://{}/v1/ws", relay.http_addr);
    tokio_tungstenite::client_async(url.as_str(), tcp)
        .await
        .unwrap()
        .0
}

/// The close code the relay sends, skipping other messages.
async fn close_code(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> (CloseCode, String) {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => return (f.code, f.reason.to_string()),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.unwrap()
}

#[tokio::test]
async fn bad_websocket_messages_close_with_specific_codes_and_the_relay_keeps_serving() {
    let relay = Relay::start();
    // A text message: 1003 unsupported data.
    let mut ws = raw_ws(&relay).await;
    ws.send(Message::Text("hello".into())).await.unwrap();
    let (code, reason) = close_code(&mut ws).await;
    assert_eq!(code, CloseCode::Unsupported, "{reason}");
    assert!(reason.contains("binary"), "{reason}");
    // A message above the handshake limit: 1009 message too big.
    let mut ws = raw_ws(&relay).await;
    ws.send(Message::Binary(vec![1u8; 4096].into()))
        .await
        .unwrap();
    let (code, _) = close_code(&mut ws).await;
    assert_eq!(code, CloseCode::Size);
    // Above the largest frame at all: refused by the WebSocket codec, also 1009.
    let mut ws = raw_ws(&relay).await;
    let _ = ws
        .send(Message::Binary(vec![1u8; MAX_FRAME_BYTES + 1].into()))
        .await;
    let (code, _) = close_code(&mut ws).await;
    assert_eq!(code, CloseCode::Size);
    // Garbage in a binary message: the plaintext refusal frame, then a normal close.
    let mut ws = raw_ws(&relay).await;
    ws.send(Message::Binary(b"\x01\x01not noise".to_vec().into()))
        .await
        .unwrap();
    match tokio::time::timeout(PATIENCE, ws.next()).await.unwrap() {
        Some(Ok(Message::Binary(b))) => {
            assert_eq!(b[0], 0x01);
            let code = ErrorCode::try_from(i32::from(u16::from_be_bytes([b[1], b[2]]))).unwrap();
            assert_eq!(code, ErrorCode::HandshakeFailed);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A frame with a reserved bit set (RSV1, no extension negotiated), written under the
    // client's codec: 1002 protocol error (RFC 6455 §5.2).
    let mut ws = raw_ws(&relay).await;
    let payload = [1u8, 1, 0, 0];
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut raw = vec![0b1100_0010, 0x80 | payload.len() as u8];
    raw.extend_from_slice(&mask);
    raw.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    tokio::io::AsyncWriteExt::write_all(ws.get_mut(), &raw)
        .await
        .unwrap();
    let (code, reason) = close_code(&mut ws).await;
    assert_eq!(code, CloseCode::Protocol, "{reason}");
    assert!(reason.contains("reserved bits"), "{reason}");
    let mut c = user_over(&relay, "probe", &phone(9, 1), TransportKind::Ws).await;
    assert_eq!(c.status().await.unwrap().account, phone(9, 1));
    let logs = relay.logs();
    assert!(
        logs.contains("text message; relaybox speaks binary messages only"),
        "{logs}"
    );
}

#[tokio::test]
async fn http_sessions_share_the_tcp_admission_limits() {
    let relay = Relay::start_with("[limits]\nmax_connections_per_ip = 1\n");
    let _held = std::net::TcpStream::connect(&relay.addr).unwrap();
    // Give the relay a moment to admit the TCP connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = format!("http://{}", relay.http_addr);
    let (status, body) = curl(
        &[
            "-X",
            "POST",
            "--data-binary",
            "@-",
            &format!("{base}/v1/stream"),
        ],
        b"",
    );
    assert_eq!(
        (status, error_kind(&body).as_str()),
        (503, "too_many_connections")
    );
    let (status, body) = curl(&[&format!("{base}/v1/stream")], b"");
    assert_eq!(
        (status, error_kind(&body).as_str()),
        (503, "too_many_connections")
    );
    let tcp = tokio::net::TcpStream::connect(&relay.http_addr)
        .await
        .unwrap();
    let url = format!("ws://{}/v1/ws", relay.http_addr);
    match tokio_tungstenite::client_async(url.as_str(), tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 503)
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn auto_uses_tcp_and_falls_back_to_websocket_when_tcp_is_unreachable() {
    let relay = Relay::start();
    let mut alice = user_over(&relay, "alice", &phone(1, 1), TransportKind::Auto).await;
    assert_eq!(alice.connected_over(), Some(TransportKind::Tcp));
    // A client whose TCP address leads nowhere reaches the relay over WebSocket.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap().to_string();
    drop(closed);
    let home = relay.dir.path().join("client-bob");
    let mut bob = Client::open(&home, Some(&nowhere)).unwrap();
    bob.use_transport(
        TransportKind::Auto,
        Some(&format!("http://{}", relay.http_addr)),
    );
    bob.register(&phone(1, 2)).await.unwrap();
    let code = relay.code_for(&phone(1, 2));
    bob.verify(&phone(1, 2), &code).await.unwrap();
    assert_eq!(bob.connected_over(), Some(TransportKind::Ws));
    bob.send_text(&phone(1, 1), "via websocket").await.unwrap();
    assert_eq!(next_message(&mut alice).await.2, "via websocket");
}

#[tokio::test]
async fn a_graceful_stop_tells_websocket_and_http_clients_why_and_exits_zero_without_waiting_out_the_grace(
) {
    let mut relay = Relay::start();
    let kinds = [
        TransportKind::Ws,
        TransportKind::Http,
        TransportKind::HttpSplit,
    ];
    let mut clients = Vec::new();
    for (n, kind) in kinds.into_iter().enumerate() {
        let mut c = user_over(&relay, kind.as_str(), &phone(1, n), kind).await;
        c.conn().await.unwrap();
        clients.push(c);
    }
    let started = Instant::now();
    assert_eq!(relay.stop(), Some(0));
    // The harness's grace is 3 s: the HTTP server stops as soon as its sessions drained.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "stopping took {:?}",
        started.elapsed()
    );
    for (kind, c) in kinds.iter().zip(clients.iter_mut()) {
        let err = tokio::time::timeout(PATIENCE, c.next_event())
            .await
            .unwrap()
            .expect_err("closed");
        let code = err
            .downcast_ref::<relaybox::client::connection::ClientError>()
            .and_then(|e| e.relay_code());
        assert_eq!(code, Some(ErrorCode::ShuttingDown), "{kind:?}: {err:#}");
    }
    assert!(relay.logs().contains("Relay stopped."));
}

#[tokio::test]
async fn a_split_session_outlives_the_servers_keep_alive_on_its_upload_connection() {
    let relay = Relay::start();
    let mut alice = user_over(&relay, "alice", &phone(1, 1), TransportKind::HttpSplit).await;
    let mut bob = user_over(&relay, "bob", &phone(1, 2), TransportKind::Tcp).await;
    alice.send_text(&phone(1, 2), "before").await.unwrap();
    assert_eq!(next_message(&mut bob).await.2, "before");
    // Longer than the HTTP server's keep-alive (5 s): the upload connection is closed under
    // the session, which must carry on over a new one.
    tokio::time::sleep(Duration::from_secs(6)).await;
    alice
        .send_text(&phone(1, 2), "after a quiet spell")
        .await
        .unwrap();
    assert_eq!(next_message(&mut bob).await.2, "after a quiet spell");
    bob.send_text(&phone(1, 1), "still here").await.unwrap();
    assert_eq!(next_message(&mut alice).await.2, "still here");
}

/// The value of one series in a Prometheus text exposition.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_open_connections_by_transport() {
    let relay = Relay::start();
    let url = format!("{}/metrics", relay.admin_url());
    let mut ws = user_over(&relay, "ws", &phone(1, 1), TransportKind::Ws).await;
    let mut http = user_over(&relay, "http", &phone(1, 2), TransportKind::Http).await;
    ws.conn().await.unwrap();
    http.conn().await.unwrap();
    wait_for_open(&url, (1.0, 1.0)).await;
    drop(ws);
    drop(http);
    wait_for_open(&url, (0.0, 0.0)).await;
    // A split session counts as http too.
    let mut split = user_over(&relay, "split", &phone(1, 3), TransportKind::HttpSplit).await;
    split.conn().await.unwrap();
    assert!(open_connections(&url).1 >= 1.0);
}

/// Open (ws, http) connections according to /metrics.
fn open_connections(url: &str) -> (f64, f64) {
    let (status, text) = curl(&[url], b"");
    assert_eq!(status, 200);
    let text = String::from_utf8(text).unwrap();
    (
        metric(&text, "relaybox_connections{transport=\"ws\"}"),
        metric(&text, "relaybox_connections{transport=\"http\"}"),
    )
}

/// Waits for the figures (sessions close asynchronously, after their peers went).
async fn wait_for_open(url: &str, want: (f64, f64)) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = open_connections(url);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "open (ws, http): {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
