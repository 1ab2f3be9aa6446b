//! The written protocol (`docs/protocol.md`) against the contract and the real binary: the
//! document names every request, answer, push and error code of the `.proto`, the README
//! links it, and what it says about versions is what a running relay does (a client learns
//! the relay's version in `LoginOk`; another version byte is refused in plaintext, naming the
//! one the relay speaks).

#![allow(clippy::unwrap_used)]

mod common;

use common::raw::{as_refusal, Frames, HalfOpen, PATTERN_XX};
use common::Relay;
use prost::Message;
use relaybox::wire::messages::{login, login_result, ErrorCode, Login, Register};

const DOC: &str = include_str!("../docs/protocol.md");
const PROTO: &str = include_str!("../crates/core/src/wire/proto/relaybox.proto");
const README: &str = include_str!("../README.md");

/// The message types of the `oneof` in `message NAME { … }` of the `.proto`.
fn oneof_types(message: &str) -> Vec<String> {
    let start = PROTO
        .find(&format!("message {message} {{"))
        .unwrap_or_else(|| panic!("no message {message} in the .proto"));
    let body = &PROTO[start..];
    let body = &body[..body.find("\n}").unwrap()];
    body.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && l.ends_with(';') && l.contains(" = "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ty| ty.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        .map(str::to_owned)
        .collect()
}

/// The `ErrorCode` names without their prefix (`RATE_LIMITED`, …).
fn error_codes() -> Vec<String> {
    PROTO
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("ERROR_CODE_"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "UNSPECIFIED")
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_document_names_every_request_answer_push_and_error_code_of_the_contract() {
    let client = oneof_types("ClientFrame");
    let server = oneof_types("ServerFrame");
    assert!(client.len() >= 26, "{client:?}");
    assert!(server.len() >= 27, "{server:?}");
    let login = oneof_types("Login");
    let missing: Vec<&String> = client
        .iter()
        .chain(&server)
        .chain(&login)
        .filter(|ty| !DOC.contains(&format!("`{ty}")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/protocol.md does not describe {missing:?}"
    );
    let codes = error_codes();
    assert!(codes.len() >= 31, "{codes:?}");
    let missing: Vec<&String> = codes
        .iter()
        .filter(|c| !DOC.contains(&format!("| `{c}` |")))
        .collect();
    assert!(missing.is_empty(), "the error table lacks {missing:?}");
    for fact in [
        "relaybox/1",
        "Noise_XX_25519_ChaChaPoly_BLAKE2s",
        "Noise_IK_25519_ChaChaPoly_BLAKE2s",
        "relay_version",
        "protocol_version",
        "msg_id",
        "single use",
    ] {
        assert!(
            DOC.contains(fact),
            "docs/protocol.md does not mention {fact}"
        );
    }
    assert!(
        README.contains("(docs/protocol.md)"),
        "the README links the protocol document"
    );
}

#[tokio::test]
async fn a_client_learns_the_relays_version_at_login() {
    let relay = Relay::start();
    let key: [u8; 32] = rand::random();
    let login = Login {
        kind: Some(login::Kind::Register(Register {})),
    };
    let (_client, result) = HalfOpen::start(&relay.addr, &key)
        .await
        .finish(&login.encode_to_vec())
        .await;
    let Some(login_result::Result::Ok(ok)) = result.and_then(|r| r.result) else {
        panic!("the registration login was refused")
    };
    assert_eq!(ok.protocol_version, 1);
    assert_eq!(ok.relay_version, env!("CARGO_PKG_VERSION"));
    assert!(ok.token.is_empty(), "anonymous sessions get no token");
}

#[tokio::test]
async fn another_protocol_version_is_refused_in_plaintext_naming_the_relays_version() {
    let relay = Relay::start();
    let mut frames = Frames::connect(&relay.addr).await;
    // Version 2 does not exist: the relay must not try to read the rest.
    frames.write(&[2, PATTERN_XX, 0, 1, 2, 3]).await;
    let reply = frames.read().await.expect("a refusal frame");
    let (code, reason) = as_refusal(&reply).expect("a plaintext refusal");
    assert_eq!(code, ErrorCode::HandshakeFailed);
    assert!(reason.contains("this relay speaks version 1"), "{reason}");
    assert!(
        frames.read().await.is_none(),
        "the relay closes after refusing"
    );
}
