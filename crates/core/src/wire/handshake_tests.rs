//! In-memory client/relay pairs: every handshake path without a socket.

use std::collections::HashMap;

use super::*;
use crate::wire::messages::{login, login_result, DeviceLogin, Error, LoginOk, Register};
use crate::wire::token::{TokenClaims, TokenKey};

/// A relay reduced to its handshake decisions: a token key and each device's valid token id.
struct Relay {
    identity: RelayIdentity,
    tokens: TokenKey,
    valid: HashMap<String, u64>,
    next_id: u64,
}

impl Relay {
    fn new() -> Self {
        Self {
            identity: StaticKeypair::generate(),
            tokens: TokenKey([7; 32]),
            valid: HashMap::new(),
            next_id: 1,
        }
    }

    fn issue(&mut self, account: &str, now: u64) -> Vec<u8> {
        self.next_id += 1;
        self.valid.insert(account.to_owned(), self.next_id);
        let claims = TokenClaims {
            account: account.into(),
            device: 0,
            id: self.next_id,
            expires_at_ms: now + 1_000,
        };
        self.tokens.seal(&claims, [self.next_id as u8; 12])
    }

    /// Handles a first frame; returns the reply and, for XX, the state to finish with.
    fn first(&mut self, frame: &[u8], now: u64) -> (Vec<u8>, Option<RelayXx>) {
        match accept(&self.identity, frame) {
            Err(e) => (refusal(e.code(), &e.to_string()), None),
            Ok(Accepted::Xx { state, reply }) => (reply, Some(state)),
            Ok(Accepted::Ik(ik)) => {
                let Some(login::Kind::Device(dl)) = ik.login.kind.clone() else {
                    panic!("no device login")
                };
                let ok = self.tokens.open(&dl.token, now).ok().filter(|c| {
                    c.account == dl.account && self.valid.get(&c.account) == Some(&c.id)
                });
                let result = match ok {
                    Some(_) => LoginResult {
                        result: Some(login_result::Result::Ok(LoginOk {
                            token: self.issue(&dl.account, now),
                            server_time_ms: now,
                            ..Default::default()
                        })),
                    },
                    None => LoginResult {
                        result: Some(login_result::Result::Error(Error::new(
                            ErrorCode::TokenInvalid,
                            "token",
                        ))),
                    },
                };
                (ik.respond(&result).unwrap().1, None)
            }
        }
    }
}

fn device_login(token: Vec<u8>) -> Login {
    Login {
        kind: Some(login::Kind::Device(DeviceLogin {
            account: "+14155550100".into(),
            device: 0,
            token,
        })),
    }
}

/// Runs XX; returns the relay key the client pinned and the token it received.
fn xx(relay: &mut Relay, device: &StaticKeypair, now: u64) -> ([u8; 32], Vec<u8>) {
    let (client, m1) = ClientXx::start(device).unwrap();
    let (m2, state) = relay.first(&m1, now);
    let (mut ct, m3, pinned) = client.finish(&m2, &device_login(vec![])).unwrap();
    let (mut rt, login, client_static) = state.unwrap().finish(&m3).unwrap();
    assert_eq!(client_static, device.public);
    assert!(matches!(login.unwrap().kind, Some(login::Kind::Device(_))));
    let token = relay.issue("+14155550100", now);
    let result = LoginResult {
        result: Some(login_result::Result::Ok(LoginOk {
            token,
            server_time_ms: now,
            ..Default::default()
        })),
    };
    let got: LoginResult = ct
        .decrypt(&rt.encrypt(&result).unwrap(), "LoginResult")
        .unwrap();
    let Some(login_result::Result::Ok(ok)) = got.result else {
        panic!("login failed")
    };
    (pinned, ok.token)
}

fn ik(
    relay: &mut Relay,
    device: &StaticKeypair,
    pinned: &[u8; 32],
    token: Vec<u8>,
    now: u64,
) -> Result<LoginResult, ProtocolError> {
    let (client, m1) = ClientIk::start(device, pinned, &device_login(token)).unwrap();
    let (m2, _) = relay.first(&m1, now);
    client.finish(&m2).map(|(_, r)| r)
}

#[test]
fn xx_first_contact_pins_the_relay_key_and_yields_a_token() {
    let mut relay = Relay::new();
    let device = StaticKeypair::generate();
    let (pinned, token) = xx(&mut relay, &device, 0);
    assert_eq!(pinned, relay.identity.public);
    assert!(!token.is_empty());
}

#[test]
fn ik_resumption_with_the_token_succeeds_in_one_round_trip_and_rotates_the_token() {
    let mut relay = Relay::new();
    let device = StaticKeypair::generate();
    let (pinned, token) = xx(&mut relay, &device, 0);
    let r = ik(&mut relay, &device, &pinned, token.clone(), 1).unwrap();
    let Some(login_result::Result::Ok(ok)) = r.result else {
        panic!("{r:?}")
    };
    assert_ne!(ok.token, token);
}

#[test]
fn a_replayed_ik_first_message_is_refused() {
    let mut relay = Relay::new();
    let device = StaticKeypair::generate();
    let (pinned, token) = xx(&mut relay, &device, 0);
    let (_, m1) = ClientIk::start(&device, &pinned, &device_login(token)).unwrap();
    let (first, _) = relay.first(&m1, 1);
    assert_eq!(first[0], 0x00);
    // The attacker replays the captured message 1: the token is spent.
    let (m2, _) = relay.first(&m1, 2);
    let (client, _) = ClientIk::start(&device, &pinned, &device_login(vec![])).unwrap();
    // The replayer cannot read the reply (it lacks the ephemeral key), and the relay refused.
    assert!(client.finish(&m2).is_err());
    let fresh = ik(&mut relay, &device, &pinned, vec![], 3).unwrap();
    assert!(matches!(fresh.result, Some(login_result::Result::Error(_))));
}

#[test]
fn a_stale_token_is_refused_and_xx_still_works() {
    let mut relay = Relay::new();
    let device = StaticKeypair::generate();
    let (pinned, token) = xx(&mut relay, &device, 0);
    let r = ik(&mut relay, &device, &pinned, token, 5_000).unwrap();
    let Some(login_result::Result::Error(e)) = r.result else {
        panic!("expired token accepted")
    };
    assert_eq!(e.code(), ErrorCode::TokenInvalid);
    // The client falls back to XX.
    let (pinned2, _) = xx(&mut relay, &device, 5_000);
    assert_eq!(pinned2, pinned);
}

#[test]
fn ik_against_a_wrong_relay_key_is_refused_in_plaintext() {
    let mut relay = Relay::new();
    let device = StaticKeypair::generate();
    let (_, token) = xx(&mut relay, &device, 0);
    let wrong = StaticKeypair::generate().public;
    match ik(&mut relay, &device, &wrong, token, 1) {
        Err(ProtocolError::Refused { code, .. }) => assert_eq!(code, ErrorCode::HandshakeFailed),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn garbage_first_frames_are_refused_not_panicked_on() {
    let relay = Relay::new();
    for garbage in [
        &b""[..],
        b"\x01",
        b"\x02\x01abc",
        b"\x01\x09abc",
        b"\x01\x01",
        b"\x01\x02short",
        b"GET / HTTP/1.1\r\n",
    ] {
        assert!(accept(&relay.identity, garbage).is_err(), "{garbage:?}");
    }
}

#[test]
fn an_anonymous_register_login_travels_in_message_three() {
    let mut relay = Relay::new();
    let device = StaticKeypair::generate();
    let (client, m1) = ClientXx::start(&device).unwrap();
    let (m2, state) = relay.first(&m1, 0);
    let login = Login {
        kind: Some(login::Kind::Register(Register {})),
    };
    let (_, m3, _) = client.finish(&m2, &login).unwrap();
    let (_, got, _) = state.unwrap().finish(&m3).unwrap();
    let got = got.unwrap();
    assert_eq!(got, login);
}

#[test]
fn transport_messages_are_bounded() {
    let mut relay = Relay::new();
    let device = StaticKeypair::generate();
    let (client, m1) = ClientXx::start(&device).unwrap();
    let (m2, _) = relay.first(&m1, 0);
    let (mut t, _, _) = client.finish(&m2, &device_login(vec![])).unwrap();
    let big = crate::wire::messages::Ping { nonce: 1 };
    assert!(t.encrypt(&big).is_ok());
    let huge =
        crate::wire::messages::Error::new(ErrorCode::Internal, "x".repeat(MAX_PLAINTEXT_BYTES));
    assert!(matches!(
        t.encrypt(&huge),
        Err(ProtocolError::FrameTooLarge { .. })
    ));
}

#[test]
fn framed_encryption_appends_whole_frames_that_decrypt_in_order_and_refuses_an_oversized_one() {
    let mut relay = Relay::new();
    let device = StaticKeypair::generate();
    let (client, m1) = ClientXx::start(&device).unwrap();
    let (m2, state) = relay.first(&m1, 0);
    let (mut ct, m3, _) = client.finish(&m2, &device_login(vec![])).unwrap();
    let (mut rt, _, _) = state.unwrap().finish(&m3).unwrap();
    let mut out = Vec::new();
    for nonce in 1..=3 {
        rt.encrypt_framed(&crate::wire::messages::Ping { nonce }, &mut out)
            .unwrap();
    }
    let huge =
        crate::wire::messages::Error::new(ErrorCode::Internal, "x".repeat(MAX_PLAINTEXT_BYTES));
    let before = out.len();
    assert!(matches!(
        rt.encrypt_framed(&huge, &mut out),
        Err(ProtocolError::FrameTooLarge { .. })
    ));
    assert_eq!(out.len(), before, "a refused frame leaves nothing behind");
    let nonces: Vec<u64> = crate::wire::frame::payloads(&out)
        .map(|p| {
            ct.decrypt::<crate::wire::messages::Ping>(p, "Ping")
                .unwrap()
                .nonce
        })
        .collect();
    assert_eq!(nonces, vec![1, 2, 3]);
}

#[test]
fn another_protocol_version_is_refused_naming_the_one_this_relay_speaks() {
    let relay = StaticKeypair::generate();
    let device = StaticKeypair::generate();
    let (_, mut first) = ClientXx::start(&device).unwrap();
    first[0] = VERSION + 1;
    let Err(e) = accept(&relay, &first) else {
        panic!("a first frame of version {} was accepted", VERSION + 1)
    };
    assert_eq!(e.code(), ErrorCode::HandshakeFailed);
    assert!(
        e.to_string()
            .contains(&format!("this relay speaks version {VERSION}")),
        "{e}"
    );
}

#[test]
fn a_portable_client_as_in_the_browser_logs_in_to_a_ring_relay_with_xx_then_ik() {
    let mut relay = Relay::new();
    let device = StaticKeypair::generate();
    // XX with RustCrypto only on the client, ring + RustCrypto on the relay.
    let (client, m1) = ClientXx::start_using(&device, Crypto::Portable).unwrap();
    let (m2, state) = relay.first(&m1, 0);
    let (mut ct, m3, pinned) = client.finish(&m2, &device_login(vec![])).unwrap();
    let (mut rt, _, client_static) = state.unwrap().finish(&m3).unwrap();
    assert_eq!(
        (pinned, client_static),
        (relay.identity.public, device.public)
    );
    let token = relay.issue("+14155550100", 0);
    let ok = LoginResult {
        result: Some(login_result::Result::Ok(LoginOk {
            token,
            ..Default::default()
        })),
    };
    let got: LoginResult = ct
        .decrypt(&rt.encrypt(&ok).unwrap(), "LoginResult")
        .unwrap();
    assert_eq!(got, ok);
    // Transport messages in both directions after the handshake.
    let ping = crate::wire::messages::Ping { nonce: 42 };
    let back: crate::wire::messages::Ping =
        rt.decrypt(&ct.encrypt(&ping).unwrap(), "Ping").unwrap();
    assert_eq!(back, ping);
    // IK resumption with the token, still portable on the client.
    let Some(login_result::Result::Ok(LoginOk { token, .. })) = got.result else {
        panic!("no token")
    };
    let (client, m1) =
        ClientIk::start_using(&device, &pinned, &device_login(token), Crypto::Portable).unwrap();
    let (m2, _) = relay.first(&m1, 1);
    let (_, r) = client.finish(&m2).unwrap();
    assert!(
        matches!(r.result, Some(login_result::Result::Ok(_))),
        "{r:?}"
    );
}
