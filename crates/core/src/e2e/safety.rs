//! Safety numbers: a short code two people compare to know that their clients encrypt to
//! each other's real devices, not to keys the relay handed out.
//!
//! Each account's part is a fingerprint of its account id and the Curve25519 identity keys of
//! all its devices, as the client knows them. The fingerprint is Signal's numeric one: SHA-512
//! iterated [`ITERATIONS`] times over a version, the keys and the id, the first 30 bytes read
//! as six 5-digit groups. The safety number puts the two 30-digit parts in ascending order, so
//! both people see the same 60 digits whoever computes it.
//!
//! The number changes when either account gains, loses or replaces a device (a reinstall
//! registers the primary again with new keys). The SHA-512 is the `sha2` crate's; nothing here
//! is cryptography of our own beyond the arrangement of the input.

use sha2::{Digest, Sha512};

use super::KEY_BYTES;

/// Format version, hashed first; a new arrangement of the input gets a new version.
pub const VERSION: u16 = 1;
/// Hash iterations: the cost of searching for a key set with a colliding fingerprint.
pub const ITERATIONS: usize = 5200;
/// Digits in a safety number (two parts of 30).
pub const DIGITS: usize = 60;
/// The prefix of a safety number's QR payload, so a scanner shows what it is.
pub const QR_PREFIX: &str = "relaybox-safety-number:1:";

/// The 60-digit safety number of two accounts, the same on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    digits: String,
}

impl SafetyNumber {
    /// `mine` and `theirs` are (account, [(device, identity key)]); device order does not
    /// matter.
    pub fn new(
        mine: (&str, &[(u32, [u8; KEY_BYTES])]),
        theirs: (&str, &[(u32, [u8; KEY_BYTES])]),
    ) -> Self {
        let a = fingerprint(mine.0, mine.1);
        let b = fingerprint(theirs.0, theirs.1);
        let digits = if a <= b { a + &b } else { b + &a };
        Self { digits }
    }

    /// The 60 digits, no spaces.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// Twelve groups of five digits, four to a line, as people read them aloud.
    pub fn grouped(&self) -> String {
        let groups: Vec<&str> = (0..DIGITS / 5)
            .map(|i| &self.digits[i * 5..i * 5 + 5])
            .collect();
        groups
            .chunks(4)
            .map(|line| line.join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What the QR code carries: [`QR_PREFIX`] and the digits.
    pub fn qr_payload(&self) -> String {
        format!("{QR_PREFIX}{}", self.digits)
    }
}

/// One account's 30 digits.
fn fingerprint(account: &str, keys: &[(u32, [u8; KEY_BYTES])]) -> String {
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut key_bytes = Vec::with_capacity(sorted.len() * (4 + KEY_BYTES));
    for (device, key) in &sorted {
        key_bytes.extend_from_slice(&device.to_be_bytes());
        key_bytes.extend_from_slice(key);
    }
    let mut hash = Sha512::new()
        .chain_update(VERSION.to_be_bytes())
        .chain_update(&key_bytes)
        .chain_update(account.as_bytes())
        .finalize();
    for _ in 0..ITERATIONS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(&key_bytes)
            .finalize();
    }
    let mut out = String::with_capacity(30);
    for chunk in hash[..30].chunks_exact(5) {
        let mut n = 0u64;
        for b in chunk {
            n = (n << 8) | u64::from(*b);
        }
        out.push_str(&format!("{:05}", n % 100_000));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "+14155550101";
    const BOB: &str = "+14155550102";

    #[test]
    fn both_sides_see_the_same_sixty_digits() {
        let a = [(0, [1; 32]), (2, [2; 32])];
        let b = [(0, [3; 32])];
        let mine = SafetyNumber::new((ALICE, &a), (BOB, &b));
        let theirs = SafetyNumber::new((BOB, &b), (ALICE, &a));
        assert_eq!(mine, theirs);
        assert_eq!(mine.digits().len(), DIGITS);
        assert!(mine.digits().bytes().all(|c| c.is_ascii_digit()));
        let grouped = mine.grouped();
        assert_eq!(grouped.lines().count(), 3);
        assert_eq!(grouped.replace([' ', '\n'], ""), mine.digits());
        assert!(mine.qr_payload().ends_with(mine.digits()));
    }

    #[test]
    fn device_order_does_not_matter() {
        let a = [(0, [1; 32]), (2, [2; 32])];
        let a_reversed = [(2, [2; 32]), (0, [1; 32])];
        let b = [(0, [3; 32])];
        assert_eq!(
            SafetyNumber::new((ALICE, &a), (BOB, &b)),
            SafetyNumber::new((ALICE, &a_reversed), (BOB, &b))
        );
    }

    #[test]
    fn a_new_key_a_new_device_or_another_account_changes_the_number() {
        let a = [(0, [1; 32])];
        let b = [(0, [3; 32])];
        let base = SafetyNumber::new((ALICE, &a), (BOB, &b));
        let reinstalled = [(0, [4; 32])];
        assert_ne!(base, SafetyNumber::new((ALICE, &a), (BOB, &reinstalled)));
        let linked = [(0, [3; 32]), (1, [5; 32])];
        assert_ne!(base, SafetyNumber::new((ALICE, &a), (BOB, &linked)));
        assert_ne!(base, SafetyNumber::new((ALICE, &a), ("+14155550103", &b)));
        // The same key moved to another device number is another key set.
        let moved = [(1, [3; 32])];
        assert_ne!(base, SafetyNumber::new((ALICE, &a), (BOB, &moved)));
    }

    #[test]
    fn the_number_is_stable_across_builds() {
        // A change here breaks every comparison between old and new clients: bump VERSION.
        // The value was computed independently, with Python's hashlib:
        //   kb = device.to_bytes(4, 'big') + key;  h = sha512(b'\x00\x01' + kb + account)
        //   5200 times: h = sha512(h + kb);  five bytes at a time, big-endian, mod 100000
        let n = SafetyNumber::new((ALICE, &[(0, [1; 32])]), (BOB, &[(0, [3; 32])]));
        assert_eq!(n.digits(), PINNED);
    }

    const PINNED: &str = "603246611807009576578423737503852168475463085340986842283779";
}
