//! Restoring a backup archive into an empty data directory, checking it as it goes.
//!
//! Files are written to their final places while their checksums are computed; the
//! manifest, last in the archive, is then compared with what arrived. On any failure
//! everything written is removed again, so the directory is left as empty as it was found.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

use super::{
    BackupError, FileEntry, Hashing, Manifest, BLOBS_DIR, BLOBS_TMP, MANIFEST, MAX_MANIFEST_BYTES,
    STORE_IMAGE,
};
use crate::store::Store;

/// Restores the archive read from `input` into `data_dir`, which must be missing or empty.
pub fn restore(input: impl Read, data_dir: &Path) -> Result<Manifest, BackupError> {
    if let Ok(mut entries) = std::fs::read_dir(data_dir) {
        if entries.next().is_some() {
            return Err(BackupError::NotEmpty(data_dir.to_owned()));
        }
    }
    crate::files::create_private_dir(data_dir)
        .map_err(|e| BackupError::Io(std::io::Error::other(format!("{e:#}"))))?;
    match unpack(input, data_dir) {
        Ok(m) => Ok(m),
        Err(e) => {
            empty_dir(data_dir);
            Err(e)
        }
    }
}

fn unpack(input: impl Read, data_dir: &Path) -> Result<Manifest, BackupError> {
    let mut archive = tar::Archive::new(input);
    let mut seen: BTreeMap<String, FileEntry> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    let entries = archive.entries().map_err(damaged)?;
    for entry in entries {
        let mut entry = entry.map_err(damaged)?;
        let name = entry
            .path()
            .map_err(damaged)?
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| BackupError::Corrupt("an entry name is not UTF-8".into()))?;
        if manifest.is_some() {
            return Err(BackupError::Corrupt(format!(
                "{name} comes after the manifest"
            )));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(BackupError::Corrupt(format!(
                "{name} is not a regular file (links and devices are never in a backup)"
            )));
        }
        if seen.contains_key(&name) {
            return Err(BackupError::Corrupt(format!("{name} appears twice")));
        }
        let declared = entry.header().size().map_err(damaged)?;
        if name == MANIFEST {
            if declared > MAX_MANIFEST_BYTES {
                return Err(BackupError::Corrupt("the manifest is too large".into()));
            }
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(damaged)?;
            let m: Manifest = serde_json::from_slice(&text)
                .map_err(|e| BackupError::Corrupt(format!("the manifest does not parse: {e}")))?;
            manifest = Some(m);
            continue;
        }
        let mut hashed = Hashing::new(&mut entry);
        if name == STORE_IMAGE {
            Store::import_from(data_dir, &mut hashed)?;
            // The image ends with its own end tag; anything after it is not from relaybox.
            let mut rest = Vec::new();
            hashed.read_to_end(&mut rest).map_err(damaged)?;
            if !rest.is_empty() {
                return Err(BackupError::Corrupt(
                    "the store image has trailing bytes".into(),
                ));
            }
        } else {
            let target = target_path(data_dir, &name)?;
            write_new(&target, &mut hashed)?;
        }
        let (bytes, sha256) = hashed.finish();
        if bytes != declared {
            return Err(BackupError::Truncated(format!(
                "{name} holds {bytes} of {declared} bytes"
            )));
        }
        seen.insert(
            name.clone(),
            FileEntry {
                path: name,
                bytes,
                sha256,
            },
        );
    }
    let manifest = manifest.ok_or_else(|| {
        BackupError::Truncated(
            "it ends before its manifest (an interrupted download or copy?)".into(),
        )
    })?;
    check(&manifest, &seen)?;
    crate::store::fsync_tree(data_dir)?;
    Ok(manifest)
}

/// Compares the manifest with the files that arrived.
fn check(manifest: &Manifest, seen: &BTreeMap<String, FileEntry>) -> Result<(), BackupError> {
    if manifest.format != super::FORMAT {
        return Err(BackupError::Corrupt(format!(
            "the manifest names format {:?}, not {:?}",
            manifest.format,
            super::FORMAT
        )));
    }
    if manifest.format_version > super::FORMAT_VERSION {
        return Err(BackupError::Version(manifest.format_version));
    }
    for f in &manifest.files {
        match seen.get(&f.path) {
            None => {
                return Err(BackupError::Truncated(format!(
                    "{} is listed in the manifest but missing",
                    f.path
                )))
            }
            Some(got) if got != f => {
                return Err(BackupError::Checksum {
                    path: f.path.clone(),
                })
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = seen
        .keys()
        .find(|p| !manifest.files.iter().any(|f| &f.path == *p))
    {
        return Err(BackupError::Corrupt(format!(
            "{extra} is not listed in the manifest"
        )));
    }
    for required in [STORE_IMAGE, crate::files::RELAY_KEY_FILE] {
        if !seen.contains_key(required) {
            return Err(BackupError::Corrupt(format!("{required} is missing")));
        }
    }
    Ok(())
}

/// Where an archive entry goes: only the names a backup holds, never outside `data_dir`.
fn target_path(data_dir: &Path, name: &str) -> Result<std::path::PathBuf, BackupError> {
    let unexpected = || {
        BackupError::Corrupt(format!(
            "unexpected entry {name:?} (not written by relaybox, or tampered with)"
        ))
    };
    if name == crate::files::RELAY_KEY_FILE || crate::audit::is_audit_file(name) {
        return Ok(data_dir.join(name));
    }
    let path = Path::new(name);
    let mut parts = path.components();
    let top = parts.next();
    if top == Some(Component::Normal(super::MQTT_DIR.as_ref())) {
        let safe = parts.clone().count() > 0 && parts.all(|c| matches!(c, Component::Normal(_)));
        return if safe {
            Ok(data_dir.join(path))
        } else {
            Err(unexpected())
        };
    }
    if top != Some(Component::Normal(BLOBS_DIR.as_ref())) {
        return Err(unexpected());
    }
    let rest: Vec<Component> = parts.collect();
    let safe = !rest.is_empty()
        && rest.iter().all(|c| matches!(c, Component::Normal(_)))
        && rest.first() != Some(&Component::Normal(BLOBS_TMP.as_ref()));
    if !safe {
        return Err(unexpected());
    }
    Ok(data_dir.join(path))
}

/// Writes a new file (mode 0600, parents 0700) and fsyncs it.
fn write_new(path: &Path, data: &mut impl Read) -> Result<(), BackupError> {
    if let Some(parent) = path.parent() {
        crate::files::create_private_dir(parent)
            .map_err(|e| BackupError::Io(std::io::Error::other(format!("{e:#}"))))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    std::io::copy(data, &mut f).map_err(damaged)?;
    f.flush()?;
    f.sync_all()?;
    Ok(())
}

/// An error reading the archive: a short read means it was cut off.
fn damaged(e: std::io::Error) -> BackupError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof
        || e.to_string().contains("failed to read entire block")
    {
        BackupError::Truncated(e.to_string())
    } else {
        BackupError::Corrupt(format!("not a readable tar archive: {e}"))
    }
}

/// Removes everything under `dir` (it was empty before the restore began).
fn empty_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_outside_the_backup_layout_are_refused() {
        let d = Path::new("data");
        assert!(target_path(d, "relay.key").is_ok());
        assert!(target_path(d, "blobs/ab/cdef").is_ok());
        assert!(target_path(d, "audit.log").is_ok());
        assert!(target_path(d, "audit.log.3").is_ok());
        for bad in [
            "audit.log.0",
            "audit.log.1/x",
            "../etc/passwd",
            "/etc/passwd",
            "blobs/../../x",
            "blobs/tmp/upload",
            "blobs",
            "db/conf",
            "admin.token",
        ] {
            assert!(target_path(d, bad).is_err(), "{bad} accepted");
        }
    }
}
