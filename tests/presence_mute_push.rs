//! Presence stays inside its boundary; mutes (explicit, forever, proportional, expiring); push
//! notifications to a local HTTP receiver carry no content, and a dead endpoint loses nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{next_event, quiet_for, Relay};
use relaybox::client::settings::MuteFor;
use relaybox::client::{Client, Event};
use relaybox::wire::messages::PresencePrivacy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";
const CAROL: &str = "+14155550103";
const DAVE: &str = "+14155550104";

/// The next presence event about `who`, skipping everything else.
async fn presence_of(c: &mut Client, who: &str, wait: Duration) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match quiet_for(c, left).await {
            None => return None,
            Some(Event::Presence {
                account, available, ..
            }) if account == who => return Some(available),
            Some(_) => {}
        }
    }
}

#[tokio::test]
async fn presence_reaches_only_contacts_that_the_privacy_setting_allows() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let mut carol = relay.user("carol", CAROL).await;
    let mut dave = relay.user("dave", DAVE).await;
    // Alice and Bob have each other; Carol has Alice (one way); Dave has nobody.
    alice.upload_contacts(&[BOB.into()]).await.unwrap();
    bob.upload_contacts(&["(415) 555-0101".into()])
        .await
        .unwrap();
    carol.upload_contacts(&[ALICE.into()]).await.unwrap();
    // The upload answers with the current presence Bob may see: Alice is online.
    assert_eq!(
        presence_of(&mut bob, ALICE, Duration::from_secs(5)).await,
        Some(true)
    );
    while quiet_for(&mut carol, Duration::from_millis(200))
        .await
        .is_some()
    {}
    alice.disconnect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        presence_of(&mut bob, ALICE, Duration::from_secs(5)).await,
        Some(false),
        "bob sees alice leave"
    );

    // Default privacy (contacts): only the mutual contact sees Alice come online.
    alice.conn().await.unwrap();
    assert_eq!(
        presence_of(&mut bob, ALICE, Duration::from_secs(5)).await,
        Some(true)
    );
    assert_eq!(
        presence_of(&mut carol, ALICE, Duration::from_millis(700)).await,
        None,
        "one-way contact sees nothing"
    );
    assert_eq!(
        presence_of(&mut dave, ALICE, Duration::from_millis(300)).await,
        None,
        "a stranger sees nothing"
    );

    // Everyone who has her: Carol now sees her too.
    alice.set_privacy(PresencePrivacy::Everyone).await.unwrap();
    alice.disconnect();
    assert_eq!(
        presence_of(&mut carol, ALICE, Duration::from_secs(5)).await,
        Some(false)
    );
    assert_eq!(
        presence_of(&mut dave, ALICE, Duration::from_millis(300)).await,
        None,
        "still nothing for a stranger"
    );

    // Nobody: not even Bob.
    alice.set_privacy(PresencePrivacy::Nobody).await.unwrap();
    alice.disconnect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    while quiet_for(&mut bob, Duration::from_millis(300))
        .await
        .is_some()
    {}
    alice.conn().await.unwrap();
    assert_eq!(
        presence_of(&mut bob, ALICE, Duration::from_millis(700)).await,
        None
    );

    // A fresh session of Bob gets the last-seen of contacts that allow it.
    alice.set_privacy(PresencePrivacy::Contacts).await.unwrap();
    alice.disconnect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.disconnect();
    bob.conn().await.unwrap();
    match presence_of(&mut bob, ALICE, Duration::from_secs(5)).await {
        Some(false) => {}
        other => panic!("expected alice's last-seen on login, got {other:?}"),
    }
}

/// Registers `n` extra accounts named +1415556xxxx.
async fn crowd(relay: &Relay, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let phone = format!("+1415556{i:04}");
        relay.user(&format!("crowd{i}"), &phone).await;
        out.push(phone);
    }
    out
}

#[tokio::test]
async fn a_group_mute_without_an_end_lasts_in_proportion_to_the_group_size() {
    // Fifty registrations from one address in a burst: a test, not an attack.
    let relay = Relay::start_with("[limits]\nhandshakes_per_second_per_ip = 10000\n");
    let mut alice = relay.user("alice", ALICE).await;
    let people = crowd(&relay, 49).await;
    let small = alice
        .create_group("small", &people[..2])
        .await
        .unwrap()
        .group;
    let big = alice.create_group("big", &people).await.unwrap().group;
    let now = relaybox::clock::now_ms();
    let s = alice.mute(&small, MuteFor::Default).await.unwrap();
    let b = alice.mute(&big, MuteFor::Default).await.unwrap();
    let (s, b) = ((s.until_ms - now) as f64, (b.until_ms - now) as f64);
    // 10 minutes per participant: 3 → 30 min, 50 → 500 min.
    assert!((s / 60_000.0 - 30.0).abs() < 1.0, "3 members: {s} ms");
    assert!((b / 60_000.0 - 500.0).abs() < 1.0, "50 members: {b} ms");
    assert!((b / s - 50.0 / 3.0).abs() < 0.1, "ratio {}", b / s);
}

#[tokio::test]
async fn muted_deliveries_carry_the_flag_and_a_mute_expires_on_its_own() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let muted_flag = |e: Event| match e {
        Event::Message { muted, .. } => muted,
        other => panic!("expected a message, got {other:?}"),
    };
    let m = bob.mute(ALICE, MuteFor::Default).await.unwrap();
    assert!(m.forever, "a 1:1 mute without an end lasts until unmuted");
    alice.send_text(BOB, "quiet").await.unwrap();
    assert!(muted_flag(next_event(&mut bob).await));
    bob.unmute(ALICE).await.unwrap();
    alice.send_text(BOB, "loud").await.unwrap();
    assert!(!muted_flag(next_event(&mut bob).await));
    let until = relaybox::clock::now_ms() + 1_000;
    bob.mute(ALICE, MuteFor::Until(until)).await.unwrap();
    alice.send_text(BOB, "still quiet").await.unwrap();
    assert!(muted_flag(next_event(&mut bob).await));
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    alice.send_text(BOB, "mute over").await.unwrap();
    assert!(
        !muted_flag(next_event(&mut bob).await),
        "an expired mute no longer applies"
    );
    let e = bob
        .mute("g00000000000000000000000000000000", MuteFor::Default)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("UNKNOWN_GROUP"), "{e:#}");
}

/// A one-shot HTTP receiver: returns the port and a handle yielding the first request's body.
async fn receiver() -> (u16, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= head_end + 4 + len {
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .unwrap();
                    return text;
                }
            }
            if n == 0 {
                return text;
            }
        }
    });
    (port, handle)
}

/// Lets push endpoints name loopback (the tests' receivers).
const LOOPBACK_PUSH: &str = "[push]\nallowed_hosts = [\"127.0.0.1\"]\n";

#[tokio::test]
async fn an_offline_device_is_woken_by_a_push_that_carries_no_content() {
    // The test's receiver is on loopback, which the operator must allow explicitly.
    let relay = Relay::start_with(LOOPBACK_PUSH);
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let mut carol = relay.user("carol", CAROL).await;
    let (port, got) = receiver().await;
    bob.register_push(Some(&format!("http://127.0.0.1:{port}/up/bob")))
        .await
        .unwrap();
    bob.disconnect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    alice.send_text(BOB, "the secret words").await.unwrap();
    let request = tokio::time::timeout(common::PATIENCE, got)
        .await
        .unwrap()
        .unwrap();
    assert!(request.starts_with("POST /up/bob "), "{request}");
    let body = &request[request.find("\r\n\r\n").unwrap() + 4..];
    let n: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(n["waiting"], true);
    assert_eq!(n["muted"], false);
    assert_eq!(n["relay"], relay.addr.as_str());
    assert!(
        !request.contains("secret") && !request.contains(ALICE),
        "no content, no sender: {request}"
    );
    // A muted thread wakes silently.
    let (port, got) = receiver().await;
    carol
        .register_push(Some(&format!("http://127.0.0.1:{port}/up/carol")))
        .await
        .unwrap();
    carol.mute(ALICE, MuteFor::Forever).await.unwrap();
    carol.disconnect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    alice.send_text(CAROL, "hush").await.unwrap();
    let request = tokio::time::timeout(common::PATIENCE, got)
        .await
        .unwrap()
        .unwrap();
    let body = &request[request.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(body).unwrap()["muted"],
        true
    );
    // The message itself waits in the queue.
    assert!(matches!(next_event(&mut bob).await, Event::Message { .. }));
}

#[tokio::test]
async fn a_dead_push_endpoint_never_blocks_or_loses_a_message() {
    let relay = Relay::start_with(LOOPBACK_PUSH);
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    bob.register_push(Some(&format!("http://127.0.0.1:{dead}/gone")))
        .await
        .unwrap();
    let e = bob.register_push(Some("ftp://example")).await.unwrap_err();
    assert!(format!("{e:#}").contains("INVALID_ARGUMENT"), "{e:#}");
    bob.disconnect();
    let started = std::time::Instant::now();
    for i in 0..3 {
        alice.send_text(BOB, &format!("m{i}")).await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "sends were not held up by the dead endpoint"
    );
    for _ in 0..3 {
        assert!(matches!(next_event(&mut bob).await, Event::Message { .. }));
    }
    assert!(
        relay.logs().contains("Push notification failed."),
        "the failure is logged"
    );
}

#[tokio::test]
async fn push_endpoints_on_loopback_link_local_or_the_relays_own_ports_are_refused() {
    let relay = Relay::start();
    let mut bob = relay.user("bob", BOB).await;
    for (url, needle) in [
        ("http://127.0.0.1:9/x", "loopback address 127.0.0.1"),
        ("http://localhost:9/x", "loopback address"),
        ("http://[::1]:9/x", "loopback address ::1"),
        (
            "http://169.254.169.254/latest/meta-data",
            "link-local address 169.254.169.254",
        ),
        ("http://0.0.0.0:9/x", "not a unicast address"),
        ("http://no-such-host.invalid/x", "does not resolve"),
    ] {
        let e = bob.register_push(Some(url)).await.unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("INVALID_ARGUMENT") && e.contains(needle),
            "{url}: {e}"
        );
    }
    // An allow-list admits only its hosts, and never the relay's own listeners.
    let relay = Relay::start_with(LOOPBACK_PUSH);
    let mut bob = relay.user("bob", BOB).await;
    let e = bob
        .register_push(Some("https://ntfy.example.org/up"))
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("not in push.allowed_hosts"),
        "{e:#}"
    );
    let admin = format!("http://{}/v1/accounts", relay.admin_addr);
    let e = bob.register_push(Some(&admin)).await.unwrap_err();
    assert!(
        format!("{e:#}").contains("the relay's own listener"),
        "{e:#}"
    );
    let http = format!("http://{}/v1/ws", relay.http_addr);
    let e = bob.register_push(Some(&http)).await.unwrap_err();
    assert!(
        format!("{e:#}").contains("the relay's own listener"),
        "{e:#}"
    );
    assert!(relay.logs().contains("Push endpoint refused."));
}
