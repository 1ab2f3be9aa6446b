//! The MQTT bridge against a real Mosquitto broker, driven by mosquitto_pub and mosquitto_sub
//! (clients no one here wrote): up and down messages, a broker outage, a relay killed between
//! storing an up message and acknowledging it, and every kind of bad input.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/mqtt.rs"]
mod mqtt_support;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{next_event, quiet_for, Relay, BIN, PATIENCE};
use mqtt_support::Broker;
use relaybox::client::{Client, Event};
use relaybox::e2e::payload::Payload;

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";
const DEVICE: &str = "fridge-3";
const UP: &str = "relaybox/dev/fridge-3/up";
const DOWN: &str = "relaybox/dev/fridge-3/down";

/// A relay bridged to a broker, with Alice and Bob in a group the device was provisioned in.
struct Site {
    broker: Broker,
    relay: Relay,
    alice: Client,
    bob: Client,
    group: String,
}

fn mqtt_config(broker: &Broker, extra: &str) -> String {
    format!(
        "[mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {}\nreconnect_max = \"1s\"\n{extra}\n",
        broker.port
    )
}

/// Runs `relaybox mqtt-device …` on the relay's config; returns (exit code, stdout, stderr).
fn mqtt_device(relay: &Relay, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(relay.dir.path().join("relaybox.toml"))
        .arg("mqtt-device")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `relaybox client …` as `who` (a user made by `Relay::user`); returns its stdout.
fn client_cli(relay: &Relay, who: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("client")
        .arg("--home")
        .arg(relay.dir.path().join(format!("client-{who}")))
        .arg("--relay")
        .arg(&relay.addr)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "relaybox client {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the relay's logs contain `needle` `n` times.
fn wait_log(relay: &Relay, needle: &str, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while relay.logs().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} (x{n}) in the relay's log:\n{}",
            relay.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn site(extra: &str) -> Site {
    site_on(Broker::start(), extra).await
}

/// Like [`site`], on a broker the test started.
async fn site_on(broker: Broker, extra: &str) -> Site {
    let mut relay = Relay::start_with(&mqtt_config(&broker, extra));
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let group = alice
        .create_group("cold room", &[BOB.into()])
        .await
        .unwrap()
        .group;
    // Provisioning works on the data directory of a stopped relay.
    let (code, _, err) = mqtt_device(
        &relay,
        &["add", DEVICE, "--name", "Fridge 3", "--thread", &group],
    );
    assert_eq!(code, 1, "refused while the relay runs");
    assert!(err.contains("stop it first"), "{err}");
    relay.stop();
    let (code, out, err) = mqtt_device(
        &relay,
        &["add", DEVICE, "--name", "Fridge 3", "--thread", &group],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("relaybox/dev/fridge-3/up"), "{out}");
    relay.restart();
    wait_log(&relay, "Bridged device joined its group.", 1);
    wait_log(&relay, "Bridged device published its keys.", 1);
    wait_log(&relay, "MQTT broker connected.", 1);
    alice.disconnect();
    bob.disconnect();
    Site {
        broker,
        relay,
        alice,
        bob,
        group,
    }
}

/// The next text message, skipping system events; returns (from, group, text).
async fn next_text(c: &mut Client) -> (String, Option<String>, String) {
    loop {
        match next_event(c).await {
            Event::Message {
                from, group, inner, ..
            } => {
                let Payload::Text { body } = inner.payload else {
                    panic!("not text")
                };
                return (from, group, body);
            }
            Event::Undecryptable { error, .. } => panic!("undecryptable: {error}"),
            _ => {}
        }
    }
}

/// Texts arriving within `wait` (system events skipped).
async fn texts_within(c: &mut Client, wait: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match quiet_for(c, left).await {
            Some(Event::Message { inner, .. }) => {
                if let Payload::Text { body } = inner.payload {
                    out.push(body);
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    out
}

fn up_doc(id: &str, thread: &str, text: &str) -> Vec<u8> {
    format!(r#"{{"id":"{id}","thread":"{thread}","text":"{text}","data":{{"t":4.5}}}}"#)
        .into_bytes()
}

fn down_text(line: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    (
        v["text"].as_str().unwrap().to_owned(),
        v["id"].as_str().unwrap().to_owned(),
    )
}

/// Waits (within PATIENCE) for @fridge-3's READ receipt of `msg_id`.
async fn read_receipt_from_fridge(c: &mut Client, msg_id: relaybox::ids::MsgId) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match next_event(c).await {
            Event::Receipt {
                kind: relaybox::wire::messages::ReceiptKind::Read,
                msg_ids,
                from,
            } => {
                assert_eq!(from, "@fridge-3");
                assert_eq!(msg_ids, vec![msg_id]);
                return;
            }
            _ => assert!(Instant::now() < deadline, "no read receipt"),
        }
    }
}

#[tokio::test]
async fn a_device_posts_with_mosquitto_pub_and_every_member_reads_it() {
    let mut s = site("").await;
    s.broker.publish(UP, &up_doc("r-1", &s.group, "door open"));
    for c in [&mut s.alice, &mut s.bob] {
        let (from, group, text) = next_text(c).await;
        assert_eq!(from, "@fridge-3");
        assert_eq!(group.as_deref(), Some(s.group.as_str()));
        assert_eq!(text, "door open\n{\"t\":4.5}");
    }
}

#[tokio::test]
async fn a_person_writes_and_mosquitto_sub_receives_it_on_the_down_topic() {
    let mut s = site("").await;
    let sub = s.broker.subscribe("fridge-3", DOWN);
    let (msg_id, _) = s
        .alice
        .send_group_text(&s.group, "defrost now")
        .await
        .unwrap();
    let line = sub.next(PATIENCE).expect("a down message");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["text"], "defrost now");
    assert_eq!(v["from"], ALICE);
    assert_eq!(v["thread"], s.group.as_str());
    assert_eq!(v["id"], msg_id.to_string());
    // 1:1 too: a person messages the device directly.
    // Through the terminal client, which tells its user that the relay can read this device.
    s.bob.disconnect();
    let out = client_cli(&s.relay, "bob", &["send", "@fridge-3", "are you cold?"]);
    assert!(
        out.contains("bridged: the relay can read messages to and from this device"),
        "{out}"
    );
    let out = client_cli(&s.relay, "bob", &["devices", "@fridge-3"]);
    assert!(out.contains("@fridge-3: devices [0] (bridged"), "{out}");
    let (text, _) = down_text(&sub.next(PATIENCE).expect("a 1:1 down message"));
    assert_eq!(text, "are you cold?");
    // The device's ack becomes a read receipt for the sender.
    s.broker.publish(
        "relaybox/dev/fridge-3/ack",
        format!(r#"{{"ids":["{msg_id}"]}}"#).as_bytes(),
    );
    read_receipt_from_fridge(&mut s.alice, msg_id).await;
    drop(s.relay);
}

#[tokio::test]
async fn a_hundred_messages_sent_while_the_broker_is_down_all_arrive_once_it_is_back() {
    let mut s = site("").await;
    // The device's persistent session exists at the broker before the outage.
    s.broker.subscribe("fridge-3", DOWN).stop();
    s.broker.stop();
    for i in 0..100 {
        s.alice
            .send_group_text(&s.group, &format!("m{i}"))
            .await
            .unwrap();
    }
    s.broker.restart();
    let sub = s.broker.subscribe("fridge-3", DOWN);
    let mut got = Vec::new();
    let deadline = Instant::now() + PATIENCE * 3;
    while got.len() < 100 && Instant::now() < deadline {
        if let Some(line) = sub.next(Duration::from_secs(1)) {
            got.push(down_text(&line).0);
        }
    }
    // Anything twice would arrive shortly after the last one.
    while let Some(line) = sub.next(Duration::from_secs(2)) {
        got.push(down_text(&line).0);
    }
    let mut want: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    want.sort();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, want, "all 100, none twice");
    assert_eq!(got[0], "m0", "in order");
}

#[tokio::test]
async fn a_device_ack_after_a_relay_restart_still_becomes_a_read_receipt() {
    let mut s = site("").await;
    let sub = s.broker.subscribe("fridge-3", DOWN);
    let (msg_id, _) = s
        .alice
        .send_group_text(&s.group, "check the seal")
        .await
        .unwrap();
    let line = sub.next(PATIENCE).expect("a down message");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["id"], msg_id.to_string());
    // The relay restarts (kill -9: nothing in memory survives) before the device acks.
    s.relay.kill9();
    s.relay.restart();
    wait_log(&s.relay, "MQTT broker connected.", 2);
    // Alice's connection went with the relay: she reconnects on her next read.
    s.alice.disconnect();
    s.broker.publish(
        "relaybox/dev/fridge-3/ack",
        format!(r#"{{"ids":["{msg_id}"]}}"#).as_bytes(),
    );
    read_receipt_from_fridge(&mut s.alice, msg_id).await;
}

#[tokio::test]
async fn a_relay_killed_between_storing_an_up_message_and_acking_it_delivers_it_exactly_once() {
    let mut s = site("").await;
    s.relay.stop();
    s.relay.envs = vec![("FAILPOINTS".into(), "mqtt-before-ack".into())];
    s.relay.restart();
    wait_log(&s.relay, "MQTT broker connected.", 2);
    s.broker
        .publish(UP, &up_doc("r-9", &s.group, "leak detected"));
    wait_log(&s.relay, "Failpoint mqtt-before-ack", 1);
    s.relay.kill9();
    s.relay.envs.clear();
    s.relay.restart();
    // The broker redelivered the unacknowledged publish; the relay recognised it.
    wait_log(&s.relay, "Up message redelivered", 1);
    s.alice.disconnect();
    let texts = texts_within(&mut s.alice, Duration::from_secs(4)).await;
    let leaks = texts
        .iter()
        .filter(|t| t.starts_with("leak detected"))
        .count();
    assert_eq!(leaks, 1, "exactly once: {texts:?}");
}

#[tokio::test]
async fn every_kind_of_bad_device_input_is_logged_counted_and_dropped() {
    let mut s = site("max_payload_bytes = 256").await;
    let g = s.group.clone();
    let big = up_doc("big", &g, &"x".repeat(400));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (UP, b"{not json".to_vec(), "malformed"),
        (
            UP,
            br#"{"id":"","thread":"x","text":"y"}"#.to_vec(),
            "bad_id",
        ),
        (UP, up_doc("a+b", &g, "wild"), "bad_id"),
        (UP, up_doc("#", &g, "wild"), "bad_id"),
        (UP, up_doc("../../etc", &g, "path"), "bad_id"),
        (UP, big, "oversize"),
        (
            "relaybox/dev/ghost/up",
            up_doc("1", &g, "boo"),
            "unknown_device",
        ),
        (UP, up_doc("2", "g-elsewhere", "hi"), "thread_not_allowed"),
        ("relaybox/dev/Fridge_3/up", up_doc("3", &g, "hi"), "bad_id"),
        (
            UP,
            format!(r#"{{"id":"4","thread":"{g}","text":"hi","device":"fridge-4"}}"#).into_bytes(),
            "impersonation",
        ),
        ("relaybox/dev/fridge-3/ack", b"[1,2]".to_vec(), "malformed"),
        (
            "relaybox/dev/fridge-3/status",
            b"maybe".to_vec(),
            "malformed",
        ),
    ];
    for (n, (topic, payload, reason)) in cases.iter().enumerate() {
        s.broker.publish(topic, payload);
        let needle = format!("reason=\"{reason}\"");
        let want = cases[..=n].iter().filter(|c| c.2 == *reason).count();
        wait_log(&s.relay, &needle, want);
    }
    // MQTT wildcards cannot even be published: the broker's client refuses the topic.
    let out = Command::new("mosquitto_pub")
        .args(s.broker.args())
        .args(["-t", "relaybox/dev/+/up", "-m", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Nothing reached anyone, and the bridge still works.
    s.broker.publish(UP, &up_doc("ok", &g, "still here"));
    let texts = texts_within(&mut s.alice, Duration::from_secs(3)).await;
    assert_eq!(texts, vec!["still here\n{\"t\":4.5}".to_owned()]);
    assert!(
        s.relay
            .child
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "relay alive"
    );
}

#[tokio::test]
async fn the_devices_status_topic_and_last_will_are_its_presence() {
    let mut s = site("").await;
    s.alice
        .upload_contacts(&["@fridge-3".into()])
        .await
        .unwrap();
    // The device connects with a last will of "offline" and announces itself "online".
    let mut device = Command::new("mosquitto_sub")
        .args(s.broker.args())
        .args(["-i", "fridge-3", "-t", DOWN, "-q", "1"])
        .args([
            "--will-topic",
            "relaybox/dev/fridge-3/status",
            "--will-payload",
            "offline",
        ])
        .args(["--will-retain", "--will-qos", "1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.broker
        .publish_with("relaybox/dev/fridge-3/status", b"online", &["-r"]);
    wait_presence(&mut s.alice, true).await;
    device.kill().unwrap();
    device.wait().unwrap();
    wait_presence(&mut s.alice, false).await;
}

async fn wait_presence(c: &mut Client, want: bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match next_event(c).await {
            Event::Presence {
                account, available, ..
            } if account == "@fridge-3" && available == want => return,
            _ => assert!(Instant::now() < deadline, "no presence {want}"),
        }
    }
}

/// Runs `relaybox admin …` against the relay; returns (exit code, stdout, stderr).
fn admin(relay: &Relay, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(relay.dir.path().join("relaybox.toml"))
        .arg("admin")
        .arg("--admin")
        .arg(relay.admin_url())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_operator_provisions_a_device_live_and_sees_the_bridge_in_status_and_metrics() {
    let broker = Broker::start();
    let relay = Relay::start_with(&mqtt_config(&broker, ""));
    let mut alice = relay.user("alice", ALICE).await;
    let _bob = relay.user("bob", BOB).await;
    let group = alice
        .create_group("tills", &[BOB.into()])
        .await
        .unwrap()
        .group;
    for (args, why) in [
        (vec!["mqtt-device", "add", "Till_1"], "a handle is"),
        (
            vec!["mqtt-device", "add", "till-1", "--thread", "nope"],
            "does not exist",
        ),
        (vec!["mqtt-device", "remove", "till-9"], "not provisioned"),
    ] {
        let (code, _, err) = admin(&relay, &args);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let add = [
        "mqtt-device",
        "add",
        "till-1",
        "--name",
        "Till 1",
        "--thread",
        &group,
    ];
    let (code, out, err) = admin(&relay, &add);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("relaybox/dev/till-1/up"), "{out}");
    let (code, _, err) = admin(&relay, &add);
    assert_eq!(code, 1);
    assert!(err.contains("already provisioned"), "{err}");
    wait_log(&relay, "Bridged device published its keys.", 1);
    broker.publish("relaybox/dev/till-1/up", &up_doc("s-1", &group, "sale"));
    let (from, _, text) = next_text(&mut alice).await;
    assert_eq!(
        (from.as_str(), text.as_str()),
        ("@till-1", "sale\n{\"t\":4.5}")
    );

    let (code, out, err) = admin(&relay, &["bridge", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("connected    true"), "{out}");
    assert!(out.contains("up           1 accepted"), "{out}");
    let (_, out, _) = admin(&relay, &["mqtt-device", "list"]);
    assert!(out.contains("@till-1") && out.contains("Till 1"), "{out}");
    let metrics = Command::new("curl")
        .args(["-s", &format!("{}/metrics", relay.admin_url())])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    for line in [
        "relaybox_mqtt_connected 1",
        "relaybox_mqtt_messages_total{direction=\"up\",outcome=\"accepted\"} 1",
        "relaybox_mqtt_outbox_depth 0",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let (code, out, err) = admin(&relay, &["mqtt-device", "remove", "till-1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Removed @till-1"), "{out}");
    // A removed device is an unknown device.
    broker.publish("relaybox/dev/till-1/up", &up_doc("s-2", &group, "sale"));
    wait_log(&relay, "reason=\"unknown_device\"", 1);
}

/// A self-signed CA and a broker certificate for 127.0.0.1 (openssl CLI), in `dir`.
fn make_certs(dir: &std::path::Path, name: &str) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl is needed for the TLS test");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.crt");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        "broker.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

#[tokio::test]
async fn the_bridge_talks_tls_to_a_broker_with_a_self_signed_ca_and_refuses_another_ca() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path(), "site");
    // A second CA, which did not sign the broker's certificate.
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path(), "other");
    let tls_port = mqtt_support::free_port();
    let c = certs.path().display();
    let broker = Broker::start_with(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {c}/site-ca.crt\ncertfile {c}/broker.crt\nkeyfile {c}/broker.key\n"
    ));
    let tls = |ca: String| {
        format!(
            "[mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {tls_port}\nreconnect_max = \"1s\"\ntls = true\ntls_ca_file = \"{ca}\"\n"
        )
    };
    let relay = Relay::start_with(&tls(format!("{c}/site-ca.crt")));
    let mut alice = relay.user("alice", ALICE).await;
    let _bob = relay.user("bob", BOB).await;
    let group = alice
        .create_group("tls", &[BOB.into()])
        .await
        .unwrap()
        .group;
    let (code, _, err) = admin(
        &relay,
        &["mqtt-device", "add", "door-1", "--thread", &group],
    );
    assert_eq!(code, 0, "{err}");
    wait_log(&relay, "Bridged device published its keys.", 1);
    wait_log(&relay, "MQTT broker connected.", 1);
    // The device publishes on the plain listener; the relay reads it over TLS.
    broker.publish("relaybox/dev/door-1/up", &up_doc("d-1", &group, "opened"));
    let (from, _, text) = next_text(&mut alice).await;
    assert_eq!(
        (from.as_str(), text.as_str()),
        ("@door-1", "opened\n{\"t\":4.5}")
    );

    let wrong = Relay::start_with(&tls(format!("{}/other-ca.crt", other.path().display())));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, _, err) = admin(&wrong, &["bridge", "status"]);
        if code == 1 && err.contains("not connected") && err.to_lowercase().contains("certificate")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no certificate error: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Throughput through the bridge, by hand: `cargo test --test mqtt throughput -- --ignored
/// --nocapture` (add `--release` for release figures). Prints messages per second for up
/// (mosquitto_pub → stored for the group), down (a person's sends → mosquitto_sub) and the
/// outbox drain after a broker outage.
#[tokio::test]
#[ignore]
async fn throughput_up_and_down_through_the_bridge() {
    let n: usize = std::env::var("THROUGHPUT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut s = site("").await;
    // Up: N lines in one mosquitto_pub, QoS 1.
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "{{\"id\":\"u{i}\",\"thread\":\"{}\",\"text\":\"reading {i}\"}}\n",
                s.group
            )
        })
        .collect();
    let path = s.broker.dir.path().join("lines");
    std::fs::write(&path, lines).unwrap();
    let start = Instant::now();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mosquitto_pub -h 127.0.0.1 -p {} -q 1 -t {UP} -l < {}",
            s.broker.port,
            path.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (_, out, _) = admin(&s.relay, &["--json", "bridge", "status"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if v["up_accepted"].as_u64() == Some(n as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "up stalled: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let up = start.elapsed();
    // Down: Alice sends N texts to the device 1:1; mosquitto_sub receives them.
    let sub = s.broker.subscribe("fridge-3", DOWN);
    let start = Instant::now();
    for i in 0..n {
        s.alice
            .send_text("@fridge-3", &format!("d{i}"))
            .await
            .unwrap();
    }
    let sent = start.elapsed();
    for _ in 0..n {
        sub.next(PATIENCE).expect("down message");
    }
    let down = start.elapsed();
    assert_eq!(sub.next(Duration::from_secs(1)), None, "nothing twice");
    // Outbox drain: N queued while the broker is down, then published on reconnect.
    sub.stop();
    s.broker.stop();
    for i in 0..n {
        s.alice
            .send_text("@fridge-3", &format!("o{i}"))
            .await
            .unwrap();
    }
    wait_until_outbox(&s.relay, n as u64);
    s.broker.restart();
    let start = Instant::now();
    let sub = s.broker.subscribe("fridge-3", DOWN);
    for _ in 0..n {
        sub.next(PATIENCE).expect("drained message");
    }
    let drain = start.elapsed();
    assert_eq!(sub.next(Duration::from_secs(1)), None, "nothing twice");
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "MQTT bridge, {n} messages: up {:.0} msg/s; down {:.0} msg/s (the sender alone: {:.0} msg/s); outbox drain {:.0} msg/s",
        rate(up),
        rate(down),
        rate(sent),
        rate(drain)
    );
}

fn wait_until_outbox(relay: &Relay, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (_, out, _) = admin(relay, &["--json", "bridge", "status"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if v["outbox_depth"].as_u64() == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "outbox never reached {n}: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn the_example_acl_keeps_each_device_to_its_own_topics() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    for (n, (user, pass)) in [
        ("relaybox", "relay-pw"),
        ("fridge-3", "f3-pw"),
        ("fridge-4", "f4-pw"),
    ]
    .iter()
    .enumerate()
    {
        let mut cmd = Command::new("mosquitto_passwd");
        if n == 0 {
            cmd.arg("-c");
        }
        let st = cmd
            .arg("-b")
            .arg(&passwd)
            .args([user, pass])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let acl = concat!(env!("CARGO_MANIFEST_DIR"), "/config/mosquitto/acl");
    let broker = Broker::start_with(&format!(
        "allow_anonymous false\npassword_file {}\nacl_file {acl}\n",
        passwd.display()
    ));
    let relay = Relay::start_with(&mqtt_config(
        &broker,
        "username = \"relaybox\"\npassword = \"relay-pw\"",
    ));
    let mut alice = relay.user("alice", ALICE).await;
    let _bob = relay.user("bob", BOB).await;
    let group = alice
        .create_group("acl", &[BOB.into()])
        .await
        .unwrap()
        .group;
    for id in ["fridge-3", "fridge-4"] {
        let (code, _, err) = admin(&relay, &["mqtt-device", "add", id, "--thread", &group]);
        assert_eq!(code, 0, "{err}");
    }
    wait_log(&relay, "Bridged device published its keys.", 2);
    wait_log(&relay, "MQTT broker connected.", 1);
    // fridge-3 posing as fridge-4: the broker drops it; its own topic works.
    broker.publish_with(
        "relaybox/dev/fridge-4/up",
        &up_doc("x-1", &group, "spoofed"),
        &["-u", "fridge-3", "-P", "f3-pw"],
    );
    broker.publish_with(
        UP,
        &up_doc("x-2", &group, "genuine"),
        &["-u", "fridge-3", "-P", "f3-pw"],
    );
    let texts = texts_within(&mut alice, Duration::from_secs(3)).await;
    assert_eq!(texts, vec!["genuine\n{\"t\":4.5}".to_owned()]);
    // fridge-3 cannot read fridge-4's down topic; fridge-4 can.
    let spy = broker.subscribe_with(&[
        "-i",
        "spy",
        "-u",
        "fridge-3",
        "-P",
        "f3-pw",
        "-t",
        "relaybox/dev/fridge-4/down",
    ]);
    let owner = broker.subscribe_as("fridge-4", "f4-pw", "relaybox/dev/fridge-4/down");
    alice
        .send_text("@fridge-4", "for fridge 4 only")
        .await
        .unwrap();
    let line = owner
        .next(PATIENCE)
        .expect("fridge-4 reads its own down topic");
    assert!(line.contains("for fridge 4 only"), "{line}");
    assert_eq!(
        spy.next(Duration::from_secs(1)),
        None,
        "fridge-3 read fridge-4's messages"
    );
}

#[tokio::test]
async fn a_backup_carries_the_keys_the_relay_holds_for_its_bridged_devices() {
    let s = site("").await;
    let archive = s.relay.dir.path().join("backup.tar");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(s.relay.dir.path().join("relaybox.toml"))
        .args(["backup", "--admin", &s.relay.admin_url(), "--out"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = tempfile::tempdir().unwrap();
    let data = restored.path().join("data");
    let out = Command::new(BIN)
        .arg("restore")
        .arg(&archive)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = |dir: &std::path::Path| {
        let text = std::fs::read_to_string(dir.join("mqtt/devices/fridge-3/state.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["noise_private"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        state(&data),
        state(&s.relay.data_dir()),
        "the device's keys"
    );
    let out = Command::new(BIN)
        .args(["--set", &format!("relay.data_dir={}", data.display())])
        .args(["mqtt-device", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("@fridge-3") && listed.contains(&s.group),
        "{listed}"
    );
}

#[test]
fn bad_mqtt_settings_are_refused_with_exit_64_before_anything_starts() {
    for (set, named) in [
        ("mqtt.prefix=site/#", "mqtt.prefix"),
        ("mqtt.max_payload_bytes=10", "mqtt.max_payload_bytes"),
        ("mqtt.reconnect_max=10ms", "mqtt.reconnect_max"),
    ] {
        let out = Command::new(BIN)
            .args(["--set", set, "check-config"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{set}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{set}: {err}");
    }
    let out = Command::new(BIN)
        .args(["--set", "mqtt.enabled=true"])
        .args(["--set", "mqtt.tls_client_cert_file=/nonexistent/cert.pem"])
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mqtt.tls_client_key_file"));
}

/// Publishes one QoS 1 message per line of `lines` with a single mosquitto_pub.
fn publish_lines(broker: &Broker, topic: &str, lines: &str) {
    let path = broker.dir.path().join("lines");
    std::fs::write(&path, lines).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mosquitto_pub -h 127.0.0.1 -p {} -q 1 -t {topic} -l < {}",
            broker.port,
            path.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
}

/// The bridge's counters from `relaybox admin bridge status`.
fn bridge_status(relay: &Relay) -> serde_json::Value {
    let (_, out, _) = admin(relay, &["--json", "bridge", "status"]);
    serde_json::from_str(&out).unwrap_or_default()
}

/// Waits until the bridge has accepted `n` up messages; returns its status.
fn wait_up_accepted(relay: &Relay, n: u64, wait: Duration) -> serde_json::Value {
    let deadline = Instant::now() + wait;
    loop {
        let v = bridge_status(relay);
        if v["up_accepted"].as_u64() == Some(n) {
            return v;
        }
        assert!(Instant::now() < deadline, "up stalled: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every distinct "reading N" text Bob gets until he has `n` or `wait` passes.
async fn readings(c: &mut Client, n: usize, wait: Duration) -> std::collections::BTreeSet<String> {
    let mut got = std::collections::BTreeSet::new();
    let deadline = Instant::now() + wait;
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match quiet_for(c, left.min(Duration::from_secs(10))).await {
            Some(Event::Message { inner, .. }) => {
                if let Payload::Text { body } = inner.payload {
                    assert!(got.insert(body.clone()), "{body} twice");
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    got
}

#[tokio::test]
async fn publishes_up_to_the_example_brokers_size_limit_are_dropped_counted_and_never_wedge_the_bridge(
) {
    // The broker allows what the shipped example config allows.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mosquitto/relaybox.conf"),
    )
    .unwrap();
    let limit: usize = example
        .lines()
        .find_map(|l| l.strip_prefix("message_size_limit "))
        .expect("message_size_limit in the example broker config")
        .trim()
        .parse()
        .unwrap();
    let broker = Broker::start_with(&format!("message_size_limit {limit}"));
    let mut s = site_on(broker, "").await;
    let g = s.group.clone();
    for (id, size) in [("big-200k", 200_000), ("at-limit", limit)] {
        let mut doc = up_doc(id, &g, "");
        let pad = size - doc.len();
        doc.splice(
            doc.len() - 22..doc.len() - 22,
            std::iter::repeat_n(b'x', pad),
        );
        assert_eq!(doc.len(), size);
        s.broker.publish(UP, &doc);
    }
    wait_log(&s.relay, "reason=\"oversize\"", 2);
    // The bridge goes on: this device and the next message get through at once.
    s.broker.publish(UP, &up_doc("after", &g, "still here"));
    let (_, _, text) = next_text(&mut s.bob).await;
    assert_eq!(text, "still here\n{\"t\":4.5}");
    let v = bridge_status(&s.relay);
    assert_eq!(v["dropped"]["oversize"].as_u64(), Some(2), "{v}");
    assert!(
        !s.relay.logs().contains("MQTT broker connection lost"),
        "the big publishes must not drop the broker connection:\n{}",
        s.relay.logs()
    );
}

/// The default `[abuse]` limits (the test config opens them unless a test sets its own).
const DEFAULT_ABUSE: &str = "\n[abuse]\nenabled = true\n";

#[tokio::test]
async fn a_flood_of_up_messages_under_the_default_limits_all_arrive_exactly_once() {
    const N: usize = 600;
    let mut s = site(DEFAULT_ABUSE).await;
    let lines: String = (0..N)
        .map(|i| {
            format!(
                "{{\"id\":\"f{i}\",\"thread\":\"{}\",\"text\":\"reading {i}\"}}\n",
                s.group
            )
        })
        .collect();
    publish_lines(&s.broker, UP, &lines);
    let v = wait_up_accepted(&s.relay, N as u64, Duration::from_secs(120));
    assert_eq!(
        v["dropped"]["relay_refused"].as_u64().unwrap_or(0),
        0,
        "{v}"
    );
    let got = readings(&mut s.bob, N, Duration::from_secs(120)).await;
    assert_eq!(got.len(), N, "every one, once");
}

#[tokio::test]
async fn an_up_backlog_queued_at_the_broker_while_the_relay_was_down_all_arrives() {
    const N: usize = 300;
    // A low frame limit on top, so the relay does refuse the bridge's sends with
    // RATE_LIMITED: each is retried after retry_after_ms, never acked and lost.
    let mut s = site(&format!(
        "{DEFAULT_ABUSE}\n[limits]\nframes_per_second_per_device = 40\n"
    ))
    .await;
    s.relay.stop();
    let lines: String = (0..N)
        .map(|i| {
            format!(
                "{{\"id\":\"b{i}\",\"thread\":\"{}\",\"text\":\"reading {i}\"}}\n",
                s.group
            )
        })
        .collect();
    publish_lines(&s.broker, UP, &lines);
    s.relay.restart();
    let v = wait_up_accepted(&s.relay, N as u64, Duration::from_secs(120));
    assert!(
        v["up_deferred"].as_u64().unwrap_or(0) > 0,
        "the limit bit: {v}"
    );
    assert_eq!(
        v["dropped"]["relay_refused"].as_u64().unwrap_or(0),
        0,
        "{v}"
    );
    let got = readings(&mut s.bob, N, Duration::from_secs(120)).await;
    assert_eq!(got.len(), N, "the whole backlog, once");
}

#[tokio::test]
async fn a_group_member_without_usable_keys_does_not_stop_a_devices_posts_to_the_others() {
    use relaybox::wire::messages::GroupOp;
    let mut s = site("").await;
    // Carol registers with a client written from the contract and never publishes keys.
    const CAROL: &str = "+14155550103";
    let key = relaybox::wire::handshake::StaticKeypair::generate();
    let _carol = common::raw::RawClient::register(&s.relay.addr, &key.private, CAROL, |p| {
        s.relay.code_for(p)
    })
    .await;
    s.alice
        .update_group(&s.group, GroupOp::Add, &[CAROL.into()], "")
        .await
        .unwrap();
    s.broker.publish(UP, &up_doc("k-1", &s.group, "door open"));
    for c in [&mut s.alice, &mut s.bob] {
        let (from, _, text) = next_text(c).await;
        assert_eq!(from, "@fridge-3");
        assert_eq!(text, "door open\n{\"t\":4.5}");
    }
    // People's own group sends get through the same way.
    s.bob.send_group_text(&s.group, "seen it").await.unwrap();
    let (_, _, text) = next_text(&mut s.alice).await;
    assert_eq!(text, "seen it");
}
