//! Abuse through the real binary: a spammer flooding strangers is banned within one
//! evaluation period; normal users chatting with mutual contacts never are (a mixed
//! population reports false positives and detection time); bans climb the ladder and survive
//! `kill -9`; rate limits answer RATE_LIMITED; a blocked sender cannot tell it is blocked;
//! bad operator input gets specific errors.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{quiet_for, Relay, BIN};
use relaybox::client::connection::ClientError;
use relaybox::client::{Client, Event};
use relaybox::wire::messages::{Error as WireError, ErrorCode, ReceiptKind};

/// The evaluation period of these tests.
const EVALUATE_EVERY: Duration = Duration::from_secs(1);
/// What the spam pattern needs before a ban (`abuse.min_messages`).
const MIN_MESSAGES: usize = 30;
const SPAM: &str = "Congratulations! You won a prize. Claim it at example.com/win";

fn config(ladder: &str) -> String {
    format!(
        "[limits]\nhandshakes_per_second_per_ip = 100000\nmax_connections_per_ip = 100000\n\n\
         [abuse]\nwindow = \"10m\"\nevaluate_every = \"1s\"\nwatch_evaluate_every = \"500ms\"\n\
         ban_ladder = {ladder}\nmin_messages = {MIN_MESSAGES}\n\
         sends_per_minute = 100000\nnew_conversations_per_minute = 100000\n"
    )
}

/// Registers `n` accounts `+1{prefix}{i:04}`, ten at a time.
async fn register_many(relay: &Relay, prefix: &str, n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    let phones: Vec<String> = (0..n).map(|i| format!("+1{prefix}{i:04}")).collect();
    for chunk in phones.chunks(10) {
        let batch = chunk.iter().map(|p| relay.user(&p[1..], p));
        out.extend(futures::future::join_all(batch).await);
    }
    out
}

fn phones(clients: &[Client]) -> Vec<String> {
    clients
        .iter()
        .map(|c| c.state.account.clone().unwrap())
        .collect()
}

fn relay_error(e: &anyhow::Error) -> Option<WireError> {
    e.chain()
        .find_map(|c| match c.downcast_ref::<ClientError>() {
            Some(ClientError::Relay(w)) => Some(w.clone()),
            _ => None,
        })
}

/// How a flood went.
struct Flood {
    /// Messages accepted before the ban.
    sent: usize,
    started: Instant,
    /// When the `MIN_MESSAGES`th message was accepted (the pattern could be judged).
    threshold: Option<Instant>,
    banned: Option<(Instant, WireError)>,
}

/// Sends the same text to each victim in turn until the relay refuses.
async fn flood(spammer: &mut Client, victims: &[String]) -> Flood {
    let mut f = Flood {
        sent: 0,
        started: Instant::now(),
        threshold: None,
        banned: None,
    };
    // A fast spammer may reach every victim before the next evaluation: it then tries again
    // once per evaluation period (one repeated peer leaves the pattern intact), for a while,
    // so that a slow evaluation on a loaded machine is waited for, not mistaken for a miss.
    let mut retries = 0;
    let mut next = 0;
    loop {
        let v = if next < victims.len() {
            next += 1;
            &victims[next - 1]
        } else if retries < 10 {
            retries += 1;
            tokio::time::sleep(EVALUATE_EVERY).await;
            &victims[0]
        } else {
            break;
        };
        match spammer.send_text(v, SPAM).await {
            Ok(_) => {
                f.sent += 1;
                if f.sent == MIN_MESSAGES {
                    f.threshold = Some(Instant::now());
                }
            }
            Err(e) => {
                let w = relay_error(&e).unwrap_or_else(|| panic!("not a relay error: {e:#}"));
                assert_eq!(w.code(), ErrorCode::Banned, "{w}");
                f.banned = Some((Instant::now(), w));
                return f;
            }
        }
    }
    f
}

/// `relaybox admin --admin URL <args>` against this relay.
fn admin(relay: &Relay, args: &[&str]) -> (i32, String, String) {
    let url = relay.admin_url();
    let mut all = vec!["admin", "--admin", url.as_str()];
    all.extend_from_slice(args);
    relay.cli(&all)
}

fn admin_json(relay: &Relay, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = admin(relay, &all);
    assert_eq!(code, 0, "{all:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn a_spammer_flooding_200_strangers_is_banned_within_one_evaluation_period() {
    let relay = Relay::start_with(&config("[\"1h\", \"6h\"]"));
    let t = Instant::now();
    let fresh = register_many(&relay, "415556", 200).await;
    println!("registered 200 fresh accounts in {:?}", t.elapsed());
    let mut spammer = relay.user("spammer", "+14155550199").await;
    let f = flood(&mut spammer, &phones(&fresh)).await;
    let (banned_at, err) = f.banned.expect("the spammer was never banned");
    // Banned either by the full evaluation once `min_messages` were sent, or earlier through
    // the watch list (watched at `watch_min_messages`, banned at `watched_min_messages`).
    let detection = f.threshold.map(|t| banned_at.saturating_duration_since(t));
    println!(
        "spammer: banned after {} of 200 messages, {:?} after the first; after the pattern met min_messages: {}",
        f.sent,
        banned_at - f.started,
        detection.map_or("earlier, through the watch list".into(), |d| format!("{d:?}"))
    );
    // One period, plus the time of the send that meets the ban.
    if let Some(d) = detection {
        assert!(d <= EVALUATE_EVERY + Duration::from_millis(700), "{d:?}");
    }
    assert!(
        banned_at - f.started <= EVALUATE_EVERY * 3,
        "{:?}",
        banned_at - f.started
    );
    assert!(f.sent < 200);
    assert!(!err.banned_forever);
    let left = err
        .banned_until_ms
        .saturating_sub(relaybox::clock::now_ms());
    assert!(
        (3_500_000..=3_600_000).contains(&left),
        "1 h ban, {left} ms left"
    );
    assert!(
        err.message.contains("banned for abuse until"),
        "{}",
        err.message
    );

    // The operator sees why.
    let (code, text, err) = admin(&relay, &["abuse", "show", "+14155550199"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("banned") && text.contains("spam pattern"),
        "{text}"
    );
    assert!(
        text.contains("0% to accounts that have it in their contacts"),
        "{text}"
    );
    let audit = std::fs::read_to_string(relay.data_dir().join("audit.log")).unwrap();
    assert!(
        audit.contains("\"who\":\"monitor\"") && audit.contains("\"action\":\"abuse ban\""),
        "{audit}"
    );
    let (_, metrics, _) = admin(&relay, &["metrics"]);
    assert!(metrics.contains("relaybox_bans 1"), "{metrics}");
    assert!(metrics.contains("relaybox_abuse_verdicts_total{verdict=\"ban\"} 1"));
}

#[tokio::test]
async fn a_mixed_population_has_no_false_positives_and_every_spammer_is_caught() {
    let relay = Relay::start_with(&config("[\"1h\"]"));
    let mut normal = register_many(&relay, "415557", 20).await;
    let people = phones(&normal);
    // Everyone knows everyone; each writes 40 different messages to 10 of them.
    for c in normal.iter_mut() {
        c.upload_contacts(&people).await.unwrap();
    }
    let mut spammers = register_many(&relay, "415558", 3).await;
    let fresh = phones(&register_many(&relay, "415559", 150).await);
    let chatters = async {
        for round in 0..40 {
            for (i, c) in normal.iter_mut().enumerate() {
                let to = &people[(i + 1 + round % 10) % people.len()];
                let text = format!("round {round}: {}", "x".repeat((i * 7 + round * 13) % 90));
                c.send_text(to, &text).await.unwrap();
            }
        }
    };
    let floods = futures::future::join_all(
        spammers
            .iter_mut()
            .zip(fresh.chunks(50))
            .map(|(s, victims)| flood(s, victims)),
    );
    let ((), floods) = tokio::join!(chatters, floods);
    // Give the monitor two more periods to (wrongly) flag a normal user.
    tokio::time::sleep(EVALUATE_EVERY * 2).await;
    let list = admin_json(&relay, &["abuse", "list", "--limit", "1000"]);
    let flagged: Vec<&str> = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verdict"] != "none")
        .map(|r| r["account"].as_str().unwrap())
        .collect();
    let false_positives = flagged
        .iter()
        .filter(|a| people.iter().any(|p| p == *a))
        .count();
    let detections: Vec<Duration> = floods
        .iter()
        .map(|f| f.banned.as_ref().expect("a spammer was not banned").0 - f.started)
        .collect();
    println!(
        "mixed population: 20 normal users (800 messages to mutual contacts), 3 spammers (50 strangers each): \
         false positives {false_positives}, spammers banned {}/3, detection time from first spam {:?}, messages accepted before the ban {:?}",
        floods.iter().filter(|f| f.banned.is_some()).count(),
        detections,
        floods.iter().map(|f| f.sent).collect::<Vec<_>>()
    );
    assert_eq!(false_positives, 0, "flagged: {flagged:?}");
    for f in &floods {
        assert!(f.sent < 50, "a spammer reached every victim");
    }
}

#[tokio::test]
async fn a_second_offence_gets_a_longer_ban_than_the_first_per_the_ladder() {
    let relay = Relay::start_with(&config("[\"2s\", \"4s\"]"));
    let victims = phones(&register_many(&relay, "415560", 45).await);
    let mut spammer = relay.user("spammer", "+14155550198").await;
    let mut lengths = Vec::new();
    for offence in 1..=2 {
        let f = flood(&mut spammer, &victims).await;
        let (_, err) = f
            .banned
            .unwrap_or_else(|| panic!("offence {offence}: not banned"));
        let show = admin_json(&relay, &["abuse", "show", "+14155550198"]);
        assert_eq!(show["ban"]["offence"], offence);
        let ban = &show["ban"];
        lengths.push(ban["until_ms"].as_u64().unwrap() - ban["since_ms"].as_u64().unwrap());
        assert_eq!(ban["until_ms"].as_u64().unwrap(), err.banned_until_ms);
        // Wait out the ban.
        let wait = err
            .banned_until_ms
            .saturating_sub(relaybox::clock::now_ms());
        tokio::time::sleep(Duration::from_millis(wait + 200)).await;
    }
    assert_eq!(lengths, vec![2_000, 4_000]);
    let show = admin_json(&relay, &["abuse", "show", "+14155550198"]);
    let kinds: Vec<&str> = show["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "ban").count(),
        2,
        "{kinds:?}"
    );
    // Served: the account may send again.
    spammer.send_text(&victims[0], "sorry").await.unwrap();
}

#[tokio::test]
async fn a_ban_survives_kill_9_and_a_banned_number_cannot_register_again() {
    let mut relay = Relay::start_with(&config("[\"1h\"]"));
    let victims = phones(&register_many(&relay, "415561", 40).await);
    let mut spammer = relay.user("spammer", "+14155550197").await;
    let f = flood(&mut spammer, &victims).await;
    let (_, before) = f.banned.expect("not banned");
    relay.kill9();
    relay.restart();
    spammer.disconnect();
    // The first reconnect after a crash may meet a dead socket; what matters is the answer.
    let mut e = spammer.send_text(&victims[0], SPAM).await.unwrap_err();
    if relay_error(&e).is_none() {
        println!("first send after the restart failed below the relay protocol: {e:#}");
        spammer.disconnect();
        e = spammer.send_text(&victims[0], SPAM).await.unwrap_err();
    }
    let after = relay_error(&e).unwrap_or_else(|| panic!("{e:#}\n{}", relay.logs()));
    assert_eq!(after.code(), ErrorCode::Banned);
    assert_eq!(after.banned_until_ms, before.banned_until_ms);
    // Registering the number again (a new install) is refused with the same error.
    let mut again = Client::open(&relay.dir.path().join("again"), Some(&relay.addr)).unwrap();
    let e = again.register("+14155550197").await.unwrap_err();
    assert_eq!(relay_error(&e).unwrap().code(), ErrorCode::Banned, "{e:#}");
    // Lifted by the operator, the account sends again; the lift is audited.
    let (code, out, err) = admin(&relay, &["abuse", "lift", "+14155550197"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Lifted"), "{out}");
    spammer.send_text(&victims[0], "sorry").await.unwrap();
    let audit = std::fs::read_to_string(relay.data_dir().join("audit.log")).unwrap();
    assert!(audit.contains("POST /v1/abuse/{account}/lift"), "{audit}");
}

#[tokio::test]
async fn going_over_a_rate_limit_answers_rate_limited_with_a_retry_after() {
    let relay =
        Relay::start_with("[abuse]\nsends_per_minute = 5\nnew_conversations_per_minute = 2\n");
    let mut alice = relay.user("alice", "+14155550101").await;
    relay.user("bob", "+14155550102").await;
    let mut eve = relay.user("eve", "+14155550105").await;
    let others = phones(&register_many(&relay, "415562", 3).await);
    for i in 0..5 {
        alice
            .send_text("+14155550102", &format!("{i}"))
            .await
            .unwrap();
    }
    let e = alice.send_text("+14155550102", "six").await.unwrap_err();
    let w = relay_error(&e).unwrap();
    assert_eq!(w.code(), ErrorCode::RateLimited, "{w}");
    assert!(w.retry_after_ms > 0 && w.retry_after_ms <= 60_000, "{w:?}");
    // New conversations: two, then the third stranger is refused.
    eve.send_text(&others[0], "hi").await.unwrap();
    eve.send_text(&others[1], "hi").await.unwrap();
    let e = eve.send_text(&others[2], "hi").await.unwrap_err();
    let w = relay_error(&e).unwrap();
    assert_eq!(w.code(), ErrorCode::RateLimited, "{w}");
    assert!(w.retry_after_ms > 0);
    // An existing conversation is not a new one.
    eve.send_text(&others[0], "again").await.unwrap();
    // The CLI says so and exits non-zero.
    let home = relay.dir.path().join("client-alice");
    let out = std::process::Command::new(BIN)
        .args(["client", "--home"])
        .arg(&home)
        .args(["send", "+14155550102", "seven"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("RATE_LIMITED") && err.contains("retry in"),
        "{err}"
    );
}

#[tokio::test]
async fn a_mismatched_devices_retry_costs_one_send_token_not_two() {
    let relay =
        Relay::start_with("[abuse]\nsends_per_minute = 3\nnew_conversations_per_minute = 100\n");
    let mut alice = relay.user("alice", "+14155550101").await;
    let mut bob = relay.user("bob", "+14155550102").await;
    alice.send_text("+14155550102", "one").await.unwrap();
    // Bob links a second device: Alice's next send names only the first, is answered
    // MISMATCHED_DEVICES, and the client retries with both.
    let mut laptop = Client::open(&relay.dir.path().join("bob-laptop"), Some(&relay.addr)).unwrap();
    let code = laptop.pairing_code().unwrap();
    let (linked, sent) = tokio::join!(laptop.await_link(Duration::from_secs(20)), bob.link(&code));
    linked.unwrap();
    sent.unwrap();
    alice.send_text("+14155550102", "two").await.unwrap();
    // The third send still has its token: the refused attempt of "two" took none.
    alice.send_text("+14155550102", "three").await.unwrap();
    let e = alice.send_text("+14155550102", "four").await.unwrap_err();
    let w = relay_error(&e).unwrap();
    assert_eq!(w.code(), ErrorCode::RateLimited, "{w}");
}

#[tokio::test]
async fn a_blocked_sender_cannot_tell_it_is_blocked() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", "+14155550101").await;
    let mut bob = relay.user("bob", "+14155550102").await;
    let mut carol = relay.user("carol", "+14155550103").await;
    for (c, other) in [(&mut alice, "+14155550102"), (&mut bob, "+14155550101")] {
        c.upload_contacts(&[other.into()]).await.unwrap();
    }
    alice
        .upload_contacts(&["+14155550102".into(), "+14155550103".into()])
        .await
        .unwrap();
    assert_eq!(
        bob.block("+14155550101", true).await.unwrap(),
        vec!["+14155550101"]
    );
    // What alice was told before the block (bob's presence) is not what this test is about.
    while quiet_for(&mut alice, Duration::from_millis(500))
        .await
        .is_some()
    {}
    // Carol is offline and blocks nobody; bob blocks alice, and comes online again.
    carol.disconnect();
    bob.disconnect();
    let to_carol = alice.send_text("+14155550103", "hello carol").await;
    let to_bob = alice.send_text("+14155550102", "hello bob").await;
    assert!(
        to_carol.is_ok() && to_bob.is_ok(),
        "{to_carol:?} {to_bob:?}"
    );
    let bob_online_now = async {
        bob.status().await.unwrap();
        bob.chat_state(
            "+14155550101",
            relaybox::wire::messages::ChatState::Composing,
        )
        .await
        .unwrap();
    };
    bob_online_now.await;
    // Alice sees the same for both: an ack and no receipt, no presence, no typing.
    let mut seen = Vec::new();
    while let Some(e) = quiet_for(&mut alice, Duration::from_secs(2)).await {
        seen.push(format!("{e:?}"));
    }
    assert!(
        !seen
            .iter()
            .any(|e| e.contains("Receipt") || e.contains("Presence") || e.contains("ChatState")),
        "alice observed {seen:?}"
    );
    while let Some(e) = quiet_for(&mut bob, Duration::from_millis(500)).await {
        assert!(!matches!(e, Event::Message { .. }), "the blocker got {e:?}");
    }
    // Carol comes online: her message arrives and alice gets the receipt; bob's never does.
    carol.status().await.unwrap();
    let mut delivered = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !delivered && Instant::now() < deadline {
        let _ = quiet_for(&mut carol, Duration::from_millis(200)).await;
        if let Some(Event::Receipt { from, kind, .. }) =
            quiet_for(&mut alice, Duration::from_millis(200)).await
        {
            assert_eq!(from, "+14155550103", "a receipt from the blocker");
            delivered = kind == ReceiptKind::Delivered;
        }
    }
    assert!(
        delivered,
        "no receipt from the offline, non-blocking recipient"
    );
    // Unblocked, alice's next message reaches bob.
    bob.block("+14155550101", false).await.unwrap();
    assert!(bob.blocked().await.unwrap().is_empty());
    alice
        .send_text("+14155550102", "hello again")
        .await
        .unwrap();
    let got = loop {
        match common::next_event(&mut bob).await {
            Event::Message { from, .. } => break from,
            _ => continue,
        }
    };
    assert_eq!(got, "+14155550101");
    // Bad input to block: itself, an unknown account.
    let e = bob.block("+14155550102", true).await.unwrap_err();
    assert_eq!(relay_error(&e).unwrap().code(), ErrorCode::InvalidArgument);
    let e = bob.block("+14155550177", true).await.unwrap_err();
    assert_eq!(relay_error(&e).unwrap().code(), ErrorCode::UnknownAccount);
}

#[tokio::test]
async fn bad_operator_input_gets_a_specific_error_and_a_non_zero_exit() {
    let relay = Relay::start();
    relay.user("alice", "+14155550101").await;
    let (code, _, err) = admin(&relay, &["abuse", "show", "+14155550177"]);
    assert_eq!(code, 1);
    assert!(err.contains("no account +14155550177"), "{err}");
    let (code, _, err) = admin(&relay, &["abuse", "lift", "+14155550101"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("neither banned nor on the watch list"),
        "{err}"
    );
    let (code, _, err) = admin(&relay, &["abuse", "show", "not-a-number"]);
    assert_eq!(code, 1);
    assert!(err.contains("account"), "{err}");
    let (code, _, err) = admin(&relay, &["abuse", "list", "--verdict", "naughty"]);
    assert_eq!(code, 1);
    assert!(err.contains("verdict"), "{err}");
    let (code, out, err) = admin(&relay, &["abuse", "watch", "+14155550101"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("watch list"));
    let (code, _, err) = admin(&relay, &["abuse", "watch", "+14155550101"]);
    assert_eq!(code, 1);
    assert!(err.contains("already on the watch list"), "{err}");

    // A malformed ladder is a config error: exit 64 before anything starts.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[abuse]\nban_ladder = [\"1h\", \"soon\", \"permanent\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(dir.path().join("bad.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("abuse.ban_ladder") && err.contains("step 2"),
        "{err}"
    );
}
