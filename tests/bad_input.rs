//! The bad-input catalogue of the core: each bad input gets its specific error, nothing
//! acknowledged is lost, and the relay goes on serving others.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{next_event, Relay};
use relaybox::client::connection::{ClientError, Connection, Identity};
use relaybox::client::Event;
use relaybox::wire::frame::{self, FrameDecoder, MAX_FRAME_BYTES};
use relaybox::wire::handshake::{ClientXx, StaticKeypair};
use relaybox::wire::messages::{
    client_frame, login, server_frame, Envelope, ErrorCode, Login, Register, RequestCode, Send,
    ServerFrame, VerifyCode,
};
use relaybox::wire::ProtocolError;

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";

/// Reads one frame from a blocking socket.
fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = d.next_frame().unwrap() {
            return f;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "relay closed without a frame");
        d.extend(&buf[..n]);
    }
}

/// The code of a plaintext refusal frame (`0x01 code:u16 reason`).
fn refusal_code(f: &[u8]) -> (ErrorCode, String) {
    assert_eq!(f[0], 0x01, "expected a refusal, got {f:?}");
    let code = ErrorCode::try_from(i32::from(u16::from_be_bytes([f[1], f[2]]))).unwrap();
    (code, String::from_utf8_lossy(&f[3..]).into_owned())
}

/// A relay that is still healthy: a fresh client can register.
async fn still_serves(relay: &Relay, phone: &str) {
    let mut c = relay.user(&format!("probe-{phone}"), phone).await;
    assert_eq!(c.status().await.unwrap().account, phone);
}

#[tokio::test]
async fn garbage_before_the_handshake_is_refused_with_handshake_failed() {
    let relay = Relay::start();
    let mut s = TcpStream::connect(&relay.addr).unwrap();
    s.write_all(&frame::encode(b"\x01\x01this is not a noise message").unwrap())
        .unwrap();
    let (code, _) = refusal_code(&read_frame(&mut s));
    assert_eq!(code, ErrorCode::HandshakeFailed);
    // Another protocol entirely (an HTTP request) is refused at once, not awaited.
    let mut s = TcpStream::connect(&relay.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (code, reason) = refusal_code(&read_frame(&mut s));
    assert_eq!(code, ErrorCode::FrameTooLarge);
    assert!(reason.contains("not a relaybox handshake"), "{reason}");
    assert!(
        reason.contains("an HTTP request on the relay's Noise port"),
        "{reason}"
    );
    assert!(reason.contains("listen.http"), "{reason}");
    // So is a TLS client pointed at the Noise port, by name.
    let mut s = TcpStream::connect(&relay.addr).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .unwrap();
    let (code, reason) = refusal_code(&read_frame(&mut s));
    assert_eq!(code, ErrorCode::FrameTooLarge);
    assert!(
        reason.contains("a TLS ClientHello on the relay's Noise port"),
        "{reason}"
    );
    still_serves(&relay, ALICE).await;
    assert!(relay.logs().contains("Handshake failed."));
}

#[tokio::test]
async fn an_oversized_frame_after_the_handshake_closes_with_frame_too_large() {
    let relay = Relay::start_with(
        "[limits]\nmax_frame_bytes = 4096\n\n[messaging]\nmax_ciphertext_bytes = 3000\n",
    );
    let mut s = TcpStream::connect(&relay.addr).unwrap();
    let key = StaticKeypair::generate();
    let (state, m1) = ClientXx::start(&key).unwrap();
    s.write_all(&frame::encode(&m1).unwrap()).unwrap();
    let m2 = read_frame(&mut s);
    let login = Login {
        kind: Some(login::Kind::Register(Register {})),
    };
    let (mut t, m3, _) = state.finish(&m2, &login).unwrap();
    s.write_all(&frame::encode(&m3).unwrap()).unwrap();
    let _: relaybox::wire::messages::LoginResult =
        t.decrypt(&read_frame(&mut s), "LoginResult").unwrap();
    // Announce a 5000-byte frame: refused from its header, before the body is read.
    s.write_all(&5000u16.to_be_bytes()).unwrap();
    let closing: ServerFrame = t.decrypt(&read_frame(&mut s), "ServerFrame").unwrap();
    match closing.body {
        Some(server_frame::Body::Closing(e)) => assert_eq!(e.code(), ErrorCode::FrameTooLarge),
        other => panic!("expected a closing frame, got {other:?}"),
    }
    still_serves(&relay, ALICE).await;
}

#[tokio::test]
async fn an_unknown_device_key_is_refused_with_unknown_device() {
    let relay = Relay::start();
    let _alice = relay.user("alice", ALICE).await;
    // Someone else's key claims to be Alice's primary device.
    let intruder = StaticKeypair::generate();
    let who = Identity::Device {
        account: ALICE.into(),
        device: 0,
        token: None,
    };
    let err = Connection::connect(&relay.addr, &intruder, None, &who)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.relay_code(), Some(ErrorCode::UnknownDevice), "{err}");
    still_serves(&relay, BOB).await;
}

#[tokio::test]
async fn a_wrong_code_six_times_voids_the_code_even_for_the_right_one() {
    let relay = Relay::start();
    let key = StaticKeypair::generate();
    let (mut c, _) = Connection::connect(&relay.addr, &key, None, &Identity::Register)
        .await
        .unwrap();
    c.request(client_frame::Body::RequestCode(RequestCode {
        phone: ALICE.into(),
    }))
    .await
    .unwrap();
    let right = relay.code_for(ALICE);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    let mut seen = Vec::new();
    for _ in 0..6 {
        let body = client_frame::Body::VerifyCode(VerifyCode {
            phone: ALICE.into(),
            code: wrong.into(),
        });
        match c.request(body).await {
            Err(ClientError::Relay(e)) => seen.push((e.code(), e.attempts_left)),
            other => panic!("wrong code accepted: {other:?}"),
        }
    }
    assert_eq!(seen[0], (ErrorCode::WrongCode, 4));
    assert_eq!(seen[3], (ErrorCode::WrongCode, 1));
    assert_eq!(seen[4].0, ErrorCode::TooManyAttempts);
    assert_eq!(seen[5].0, ErrorCode::CodeExpired, "the voided code is gone");
    let body = client_frame::Body::VerifyCode(VerifyCode {
        phone: ALICE.into(),
        code: right,
    });
    let e = c
        .request(body)
        .await
        .expect_err("right code refused after too many attempts");
    assert_eq!(e.relay_code(), Some(ErrorCode::CodeExpired));
    still_serves(&relay, BOB).await;
}

#[tokio::test]
async fn a_malformed_phone_number_is_refused_with_invalid_phone_number() {
    let relay = Relay::start();
    let key = StaticKeypair::generate();
    let (mut c, _) = Connection::connect(&relay.addr, &key, None, &Identity::Register)
        .await
        .unwrap();
    for bad in [
        "hello",
        "+1 555",
        "",
        "+12345678901234567890123456789012345",
    ] {
        let e = c
            .request(client_frame::Body::RequestCode(RequestCode {
                phone: bad.into(),
            }))
            .await
            .expect_err("refused");
        assert_eq!(
            e.relay_code(),
            Some(ErrorCode::InvalidPhoneNumber),
            "{bad:?}: {e}"
        );
    }
    still_serves(&relay, ALICE).await;
}

#[tokio::test]
async fn a_send_to_an_unknown_account_is_refused_with_unknown_account() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let err = alice
        .send_text("+14155550199", "anyone?")
        .await
        .expect_err("refused");
    let code = err
        .downcast_ref::<ClientError>()
        .and_then(|e| e.relay_code());
    assert_eq!(code, Some(ErrorCode::UnknownAccount), "{err:#}");
    still_serves(&relay, BOB).await;
}

#[tokio::test]
async fn envelopes_for_the_wrong_devices_get_mismatched_devices_with_the_current_list() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let _bob = relay.user("bob", BOB).await;
    let send = Send {
        msg_id: vec![7; 16],
        to: BOB.into(),
        envelopes: vec![Envelope {
            device: 5,
            olm_type: 0,
            ciphertext: vec![1, 2, 3].into(),
            ..Default::default()
        }],
        kind: 1,
        ..Default::default()
    };
    let e = alice
        .conn()
        .await
        .unwrap()
        .request(client_frame::Body::Send(send))
        .await
        .expect_err("refused");
    match e {
        ClientError::Relay(e) => {
            assert_eq!(e.code(), ErrorCode::MismatchedDevices);
            assert_eq!(e.devices, vec![0]);
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn out_of_bounds_send_fields_are_refused_with_invalid_argument() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let _bob = relay.user("bob", BOB).await;
    let env = |len: usize| {
        vec![Envelope {
            device: 0,
            olm_type: 1,
            ciphertext: vec![1; len].into(),
            ..Default::default()
        }]
    };
    let cases = [
        Send {
            msg_id: vec![1; 15],
            to: BOB.into(),
            envelopes: env(3),
            kind: 1,
            ..Default::default()
        },
        Send {
            msg_id: vec![1; 16],
            to: "bob".into(),
            envelopes: env(3),
            kind: 1,
            ..Default::default()
        },
        Send {
            msg_id: vec![1; 16],
            to: BOB.into(),
            envelopes: vec![],
            kind: 1,
            ..Default::default()
        },
        Send {
            msg_id: vec![1; 16],
            to: BOB.into(),
            envelopes: env(0),
            kind: 1,
            ..Default::default()
        },
        Send {
            msg_id: vec![1; 16],
            to: BOB.into(),
            envelopes: env(60_001),
            kind: 1,
            ..Default::default()
        },
    ];
    for (i, s) in cases.into_iter().enumerate() {
        match alice
            .conn()
            .await
            .unwrap()
            .request(client_frame::Body::Send(s))
            .await
        {
            Err(e) => assert_eq!(
                e.relay_code(),
                Some(ErrorCode::InvalidArgument),
                "case {i}: {e}"
            ),
            Ok(ok) => panic!("case {i} accepted: {ok:?}"),
        }
        // A frame over the protocol limit closes the session; reconnect for the next case.
        alice.disconnect();
    }
}

#[tokio::test]
async fn a_registration_session_cannot_send() {
    let relay = Relay::start();
    let key = StaticKeypair::generate();
    let (mut c, _) = Connection::connect(&relay.addr, &key, None, &Identity::Register)
        .await
        .unwrap();
    let send = Send {
        msg_id: vec![1; 16],
        to: BOB.into(),
        envelopes: vec![],
        kind: 1,
        ..Default::default()
    };
    let e = c
        .request(client_frame::Body::Send(send))
        .await
        .expect_err("refused");
    assert_eq!(e.relay_code(), Some(ErrorCode::NotAuthenticated));
}

#[tokio::test]
async fn a_replayed_ik_handshake_is_refused_and_the_client_falls_back_to_xx() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let stale = alice.state.token.clone();
    alice.disconnect();
    alice.status().await.unwrap(); // uses and rotates the token
    alice.disconnect();
    // Present the spent token: refused with TOKEN_INVALID.
    let who = Identity::Device {
        account: ALICE.into(),
        device: 0,
        token: stale,
    };
    let pinned = alice.state.relay_key;
    let (state, first) = relaybox::wire::handshake::ClientIk::start(
        &alice.state.noise,
        &pinned.unwrap(),
        &Login {
            kind: Some(login::Kind::Device(relaybox::wire::messages::DeviceLogin {
                account: ALICE.into(),
                device: 0,
                token: match &who {
                    Identity::Device { token, .. } => token.clone().unwrap(),
                    _ => unreachable!(),
                },
            })),
        },
    )
    .unwrap();
    let mut s = TcpStream::connect(&relay.addr).unwrap();
    s.write_all(&frame::encode(&first).unwrap()).unwrap();
    let (_, result) = state.finish(&read_frame(&mut s)).unwrap();
    match result.result {
        Some(relaybox::wire::messages::login_result::Result::Error(e)) => {
            assert_eq!(e.code(), ErrorCode::TokenInvalid)
        }
        other => panic!("spent token accepted: {other:?}"),
    }
    // The SDK given the stale token falls back to XX and logs in.
    let (_, est) = Connection::connect(&relay.addr, &alice.state.noise, pinned, &who)
        .await
        .unwrap();
    assert!(!est.resumed);
}

#[tokio::test]
async fn a_client_with_a_wrong_pinned_relay_key_gets_a_refusal_and_falls_back() {
    let relay = Relay::start();
    let alice = relay.user("alice", ALICE).await;
    let wrong = StaticKeypair::generate().public;
    let who = Identity::Device {
        account: ALICE.into(),
        device: 0,
        token: alice.state.token.clone(),
    };
    let (_, est) = Connection::connect(&relay.addr, &alice.state.noise, Some(wrong), &who)
        .await
        .unwrap();
    assert!(!est.resumed, "fell back to XX");
    assert_eq!(
        Some(est.relay_key),
        alice.state.relay_key,
        "and learned the real key"
    );
}

#[tokio::test]
async fn the_relay_keeps_serving_while_a_peer_sends_garbage_after_login() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    // A third client logs in, then sends a frame that is not a Noise message.
    let key = StaticKeypair::generate();
    let mut s = TcpStream::connect(&relay.addr).unwrap();
    let (state, m1) = ClientXx::start(&key).unwrap();
    s.write_all(&frame::encode(&m1).unwrap()).unwrap();
    let m2 = read_frame(&mut s);
    let (mut t, m3, _) = state
        .finish(
            &m2,
            &Login {
                kind: Some(login::Kind::Register(Register {})),
            },
        )
        .unwrap();
    s.write_all(&frame::encode(&m3).unwrap()).unwrap();
    let _: relaybox::wire::messages::LoginResult =
        t.decrypt(&read_frame(&mut s), "LoginResult").unwrap();
    s.write_all(&frame::encode(&[0xAB; 40]).unwrap()).unwrap();
    let closing: Result<ServerFrame, ProtocolError> = t.decrypt(&read_frame(&mut s), "ServerFrame");
    match closing.unwrap().body {
        Some(server_frame::Body::Closing(e)) => {
            assert_eq!(e.code(), ErrorCode::Malformed);
            assert!(
                e.message.contains("not a Noise transport message"),
                "{}",
                e.message
            );
        }
        other => panic!("expected closing, got {other:?}"),
    }
    alice.send_text(BOB, "still here").await.unwrap();
    match next_event(&mut bob).await {
        Event::Message { .. } => {}
        other => panic!("{other:?}"),
    }
}
