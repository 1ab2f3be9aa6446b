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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The append-only log file.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    /// Opens (creating, mode 0600) `<data_dir>/audit.log` for appending.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join(AUDIT_FILE);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    /// Appends `entry` and fsyncs it. A failure is logged: an audit line that cannot be
    /// written is an operator problem the relay reports, not one that stops the action.
    pub fn record(&self, entry: &AuditEntry) {
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        // One write of one line under the lock: lines never interleave.
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
            tracing::error!(path = %self.path.display(), error = %e, "Writing the audit log failed.");
        }
    }

    /// The last `limit` entries, oldest first. Lines that do not parse are skipped.
    pub fn tail(&self, limit: usize) -> std::io::Result<Vec<AuditEntry>> {
        read_tail(&self.path, limit)
    }
}

/// The last `limit` entries of the audit log at `path`, oldest first.
pub fn read_tail(path: &Path, limit: usize) -> std::io::Result<Vec<AuditEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(limit);
    Ok(lines[from..]
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Appends one entry to the audit log of `data_dir` (for offline commands).
pub fn record_offline(data_dir: &Path, action: &str, outcome: &str) -> std::io::Result<()> {
    let log = AuditLog::open(data_dir)?;
    log.record(&AuditEntry::now("cli", action, BTreeMap::new(), outcome, 0));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_appended_and_read_back_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
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
