//! Key encoders and decoders: the one place that knows byte layouts of keys. Counters are
//! big-endian so that sled's byte order is numeric order; `0x00` separates a variable-length
//! account from what follows (an E.164 string never contains it).

use crate::ids::{AccountId, DeviceId, MsgId};

/// Separator after an account id.
pub const SEP: u8 = 0x00;

/// `account ‖ 0x00`: prefix of every key of an account.
pub fn account_prefix(account: &AccountId) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.as_str().len() + 1);
    k.extend_from_slice(account.as_bytes());
    k.push(SEP);
    k
}

/// `account ‖ 0x00 ‖ item`: an account-scoped entry (a group id, a thread, a contact).
pub fn account_item(account: &AccountId, item: &[u8]) -> Vec<u8> {
    let a = account.as_bytes();
    let mut k = Vec::with_capacity(a.len() + 1 + item.len());
    k.extend_from_slice(a);
    k.push(SEP);
    k.extend_from_slice(item);
    k
}

/// `account ‖ 0x00 ‖ device:u32-be`.
pub fn device(d: &DeviceId) -> Vec<u8> {
    let mut k = account_prefix(&d.account);
    k.extend_from_slice(&d.device.to_be_bytes());
    k
}

/// Inverse of [`device`].
pub fn parse_device(k: &[u8]) -> Option<DeviceId> {
    let sep = k.iter().position(|&b| b == SEP)?;
    let account = AccountId::parse(std::str::from_utf8(&k[..sep]).ok()?).ok()?;
    let no: [u8; 4] = k.get(sep + 1..)?.try_into().ok()?;
    Some(DeviceId::new(account, u32::from_be_bytes(no)))
}

/// `device ‖ seq:u64-be`.
pub fn queue(d: &DeviceId, seq: u64) -> Vec<u8> {
    let mut k = device(d);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The seq of a queue key (its last 8 bytes).
pub fn parse_queue_seq(k: &[u8]) -> Option<u64> {
    let at = k.len().checked_sub(8)?;
    Some(u64::from_be_bytes(k[at..].try_into().ok()?))
}

/// Inverse of [`queue`].
pub fn parse_queue(k: &[u8]) -> Option<(DeviceId, u64)> {
    let at = k.len().checked_sub(8)?;
    Some((parse_device(&k[..at])?, parse_queue_seq(k)?))
}

/// `device ‖ key_id`.
pub fn otk(d: &DeviceId, key_id: &[u8]) -> Vec<u8> {
    let mut k = device(d);
    k.extend_from_slice(key_id);
    k
}

/// `account ‖ 0x00 ‖ msg_id`.
pub fn seen(sender: &AccountId, msg: &MsgId) -> Vec<u8> {
    let mut k = account_prefix(sender);
    k.extend_from_slice(&msg.0);
    k
}

/// `sender ‖ 0x00 ‖ id:u64-be`: the order of a sender's dedupe records.
pub fn seen_order(sender: &[u8], id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(sender.len() + 8);
    k.extend_from_slice(sender);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn account() -> impl Strategy<Value = AccountId> {
        "\\+[1-9][0-9]{7,14}".prop_map(|s| AccountId::parse(&s).unwrap())
    }

    proptest! {
        #[test]
        fn device_keys_round_trip(a in account(), no in any::<u32>()) {
            let d = DeviceId::new(a, no);
            prop_assert_eq!(parse_device(&device(&d)), Some(d));
        }

        #[test]
        fn queue_keys_round_trip_and_sort_by_seq(a in account(), no in any::<u32>(), s1 in any::<u64>(), s2 in any::<u64>()) {
            let d = DeviceId::new(a, no);
            prop_assert_eq!(parse_queue(&queue(&d, s1)), Some((d.clone(), s1)));
            prop_assert_eq!(queue(&d, s1).cmp(&queue(&d, s2)), s1.cmp(&s2));
        }

        #[test]
        fn one_accounts_prefix_never_matches_anothers_keys(a in account(), b in account(), no in any::<u32>()) {
            prop_assume!(a != b);
            prop_assert!(!device(&DeviceId::new(b, no)).starts_with(&account_prefix(&a)));
        }

        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_device(&bytes);
            let _ = parse_queue(&bytes);
        }
    }
}
