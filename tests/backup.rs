//! `relaybox backup` and `relaybox restore` through the real binary: a backup taken online
//! is restored into a new data directory, and a new relay started on it delivers what was
//! queued; bad archives and a non-empty target are refused with specific errors.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{next_event, quiet_for, Relay};
use relaybox::client::{Client, Event};
use relaybox::e2e::payload::Payload;

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";

async fn next_text(c: &mut Client) -> String {
    loop {
        if let Event::Message { inner, .. } = next_event(c).await {
            let Payload::Text { body } = inner.payload else {
                panic!("not text")
            };
            return body;
        }
    }
}

/// Takes a backup of `relay` into `out` with `relaybox backup`.
fn backup(relay: &Relay, out: &Path) {
    let data = relay.data_dir().display().to_string();
    let (code, stdout, err) = relay.cli(&[
        "backup",
        "--out",
        out.to_str().unwrap(),
        "--admin",
        &relay.admin_url(),
        "--data-dir",
        &data,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("Backup written"), "{stdout}");
}

/// Runs `relaybox restore FILE --data-dir DIR`; returns (exit code, stderr).
fn restore(file: &Path, dir: &Path) -> (i32, String) {
    let out = Command::new(common::BIN)
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A backup of a relay with one account and some state, for the refusal tests.
async fn some_backup(dir: &Path) -> (Relay, PathBuf) {
    let relay = Relay::start();
    let _alice = relay.user("alice", ALICE).await;
    let file = dir.join("backup.tar");
    backup(&relay, &file);
    (relay, file)
}

/// Offset of the 512-byte tar header naming `name`.
fn header_of(archive: &[u8], name: &str) -> usize {
    (0..archive.len())
        .step_by(512)
        .find(|&at| archive[at..].starts_with(name.as_bytes()) && archive[at + name.len()] == 0)
        .unwrap_or_else(|| panic!("{name} not in the archive"))
}

#[tokio::test]
async fn a_backup_restored_into_a_new_relay_delivers_the_messages_queued_at_backup_time() {
    let mut old = Relay::start();
    let mut alice = old.user("alice", ALICE).await;
    let bob = old.user("bob", BOB).await;
    drop(bob);
    alice.send_text(BOB, "queued one").await.unwrap();
    alice.send_text(BOB, "queued two").await.unwrap();
    // Each start moves sled's id generator up, so the old relay's queue ids are higher than a
    // freshly restored database would hand out on its own.
    for _ in 0..3 {
        old.stop();
        old.restart();
    }
    // Blob files are in the backup, unfinished uploads are not.
    let blobs = old.data_dir().join("blobs");
    std::fs::create_dir_all(blobs.join("ab")).unwrap();
    std::fs::create_dir_all(blobs.join("tmp")).unwrap();
    std::fs::write(blobs.join("ab/abcdef"), b"ciphertext of a blob").unwrap();
    std::fs::write(blobs.join("tmp/upload-1"), b"half an upload").unwrap();

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("relay.tar");
    backup(&old, &file);
    assert!(!work.path().join("relay.tar.partial").exists());
    let listing = Command::new("tar").arg("-tf").arg(&file).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for name in ["store.rbx", "relay.key", "blobs/ab/abcdef", "MANIFEST.json"] {
        assert!(
            listing.lines().any(|l| l == name),
            "{name} not in:\n{listing}"
        );
    }
    assert!(
        !listing.contains("tmp/upload-1") && !listing.contains("admin.token"),
        "{listing}"
    );
    old.stop();

    let new = Relay::start_from_backup(&file);
    assert_eq!(
        std::fs::read(new.data_dir().join("blobs/ab/abcdef")).unwrap(),
        b"ciphertext of a blob"
    );
    // (The relay makes an empty blobs/tmp/ for new uploads when it starts.)
    assert!(!new.data_dir().join("blobs/tmp/upload-1").exists());
    // The same relay key, so clients that pinned it connect without a warning.
    assert_eq!(
        std::fs::read(new.data_dir().join("relay.key")).unwrap(),
        std::fs::read(old.data_dir().join("relay.key")).unwrap()
    );
    // New traffic on the restored relay queues after the restored entries (its sequence
    // numbers continue past the old relay's instead of colliding with them).
    let mut alice = Client::open(&old.dir.path().join("client-alice"), Some(&new.addr)).unwrap();
    alice.send_text(BOB, "after the restore").await.unwrap();
    // Bob comes back, to the new relay, and gets what was queued when the backup was taken.
    let mut bob = Client::open(&old.dir.path().join("client-bob"), Some(&new.addr)).unwrap();
    assert_eq!(next_text(&mut bob).await, "queued one");
    assert_eq!(next_text(&mut bob).await, "queued two");
    assert_eq!(next_text(&mut bob).await, "after the restore");
    let audit = std::fs::read_to_string(new.data_dir().join("audit.log")).unwrap();
    assert!(
        audit.contains("\"who\":\"cli\"") && audit.contains("restore"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_backup_taken_while_messages_flow_restores_an_unbroken_prefix_of_them() {
    let old = Relay::start();
    let mut alice = old.user("alice", ALICE).await;
    let bob = old.user("bob", BOB).await;
    drop(bob);
    let mut sent = 0;
    for _ in 0..10 {
        sent += 1;
        alice.send_text(BOB, &format!("m{sent}")).await.unwrap();
    }
    let acked_before = sent;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("busy.tar");
    let args: Vec<String> = [
        "--config",
        old.dir.path().join("relaybox.toml").to_str().unwrap(),
        "backup",
        "--out",
        file.to_str().unwrap(),
        "--admin",
        &old.admin_url(),
        "--data-dir",
        old.data_dir().to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let taking = tokio::task::spawn_blocking(move || {
        Command::new(common::BIN).args(&args).output().unwrap()
    });
    while !taking.is_finished() {
        sent += 1;
        alice.send_text(BOB, &format!("m{sent}")).await.unwrap();
    }
    let out = taking.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acked_after = sent;
    for _ in 0..3 {
        sent += 1;
        alice.send_text(BOB, &format!("m{sent}")).await.unwrap();
    }

    let new = Relay::start_from_backup(&file);
    let mut bob = Client::open(&old.dir.path().join("client-bob"), Some(&new.addr)).unwrap();
    let mut got = Vec::new();
    while let Some(e) = quiet_for(&mut bob, std::time::Duration::from_secs(2)).await {
        if let Event::Message { inner, .. } = e {
            if let Payload::Text { body } = inner.payload {
                got.push(body);
            }
        }
    }
    // Every message acknowledged before the backup began is there, in order, with no gap;
    // nothing sent after the backup ended is.
    let k = got.len();
    let want: Vec<String> = (1..=k).map(|n| format!("m{n}")).collect();
    assert_eq!(got, want);
    assert!(
        k >= acked_before && k <= acked_after,
        "{k} not in {acked_before}..={acked_after}"
    );
}

#[tokio::test]
async fn restore_refuses_a_data_directory_that_is_not_empty() {
    let work = tempfile::tempdir().unwrap();
    let (_relay, file) = some_backup(work.path()).await;
    let target = work.path().join("occupied");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("notes.txt"), b"keep me").unwrap();
    let (code, err) = restore(&file, &target);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(std::fs::read(target.join("notes.txt")).unwrap(), b"keep me");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1);
}

#[tokio::test]
async fn truncated_corrupt_foreign_and_tampered_archives_are_refused_and_leave_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let (_relay, file) = some_backup(work.path()).await;
    let good = std::fs::read(&file).unwrap();

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    cases.push(("cut in half", good[..good.len() / 2].to_vec(), "truncated"));
    cases.push((
        "cut before the manifest",
        good[..header_of(&good, "MANIFEST.json")].to_vec(),
        "ends before its manifest",
    ));
    let mut flipped = good.clone();
    let key = header_of(&good, "relay.key") + 512;
    flipped[key] ^= 0x01;
    cases.push((
        "one bit flipped",
        flipped,
        "relay.key does not match its checksum",
    ));
    cases.push((
        "not an archive",
        b"this is a shopping list, not a backup\n".repeat(40),
        "corrupt",
    ));
    // A tar entry that climbs out of the data directory.
    let mut evil = Vec::new();
    {
        let mut b = tar::Builder::new(&mut evil);
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_size(3);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, &b"boo"[..]).unwrap();
        b.finish().unwrap();
    }
    cases.push(("path traversal", evil, "unexpected entry \"../escape\""));

    for (what, bytes, expected) in cases {
        let bad = work.path().join("bad.tar");
        std::fs::write(&bad, &bytes).unwrap();
        let target = work
            .path()
            .join(format!("restore-{}", what.replace(' ', "-")));
        let (code, err) = restore(&bad, &target);
        assert_eq!(code, 1, "{what}: {err}");
        assert!(
            err.contains(expected),
            "{what}: expected {expected:?} in {err}"
        );
        let left: Vec<_> = std::fs::read_dir(&target)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{what}: left {left:?}");
        assert!(!work.path().join("escape").exists());
    }

    // The good archive still restores.
    let (code, err) = restore(&file, &work.path().join("fine"));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn backup_says_the_relay_is_not_running_with_exit_69() {
    let mut relay = Relay::start();
    let url = relay.admin_url();
    relay.stop();
    let data = relay.data_dir().display().to_string();
    let out = relay.dir.path().join("never.tar");
    let (code, _, err) = relay.cli(&[
        "backup",
        "--out",
        out.to_str().unwrap(),
        "--admin",
        &url,
        "--data-dir",
        &data,
    ]);
    assert_eq!(code, 69, "{err}");
    assert!(!out.exists());
    let (code, _, _) = relay.cli(&["restore"]);
    assert_eq!(code, 64);
}
