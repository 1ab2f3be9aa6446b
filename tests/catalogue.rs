//! The rest of the bad-input catalogue (issue 3): truncated frames, forged and stolen
//! resumption tokens, a spoofed sender, and account enumeration by answer and by timing. Each
//! bad input gets its specific error, nothing acknowledged is lost, and the relay goes on
//! serving others. The first half of the catalogue is in `bad_input.rs`; README's testing
//! section maps every entry to its test.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{next_event, Relay};
use relaybox::client::connection::{Connection, Identity};
use relaybox::client::Event;
use relaybox::wire::frame::{self, FrameDecoder, MAX_FRAME_BYTES};
use relaybox::wire::handshake::{ClientIk, StaticKeypair};
use relaybox::wire::messages::{
    client_frame, login, login_result, server_frame, DeviceLogin, Envelope, ErrorCode, Login,
    RequestCode, Send,
};

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";
const MALLORY: &str = "+14155550103";

/// Reads one frame from a blocking socket; `None` if the relay closed first.
fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = d.next_frame().unwrap() {
            return Some(f);
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => d.extend(&buf[..n]),
        }
    }
}

/// The code and reason of a plaintext refusal frame (`0x01 code:u16 reason`).
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

/// The relay's answer to an IK login with `token` from `key`, as a wire error code.
fn ik_login(
    relay: &Relay,
    key: &StaticKeypair,
    pinned: &[u8; 32],
    account: &str,
    token: Vec<u8>,
) -> ErrorCode {
    let login = Login {
        kind: Some(login::Kind::Device(DeviceLogin {
            account: account.into(),
            device: 0,
            token,
        })),
    };
    let (state, first) = ClientIk::start(key, pinned, &login).unwrap();
    let mut s = TcpStream::connect(&relay.addr).unwrap();
    s.write_all(&frame::encode(&first).unwrap()).unwrap();
    let reply = read_frame(&mut s).expect("an answer");
    let (_, result) = state.finish(&reply).unwrap();
    match result.result {
        Some(login_result::Result::Error(e)) => e.code(),
        Some(login_result::Result::Ok(_)) => ErrorCode::Unspecified,
        None => panic!("empty login result"),
    }
}

#[tokio::test]
async fn a_truncated_frame_is_closed_at_the_handshake_deadline_and_others_are_served() {
    let relay = Relay::start_with("[limits]\nhandshake_timeout = \"1s\"\n");
    let mut alice = relay.user("alice", ALICE).await;
    let _bob = relay.user("bob", BOB).await;
    // A header announcing 300 bytes, then 10 of them, then silence.
    let mut s = TcpStream::connect(&relay.addr).unwrap();
    s.write_all(&300u16.to_be_bytes()).unwrap();
    s.write_all(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    // Half a header.
    let mut half = TcpStream::connect(&relay.addr).unwrap();
    half.write_all(&[0]).unwrap();
    let started = Instant::now();
    // Meanwhile the relay serves others.
    let (id, _ack) = alice
        .send_text(BOB, "hello while others stall")
        .await
        .unwrap();
    assert_eq!(id.0.len(), 16);
    for sock in [&mut s, &mut half] {
        let f = read_frame(sock).expect("a refusal before the close");
        let (code, reason) = refusal_code(&f);
        assert_eq!(code, ErrorCode::HandshakeFailed);
        assert!(reason.contains("timed out"), "{reason}");
        assert!(read_frame(sock).is_none(), "closed after the refusal");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(relay.logs().contains("Handshake timed out."));
    still_serves(&relay, MALLORY).await;
}

#[tokio::test]
async fn a_forged_or_stolen_resumption_token_is_refused_with_token_invalid() {
    let relay = Relay::start();
    let alice = relay.user("alice", ALICE).await;
    let bob = relay.user("bob", BOB).await;
    let pinned = alice.state.relay_key.unwrap();
    let good = alice.state.token.clone().unwrap();
    // Random bytes of a plausible length, an empty token, and the genuine token with one bit
    // flipped (the seal's tag must catch it).
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x80;
    for (what, token) in [
        ("random", vec![0x5A; good.len()]),
        ("empty", Vec::new()),
        ("flipped", flipped),
        ("oversized", vec![7; 1500]),
    ] {
        let code = ik_login(&relay, &alice.state.noise, &pinned, ALICE, token);
        assert_eq!(code, ErrorCode::TokenInvalid, "{what}");
    }
    // Bob's genuine token presented on Alice's authenticated key: refused as another device's.
    let code = ik_login(
        &relay,
        &alice.state.noise,
        &pinned,
        ALICE,
        bob.state.token.clone().unwrap(),
    );
    assert_eq!(
        code,
        ErrorCode::TokenInvalid,
        "bob's token on alice's login"
    );
    // Alice's genuine token on Mallory's key claiming to be Alice: the key decides first.
    let mallory = StaticKeypair::generate();
    let code = ik_login(&relay, &mallory, &pinned, ALICE, good.clone());
    assert_eq!(
        code,
        ErrorCode::UnknownDevice,
        "a stolen token without the key"
    );
    // None of this spent Alice's token: her real resumption still works, once.
    assert_eq!(
        ik_login(&relay, &alice.state.noise, &pinned, ALICE, good.clone()),
        ErrorCode::Unspecified
    );
    assert_eq!(
        ik_login(&relay, &alice.state.noise, &pinned, ALICE, good),
        ErrorCode::TokenInvalid,
        "reused"
    );
    still_serves(&relay, MALLORY).await;
}

#[tokio::test]
async fn a_payload_claiming_another_sender_is_delivered_under_the_real_sender() {
    let relay = Relay::start();
    let _alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let mut mallory = relay.user("mallory", MALLORY).await;
    // A 1:1 send whose envelope names Alice as its account (a group-only field).
    let spoof = Send {
        msg_id: vec![0x42; 16],
        to: BOB.into(),
        envelopes: vec![Envelope {
            device: 0,
            olm_type: 1,
            ciphertext: b"I am Alice, honest".to_vec().into(),
            account: ALICE.into(),
        }],
        kind: 1,
        ..Default::default()
    };
    let answer = mallory
        .conn()
        .await
        .unwrap()
        .request(client_frame::Body::Send(spoof))
        .await;
    match answer {
        // Refused outright ...
        Err(e) => assert_eq!(e.relay_code(), Some(ErrorCode::InvalidArgument), "{e}"),
        // ... or accepted, in which case Bob must see Mallory as the sender.
        Ok(server_frame::Body::ServerAck(_)) => match next_event(&mut bob).await {
            Event::Undecryptable { from, .. } | Event::Message { from, .. } => {
                assert_eq!(from, MALLORY, "the relay believed the payload's sender")
            }
            other => panic!("unexpected event {other:?}"),
        },
        Ok(other) => panic!("unexpected answer {other:?}"),
    }
    // A real encrypted message from Mallory whose text claims to be from Alice arrives as
    // Mallory's.
    mallory
        .send_text(BOB, "from: +14155550101 (really)")
        .await
        .unwrap();
    loop {
        match next_event(&mut bob).await {
            Event::Message { from, inner, .. } => {
                assert_eq!(from, MALLORY);
                assert!(format!("{inner:?}").contains("really"));
                break;
            }
            Event::Undecryptable { from, .. } => assert_eq!(from, MALLORY),
            _ => {}
        }
    }
}

#[tokio::test]
async fn known_and_unknown_accounts_get_the_same_answers_in_the_same_time() {
    let mut relay = Relay::start();
    // Enough codes per number for the samples (the harness already lifts the per-address cap).
    relay.envs = vec![(
        "RELAYBOX_REGISTRATION_CODES_PER_NUMBER_PER_HOUR".into(),
        "100".into(),
    )];
    relay.stop();
    relay.restart();
    let alice = relay.user("alice", ALICE).await;
    // By answer: a device login for a registered account with a wrong key and for an
    // account that does not exist get the same code and the same reason.
    let stranger = StaticKeypair::generate();
    let mut answers = Vec::new();
    for account in [ALICE, "+14155550199"] {
        let who = Identity::Device {
            account: account.into(),
            device: 0,
            token: None,
        };
        let e = Connection::connect(&relay.addr, &stranger, alice.state.relay_key, &who)
            .await
            .err()
            .expect("refused");
        answers.push((e.relay_code(), e.to_string().replace(account, "<account>")));
    }
    assert_eq!(answers[0], answers[1], "login answers tell accounts apart");
    assert_eq!(answers[0].0, Some(ErrorCode::UnknownDevice));
    // By answer and by timing: requesting a code for a registered and an unregistered number.
    let key = StaticKeypair::generate();
    let (mut c, _) = Connection::connect(&relay.addr, &key, None, &Identity::Register)
        .await
        .unwrap();
    const SAMPLES: usize = 15;
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..SAMPLES * 2 {
        // ABBA order, so drift on a busy machine falls on both sides alike.
        let (which, phone) = if i % 4 == 0 || i % 4 == 3 {
            (0, ALICE.to_owned())
        } else {
            (1, format!("+1415555{:04}", 2000 + i))
        };
        let t = Instant::now();
        let answer = c
            .request(client_frame::Body::RequestCode(RequestCode {
                phone: phone.clone(),
            }))
            .await
            .unwrap();
        times[which].push(t.elapsed());
        match answer {
            server_frame::Body::CodeSent(sent) => {
                assert_eq!(sent.phone, phone);
                assert!(sent.expires_in_ms > 0);
            }
            other => panic!("{phone}: unexpected answer {other:?}"),
        }
        let _ = relay.code_for(&phone);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (known, unknown) = (median(&mut times[0]), median(&mut times[1]));
    let gap = known.abs_diff(unknown);
    eprintln!("request-code medians: registered {known:?}, unregistered {unknown:?}");
    // The bound: well under what a remote attacker could see through network jitter, and
    // loose enough for a loaded shared machine.
    assert!(
        gap < Duration::from_millis(25),
        "registered {known:?} vs unregistered {unknown:?}"
    );
    still_serves(&relay, BOB).await;
}
