//! The Thread actor on its own, on a real store: who may change a group and how, what a group
//! send must address, and who may read the group.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::actors::device::DeviceSettings;
use crate::actors::notifier::Notifier;
use crate::ids::DeviceId;
use crate::store::IdentityKeys;
use crate::wire::messages::GroupOp;

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";
const CAROL: &str = "+14155550103";

fn account(a: &str) -> AccountId {
    AccountId::parse(a).unwrap()
}

/// A registered account with a primary whose keys are published (usable for a group send).
fn register(store: &Store, a: &str, n: u8) {
    let d = store.register_primary(&account(a), [n; 32], 0).unwrap();
    let e2e = crate::e2e::E2e::new();
    let keys = IdentityKeys {
        identity: e2e.identity_key(),
        signing: e2e.signing_key(),
    };
    store.keys_set_identity(&d, &keys).unwrap();
}

/// A group of Alice (admin) and Bob, its actor, and the store under it.
fn group(dir: &std::path::Path) -> (Store, Addr<Thread>) {
    let store = Store::open(dir).unwrap();
    for (i, a) in [ALICE, BOB, CAROL].into_iter().enumerate() {
        register(&store, a, u8::try_from(i + 1).unwrap());
    }
    let record = new_record(&account(ALICE), "door", &[account(BOB)], 1);
    store.group_put("g1", &record, None).unwrap();
    let settings = DeviceSettings {
        window: 8,
        idle_stop: Duration::from_secs(60),
    };
    let directory = Directory::new(store.clone(), settings, Notifier::disabled());
    let thread = Thread::new("g1".into(), record, store.clone(), directory).start();
    (store, thread)
}

fn update(actor: &str, op: GroupOp, accounts: &[&str]) -> Update {
    Update {
        actor: account(actor),
        op,
        accounts: accounts.iter().map(|a| account(a)).collect(),
        subject: String::new(),
        max_members: 3,
        by_operator: false,
    }
}

#[actix_rt::test]
async fn only_an_admin_changes_the_group_and_every_change_is_stored_and_told() {
    let dir = tempfile::tempdir().unwrap();
    let (store, thread) = group(dir.path());
    let refused = thread
        .send(update(BOB, GroupOp::Add, &[CAROL]))
        .await
        .unwrap();
    assert!(matches!(refused, Err(GroupError::NotAdmin)), "{refused:?}");
    let unknown = thread
        .send(update(ALICE, GroupOp::Add, &["+14155550199"]))
        .await
        .unwrap();
    assert!(
        matches!(unknown, Err(GroupError::UnknownAccount(_))),
        "{unknown:?}"
    );

    let (record, tell) = thread
        .send(update(ALICE, GroupOp::Add, &[CAROL]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.version, 2);
    assert_eq!(store.group("g1").unwrap().unwrap(), record);
    assert_eq!(tell.len(), 3);
    // Over the bound of members.
    let full = thread
        .send(update(ALICE, GroupOp::Add, &["+14155550104"]))
        .await
        .unwrap();
    assert!(full.is_err());

    // A removed member is told too (members before and after).
    let (record, tell) = thread
        .send(update(ALICE, GroupOp::Remove, &[CAROL]))
        .await
        .unwrap()
        .unwrap();
    assert!(!record.members.contains_key(CAROL));
    assert!(tell.contains(&account(CAROL)));
}

#[actix_rt::test]
async fn the_last_admin_leaving_hands_the_group_on_and_outsiders_read_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, thread) = group(dir.path());
    let (record, _) = thread
        .send(update(ALICE, GroupOp::Leave, &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.members.get(BOB), Some(&true), "{record:?}");
    let outsider = thread
        .send(Info {
            asker: account(ALICE),
        })
        .await
        .unwrap();
    assert!(matches!(outsider, Err(GroupError::NotMember)));
    let mut subject = update(BOB, GroupOp::SetSubject, &[]);
    subject.subject = "door\u{202E}evil".into();
    let bidi = thread.send(subject).await.unwrap();
    assert!(matches!(bidi, Err(GroupError::Invalid(_))), "{bidi:?}");
}

#[actix_rt::test]
async fn a_group_send_must_address_every_other_member_device_with_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, thread) = group(dir.path());
    let sender = DeviceId::new(account(ALICE), 0);
    let exact: BTreeSet<(String, u32)> = [(BOB.to_owned(), 0)].into();
    let ok = thread
        .send(CheckSend {
            sender: sender.clone(),
            addressed: exact,
        })
        .await
        .unwrap();
    assert!(ok.is_ok(), "{ok:?}");
    for wrong in [
        BTreeSet::new(),
        [(BOB.to_owned(), 0), (BOB.to_owned(), 1)].into(),
        [(BOB.to_owned(), 0), (ALICE.to_owned(), 0)].into(),
    ] {
        let answer = thread
            .send(CheckSend {
                sender: sender.clone(),
                addressed: wrong.clone(),
            })
            .await
            .unwrap();
        let Err(GroupError::Mismatch(lists)) = answer else {
            panic!("{wrong:?} was accepted: {answer:?}");
        };
        assert!(lists.contains(&(BOB.to_owned(), vec![0])), "{lists:?}");
    }
}
