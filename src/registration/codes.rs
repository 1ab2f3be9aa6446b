//! Verification codes: issuing a random numeric code and checking a try against its record.
//!
//! Owns the code format, the hash kept at rest, expiry and the attempt budget. Does not own
//! storage: the caller persists the [`CodeRecord`] after every [`check`] (it changes on a wrong
//! try) and deletes it on success, on [`CodeError::Expired`] and on
//! [`CodeError::TooManyAttempts`].
//!
//! # Attempt budget
//!
//! A record starts with `attempts_left = max_attempts`. Every wrong try decrements it; the try
//! that brings it to 0 answers `TooManyAttempts`, and so does every try after it, right code or
//! not. With `max_attempts = 5`, five wrong tries answer `Wrong { attempts_left: 4 }`, `3`, `2`,
//! `1`, then `TooManyAttempts`; a sixth try answers `TooManyAttempts` even with the right code.
//! So at most `max_attempts` codes are ever compared per record, and `attempts_left` in a
//! `Wrong` answer is exactly the number of further tries that can still succeed.
//!
//! Malformed tries (not digits, or a length no code can have) are refused before any compare
//! and cost no attempt: they cannot match, so they give an attacker nothing.

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use crate::ids::AccountId;
pub use crate::store::CodeRecord;

/// Fewest digits a code may have; shorter values of `digits` are raised to this.
pub const MIN_CODE_DIGITS: u32 = 4;
/// Most digits a code may have; longer values of `digits` are lowered to this.
pub const MAX_CODE_DIGITS: u32 = 12;

/// Why a try was refused. Every variant is the client's (or the person's) doing.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum CodeError {
    /// The code's lifetime is over; request a new one. The caller deletes the record.
    #[error("verification code expired")]
    Expired,
    /// Not the code; `attempts_left` further tries remain (always at least 1).
    #[error("wrong verification code, {attempts_left} attempts left")]
    Wrong { attempts_left: u32 },
    /// The attempt budget is spent; the record is void. The caller deletes it.
    #[error("too many wrong verification codes")]
    TooManyAttempts,
    /// Not a code at all: empty, not ASCII digits only, or a length outside
    /// [`MIN_CODE_DIGITS`]..=[`MAX_CODE_DIGITS`]. Costs no attempt.
    #[error("verification code must be {MIN_CODE_DIGITS} to {MAX_CODE_DIGITS} digits")]
    Malformed,
}

/// A new random numeric code of `digits` digits (uniform, from rand's `OsRng`) and its record.
/// The code is stored only as HMAC-SHA256(secret, phone || 0x00 || code).
///
/// `digits` is clamped to [`MIN_CODE_DIGITS`]..=[`MAX_CODE_DIGITS`] (config validation should
/// refuse other values). `max_attempts = 0` yields a record that refuses every try.
pub fn issue(
    secret: &[u8; 32],
    phone: &AccountId,
    digits: u32,
    now_ms: u64,
    ttl_ms: u64,
    max_attempts: u32,
) -> (String, CodeRecord) {
    let digits = digits.clamp(MIN_CODE_DIGITS, MAX_CODE_DIGITS);
    // gen_range is unbiased (rejection sampling), so every code is equally likely, leading
    // zeros included. 10^12 fits a u64 easily.
    let n: u64 = rand::rngs::OsRng.gen_range(0..10u64.pow(digits));
    let code = format!("{n:0width$}", width = digits as usize);
    let record = CodeRecord {
        hash: code_hash(secret, phone, &code),
        expires_at_ms: now_ms.saturating_add(ttl_ms),
        attempts_left: max_attempts,
        issued_at_ms: now_ms,
    };
    (code, record)
}

/// Checks `code`; on a wrong code decrements `attempts_left` (the caller persists the record).
/// The compare is constant-time (`hmac`'s `verify_slice`). See the module docs for the exact
/// attempt budget. On `Ok` the caller must delete the record: a record is single-use.
pub fn check(
    rec: &mut CodeRecord,
    secret: &[u8; 32],
    phone: &AccountId,
    code: &str,
    now_ms: u64,
) -> Result<(), CodeError> {
    let len_ok = (MIN_CODE_DIGITS as usize..=MAX_CODE_DIGITS as usize).contains(&code.len());
    if !len_ok || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CodeError::Malformed);
    }
    if rec.attempts_left == 0 {
        return Err(CodeError::TooManyAttempts);
    }
    if now_ms >= rec.expires_at_ms {
        return Err(CodeError::Expired);
    }
    if code_mac(secret, phone, code)
        .verify_slice(&rec.hash)
        .is_ok()
    {
        return Ok(());
    }
    rec.attempts_left -= 1; // > 0, checked above
    match rec.attempts_left {
        0 => Err(CodeError::TooManyAttempts),
        attempts_left => Err(CodeError::Wrong { attempts_left }),
    }
}

/// HMAC-SHA256(secret, phone || 0x00 || code). The 0x00 separates the fields: neither contains
/// it, so no (phone, code) pair hashes like another.
fn code_hash(secret: &[u8; 32], phone: &AccountId, code: &str) -> [u8; 32] {
    code_mac(secret, phone, code).finalize().into_bytes().into()
}

fn code_mac(secret: &[u8; 32], phone: &AccountId, code: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so new_from_slice cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(phone.as_str().as_bytes());
    mac.update(&[0]);
    mac.update(code.as_bytes());
    mac
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7; 32];
    const NOW: u64 = 1_700_000_000_000;
    const TTL: u64 = 10 * 60 * 1000;

    fn phone() -> AccountId {
        AccountId::parse("+14155550100").unwrap()
    }

    fn wrong(code: &str) -> String {
        // Same length, different last digit.
        let mut s = code.to_owned();
        let last = s.pop().unwrap();
        s.push(if last == '0' { '1' } else { '0' });
        s
    }

    #[test]
    fn an_issued_code_has_the_asked_digits_and_checks_once_right() {
        let (code, mut rec) = issue(&SECRET, &phone(), 6, NOW, TTL, 5);
        assert_eq!(code.len(), 6);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(rec.expires_at_ms, NOW + TTL);
        assert_eq!(rec.issued_at_ms, NOW);
        assert_eq!(rec.attempts_left, 5);
        assert_eq!(check(&mut rec, &SECRET, &phone(), &code, NOW + 1), Ok(()));
        assert_eq!(rec.attempts_left, 5, "a right code costs no attempt");
    }

    #[test]
    fn the_hash_is_not_the_code_and_depends_on_secret_and_phone() {
        let (code, rec) = issue(&SECRET, &phone(), 6, NOW, TTL, 5);
        assert_ne!(&rec.hash[..code.len()], code.as_bytes());
        assert!(!hex::encode(rec.hash).contains(&code));
        assert_eq!(rec.hash, code_hash(&SECRET, &phone(), &code));
        assert_ne!(rec.hash, code_hash(&[8; 32], &phone(), &code));
        let other = AccountId::parse("+14155550101").unwrap();
        assert_ne!(rec.hash, code_hash(&SECRET, &other, &code));
    }

    #[test]
    fn the_right_code_for_another_phone_or_secret_is_wrong() {
        let (code, mut rec) = issue(&SECRET, &phone(), 6, NOW, TTL, 5);
        let other = AccountId::parse("+14155550101").unwrap();
        assert_eq!(
            check(&mut rec, &SECRET, &other, &code, NOW),
            Err(CodeError::Wrong { attempts_left: 4 })
        );
        assert_eq!(
            check(&mut rec, &[8; 32], &phone(), &code, NOW),
            Err(CodeError::Wrong { attempts_left: 3 })
        );
    }

    #[test]
    fn a_code_is_refused_from_its_expiry_on() {
        let (code, mut rec) = issue(&SECRET, &phone(), 6, NOW, TTL, 5);
        assert_eq!(
            check(&mut rec.clone(), &SECRET, &phone(), &code, NOW + TTL - 1),
            Ok(())
        );
        assert_eq!(
            check(&mut rec, &SECRET, &phone(), &code, NOW + TTL),
            Err(CodeError::Expired)
        );
        assert_eq!(rec.attempts_left, 5, "an expired try costs no attempt");
    }

    #[test]
    fn a_wrong_code_six_times_ends_in_too_many_attempts_and_the_right_code_is_refused_after() {
        let (code, mut rec) = issue(&SECRET, &phone(), 6, NOW, TTL, 5);
        let bad = wrong(&code);
        let answers: Vec<_> = (0..6)
            .map(|_| check(&mut rec, &SECRET, &phone(), &bad, NOW))
            .collect();
        assert_eq!(
            answers,
            [
                Err(CodeError::Wrong { attempts_left: 4 }),
                Err(CodeError::Wrong { attempts_left: 3 }),
                Err(CodeError::Wrong { attempts_left: 2 }),
                Err(CodeError::Wrong { attempts_left: 1 }),
                Err(CodeError::TooManyAttempts),
                Err(CodeError::TooManyAttempts),
            ]
        );
        assert_eq!(rec.attempts_left, 0);
        assert_eq!(
            check(&mut rec, &SECRET, &phone(), &code, NOW),
            Err(CodeError::TooManyAttempts)
        );
    }

    #[test]
    fn the_right_code_on_the_last_attempt_still_succeeds() {
        let (code, mut rec) = issue(&SECRET, &phone(), 6, NOW, TTL, 5);
        for _ in 0..4 {
            let _ = check(&mut rec, &SECRET, &phone(), &wrong(&code), NOW);
        }
        assert_eq!(rec.attempts_left, 1);
        assert_eq!(check(&mut rec, &SECRET, &phone(), &code, NOW), Ok(()));
    }

    #[test]
    fn malformed_codes_are_refused_without_costing_an_attempt() {
        let (_, mut rec) = issue(&SECRET, &phone(), 6, NOW, TTL, 5);
        for bad in [
            "",
            "123",
            "12345a",
            " 123456",
            "１２３４５６",
            "1234567890123",
        ] {
            assert_eq!(
                check(&mut rec, &SECRET, &phone(), bad, NOW),
                Err(CodeError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(rec.attempts_left, 5);
    }

    #[test]
    fn digits_are_clamped_to_the_allowed_range() {
        assert_eq!(issue(&SECRET, &phone(), 1, NOW, TTL, 5).0.len(), 4);
        assert_eq!(issue(&SECRET, &phone(), 99, NOW, TTL, 5).0.len(), 12);
    }

    #[test]
    fn codes_are_spread_over_the_whole_range() {
        // 4-digit codes: 400 draws all landing in one half would mean a broken generator
        // (chance 2^-399 otherwise).
        let low = (0..400)
            .map(|_| issue(&SECRET, &phone(), 4, NOW, TTL, 5).0)
            .filter(|c| c.as_str() < "5000")
            .count();
        assert!(low > 0 && low < 400, "{low}");
    }

    #[test]
    fn a_record_survives_a_serde_round_trip() {
        let (code, rec) = issue(&SECRET, &phone(), 6, NOW, TTL, 5);
        let bytes = postcard::to_allocvec(&rec).unwrap();
        let mut back: CodeRecord = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, rec);
        assert_eq!(check(&mut back, &SECRET, &phone(), &code, NOW), Ok(()));
    }
}
