//! Upgrading: a data directory written by the release before the message log (queues and
//! dedupe records in sled trees) opens with this build, and what was queued is delivered.
//! The fixture was made with that release's binary by `tests/upgrade/make-fixture.sh`.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output, Stdio};

use common::{Relay, BIN};

/// Runs `relaybox client` as bob, from the fixture's home.
fn bob(relay: &Relay, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("client")
        .arg("--home")
        .arg(relay.dir.path().join("bob"))
        .args(["--relay", &relay.addr])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_message_queued_by_the_release_before_the_log_is_delivered_after_the_upgrade() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/upgrade/v0.1-queued.tar.gz"
    );
    let relay = Relay::start_prepared("", |r| {
        let out = Command::new("tar")
            .arg("-xzf")
            .arg(fixture)
            .arg("-C")
            .arg(r.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let out = bob(
        &relay,
        &["listen", "--json", "--count", "1", "--timeout", "20"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        relay.logs()
    );
    let v: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(v["event"], "message");
    assert_eq!(v["from"], "+14155550101");
    assert_eq!(v["payload"]["body"], "queued before the upgrade");
    // And a new message goes through the log.
    let out = bob(&relay, &["send", "+14155550101", "after the upgrade"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
