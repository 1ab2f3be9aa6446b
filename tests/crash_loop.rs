//! Crash loop: M senders and their receivers run against the real binary while a driver
//! `kill -9`s the relay at random moments (seeded) and restarts it on the same data directory
//! and ports, K times. A Jepsen-style checker (`common/jepsen.rs`) then classifies every msg_id;
//! the run passes with 0 lost, 0 unexpected and 0 duplicated. The load is `common/faultload.rs`,
//! shared with the power-loss test.
//!
//! CI runs 20 kills. By hand: `CRASH_KILLS=200 CRASH_SEED=7 cargo test --release --test
//! crash_loop -- --nocapture` (also `CRASH_SENDERS`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/faultload.rs"]
mod faultload;
#[path = "common/jepsen.rs"]
mod jepsen;

use common::Relay;
use faultload::env_or;
use jepsen::History;
use relaybox::ids::MsgId;

#[tokio::test]
async fn no_acknowledged_message_is_lost_or_duplicated_across_repeated_kill_9() {
    let kills = env_or("CRASH_KILLS", 20);
    let senders = env_or("CRASH_SENDERS", 4) as usize;
    let seed = faultload::seed("CRASH_SEED");
    println!(
        "crash loop: seed={seed} kills={kills} senders={senders} (rerun with CRASH_SEED={seed})"
    );
    let (verdict, relay) = faultload::run(Relay::start(), senders, kills, seed, |relay, _| {
        relay.kill9();
        relay.restart();
    })
    .await;
    println!("crash loop: kills={kills} {}", verdict.summary());
    faultload::assert_valid(&verdict, kills, seed, &relay);
}

#[test]
fn the_checker_flags_lost_unexpected_duplicated_and_recovered_messages() {
    let id = |n: u8| MsgId([n; 16]);
    let mut h = History::default();
    // 1: fine. 2: acked, never delivered. 3: delivered twice. 4: recovered after a restart.
    // 5: delivered, never sent. 6: sent, not acked, delivered (allowed).
    for n in 1..=4 {
        h.sent(id(n), 0);
        h.acked(id(n), 0);
    }
    h.sent(id(6), 0);
    h.delivered(id(1), 0);
    h.delivered(id(3), 0);
    h.delivered(id(3), 1);
    h.delivered(id(4), 2);
    h.delivered(id(5), 0);
    h.delivered(id(6), 1);
    let v = h.check();
    assert_eq!(v.lost.iter().map(|m| m.0[0]).collect::<Vec<_>>(), [2]);
    assert_eq!(v.unexpected.iter().map(|m| m.0[0]).collect::<Vec<_>>(), [5]);
    assert_eq!(v.duplicated.iter().map(|m| m.0[0]).collect::<Vec<_>>(), [3]);
    assert_eq!(v.recovered, 1);
    assert_eq!(v.delivered_unacked, 1);
    assert!(!v.valid());
}
