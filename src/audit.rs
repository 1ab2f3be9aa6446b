//! The audit log: one JSON line per admin action in `<data_dir>/audit.log` (mode 0600,
//! append-only, fsync'd before the answer leaves). It records who (a token fingerprint, or
//! `cli` for offline commands such as `relaybox restore`), the action, the target ids, the
//! outcome and the time. It never records message content: the relay has none, and the
//! admin API neither accepts nor returns any.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// File name of the audit log inside the data directory.
pub const AUDIT_FILE: &str = "audit.log";

/// One admin action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// RFC 3339, UTC.
    pub time: String,
    /// `token:<8 hex>` (the token's fingerprint), `anonymous` (no or a wrong token), `cli`.
    pub who: String,
    /// The route, e.g. `DELETE /v1/accounts/{phone}/devices/{device}`, or a command name.
    pub action: String,
    /// The ids the action was about (route parameters), e.g. `phone`, `device`.
    pub target: BTreeMap<String, String>,
    /// `ok`, or what went wrong (`unauthorized`, `not_found`, `bad_parameter`, …).
    pub outcome: String,
    /// The HTTP status answered (0 for offline commands).
    pub status: u16,
}

impl AuditEntry {
    pub fn now(
        who: impl Into<String>,
        action: impl Into<String>,
        target: BTreeMap<String, String>,
        outcome: impl Into<String>,
        status: u16,
    ) -> Self {
        Self {
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            who: who.into(),
            action: action.into(),
            target,
            outcome: outcome.into(),
            status,
        }
    }
}

/// When the log starts a new file: the `[audit]` section's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// The live file is rotated before a line would take it past this many bytes.
    pub max_file_bytes: u64,
    /// Rotated files kept (`audit.log.1` newest … `audit.log.{keep_files}` oldest).
    pub keep_files: u32,
}

impl From<&crate::config::AuditConfig> for Rotation {
    fn from(c: &crate::config::AuditConfig) -> Self {
        Self {
            max_file_bytes: c.max_file_bytes,
            keep_files: c.keep_files,
        }
    }
}

/// The name of the `n`th rotated file (`n` ≥ 1; 1 is the newest): `audit.log.{n}`.
pub fn rotated_name(n: u32) -> String {
    format!("{AUDIT_FILE}.{n}")
}

/// Whether `name` is the live audit log or a rotated one (`audit.log.{1..=MAX}`), as a
/// backup may carry them.
pub fn is_audit_file(name: &str) -> bool {
    if name == AUDIT_FILE {
        return true;
    }
    name.strip_prefix(AUDIT_FILE)
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|n| !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| (1..=crate::config::MAX_AUDIT_KEEP_FILES).contains(&n))
}

/// The audit files present in `data_dir`, oldest first (`audit.log.N` … `audit.log.1`,
/// `audit.log`), as (file name, path). Every rotated number is looked for, not just those of
/// the current `keep_files`, so a lowered setting still backs up what is on disk.
pub fn files(data_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = (1..=crate::config::MAX_AUDIT_KEEP_FILES)
        .rev()
        .map(rotated_name)
        .chain(std::iter::once(AUDIT_FILE.to_owned()))
        .map(|name| {
            let path = data_dir.join(&name);
            (name, path)
        })
        .collect();
    out.retain(|(_, path)| path.is_file());
    out
}

/// The append-only log file, rotated by size.
pub struct AuditLog {
    dir: PathBuf,
    path: PathBuf,
    rotation: Rotation,
    file: Mutex<Live>,
}

/// The live file and its size (kept, not asked of the file system per line).
struct Live {
    file: std::fs::File,
    bytes: u64,
}

fn open_live(path: &Path) -> std::io::Result<Live> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let bytes = file.metadata()?.len();
    Ok(Live { file, bytes })
}

impl AuditLog {
    /// Opens (creating, mode 0600) `<data_dir>/audit.log` for appending.
    pub fn open(data_dir: &Path, rotation: Rotation) -> std::io::Result<Self> {
        let path = data_dir.join(AUDIT_FILE);
        let live = open_live(&path)?;
        Ok(Self {
            dir: data_dir.to_owned(),
            path,
            rotation,
            file: Mutex::new(live),
        })
    }

    /// Appends `entry` and fsyncs it. A failure is logged: an audit line that cannot be
    /// written is an operator problem the relay reports, not one that stops the action.
    pub fn record(&self, entry: &AuditEntry) {
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        // One write of one line under the lock: lines never interleave, and a rotation
        // never splits a line across two files.
        let mut live = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let len = u64::try_from(line.len()).unwrap_or(u64::MAX);
        if live.bytes > 0 && live.bytes.saturating_add(len) > self.rotation.max_file_bytes {
            match self.rotate() {
                Ok(fresh) => *live = fresh,
                // Keep writing to the old file: a big file beats a lost line.
                Err(e) => tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    "Rotating the audit log failed; it keeps growing."
                ),
            }
        }
        match live
            .file
            .write_all(&line)
            .and_then(|()| live.file.sync_data())
        {
            Ok(()) => live.bytes = live.bytes.saturating_add(len),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "Writing the audit log failed.")
            }
        }
    }

    /// Shifts `audit.log.{n}` to `audit.log.{n+1}` (dropping the oldest beyond
    /// `keep_files`), renames the live file to `audit.log.1`, syncs the directory so the
    /// renames survive a power cut, and opens a new live file.
    fn rotate(&self) -> std::io::Result<Live> {
        let keep = self.rotation.keep_files.max(1);
        match std::fs::remove_file(self.dir.join(rotated_name(keep))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for n in (1..keep).rev() {
            match std::fs::rename(
                self.dir.join(rotated_name(n)),
                self.dir.join(rotated_name(n + 1)),
            ) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::rename(&self.path, self.dir.join(rotated_name(1)))?;
        let live = open_live(&self.path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        tracing::info!(path = %self.path.display(), kept = keep, "Audit log rotated.");
        Ok(live)
    }

    /// The last `limit` entries, oldest first, reaching into rotated files as needed.
    /// Lines that do not parse are skipped.
    pub fn tail(&self, limit: usize) -> std::io::Result<Vec<AuditEntry>> {
        // Under the lock, so a rotation cannot move a file between two reads.
        let _live = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let mut newest_first: Vec<AuditEntry> = Vec::new();
        for (_, path) in files(&self.dir).into_iter().rev() {
            let mut entries = read_tail(&path, limit - newest_first.len().min(limit))?;
            entries.reverse();
            newest_first.extend(entries);
            if newest_first.len() >= limit {
                break;
            }
        }
        newest_first.truncate(limit);
        newest_first.reverse();
        Ok(newest_first)
    }
}

/// The last `limit` entries of the audit log at `path`, oldest first.
pub fn read_tail(path: &Path, limit: usize) -> std::io::Result<Vec<AuditEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let entries: Vec<AuditEntry> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let from = entries.len().saturating_sub(limit);
    Ok(entries[from..].to_vec())
}

/// Appends one entry to the audit log of `data_dir` (for offline commands).
pub fn record_offline(
    data_dir: &Path,
    rotation: Rotation,
    action: &str,
    outcome: &str,
) -> std::io::Result<()> {
    let log = AuditLog::open(data_dir, rotation)?;
    log.record(&AuditEntry::now("cli", action, BTreeMap::new(), outcome, 0));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: Rotation = Rotation {
        max_file_bytes: 1 << 20,
        keep_files: 3,
    };

    fn entry(n: usize) -> AuditEntry {
        let target = BTreeMap::from([("n".to_owned(), n.to_string())]);
        AuditEntry::now("cli", "test", target, "ok", 200)
    }

    #[test]
    fn the_log_rotates_by_size_keeps_the_configured_files_and_tails_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let line = serde_json::to_vec(&entry(10)).unwrap().len() as u64 + 1;
        // Two lines per file.
        let rotation = Rotation {
            max_file_bytes: line * 2,
            keep_files: 2,
        };
        let log = AuditLog::open(dir.path(), rotation).unwrap();
        for n in 10..20 {
            log.record(&entry(n));
        }
        let names: Vec<String> = files(dir.path()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["audit.log.2", "audit.log.1", "audit.log"]);
        for (_, path) in files(dir.path()) {
            assert!(std::fs::metadata(&path).unwrap().len() <= line * 2);
        }
        // Ten lines, two per file, three files: the six newest survive.
        let tail = log.tail(100).unwrap();
        let ns: Vec<&str> = tail.iter().map(|e| e.target["n"].as_str()).collect();
        assert_eq!(ns, ["14", "15", "16", "17", "18", "19"]);
        let last3: Vec<String> = log
            .tail(3)
            .unwrap()
            .into_iter()
            .map(|e| e.target["n"].clone())
            .collect();
        assert_eq!(last3, ["17", "18", "19"]);
        // A reopened log continues the live file's size count.
        drop(log);
        let log = AuditLog::open(dir.path(), rotation).unwrap();
        log.record(&entry(20));
        assert_eq!(log.tail(1).unwrap()[0].target["n"], "20");
        assert_eq!(
            read_tail(&dir.path().join(AUDIT_FILE), 10).unwrap().len(),
            1
        );
    }

    #[test]
    fn audit_file_names_are_the_live_file_and_numbered_rotations_only() {
        assert!(is_audit_file("audit.log"));
        assert!(is_audit_file("audit.log.1"));
        assert!(is_audit_file("audit.log.100"));
        for bad in [
            "audit.log.0",
            "audit.log.01",
            "audit.log.101",
            "audit.log.",
            "audit.log.x",
            "audit.logs",
            "audit.log.1/x",
        ] {
            assert!(!is_audit_file(bad), "{bad}");
        }
    }

    #[test]
    fn entries_are_appended_and_read_back_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), BIG).unwrap();
        for n in 0..5 {
            let target = BTreeMap::from([("device".to_owned(), n.to_string())]);
            log.record(&AuditEntry::now("cli", "test", target, "ok", 200));
        }
        let tail = log.tail(2).unwrap();
        assert_eq!(tail.len(), 2);
        assert_eq!(tail[0].target["device"], "3");
        assert_eq!(tail[1].target["device"], "4");
    }
}
