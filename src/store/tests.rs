//! Store tests: domain operations, and a model test of the queue against a `BTreeMap`.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::ids::{AccountId, DeviceId};

fn dev(n: u32) -> DeviceId {
    DeviceId::new(AccountId::parse("+14155550100").unwrap(), n)
}

fn msg(i: u8) -> QueueRecord {
    QueueRecord {
        enqueued_at_ms: u64::from(i),
        item: QueueItem::Message {
            msg_id: [i; 16],
            from: "+14155550199".into(),
            from_device: 0,
            timestamp_ms: 1,
            olm_type: 1,
            ciphertext: vec![i; 3].into(),
            kind: 1,
            group: String::new(),
        },
    }
}

#[test]
fn a_one_time_key_is_claimed_once_then_the_fallback_is_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let d = dev(0);
    assert_eq!(s.keys_claim(&d, false).unwrap(), None);
    let ik = IdentityKeys {
        identity: [1; 32],
        signing: [2; 32],
    };
    assert_eq!(
        s.keys_set_identity(&d, &ik).unwrap(),
        IdentityOutcome::Stored
    );
    assert_eq!(
        s.keys_set_identity(&d, &ik).unwrap(),
        IdentityOutcome::Unchanged
    );
    let other = IdentityKeys {
        identity: [3; 32],
        signing: [2; 32],
    };
    assert_eq!(
        s.keys_set_identity(&d, &other).unwrap(),
        IdentityOutcome::Conflict
    );
    assert_eq!(
        s.keys_add_one_time(&d, &[(b"a".to_vec(), [5; 32])], 10)
            .unwrap(),
        1
    );
    s.keys_set_fallback(&d, b"fb", [6; 32]).unwrap();
    let first = s.keys_claim(&d, false).unwrap().unwrap();
    assert_eq!(first.key, Some((b"a".to_vec(), [5; 32])));
    assert!(!first.is_fallback);
    let second = s.keys_claim(&d, false).unwrap().unwrap();
    assert_eq!(second.key, Some((b"fb".to_vec(), [6; 32])));
    assert!(second.is_fallback);
}

#[test]
fn one_time_keys_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let keys: Vec<_> = (0..10u8).map(|i| (vec![i], [i; 32])).collect();
    assert_eq!(s.keys_add_one_time(&dev(0), &keys, 4).unwrap(), 4);
}

#[test]
fn a_token_id_swaps_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.token_set(&dev(0), 1).unwrap();
    assert!(s.token_swap(&dev(0), 1, 2).unwrap());
    assert!(!s.token_swap(&dev(0), 1, 3).unwrap());
    assert!(!s.token_swap(&dev(1), 1, 3).unwrap());
}

#[test]
fn reregistering_with_a_new_key_drops_the_old_primarys_queue() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let a = dev(0).account;
    s.register_primary(&a, [1; 32], 0).unwrap();
    s.queue_push(&dev(0), &msg(1)).unwrap();
    s.register_primary(&a, [1; 32], 0).unwrap();
    assert_eq!(s.queue_len(&dev(0)).unwrap(), 1);
    s.register_primary(&a, [2; 32], 0).unwrap();
    assert_eq!(s.queue_len(&dev(0)).unwrap(), 0);
    assert_eq!(s.devices(&a).unwrap().len(), 1);
}

#[test]
fn a_sender_keeps_only_its_newest_dedupe_records_across_retirements_and_reopens_and_the_sweep_removes_them(
) {
    let dir = tempfile::tempdir().unwrap();
    let busy = AccountId::parse("+14155550100").unwrap();
    let quiet = AccountId::parse("+14155550101").unwrap();
    let id = |n: u32| {
        let mut m = [7u8; 16];
        m[..4].copy_from_slice(&n.to_be_bytes());
        crate::ids::MsgId(m)
    };
    let total = SEEN_PER_SENDER as u32 + 300;
    {
        let s = Store::open(dir.path()).unwrap();
        s.send_append(&quiet, &id(0), 5, vec![], vec![]).unwrap();
        // In three retirements: the older batches fall out of the bound.
        for n in 0..total {
            s.send_append(&busy, &id(n), 10 + u64::from(n), vec![], vec![])
                .unwrap();
            if n % 500 == 499 {
                s.log().retire_all().unwrap();
            }
        }
        s.log().retire_all().unwrap();
        assert_eq!(s.seen_get(&busy, &id(0)).unwrap(), None, "past the bound");
        s.flush().unwrap();
    }
    // A record written before the log (timestamp only) is loaded too.
    {
        let s = Store::open(dir.path()).unwrap();
        s.t.sendermsgid_timestamp
            .insert(keys::seen(&quiet, &id(1)), &3u64.to_be_bytes())
            .unwrap();
        s.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let stored: usize =
        s.t.senderseq_seenbatch
            .scan_prefix(keys::account_prefix(&busy))
            .values()
            .map(|v| {
                decode::<Vec<super::seen::SeenRecord>>("t", &v.unwrap())
                    .unwrap()
                    .len()
            })
            .sum();
    assert!(
        (SEEN_PER_SENDER..SEEN_PER_SENDER + 500).contains(&stored),
        "stored {stored}"
    );
    assert_eq!(
        s.seen_get(&busy, &id(0)).unwrap(),
        None,
        "the oldest is forgotten"
    );
    assert_eq!(
        s.seen_get(&busy, &id(total - 1)).unwrap(),
        Some(9 + u64::from(total))
    );
    assert_eq!(
        s.seen_get(&quiet, &id(0)).unwrap(),
        Some(5),
        "another sender keeps its own"
    );
    assert_eq!(s.seen_get(&quiet, &id(1)).unwrap(), Some(3));
    assert_eq!(s.seen_recipients(&quiet, &id(1)).unwrap(), Some(None));
    // Retention ran out for everything: sled and memory forget all.
    s.queue_sweep(u64::MAX).unwrap();
    assert_eq!(s.t.senderseq_seenbatch.len(), 0);
    assert_eq!(s.t.sendermsgid_timestamp.len(), 0);
    assert_eq!(s.seen_get(&quiet, &id(0)).unwrap(), None);
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.register_primary(&dev(0).account, [1; 32], 0).unwrap();
        s.queue_push(&dev(0), &msg(7)).unwrap();
        s.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert!(s.account_exists(&dev(0).account).unwrap());
    assert_eq!(s.queue_range(&dev(0), None, 10).unwrap()[0].1, msg(7));
}

#[derive(Debug, Clone)]
enum Op {
    Push(u32, u8),
    RemoveNth(u32, usize),
    Sweep(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3u32, any::<u8>()).prop_map(|(d, i)| Op::Push(d, i)),
        (0..3u32, 0..8usize).prop_map(|(d, n)| Op::RemoveNth(d, n)),
        any::<u8>().prop_map(Op::Sweep),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn the_queue_behaves_like_a_btreemap_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut model: BTreeMap<(u32, u64), QueueRecord> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Push(d, i) => {
                    let seq = s.queue_push(&dev(d), &msg(i)).unwrap();
                    model.insert((d, seq), msg(i));
                }
                Op::RemoveNth(d, n) => {
                    let key = model.keys().filter(|(md, _)| *md == d).nth(n).copied();
                    if let Some((md, seq)) = key {
                        prop_assert_eq!(s.queue_remove(&dev(md), seq).unwrap(), model.remove(&(md, seq)));
                    }
                }
                Op::Sweep(cut) => {
                    s.queue_sweep(u64::from(cut)).unwrap();
                    model.retain(|_, r| r.enqueued_at_ms >= u64::from(cut));
                }
            }
            for d in 0..3 {
                let got: Vec<_> = s.queue_range(&dev(d), None, 1000).unwrap();
                let want: Vec<_> = model.iter().filter(|((md, _), _)| *md == d).map(|((_, seq), r)| (*seq, r.clone())).collect();
                prop_assert_eq!(&got, &want);
                if let Some((first, _)) = want.first() {
                    let after: Vec<_> = s.queue_range(&dev(d), Some(*first), 1000).unwrap();
                    prop_assert_eq!(after.len(), want.len() - 1);
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn queue_records_round_trip_through_their_encoding(
        at in any::<u64>(), id in any::<[u8; 16]>(), from in ".{0,20}", ct in proptest::collection::vec(any::<u8>(), 0..200),
        receipt in any::<bool>(),
    ) {
        let item = if receipt {
            QueueItem::Receipt { from, from_device: 1, kind: 2, msg_ids: vec![id], timestamp_ms: at }
        } else {
            QueueItem::Message { msg_id: id, from, from_device: 0, timestamp_ms: at, olm_type: 1, ciphertext: ct.into(), kind: 1, group: String::new() }
        };
        let rec = QueueRecord { enqueued_at_ms: at, item };
        prop_assert_eq!(super::decode::<QueueRecord>("t", &super::encode(&rec)).unwrap(), rec);
    }
}

#[test]
fn abuse_metrics_count_every_send_and_a_stale_forget_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let a = dev(0).account;
    let facts = |peer| SendFacts {
        peer,
        symmetric: false,
        size: 10,
    };
    let window = 60_000;
    {
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.abuse_stats(&a).unwrap(), None);
        assert!(!s
            .abuse_knows_peer(&a, "+14155550199", 1000, window)
            .unwrap());
        assert_eq!(
            s.abuse_stats(&a).unwrap(),
            None,
            "a lookup creates no metrics"
        );
        s.abuse_count_send(&a, facts("+14155550199"), 1000, window)
            .unwrap();
        assert!(s
            .abuse_knows_peer(&a, "+14155550199", 1001, window)
            .unwrap());
        let seen = s.abuse_active().unwrap();
        assert_eq!(seen.len(), 1, "the monitor sees what was counted");
        // Counted after the monitor read it: forgetting the old copy keeps the new count.
        s.abuse_count_send(&a, facts("+14155550198"), 1002, window)
            .unwrap();
        s.abuse_stats_forget(&a, &seen[0].1).unwrap();
        assert_eq!(
            s.abuse_stats(&a)
                .unwrap()
                .unwrap()
                .metrics(1003, window)
                .messages,
            2
        );
        s.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let m = s.abuse_stats(&a).unwrap().unwrap().metrics(1003, window);
    assert_eq!(m.messages, 2, "kept across a reopen");
    assert_eq!(m.distinct_peers, 2);
}

#[test]
fn abuse_metrics_reach_sled_by_write_back_and_a_forget_clears_both() {
    let dir = tempfile::tempdir().unwrap();
    let a = dev(0).account;
    let b = AccountId::parse("+14155550101").unwrap();
    let facts = SendFacts {
        peer: "+14155550199",
        symmetric: true,
        size: 10,
    };
    let window = 60_000;
    {
        let s = Store::open(dir.path()).unwrap();
        s.abuse_count_send(&a, facts, 1000, window).unwrap();
        s.abuse_stats_flush().unwrap();
        // Counted in memory only: this one is not written back before the store closes.
        s.abuse_count_send(&b, facts, 1000, window).unwrap();
        s.abuse_count_send(&a, facts, 1001, window).unwrap();
    }
    {
        let s = Store::open(dir.path()).unwrap();
        let m = s.abuse_stats(&a).unwrap().unwrap().metrics(1002, window);
        assert_eq!(m.messages, 1, "what the write-back wrote");
        assert_eq!(
            s.abuse_stats(&b).unwrap(),
            None,
            "counted after the last write-back"
        );
        // Counting again starts from sled's record.
        s.abuse_count_send(&a, facts, 1003, window).unwrap();
        let active = s.abuse_active().unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].1.metrics(1004, window).messages, 2);
        // The monitor forgets idle metrics: gone from memory and from sled.
        s.abuse_stats_forget(&a, &active[0].1).unwrap();
        assert_eq!(s.abuse_stats(&a).unwrap(), None);
        s.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.abuse_stats(&a).unwrap(), None, "the forget reached sled");
}

#[test]
fn a_phone_is_an_entity_only_once_an_entity_claims_it() {
    let dir = tempfile::tempdir().unwrap();
    let phone = dev(0).account;
    {
        let s = Store::open(dir.path()).unwrap();
        assert!(s.entity_by_phone(&phone).unwrap().is_none());
        let rec = EntityRecord {
            handle: "@shop".into(),
            phone: phone.to_string(),
            display_name: "Shop".into(),
            admin: "+14155550101".into(),
            agents: BTreeMap::new(),
            policy: AssignPolicy::Manual,
            copy_admin: false,
            auto_assign_after_ms: None,
            next_round_robin: 0,
            created_ms: 1,
        };
        assert!(s.entity_create(&rec).unwrap());
        assert_eq!(s.entity_by_phone(&phone).unwrap().unwrap().handle, "@shop");
        s.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(
        s.entity_by_phone(&phone).unwrap().unwrap().handle,
        "@shop",
        "the alias is loaded when the store opens"
    );
}

#[test]
fn mutes_are_answered_from_memory_in_step_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let a = dev(0).account;
    {
        let s = Store::open(dir.path()).unwrap();
        assert!(!s.muted(&a, "g1", 10).unwrap());
        s.mute_set(&a, "g1", 100).unwrap();
        s.mute_set(&a, "+14155550199", MUTE_FOREVER).unwrap();
        s.mute_set(&a, "g2", 50).unwrap();
        assert!(s.muted(&a, "g1", 99).unwrap());
        assert!(!s.muted(&a, "g1", 100).unwrap(), "expired at its end");
        s.mute_clear(&a, "g2").unwrap();
        assert!(!s.muted(&a, "g2", 10).unwrap());
        let other = AccountId::parse("+14155550101").unwrap();
        assert!(!s.muted(&other, "+14155550199", 10).unwrap(), "per account");
        s.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert!(
        s.muted(&a, "+14155550199", u64::MAX - 1).unwrap(),
        "kept across a reopen"
    );
    assert!(
        !s.muted(&a, "g1", 10).unwrap(),
        "the expired mute was removed from the store"
    );
    assert!(!s.muted(&a, "g2", 10).unwrap(), "the cleared mute too");
}
