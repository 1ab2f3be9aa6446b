//! The hostile-peer layer's own tests: a client written from the contract alone
//! (`common::raw`) does what the contract allows but the SDK never does, and the relay keeps
//! its promises anyway.

#![allow(clippy::unwrap_used)]

mod common;

use common::raw::RawClient;
use common::Relay;
use relaybox::wire::messages::{client_frame, server_frame, GetStatus};

const ALICE: &str = "+14155550101";

#[tokio::test]
async fn a_client_written_from_the_contract_logs_in_and_is_answered() {
    let relay = Relay::start();
    let alice = relay.user("alice", ALICE).await;
    let mut raw = RawClient::login_as(&relay.addr, &alice).await;
    match raw
        .request(client_frame::Body::GetStatus(GetStatus {}))
        .await
    {
        server_frame::Body::Status(s) => assert_eq!(s.account, ALICE),
        other => panic!("expected a Status, got {other:?}"),
    }
}

/// Sends `n` messages to `to`'s device 0 as fast as the relay admits them (a window of
/// pipelined requests, retrying after `RATE_LIMITED`); returns when every one is acked.
async fn flood(mut c: RawClient, to: &str, tag: u8, n: u32) -> RawClient {
    use relaybox::wire::messages::{Envelope, ErrorCode, MessageKind, Send};
    use std::collections::HashMap;
    let send_body = |i: u32| {
        let mut msg_id = vec![tag; 12];
        msg_id.extend_from_slice(&i.to_be_bytes());
        client_frame::Body::Send(Send {
            msg_id,
            to: to.to_owned(),
            envelopes: vec![Envelope {
                device: 0,
                olm_type: 1,
                ciphertext: vec![0xC1; 64].into(),
                account: String::new(),
            }],
            kind: MessageKind::Chat as i32,
            ..Default::default()
        })
    };
    let mut inflight: HashMap<u64, u32> = HashMap::new();
    let (mut next, mut acked, mut req) = (0u32, 0u32, 1000u64);
    let mut retry: Vec<u32> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while acked < n {
        assert!(
            std::time::Instant::now() < deadline,
            "sender {tag}: only {acked} of {n} acked"
        );
        while inflight.len() < 32 && (next < n || !retry.is_empty()) {
            let i = retry.pop().unwrap_or_else(|| {
                next += 1;
                next - 1
            });
            req += 1;
            inflight.insert(req, i);
            c.send_frame(req, send_body(i)).await;
        }
        let f = c.recv().await.expect("relay closed on a sender");
        let Some(i) = inflight.remove(&f.req_id) else {
            continue; // a push (delivered receipts): not this test's business
        };
        match f.body {
            Some(server_frame::Body::ServerAck(_)) => acked += 1,
            Some(server_frame::Body::Error(e)) if e.code() == ErrorCode::RateLimited => {
                tokio::time::sleep(Duration::from_millis(e.retry_after_ms.max(1))).await;
                retry.push(i);
            }
            other => panic!("sender {tag}: unexpected answer {other:?}"),
        }
    }
    c
}

use std::time::Duration;

#[tokio::test]
async fn a_device_that_acks_every_deliver_on_its_own_frame_receives_everything_while_online() {
    use relaybox::wire::messages::Ack;
    use std::collections::HashSet;
    const EACH: u32 = 1500;
    let relay = Relay::start();
    let alice = relay.user("alice", ALICE).await;
    let carol = relay.user("carol", "+14155550103").await;
    let bob = relay.user("bob", "+14155550102").await;
    let mut rx = RawClient::login_as(&relay.addr, &bob).await;
    let a = RawClient::login_as(&relay.addr, &alice).await;
    let c = RawClient::login_as(&relay.addr, &carol).await;
    drop((alice, carol));
    let senders = tokio::spawn(async move {
        let (a, c) = tokio::join!(
            flood(a, "+14155550102", 0xA1, EACH),
            flood(c, "+14155550102", 0xC3, EACH)
        );
        (a, c)
    });
    // Bob acks each Deliver with a frame of its own, which the contract allows: at twice the
    // senders' rate that is more frames than limits.frames_per_second_per_device admits.
    let mut seen = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < 2 * EACH as usize {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some(f) = rx.recv_within(left.min(Duration::from_secs(15))).await else {
            panic!(
                "the online device stalled: {} of {} messages delivered",
                seen.len(),
                2 * EACH
            );
        };
        if let Some(server_frame::Body::Deliver(d)) = f.body {
            seen.insert(d.msg_id);
            rx.send_frame(0, client_frame::Body::Ack(Ack { seqs: vec![d.seq] }))
                .await;
        }
    }
    let _ = senders.await.unwrap();
    assert_eq!(seen.len(), 2 * EACH as usize);
}

#[tokio::test]
async fn a_request_with_req_id_zero_is_told_that_zero_is_reserved() {
    let relay = Relay::start();
    let alice = relay.user("alice", ALICE).await;
    let mut raw = RawClient::login_as(&relay.addr, &alice).await;
    raw.send_frame(0, client_frame::Body::GetStatus(GetStatus {}))
        .await;
    let f = raw.recv().await.expect("an answer");
    assert_eq!(f.req_id, 0);
    let (code, reason) = common::raw::expect_error(f.body.unwrap());
    assert_eq!(code, relaybox::wire::messages::ErrorCode::InvalidArgument);
    assert!(reason.contains("req_id 0 is reserved"), "{reason}");
    // The session goes on.
    match raw
        .request(client_frame::Body::GetStatus(GetStatus {}))
        .await
    {
        server_frame::Body::Status(s) => assert_eq!(s.account, ALICE),
        other => panic!("{other:?}"),
    }
}

fn raw_send(to: &str, kind: i32, olm_type: u32) -> client_frame::Body {
    use relaybox::wire::messages::{Envelope, Send};
    client_frame::Body::Send(Send {
        msg_id: rand_id(),
        to: to.to_owned(),
        envelopes: vec![Envelope {
            device: 0,
            olm_type,
            ciphertext: vec![0xC1; 32].into(),
            account: String::new(),
        }],
        kind,
        ..Default::default()
    })
}

fn rand_id() -> Vec<u8> {
    (0..16).map(|_| rand::random::<u8>()).collect()
}

#[tokio::test]
async fn a_send_with_a_kind_or_olm_type_the_contract_does_not_name_is_refused() {
    use relaybox::wire::messages::ErrorCode;
    let relay = Relay::start();
    let alice = relay.user("alice", ALICE).await;
    let bob = relay.user("bob", "+14155550102").await;
    let mut a = RawClient::login_as(&relay.addr, &alice).await;
    for (kind, olm, needle) in [
        (0, 1, "send kind 0 is not"),
        (99, 1, "send kind 99 is not"),
        (1, 2, "has olm_type 2"),
        (2, 7, "has olm_type 7"),
    ] {
        let (code, reason) =
            common::raw::expect_error(a.request(raw_send("+14155550102", kind, olm)).await);
        assert_eq!(code, ErrorCode::InvalidArgument, "{reason}");
        assert!(reason.contains(needle), "{reason}");
    }
    // Nothing of it reached Bob; a well-formed send does.
    let mut b = RawClient::login_as(&relay.addr, &bob).await;
    match a.request(raw_send("+14155550102", 1, 1)).await {
        server_frame::Body::ServerAck(_) => {}
        other => panic!("{other:?}"),
    }
    let f = b.recv().await.unwrap();
    match f.body {
        Some(server_frame::Body::Deliver(d)) => assert_eq!(d.kind, 1),
        other => panic!("expected the one good message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_send_to_your_own_account_without_other_devices_says_so() {
    use relaybox::wire::messages::ErrorCode;
    let relay = Relay::start();
    let alice = relay.user("alice", ALICE).await;
    let mut a = RawClient::login_as(&relay.addr, &alice).await;
    let (code, reason) = common::raw::expect_error(a.request(raw_send(ALICE, 1, 1)).await);
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(
        reason.contains("your own account goes to your other devices"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_garbage_xx_message_3_is_refused_in_plaintext_with_handshake_failed() {
    use common::raw::{as_refusal, HalfOpen};
    use relaybox::wire::messages::ErrorCode;
    let relay = Relay::start();
    let alice = relay.user("alice", ALICE).await;
    let mut half = HalfOpen::start(&relay.addr, &alice.state.noise.private).await;
    half.frames.write(&[0x5A; 64]).await;
    let reply = half
        .frames
        .read()
        .await
        .expect("a refusal, not a silent close");
    let (code, reason) = as_refusal(&reply).expect("a plaintext refusal");
    assert_eq!(code, ErrorCode::HandshakeFailed);
    assert!(
        reason.contains("XX message 3 could not be read"),
        "{reason}"
    );
    assert!(half.frames.read().await.is_none(), "then the relay closes");
}

#[tokio::test]
async fn an_xx_message_3_that_carries_no_login_is_answered_malformed() {
    use common::raw::HalfOpen;
    use relaybox::wire::messages::{login_result, ErrorCode};
    let relay = Relay::start();
    let alice = relay.user("alice", ALICE).await;
    let half = HalfOpen::start(&relay.addr, &alice.state.noise.private).await;
    let (_, result) = half.finish(&[0xFF; 9]).await;
    match result.and_then(|r| r.result) {
        Some(login_result::Result::Error(e)) => {
            assert_eq!(e.code(), ErrorCode::Malformed);
            assert!(e.message.contains("must carry a Login"), "{}", e.message);
        }
        other => panic!("expected LoginResult{{MALFORMED}}, got {other:?}"),
    }
    // The relay serves others meanwhile.
    let mut a = RawClient::login_as(&relay.addr, &alice).await;
    assert!(matches!(
        a.request(client_frame::Body::GetStatus(GetStatus {})).await,
        server_frame::Body::Status(_)
    ));
}

#[tokio::test]
async fn a_read_receipt_from_a_device_the_message_was_not_sent_to_is_refused() {
    use relaybox::wire::messages::{ErrorCode, ReceiptKind, SendReceipt};
    const BOB: &str = "+14155550102";
    const MALLORY: &str = "+14155550166";
    let relay = Relay::start();
    let (alice, bob, mallory) = (
        relay.user("alice", ALICE).await,
        relay.user("bob", BOB).await,
        relay.user("mallory", MALLORY).await,
    );
    let mut a = RawClient::login_as(&relay.addr, &alice).await;
    let mut b = RawClient::login_as(&relay.addr, &bob).await;
    let mut m = RawClient::login_as(&relay.addr, &mallory).await;
    let sent = raw_send(BOB, 1, 1);
    let client_frame::Body::Send(ref s) = sent else {
        unreachable!()
    };
    let msg_id = s.msg_id.clone();
    assert!(matches!(
        a.request(sent.clone()).await,
        server_frame::Body::ServerAck(_)
    ));
    let read = |ids: Vec<Vec<u8>>| {
        client_frame::Body::Receipt(SendReceipt {
            to: ALICE.into(),
            kind: ReceiptKind::Read as i32,
            msg_ids: ids,
        })
    };
    // Mallory never got it: refused, and Alice hears nothing.
    let (code, reason) = common::raw::expect_error(m.request(read(vec![msg_id.clone()])).await);
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(reason.contains("was not sent to this account"), "{reason}");
    // A msg_id Alice never sent: refused too.
    let (code, reason) = common::raw::expect_error(m.request(read(vec![vec![9; 16]])).await);
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(
        reason.contains("no record") || reason.contains("not a message"),
        "{reason}"
    );
    // Bob did get it: his receipt reaches Alice, and it is the only one she gets.
    let d = b.recv().await.unwrap();
    assert!(matches!(d.body, Some(server_frame::Body::Deliver(_))));
    assert!(matches!(
        b.request(read(vec![msg_id.clone()])).await,
        server_frame::Body::ServerAck(_)
    ));
    let mut reads = Vec::new();
    while let Some(f) = a.recv_within(Duration::from_secs(2)).await {
        if let Some(server_frame::Body::Receipt(r)) = f.body {
            if r.kind == ReceiptKind::Read as i32 {
                reads.push(r.from);
            }
        }
    }
    assert_eq!(reads, vec![BOB.to_owned()]);
}

#[tokio::test]
async fn a_signing_key_that_is_not_an_ed25519_point_is_refused_on_upload() {
    use relaybox::wire::messages::{ErrorCode, OneTimeKey, UploadKeys};
    let relay = Relay::start();
    let key = relaybox::wire::handshake::StaticKeypair::generate();
    let mut raw = RawClient::register(&relay.addr, &key.private, "+14155550177", |p| {
        relay.code_for(p)
    })
    .await;
    // About half of all 32-byte strings do not decompress to a curve point.
    let not_a_point = (0u8..=255)
        .map(|b| [b; 32])
        .find(|k| !relaybox::e2e::is_ed25519_public_key(k))
        .unwrap();
    let upload = |signing: [u8; 32]| {
        client_frame::Body::UploadKeys(UploadKeys {
            identity_key: vec![9; 32],
            signing_key: signing.to_vec(),
            one_time_keys: vec![OneTimeKey {
                key_id: b"k1".to_vec(),
                public_key: vec![7; 32],
            }],
            fallback_key: None,
        })
    };
    let (code, reason) = common::raw::expect_error(raw.request(upload(not_a_point)).await);
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(
        reason.contains("signing_key is not an Ed25519 public key"),
        "{reason}"
    );
    // Nothing was stored: a valid key is still accepted as the first identity.
    let valid = (0u8..=255)
        .map(|b| [b; 32])
        .find(relaybox::e2e::is_ed25519_public_key)
        .unwrap();
    assert!(matches!(
        raw.request(upload(valid)).await,
        server_frame::Body::KeysUploaded(_)
    ));
}

#[tokio::test]
async fn names_with_bidirectional_overrides_are_refused_wherever_they_are_set() {
    use relaybox::wire::messages::{CreateGroup, ErrorCode, GroupOp, UpdateGroup};
    const BOB: &str = "+14155550102";
    let relay = Relay::start();
    let alice = relay.user("alice", ALICE).await;
    let _bob = relay.user("bob", BOB).await;
    let mut a = RawClient::login_as(&relay.addr, &alice).await;
    let spoof = "Dana\u{202E}gnp.exe";
    // A group subject, at creation and when renamed.
    let (code, reason) = common::raw::expect_error(
        a.request(client_frame::Body::CreateGroup(CreateGroup {
            subject: spoof.into(),
            members: vec![BOB.into()],
        }))
        .await,
    );
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(
        reason.contains("U+202E RIGHT-TO-LEFT OVERRIDE is not allowed in a group subject"),
        "{reason}"
    );
    let server_frame::Body::GroupInfo(g) = a
        .request(client_frame::Body::CreateGroup(CreateGroup {
            subject: "cold room".into(),
            members: vec![BOB.into()],
        }))
        .await
    else {
        panic!("group not created")
    };
    let (code, reason) = common::raw::expect_error(
        a.request(client_frame::Body::UpdateGroup(UpdateGroup {
            group: g.group.clone(),
            op: GroupOp::SetSubject as i32,
            accounts: vec![],
            subject: "cold\u{2067}room".into(),
        }))
        .await,
    );
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(reason.contains("U+2067 RIGHT-TO-LEFT ISOLATE"), "{reason}");
    // An entity's display name, through the operator API with curl.
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", "POST", "-H"])
        .arg(format!("Authorization: Bearer {}", relay.admin_token()))
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(
            serde_json::json!({"handle": "@acme", "name": "Acme \u{202E}nimda", "admin": ALICE})
                .to_string(),
        )
        .arg(format!("{}/v1/entities", relay.admin_url()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap();
    assert_eq!(status.trim(), "400", "{body}");
    assert!(
        body.contains("U+202E RIGHT-TO-LEFT OVERRIDE is not allowed in a display name"),
        "{body}"
    );
}

#[tokio::test]
async fn contact_discovery_in_bulk_is_rate_limited_per_account_and_per_address() {
    use relaybox::wire::messages::{ErrorCode, UploadContacts};
    let relay = Relay::start_with(
        "[limits]\ncontact_lookups_per_hour_per_account = 5000\ncontact_lookups_per_hour_per_ip = 8000\n",
    );
    let alice = relay.user("alice", ALICE).await;
    let bob = relay.user("bob", "+14155550102").await;
    let mut a = RawClient::login_as(&relay.addr, &alice).await;
    let mut b = RawClient::login_as(&relay.addr, &bob).await;
    let book = |from: u32, n: u32| {
        client_frame::Body::UploadContacts(UploadContacts {
            numbers: (from..from + n).map(|i| format!("+1415{:07}", i)).collect(),
        })
    };
    // A whole address book passes, and sending the same one again costs nothing.
    assert!(matches!(
        a.request(book(5_000_000, 4000)).await,
        server_frame::Body::Contacts(_)
    ));
    assert!(matches!(
        a.request(book(5_000_000, 4000)).await,
        server_frame::Body::Contacts(_)
    ));
    // New numbers beyond the hour's budget: RATE_LIMITED with a retry time.
    match a.request(book(6_000_000, 1100)).await {
        server_frame::Body::Error(e) => {
            assert_eq!(e.code(), ErrorCode::RateLimited);
            assert!(e.retry_after_ms > 0);
        }
        other => panic!("expected RATE_LIMITED, got {other:?}"),
    }
    // Another account from the same address shares the address's budget.
    match b.request(book(7_000_000, 4100)).await {
        server_frame::Body::Error(e) => assert_eq!(e.code(), ErrorCode::RateLimited),
        other => panic!("expected RATE_LIMITED for the address, got {other:?}"),
    }
    assert!(matches!(
        b.request(book(7_000_000, 3000)).await,
        server_frame::Body::Contacts(_)
    ));
    assert!(relay
        .logs()
        .contains("Contact discovery over its hourly limit."));
}

#[tokio::test]
async fn one_time_keys_cannot_be_drained_by_repeated_claims() {
    use relaybox::wire::messages::{ClaimKeys, ErrorCode};
    const VICTIM: &str = "+14155550199";
    let relay = Relay::start_with(
        "[keys]\none_time_claims_per_device_per_hour = 3\nclaims_per_account_per_hour = 40\n",
    );
    let victim = relay.user("victim", VICTIM).await;
    let mut v = RawClient::login_as(&relay.addr, &victim).await;
    let held = |b: server_frame::Body| match b {
        server_frame::Body::Status(s) => s.one_time_keys,
        other => panic!("{other:?}"),
    };
    let before = held(v.request(client_frame::Body::GetStatus(GetStatus {})).await);
    let claim = || {
        client_frame::Body::ClaimKeys(ClaimKeys {
            account: VICTIM.into(),
            devices: vec![],
        })
    };
    let mut one_time = 0;
    let mut limited = 0;
    for (n, phone) in [
        "+14155550161",
        "+14155550162",
        "+14155550163",
        "+14155550164",
        "+14155550165",
    ]
    .into_iter()
    .enumerate()
    {
        let c = relay.user(&format!("claimer{n}"), phone).await;
        let mut r = RawClient::login_as(&relay.addr, &c).await;
        for _ in 0..45 {
            match r.request(claim()).await {
                server_frame::Body::ClaimedKeys(k) => {
                    let d = &k.devices[0];
                    assert!(d.one_time_key.is_some(), "a key, one-time or fallback");
                    one_time += usize::from(!d.is_fallback);
                }
                server_frame::Body::Error(e) => {
                    assert_eq!(e.code(), ErrorCode::RateLimited);
                    assert!(e.retry_after_ms > 0);
                    limited += 1;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    // Five claimers, 45 claims each: one one-time key each at most, 3 in all this hour; the
    // rest get the fallback key, and each claimer is cut off after 40 claims.
    assert_eq!(one_time, 3);
    assert_eq!(limited, 5 * 5);
    let after = held(v.request(client_frame::Body::GetStatus(GetStatus {})).await);
    assert_eq!(after, before - 3);
    // The victim is told its keys run low at most once an hour, not on every claim.
    let mut lows = 0;
    while let Some(f) = v.recv_within(Duration::from_millis(500)).await {
        lows += usize::from(matches!(f.body, Some(server_frame::Body::KeysLow(_))));
    }
    assert!(lows <= 1, "{lows} KeysLow pushes");
}
