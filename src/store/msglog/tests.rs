//! The log against a `BTreeMap` model across crashes: whatever prefix of the last segment's
//! records a crash leaves (a torn record included), the reopened store holds exactly the
//! model's state after that prefix; retirements move entries to sled without changing it.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::ids::{AccountId, DeviceId, MsgId};
use crate::store::{QueueItem, QueueRecord, Store};

fn dev(d: u32) -> DeviceId {
    DeviceId::new(AccountId::parse("+14155550101").unwrap(), d)
}

fn rec(v: u8) -> QueueRecord {
    QueueRecord {
        enqueued_at_ms: 1,
        item: QueueItem::DevicesChanged {
            account: "+14155550102".into(),
            devices: vec![u32::from(v)],
        },
    }
}

#[derive(Debug, Clone)]
enum Step {
    Push(u32, u8),
    Ack(u32, usize),
    Send(u8),
    Retire,
    /// Close, then cut this many whole records off the end of the last segment (fewer if it
    /// has fewer since the last retirement), leaving a torn record if the flag is set.
    Crash(u8, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3u32, any::<u8>()).prop_map(|(d, v)| Step::Push(d, v)),
        3 => (0..3u32, 0..4usize).prop_map(|(d, n)| Step::Ack(d, n)),
        2 => any::<u8>().prop_map(Step::Send),
        1 => Just(Step::Retire),
        2 => (0..4u8, any::<bool>()).prop_map(|(n, t)| Step::Crash(n, t)),
    ]
}

type Model = BTreeMap<(u32, u64), QueueRecord>;

/// The last segment's file and the offsets where its records end.
fn last_segment(dir: &std::path::Path) -> Option<(std::path::PathBuf, Vec<usize>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let path = files.pop()?;
    let bytes = std::fs::read(&path).unwrap();
    let mut ends = Vec::new();
    let mut at = 0;
    // Records end where the zeros the segment was grown with begin.
    while at < bytes.len() && bytes[at..].iter().any(|&b| b != 0) {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += super::format::HEADER_BYTES + len;
        ends.push(at);
    }
    Some((path, ends))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn the_log_behaves_like_a_btreemap_across_crashes_and_retirements(
        steps in proptest::collection::vec(step(), 1..40)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Some(Store::open(dir.path()).unwrap());
        // The model after each record written since the last point a crash cannot cut
        // behind (the open, a retirement, or a change made in sled directly).
        let mut history: Vec<Model> = vec![Model::new()];
        let mut sent = 0u8;
        for step in steps {
            let s = store.as_ref().unwrap();
            let mut model = history.last().unwrap().clone();
            match step {
                Step::Push(d, v) => {
                    let seq = s.queue_push(&dev(d), &rec(v)).unwrap();
                    model.insert((d, seq), rec(v));
                    history.push(model);
                }
                Step::Ack(d, n) => {
                    let Some(key) = model.keys().filter(|(md, _)| *md == d).nth(n).copied() else {
                        continue;
                    };
                    let in_log = s.log().len_of(&dev(d)) > 0
                        && s.log().range(&dev(d), Some(key.1 - 1), key.1, 1).len() == 1;
                    let got = s.queue_remove_many(&dev(d), &[key.1]).unwrap();
                    prop_assert_eq!(got, vec![model.remove(&key).unwrap()]);
                    if in_log {
                        history.push(model);
                    } else {
                        // Removed from sled: no log record a crash could cut.
                        history = vec![model];
                    }
                }
                Step::Send(v) => {
                    sent = sent.wrapping_add(1);
                    let sender = AccountId::parse("+14155550109").unwrap();
                    let msg = MsgId([sent; 16]);
                    let out = s
                        .send_append(&sender, &msg, 7, vec![], vec![(dev(0), rec(v)), (dev(1), rec(v))])
                        .unwrap();
                    if let super::Appended::Written { first_seq, .. } = out {
                        model.insert((0, first_seq), rec(v));
                        model.insert((1, first_seq + 1), rec(v));
                        history.push(model);
                    }
                }
                Step::Retire => {
                    s.log().retire_all().unwrap();
                    history = vec![model];
                }
                Step::Crash(cut, torn) => {
                    store.take().unwrap().flush().unwrap();
                    // The writer thread finishes when the last handle is gone.
                    let mut kept = history.len() - 1;
                    if let Some((path, ends)) = last_segment(dir.path()) {
                        let cut = usize::from(cut).min(ends.len()).min(history.len() - 1);
                        let keep_records = ends.len() - cut;
                        let mut len = if keep_records == 0 { 0 } else { ends[keep_records - 1] };
                        if torn && cut > 0 {
                            len += 5; // part of the next record's header
                        }
                        // What the crash lost reads back as the zeros the segment was
                        // grown with (its size is kept).
                        let size = std::fs::metadata(&path).unwrap().len() as usize;
                        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                        f.set_len(len as u64).unwrap();
                        f.set_len(size.max(len) as u64).unwrap();
                        kept -= cut;
                    }
                    history.truncate(kept + 1);
                    store = Some(Store::open(dir.path()).unwrap());
                    // What was replayed retires at the open; wait for it, so that an ack
                    // below knows whether its entry is in the log or in sled.
                    store.as_ref().unwrap().log().retire_all().unwrap();
                    let model = history.last().unwrap().clone();
                    history = vec![model];
                }
            }
            let s = store.as_ref().unwrap();
            let want = history.last().unwrap();
            for d in 0..3 {
                let got = s.queue_range(&dev(d), None, 1000).unwrap();
                let expect: Vec<_> = want
                    .iter()
                    .filter(|((md, _), _)| *md == d)
                    .map(|((_, seq), r)| (*seq, r.clone()))
                    .collect();
                prop_assert_eq!(got, expect, "device {}", d);
            }
        }
    }
}

#[test]
fn a_sends_msg_id_is_deduplicated_from_the_log_and_after_its_segment_retired_from_sled() {
    let dir = tempfile::tempdir().unwrap();
    let sender = AccountId::parse("+14155550109").unwrap();
    let msg = MsgId([9; 16]);
    {
        let s = Store::open(dir.path()).unwrap();
        let first = s
            .send_append(
                &sender,
                &msg,
                5,
                vec!["+14155550101".into()],
                vec![(dev(0), rec(1))],
            )
            .unwrap();
        assert!(matches!(first, super::Appended::Written { .. }));
        let again = s
            .send_append(&sender, &msg, 6, vec![], vec![(dev(0), rec(1))])
            .unwrap();
        assert!(matches!(
            again,
            super::Appended::Duplicate {
                timestamp_ms: 5,
                ..
            }
        ));
        s.flush().unwrap();
    }
    // Replayed from the log.
    {
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.seen_get(&sender, &msg).unwrap(), Some(5));
        s.log().retire_all().unwrap();
        assert_eq!(
            s.seen_get(&sender, &msg).unwrap(),
            Some(5),
            "kept in memory"
        );
    }
    // Its segment retired: loaded from sled's batch at the open.
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.seen_get(&sender, &msg).unwrap(), Some(5), "found in sled");
    assert_eq!(
        s.seen_recipients(&sender, &msg).unwrap(),
        Some(Some(vec!["+14155550101".to_string()]))
    );
    assert_eq!(s.queue_range(&dev(0), None, 10).unwrap().len(), 1);
}

#[test]
fn damage_in_a_segment_before_the_last_fails_the_open_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    let record = |first_seq| super::Record {
        first_seq,
        ops: vec![super::Op::Enqueue {
            account: "+14155550101".into(),
            device: 0,
            record: rec(1),
        }],
    };
    let mut a = Vec::new();
    super::encode_into(&mut a, &record(1));
    let last = a.len() - 1;
    a[last] ^= 0x55;
    let first = log.join(format!("{:020}.log", 1));
    std::fs::write(&first, a).unwrap();
    let mut b = Vec::new();
    super::encode_into(&mut b, &record(10));
    std::fs::write(log.join(format!("{:020}.log", 10)), b).unwrap();
    let Err(e) = Store::open(dir.path()) else {
        panic!("opened a damaged log");
    };
    let text = e.to_string();
    assert!(text.contains(&first.display().to_string()), "{text}");
    assert!(text.contains("checksum"), "{text}");
}

#[test]
fn a_torn_last_record_is_cut_off_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.queue_push(&dev(0), &rec(1)).unwrap();
        s.queue_push(&dev(0), &rec(2)).unwrap();
        s.flush().unwrap();
    }
    let (path, ends) = last_segment(dir.path()).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(ends[1] as u64 - 3).unwrap();
    let s = Store::open(dir.path()).unwrap();
    let got: Vec<_> = s
        .queue_range(&dev(0), None, 10)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(got, vec![rec(1)]);
}

#[test]
fn the_fuzz_seed_written_by_hand_from_the_documented_format_reads_back() {
    let seed = include_bytes!("../../../tests/fuzz/seeds/msglog/seen-then-remove");
    let (records, entries, stop) = super::recover_bytes(seed).unwrap();
    assert_eq!((records, entries, stop), (2, 0, None));
}
