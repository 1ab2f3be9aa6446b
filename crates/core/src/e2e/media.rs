//! Encryption of media and history blobs, segment by segment: each segment has its own
//! random ChaCha20-Poly1305 key (carried in the end-to-end message) and nonce.
//!
//! # Format
//!
//! ```text
//! sealed segment = nonce[12] ciphertext tag[16]
//! ```
//!
//! Shared by the CLI client and the browser companion, so both read what the other wrote.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// Bytes of nonce before each encrypted segment.
pub const NONCE_BYTES: usize = 12;
/// Bytes of a segment key.
pub const KEY_BYTES: usize = 32;

/// Why a sealed segment could not be opened. (the sender's or the storage's fault)
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    #[error("media key or segment is malformed")]
    Malformed,
    #[error("media does not decrypt (damaged, or not for this key)")]
    Forged,
    #[error("encrypting media failed")]
    Seal,
}

/// Encrypts one segment under a fresh key: `nonce ‖ ciphertext ‖ tag`. Returns the key.
pub fn seal(plain: &[u8]) -> Result<([u8; KEY_BYTES], Vec<u8>), MediaError> {
    let key: [u8; KEY_BYTES] = rand::random();
    let nonce: [u8; NONCE_BYTES] = rand::random();
    let ct = ChaCha20Poly1305::new(Key::from_slice(&key))
        .encrypt(Nonce::from_slice(&nonce), plain)
        .map_err(|_| MediaError::Seal)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok((key, out))
}

/// Inverse of [`seal`]; `key_hex` is the key as the end-to-end message carries it.
pub fn open(key_hex: &str, sealed: &[u8]) -> Result<Vec<u8>, MediaError> {
    let key = hex::decode(key_hex).map_err(|_| MediaError::Malformed)?;
    if key.len() != KEY_BYTES || sealed.len() < NONCE_BYTES {
        return Err(MediaError::Malformed);
    }
    let (nonce, ct) = sealed.split_at(NONCE_BYTES);
    ChaCha20Poly1305::new(Key::from_slice(&key))
        .decrypt(Nonce::from_slice(nonce), ct)
        .map_err(|_| MediaError::Forged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_segment_opens_with_its_key_only() {
        let (key, sealed) = seal(b"thumbnail").unwrap();
        assert_eq!(open(&hex::encode(key), &sealed).unwrap(), b"thumbnail");
        assert_eq!(
            open(&hex::encode([1u8; 32]), &sealed),
            Err(MediaError::Forged)
        );
        assert_eq!(open("zz", &sealed), Err(MediaError::Malformed));
        assert_eq!(
            open(&hex::encode(key), b"short"),
            Err(MediaError::Malformed)
        );
    }
}
