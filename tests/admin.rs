//! The operator API through the real binary on real sockets: curl and ureq against the
//! loopback admin listener, and `relaybox admin` with its exit codes.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{next_event, Relay, PATIENCE};
use relaybox::client::connection::ClientError;
use relaybox::client::Event;
use relaybox::wire::messages::ErrorCode;

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";

/// `curl` of `url` with optional extra arguments; returns (HTTP status, body).
fn curl(url: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "-w", "\n%{http_code}", "--max-time", "20"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.trim().parse().expect("status"), body.to_owned())
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// GET (or another method) with the relay's token through ureq; returns (status, JSON).
fn api(relay: &Relay, method: &str, path: &str) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}{path}", relay.admin_url());
    let auth = format!("Bearer {}", relay.admin_token());
    let res = match method {
        "DELETE" => agent.delete(&url).header("Authorization", &auth).call(),
        _ => agent.get(&url).header("Authorization", &auth).call(),
    }
    .unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_api_refuses_a_missing_or_wrong_token_and_answers_json_errors_with_curl() {
    let relay = Relay::start();
    let base = relay.admin_url();
    let token = relay.admin_token();

    let (status, body) = curl(&format!("{base}/v1/stats"), &[]);
    assert_eq!(status, 401, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("missing bearer token"));

    let (status, body) = curl(&format!("{base}/v1/stats"), &["-H", &bearer("nottheone")]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("wrong bearer token"), "{body}");

    let (status, body) = curl(&format!("{base}/v1/stats"), &["-H", &bearer(&token)]);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    let (status, body) = curl(&format!("{base}/v1/nothing-here"), &["-H", &bearer(&token)]);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"not_found\""), "{body}");
    let (status, body) = curl(&format!("{base}/elsewhere"), &[]);
    assert_eq!(status, 404, "{body}");
    let (status, body) = curl(
        &format!("{base}/v1/stats"),
        &["-H", &bearer(&token), "-X", "POST"],
    );
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("does not accept POST"), "{body}");

    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("after=not-a-phone", "after"),
        ("colour=blue", "query"),
    ] {
        let (status, body) = curl(
            &format!("{base}/v1/accounts?{query}"),
            &["-H", &bearer(&token)],
        );
        assert_eq!(status, 400, "{query}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["parameter"], parameter, "{query}: {body}");
    }
    let (status, body) = curl(
        &format!("{base}/v1/accounts/%2B14155550101/devices/first"),
        &["-H", &bearer(&token), "-X", "DELETE"],
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"device\""), "{body}");

    // The token file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(relay.data_dir().join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn an_admin_listener_off_loopback_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::BIN)
        .args(["serve", "--set", "listen.admin=0.0.0.0:7790", "--set"])
        .arg(format!(
            "relay.data_dir={}",
            dir.path().join("data").display()
        ))
        .env_remove("RELAYBOX_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listen.admin") && err.contains("loopback"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn health_and_readiness_need_no_token() {
    let relay = Relay::start();
    let base = relay.admin_url();
    let (status, body) = curl(&format!("{base}/healthz"), &[]);
    assert_eq!((status, body.contains("alive")), (200, true), "{body}");
    let (status, body) = curl(&format!("{base}/readyz"), &[]);
    assert_eq!((status, body.contains("ready")), (200, true), "{body}");
}

#[tokio::test]
async fn accounts_stats_and_removing_a_device_closes_its_session() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    bob.conn().await.unwrap();
    // Bob is offline for alice's first message: it waits in his queue.
    drop(bob);
    alice.send_text(BOB, "queued for bob").await.unwrap();

    let (status, v) = api(&relay, "GET", "/v1/accounts");
    assert_eq!(status, 200, "{v}");
    let phones: Vec<&str> = v["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["phone"].as_str().unwrap())
        .collect();
    assert_eq!(phones, vec![ALICE, BOB]);
    let (_, page) = api(&relay, "GET", "/v1/accounts?limit=1");
    assert_eq!(page["accounts"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], ALICE);
    let (_, page2) = api(&relay, "GET", "/v1/accounts?limit=1&after=%2B14155550101");
    assert_eq!(page2["accounts"][0]["phone"], BOB);
    assert!(page2.get("next").is_none(), "{page2}");

    let (status, v) = api(&relay, "GET", "/v1/accounts/%2B14155550102");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["devices"][0]["device"], 0);
    assert_eq!(v["queued"], 1, "{v}");
    assert_eq!(v["devices"][0]["online"], false, "{v}");
    let (status, v) = api(&relay, "GET", "/v1/accounts/%2B14155550199");
    assert_eq!(status, 404, "{v}");

    let (status, v) = api(&relay, "GET", "/v1/stats");
    assert_eq!(status, 200);
    assert_eq!(v["accounts"], 2, "{v}");
    assert_eq!(v["devices"], 2, "{v}");
    assert_eq!(v["queue_depth"], 1, "{v}");
    assert!(v["connections"]["tcp"].as_i64().unwrap() >= 1, "{v}");

    // Alice's phone is connected; the operator removes it.
    alice.conn().await.unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_, v) = api(&relay, "GET", "/v1/accounts/%2B14155550101");
        if v["devices"][0]["online"] == true {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, v) = api(&relay, "DELETE", "/v1/accounts/%2B14155550101/devices/0");
    assert_eq!(status, 200, "{v}");
    let err = loop {
        match tokio::time::timeout(PATIENCE, alice.next_event())
            .await
            .unwrap()
        {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    let code = err
        .downcast_ref::<ClientError>()
        .and_then(|e| e.relay_code());
    assert_eq!(code, Some(ErrorCode::UnknownDevice), "{err:#}");
    let (status, _) = api(&relay, "GET", "/v1/accounts/%2B14155550101");
    assert_eq!(status, 404);
    let (status, _) = api(&relay, "DELETE", "/v1/accounts/%2B14155550101/devices/0");
    assert_eq!(status, 404);
}

#[tokio::test]
async fn metrics_parse_move_with_traffic_and_neither_they_nor_the_audit_log_hold_content() {
    let relay = Relay::start();
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let (status, before) = curl(&format!("{}/metrics", relay.admin_url()), &[]);
    assert_eq!(status, 200);
    let accepted = metric(&before, "relaybox_messages_accepted_total");
    // Every labelled series is there from the start, at zero until something happens.
    assert_eq!(
        metric(&before, "relaybox_connections{transport=\"ws\"}"),
        0.0
    );
    assert_eq!(
        metric(
            &before,
            "relaybox_handshakes_total{pattern=\"IK\",outcome=\"refused\"}"
        ),
        0.0
    );

    let canary = "canary-7f3a9 pistachio";
    alice.send_text(BOB, canary).await.unwrap();
    match next_event(&mut bob).await {
        Event::Message { .. } => {}
        other => panic!("expected the message, got {other:?}"),
    }
    // Leave time for bob's ack to reach the relay.
    let deadline = std::time::Instant::now() + PATIENCE;
    let after = loop {
        let (_, text) = curl(&format!("{}/metrics", relay.admin_url()), &[]);
        if metric(&text, "relaybox_messages_delivered_total") >= 1.0
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        metric(&after, "relaybox_messages_accepted_total"),
        accepted + 1.0
    );
    assert!(metric(&after, "relaybox_messages_delivered_total") >= 1.0);
    assert!(metric(&after, "relaybox_connections{transport=\"tcp\"}") >= 2.0);
    assert!(
        metric(
            &after,
            "relaybox_handshakes_total{pattern=\"XX\",outcome=\"ok\"}"
        ) >= 2.0
    );
    assert!(metric(&after, "relaybox_durability_barrier_latency_seconds_count") >= 1.0);
    for family in [
        "relaybox_queue_depth",
        "relaybox_accounts",
        "relaybox_blobs",
    ] {
        metric(&after, family);
    }
    // Every sample line is `name{labels} value` with a number; the exposition ends with EOF.
    for line in after.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("relaybox_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    assert!(after.ends_with("# EOF\n"));

    // Some admin actions to audit, then look for the canary everywhere the operator side writes.
    let _ = api(&relay, "GET", "/v1/accounts/%2B14155550102");
    let _ = curl(
        &format!("{}/v1/stats", relay.admin_url()),
        &["-H", &bearer("wrong")],
    );
    let audit = std::fs::read_to_string(relay.data_dir().join("audit.log")).unwrap();
    assert!(
        audit.contains("\"action\":\"GET /v1/accounts/{phone}\""),
        "{audit}"
    );
    assert!(audit.contains("\"phone\":\"+14155550102\""), "{audit}");
    assert!(audit.contains("\"who\":\"anonymous\""), "{audit}");
    assert!(audit.contains("\"outcome\":\"unauthorized\""), "{audit}");
    let (_, v) = api(&relay, "GET", "/v1/audit?limit=2");
    assert_eq!(v["entries"].as_array().unwrap().len(), 2, "{v}");
    assert!(!audit.contains("canary"), "{audit}");
    assert!(!after.contains("canary"));
    assert!(!serde_json::to_string(&v).unwrap().contains("canary"));
}

#[test]
fn relaybox_admin_prints_tables_and_exits_69_when_the_relay_is_down_and_1_on_a_bad_token() {
    let mut relay = Relay::start();
    let url = relay.admin_url();
    let data = relay.data_dir().display().to_string();
    let (code, out, err) = relay.cli(&["admin", "--admin", &url, "--data-dir", &data, "stats"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("queue_depth") && out.contains("connections.tcp"),
        "{out}"
    );
    let (code, out, _) = relay.cli(&[
        "admin",
        "--admin",
        &url,
        "--data-dir",
        &data,
        "--json",
        "accounts",
        "list",
    ]);
    assert_eq!(code, 0);
    assert!(
        serde_json::from_str::<serde_json::Value>(&out).is_ok(),
        "{out}"
    );
    let (code, out, _) = relay.cli(&["admin", "--admin", &url, "health"]);
    assert_eq!(code, 0);
    assert!(out.contains("ready: yes"), "{out}");
    let (code, _, err) = relay.cli(&[
        "admin",
        "--admin",
        &url,
        "--data-dir",
        &data,
        "accounts",
        "show",
        "+14155550177",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no account"), "{err}");

    let bad = relay.dir.path().join("bad.token");
    std::fs::write(&bad, "not-the-token").unwrap();
    let (code, _, err) = relay.cli(&[
        "admin",
        "--admin",
        &url,
        "--token-file",
        bad.to_str().unwrap(),
        "stats",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("wrong bearer token"), "{err}");

    let missing = relay.dir.path().join("missing.token");
    let (code, _, err) = relay.cli(&[
        "admin",
        "--admin",
        &url,
        "--token-file",
        missing.to_str().unwrap(),
        "stats",
    ]);
    assert_eq!(code, 64, "{err}");
    let (code, _, _) = relay.cli(&[
        "admin", "--admin", &url, "devices", "remove", ALICE, "first",
    ]);
    assert_eq!(code, 64);
    let (code, _, _) = relay.cli(&["admin", "--admin", "ftp://x", "--data-dir", &data, "stats"]);
    assert_eq!(code, 64);

    relay.stop();
    let (code, _, err) = relay.cli(&["admin", "--admin", &url, "--data-dir", &data, "stats"]);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("not running"), "{err}");
}

/// `/v1/stats` and `/metrics` read counts kept as things change (no scan per request); they
/// must agree with each other, follow registrations, queued and acknowledged messages and a
/// removed device, and come back the same after a restart.
#[tokio::test]
async fn stats_and_metrics_counts_follow_changes_and_a_restart() {
    let mut relay = Relay::start();
    let counts = |relay: &Relay| {
        let (status, v) = api(relay, "GET", "/v1/stats");
        assert_eq!(status, 200, "{v}");
        let (status, text) = curl(&format!("{}/metrics", relay.admin_url()), &[]);
        assert_eq!(status, 200);
        let from_stats =
            [&v["accounts"], &v["devices"], &v["queue_depth"]].map(|n| n.as_u64().unwrap());
        let from_metrics = [
            "relaybox_accounts",
            "relaybox_devices",
            "relaybox_queue_depth",
        ]
        .map(|s| metric(&text, s) as u64);
        assert_eq!(from_stats, from_metrics, "{v}\n{text}");
        from_stats
    };
    assert_eq!(counts(&relay), [0, 0, 0]);
    let mut alice = relay.user("alice", ALICE).await;
    let bob = relay.user("bob", BOB).await;
    assert_eq!(counts(&relay), [2, 2, 0]);
    // Bob is offline: two messages wait in his queue.
    drop(bob);
    alice.send_text(BOB, "one").await.unwrap();
    alice.send_text(BOB, "two").await.unwrap();
    assert_eq!(counts(&relay), [2, 2, 2]);
    drop(alice);

    relay.stop();
    relay.restart();
    assert_eq!(counts(&relay), [2, 2, 2], "after a restart");

    // Bob comes back and acknowledges both: his queue empties, and Alice (offline) gets a
    // delivered receipt queued for each. The count is always the sum of the device queues.
    let queued_of = |relay: &Relay, phone: &str| {
        let (status, v) = api(
            relay,
            "GET",
            &format!("/v1/accounts/{}", phone.replace('+', "%2B")),
        );
        match status {
            404 => 0,
            _ => v["queued"].as_u64().unwrap(),
        }
    };
    let home = relay.dir.path().join("client-bob");
    let mut bob = relaybox::client::Client::open(&home, Some(&relay.addr)).unwrap();
    for _ in 0..2 {
        match next_event(&mut bob).await {
            Event::Message { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    // The client acknowledges what it received when it next waits for an event.
    let deadline = std::time::Instant::now() + PATIENCE;
    while queued_of(&relay, BOB) != 0 {
        let more = common::quiet_for(&mut bob, Duration::from_millis(20)).await;
        assert!(more.is_none(), "{more:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "Bob's queue did not empty"
        );
    }
    drop(bob);
    let receipts = queued_of(&relay, ALICE);
    assert!(receipts >= 1, "no receipt waits for Alice");
    assert_eq!(counts(&relay), [2, 2, receipts]);
    let (status, v) = api(&relay, "DELETE", "/v1/accounts/%2B14155550102/devices/0");
    assert_eq!(status, 200, "{v}");
    assert_eq!(counts(&relay), [1, 1, receipts]);
    relay.stop();
    relay.restart();
    assert_eq!(counts(&relay), [1, 1, receipts], "after a second restart");
    assert_eq!(queued_of(&relay, ALICE), receipts);
}
