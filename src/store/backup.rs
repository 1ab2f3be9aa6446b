//! A consistent image of the whole store, for `relaybox backup` and `relaybox restore`.
//!
//! # Consistency
//!
//! sled has no snapshots, and its own `Db::export` reads tree after tree while writers go on,
//! so an export taken under load could hold a queue entry without the device it belongs to,
//! or a "seen" record without its entries. Every write path of the store takes the *write
//! gate* shared ([`Store::writing`]); [`Store::export_to`] takes it exclusively for the
//! length of the export, so the image is one point in time: the state after some set of
//! whole store operations, which is what a crash would also leave (see the module docs of
//! `store`). Writes wait for the export (reads do not); the image is written to a file on
//! the same disk, so the pause is about the time to copy the database once (0.23 s for
//! 50,000 queue entries, 18 MB, in a debug build). Write paths are synchronous, so a writer
//! on the relay's arbiter blocks that thread for the pause: sessions stall briefly, none is
//! dropped.
//!
//! # Format
//!
//! ```text
//! "RBXSTORE" version:u8 (=1) id_floor:u64-be
//! then records, each a tag byte:
//!   0x01 name_len:u32-be name          a tree; the entries that follow belong to it
//!   0x02 key_len:u32-be key val_len:u32-be value
//!   0x00                               end of image
//! ```
//!
//! `id_floor` is the store's next id at export time: queue sequence numbers come from sled's
//! id generator, and a new database starts it again near zero, so an import records
//! `id_floor` as an offset added to every new id (`meta.rs`); otherwise new entries would
//! sort before restored ones, or overwrite them.

use std::io::{Read, Write};
use std::path::Path;

use super::{Store, StoreError};

const MAGIC: &[u8; 8] = b"RBXSTORE";
const VERSION: u8 = 1;
const TAG_END: u8 = 0;
const TAG_TREE: u8 = 1;
const TAG_ENTRY: u8 = 2;
/// Largest key, value or tree name an image may hold; a bigger length means corruption.
const MAX_FIELD_BYTES: u32 = 64 * 1024 * 1024;

/// What an export or import moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageStats {
    pub trees: u64,
    pub entries: u64,
}

impl Store {
    /// The shared side of the write gate: every write path holds it while it writes.
    pub(super) fn writing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        // The guarded value is `()`: a poisoned lock protects nothing that could be torn.
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a consistent image of every tree to `out` (see the module docs). Blocking:
    /// call it off the async runtime.
    pub fn export_to(&self, out: &mut impl Write) -> Result<ImageStats, StoreError> {
        let _exclusive = self.gate.write().unwrap_or_else(|p| p.into_inner());
        // The image is sled's trees: what the message log holds moves into them first (no
        // write can start meanwhile, every write path holds the gate).
        self.log.retire_all()?;
        self.abuse_stats_write_back()?;
        let id_floor = self.next_id()?.max(self.log.appended().saturating_add(1));
        out.write_all(MAGIC)?;
        out.write_all(&[VERSION])?;
        out.write_all(&id_floor.to_be_bytes())?;
        let mut stats = ImageStats::default();
        // In name order, so that two images of the same data are the same bytes.
        let mut names = self.db.tree_names();
        names.sort();
        for name in names {
            let tree = self.db.open_tree(&name)?;
            out.write_all(&[TAG_TREE])?;
            write_field(out, &name)?;
            stats.trees += 1;
            for kv in tree.iter() {
                let (k, v) = kv?;
                out.write_all(&[TAG_ENTRY])?;
                write_field(out, &k)?;
                write_field(out, &v)?;
                stats.entries += 1;
            }
        }
        out.write_all(&[TAG_END])?;
        out.flush()?;
        Ok(stats)
    }

    /// Builds the database of `data_dir` (which must not have one yet) from an image written
    /// by [`Store::export_to`], and flushes it to disk.
    pub fn import_from(data_dir: &Path, input: &mut impl Read) -> Result<ImageStats, StoreError> {
        let path = data_dir.join("db");
        if path.exists() {
            return Err(bad_image(format!("{} already exists", path.display())));
        }
        let mut magic = [0u8; 8];
        read_exact(input, &mut magic)?;
        if &magic != MAGIC {
            return Err(bad_image("not a relaybox store image"));
        }
        let mut version = [0u8; 1];
        read_exact(input, &mut version)?;
        if version[0] != VERSION {
            return Err(bad_image(format!(
                "image version {} is not supported (this build reads {VERSION})",
                version[0]
            )));
        }
        let mut floor = [0u8; 8];
        read_exact(input, &mut floor)?;
        let id_floor = u64::from_be_bytes(floor);
        let db = sled::Config::new().path(&path).open()?;
        let mut tree: Option<sled::Tree> = None;
        let mut stats = ImageStats::default();
        loop {
            let mut tag = [0u8; 1];
            read_exact(input, &mut tag)?;
            match tag[0] {
                TAG_END => break,
                TAG_TREE => {
                    let name = read_field(input)?;
                    tree = Some(db.open_tree(name)?);
                    stats.trees += 1;
                }
                TAG_ENTRY => {
                    let k = read_field(input)?;
                    let v = read_field(input)?;
                    let t = tree
                        .as_ref()
                        .ok_or_else(|| bad_image("an entry comes before any tree"))?;
                    if t.insert(k, v)?.is_some() {
                        return Err(bad_image("a key appears twice"));
                    }
                    stats.entries += 1;
                }
                other => return Err(bad_image(format!("unknown record tag {other}"))),
            }
        }
        // Every id the new database hands out is offset past every id the old one did.
        db.open_tree("meta_value")?
            .insert(super::meta::ID_OFFSET_KEY, &id_floor.to_be_bytes())?;
        db.flush()?;
        super::durability::fsync_dir(&path)?;
        Ok(stats)
    }
}

fn bad_image(detail: impl Into<String>) -> StoreError {
    StoreError::BadImage(detail.into())
}

fn write_field(out: &mut impl Write, bytes: &[u8]) -> Result<(), StoreError> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&n| n <= MAX_FIELD_BYTES)
        .ok_or_else(|| bad_image(format!("a field of {} bytes is too large", bytes.len())))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)?;
    Ok(())
}

fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), StoreError> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            bad_image("the image is truncated")
        } else {
            StoreError::Io(e)
        }
    })
}

fn read_field(input: &mut impl Read) -> Result<Vec<u8>, StoreError> {
    let mut len = [0u8; 4];
    read_exact(input, &mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FIELD_BYTES {
        return Err(bad_image(format!("a field claims {len} bytes")));
    }
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    read_exact(input, &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, DeviceId};
    use crate::store::{QueueItem, QueueRecord};

    fn record(n: u8) -> QueueRecord {
        QueueRecord {
            enqueued_at_ms: 1,
            item: QueueItem::DevicesChanged {
                account: format!("+1555000{n:04}"),
                devices: vec![0],
            },
        }
    }

    #[test]
    fn an_exported_image_imports_into_an_equal_store_whose_new_ids_sort_after_the_old() {
        let src = tempfile::tempdir().unwrap();
        // sled moves its id generator up by a persist interval at every open, so a relay
        // restarted more often than the restored one has higher ids than a fresh database.
        for _ in 0..4 {
            drop(Store::open(src.path()).unwrap());
        }
        let store = Store::open(src.path()).unwrap();
        let a = AccountId::parse("+15550001234").unwrap();
        let d = store.register_primary(&a, [7; 32], 5).unwrap();
        for n in 0..3 {
            store.queue_push(&d, &record(n)).unwrap();
        }
        let mut image = Vec::new();
        let out = store.export_to(&mut image).unwrap();
        assert!(out.entries >= 5, "{out:?}");

        let dst = tempfile::tempdir().unwrap();
        let back = Store::import_from(dst.path(), &mut image.as_slice()).unwrap();
        assert_eq!(back, out);
        let restored = Store::open(dst.path()).unwrap();
        assert_eq!(restored.device(&d).unwrap(), store.device(&d).unwrap());
        let old: Vec<u64> = restored
            .queue_range(&d, None, 10)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(old.len(), 3);
        let new = restored.queue_push(&d, &record(9)).unwrap();
        assert!(old.iter().all(|&s| s < new), "{old:?} then {new}");
        let _ = DeviceId::new(a, 0);
    }

    #[test]
    fn an_export_under_concurrent_writers_never_holds_a_seen_record_without_its_entry() {
        use crate::ids::MsgId;
        let src = tempfile::tempdir().unwrap();
        let store = Store::open(src.path()).unwrap();
        let a = AccountId::parse("+15550001234").unwrap();
        let d = store.register_primary(&a, [7; 32], 5).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..3u8)
            .map(|w| {
                let (store, d, a, stop) = (store.clone(), d.clone(), a.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // As Send does: the entry and the seen record that guards it.
                        let msg = MsgId::random();
                        let mut rec = record(w);
                        rec.enqueued_at_ms = u64::from(n);
                        if let QueueItem::DevicesChanged { account, .. } = &mut rec.item {
                            *account = msg.to_string();
                        }
                        store
                            .send_append(&a, &msg, 1, vec![], vec![(d.clone(), rec)])
                            .unwrap();
                        n += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut images = Vec::new();
        for _ in 0..3 {
            let mut image = Vec::new();
            store.export_to(&mut image).unwrap();
            images.push(image);
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        for image in images {
            let dst = tempfile::tempdir().unwrap();
            Store::import_from(dst.path(), &mut image.as_slice()).unwrap();
            let restored = Store::open(dst.path()).unwrap();
            let queued: std::collections::HashSet<String> = restored
                .queue_range(&d, None, usize::MAX)
                .unwrap()
                .into_iter()
                .filter_map(|(_, r)| match r.item {
                    QueueItem::DevicesChanged { account, .. } => Some(account),
                    _ => None,
                })
                .collect();
            let mut seen = 0;
            for v in restored.t.senderseq_seenbatch.iter().values() {
                let batch: Vec<crate::store::seen::SeenRecord> =
                    crate::store::decode("t", &v.unwrap()).unwrap();
                for r in batch {
                    let msg = MsgId(r.msg_id);
                    assert!(
                        queued.contains(&msg.to_string()),
                        "seen {msg} without its entry"
                    );
                    seen += 1;
                }
            }
            assert!(seen > 0);
        }
    }

    #[test]
    fn a_truncated_or_foreign_image_is_refused_with_a_specific_error() {
        let src = tempfile::tempdir().unwrap();
        let store = Store::open(src.path()).unwrap();
        let mut image = Vec::new();
        store.export_to(&mut image).unwrap();
        let cut = &image[..image.len() - 1];
        let dst = tempfile::tempdir().unwrap();
        let err = Store::import_from(dst.path(), &mut &cut[..]).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let other = tempfile::tempdir().unwrap();
        let err =
            Store::import_from(other.path(), &mut &b"PK\x03\x04 not an image"[..]).unwrap_err();
        assert!(
            err.to_string().contains("not a relaybox store image"),
            "{err}"
        );
    }
}
