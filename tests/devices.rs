//! Linked devices through the real binary: pairing, history transfer, delivery to every
//! device of an account, the device-list change notice, and unlinking.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{next_event, quiet_for, Relay};
use relaybox::client::connection::{ClientError, Connection, Identity};
use relaybox::client::{Client, Event};
use relaybox::e2e::payload::Payload;
use relaybox::wire::messages::ErrorCode;

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";

async fn next_text(c: &mut Client) -> (String, String) {
    loop {
        match next_event(c).await {
            Event::Message { from, inner, .. } => {
                let Payload::Text { body } = inner.payload else {
                    panic!("not text")
                };
                return (from, body);
            }
            Event::Undecryptable { error, .. } => panic!("undecryptable: {error}"),
            _ => {}
        }
    }
}

/// Links a new companion of `primary` in `home`; returns it.
async fn companion(relay: &Relay, primary: &mut Client, home: &str) -> (Client, usize) {
    let mut c = Client::open(&relay.dir.path().join(home), Some(&relay.addr)).unwrap();
    let code = c.pairing_code().unwrap();
    assert!(code.starts_with("rbx1:"));
    let (linked, sent) = tokio::join!(c.await_link(Duration::from_secs(20)), primary.link(&code));
    let (account, device) = linked.unwrap();
    let (device2, sent) = sent.unwrap();
    assert_eq!(
        (account.as_str(), device),
        (primary.state.account().unwrap(), device2)
    );
    (c, sent)
}

#[tokio::test]
async fn a_linked_companion_gets_history_and_every_later_message_and_contacts_are_told() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    bob.upload_contacts(&[ALICE.into()]).await.unwrap();
    alice.send_text(BOB, "before the link 1").await.unwrap();
    bob.send_text(ALICE, "before the link 2").await.unwrap();
    assert_eq!(next_text(&mut alice).await.1, "before the link 2");

    let (mut laptop, sent) = companion(&relay, &mut alice, "alice-laptop").await;
    assert_eq!(laptop.state.device, 1);
    assert_eq!(sent, 2, "both earlier messages are in the history sent");
    loop {
        match next_event(&mut laptop).await {
            Event::History { from, entries } => {
                assert_eq!((from.as_str(), entries), (ALICE, 2));
                break;
            }
            Event::DevicesChanged { .. } => {}
            other => panic!("expected history, got {other:?}"),
        }
    }
    let bodies: Vec<_> = laptop
        .state
        .history
        .iter()
        .map(|h| h.body.as_str())
        .collect();
    assert_eq!(bodies, vec!["before the link 1", "before the link 2"]);

    // Bob, who has Alice in his contacts, is told her device list changed.
    loop {
        match next_event(&mut bob).await {
            Event::DevicesChanged { account, devices } => {
                assert_eq!((account.as_str(), devices), (ALICE, vec![0, 1]));
                break;
            }
            Event::Receipt { .. } | Event::Presence { .. } | Event::Message { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // His next message reaches both of Alice's devices.
    bob.send_text(ALICE, "to both").await.unwrap();
    assert_eq!(next_text(&mut laptop).await, (BOB.into(), "to both".into()));
    assert_eq!(next_text(&mut alice).await, (BOB.into(), "to both".into()));
    // And the companion answers as Alice.
    laptop.send_text(BOB, "from the laptop").await.unwrap();
    assert_eq!(
        next_text(&mut bob).await,
        (ALICE.into(), "from the laptop".into())
    );
}

#[tokio::test]
async fn a_sender_who_was_not_told_still_reaches_a_new_device_through_mismatched_devices() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    bob.send_text(ALICE, "hi").await.unwrap();
    let (mut laptop, _) = companion(&relay, &mut alice, "alice-laptop").await;
    // Bob has no contacts and shares no group with Alice: his cached list says [0].
    bob.send_text(ALICE, "found you").await.unwrap();
    assert_eq!(next_text(&mut laptop).await.1, "found you");
}

#[tokio::test]
async fn unlinking_removes_the_device_its_queue_and_its_session() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let (mut laptop, _) = companion(&relay, &mut alice, "alice-laptop").await;
    laptop.conn().await.unwrap();
    let laptop_key = laptop.state.noise.clone();
    alice.unlink(1).await.unwrap();
    // The live session is closed with a reason.
    let err = loop {
        match tokio::time::timeout(common::PATIENCE, laptop.next_event())
            .await
            .unwrap()
        {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    let code = err
        .downcast_ref::<ClientError>()
        .and_then(|e| e.relay_code());
    assert_eq!(code, Some(ErrorCode::UnknownDevice), "{err:#}");
    // It cannot log in again.
    let who = Identity::Device {
        account: ALICE.into(),
        device: 1,
        token: None,
    };
    let e = Connection::connect(&relay.addr, &laptop_key, None, &who)
        .await
        .err()
        .unwrap();
    assert_eq!(e.relay_code(), Some(ErrorCode::UnknownDevice));
    // Bob's sends go to device 0 only from now on.
    assert_eq!(alice.devices(ALICE).await.unwrap().devices, vec![0]);
    bob.send_text(ALICE, "only the phone").await.unwrap();
    assert_eq!(next_text(&mut alice).await.1, "only the phone");
    // Only the primary may link or unlink.
    let e = laptop.unlink(0).await.unwrap_err();
    assert!(
        format!("{e:#}").contains("UNKNOWN_DEVICE") || format!("{e:#}").contains("unlinked"),
        "{e:#}"
    );
    assert!(quiet_for(&mut bob, Duration::from_millis(100))
        .await
        .is_none_or(|e| !matches!(e, Event::Message { .. })));
}

#[tokio::test]
async fn a_bad_pairing_code_is_refused_with_a_clear_error() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    for bad in ["hello", "rbx1:!!!", "rbx1:AAAA"] {
        let e = alice.link(bad).await.unwrap_err();
        assert!(format!("{e:#}").contains("pairing code"), "{bad}: {e:#}");
    }
    // A companion cannot link others.
    let (mut laptop, _) = companion(&relay, &mut alice, "laptop").await;
    let other = Client::open(&relay.dir.path().join("other"), Some(&relay.addr))
        .unwrap()
        .pairing_code()
        .unwrap();
    let e = laptop.link(&other).await.unwrap_err();
    assert_eq!(
        e.downcast_ref::<ClientError>().and_then(|e| e.relay_code()),
        Some(ErrorCode::NotAllowed),
        "{e:#}"
    );
}
