//! Media (progressive images) on the companion: a delivered `Media` payload is kept with its
//! segment keys; the page asks for a download URL ([`Companion::request_media`]), fetches
//! segment 0 (the thumbnail) first and then the last (the full image) from the relay's HTTP
//! listener, and hands each to [`Companion::open_segment`] to decrypt. The keys never leave
//! the wasm; the relay only ever serves ciphertext.

use relaybox_core::e2e::media;
use relaybox_core::e2e::payload::{HistoryEntry, Inner, Media, MediaSegment, Payload};
use relaybox_core::wire::messages::{client_frame, BlobUrl, RequestDownload};
use serde::Serialize;

use super::{Companion, Event, Pending, WebError};

/// Most entries accepted from a history blob (as the CLI).
pub const MAX_HISTORY_BLOB_ENTRIES: usize = 10_000;
/// Most media pointers kept (oldest forgotten first).
pub const MAX_KEPT_MEDIA: usize = 500;

/// What the page needs to show one segment (no key).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentInfo {
    pub index: usize,
    pub mime: String,
    pub width: u32,
    pub height: u32,
}

impl Companion {
    /// Keeps a delivered media pointer; returns what the page may know of its segments.
    pub(super) fn keep_media(&mut self, msg_id: &str, m: Media) -> Vec<SegmentInfo> {
        let info = m
            .segments
            .iter()
            .enumerate()
            .map(|(index, s)| SegmentInfo {
                index,
                mime: s.mime.clone(),
                width: s.width,
                height: s.height,
            })
            .collect();
        if self.media.len() >= MAX_KEPT_MEDIA {
            self.media.remove(0);
        }
        self.media.push((msg_id.to_owned(), m));
        info
    }

    /// Keeps the pointer and key of a history blob from our primary (one sealed segment).
    pub(super) fn keep_history_blob(&mut self, msg_id: &str, blob: String, size: u64, key: String) {
        let m = Media {
            blob,
            segments: vec![MediaSegment {
                size,
                key,
                mime: "application/json".into(),
                width: 0,
                height: 0,
            }],
            resend_of: None,
        };
        self.keep_media(msg_id, m);
    }

    /// Decrypts and reads a history blob; a damaged one is an error saying what is wrong,
    /// and the page carries on without it.
    pub fn open_history(&self, msg_id: &str, sealed: &[u8]) -> Result<Vec<HistoryEntry>, WebError> {
        let plain = self.open_segment(msg_id, 0, sealed)?;
        let entries: Vec<HistoryEntry> = serde_json::from_slice(&plain)
            .map_err(|e| WebError(format!("the history is malformed: {e}")))?;
        if entries.len() > MAX_HISTORY_BLOB_ENTRIES {
            return Err(WebError(format!(
                "a history of {} entries is too long",
                entries.len()
            )));
        }
        Ok(entries)
    }

    /// Asks the relay for a download URL of the media of `msg_id` (an
    /// [`Event::MediaUrl`] follows).
    pub fn request_media(&mut self, msg_id: &str) -> Result<(), WebError> {
        let blob = self
            .media
            .iter()
            .find(|(id, _)| id == msg_id)
            .map(|(_, m)| m.blob.clone())
            .ok_or_else(|| WebError(format!("no media for message {msg_id}")))?;
        self.send_frame(
            client_frame::Body::RequestDownload(RequestDownload { blob }),
            Some(Pending::Download {
                msg_id: msg_id.to_owned(),
            }),
        );
        Ok(())
    }

    pub(super) fn media_url(&mut self, msg_id: String, u: BlobUrl) {
        // The relay's path and query, on the page's own origin (CSP connect-src 'self').
        if !u.url.starts_with("/v1/blobs/") {
            return self.events.push(Event::BadFrame {
                error: "a download URL outside /v1/blobs/".into(),
            });
        }
        self.events.push(Event::MediaUrl { msg_id, url: u.url });
    }

    /// The media of `msg_id` is gone from the relay (410): asks `from`, who sent it, to upload
    /// and send it again (it comes back as a new message whose `resend_of` is `msg_id`).
    pub fn recall(&mut self, from: &str, msg_id: &str, now_ms: u64) -> Result<String, WebError> {
        if msg_id.len() != 32 || hex::decode(msg_id).is_err() {
            return Err(WebError(format!("{msg_id:?} is not a message id")));
        }
        let inner = Inner::new(
            now_ms,
            Payload::Recall {
                msg_id: msg_id.to_owned(),
            },
        );
        self.queue(from, inner)
    }

    /// Decrypts segment `index` of the media of `msg_id`.
    pub fn open_segment(
        &self,
        msg_id: &str,
        index: usize,
        sealed: &[u8],
    ) -> Result<Vec<u8>, WebError> {
        let m = self
            .media
            .iter()
            .find(|(id, _)| id == msg_id)
            .map(|(_, m)| m)
            .ok_or_else(|| WebError(format!("no media for message {msg_id}")))?;
        let seg = m
            .segments
            .get(index)
            .ok_or_else(|| WebError(format!("no segment {index}")))?;
        if sealed.len() as u64 != seg.size {
            return Err(WebError(format!(
                "segment {index} has {} bytes instead of {}",
                sealed.len(),
                seg.size
            )));
        }
        media::open(&seg.key, sealed).map_err(|e| WebError(e.to_string()))
    }
}
