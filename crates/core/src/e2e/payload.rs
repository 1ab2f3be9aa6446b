//! The inner (end-to-end) message: what a sender's device puts inside the Olm ciphertext.
//! The relay never sees it. It owns the schema and its bounds, not the encryption.
//!
//! # Format
//!
//! UTF-8 JSON, versioned like the outer protocol:
//!
//! ```text
//! {"v":1,"sent_at_ms":1700000000000,"payload":{"type":"Text","body":"hi"},"reply_to":"00…ff"}
//! ```
//!
//! - `v` is the major version. A receiver refuses another major version with
//!   [`E2eError::InnerVersion`] (the sender runs a newer client). Additions within version 1
//!   (new optional fields, new payload types) must stay readable by older clients: unknown
//!   fields are ignored, an unknown payload `type` decodes as [`Payload::Unknown`].
//! - `reply_to` (optional) quotes an earlier message by its `msg_id` in lowercase hex.

use serde::{Deserialize, Serialize};

use super::E2eError;

/// The major version this build writes and reads.
pub const INNER_VERSION: u32 = 1;
/// Longest text body, in bytes of UTF-8.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest encoded inner message accepted. JSON escaping may turn one body byte into six
/// (`\u0001`), so this admits any body within [`MAX_BODY_BYTES`] plus room for the rest.
pub const MAX_INNER_BYTES: usize = 6 * MAX_BODY_BYTES + 4096;
/// Length of a message id (`Send.msg_id`) in bytes; `reply_to` is its hex form.
const MSG_ID_BYTES: usize = 16;

/// What the message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Payload {
    /// A text message.
    Text { body: String },
    /// Recent history, sent by a primary to a newly linked device of the same account, in
    /// parts that each fit a frame.
    History {
        part: u32,
        parts: u32,
        entries: Vec<HistoryEntry>,
    },
    /// Media in a blob on the relay: the blob's id and, per segment (a progressive image's
    /// thumbnail, mid, high and full tiers, in that order), its size and its own key.
    Media(Media),
    /// The receiver found the blob of `msg_id` gone (410): please upload and send it again.
    Recall {
        /// The original message's `msg_id`, lowercase hex.
        msg_id: String,
    },
    /// Recent history in an encrypted blob, sent by a primary to its newly linked device:
    /// only the pointer and the key travel in this message.
    HistoryBlob {
        blob: String,
        size: u64,
        /// ChaCha20-Poly1305 key of the blob, hex.
        key: String,
        entries: u32,
    },
    // Add variants here; older clients read them as `Unknown`.
    /// A payload type added after this build; show "update to see this message".
    #[serde(other)]
    Unknown,
}

/// A media message's pointer and keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// Blob id: lowercase hex SHA-256 of the concatenated encrypted segments.
    pub blob: String,
    pub segments: Vec<MediaSegment>,
    /// A re-send answering a recall: the original message's `msg_id`, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_of: Option<String>,
}

/// One separately encrypted segment of a media blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaSegment {
    /// Encrypted size in bytes (nonce and tag included).
    pub size: u64,
    /// ChaCha20-Poly1305 key, hex (32 bytes, used for this segment only).
    pub key: String,
    /// MIME type of the decrypted segment, e.g. `image/jpeg`.
    pub mime: String,
    pub width: u32,
    pub height: u32,
}

/// Most segments a media message may name.
pub const MAX_MEDIA_SEGMENTS: usize = 16;

/// One message of a transferred history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The conversation: the other account, or a group id.
    pub thread: String,
    /// Who wrote it (E.164).
    pub from: String,
    pub at_ms: u64,
    pub body: String,
}

/// One inner message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inner {
    /// Major version, [`INNER_VERSION`].
    pub v: u32,
    /// Sender's wall clock when the user sent it, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    pub payload: Payload,
    /// The quoted message's `msg_id`, lowercase hex (32 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// Reads only the version, so a newer major version is recognised even when the rest of
/// its shape is unknown to us.
#[derive(Deserialize)]
struct VersionProbe {
    v: u32,
}

impl Inner {
    /// A current-version inner message.
    pub fn new(sent_at_ms: u64, payload: Payload) -> Self {
        Self {
            v: INNER_VERSION,
            sent_at_ms,
            payload,
            reply_to: None,
        }
    }

    /// The blobs this message points at: what its `Send.blobs` names, so that the relay
    /// passes the right to fetch them to the recipients.
    pub fn blobs(&self) -> Vec<String> {
        match &self.payload {
            Payload::Media(m) => vec![m.blob.clone()],
            Payload::HistoryBlob { blob, .. } => vec![blob.clone()],
            Payload::Text { .. }
            | Payload::History { .. }
            | Payload::Recall { .. }
            | Payload::Unknown => Vec::new(),
        }
    }

    /// The JSON bytes to encrypt.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain structs, strings and integers to a Vec cannot fail: serde_json
        // fails only on non-string map keys or a failing writer, and there are neither.
        serde_json::to_vec(self).expect("an Inner always serialises")
    }

    /// Parses and validates decrypted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, E2eError> {
        if bytes.len() > MAX_INNER_BYTES {
            return Err(E2eError::InnerTooLarge {
                what: "message",
                len: bytes.len(),
            });
        }
        let probe: VersionProbe =
            serde_json::from_slice(bytes).map_err(E2eError::InnerMalformed)?;
        if probe.v != INNER_VERSION {
            return Err(E2eError::InnerVersion(probe.v));
        }
        let inner: Self = serde_json::from_slice(bytes).map_err(E2eError::InnerMalformed)?;
        if let Payload::Text { body } = &inner.payload {
            if body.len() > MAX_BODY_BYTES {
                return Err(E2eError::InnerTooLarge {
                    what: "text body",
                    len: body.len(),
                });
            }
        }
        if let Payload::Media(m) = &inner.payload {
            if m.segments.is_empty() || m.segments.len() > MAX_MEDIA_SEGMENTS {
                return Err(E2eError::InvalidMedia(m.segments.len()));
            }
        }
        if let Some(reply_to) = &inner.reply_to {
            let is_msg_id = reply_to.len() == 2 * MSG_ID_BYTES
                && reply_to
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !is_msg_id {
                return Err(E2eError::InvalidReplyTo);
            }
        }
        Ok(inner)
    }
}

// In tests a panic is the failure report, so `unwrap` is the clearest assertion.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(body: &str) -> Inner {
        Inner::new(1_700_000_000_000, Payload::Text { body: body.into() })
    }

    #[test]
    fn a_text_message_has_the_documented_json_shape() {
        let json: serde_json::Value = serde_json::from_slice(&text("hi").encode()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"v": 1, "sent_at_ms": 1_700_000_000_000u64,
                               "payload": {"type": "Text", "body": "hi"}})
        );
    }

    #[test]
    fn a_newer_major_version_is_refused_even_with_an_unknown_shape() {
        let err = Inner::decode(br#"{"v":2,"whatever":[1,2,3]}"#).unwrap_err();
        assert!(matches!(err, E2eError::InnerVersion(2)), "{err:?}");
    }

    #[test]
    fn an_unknown_payload_type_and_unknown_fields_decode_for_forward_compatibility() {
        let inner = Inner::decode(
            br#"{"v":1,"sent_at_ms":5,"payload":{"type":"Sticker","pack":"x"},"new_field":true}"#,
        )
        .unwrap();
        assert_eq!(inner.payload, Payload::Unknown);
    }

    #[test]
    fn a_body_over_the_limit_is_refused() {
        let big = text(&"a".repeat(MAX_BODY_BYTES + 1)).encode();
        let err = Inner::decode(&big).unwrap_err();
        assert!(matches!(
            err,
            E2eError::InnerTooLarge {
                what: "text body",
                ..
            }
        ));
        assert!(Inner::decode(&text(&"a".repeat(MAX_BODY_BYTES)).encode()).is_ok());
    }

    #[test]
    fn a_body_of_control_characters_at_the_limit_still_decodes() {
        let inner = text(&"\u{1}".repeat(MAX_BODY_BYTES));
        assert_eq!(Inner::decode(&inner.encode()).unwrap(), inner);
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let err = Inner::decode(&vec![b' '; MAX_INNER_BYTES + 1]).unwrap_err();
        assert!(matches!(
            err,
            E2eError::InnerTooLarge {
                what: "message",
                ..
            }
        ));
    }

    #[test]
    fn garbage_and_missing_fields_are_malformed() {
        for bad in [&b"\xff\x00"[..], b"[]", br#"{"v":1}"#, br#"{"v":"1"}"#] {
            let err = Inner::decode(bad).unwrap_err();
            assert!(
                matches!(err, E2eError::InnerMalformed(_)),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn reply_to_must_be_a_lowercase_hex_message_id() {
        for bad in ["", "abc", &"A".repeat(32), &"g".repeat(32), &"0".repeat(34)] {
            let mut inner = text("x");
            inner.reply_to = Some(bad.to_owned());
            let err = Inner::decode(&inner.encode()).unwrap_err();
            assert!(matches!(err, E2eError::InvalidReplyTo), "{bad:?}");
        }
    }

    fn any_payload() -> impl Strategy<Value = Payload> {
        prop_oneof![
            any::<String>().prop_map(|body| Payload::Text { body }),
            Just(Payload::Unknown),
        ]
    }

    proptest! {
        #[test]
        fn inner_messages_round_trip_through_encode_and_decode(
            sent_at_ms in any::<u64>(),
            payload in any_payload(),
            reply_to in proptest::option::of(any::<[u8; MSG_ID_BYTES]>().prop_map(hex::encode)),
        ) {
            let inner = Inner { v: INNER_VERSION, sent_at_ms, payload, reply_to };
            prop_assert_eq!(Inner::decode(&inner.encode()).unwrap(), inner);
        }
    }
}
