//! End to end through the real binary on real sockets: registration, 1:1 messages, receipts,
//! chat states, offline queues across restarts, and a `kill -9` right after ServerAck.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{files_containing, next_event, quiet_for, Relay};
use relaybox::client::Event;
use relaybox::e2e::payload::Payload;
use relaybox::wire::messages::{ChatState, ReceiptKind};

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";

fn text_of(e: &Event) -> String {
    match e {
        Event::Message { inner, .. } => match &inner.payload {
            Payload::Text { body } => body.clone(),
            #[allow(unreachable_patterns)]
            other => panic!("not text: {other:?}"),
        },
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_message_is_delivered_and_the_sender_gets_delivered_read_and_played_receipts() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;

    let (msg_id, ack) = alice.send_text(BOB, "hello bob").await.unwrap();
    assert!(ack.timestamp_ms > 0);
    let got = next_event(&mut bob).await;
    assert_eq!(text_of(&got), "hello bob");
    let Event::Message {
        from,
        msg_id: got_id,
        ..
    } = got
    else {
        unreachable!()
    };
    assert_eq!((from.as_str(), got_id), (ALICE, msg_id));

    match next_event(&mut alice).await {
        Event::Receipt {
            from,
            kind: ReceiptKind::Delivered,
            msg_ids,
        } => assert_eq!((from.as_str(), msg_ids), (BOB, vec![msg_id])),
        other => panic!("expected a delivered receipt, got {other:?}"),
    }
    bob.receipt(ALICE, ReceiptKind::Read, &[msg_id])
        .await
        .unwrap();
    bob.receipt(ALICE, ReceiptKind::Played, &[msg_id])
        .await
        .unwrap();
    for want in [ReceiptKind::Read, ReceiptKind::Played] {
        match next_event(&mut alice).await {
            Event::Receipt { kind, msg_ids, .. } => {
                assert_eq!((kind, msg_ids), (want, vec![msg_id]))
            }
            other => panic!("expected {want:?}, got {other:?}"),
        }
    }
    // And back the other way, over the session bob's pre-key message started.
    bob.send_text(ALICE, "hi alice").await.unwrap();
    assert_eq!(text_of(&next_event(&mut alice).await), "hi alice");
}

#[tokio::test]
async fn chat_states_reach_online_devices_only_and_are_never_stored() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    alice.chat_state(BOB, ChatState::Recording).await.unwrap();
    match next_event(&mut bob).await {
        Event::ChatState { from, state, .. } => {
            assert_eq!((from.as_str(), state), (ALICE, ChatState::Recording))
        }
        other => panic!("expected a chat state, got {other:?}"),
    }
    // Bob goes offline; a chat state now is dropped, a message is kept.
    bob.disconnect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice.chat_state(BOB, ChatState::Composing).await.unwrap();
    alice.send_text(BOB, "after typing").await.unwrap();
    let first = next_event(&mut bob).await;
    assert_eq!(
        text_of(&first),
        "after typing",
        "the offline chat state must not be queued"
    );
}

#[tokio::test]
async fn offline_messages_arrive_in_order_after_a_relay_restart() {
    let mut relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    bob.disconnect();
    for i in 0..5 {
        alice.send_text(BOB, &format!("queued {i}")).await.unwrap();
    }
    assert_eq!(relay.stop(), Some(0), "graceful stop exits 0");
    relay.restart();
    for i in 0..5 {
        assert_eq!(text_of(&next_event(&mut bob).await), format!("queued {i}"));
    }
    assert!(quiet_for(&mut bob, Duration::from_millis(500))
        .await
        .is_none());
}

#[tokio::test]
async fn a_message_acked_just_before_kill_9_is_delivered_exactly_once_after_restart() {
    let mut relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    bob.disconnect();
    let (msg_id, _) = alice.send_text(BOB, "survives kill -9").await.unwrap();
    relay.kill9();
    relay.restart();
    match next_event(&mut bob).await {
        Event::Message { msg_id: got, .. } => assert_eq!(got, msg_id),
        other => panic!("expected the message, got {other:?}"),
    }
    // Exactly once: nothing more, and a reconnect does not bring it back.
    assert!(quiet_for(&mut bob, Duration::from_millis(500))
        .await
        .is_none());
    bob.disconnect();
    let again = quiet_for(&mut bob, Duration::from_millis(800)).await;
    assert!(again.is_none(), "redelivered after ack: {again:?}");
}

#[tokio::test]
async fn a_retried_msg_id_is_acknowledged_again_but_delivered_once() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let inner = relaybox::e2e::payload::Inner {
        v: 1,
        sent_at_ms: 1,
        payload: Payload::Text {
            body: "once".into(),
        },
        reply_to: None,
    };
    let id = relaybox::ids::MsgId::random();
    let first = alice.send_inner(BOB, id, &inner).await.unwrap();
    let retry = alice.send_inner(BOB, id, &inner).await.unwrap();
    assert_eq!(
        first.timestamp_ms, retry.timestamp_ms,
        "the retry gets the original ServerAck"
    );
    assert_eq!(text_of(&next_event(&mut bob).await), "once");
    let more = quiet_for(&mut bob, Duration::from_millis(800)).await;
    assert!(more.is_none(), "duplicate delivered: {more:?}");
}

#[tokio::test]
async fn a_reconnect_resumes_with_ik_in_one_round_trip() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    alice.disconnect();
    let token_before = alice.state.token.clone();
    let status = alice.status().await.unwrap();
    assert_eq!(status.account, ALICE);
    assert_ne!(
        alice.state.token, token_before,
        "a token is single-use: a new one replaced it"
    );
    assert!(relay.logs().contains("Session started."));
}

#[tokio::test]
async fn no_plaintext_reaches_the_relays_disk_or_logs() {
    let mut relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    bob.disconnect();
    let canary = format!("CANARY-{}", hex::encode(rand::random::<[u8; 8]>()));
    alice.send_text(BOB, &canary).await.unwrap();
    // While it is queued on disk, and after it was delivered and deleted.
    relay.stop();
    assert!(files_containing(&relay.data_dir(), canary.as_bytes()).is_empty());
    relay.restart();
    assert_eq!(text_of(&next_event(&mut bob).await), canary);
    relay.stop();
    assert!(
        files_containing(&relay.data_dir(), canary.as_bytes()).is_empty(),
        "plaintext in the data dir"
    );
    assert!(!relay.logs().contains(&canary), "plaintext in the logs");
}

#[tokio::test]
async fn a_graceful_stop_tells_connected_clients_why_and_exits_zero() {
    let mut relay = Relay::start();
    let mut bob = relay.user("bob", BOB).await;
    bob.conn().await.unwrap();
    assert_eq!(relay.stop(), Some(0));
    let err = tokio::time::timeout(common::PATIENCE, bob.next_event())
        .await
        .unwrap()
        .expect_err("closed");
    let code = err
        .downcast_ref::<relaybox::client::connection::ClientError>()
        .and_then(|e| e.relay_code());
    assert_eq!(
        code,
        Some(relaybox::wire::messages::ErrorCode::ShuttingDown),
        "{err:#}"
    );
    assert!(relay.logs().contains("Relay stopped."));
}
