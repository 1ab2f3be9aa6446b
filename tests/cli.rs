//! The binary as an operator and two people at terminals use it: embedded defaults, config
//! checking with exit code 64, keygen, and a chat between two `relaybox client` homes.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Relay, BIN};

fn relaybox(args: &[&str], cwd: &std::path::Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("RELAYBOX_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn print_config_prints_a_file_that_check_config_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = relaybox(&["print-config"], dir.path());
    assert!(out.status.success());
    let cfg = String::from_utf8(out.stdout).unwrap();
    assert!(
        cfg.contains("[registration]") && cfg.contains('#'),
        "commented config expected"
    );
    std::fs::write(dir.path().join("relaybox.toml"), &cfg).unwrap();
    let check = relaybox(&["check-config", "--config", "relaybox.toml"], dir.path());
    assert!(check.status.success(), "{}", text(&check));
}

#[test]
fn a_bad_config_lists_every_error_and_exits_64_before_binding_a_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bad = format!(
        "[listen]\ntcp = \"127.0.0.1:{port}\"\n\n[limits]\nmax_frame_bytes = 9\nmax_conections = 5\n\n[registration]\ndefault_country = \"XX\"\nverifier = \"carrier-pigeon\"\n"
    );
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    for cmd in ["check-config", "serve"] {
        let started = Instant::now();
        let out = relaybox(&[cmd, "--config", "bad.toml"], dir.path());
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(64), "{cmd}: {msg}");
        for key in [
            "limits.max_frame_bytes",
            "limits.max_conections",
            "registration.default_country",
            "registration.verifier",
        ] {
            assert!(msg.contains(key), "{cmd}: {key} not reported in:\n{msg}");
        }
        assert!(
            msg.contains("max_connections"),
            "a did-you-mean for the typo:\n{msg}"
        );
        assert!(!msg.contains("Relay ready."));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert!(
        !dir.path().join("relaybox-data").exists(),
        "nothing was created"
    );
    // The port was never bound.
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    // Environment variables are checked too.
    let out = Command::new(BIN)
        .args(["check-config"])
        .current_dir(dir.path())
        .env("RELAYBOX_LIMITS_MAX_FRAME_BYTES", "70000")
        .env("RELAYBOX_NOPE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let msg = text(&out);
    assert!(
        msg.contains("RELAYBOX_LIMITS_MAX_FRAME_BYTES") && msg.contains("RELAYBOX_NOPE"),
        "{msg}"
    );
}

#[test]
fn serve_runs_on_embedded_defaults_and_keeps_its_key_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let ready_key = || {
        let mut child = Command::new(BIN)
            .arg("serve")
            .current_dir(dir.path())
            .env("RELAYBOX_LISTEN_TCP", "127.0.0.1:0")
            // Port 0: parallel test runs must not meet on the default admin port.
            .env("RELAYBOX_LISTEN_ADMIN", "127.0.0.1:0")
            .env("RELAYBOX_LISTEN_HTTP", "127.0.0.1:0")
            .env_remove("RELAYBOX_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + common::PATIENCE;
        let line = loop {
            let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
            if let Some(l) = log.lines().find(|l| l.contains("Relay ready.")) {
                break l.to_owned();
            }
            assert!(Instant::now() < deadline, "not ready:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(line.contains("tcp=127.0.0.1:"), "loopback listener: {line}");
        assert!(
            line.contains("http=127.0.0.1:"),
            "loopback HTTP listener: {line}"
        );
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert_eq!(
            child.wait().unwrap().code(),
            Some(0),
            "graceful exit on SIGTERM"
        );
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(log.contains("Relay stopped."), "{log}");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("relay_key="))
            .unwrap()
            .to_owned()
    };
    let first = ready_key();
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("relaybox-data").join("relay.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("relaybox-data"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert_eq!(ready_key(), first, "the relay key is kept");
}

#[test]
fn keygen_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let first = relaybox(&["keygen"], dir.path());
    assert!(first.status.success(), "{}", text(&first));
    let public = String::from_utf8(first.stdout).unwrap();
    assert_eq!(public.trim().len(), 64);
    let again = relaybox(&["keygen"], dir.path());
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("--force"));
    let forced = relaybox(&["keygen", "--force"], dir.path());
    assert!(forced.status.success());
    assert_ne!(String::from_utf8(forced.stdout).unwrap(), public);
}

/// Registers through the CLI; `typed` is how the user wrote the number.
fn cli_user(relay: &Relay, home: &str, typed: &str, e164: &str) {
    let out = relay.client_cli(home, &["register", typed]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("code was sent") && text(&out).contains(e164),
        "{}",
        text(&out)
    );
    let code = relay.code_for(e164);
    let phone = typed;
    let out = relay.client_cli(home, &["verify", phone, &code]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn two_cli_users_chat_through_the_relay_including_while_one_is_offline() {
    let relay = Relay::start();
    cli_user(&relay, "alice", "+1 (415) 555-0101", "+14155550101");
    cli_user(&relay, "bob", "(415) 555 0102", "+14155550102");
    // Bob is offline: nothing of his runs while Alice sends.
    let out = relay.client_cli("alice", &["send", "+14155550102", "hi", "bob"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains('✓'));
    let out = relay.client_cli(
        "bob",
        &[
            "listen",
            "--json",
            "--count",
            "1",
            "--timeout",
            "20",
            "--read",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(v["event"], "message");
    assert_eq!(v["from"], "+14155550101");
    assert_eq!(v["payload"]["body"], "hi bob");
    // Bob answers; Alice sees the reply and the receipts for her message.
    let out = relay.client_cli("bob", &["send", "+14155550101", "hello alice"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = relay.client_cli(
        "alice",
        &["listen", "--json", "--count", "1", "--timeout", "20"],
    );
    let all = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{all}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("RECEIPT_KIND_DELIVERED") && all.contains("RECEIPT_KIND_READ"),
        "{all}"
    );
    assert!(all.contains("hello alice"), "{all}");
    let out = relay.client_cli("alice", &["status"]);
    assert!(text(&out).contains("+14155550101"), "{}", text(&out));
}

#[test]
fn client_errors_are_specific_and_exit_non_zero() {
    let relay = Relay::start();
    let out = relay.client_cli("nobody", &["send", "+14155550102", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not registered yet"), "{}", text(&out));
    let out = relay.client_cli("x", &["register", "not a number"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("INVALID_PHONE_NUMBER"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_group_with_a_linked_companion_works_from_the_command_line() {
    let relay = Relay::start();
    cli_user(&relay, "alice", "+14155550101", "+14155550101");
    cli_user(&relay, "bob", "+14155550102", "+14155550102");
    // Alice pairs a laptop: `pair` waits in the background while the phone links it.
    let laptop = relay.dir.path().join("alice-laptop");
    let mut pair = Command::new(BIN)
        .args(["client", "--home"])
        .arg(&laptop)
        .args(["--relay", &relay.addr, "pair", "--wait", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let state = laptop.join("state.json");
    let deadline = Instant::now() + common::PATIENCE;
    while !state.exists() {
        assert!(Instant::now() < deadline, "pair wrote no state");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The code is on the companion's screen; the test reads it from its first lines.
    let mut stdout = pair.stdout.take().unwrap();
    let mut seen = String::new();
    let code = loop {
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(code) = seen.split_whitespace().find(|w| w.starts_with("rbx1:")) {
            break code.to_owned();
        }
        assert!(n > 0, "no pairing code in: {seen}");
    };
    let out = relay.client_cli("alice", &["link", &code]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Linked device 1"), "{}", text(&out));
    let paired = pair.wait_with_output().unwrap();
    assert!(
        paired.status.success(),
        "{}",
        String::from_utf8_lossy(&paired.stderr)
    );

    let out = relay.client_cli("alice", &["group", "create", "Branch 12", "+14155550102"]);
    assert!(out.status.success(), "{}", text(&out));
    let group = text(&out)
        .lines()
        .find_map(|l| l.strip_prefix("group:").map(|g| g.trim().to_owned()))
        .unwrap();
    let out = relay.client_cli("bob", &["group", "send", &group, "deliveries", "at", "ten"]);
    assert!(out.status.success(), "{}", text(&out));
    for home in ["alice", "alice-laptop"] {
        let out = relay.client_cli(
            home,
            &["listen", "--json", "--count", "1", "--timeout", "20"],
        );
        let all = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{home}: {all}");
        let msg = all
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["event"] == "message")
            .unwrap();
        assert_eq!(msg["payload"]["body"], "deliveries at ten", "{home}");
        assert_eq!(msg["group"], group.as_str(), "{home}");
    }
    let out = relay.client_cli("bob", &["mute", &group]);
    assert!(
        text(&out).contains("Muted") && text(&out).contains("20m"),
        "{}",
        text(&out)
    );
    let out = relay.client_cli("alice", &["group", "info", &group]);
    assert!(
        text(&out).contains("+14155550101 (admin)  devices [0, 1]"),
        "{}",
        text(&out)
    );
}

/// Entries under `dir` that group or other may read, write or enter.
fn shared_entries(dir: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bad.push(format!("{} {mode:o}", e.path().display()));
            }
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    bad
}

#[tokio::test]
async fn everything_in_the_data_directory_is_the_relay_users_alone() {
    use std::os::unix::fs::PermissionsExt;
    let mut relay = Relay::start();
    let mut alice = relay.user("alice", "+14155550101").await;
    let _bob = relay.user("bob", "+14155550102").await;
    alice.send_text("+14155550102", "private").await.unwrap();
    relay.stop();
    let data = relay.data_dir();
    assert_eq!(shared_entries(&data), Vec::<String>::new());
    // A data directory from before: sled's files readable by all. The next start fixes it.
    let db = data.join("db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(&db).unwrap().flatten() {
        if e.metadata().unwrap().is_file() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    assert!(!shared_entries(&data).is_empty());
    relay.restart();
    let _ = relay.user("carol", "+14155550103").await;
    relay.stop();
    assert_eq!(shared_entries(&data), Vec::<String>::new());
}

#[test]
fn a_group_id_names_a_conversation_for_send_chat_and_state_and_help_explains_the_arguments() {
    let relay = Relay::start();
    cli_user(&relay, "alice", "+14155550101", "+14155550101");
    cli_user(&relay, "bob", "+14155550102", "+14155550102");
    let out = relay.client_cli("alice", &["group", "create", "cold room", "+14155550102"]);
    assert!(out.status.success(), "{}", text(&out));
    let group = text(&out)
        .split_whitespace()
        .find(|w| w.starts_with('g') && w.len() > 8)
        .map(|w| {
            w.trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .unwrap_or_else(|| panic!("no group id in {}", text(&out)));
    let out = relay.client_cli("alice", &["send", &group, "door", "open"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains('✓'), "{}", text(&out));
    let out = relay.client_cli("alice", &["state", &group, "composing"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = relay.client_cli(
        "bob",
        &["listen", "--json", "--count", "1", "--timeout", "20"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("door open"), "{}", text(&out));
    // A receipt names the sender, and the error says so.
    let out = relay.client_cli("bob", &["receipt", "read", &group, "00"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("goes to the account that sent"),
        "{}",
        text(&out)
    );
    let help = relay.client_cli("alice", &["send", "--help"]);
    let help = text(&help);
    assert!(help.contains("<TO>") && help.contains("group id"), "{help}");
    assert!(
        help.contains("[TEXT]") && help.contains("joined with spaces"),
        "{help}"
    );
    let help = text(&relay.client_cli("alice", &["chat", "--help"]));
    assert!(
        help.contains("a group") && !help.contains("one person"),
        "{help}"
    );
}
