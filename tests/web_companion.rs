//! The browser companion in a real headless Chromium against the real relay binary: the page
//! the relay serves shows a pairing code, the CLI primary links it, history appears, text goes
//! both ways with ticks, the device survives a reload and a relay restart, a malformed frame
//! (sent by the relay's `FAILPOINTS` test hook) is shown and survived, and log out unlinks it
//! on both sides.
//!
//! The browser is operated by `tests/web/driver.mjs` (playwright-core from npm, locked, with
//! Debian's `/usr/bin/chromium`); this test decides every step and every expectation.
//! `tests/run.sh` installs what it needs; without it the test fails and says what is missing.
//! A screenshot of the chat view is saved under `target/web-artifacts/`.

// A panic is the failure report here.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::Instant;

use common::{Relay, BIN};
use serde_json::{json, Value};

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";
const CAROL: &str = "+14155550103";

/// The Chromium puppet.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn start() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let modules = root.join("tests/web/node_modules/playwright-core");
        assert!(
            modules.is_dir(),
            "playwright-core is not installed: run `npm ci --ignore-scripts` in tests/web (tests/run.sh does)"
        );
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            Path::new(&chromium).exists(),
            "{chromium} is missing: apt-get install chromium (tests/run.sh does)"
        );
        let mut child = Command::new("node")
            .arg(root.join("tests/web/driver.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect(
                "node is missing: install Node.js (tests/run.sh needs it for the browser test)",
            );
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn try_cmd(&mut self, c: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{c}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver: {e}: {line}"));
        if v["ok"] == json!(true) {
            Ok(v["value"].clone())
        } else {
            Err(format!("{}\nconsole: {}", v["error"], v["console"]))
        }
    }

    fn cmd(&mut self, c: Value) -> Value {
        let what = c.to_string();
        self.try_cmd(c)
            .unwrap_or_else(|e| panic!("browser command {what} failed: {e}"))
    }

    fn eval(&mut self, js: &str) -> Value {
        self.cmd(json!({"cmd": "eval", "js": js}))
    }

    /// Waits until `js` is truthy in the page; returns the milliseconds it took.
    fn wait(&mut self, js: &str) -> u64 {
        self.cmd(json!({"cmd": "wait", "js": js, "timeout_ms": 30000}))
            .as_u64()
            .unwrap_or(0)
    }

    fn fill(&mut self, selector: &str, text: &str) {
        self.cmd(json!({"cmd": "fill", "selector": selector, "text": text}));
    }

    fn click(&mut self, selector: &str) {
        self.cmd(json!({"cmd": "click", "selector": selector}));
    }

    fn send(&mut self, text: &str) {
        self.fill("#text", text);
        self.cmd(json!({"cmd": "press", "selector": "#text", "key": "Enter"}));
    }

    fn screenshot(&mut self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        self.cmd(json!({"cmd": "screenshot", "path": path}));
        path
    }

    /// The status of my message with this text in `thread` (queued, sent, delivered, read).
    fn status_of(&mut self, thread: &str, body: &str) -> String {
        self.eval(&format!(
            "(relaybox.chats()[{thread:?}]?.messages ?? []).find(m => m.body === {body:?})?.status ?? 'none'"
        ))
        .as_str()
        .unwrap_or("none")
        .to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.try_cmd(json!({"cmd": "close"}));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(out: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

fn thread_has(thread: &str, body: &str) -> String {
    format!("(relaybox.chats()[{thread:?}]?.messages ?? []).some(m => m.body === {body:?})")
}

#[test]
fn the_browser_companion_links_chats_with_ticks_survives_reload_and_restart_and_logs_out() {
    let mut relay = Relay::start();
    relay.cli_user("alice", ALICE);
    relay.cli_user("bob", BOB);
    // History for the new browser: Alice's phone already talked to Bob.
    ok(relay.client_cli("alice", &["send", BOB, "history from the phone"]));

    let mut b = Browser::start();
    let url = format!("http://{}/", relay.http_addr);
    let opened = b.cmd(json!({"cmd": "open", "url": url}));
    let shown = b.wait("document.getElementById('pairing-code').textContent.startsWith('rbx1:')");
    let code = b
        .eval("document.getElementById('pairing-code').textContent")
        .as_str()
        .unwrap()
        .to_owned();
    assert!(b.eval("document.querySelector('#qr svg path') !== null") == json!(true));
    let csp = b.eval("fetch('/').then(r => r.headers.get('content-security-policy'))");
    assert!(
        csp.as_str().unwrap().starts_with("default-src 'self'"),
        "{csp}"
    );
    assert_published_hash_matches_what_is_served(&relay);

    // The phone links it, as a person would: `relaybox client link CODE`.
    let t = Instant::now();
    // With the relay's HTTP address known, the phone sends history as an encrypted blob (the
    // Node test below covers history sent inline).
    let http = format!("http://{}", relay.http_addr);
    let out = ok(relay.client_cli("alice", &["--http", &http, "link", &code]));
    assert!(out.contains("Linked device 1"), "{out}");
    b.wait("relaybox.ready()");
    let linked_ms = t.elapsed().as_millis();
    println!(
        "web: page opened in {opened} ms, pairing code shown {shown} ms later, linked and ready {linked_ms} ms after `link` started"
    );
    assert_eq!(b.eval("relaybox.account()"), json!(ALICE));
    b.wait(&thread_has(BOB, "history from the phone"));

    // CLI → browser. Alice and Bob have each other in their contacts (the default privacy
    // shows presence to mutual contacts), so Bob coming online and going away is pushed to
    // Alice's devices, the browser too, and shown in the chat's header.
    ok(relay.client_cli("alice", &["contacts", BOB]));
    ok(relay.client_cli("bob", &["contacts", ALICE]));
    ok(relay.client_cli("bob", &["send", ALICE, "hello browser"]));
    b.wait(&thread_has(BOB, "hello browser"));
    b.wait(&format!("relaybox.presence()[{BOB:?}] !== undefined"));

    // Muting Bob's chat from the page, and unmuting it: each takes effect when the relay
    // confirms it.
    b.click(&format!("#chats li[data-thread='{BOB}']"));
    b.wait("/online|last seen/.test(document.getElementById('conv-state').textContent)");
    b.click("#mute");
    b.wait(&format!("relaybox.chats()[{BOB:?}].muted === true"));
    b.click("#mute");
    b.wait(&format!("relaybox.chats()[{BOB:?}].muted === false"));

    // Bob types: the browser shows it.
    ok(relay.client_cli("bob", &["state", ALICE, "composing"]));
    b.wait(&format!(
        "(relaybox.chats()[{BOB:?}].state || '').includes('typing')"
    ));

    // Browser → CLI, with one, two and blue ticks.
    b.click(&format!("#chats li[data-thread='{BOB}']"));
    b.send("hello from chromium");
    b.wait(&format!(
        "['sent','delivered','read'].includes((relaybox.chats()[{BOB:?}].messages.find(m => m.body === 'hello from chromium') || {{}}).status)"
    ));
    // A quoted reply: double-click Bob's message, answer it.
    let quoted = b
        .eval("document.querySelector('#messages li.msg:not(.mine)').dataset.id")
        .as_str()
        .unwrap()
        .to_owned();
    b.cmd(json!({"cmd": "dblclick", "selector": format!("#messages li[data-id='{quoted}']")}));
    b.send("quoting you");
    b.wait(
        "[...document.querySelectorAll('#messages li.mine')].some(li => li.querySelector('.quoted')?.textContent === 'hello browser')",
    );
    let got = ok(relay.client_cli(
        "bob",
        // Bob reads the phone's earlier message, then the browser's two.
        &[
            "listen",
            "--read",
            "--count",
            "3",
            "--timeout",
            "20",
            "--json",
        ],
    ));
    assert!(got.contains("hello from chromium"), "{got}");
    assert!(
        got.contains(&quoted),
        "the reply does not name {quoted}: {got}"
    );
    b.wait(&format!(
        "(relaybox.chats()[{BOB:?}].messages.find(m => m.body === 'hello from chromium') || {{}}).status === 'read'"
    ));
    // The last of Bob's read receipts (for "quoting you") may land a moment after the first.
    b.wait(
        "document.querySelector('#messages li.mine:last-child .ticks')?.dataset.status === 'read'",
    );
    assert_eq!(
        b.eval("document.querySelector('#messages li.mine:last-child .ticks').dataset.status"),
        json!("read")
    );
    // An image: the thumbnail shows first, then the full image, both decrypted in the wasm.
    let png = relay.dir.path().join("shelf.png");
    image::RgbImage::from_fn(1200, 800, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    })
    .save(&png)
    .unwrap();
    ok(relay.client_cli(
        "bob",
        &[
            "--http",
            &http,
            "send",
            ALICE,
            "--image",
            png.to_str().unwrap(),
        ],
    ));
    b.wait(&format!(
        "(relaybox.chats()[{BOB:?}].messages.find(m => m.media) || {{media: {{stages: []}}}}).media.stages.length === 2"
    ));
    assert_eq!(
        b.eval(&format!(
            "relaybox.chats()[{BOB:?}].messages.find(m => m.media).media.stages"
        )),
        json!(["thumb", "full"])
    );
    b.wait("document.querySelector('#messages img.photo[data-stage=full]') !== null");

    // The operator purges the image: after the reload the page finds it gone (410), recalls
    // it from Bob's phone, which uploads and sends it again, and shows it again.
    let blob = b.eval(&format!(
        "relaybox.chats()[{BOB:?}].messages.find(m => m.media).media.blob"
    ));
    let (url, data) = (
        relay.admin_url(),
        relay.data_dir().to_string_lossy().into_owned(),
    );
    let (code, out, err) = relay.cli(&[
        "admin",
        "--admin",
        &url,
        "--data-dir",
        &data,
        "blobs",
        "purge",
        blob.as_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let bob_answers = Command::new(BIN)
        .args(["client", "--home"])
        .arg(relay.dir.path().join("bob"))
        .args([
            "--relay",
            &relay.addr,
            "listen",
            "--count",
            "1",
            "--timeout",
            "30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    b.cmd(json!({"cmd": "reload"}));
    b.wait(&format!(
        "(m => m && m.media.recalled && m.media.stages.join() === 'thumb,full')(relaybox.chats()[{BOB:?}]?.messages.find(m => m.media))"
    ));
    let answered = bob_answers.wait_with_output().unwrap();
    assert!(answered.status.success(), "{answered:?}");

    // A group with a third person: Bob creates it, everyone talks.
    relay.cli_user("carol", CAROL);
    let created = ok(relay.client_cli("bob", &["group", "create", "Shop floor", ALICE, CAROL]));
    let group = created
        .lines()
        .find_map(|l| l.strip_prefix("group:"))
        .map(|g| g.trim().to_owned())
        .unwrap_or_else(|| panic!("no group id in {created}"));
    ok(relay.client_cli("bob", &["group", "send", &group, "hello team"]));
    b.wait(&thread_has(&group, "hello team"));
    b.wait(&format!(
        "relaybox.chats()[{group:?}].name === 'Shop floor'"
    ));
    b.click(&format!("#chats li[data-thread='{group}']"));
    b.send("hi team from the browser");
    b.wait(&format!(
        "(relaybox.chats()[{group:?}].messages.find(m => m.body === 'hi team from the browser') || {{}}).status === 'sent'"
    ));
    let got = ok(relay.client_cli(
        "carol",
        &["listen", "--count", "2", "--timeout", "20", "--json"],
    ));
    assert!(
        got.contains("hello team") && got.contains("hi team from the browser"),
        "{got}"
    );
    b.click(&format!("#chats li[data-thread='{BOB}']"));

    assert_eq!(
        b.eval("document.getElementById('banner').hidden"),
        json!(true),
        "{}",
        b.eval("document.getElementById('banner').textContent")
    );
    let shot = b.screenshot("web-companion-chat.png");
    println!("web: screenshot {}", shot.display());

    // A reload keeps the device (IndexedDB) and resumes with IK.
    let reload = b.cmd(json!({"cmd": "reload"}));
    b.wait("relaybox.ready()");
    assert_eq!(b.eval("relaybox.account()"), json!(ALICE));
    b.wait(&thread_has(BOB, "hello browser"));
    println!("web: reload took {reload} ms");
    ok(relay.client_cli("bob", &["send", ALICE, "after the reload"]));
    b.wait(&thread_has(BOB, "after the reload"));

    // A relay restart: a banner while offline, then back on its own; a message typed while
    // offline goes on reconnect.
    relay.stop();
    b.wait("!document.getElementById('banner').hidden");
    b.click(&format!("#chats li[data-thread='{BOB}']"));
    b.send("typed while offline");
    assert_eq!(b.status_of(BOB, "typed while offline"), "queued");
    // The restarted relay sends every companion a frame it cannot decode (a test hook):
    // the page says so and carries on.
    relay
        .envs
        .push(("FAILPOINTS".into(), "malformed-frame-to-companions".into()));
    relay.restart();
    b.wait("relaybox.ready() && document.getElementById('banner').hidden");
    b.wait("document.getElementById('notices').textContent.includes('could not be read')");
    b.wait(&format!(
        "(relaybox.chats()[{BOB:?}].messages.find(m => m.body === 'typed while offline') || {{}}).status !== 'queued'"
    ));
    // Bob first reads the browser's group message, then this.
    let got = ok(relay.client_cli(
        "bob",
        &["listen", "--count", "2", "--timeout", "20", "--json"],
    ));
    assert!(got.contains("typed while offline"), "{got}");
    ok(relay.client_cli("bob", &["send", ALICE, "after the bad frame"]));
    b.wait(&thread_has(BOB, "after the bad frame"));

    // Log out on the page: the page forgets the device, and the relay unlinked it.
    b.click("#logout");
    b.wait("document.getElementById('pairing-code').textContent.startsWith('rbx1:') && !relaybox.account()");
    let devices = ok(relay.client_cli("alice", &["devices"]));
    assert!(
        devices.contains("devices [0]"),
        "device 1 still listed: {devices}"
    );
}

/// Opens the page and links it to Alice's phone (`relaybox client link CODE`).
fn linked_browser(relay: &Relay) -> Browser {
    let mut b = Browser::start();
    b.cmd(json!({"cmd": "open", "url": format!("http://{}/", relay.http_addr)}));
    b.wait("document.getElementById('pairing-code').textContent.startsWith('rbx1:')");
    let code = b
        .eval("document.getElementById('pairing-code').textContent")
        .as_str()
        .unwrap()
        .to_owned();
    let out = ok(relay.client_cli("alice", &["link", &code]));
    assert!(out.contains("Linked device 1"), "{out}");
    b.wait("relaybox.ready()");
    b
}

/// The safety number a CLI home shows for `peer`.
fn cli_safety_number(relay: &Relay, home: &str, peer: &str) -> String {
    let out = ok(relay.client_cli(home, &["verify-contact", peer, "--json"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    v["safety_number"].as_str().unwrap().to_owned()
}

#[test]
fn the_page_shows_the_safety_number_both_phones_see_and_holds_a_changed_key_until_accepted() {
    let relay = Relay::start();
    relay.cli_user("alice", ALICE);
    relay.cli_user("bob", BOB);
    let mut b = linked_browser(&relay);
    ok(relay.client_cli("bob", &["contacts", ALICE]));
    ok(relay.client_cli("bob", &["send", ALICE, "hello browser"]));
    b.wait(&thread_has(BOB, "hello browser"));

    // The page's number (digits and QR) is the one Bob's phone and Alice's phone show: it
    // covers Alice's phone and this browser, and Bob's phone.
    b.click(&format!("#chats li[data-thread='{BOB}']"));
    b.click("#verify");
    b.wait("!document.getElementById('safety').hidden && document.getElementById('safety-digits').textContent.length > 0");
    assert_eq!(
        b.eval("document.querySelector('#safety-qr svg path') !== null"),
        json!(true)
    );
    let shown = b.eval("document.getElementById('safety-digits').textContent.replace(/\\s/g, '')");
    let by_bob = cli_safety_number(&relay, "bob", ALICE);
    assert_eq!(shown, json!(by_bob));
    assert_eq!(cli_safety_number(&relay, "alice", BOB), by_bob);
    assert_eq!(
        b.eval("document.getElementById('safety-changed').hidden"),
        json!(true)
    );
    b.click("#safety-close");

    // Bob reinstalls and writes: the page warns, holds the message, and shows the new number.
    relay.cli_user("bob-new", BOB);
    ok(relay.client_cli("bob-new", &["send", ALICE, "new phone, same bob"]));
    b.wait(&format!(
        "(relaybox.chats()[{BOB:?}]?.messages ?? []).some(m => m.system && m.body.includes('safety number with {BOB} changed'))"
    ));
    assert_eq!(
        b.eval(&thread_has(BOB, "new phone, same bob")),
        json!(false)
    );
    b.click("#verify");
    b.wait("!document.getElementById('safety-changed').hidden");
    let new_number = cli_safety_number(&relay, "bob-new", ALICE);
    assert_ne!(new_number, by_bob);
    b.wait(&format!(
        "document.getElementById('safety-digits').textContent.replace(/\\s/g, '') === {new_number:?}"
    ));
    // Accepting opens the held message, and the page can write to the new phone.
    b.click("#accept-key");
    b.wait(&thread_has(BOB, "new phone, same bob"));
    b.send("welcome back");
    let got = ok(relay.client_cli(
        "bob-new",
        &["listen", "--count", "1", "--timeout", "20", "--json"],
    ));
    assert!(got.contains("welcome back"), "{got}");
}

#[test]
fn the_shipped_wasm_core_links_and_logs_in_over_noise_tcp_from_node_without_a_browser() {
    let relay = Relay::start();
    relay.cli_user("alice", ALICE);
    relay.cli_user("bob", BOB);
    ok(relay.client_cli("alice", &["send", BOB, "before the link"]));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut node = Command::new("node")
        .arg(root.join("tests/web/handshake.mjs"))
        .env("RELAY_TCP", &relay.addr)
        .stdout(Stdio::piped())
        .spawn()
        .expect("node is missing: install Node.js (tests/run.sh does)");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut next = || -> Value {
        let line = lines.next().expect("node ended early").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let first = next();
    let code = first["code"].as_str().unwrap_or_else(|| panic!("{first}"));
    let out = ok(relay.client_cli("alice", &["link", code]));
    assert!(out.contains("Linked device 1"), "{out}");
    let ready = next();
    assert_eq!(ready["ready"]["account"], json!(ALICE), "{ready}");
    assert_eq!(ready["ready"]["device"], json!(1), "{ready}");
    let history = next();
    assert!(history["history"].as_u64().unwrap_or(0) >= 1, "{history}");
    // Unlinking from the primary ends it on the companion too.
    ok(relay.client_cli("alice", &["unlink", "1"]));
    let out = next();
    assert!(
        out["logged_out"]
            .as_str()
            .unwrap_or("")
            .contains("unlinked"),
        "{out}"
    );
    assert!(node.wait().unwrap().success());
}

/// What `relaybox --version` publishes is the SHA-256 of the sha256sum list of the files the
/// relay serves, fetched as a user would check them (curl, decompressed).
fn assert_published_hash_matches_what_is_served(relay: &Relay) {
    use sha2::{Digest, Sha256};
    let version = Command::new(BIN).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let published = version
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_owned();
    let mut list = String::new();
    for f in [
        "app.js",
        "index.html",
        "relaybox_web.js",
        "relaybox_web_bg.wasm",
        "style.css",
    ] {
        let out = Command::new("curl")
            .args(["-sf", "--compressed"])
            .arg(format!("http://{}/{f}", relay.http_addr))
            .output()
            .unwrap();
        assert!(out.status.success(), "GET /{f} failed");
        list.push_str(&format!(
            "{}  {f}\n",
            hex::encode(Sha256::digest(&out.stdout))
        ));
    }
    assert_eq!(
        hex::encode(Sha256::digest(list.as_bytes())),
        published,
        "relaybox --version says {version}"
    );
}
