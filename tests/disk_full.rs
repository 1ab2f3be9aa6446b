//! Disk full, through the real binary: the data directory is a small tmpfs; a filler file takes
//! the free space below `relay.min_free_disk_bytes`; new sends are refused with
//! `STORAGE_FULL` (SDK and `relaybox client`, which exits non-zero) while everything already
//! acknowledged is still delivered; the relay never panics and accepts sends again by itself
//! once the filler is removed.
//!
//! Needs `mount -t tmpfs` (root or CAP_SYS_ADMIN). Where mounting is not permitted the test
//! says so on stderr and passes without checking anything, unless `DISK_FULL_REQUIRE_MOUNT=1`
//! is set (CI on a machine that can mount sets it), which makes that a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{next_event, Relay};
use relaybox::client::connection::ClientError;
use relaybox::client::Event;
use relaybox::e2e::payload::{Inner, Payload};
use relaybox::ids::MsgId;
use relaybox::wire::messages::ErrorCode;

const ALICE: &str = "+14155550301";
const BOB: &str = "+14155550302";
const CAROL: &str = "+14155550303";
const MIB: u64 = 1024 * 1024;
/// The tmpfs size and the watermark: small, but room for sled's first segments.
const FS_MIB: u64 = 96;
const MIN_FREE_MIB: u64 = 24;

/// Unmounts (lazily) when the test ends, however it ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path) -> Result<(), String> {
    std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("size={FS_MIB}m,mode=0700"))
        .arg("tmpfs")
        .arg(at)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let st = rustix::fs::statvfs(dir).unwrap();
    st.f_bavail * st.f_frsize
}

fn text(body: &str) -> Inner {
    Inner::new(
        relaybox::clock::now_ms(),
        Payload::Text { body: body.into() },
    )
}

#[tokio::test]
async fn a_nearly_full_disk_answers_storage_full_loses_nothing_acked_and_recovers_when_freed() {
    let mut mounted = Ok(());
    let relay = Relay::start_prepared("", |r| {
        mounted = mount_tmpfs(&r.data_dir());
        r.envs.push((
            "RELAYBOX_RELAY_MIN_FREE_DISK_BYTES".into(),
            (MIN_FREE_MIB * MIB).to_string(),
        ));
    });
    if let Err(why) = mounted {
        let required = std::env::var("DISK_FULL_REQUIRE_MOUNT").is_ok_and(|v| v == "1");
        eprintln!("SKIPPED disk_full: cannot mount a tmpfs on the data directory: {why}");
        assert!(
            !required,
            "DISK_FULL_REQUIRE_MOUNT=1 but mount failed: {why}"
        );
        return;
    }
    let _mount = Mount(relay.data_dir());
    let data = relay.data_dir();

    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    let carol = relay.user("carol", CAROL).await;
    drop(carol);
    bob.disconnect();
    let mut acked = Vec::new();
    for i in 0..5 {
        let (id, _) = alice
            .send_text(BOB, &format!("before full {i}"))
            .await
            .unwrap();
        acked.push(id);
    }

    // Fill the filesystem to 8 MiB free: below the 24 MiB watermark, far from ENOSPC.
    let filler = data.join("filler");
    let fill = free_bytes(&data).saturating_sub(8 * MIB);
    std::fs::write(&filler, vec![0u8; usize::try_from(fill).unwrap()]).unwrap();
    assert!(free_bytes(&data) < MIN_FREE_MIB * MIB);

    let refused = MsgId::random();
    let err = alice
        .send_inner(BOB, refused, &text("while full"))
        .await
        .expect_err("a send on a full disk is refused");
    let code = err
        .downcast_ref::<ClientError>()
        .and_then(|e| e.relay_code());
    assert_eq!(code, Some(ErrorCode::StorageFull), "got {err:#}");
    // A retry of a message the relay already stored is still acknowledged.
    let again = alice
        .send_inner(BOB, acked[0], &text("before full 0"))
        .await;
    assert!(again.is_ok(), "retry of a stored msg_id: {again:?}");

    // The client CLI prints the code and exits non-zero.
    let home = relay.dir.path().join("client-carol");
    let (code, _out, err) = relay.cli(&[
        "client",
        "--home",
        home.to_str().unwrap(),
        "--relay",
        &relay.addr,
        "send",
        BOB,
        "from the cli",
    ]);
    assert_ne!(code, 0, "the CLI exits non-zero on storage_full");
    assert!(err.contains("STORAGE_FULL"), "CLI stderr: {err}");

    // Everything acknowledged before is still delivered while the disk is full.
    for id in &acked {
        match next_event(&mut bob).await {
            Event::Message { msg_id, .. } => assert_eq!(&msg_id, id),
            other => panic!("expected a queued message, got {other:?}"),
        }
    }

    // Space freed: the relay accepts again, by itself.
    std::fs::remove_file(&filler).unwrap();
    let (id, _) = alice.send_text(BOB, "after freeing").await.unwrap();
    match next_event(&mut bob).await {
        Event::Message { msg_id, .. } => assert_eq!(msg_id, id),
        other => panic!("expected the new message, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = relay.logs();
    assert!(!logs.contains("panicked"), "the relay panicked:\n{logs}");
    assert!(logs.contains("Free disk space is below relay.min_free_disk_bytes"));
    assert!(logs.contains("Free disk space is back above relay.min_free_disk_bytes"));
}
