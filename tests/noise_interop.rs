//! Interoperability with an independent Noise implementation: the Python `noiseprotocol`
//! package (PyPI) logs a registered device in over XX, then resumes over IK with the token
//! it got, against the real relay binary over TCP, and sends one request in each session.
//! `tests/noise_interop.py` holds the Python side.
//!
//! Needs `python3` with `noiseprotocol` (`tests/run.sh` installs it into a venv under
//! `target/`; set `NOISE_INTEROP_PYTHON` to that interpreter). Without it the test fails and says
//! how to install it, rather than passing unseen.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::Relay;
use prost::Message;
use relaybox::wire::messages::{
    client_frame, login, login_result, server_frame, ClientFrame, DeviceLogin, GetStatus, Login,
    LoginResult, ServerFrame,
};

const ALICE: &str = "+14155550101";

fn python() -> String {
    std::env::var("NOISE_INTEROP_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs the Python side; returns its LoginResult and its request's answer.
fn drive(args: &[String]) -> (LoginResult, ServerFrame) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/noise_interop.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'noise'"),
        "the Python package noiseprotocol is missing: pip install noiseprotocol (or run tests/run.sh)"
    );
    assert!(out.status.success(), "python side failed: {stderr}{stdout}");
    let field = |name: &str| {
        let line = stdout.lines().find_map(|l| l.strip_prefix(name)).unwrap();
        hex::decode(line.trim()).unwrap()
    };
    (
        LoginResult::decode(field("login ").as_slice()).unwrap(),
        ServerFrame::decode(field("answer ").as_slice()).unwrap(),
    )
}

fn status_request() -> String {
    hex::encode(
        ClientFrame {
            req_id: 7,
            body: Some(client_frame::Body::GetStatus(GetStatus {})),
        }
        .encode_to_vec(),
    )
}

fn device_login(token: Vec<u8>) -> String {
    hex::encode(
        Login {
            kind: Some(login::Kind::Device(DeviceLogin {
                account: ALICE.into(),
                device: 0,
                token,
            })),
        }
        .encode_to_vec(),
    )
}

fn answered_status(answer: &ServerFrame) {
    assert_eq!(answer.req_id, 7);
    match &answer.body {
        Some(server_frame::Body::Status(s)) => assert_eq!(s.account, ALICE),
        other => panic!("expected a status, got {other:?}"),
    }
}

#[tokio::test]
async fn python_noiseprotocol_logs_in_over_xx_and_resumes_over_ik_against_the_relay() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    alice.disconnect();
    let private = hex::encode(alice.state.noise.private);
    let relay_key = alice.state.relay_key.unwrap();

    // First contact: XX, a device login, then one request.
    let (result, answer) = drive(&[
        "xx".into(),
        relay.addr.clone(),
        private.clone(),
        device_login(Vec::new()),
        status_request(),
    ]);
    let token = match result.result {
        Some(login_result::Result::Ok(ok)) => {
            assert_eq!(ok.account, ALICE);
            ok.token
        }
        other => panic!("XX login refused: {other:?}"),
    };
    answered_status(&answer);

    // Resumption: IK against the pinned relay key with the token the XX login returned.
    let (result, answer) = drive(&[
        "ik".into(),
        relay.addr.clone(),
        private,
        device_login(token),
        status_request(),
        hex::encode(relay_key),
    ]);
    match result.result {
        Some(login_result::Result::Ok(ok)) => assert_eq!(ok.account, ALICE),
        other => panic!("IK login refused: {other:?}"),
    }
    answered_status(&answer);
}
