//! Groups through the real binary: sender-driven fan-out to every member device, an offline
//! member, a membership change racing a send, removal, admin rights, group chat states.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{next_event, quiet_for, Relay};
use relaybox::client::connection::ClientError;
use relaybox::client::{Client, Event};
use relaybox::e2e::payload::Payload;
use relaybox::wire::messages::{
    client_frame, ChatState, Envelope, ErrorCode, GroupOp, ReceiptKind, Send,
};

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";
const CAROL: &str = "+14155550103";
const DAVE: &str = "+14155550104";

/// The next message event, skipping group system events; returns (from, group, text).
async fn next_message(c: &mut Client) -> (String, Option<String>, String) {
    loop {
        match next_event(c).await {
            Event::Message {
                from, group, inner, ..
            } => {
                let Payload::Text { body } = inner.payload else {
                    panic!("not text")
                };
                return (from, group, body);
            }
            Event::Group { .. }
            | Event::DevicesChanged { .. }
            | Event::Receipt { .. }
            | Event::Presence { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn relay_code(e: &anyhow::Error) -> Option<ErrorCode> {
    e.downcast_ref::<ClientError>().and_then(|e| e.relay_code())
}

#[tokio::test]
async fn a_three_person_group_reaches_every_member_including_one_who_was_offline() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let mut carol = relay.user("carol", CAROL).await;
    carol.disconnect();
    let info = alice
        .create_group("branch 12", &[BOB.into(), CAROL.into()])
        .await
        .unwrap();
    assert_eq!(info.members.len(), 3);
    assert!(info.members.iter().any(|m| m.account == ALICE && m.admin));
    let g = info.group.clone();

    match next_event(&mut bob).await {
        Event::Group {
            group,
            op: GroupOp::Create,
            subject,
            ..
        } => assert_eq!(
            (group.as_str(), subject.as_str()),
            (g.as_str(), "branch 12")
        ),
        other => panic!("expected the create event, got {other:?}"),
    }
    let (msg_id, _) = alice.send_group_text(&g, "hello group").await.unwrap();
    assert_eq!(
        next_message(&mut bob).await,
        (ALICE.into(), Some(g.clone()), "hello group".into())
    );
    // Carol comes back and gets the system event and the message, in order.
    assert_eq!(
        next_message(&mut carol).await,
        (ALICE.into(), Some(g.clone()), "hello group".into())
    );
    // Receipts are per recipient device: one delivered receipt from each.
    let mut from = Vec::new();
    while from.len() < 2 {
        if let Event::Receipt {
            from: f,
            kind: ReceiptKind::Delivered,
            msg_ids,
        } = next_event(&mut alice).await
        {
            assert_eq!(msg_ids, vec![msg_id]);
            from.push(f);
        }
    }
    from.sort();
    assert_eq!(from, vec![BOB.to_owned(), CAROL.to_owned()]);
    // Members answer in the group too.
    bob.send_group_text(&g, "hi from bob").await.unwrap();
    assert_eq!(
        next_message(&mut carol).await,
        (BOB.into(), Some(g.clone()), "hi from bob".into())
    );
    assert_eq!(
        next_message(&mut alice).await,
        (BOB.into(), Some(g), "hi from bob".into())
    );
}

#[tokio::test]
async fn a_membership_change_racing_a_send_gets_mismatched_devices_then_the_retry_succeeds() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let mut carol = relay.user("carol", CAROL).await;
    let g = alice
        .create_group("race", &[BOB.into()])
        .await
        .unwrap()
        .group;
    alice
        .update_group(&g, GroupOp::Promote, &[BOB.into()], "")
        .await
        .unwrap();
    // Bob adds Carol while Alice still believes the group is {alice, bob}.
    bob.update_group(&g, GroupOp::Add, &[CAROL.into()], "")
        .await
        .unwrap();
    // A raw send with only Bob's envelope is refused with every member's devices.
    let stale = Send {
        msg_id: vec![9; 16],
        group: g.clone(),
        envelopes: vec![Envelope {
            account: BOB.into(),
            device: 0,
            olm_type: 1,
            ciphertext: vec![1; 8].into(),
        }],
        kind: 1,
        ..Default::default()
    };
    match alice
        .conn()
        .await
        .unwrap()
        .request(client_frame::Body::Send(stale))
        .await
    {
        Err(ClientError::Relay(e)) => {
            assert_eq!(e.code(), ErrorCode::MismatchedDevices);
            let mut members: Vec<_> = e.members.iter().map(|m| m.account.clone()).collect();
            members.sort();
            assert_eq!(members, vec![ALICE, BOB, CAROL]);
        }
        other => panic!("stale send accepted: {other:?}"),
    }
    // The SDK follows the answer: refreshes the group and re-encrypts for Carol too.
    alice.send_group_text(&g, "welcome carol").await.unwrap();
    assert_eq!(next_message(&mut carol).await.2, "welcome carol");
    assert_eq!(next_message(&mut bob).await.2, "welcome carol");
}

#[tokio::test]
async fn a_removed_member_receives_nothing_sent_after_its_removal_and_cannot_send() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let mut carol = relay.user("carol", CAROL).await;
    let g = alice
        .create_group("trio", &[BOB.into(), CAROL.into()])
        .await
        .unwrap()
        .group;
    alice
        .update_group(&g, GroupOp::Remove, &[CAROL.into()], "")
        .await
        .unwrap();
    alice.send_group_text(&g, "after carol left").await.unwrap();
    assert_eq!(next_message(&mut bob).await.2, "after carol left");
    // Carol sees the create and her removal, and no message.
    let mut ops = Vec::new();
    while let Some(e) = quiet_for(&mut carol, Duration::from_millis(800)).await {
        match e {
            Event::Group { op, .. } => ops.push(op),
            Event::Message { .. } => panic!("removed member got a message"),
            _ => {}
        }
    }
    assert_eq!(ops, vec![GroupOp::Create, GroupOp::Remove]);
    let e = carol.send_group_text(&g, "let me in").await.unwrap_err();
    assert_eq!(relay_code(&e), Some(ErrorCode::NotAllowed), "{e:#}");
    let e = carol.group_info(&g).await.unwrap_err();
    assert_eq!(relay_code(&e), Some(ErrorCode::NotAllowed), "{e:#}");
}

#[tokio::test]
async fn only_admins_change_membership_and_everyone_may_leave() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let _dave = relay.user("dave", DAVE).await;
    let g = alice
        .create_group("admins", &[BOB.into()])
        .await
        .unwrap()
        .group;
    let e = bob
        .update_group(&g, GroupOp::Add, &[DAVE.into()], "")
        .await
        .unwrap_err();
    assert_eq!(relay_code(&e), Some(ErrorCode::NotAllowed), "{e:#}");
    let e = bob
        .update_group(&g, GroupOp::SetSubject, &[], "mine now")
        .await
        .unwrap_err();
    assert_eq!(relay_code(&e), Some(ErrorCode::NotAllowed), "{e:#}");
    let e = alice
        .update_group(&g, GroupOp::Add, &["+14155550199".into()], "")
        .await
        .unwrap_err();
    assert_eq!(relay_code(&e), Some(ErrorCode::UnknownAccount), "{e:#}");
    let e = alice
        .group_info("g00000000000000000000000000000000")
        .await
        .unwrap_err();
    assert_eq!(relay_code(&e), Some(ErrorCode::UnknownGroup), "{e:#}");
    let info = alice
        .update_group(&g, GroupOp::SetSubject, &[], "renamed")
        .await
        .unwrap();
    assert_eq!((info.subject.as_str(), info.version), ("renamed", 2));
    let info = bob.update_group(&g, GroupOp::Leave, &[], "").await.unwrap();
    assert_eq!(info.members.len(), 1);
}

#[tokio::test]
async fn group_chat_states_reach_online_members_only() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let mut carol = relay.user("carol", CAROL).await;
    let g = alice
        .create_group("typing", &[BOB.into(), CAROL.into()])
        .await
        .unwrap()
        .group;
    carol.disconnect();
    // Bob drains the create event first.
    assert!(matches!(next_event(&mut bob).await, Event::Group { .. }));
    alice
        .group_chat_state(&g, ChatState::Recording)
        .await
        .unwrap();
    match next_event(&mut bob).await {
        Event::ChatState { from, state, group } => {
            assert_eq!(
                (from.as_str(), state, group.as_deref()),
                (ALICE, ChatState::Recording, Some(g.as_str()))
            )
        }
        other => panic!("expected a chat state, got {other:?}"),
    }
    // Carol was offline: she gets the stored create event, never the chat state.
    assert!(matches!(next_event(&mut carol).await, Event::Group { .. }));
    assert!(quiet_for(&mut carol, Duration::from_millis(500))
        .await
        .is_none());
}
