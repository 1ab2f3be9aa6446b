//! The HTTP transports on the paths users put them on: through a proxy that buffers request
//! bodies (the client falls back to split mode), over HTTPS with a certificate from a private
//! CA (the client and curl trusting that CA), and the `[tls]` configuration errors.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{next_event, Relay, BIN};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use relaybox::client::transport::TransportKind;
use relaybox::client::{Client, Event};
use relaybox::e2e::payload::Payload;

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Forwards one request the way nginx does by default: the whole request body first, then
/// upstream; the response streams back as it comes.
async fn forward(
    upstream: String,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Incoming>, BoxError> {
    let (mut parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    for hop in ["transfer-encoding", "connection", "expect"] {
        parts.headers.remove(hop);
    }
    let up = tokio::net::TcpStream::connect(&upstream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(up)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::from_parts(parts, Full::new(body));
    Ok(sender.send_request(req).await?)
}

/// A request-buffering reverse proxy in front of `upstream`; returns its address.
async fn buffering_proxy(upstream: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| forward(upstream.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn next_text(c: &mut Client) -> String {
    loop {
        if let Event::Message { inner, .. } = next_event(c).await {
            let Payload::Text { body } = inner.payload else {
                panic!("not text")
            };
            return body;
        }
    }
}

/// A registered client reaching the relay through `http` (a URL) over `kind`.
async fn user(relay: &Relay, name: &str, phone: &str, kind: TransportKind, http: &str) -> Client {
    let home = relay.dir.path().join(format!("client-{name}"));
    let mut c = Client::open(&home, Some(&relay.addr)).unwrap();
    c.use_transport(kind, Some(http));
    c.register(phone).await.unwrap();
    let code = relay.code_for(phone);
    c.verify(phone, &code).await.unwrap();
    c
}

#[tokio::test]
async fn through_a_proxy_that_buffers_request_bodies_the_http_transport_falls_back_to_split_mode() {
    let relay = Relay::start();
    let proxy = buffering_proxy(relay.http_addr.clone()).await;
    let via_proxy = format!("http://{proxy}");
    let mut alice = user(&relay, "alice", ALICE, TransportKind::Http, &via_proxy).await;
    assert_eq!(alice.connected_over(), Some(TransportKind::HttpSplit));
    // Remembered: later connections skip the full-duplex probe.
    assert_eq!(alice.state.transport, TransportKind::HttpSplit);
    let mut bob = user(&relay, "bob", BOB, TransportKind::Tcp, &via_proxy).await;
    alice.send_text(BOB, "through the proxy").await.unwrap();
    assert_eq!(next_text(&mut bob).await, "through the proxy");
    bob.send_text(ALICE, "and back").await.unwrap();
    assert_eq!(next_text(&mut alice).await, "and back");
    // A reconnect (IK with the token) takes the same way.
    alice.disconnect();
    alice.send_text(BOB, "again").await.unwrap();
    assert_eq!(alice.connected_over(), Some(TransportKind::HttpSplit));
    assert_eq!(next_text(&mut bob).await, "again");
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, as PEM files in `dir`.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

#[tokio::test]
async fn with_a_certificate_configured_the_http_listener_serves_https_to_clients_and_curl() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let relay = Relay::start_with(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    assert!(relay.logs().contains("tls=true"));
    let port = relay.http_addr.rsplit(':').next().unwrap().to_owned();
    let https = format!("https://localhost:{port}");

    // curl trusting the CA gets the relay's answers; without it, it refuses the certificate.
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&cert)
        .arg(format!("{https}/v1/nothing"))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("\"not_found\""), "{body} {out:?}");
    let out = Command::new("curl")
        .args(["-sS", &format!("{https}/v1/nothing")])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(60),
        "untrusted certificate: {out:?}"
    );

    // The SDK over wss:// and over chunked HTTPS, trusting the CA.
    let mut clients = Vec::new();
    for (name, phone, kind) in [
        ("alice", ALICE, TransportKind::Ws),
        ("bob", BOB, TransportKind::Http),
    ] {
        let home = relay.dir.path().join(format!("client-{name}"));
        let mut c = Client::open(&home, Some(&relay.addr)).unwrap();
        c.state.ca = Some(cert.clone());
        c.use_transport(kind, Some(&https));
        c.register(phone).await.unwrap();
        let code = relay.code_for(phone);
        c.verify(phone, &code).await.unwrap();
        assert_eq!(c.connected_over(), Some(kind));
        clients.push(c);
    }
    let (alice, bob) = clients.split_at_mut(1);
    alice[0].send_text(BOB, "over tls").await.unwrap();
    assert_eq!(next_text(&mut bob[0]).await, "over tls");

    // A client that does not trust the CA gets a TLS error, not a session.
    let home = relay.dir.path().join("client-mallory");
    let mut c = Client::open(&home, Some(&relay.addr)).unwrap();
    c.use_transport(TransportKind::Ws, Some(&https));
    let err = c.register("+14155550103").await.unwrap_err();
    assert!(format!("{err:#}").contains("TLS"), "{err:#}");
}

#[test]
fn a_half_or_unreadable_tls_configuration_is_a_config_error_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _key) = self_signed(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file").unwrap();
    let cases = [
        (format!("[tls]\ncert = \"{}\"\n", cert.display()), "tls.key"),
        (format!("[tls]\nkey = \"{}\"\n", cert.display()), "tls.cert"),
        (
            format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                dir.path().join("missing.pem").display(),
                garbage.display()
            ),
            "tls.cert",
        ),
        (
            format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                cert.display(),
                garbage.display()
            ),
            "tls.key",
        ),
    ];
    for (cfg, key) in cases {
        std::fs::write(dir.path().join("relaybox.toml"), &cfg).unwrap();
        let out = Command::new(BIN)
            .args(["check-config", "--config", "relaybox.toml"])
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let msg = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(64), "{cfg}: {msg}");
        assert!(msg.contains(key), "{cfg}: {key} not named in {msg}");
    }
}

/// Runs `relaybox serve` with `data_dir` and `http` as given (the other listeners on free
/// ports), expecting it to fail at start; answers its standard error.
fn serve_fails(data_dir: &str, http: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[relay]\ndata_dir = \"{data_dir}\"\n[listen]\ntcp = \"127.0.0.1:0\"\nhttp = \"{http}\"\nadmin = \"127.0.0.1:0\"\n"
    );
    std::fs::write(dir.path().join("relaybox.toml"), cfg).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", "relaybox.toml"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(!msg.contains("Relay ready."), "{msg}");
    msg
}

#[test]
fn a_busy_http_port_fails_the_start_with_a_clear_error() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let msg = serve_fails("data", &addr);
    assert!(msg.contains("starting the HTTP listener"), "{msg}");
    assert!(msg.contains(&addr), "{msg}");
}

#[test]
fn a_second_relay_on_a_data_directory_in_use_fails_the_start_naming_it() {
    let relay = Relay::start();
    let msg = serve_fails(&relay.data_dir().display().to_string(), "127.0.0.1:0");
    assert!(msg.contains("in use by another process"), "{msg}");
}

#[test]
fn client_transport_flags_with_bad_values_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("client")
            .arg("--home")
            .arg(&home)
            .args(args)
            .env_remove("RELAYBOX_CLIENT_HTTP")
            .env_remove("RELAYBOX_CLIENT_TRANSPORT")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, msg) = run(&["--transport", "ws", "status"]);
    assert_eq!(code, Some(1), "{msg}");
    assert!(msg.contains("needs the relay's HTTP URL"), "{msg}");
    let (code, msg) = run(&["--transport", "carrier-pigeon", "status"]);
    assert_eq!(code, Some(2), "{msg}");
    assert!(msg.contains("possible values"), "{msg}");
    let (code, msg) = run(&[
        "--transport",
        "http",
        "--http",
        "ftp://relay:21",
        "register",
        ALICE,
    ]);
    assert_eq!(code, Some(1), "{msg}");
    assert!(msg.contains("must start with http:// or https://"), "{msg}");
    let (code, msg) = run(&["--ca", "/nonexistent/ca.pem", "status"]);
    assert_eq!(code, Some(1), "{msg}");
    assert!(
        msg.contains("--ca /nonexistent/ca.pem: no such file"),
        "{msg}"
    );
}
