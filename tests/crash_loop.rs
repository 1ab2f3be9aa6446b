//! Crash loop: M senders and their receivers run against the real binary while a driver
//! `kill -9`s the relay at random moments (seeded) and restarts it on the same data directory
//! and ports, K times. A Jepsen-style checker (`common/jepsen.rs`) then classifies every msg_id;
//! the run passes with 0 lost, 0 unexpected and 0 duplicated.
//!
//! CI runs 20 kills. By hand: `CRASH_KILLS=200 CRASH_SEED=7 cargo test --release --test
//! crash_loop -- --nocapture` (also `CRASH_SENDERS`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/jepsen.rs"]
mod jepsen;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Relay;
use jepsen::History;
use rand::{Rng, SeedableRng};
use relaybox::client::{Client, Event};
use relaybox::e2e::payload::{Inner, Payload};
use relaybox::ids::MsgId;

const RECEIVERS: usize = 2;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Shared {
    history: Mutex<History>,
    incarnation: AtomicU64,
    stop_sending: AtomicBool,
    stop_receiving: AtomicBool,
}

impl Shared {
    fn now(&self) -> u64 {
        self.incarnation.load(Ordering::SeqCst)
    }
}

/// Sends numbered texts to `to` until told to stop; each msg_id is retried (same id, so the
/// relay deduplicates) across failures and kills until it is acknowledged.
async fn sender(mut c: Client, to: String, who: usize, shared: Arc<Shared>) -> Client {
    let mut n = 0u64;
    while !shared.stop_sending.load(Ordering::SeqCst) {
        let id = MsgId::random();
        let inner = Inner::new(
            relaybox::clock::now_ms(),
            Payload::Text {
                body: format!("sender {who} message {n}"),
            },
        );
        shared.history.lock().unwrap().sent(id, shared.now());
        loop {
            match tokio::time::timeout(Duration::from_secs(5), c.send_inner(&to, id, &inner)).await
            {
                Ok(Ok(_ack)) => {
                    shared.history.lock().unwrap().acked(id, shared.now());
                    break;
                }
                _ => {
                    c.disconnect();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
        }
        n += 1;
    }
    c
}

/// Reads events until told to stop, recording every message handed to the application.
async fn receiver(mut c: Client, shared: Arc<Shared>) -> Client {
    let mut hidden = 0;
    while !shared.stop_receiving.load(Ordering::SeqCst) {
        match tokio::time::timeout(Duration::from_millis(300), c.next_event()).await {
            Ok(Ok(Event::Message { msg_id, .. })) => {
                shared
                    .history
                    .lock()
                    .unwrap()
                    .delivered(msg_id, shared.now());
            }
            Ok(Ok(Event::Undecryptable { msg_id, .. })) => {
                let mut h = shared.history.lock().unwrap();
                h.delivered(msg_id, shared.now());
                h.undecryptable += 1;
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(30)).await,
        }
        let mut h = shared.history.lock().unwrap();
        h.raw_redeliveries += c.redeliveries - hidden;
        hidden = c.redeliveries;
    }
    c
}

#[tokio::test]
async fn no_acknowledged_message_is_lost_or_duplicated_across_repeated_kill_9() {
    let kills = env_or("CRASH_KILLS", 20);
    let senders = env_or("CRASH_SENDERS", 4) as usize;
    let seed = env_or(
        "CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    println!(
        "crash loop: seed={seed} kills={kills} senders={senders} (rerun with CRASH_SEED={seed})"
    );

    let relay = Relay::start();
    let mut receivers = Vec::new();
    for r in 0..RECEIVERS {
        let phone = format!("+1415555{:04}", 100 + r);
        let c = relay.user(&format!("receiver{r}"), &phone).await;
        receivers.push((c, phone));
    }
    let mut clients = Vec::new();
    for s in 0..senders {
        let phone = format!("+1415555{:04}", 200 + s);
        clients.push(relay.user(&format!("sender{s}"), &phone).await);
    }
    let shared = Arc::new(Shared {
        history: Mutex::new(History::default()),
        incarnation: AtomicU64::new(0),
        stop_sending: AtomicBool::new(false),
        stop_receiving: AtomicBool::new(false),
    });

    // The driver owns the relay on its own thread: kill and restart block.
    let driver_shared = shared.clone();
    let driver = std::thread::spawn(move || {
        let mut relay = relay;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let started = Instant::now();
        for _ in 0..kills {
            std::thread::sleep(Duration::from_millis(rng.gen_range(50..600)));
            relay.kill9();
            driver_shared.incarnation.fetch_add(1, Ordering::SeqCst);
            relay.restart();
        }
        println!("crash loop: {kills} kills in {:?}", started.elapsed());
        relay
    });

    let local = tokio::task::LocalSet::new();
    let (relay, receivers, senders_back) = local
        .run_until(async {
            let mut rx_tasks = Vec::new();
            let mut targets = Vec::new();
            for (c, phone) in receivers {
                targets.push(phone);
                rx_tasks.push(tokio::task::spawn_local(receiver(c, shared.clone())));
            }
            let mut tx_tasks = Vec::new();
            for (s, c) in clients.into_iter().enumerate() {
                let to = targets[s % targets.len()].clone();
                tx_tasks.push(tokio::task::spawn_local(sender(c, to, s, shared.clone())));
            }
            let relay = loop {
                if driver.is_finished() {
                    break driver.join().expect("driver thread");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            // Let the last incarnation serve for a moment, then stop sending; every sender
            // finishes (gets an ack for) its message in flight.
            tokio::time::sleep(Duration::from_millis(500)).await;
            shared.stop_sending.store(true, Ordering::SeqCst);
            let mut senders_back = Vec::new();
            for t in tx_tasks {
                senders_back.push(t.await.unwrap());
            }
            // Wait for every acknowledged message (bounded), then a quiet second for repeats.
            let deadline = Instant::now() + Duration::from_secs(60);
            while shared.history.lock().unwrap().pending() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            shared.stop_receiving.store(true, Ordering::SeqCst);
            let mut receivers = Vec::new();
            for t in rx_tasks {
                receivers.push(t.await.unwrap());
            }
            (relay, receivers, senders_back)
        })
        .await;

    // A reconnect must not bring back anything already delivered and acknowledged.
    for mut c in receivers {
        c.disconnect();
        let before = c.redeliveries;
        let mut again = Vec::new();
        while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(700), c.next_event()).await
        {
            if let Event::Message { msg_id, .. } | Event::Undecryptable { msg_id, .. } = e {
                again.push(msg_id);
            }
        }
        let mut h = shared.history.lock().unwrap();
        for msg_id in again {
            h.delivered(msg_id, shared.now());
        }
        h.raw_redeliveries += c.redeliveries - before;
    }
    drop(senders_back);

    let verdict = shared.history.lock().unwrap().check();
    println!("crash loop: kills={kills} {}", verdict.summary());
    assert!(
        verdict.acked > kills as usize,
        "too little traffic to mean anything: {}",
        verdict.summary()
    );
    assert!(
        verdict.valid(),
        "seed {seed}: {}\nlost: {:?}\nunexpected: {:?}\nduplicated: {:?}\nrelay logs tail:\n{}",
        verdict.summary(),
        verdict.lost,
        verdict.unexpected,
        verdict.duplicated,
        tail(&relay.logs(), 40)
    );
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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
