//! The per-address registration limit (`registration.registrations_per_address_per_hour`)
//! through the real binary: raw clients register from one loopback address until the limit,
//! the next correct code from that address is answered RATE_LIMITED and registers nothing,
//! the code stays valid, and the same code from another address (127.0.0.2) succeeds.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::raw::{expect_error, Frames, HalfOpen, RawClient};
use common::Relay;
use prost::Message;
use relaybox::wire::messages::{
    client_frame, login, server_frame, ErrorCode, Login, Register, RequestCode, VerifyCode,
};

const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const ELSEWHERE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A registration session (XX with a `Register` login) from `source`, with a fresh key.
async fn registration_session(relay: &Relay, source: IpAddr) -> RawClient {
    let key: [u8; 32] = rand::random();
    let login = Login {
        kind: Some(login::Kind::Register(Register {})),
    };
    let frames = Frames::connect_from(&relay.addr, source).await;
    let (client, result) = HalfOpen::start_on(frames, &key)
        .await
        .finish(&login.encode_to_vec())
        .await;
    assert!(result.is_some(), "a LoginResult");
    client
}

async fn request_code(c: &mut RawClient, phone: &str) {
    let sent = c
        .request(client_frame::Body::RequestCode(RequestCode {
            phone: phone.to_owned(),
        }))
        .await;
    assert!(matches!(sent, server_frame::Body::CodeSent(_)), "{sent:?}");
}

async fn verify(c: &mut RawClient, phone: &str, code: &str) -> server_frame::Body {
    c.request(client_frame::Body::VerifyCode(VerifyCode {
        phone: phone.to_owned(),
        code: code.to_owned(),
    }))
    .await
}

/// Whether the admin API knows `phone` as an account.
fn registered(relay: &Relay, phone: &str) -> bool {
    let (code, _, err) = relay.cli(&[
        "admin",
        "--admin",
        &relay.admin_url(),
        "--data-dir",
        relay.data_dir().to_str().unwrap(),
        "accounts",
        "show",
        phone,
    ]);
    assert!(
        code == 0 || err.contains("404") || err.contains("not found"),
        "{code}: {err}"
    );
    code == 0
}

#[tokio::test]
async fn registrations_over_the_per_address_limit_are_refused_and_the_code_survives() {
    let codes = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(&format!(
        "[registration]\nverifier = \"command\"\ncodes_per_address_per_hour = 100\n\
         registrations_per_address_per_hour = 2\n\
         command = [\"sh\", \"-c\", \"printf %s {{code}} > '{}/{{phone}}'\"]\n",
        relay_codes(&codes)
    ));
    let code_for = |phone: &str| read_code(&codes, phone);

    for phone in ["+14155550101", "+14155550102"] {
        let mut c = registration_session(&relay, HOME).await;
        request_code(&mut c, phone).await;
        let v = verify(&mut c, phone, &code_for(phone)).await;
        assert!(matches!(v, server_frame::Body::Verified(_)), "{v:?}");
        assert!(registered(&relay, phone));
    }

    // The third correct code from the same address is refused, with when to retry.
    let third = "+14155550103";
    let mut c = registration_session(&relay, HOME).await;
    request_code(&mut c, third).await;
    let code = code_for(third);
    let answer = verify(&mut c, third, &code).await;
    let server_frame::Body::Error(e) = &answer else {
        panic!("expected RATE_LIMITED, got {answer:?}");
    };
    assert_eq!(e.code(), ErrorCode::RateLimited, "{e:?}");
    assert!(e.retry_after_ms > 0, "{e:?}");
    assert!(e.retry_after_ms <= 3_600_000, "{e:?}");
    assert!(
        !registered(&relay, third),
        "a refused registration registers nothing"
    );
    // Still refused on a retry from that address.
    let (code_again, _) = expect_error(verify(&mut c, third, &code).await);
    assert_eq!(code_again, ErrorCode::RateLimited);

    // The limit is per address: the same, still valid, code from another address registers.
    let mut other = registration_session(&relay, ELSEWHERE).await;
    let v = verify(&mut other, third, &code).await;
    assert!(matches!(v, server_frame::Body::Verified(_)), "{v:?}");
    assert!(registered(&relay, third));

    // The refusals are counted for the operator.
    let url = format!("{}/metrics", relay.admin_url());
    let text = ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let limited = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("relaybox_request_errors_total{code=\"ERROR_CODE_RATE_LIMITED\"} ")
        })
        .unwrap();
    assert!(limited.parse::<f64>().unwrap() >= 2.0, "{text}");
}

fn relay_codes(dir: &tempfile::TempDir) -> String {
    dir.path().display().to_string()
}

/// The code the command verifier wrote for `phone`.
fn read_code(dir: &tempfile::TempDir, phone: &str) -> String {
    let path = dir.path().join(phone);
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        if let Ok(s) = std::fs::read_to_string(&path) {
            if !s.is_empty() {
                let _ = std::fs::remove_file(&path);
                return s.trim().to_owned();
            }
        }
        assert!(std::time::Instant::now() < deadline, "no code for {phone}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
