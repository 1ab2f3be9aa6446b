//! The load and the checker shared by the crash-loop and power-loss tests: M senders and their
//! receivers run against the real binary while a driver thread applies a fault (`kill -9`, a
//! power cut) at random moments (seeded) and restarts the relay on the same data directory and
//! ports. A Jepsen-style checker (`jepsen.rs`) then classifies every msg_id.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use relaybox::client::{Client, Event};
use relaybox::e2e::payload::{Inner, Payload};
use relaybox::ids::MsgId;

use crate::common::Relay;
use crate::jepsen::{History, Verdict};

const RECEIVERS: usize = 2;

pub fn env_or(name: &str, default: u64) -> u64 {
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
        let mut gave_up_at = None;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), c.send_inner(&to, id, &inner)).await
            {
                Ok(Ok(_ack)) => {
                    shared.history.lock().unwrap().acked(id, shared.now());
                    break;
                }
                Ok(Err(e)) => shared.history.lock().unwrap().last_send_error = Some(e.to_string()),
                Err(_) => {}
            }
            c.disconnect();
            tokio::time::sleep(Duration::from_millis(30)).await;
            // Once the load has stopped, a message that still cannot be sent after a minute
            // (the relay refuses the sender for good, say after losing its registration) stays
            // unacknowledged rather than hanging the test; the verdict reports it.
            if shared.stop_sending.load(Ordering::SeqCst) {
                let since = *gave_up_at.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    shared.history.lock().unwrap().stuck_senders += 1;
                    break;
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

/// Registers the receivers and senders on `relay`, runs the load while the driver applies
/// `fault` `faults` times (the fault leaves the relay running again), lets every acknowledged
/// message arrive and returns the checker's verdict and the relay.
pub async fn run(
    relay: Relay,
    senders: usize,
    faults: u64,
    seed: u64,
    fault: impl FnMut(&mut Relay, &mut rand::rngs::StdRng) + Send + 'static,
) -> (Verdict, Relay) {
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
        let mut fault = fault;
        let mut relay = relay;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let started = Instant::now();
        for _ in 0..faults {
            std::thread::sleep(Duration::from_millis(rng.gen_range(50..600)));
            fault(&mut relay, &mut rng);
            driver_shared.incarnation.fetch_add(1, Ordering::SeqCst);
        }
        println!("{faults} faults in {:?}", started.elapsed());
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
    (verdict, relay)
}

/// Fails the test unless `verdict` has 0 lost, 0 unexpected, 0 duplicated and no stuck sender,
/// and unless there was more traffic than faults.
pub fn assert_valid(verdict: &Verdict, faults: u64, seed: u64, relay: &Relay) {
    assert!(
        verdict.acked > faults as usize,
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
        tail(&relay.logs(), 60)
    );
}

/// A seed from the environment variable `name`, or the clock.
pub fn seed(name: &str) -> u64 {
    env_or(
        name,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
