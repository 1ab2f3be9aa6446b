//! Writing a backup archive (the format is in the module docs of `backup`).

use std::io::{Read, Seek, Write};
use std::path::Path;

use super::{BackupError, FileEntry, Hashing, Manifest, MANIFEST, STORE_IMAGE};
use crate::store::Store;

/// Writes a backup of `store` and the files of `data_dir` to `out`. Blocking; the store
/// pauses writes only while its image is taken (see `store::backup`).
pub fn create(store: &Store, data_dir: &Path, out: impl Write) -> Result<Manifest, BackupError> {
    let created = std::time::SystemTime::now();
    let created_at_ms = crate::clock::now_ms();
    let mtime = created_at_ms / 1000;
    let mut tar = tar::Builder::new(out);
    let mut files = Vec::new();

    // The store image goes to an unnamed file first: it is hashed while written, and its
    // size must be known for the tar header.
    let mut image = Hashing::new(std::io::BufWriter::new(tempfile::tempfile_in(data_dir)?));
    let stats = store.export_to(&mut image)?;
    let (mut image_file, entry) = image.finish_into_entry(STORE_IMAGE)?;
    image_file.rewind()?;
    append(&mut tar, STORE_IMAGE, entry.bytes, mtime, &mut image_file)?;
    files.push(entry);

    let key_path = data_dir.join(crate::files::RELAY_KEY_FILE);
    files.push(append_file(
        &mut tar,
        crate::files::RELAY_KEY_FILE,
        &key_path,
        mtime,
    )?);

    // The audit log keeps growing while requests arrive: copy what its files hold now, the
    // live file first. A rotation between two reads then repeats a file's lines under the
    // next name rather than losing them.
    for (name, path) in crate::audit::files(data_dir).into_iter().rev() {
        match std::fs::read(&path) {
            Ok(bytes) => files.push(append_bytes(&mut tar, &name, &bytes, mtime)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }

    // Blob files are immutable once renamed into place; one the collector removes after the
    // listing is simply not in the backup.
    for (rel, path) in super::blob_files(data_dir)?
        .into_iter()
        .chain(super::mqtt_files(data_dir)?)
    {
        match std::fs::File::open(&path) {
            Ok(f) => files.push(append_open(&mut tar, &rel, f, mtime)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }

    let manifest = Manifest {
        format: super::FORMAT.to_owned(),
        format_version: super::FORMAT_VERSION,
        relaybox_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version: crate::store::SCHEMA_VERSION,
        created_at: humantime::format_rfc3339_seconds(created).to_string(),
        created_at_ms,
        store_trees: stats.trees,
        store_entries: stats.entries,
        files,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Corrupt(format!("encoding the manifest: {e}")))?;
    append_bytes(&mut tar, MANIFEST, &json, mtime)?;
    let mut out = tar.into_inner()?;
    out.flush()?;
    Ok(manifest)
}

impl Hashing<std::io::BufWriter<std::fs::File>> {
    /// The hashed file and its manifest entry under `path`.
    fn finish_into_entry(self, path: &str) -> std::io::Result<(std::fs::File, FileEntry)> {
        use sha2::Digest;
        let Self {
            inner,
            hasher,
            bytes,
        } = self;
        let file = inner.into_inner().map_err(|e| e.into_error())?;
        Ok((
            file,
            FileEntry {
                path: path.to_owned(),
                bytes,
                sha256: hex::encode(hasher.finalize()),
            },
        ))
    }
}

fn header(len: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(len);
    h.set_mode(0o600);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    len: u64,
    mtime: u64,
    data: impl Read,
) -> Result<(), BackupError> {
    let mut h = header(len, mtime);
    // `take` guards against a file that grew since its length was read: the header's size
    // is what the archive holds.
    tar.append_data(&mut h, path, data.take(len))?;
    Ok(())
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    mtime: u64,
) -> Result<FileEntry, BackupError> {
    let mut hashed = Hashing::new(bytes);
    append(tar, path, bytes.len() as u64, mtime, &mut hashed)?;
    let (bytes, sha256) = hashed.finish();
    Ok(FileEntry {
        path: path.to_owned(),
        bytes,
        sha256,
    })
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    path: &Path,
    mtime: u64,
) -> Result<FileEntry, BackupError> {
    let f = std::fs::File::open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    append_open(tar, name, f, mtime)
}

fn append_open<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    f: std::fs::File,
    mtime: u64,
) -> Result<FileEntry, BackupError> {
    let len = f.metadata()?.len();
    let mut hashed = Hashing::new(f);
    append(tar, name, len, mtime, &mut hashed)?;
    let (bytes, sha256) = hashed.finish();
    if bytes != len {
        return Err(BackupError::Io(std::io::Error::other(format!(
            "{name} shrank while it was copied"
        ))));
    }
    Ok(FileEntry {
        path: name.to_owned(),
        bytes,
        sha256,
    })
}
