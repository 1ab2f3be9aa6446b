//! The JSON documents devices publish and receive.
//!
//! # Format
//!
//! Up, on `{prefix}/dev/{id}/up` (QoS 1):
//! ```text
//! {"id": "r-1", "thread": "<group id>", "text": "door open", "data": {"t": 9.5}}
//! ```
//! `id` (1 to 64 characters of `A-Z a-z 0-9 . _ : -`, never `..`) deduplicates
//! redeliveries; an id with anything else (MQTT wildcards `+` `#`, `/`, a path like `../`) is
//! refused as a bad id; `text` and/or `data`
//! (any JSON value) must be present. The sender is the device named by the topic: a `device`
//! or `from` field naming anyone else is refused.
//!
//! Ack, on `{prefix}/dev/{id}/ack`: `{"ids": ["<down id>", …]}` (at most 256).
//!
//! Down, published on `{prefix}/dev/{id}/down` (QoS 1):
//! ```text
//! {"id": "<32 hex>", "from": "+14155550100", "thread": "<group id or sender>", "text": "…", "ts": 1700000000000}
//! ```

use serde::{Deserialize, Serialize};

/// Longest up-message id, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Most ids in one ack document.
pub const MAX_ACK_IDS: usize = 256;

/// An up message as published by a device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Up {
    pub id: String,
    pub thread: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    /// Never trusted; present only to refuse a device that claims to be another.
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
}

/// An ack document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckDoc {
    pub ids: Vec<String>,
}

/// A down message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Down {
    pub id: String,
    pub from: String,
    pub thread: String,
    pub text: String,
    pub ts: u64,
}

/// Why a payload is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload of {got} bytes exceeds the limit of {max}")]
    Oversize { got: usize, max: usize },
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("the payload claims to be device {0:?}, not the device of its topic")]
    Impersonation(String),
    /// The up message's `id` is empty, too long, or has a character outside the id alphabet.
    #[error("bad id {0:?}: 1 to {MAX_ID_BYTES} characters of A-Z a-z 0-9 . _ : - and no \"..\"")]
    BadId(String),
}

/// Whether `id` is a valid up-message id (see the module docs).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        && !id.contains("..")
}

fn check_size(bytes: &[u8], max: usize) -> Result<(), PayloadError> {
    if bytes.len() > max {
        return Err(PayloadError::Oversize {
            got: bytes.len(),
            max,
        });
    }
    Ok(())
}

fn malformed(e: impl std::fmt::Display) -> PayloadError {
    PayloadError::Malformed(e.to_string().chars().take(200).collect())
}

/// Parses an up message of `device` (the topic's id), at most `max` bytes.
pub fn parse_up(bytes: &[u8], max: usize, device: &str) -> Result<Up, PayloadError> {
    check_size(bytes, max)?;
    let up: Up = serde_json::from_slice(bytes).map_err(malformed)?;
    if !valid_id(&up.id) {
        return Err(PayloadError::BadId(
            up.id.chars().take(MAX_ID_BYTES).collect(),
        ));
    }
    if up.thread.is_empty() {
        return Err(malformed("thread is empty"));
    }
    if up.text.is_none() && up.data.is_none() {
        return Err(malformed("neither text nor data"));
    }
    for claimed in [&up.device, &up.from].into_iter().flatten() {
        let own = claimed == device || claimed.strip_prefix('@') == Some(device);
        if !own {
            return Err(PayloadError::Impersonation(
                claimed.chars().take(40).collect(),
            ));
        }
    }
    Ok(up)
}

/// Parses an ack document.
pub fn parse_ack(bytes: &[u8], max: usize) -> Result<AckDoc, PayloadError> {
    check_size(bytes, max)?;
    let doc: AckDoc = serde_json::from_slice(bytes).map_err(malformed)?;
    if doc.ids.len() > MAX_ACK_IDS {
        return Err(malformed(format!("more than {MAX_ACK_IDS} ids")));
    }
    Ok(doc)
}

impl Up {
    /// The text people see: `text`, then `data` as compact JSON on its own line.
    pub fn body(&self) -> String {
        match (&self.text, &self.data) {
            (Some(t), Some(d)) => format!("{t}\n{d}"),
            (Some(t), None) => t.clone(),
            (None, Some(d)) => d.to_string(),
            (None, None) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_messages_parse_and_each_bad_kind_is_named() {
        let up = parse_up(
            br#"{"id":"1","thread":"g","text":"hi","data":{"t":1}}"#,
            1000,
            "fridge",
        )
        .unwrap();
        assert_eq!(up.body(), "hi\n{\"t\":1}");
        assert!(matches!(
            parse_up(&[b' '; 2000], 1000, "f"),
            Err(PayloadError::Oversize { got: 2000, .. })
        ));
        for bad in [
            &b"{not json"[..],
            br#"{"id":"1","thread":"g"}"#,
            br#"{"id":"1","text":"x"}"#,
        ] {
            assert!(matches!(
                parse_up(bad, 1000, "f"),
                Err(PayloadError::Malformed(_))
            ));
        }
        for id in [
            "",
            "a b",
            "+",
            "#",
            "a/+/b",
            "../etc",
            "x..y",
            &"z".repeat(65),
        ] {
            let doc = format!(r#"{{"id":"{id}","thread":"g","text":"x"}}"#);
            assert!(
                matches!(
                    parse_up(doc.as_bytes(), 1000, "f"),
                    Err(PayloadError::BadId(_))
                ),
                "{id:?}"
            );
        }
        for id in ["r-1", "2026-12-02T10:00:00.5", "a_b.c", &"z".repeat(64)] {
            let doc = format!(r#"{{"id":"{id}","thread":"g","text":"x"}}"#);
            assert!(parse_up(doc.as_bytes(), 1000, "f").is_ok(), "{id:?}");
        }
        assert_eq!(
            parse_up(
                br#"{"id":"1","thread":"g","text":"x","device":"other"}"#,
                1000,
                "f"
            ),
            Err(PayloadError::Impersonation("other".into()))
        );
        assert!(parse_up(
            br#"{"id":"1","thread":"g","text":"x","from":"@f"}"#,
            1000,
            "f"
        )
        .is_ok());
    }

    #[test]
    fn ack_documents_are_bounded() {
        assert_eq!(parse_ack(br#"{"ids":["a"]}"#, 100).unwrap().ids, vec!["a"]);
        assert!(parse_ack(br#"{"ids":"a"}"#, 100).is_err());
    }
}
