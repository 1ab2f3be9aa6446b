//! Identifiers shared by every layer: accounts, devices, message ids, group ids and blob ids.
//!
//! Owns parsing and display of ids. Does not own phone-number normalisation (that lives in
//! `registration::phone`, which produces an [`AccountId`]) nor key encoding (that is `store::keys`).

use std::fmt;

/// An account, in one of two forms, constructed only from a validated string:
/// - a person (or business) addressed by its phone number in E.164 form (`+` followed by 8 to
///   15 digits), the only form registration creates;
/// - a handle `@name` ([`Handle`] rules), created only by operators: bridged MQTT devices
///   today, business entities later. Handles never contain `/`, `+`, `#`, `_` or a NUL, so
///   they are safe inside store keys and MQTT topics.
///
/// Held inline (at most [`AccountId::MAX_HANDLE_BYTES`] bytes, no heap): ids are parsed,
/// cloned and hashed on every message's path, and none of that allocates. It compares and
/// orders exactly as its string does.
#[derive(Clone)]
pub struct AccountId {
    len: u8,
    bytes: [u8; AccountId::MAX_HANDLE_BYTES],
}

/// Why a string is not an E.164 account id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("account id must be E.164 ('+' followed by 8 to 15 digits) or a handle ('@' and 1 to 32 of a-z 0-9 . -), got {0:?}")]
pub struct BadAccountId(pub String);

impl AccountId {
    /// Longest E.164 number, in bytes including the `+`.
    pub const MAX_BYTES: usize = 16;

    /// Longest handle account, in bytes including the `@`.
    pub const MAX_HANDLE_BYTES: usize = 1 + Handle::MAX_BYTES;

    /// Accepts canonical E.164 (`+` and 8–15 digits, no leading zero) or `@` + a [`Handle`].
    pub fn parse(s: &str) -> Result<Self, BadAccountId> {
        if let Some(name) = s.strip_prefix('@') {
            return Handle::parse(name)
                .map(|h| Self::from_handle(&h))
                .map_err(|_| BadAccountId(s.chars().take(40).collect()));
        }
        Self::parse_phone(s)
    }

    /// Accepts only canonical E.164 (registration's form).
    pub fn parse_phone(s: &str) -> Result<Self, BadAccountId> {
        let digits = s
            .strip_prefix('+')
            .ok_or_else(|| BadAccountId(s.to_owned()))?;
        let ok = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(Self::inline(&[s]))
        } else {
            Err(BadAccountId(s.chars().take(32).collect()))
        }
    }

    /// The account of an operator-created handle.
    pub fn from_handle(h: &Handle) -> Self {
        Self::inline(&["@", h.as_str()])
    }

    /// The handle, for a handle account.
    pub fn handle(&self) -> Option<Handle> {
        self.as_str()
            .strip_prefix('@')
            .map(|n| Handle(n.to_owned()))
    }

    /// The id's bytes (its string's, UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        // Only ever filled from whole `&str`s (`inline`), so the bytes are UTF-8; the
        // fallback is unreachable and keeps this free of `unsafe`.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    /// Copies validated parts (an E.164 number, or `@` and a handle: both fit) inline.
    fn inline(parts: &[&str]) -> Self {
        let mut bytes = [0u8; Self::MAX_HANDLE_BYTES];
        let mut len = 0;
        for p in parts {
            let end = len + p.len();
            bytes[len..end].copy_from_slice(p.as_bytes());
            len = end;
        }
        Self {
            len: u8::try_from(len).unwrap_or(u8::MAX),
            bytes,
        }
    }
}

// Compared, ordered and hashed by its bytes, as its string would be, without checking them
// again for UTF-8 each time.
impl PartialEq for AccountId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for AccountId {}

impl PartialOrd for AccountId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AccountId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for AccountId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AccountId").field(&self.as_str()).finish()
    }
}

/// An operator-chosen name: lowercase `[a-z0-9][a-z0-9.-]{0,31}`. Used as the `@name` of an
/// account and as the id of an MQTT device in its topics; the charset keeps both safe (no
/// topic wildcards `+`/`#`, no level separator `/`, no `_`, no NUL).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(String);

/// Why a string is not a handle.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a handle is 1 to 32 of a-z 0-9 . - (starting with a letter or digit), got {0:?}")]
pub struct BadHandle(pub String);

impl Handle {
    /// Longest handle, in bytes.
    pub const MAX_BYTES: usize = 32;

    pub fn parse(s: &str) -> Result<Self, BadHandle> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= Self::MAX_BYTES
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadHandle(s.chars().take(40).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device within an account. Device 0 is the primary (the phone).
pub type DeviceNo = u32;

/// Largest number of devices an account may have (primary plus companions).
pub const MAX_DEVICES_PER_ACCOUNT: usize = 16;

/// Prefix of group ids (accounts start with `+` or `@`, so a thread name says which it is).
pub const GROUP_ID_PREFIX: &str = "g";

/// Whether a thread name is a group id, `g` and 32 hex digits (else it is an account).
pub fn is_group_id(s: &str) -> bool {
    s.len() == 33 && s.starts_with(GROUP_ID_PREFIX) && s[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// One device of one account: the unit that has a Noise key, a queue and a session.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId {
    pub account: AccountId,
    pub device: DeviceNo,
}

impl DeviceId {
    pub fn new(account: AccountId, device: DeviceNo) -> Self {
        Self { account, device }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.account, self.device)
    }
}

/// A client-chosen 128-bit message id; a retry with the same id is idempotent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId(pub [u8; 16]);

/// Why bytes are not a message id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("msg_id must be exactly 16 bytes, got {0}")]
pub struct BadMsgId(pub usize);

impl MsgId {
    pub fn from_slice(b: &[u8]) -> Result<Self, BadMsgId> {
        <[u8; 16]>::try_from(b)
            .map(Self)
            .map_err(|_| BadMsgId(b.len()))
    }

    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Length of a blob id: lowercase hex of a SHA-256 digest.
pub const BLOB_ID_CHARS: usize = 64;

/// A blob's id: the lowercase hex SHA-256 of its (encrypted) content. Constructed only from a
/// validated string, so it is always safe to use as a file name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId(String);

/// Why a string is not a blob id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadBlobId {
    /// Path syntax (`/`, `\`, `..`, `%`): an attempt to leave the blob directory.
    #[error("blob id contains path syntax")]
    Traversal,
    /// Anything else that is not 64 lowercase hex characters.
    #[error("blob id must be 64 lowercase hex characters (a SHA-256)")]
    Malformed,
}

impl BlobId {
    pub fn parse(s: &str) -> Result<Self, BadBlobId> {
        if s.contains(['/', '\\', '%']) || s.contains("..") {
            return Err(BadBlobId::Traversal);
        }
        let ok = s.len() == BLOB_ID_CHARS
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadBlobId::Malformed)
        }
    }

    /// The id of `content`.
    pub fn of(content: &[u8]) -> Self {
        use sha2::Digest;
        Self(hex::encode(sha2::Sha256::digest(content)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_account_ids_are_accepted_and_others_refused() {
        assert!(AccountId::parse("+14155550100").is_ok());
        for bad in [
            "14155550100",
            "+1",
            "+0123456789",
            "+1415555010a",
            "",
            "+1234567890123456",
        ] {
            assert!(AccountId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn handles_are_lowercase_names_without_topic_or_key_metacharacters() {
        for good in ["fridge-3", "a", "0door", "shop.till-2", &"x".repeat(32)] {
            assert!(Handle::parse(good).is_ok(), "{good}");
            let a = AccountId::parse(&format!("@{good}")).unwrap();
            assert_eq!(a.handle().unwrap().as_str(), good);
        }
        for bad in [
            "",
            "-a",
            ".a",
            "Fridge",
            "a_b",
            "a/b",
            "a+",
            "#",
            "a b",
            "a\0",
            "é",
            &"x".repeat(33),
        ] {
            assert!(Handle::parse(bad).is_err(), "{bad:?}");
            assert!(AccountId::parse(&format!("@{bad}")).is_err(), "{bad:?}");
        }
        assert!(AccountId::parse_phone("@fridge").is_err());
        assert!(AccountId::parse("+14155550100").unwrap().handle().is_none());
    }

    #[test]
    fn an_account_id_reads_and_compares_as_its_string() {
        use std::collections::hash_map::RandomState;
        use std::hash::BuildHasher;
        let ids = [
            "+14155550100",
            "+4915112345678",
            "@a",
            &format!("@{}", "z".repeat(32)),
        ];
        let hasher = RandomState::new();
        for a in ids {
            let id = AccountId::parse(a).unwrap();
            assert_eq!((id.as_str(), id.to_string()), (a, a.to_owned()));
            for b in ids {
                let other = AccountId::parse(b).unwrap();
                assert_eq!(id.cmp(&other), a.cmp(b), "{a} against {b}");
                assert_eq!(id == other, a == b);
                if id == other {
                    assert_eq!(hasher.hash_one(&id), hasher.hash_one(&other));
                }
            }
        }
        let longest = AccountId::parse(ids[3]).unwrap();
        assert_eq!(longest.handle().unwrap().as_str(), "z".repeat(32));
    }

    #[test]
    fn msg_ids_must_be_sixteen_bytes() {
        assert_eq!(MsgId::from_slice(&[1; 15]), Err(BadMsgId(15)));
        assert!(MsgId::from_slice(&[1; 16]).is_ok());
    }

    #[test]
    fn only_lowercase_sha256_hex_is_a_blob_id() {
        let good = BlobId::of(b"x");
        assert_eq!(BlobId::parse(good.as_str()).unwrap(), good);
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"0".repeat(65)] {
            assert_eq!(BlobId::parse(bad), Err(BadBlobId::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn path_syntax_is_reported_as_traversal() {
        for bad in ["..", "../etc/passwd", "a/b", "a\\b", "%2e%2e", "ab%2Fcd"] {
            assert_eq!(BlobId::parse(bad), Err(BadBlobId::Traversal), "{bad:?}");
        }
    }
}
