//! Trust in a correspondent's keys, through the binary as two people use it: the safety
//! number both sides compare, a reinstall that changes it, the warning, and the refusal of the
//! new key, both ways, until the person accepts it; then the held message opens.

#![allow(clippy::unwrap_used)]

mod common;

use common::{output_text, Relay};
use serde_json::Value;

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";

/// Runs a client command that must succeed; answers its stdout.
fn ok(relay: &Relay, home: &str, args: &[&str]) -> String {
    let out = relay.client_cli(home, args);
    assert!(
        out.status.success(),
        "{home} {args:?} failed: {}",
        output_text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a client command that must fail; answers its stderr.
fn refused(relay: &Relay, home: &str, args: &[&str]) -> String {
    let out = relay.client_cli(home, args);
    assert!(
        !out.status.success(),
        "{home} {args:?} should have failed: {}",
        output_text(&out)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn verify(relay: &Relay, home: &str, peer: &str) -> Value {
    serde_json::from_str(&ok(relay, home, &["verify-contact", peer, "--json"])).unwrap()
}

/// JSON events printed by `listen --json`.
fn events(relay: &Relay, home: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["listen", "--json"];
    all.extend_from_slice(args);
    ok(relay, home, &all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Whether a message with this text is among the events.
fn said(events: &[Value], text: &str) -> bool {
    events
        .iter()
        .any(|e| e["event"] == "message" && e["payload"]["body"] == text)
}

/// Alice and Bob, who have each other as contacts and have exchanged one message.
fn alice_and_bob() -> Relay {
    let relay = Relay::start();
    relay.cli_user("alice", ALICE);
    relay.cli_user("bob", BOB);
    ok(&relay, "alice", &["contacts", BOB]);
    ok(&relay, "bob", &["contacts", ALICE]);
    ok(&relay, "alice", &["send", BOB, "hello bob"]);
    let got = events(&relay, "bob", &["--count", "1", "--timeout", "20"]);
    assert!(said(&got, "hello bob"), "{got:?}");
    ok(&relay, "bob", &["send", ALICE, "hello alice"]);
    let got = events(&relay, "alice", &["--count", "1", "--timeout", "20"]);
    assert!(said(&got, "hello alice"), "{got:?}");
    relay
}

#[test]
fn both_sides_see_one_safety_number_and_a_reinstall_changes_it_until_accepted() {
    let relay = alice_and_bob();
    let by_alice = verify(&relay, "alice", BOB);
    let by_bob = verify(&relay, "bob", ALICE);
    let number = by_alice["safety_number"].as_str().unwrap().to_owned();
    assert_eq!(number.len(), 60, "{by_alice}");
    assert_eq!(by_bob["safety_number"], by_alice["safety_number"]);
    assert_eq!(by_alice["changed"], false);
    assert!(by_alice["qr"].as_str().unwrap().ends_with(&number));
    // The text form shows the digits in groups and a QR code drawn in the terminal.
    let shown = ok(&relay, "alice", &["verify-contact", BOB]);
    assert!(
        shown.contains(&number[..5]) && shown.contains('█'),
        "{shown}"
    );

    // Bob reinstalls: a new phone registers the same number, with new keys.
    relay.cli_user("bob-new", BOB);

    // Alice hears of the device change; her next message first checks Bob's key, and is refused.
    let got = events(&relay, "alice", &["--timeout", "2"]);
    assert!(
        got.iter()
            .any(|e| e["event"] == "devices_changed" && e["account"] == BOB),
        "{got:?}"
    );
    let err = refused(&relay, "alice", &["send", BOB, "still there?"]);
    assert!(
        err.contains(&format!("the safety number with {BOB} changed"))
            && err.contains("reinstalled")
            && err.contains(&format!("relaybox client accept-key {BOB}")),
        "{err}"
    );
    // Refused again without asking the relay: the change stays until accepted.
    refused(&relay, "alice", &["send", BOB, "still there?"]);

    // The new number differs from the old one, is the same on both sides, and names the
    // changed device.
    let by_alice = verify(&relay, "alice", BOB);
    let by_new_bob = verify(&relay, "bob-new", ALICE);
    assert_ne!(by_alice["safety_number"], number.as_str());
    assert_eq!(by_alice["safety_number"], by_new_bob["safety_number"]);
    assert_eq!(by_alice["changed"], true);
    let changed: Vec<&Value> = by_alice["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == "changed")
        .collect();
    assert_eq!(changed.len(), 1, "{by_alice}");
    assert_eq!(changed[0]["account"], BOB);

    // Alice accepts: messages flow again, on a session with the new key.
    let accepted = ok(&relay, "alice", &["accept-key", BOB]);
    assert!(accepted.contains("Accepted the new key"), "{accepted}");
    ok(&relay, "alice", &["send", BOB, "welcome back"]);
    let got = events(&relay, "bob-new", &["--count", "1", "--timeout", "20"]);
    assert!(said(&got, "welcome back"), "{got:?}");
    assert_eq!(verify(&relay, "alice", BOB)["changed"], false);
}

#[test]
fn a_message_from_a_changed_key_is_held_until_accepted_and_then_opens() {
    let relay = alice_and_bob();
    relay.cli_user("bob-new", BOB);
    // The reinstalled Bob writes first: his pre-key message names a new identity key.
    ok(&relay, "bob-new", &["send", ALICE, "new phone, same bob"]);
    let got = events(&relay, "alice", &["--timeout", "3"]);
    assert!(
        got.iter().any(|e| e["event"] == "key_changed"
            && e["account"] == BOB
            && e["warning"].as_str().unwrap().contains("accept-key")),
        "{got:?}"
    );
    assert!(
        !said(&got, "new phone, same bob"),
        "a message under an unaccepted key was shown: {got:?}"
    );
    // Held across a restart of the client (it is in the state file) and acknowledged to the
    // relay: listening again shows nothing new.
    let again = events(&relay, "alice", &["--timeout", "2"]);
    assert!(!again.iter().any(|e| e["event"] == "message"), "{again:?}");
    let accepted = ok(&relay, "alice", &["accept-key", BOB]);
    assert!(
        accepted.contains("1 held message(s) opened") && accepted.contains("new phone, same bob"),
        "{accepted}"
    );
    // And the conversation goes on both ways.
    ok(&relay, "alice", &["send", BOB, "got it"]);
    let got = events(&relay, "bob-new", &["--count", "1", "--timeout", "20"]);
    assert!(said(&got, "got it"), "{got:?}");
}

#[test]
fn bad_trust_commands_get_specific_errors() {
    let relay = alice_and_bob();
    let err = refused(&relay, "alice", &["accept-key", BOB]);
    assert!(err.contains("nothing to accept"), "{err}");
    let err = refused(&relay, "alice", &["verify-contact", ALICE]);
    assert!(err.contains("someone else's"), "{err}");
    let err = refused(&relay, "alice", &["verify-contact", "+14155550199"]);
    assert!(err.contains("account is not registered"), "{err}");
    let err = refused(&relay, "alice", &["verify-contact", "not a number"]);
    assert!(err.contains("must be E.164"), "{err}");
}
