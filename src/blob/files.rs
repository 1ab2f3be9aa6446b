//! Blob files on disk: content addressed and immutable. An upload streams into
//! `blobs/tmp/`, is held to its declared size while it streams, is hashed, fsync'd and renamed
//! into `blobs/ab/abcdef…`, and the directory is fsync'd, so a crash leaves either no file or
//! the whole, verified file. Nothing here knows HTTP or sled.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::BlobId;

/// Bytes read from disk per chunk of a download.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Name of the directory of uploads in progress, under the blob root.
pub const TMP_DIR: &str = "tmp";

/// Why an upload was not kept. In every case the temporary file is removed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// More bytes arrived than were declared. (client's fault)
    #[error("upload is larger than its declared {declared} bytes")]
    Oversize { declared: u64 },
    /// The body ended before the declared size. (client's fault)
    #[error("upload ended after {got} of its declared {declared} bytes")]
    Short { got: u64, declared: u64 },
    /// The content does not hash to the blob id. (client's fault)
    #[error("content does not match the blob id (SHA-256 {actual})")]
    HashMismatch { actual: String },
    /// The request body failed (the client went away). (client's side)
    #[error("reading the upload failed: {0}")]
    Body(String),
    /// The disk failed. (the relay's fault)
    #[error("blob i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The blob directory.
#[derive(Debug, Clone)]
pub struct BlobFiles {
    root: PathBuf,
}

impl BlobFiles {
    /// Creates `<data_dir>/blobs/` and `blobs/tmp/` (mode 0700) and clears leftovers of
    /// uploads interrupted by a crash.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let root = data_dir.join("blobs");
        let tmp = root.join(TMP_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp)?;
        for entry in std::fs::read_dir(&tmp)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(Self { root })
    }

    /// Where the file of `id` lives: `blobs/ab/abcdef…`. `BlobId` admits only hex, so this
    /// never leaves the blob directory.
    pub fn path(&self, id: &BlobId) -> PathBuf {
        self.root.join(&id.as_str()[..2]).join(id.as_str())
    }

    /// Whether the file of `id` is in place, and its length.
    pub async fn len(&self, id: &BlobId) -> Option<u64> {
        tokio::fs::metadata(self.path(id))
            .await
            .ok()
            .map(|m| m.len())
    }

    /// Streams `body` into the file of `id`, which must be exactly `declared` bytes hashing
    /// to `id`. Returns the size written. On any error nothing is kept.
    pub async fn write<S, B, E>(
        &self,
        id: &BlobId,
        declared: u64,
        body: S,
    ) -> Result<u64, WriteError>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let tmp = self
            .root
            .join(TMP_DIR)
            .join(format!("{}.{:016x}", id, rand::random::<u64>()));
        let result = self.write_tmp(&tmp, id, declared, body).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn write_tmp<S, B, E>(
        &self,
        tmp: &Path,
        id: &BlobId,
        declared: u64,
        body: S,
    ) -> Result<u64, WriteError>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let mut file = tokio::fs::File::create(tmp).await?;
        let mut hash = Sha256::new();
        let mut got: u64 = 0;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| WriteError::Body(e.to_string()))?;
            let chunk = chunk.as_ref();
            got = got.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
            if got > declared {
                return Err(WriteError::Oversize { declared });
            }
            hash.update(chunk);
            file.write_all(chunk).await?;
        }
        if got < declared {
            return Err(WriteError::Short { got, declared });
        }
        let actual = hex::encode(hash.finalize());
        if actual != id.as_str() {
            return Err(WriteError::HashMismatch { actual });
        }
        file.sync_all().await?;
        drop(file);
        let dest = self.path(id);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::rename(tmp, &dest).await?;
        fsync_dir(&dir).await?;
        Ok(got)
    }

    /// Deletes the file of `id` (a missing file is not an error).
    pub async fn remove(&self, id: &BlobId) -> std::io::Result<()> {
        let path = self.path(id);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent() {
            fsync_dir(dir).await?;
        }
        Ok(())
    }

    /// `len` bytes of the file of `id` from `start`, in chunks.
    pub async fn read_range(
        &self,
        id: &BlobId,
        start: u64,
        len: u64,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Vec<u8>>>> {
        let mut file = tokio::fs::File::open(self.path(id)).await?;
        file.seek(SeekFrom::Start(start)).await?;
        Ok(futures::stream::try_unfold(
            (file, len),
            |(mut file, left)| async move {
                if left == 0 {
                    return Ok(None);
                }
                let want = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(READ_CHUNK_BYTES);
                let mut buf = vec![0; want];
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob file is shorter than its record",
                    ));
                }
                buf.truncate(n);
                let left = left.saturating_sub(u64::try_from(n).unwrap_or(u64::MAX));
                Ok(Some((buf, (file, left))))
            },
        ))
    }

    /// The ids of every blob file in place (files with other names are left alone).
    pub fn list(&self) -> std::io::Result<Vec<BlobId>> {
        let mut ids = Vec::new();
        for shard in std::fs::read_dir(&self.root)? {
            let shard = shard?;
            if shard.file_name() == TMP_DIR || !shard.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(shard.path())? {
                if let Some(id) = f?.file_name().to_str().and_then(|n| BlobId::parse(n).ok()) {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    /// Files and bytes under the blob directory (uploads in progress excluded).
    pub fn usage(&self) -> std::io::Result<(u64, u64)> {
        let (mut files, mut bytes) = (0, 0);
        for shard in std::fs::read_dir(&self.root)? {
            let shard = shard?;
            if shard.file_name() == TMP_DIR || !shard.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(shard.path())? {
                files += 1;
                bytes += f?.metadata()?.len();
            }
        }
        Ok((files, bytes))
    }
}

async fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn body(parts: &[&[u8]]) -> impl Stream<Item = Result<Vec<u8>, String>> {
        futures::stream::iter(parts.iter().map(|p| Ok(p.to_vec())).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn an_upload_is_kept_only_when_whole_and_matching_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let files = BlobFiles::open(dir.path()).unwrap();
        let id = BlobId::of(b"hello world");
        assert_eq!(
            files
                .write(&id, 11, body(&[b"hello ", b"world"]))
                .await
                .unwrap(),
            11
        );
        assert_eq!(files.len(&id).await, Some(11));

        let other = BlobId::of(b"other");
        let big = files.write(&other, 3, body(&[b"other"])).await;
        assert!(matches!(big, Err(WriteError::Oversize { declared: 3 })));
        let short = files.write(&other, 9, body(&[b"other"])).await;
        assert!(matches!(short, Err(WriteError::Short { got: 5, .. })));
        let wrong = files.write(&other, 5, body(&[b"othex"])).await;
        assert!(matches!(wrong, Err(WriteError::HashMismatch { .. })));
        assert_eq!(files.len(&other).await, None);
        let tmp_left = std::fs::read_dir(dir.path().join("blobs/tmp"))
            .unwrap()
            .count();
        assert_eq!(tmp_left, 0, "failed uploads leave nothing behind");

        let part: Vec<Vec<u8>> = files
            .read_range(&id, 6, 5)
            .await
            .unwrap()
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert_eq!(part.concat(), b"world");
        files.remove(&id).await.unwrap();
        assert_eq!(files.len(&id).await, None);
    }
}
