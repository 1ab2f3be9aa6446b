//! Media on the client: images become progressive blobs (JPEG tiers of growing size, each
//! encrypted on its own with a fresh ChaCha20-Poly1305 key), uploaded over HTTP with the
//! capability URL the relay signs, and announced in an end-to-end `Media` message. Receivers
//! fetch segment 0 (the thumbnail) first, then the full image. A blob found gone (410) is
//! recalled: the sender's client, which keeps what it sent, uploads and sends it again.
//!
//! # Files in the client's home
//!
//! ```text
//! media/<msg_id>-thumb.jpg      received thumbnail (segment 0)
//! media/<msg_id>.<ext>          received full image (last segment)
//! media/sent/<msg_id>/          sent media, kept to answer recalls: meta.json, 0.bin, 1.bin, …
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use super::Client;
use crate::e2e::payload::{Inner, Media, MediaSegment, Payload};
use crate::ids::MsgId;
use crate::wire::messages::{
    client_frame, server_frame, BlobUrl, RequestDownload, RequestUpload, ServerAck,
};

/// Longest side of each tier below the full image: thumbnail, mid, high.
pub const TIER_SIDES: [u32; 3] = [64, 320, 1024];
/// JPEG quality of the downscaled tiers.
const TIER_QUALITY: u8 = 80;
/// Largest image file `send --image` reads.
pub const MAX_IMAGE_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest blob the client downloads into memory.
const MAX_DOWNLOAD_BYTES: u64 = 128 * 1024 * 1024;
/// Deadline for one HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Sent media kept for recalls; older ones are forgotten first.
pub const MAX_KEPT_SENT: usize = 200;
/// Recalls of one message answered; more are ignored (a peer cannot make us upload forever).
pub const MAX_RECALLS_ANSWERED: u32 = 3;

/// The relay answered 410 Gone: the blob expired or was purged.
#[derive(Debug, thiserror::Error)]
#[error("the media is gone from the relay (410)")]
pub struct BlobGone;

/// One tier of an image, before encryption.
#[derive(Debug, Clone)]
pub struct Tier {
    pub bytes: Vec<u8>,
    pub mime: String,
    pub width: u32,
    pub height: u32,
}

/// Kept with sent media, to answer a recall.
#[derive(Debug, Serialize, Deserialize)]
struct SentMeta {
    to: String,
    tiers: Vec<(String, u32, u32)>,
    /// Recalls answered so far.
    #[serde(default)]
    recalls: u32,
}

/// Downscaled JPEG tiers of an image (those smaller than the image itself), then the
/// original as the full tier.
pub fn image_tiers(original: &[u8]) -> anyhow::Result<Vec<Tier>> {
    let format = image::guess_format(original).context("not an image (JPEG or PNG expected)")?;
    let img = image::load_from_memory_with_format(original, format)
        .context("the image does not decode")?;
    let (w, h) = (img.width(), img.height());
    let mut tiers = Vec::new();
    for (i, side) in TIER_SIDES.iter().copied().enumerate() {
        // The thumbnail always exists; larger tiers only when smaller than the original.
        if i > 0 && side >= w.max(h) {
            break;
        }
        let small = image::DynamicImage::ImageRgb8(img.thumbnail(side, side).to_rgb8());
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, TIER_QUALITY)
            .encode_image(&small)
            .context("encoding a JPEG tier")?;
        tiers.push(Tier {
            bytes,
            mime: "image/jpeg".into(),
            width: small.width(),
            height: small.height(),
        });
    }
    tiers.push(Tier {
        bytes: original.to_vec(),
        mime: format.to_mime_type().to_owned(),
        width: w,
        height: h,
    });
    Ok(tiers)
}

/// Encrypts one segment under a fresh key: `nonce ‖ ciphertext ‖ tag`. Returns the key.
/// (The shared implementation in `e2e::media`, which the browser companion uses too.)
pub fn seal(plain: &[u8]) -> anyhow::Result<([u8; 32], Vec<u8>)> {
    Ok(crate::e2e::media::seal(plain)?)
}

/// Inverse of [`seal`].
pub fn open(key_hex: &str, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(crate::e2e::media::open(key_hex, sealed)?)
}

fn ext_of(mime: &str) -> &'static str {
    match mime {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        _ => "bin",
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// The relay's reason for a refused HTTP request, from its JSON body.
fn reason(status: u16, body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match (v["error"].as_str(), v["message"].as_str()) {
        (Some(code), Some(msg)) => format!("HTTP {status} {code}: {msg}"),
        _ => format!("HTTP {status}"),
    }
}

/// PUT `body` to `url` (blocking; run on a blocking thread).
fn put(url: &str, body: &[u8]) -> anyhow::Result<()> {
    let mut resp = agent()
        .put(url)
        .header("content-type", "application/octet-stream")
        .send(body)
        .with_context(|| format!("uploading to {}", url.split('?').next().unwrap_or(url)))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let body = resp.body_mut().read_to_vec().unwrap_or_default();
        bail!("upload refused: {}", reason(status, &body));
    }
    Ok(())
}

/// GET `url` (blocking).
fn get(url: &str) -> anyhow::Result<Vec<u8>> {
    let mut resp = agent()
        .get(url)
        .call()
        .with_context(|| format!("downloading {}", url.split('?').next().unwrap_or(url)))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_DOWNLOAD_BYTES)
        .read_to_vec()
        .context("reading the download")?;
    match status {
        200..=299 => Ok(body),
        410 => Err(BlobGone.into()),
        _ => bail!("download refused: {}", reason(status, &body)),
    }
}

impl Client {
    /// `http://host:port` of the relay's HTTP listener (`--http`), for blobs.
    fn http_base(&self) -> anyhow::Result<String> {
        let base = self
            .state
            .http
            .as_deref()
            .context("the relay's HTTP address is not known: pass --http HOST:PORT once")?;
        let base = base.trim_end_matches('/');
        Ok(if base.contains("://") {
            base.to_owned()
        } else {
            format!("http://{base}")
        })
    }

    async fn blob_url(&mut self, body: client_frame::Body) -> anyhow::Result<BlobUrl> {
        match self.conn().await?.request(body).await? {
            server_frame::Body::BlobUrl(u) => Ok(u),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Uploads `segments` (already encrypted) as one blob; returns its id.
    pub async fn upload_blob(&mut self, segments: &[Vec<u8>]) -> anyhow::Result<String> {
        let content = segments.concat();
        let id = crate::ids::BlobId::of(&content).to_string();
        let sizes: Vec<u64> = if segments.len() > 1 {
            segments.iter().map(|s| s.len() as u64).collect()
        } else {
            Vec::new()
        };
        let req = RequestUpload {
            sha256: id.clone(),
            size: content.len() as u64,
            segments: sizes,
        };
        let url = self
            .blob_url(client_frame::Body::RequestUpload(req))
            .await?;
        if !url.stored {
            let full = format!("{}{}", self.http_base()?, url.url);
            tokio::task::spawn_blocking(move || put(&full, &content))
                .await
                .context("upload task")??;
        }
        Ok(id)
    }

    /// Downloads a blob, or one segment of it. A gone blob fails with [`BlobGone`].
    pub async fn download_blob(
        &mut self,
        blob: &str,
        seg: Option<usize>,
    ) -> anyhow::Result<Vec<u8>> {
        let req = RequestDownload {
            blob: blob.to_owned(),
        };
        let url = self
            .blob_url(client_frame::Body::RequestDownload(req))
            .await?;
        let mut full = format!("{}{}", self.http_base()?, url.url);
        if let Some(n) = seg {
            full.push_str(&format!("&seg={n}"));
        }
        tokio::task::spawn_blocking(move || get(&full))
            .await
            .context("download task")?
    }

    /// Encrypts `tiers` segment by segment, uploads them as one blob, returns the pointer.
    async fn upload_tiers(
        &mut self,
        tiers: &[Tier],
        resend_of: Option<String>,
    ) -> anyhow::Result<Media> {
        let mut sealed = Vec::with_capacity(tiers.len());
        let mut segments = Vec::with_capacity(tiers.len());
        for t in tiers {
            let (key, ct) = seal(&t.bytes)?;
            segments.push(MediaSegment {
                size: ct.len() as u64,
                key: hex::encode(key),
                mime: t.mime.clone(),
                width: t.width,
                height: t.height,
            });
            sealed.push(ct);
        }
        let blob = self.upload_blob(&sealed).await?;
        Ok(Media {
            blob,
            segments,
            resend_of,
        })
    }

    /// Sends the image in `file` to `to` as a progressive blob. Keeps the tiers in the home
    /// so that a recall can be answered.
    pub async fn send_image(
        &mut self,
        to: &str,
        file: &Path,
    ) -> anyhow::Result<(MsgId, ServerAck, Media)> {
        let len = std::fs::metadata(file)
            .with_context(|| format!("reading {}", file.display()))?
            .len();
        if len > MAX_IMAGE_FILE_BYTES {
            bail!(
                "{} is {len} bytes; images up to {MAX_IMAGE_FILE_BYTES} bytes can be sent",
                file.display()
            );
        }
        let original =
            std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let tiers = image_tiers(&original).with_context(|| format!("{}", file.display()))?;
        let media = self.upload_tiers(&tiers, None).await?;
        let msg_id = MsgId::random();
        self.keep_sent(msg_id, to, &tiers)?;
        let inner = Inner::new(crate::clock::now_ms(), Payload::Media(media.clone()));
        let ack = self.send_inner(to, msg_id, &inner).await?;
        Ok((msg_id, ack, media))
    }

    fn sent_dir(&self, msg_id: &str) -> PathBuf {
        self.state.home.join("media").join("sent").join(msg_id)
    }

    fn keep_sent(&self, msg_id: MsgId, to: &str, tiers: &[Tier]) -> anyhow::Result<()> {
        let dir = self.sent_dir(&msg_id.to_string());
        crate::files::create_private_dir(&dir)?;
        for (i, t) in tiers.iter().enumerate() {
            std::fs::write(dir.join(format!("{i}.bin")), &t.bytes)?;
        }
        let meta = SentMeta {
            to: to.to_owned(),
            tiers: tiers
                .iter()
                .map(|t| (t.mime.clone(), t.width, t.height))
                .collect(),
            recalls: 0,
        };
        std::fs::write(dir.join("meta.json"), serde_json::to_vec(&meta)?)?;
        self.forget_old_sent();
        Ok(())
    }

    /// Keeps the newest [`MAX_KEPT_SENT`] sent media (best effort).
    fn forget_old_sent(&self) {
        let root = self.state.home.join("media").join("sent");
        let Ok(entries) = std::fs::read_dir(&root) else {
            return;
        };
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let modified = e.metadata().and_then(|m| m.modified()).ok()?;
                Some((modified, e.path()))
            })
            .collect();
        if dirs.len() <= MAX_KEPT_SENT {
            return;
        }
        dirs.sort();
        for (_, dir) in &dirs[..dirs.len() - MAX_KEPT_SENT] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Fetches and decrypts segment `n` of `media` and saves it in the home's `media/`
    /// (the thumbnail as `<msg_id>-thumb.jpg`, the last segment as `<msg_id>.<ext>`).
    pub async fn fetch_segment(
        &mut self,
        msg_id: &str,
        media: &Media,
        n: usize,
    ) -> anyhow::Result<PathBuf> {
        let seg = media.segments.get(n).context("no such segment")?;
        let seg_param = (media.segments.len() > 1).then_some(n);
        let sealed = self.download_blob(&media.blob, seg_param).await?;
        if sealed.len() as u64 != seg.size {
            bail!(
                "segment {n} has {} bytes, {} expected",
                sealed.len(),
                seg.size
            );
        }
        let plain = open(&seg.key, &sealed)?;
        let name = if n + 1 == media.segments.len() {
            format!("{msg_id}.{}", ext_of(&seg.mime))
        } else if n == 0 {
            format!("{msg_id}-thumb.{}", ext_of(&seg.mime))
        } else {
            format!("{msg_id}-{n}.{}", ext_of(&seg.mime))
        };
        let dir = self.state.home.join("media");
        crate::files::create_private_dir(&dir)?;
        let path = dir.join(name);
        std::fs::write(&path, plain).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Asks the sender of `msg_id` (all of `from`'s devices) to send its media again.
    pub async fn recall(&mut self, from: &str, msg_id: &str) -> anyhow::Result<()> {
        let inner = Inner::new(
            crate::clock::now_ms(),
            Payload::Recall {
                msg_id: msg_id.to_owned(),
            },
        );
        self.send_inner(from, MsgId::random(), &inner).await?;
        Ok(())
    }

    /// Answers `from`'s recall of `msg_id`: uploads the kept media again and re-sends it.
    /// Returns the new message's id, or `None` if this device does not have that media (or
    /// did not send it to `from`).
    pub async fn answer_recall(
        &mut self,
        from: &str,
        msg_id: &str,
    ) -> anyhow::Result<Option<MsgId>> {
        if MsgId::from_slice(&hex::decode(msg_id).unwrap_or_default()).is_err() {
            return Ok(None);
        }
        let dir = self.sent_dir(msg_id);
        let Ok(meta) = std::fs::read(dir.join("meta.json")) else {
            return Ok(None);
        };
        let mut meta: SentMeta = serde_json::from_slice(&meta).context("kept media is damaged")?;
        if meta.to != from || meta.recalls >= MAX_RECALLS_ANSWERED {
            return Ok(None);
        }
        meta.recalls += 1;
        std::fs::write(dir.join("meta.json"), serde_json::to_vec(&meta)?)?;
        let mut tiers = Vec::with_capacity(meta.tiers.len());
        for (i, (mime, width, height)) in meta.tiers.iter().cloned().enumerate() {
            let bytes =
                std::fs::read(dir.join(format!("{i}.bin"))).context("kept media is incomplete")?;
            tiers.push(Tier {
                bytes,
                mime,
                width,
                height,
            });
        }
        let media = self.upload_tiers(&tiers, Some(msg_id.to_owned())).await?;
        let inner = Inner::new(crate::clock::now_ms(), Payload::Media(media));
        let new_id = MsgId::random();
        self.send_inner(from, new_id, &inner).await?;
        Ok(Some(new_id))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 99])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn a_large_image_becomes_jpeg_tiers_of_growing_size_then_the_original() {
        let original = png(1200, 800);
        let tiers = image_tiers(&original).unwrap();
        let sides: Vec<u32> = tiers.iter().map(|t| t.width.max(t.height)).collect();
        assert_eq!(sides, vec![64, 320, 1024, 1200]);
        for t in &tiers[..3] {
            assert_eq!(
                image::guess_format(&t.bytes).unwrap(),
                image::ImageFormat::Jpeg
            );
        }
        assert_eq!(tiers[3].bytes, original);
        assert_eq!(tiers[3].mime, "image/png");
    }

    #[test]
    fn a_small_image_still_gets_a_thumbnail() {
        let tiers = image_tiers(&png(100, 50)).unwrap();
        assert_eq!(tiers.len(), 2);
        assert_eq!((tiers[0].width, tiers[0].height), (64, 32));
    }

    #[tokio::test]
    async fn a_recall_is_answered_only_for_its_recipient_and_only_a_few_times() {
        let home = tempfile::tempdir().unwrap();
        let mut client = Client::open(home.path(), Some("127.0.0.1:9")).unwrap();
        let msg_id = MsgId::random();
        let tier = Tier {
            bytes: b"pixels".to_vec(),
            mime: "image/jpeg".into(),
            width: 1,
            height: 1,
        };
        client.keep_sent(msg_id, "+14155550102", &[tier]).unwrap();
        let id = msg_id.to_string();
        // Neither answer needs the relay: both are refused before any upload.
        assert_eq!(
            client.answer_recall("+14155550199", &id).await.unwrap(),
            None
        );
        assert_eq!(
            client.answer_recall("+14155550102", "zz").await.unwrap(),
            None
        );
        let meta_path = client.sent_dir(&id).join("meta.json");
        let mut meta: SentMeta =
            serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
        meta.recalls = MAX_RECALLS_ANSWERED;
        std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
        assert_eq!(
            client.answer_recall("+14155550102", &id).await.unwrap(),
            None
        );
    }

    #[test]
    fn not_an_image_is_refused() {
        assert!(image_tiers(b"hello, not an image").is_err());
    }

    #[test]
    fn sealed_segments_open_only_with_their_key() {
        let (key, ct) = seal(b"secret pixels").unwrap();
        assert_eq!(open(&hex::encode(key), &ct).unwrap(), b"secret pixels");
        assert!(open(&hex::encode([0u8; 32]), &ct).is_err());
        let mut bad = ct.clone();
        bad[20] ^= 1;
        assert!(open(&hex::encode(key), &bad).is_err());
    }
}
