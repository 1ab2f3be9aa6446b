//! A device that logs in and then never reads, through the real binary: the relay pushes it at
//! most its delivery window (the session's push channel is bounded, writes have a deadline),
//! closes it at the deadline, serves everyone else with low latency meanwhile, and loses
//! nothing queued for it: the device gets every message, in order, when it reconnects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{next_event, Relay, PATIENCE};
use relaybox::client::Event;

const ALICE: &str = "+14155550401";
const BOB: &str = "+14155550402";
const CAROL: &str = "+14155550403";
/// Messages queued for the stuck device, and their size: well past its delivery window (64)
/// and past what loopback socket buffers hold.
const FLOOD: usize = 120;
const BODY_BYTES: usize = 20_000;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_device_that_never_reads_is_closed_at_the_deadline_others_are_unaffected_and_nothing_is_lost(
) {
    let relay = Relay::start_with(
        "[limits]\nidle_timeout = \"8s\"\nping_interval = \"1s\"\nwrite_timeout = \"2s\"\n",
    );
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let mut carol = relay.user("carol", CAROL).await;
    // Bob's session is open (a fresh one, so the log names it); from here on nothing reads it.
    bob.disconnect();
    bob.conn().await.unwrap();
    let stuck_since = Instant::now();
    let rss_before = rss_kib(relay.pid());

    let mut sent = Vec::new();
    for i in 0..FLOOD {
        let body = format!("{i:05} {}", "x".repeat(BODY_BYTES));
        sent.push(alice.send_text(BOB, &body).await.unwrap().0);
    }
    let rss_after = rss_kib(relay.pid());

    // Others are unaffected while bob is stuck: carol's messages arrive quickly. (Carol sat
    // idle through the flood, so her first session may have hit the idle deadline too.)
    carol.disconnect();
    carol.conn().await.unwrap();
    let mut latencies = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        let (id, _) = alice.send_text(CAROL, &format!("ping {i}")).await.unwrap();
        match next_event(&mut carol).await {
            Event::Message { msg_id, .. } => assert_eq!(msg_id, id),
            other => panic!("expected carol's message, got {other:?}"),
        }
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let (median, worst) = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    println!(
        "never-reading client: {FLOOD} x {BODY_BYTES} B queued; relay RSS {rss_before} KiB -> \
         {rss_after} KiB; latency to another device median {median:?}, worst {worst:?}"
    );
    // Each includes an Olm encryption and an fsync in a debug build on a shared machine.
    assert!(
        median < Duration::from_secs(1),
        "other devices slowed to {median:?}"
    );
    assert!(
        worst < Duration::from_secs(3),
        "other devices slowed to {worst:?}"
    );

    // The relay closes the stuck session at a deadline (write or idle: 8 s idle, checked every
    // 1 s ping tick, a write may take 2 s more), measured from the relay's own log.
    let limit = Duration::from_secs(8 + 1 + 2 + 1);
    let open_for = loop {
        if let Some(d) = session_lifetime(&relay.logs(), BOB) {
            break d;
        }
        assert!(
            stuck_since.elapsed() < limit + PATIENCE,
            "the stuck session was not closed:\n{}",
            relay
                .logs()
                .lines()
                .filter(|l| l.contains("Session"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("never-reading client: its session was closed after {open_for:?}");
    assert!(
        open_for <= limit,
        "closed after {open_for:?}, deadline {limit:?}"
    );

    // Nothing was lost: on reconnect bob gets every message, in order, once.
    bob.disconnect();
    let mut got = Vec::new();
    let until = Instant::now() + PATIENCE * 3;
    let mut reconnects = 0;
    while got.len() < FLOOD && Instant::now() < until {
        match tokio::time::timeout(PATIENCE, bob.next_event()).await {
            Ok(Ok(Event::Message { msg_id, .. })) => got.push(msg_id),
            Ok(Ok(_)) => {}
            // The SDK reconnects on the next call, as an app would.
            Ok(Err(e)) => {
                reconnects += 1;
                println!("never-reading client: bob's reconnected session ended: {e:#}");
                assert!(reconnects < 5, "bob cannot stay connected");
            }
            Err(_) => panic!("bob got {} of {FLOOD} messages", got.len()),
        }
    }
    got.dedup();
    let closes: Vec<_> = relay
        .logs()
        .lines()
        .filter(|l| l.contains("Session closed."))
        .map(str::to_owned)
        .collect();
    println!(
        "never-reading client: relay closed sessions:\n{}",
        closes.join("\n")
    );
    assert_eq!(got, sent, "bob's messages after reconnecting");
}

/// From the log: how long the first device session of `account` lived until the relay closed
/// it on a deadline.
fn session_lifetime(logs: &str, account: &str) -> Option<Duration> {
    let field = |line: &str, key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_owned)
    };
    let at = |line: &str| humantime::parse_rfc3339(line.split_whitespace().next()?).ok();
    let start = logs
        .lines()
        .find(|l| l.contains("Session started.") && l.contains(account))?;
    let peer = field(start, "peer=")?;
    let end = logs.lines().find(|l| {
        l.contains("Session closed.")
            && l.contains("timed out")
            && field(l, "peer=").as_deref() == Some(peer.as_str())
    })?;
    at(end)?.duration_since(at(start)?).ok()
}
