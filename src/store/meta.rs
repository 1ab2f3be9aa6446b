//! Schema version and the relay's secrets (token key, code HMAC key), generated on first use.

use super::trees::Trees;
use super::{Store, StoreError};

/// Version of the key layout and record formats written by this build.
pub const SCHEMA_VERSION: u32 = 1;
const VERSION_KEY: &str = "schema_version";
/// Added to every id from sled's generator: set by a restore to the restored database's
/// next id (`backup.rs`), so ids keep growing across a backup and restore.
pub(super) const ID_OFFSET_KEY: &str = "id_offset";

/// Records the schema version of a new database; refuses one written by a newer build.
pub(super) fn migrate(t: &Trees) -> Result<(), StoreError> {
    match t.meta_value.get(VERSION_KEY)? {
        None => {
            t.meta_value
                .insert(VERSION_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            Ok(())
        }
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| super::corrupt("meta_value", "schema_version is not a u32"))?;
            if found > SCHEMA_VERSION {
                return Err(super::corrupt(
                    "meta_value",
                    format!("written by a newer relaybox (schema {found} > {SCHEMA_VERSION})"),
                ));
            }
            Ok(())
        }
    }
}

impl Store {
    /// A 32-byte secret named `name`, generated randomly on first use and kept.
    pub fn secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let _gate = self.writing();
        let key = format!("secret/{name}");
        let fresh: [u8; 32] = rand::random();
        // compare_and_swap makes two concurrent first users agree on one secret.
        let _ = self
            .t
            .meta_value
            .compare_and_swap(&key, None::<&[u8]>, Some(&fresh[..]))?;
        let v = self
            .t
            .meta_value
            .get(&key)?
            .ok_or_else(|| super::corrupt("meta_value", "secret vanished"))?;
        <[u8; 32]>::try_from(v.as_ref())
            .map_err(|_| super::corrupt("meta_value", "secret is not 32 bytes"))
    }
}

/// The id offset of the database (0 unless it was restored from a backup).
pub(super) fn id_offset(t: &Trees) -> Result<u64, StoreError> {
    match t.meta_value.get(ID_OFFSET_KEY)? {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| super::corrupt("meta_value", "id_offset is not a u64")),
    }
}

impl Store {
    /// A new id, greater than every id this database (or the one it was restored from)
    /// handed out before. Queue sequence numbers come from here.
    pub(super) fn next_id(&self) -> Result<u64, StoreError> {
        self.db
            .generate_id()?
            .checked_add(self.id_offset)
            .ok_or_else(|| super::corrupt("meta_value", "id space exhausted"))
    }
}
