//! Resumption tokens: opaque to clients, sealed by the relay with ChaCha20-Poly1305 under a
//! key only the relay holds. A token names one device, carries a random id that the relay
//! records as the device's one valid token (single use), and an expiry.
//!
//! # Format
//!
//! ```text
//! token = nonce[12] ciphertext(postcard(TokenClaims)) tag[16]
//! ```

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};

/// Bytes of the AEAD nonce at the start of a token.
const NONCE_BYTES: usize = 12;
/// Longest token accepted; anything larger is refused before decryption.
pub const MAX_TOKEN_BYTES: usize = 256;

/// What a token says, once opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    pub account: String,
    pub device: u32,
    /// Random id; only the most recently issued id of a device is valid.
    pub id: u64,
    pub expires_at_ms: u64,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed or was not issued by this relay")]
    Forged,
    #[error("token expired")]
    Expired,
}

/// The relay's token key.
#[derive(Clone)]
pub struct TokenKey(pub [u8; 32]);

impl TokenKey {
    /// Seals `claims`; `nonce` must be fresh random bytes.
    pub fn seal(&self, claims: &TokenClaims, nonce: [u8; NONCE_BYTES]) -> Vec<u8> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        // Serialising a plain struct into a Vec cannot fail.
        let plain = postcard::to_allocvec(claims).unwrap_or_default();
        let mut out = nonce.to_vec();
        // Encryption with a valid key and in-memory buffer cannot fail.
        out.extend(
            cipher
                .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
                .unwrap_or_default(),
        );
        out
    }

    /// Opens a token and checks its expiry against `now_ms`.
    pub fn open(&self, token: &[u8], now_ms: u64) -> Result<TokenClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES || token.len() < NONCE_BYTES {
            return Err(TokenError::Forged);
        }
        let (nonce, ct) = token.split_at(NONCE_BYTES);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| TokenError::Forged)?;
        let claims: TokenClaims = postcard::from_bytes(&plain).map_err(|_| TokenError::Forged)?;
        if claims.expires_at_ms <= now_ms {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TokenClaims {
        TokenClaims {
            account: "+14155550100".into(),
            device: 0,
            id: 7,
            expires_at_ms: 1_000,
        }
    }

    #[test]
    fn a_sealed_token_opens_before_expiry_only() {
        let key = TokenKey([9; 32]);
        let t = key.seal(&claims(), [1; 12]);
        assert_eq!(key.open(&t, 999), Ok(claims()));
        assert_eq!(key.open(&t, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn a_tampered_or_foreign_token_is_forged() {
        let key = TokenKey([9; 32]);
        let mut t = key.seal(&claims(), [1; 12]);
        assert_eq!(TokenKey([8; 32]).open(&t, 0), Err(TokenError::Forged));
        let last = t.len() - 1;
        t[last] ^= 1;
        assert_eq!(key.open(&t, 0), Err(TokenError::Forged));
        assert_eq!(key.open(&[], 0), Err(TokenError::Forged));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_claims_round_trip_through_a_sealed_token(
            account in "\\+[1-9][0-9]{7,14}", device in any::<u32>(), id in any::<u64>(),
            expires in 1u64.., nonce in any::<[u8; 12]>(), key in any::<[u8; 32]>(),
        ) {
            let claims = TokenClaims { account, device, id, expires_at_ms: expires };
            let key = TokenKey(key);
            prop_assert_eq!(key.open(&key.seal(&claims, nonce), expires - 1), Ok(claims));
        }

        #[test]
        fn opening_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = TokenKey([1; 32]).open(&bytes, 0);
        }
    }
}
