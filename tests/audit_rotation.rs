//! The audit log's rotation by size, through the real binary: admin requests fill it, it
//! rotates into `audit.log.1` … keeping `audit.keep_files`, `relaybox admin audit` reads
//! across the files, a backup carries every one of them and a restore puts them back; bad
//! `[audit]` values stop `serve` with exit 64 and a message naming the key.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{Relay, BIN};

/// Bytes of the smallest rotation size the relay accepts.
const MAX_FILE_BYTES: u64 = 4096;

fn audit_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with("audit.log"))
        .collect();
    names.sort();
    names
}

#[test]
fn the_audit_log_rotates_by_size_keeps_the_configured_files_and_backups_carry_them() {
    let relay = Relay::start_with(&format!(
        "[audit]\nmax_file_bytes = {MAX_FILE_BYTES}\nkeep_files = 2\n"
    ));
    let data = relay.data_dir();
    let token = relay.admin_token();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    // Each request is one line of roughly 150 bytes: 200 of them fill about seven files.
    for n in 0..200 {
        let url = format!("{}/v1/accounts/%2B1415555{n:04}", relay.admin_url());
        let res = agent
            .get(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
        assert_eq!(res.status().as_u16(), 404);
    }
    assert_eq!(
        audit_files(&data),
        ["audit.log", "audit.log.1", "audit.log.2"],
        "keep_files = 2 keeps two rotated files beside the live one"
    );
    let mut lines = 0;
    for name in audit_files(&data) {
        let path = data.join(&name);
        let meta = std::fs::metadata(&path).unwrap();
        assert!(
            meta.len() <= MAX_FILE_BYTES,
            "{name} is {} bytes",
            meta.len()
        );
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600,
            "{name}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["status"], 404, "{line}");
            lines += 1;
        }
    }
    assert!(lines < 200, "older files were deleted ({lines} lines kept)");
    let log = relay.logs();
    assert!(log.contains("Audit log rotated."), "{log}");

    // The last entries come from the live file and the rotated ones, newest last.
    let (code, out, err) = relay.cli(&[
        "admin",
        "--admin",
        &relay.admin_url(),
        "--data-dir",
        data.to_str().unwrap(),
        "--json",
        "audit",
        "--limit",
        &lines.to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), lines);
    let last = entries.last().unwrap()["target"]["phone"].as_str().unwrap();
    assert_eq!(last, "+14155550199");

    // A backup carries every audit file; a restore puts each back.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("relay.tar");
    let (code, _, err) = relay.cli(&[
        "backup",
        "--out",
        file.to_str().unwrap(),
        "--admin",
        &relay.admin_url(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let listing = Command::new("tar").arg("-tf").arg(&file).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for name in ["audit.log", "audit.log.1", "audit.log.2"] {
        assert!(
            listing.lines().any(|l| l == name),
            "{name} not in:\n{listing}"
        );
    }
    let restored = work.path().join("restored");
    let out = Command::new(BIN)
        .arg("restore")
        .arg(&file)
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["audit.log.1", "audit.log.2"] {
        assert_eq!(
            std::fs::read(restored.join(name)).unwrap(),
            std::fs::read(data.join(name)).unwrap(),
            "{name} restored as it was"
        );
    }
    let live = std::fs::read_to_string(restored.join("audit.log")).unwrap();
    assert!(
        live.lines().last().unwrap().contains("\"restore "),
        "{live}"
    );
}

#[test]
fn bad_audit_settings_stop_the_relay_before_it_binds_with_a_specific_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[audit]\nmax_file_bytes = 1000\nkeep_files = 0\n",
    )
    .unwrap();
    for cmd in ["check-config", "serve"] {
        let out = Command::new(BIN)
            .arg(cmd)
            .arg("--config")
            .arg(dir.path().join("bad.toml"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{cmd}: {err}");
        assert!(
            err.contains("audit.max_file_bytes") && err.contains("must be at least 4096"),
            "{cmd}: {err}"
        );
        assert!(
            err.contains("audit.keep_files") && err.contains("between 1 and 100, got 0"),
            "{cmd}: {err}"
        );
    }
}
