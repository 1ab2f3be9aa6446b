//! The log's record format. Pure: no I/O, so the fuzz target can feed it arbitrary bytes.
//!
//! ```text
//! record  = len:u32-le crc:u32-le body[len]
//! body    = postcard(Record)
//! crc     = CRC-32 (IEEE) of body
//! ```
//!
//! A segment is records back to back from offset 0. Where the bytes stop being a whole record
//! with a matching CRC (a torn write at a crash), the segment's valid part ends.

use serde::{Deserialize, Serialize};

use crate::store::QueueRecord;

/// Bytes before a record's body.
pub const HEADER_BYTES: usize = 8;
/// Largest body a record may have: a Send of the most envelopes of the largest ciphertexts
/// fits many times over; a bigger length in a header is a torn or corrupt header.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// One record: the operations of one store call, applied together or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The seq of the first `Enqueue` op; the n-th `Enqueue` op of the record has
    /// `first_seq + n`. Records are appended in `first_seq` order.
    pub first_seq: u64,
    pub ops: Vec<Op>,
}

/// What a record does to the store's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// An entry for a device's queue.
    Enqueue {
        account: String,
        device: u32,
        record: QueueRecord,
    },
    /// The dedupe record of an accepted Send: `msg_id` from `sender` was accepted at
    /// `timestamp_ms` for these recipient accounts. In the same record as its entries.
    Seen {
        sender: String,
        msg_id: [u8; 16],
        timestamp_ms: u64,
        recipients: Vec<String>,
    },
    /// Entries that left a device's queue (acknowledged, expired, or the device removed).
    Remove {
        account: String,
        device: u32,
        seqs: Vec<u64>,
    },
}

impl Record {
    /// How many seqs the record uses (its `Enqueue` ops; at least one, so that records that
    /// enqueue nothing still have distinct positions).
    pub fn seq_span(&self) -> u64 {
        let n = self
            .ops
            .iter()
            .filter(|o| matches!(o, Op::Enqueue { .. }))
            .count();
        u64::try_from(n.max(1)).unwrap_or(u64::MAX)
    }

    /// The last seq the record uses.
    pub fn last_seq(&self) -> u64 {
        self.first_seq.saturating_add(self.seq_span() - 1)
    }
}

/// Appends the framed record to `out`.
pub fn encode_into(out: &mut Vec<u8>, record: &Record) {
    // The body is serialised in place after room for its header, which is filled in after.
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    // postcard cannot fail to serialise these plain types into a Vec (it only writes).
    if postcard::to_io(record, &mut *out).is_err() {
        out.truncate(start + HEADER_BYTES);
    }
    let body_start = start + HEADER_BYTES;
    let len = u32::try_from(out.len() - body_start).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(&out[body_start..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..body_start].copy_from_slice(&crc.to_le_bytes());
}

/// Why a segment's valid part ended before its last byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    #[error("a record header at offset {offset} is cut short")]
    ShortHeader { offset: usize },
    #[error("a record at offset {offset} claims {len} bytes (most {MAX_BODY_BYTES})")]
    TooLong { offset: usize, len: usize },
    #[error("a record at offset {offset} is cut short ({len} bytes claimed, {left} left)")]
    ShortBody {
        offset: usize,
        len: usize,
        left: usize,
    },
    #[error("a record at offset {offset} fails its checksum")]
    Checksum { offset: usize },
    #[error("a record at offset {offset} does not decode: {detail}")]
    Undecodable { offset: usize, detail: String },
    #[error("a record at offset {offset} goes back in sequence ({seq} after {previous})")]
    OutOfOrder {
        offset: usize,
        seq: u64,
        previous: u64,
    },
}

/// The whole records at the start of `bytes`, the length they cover, and why the rest (if
/// any) is not a record. A run of zero bytes at the end is a clean end (no stop).
pub fn scan(bytes: &[u8]) -> (Vec<Record>, usize, Option<Stop>) {
    let mut records: Vec<Record> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.iter().all(|&b| b == 0) {
            return (records, at, None);
        }
        let Some(header) = rest.get(..HEADER_BYTES) else {
            return (records, at, Some(Stop::ShortHeader { offset: at }));
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_BODY_BYTES {
            return (records, at, Some(Stop::TooLong { offset: at, len }));
        }
        let Some(body) = rest.get(HEADER_BYTES..HEADER_BYTES + len) else {
            let left = rest.len() - HEADER_BYTES;
            return (
                records,
                at,
                Some(Stop::ShortBody {
                    offset: at,
                    len,
                    left,
                }),
            );
        };
        if crc32fast::hash(body) != crc {
            return (records, at, Some(Stop::Checksum { offset: at }));
        }
        let record: Record = match postcard::from_bytes(body) {
            Ok(r) => r,
            Err(e) => {
                let detail = e.to_string();
                return (records, at, Some(Stop::Undecodable { offset: at, detail }));
            }
        };
        if let Some(previous) = records.last().map(Record::last_seq) {
            if record.first_seq <= previous {
                let seq = record.first_seq;
                return (
                    records,
                    at,
                    Some(Stop::OutOfOrder {
                        offset: at,
                        seq,
                        previous,
                    }),
                );
            }
        }
        records.push(record);
        at += HEADER_BYTES + len;
    }
    (records, at, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::QueueItem;

    fn record(first_seq: u64, n: u8) -> Record {
        Record {
            first_seq,
            ops: (0..n)
                .map(|i| Op::Enqueue {
                    account: "+15550000001".into(),
                    device: u32::from(i),
                    record: QueueRecord {
                        enqueued_at_ms: 1,
                        item: QueueItem::DevicesChanged {
                            account: "+15550000002".into(),
                            devices: vec![1],
                        },
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn records_round_trip_and_every_cut_of_the_last_one_ends_the_valid_part_before_it() {
        let mut bytes = Vec::new();
        encode_into(&mut bytes, &record(10, 2));
        let first = bytes.len();
        encode_into(&mut bytes, &record(12, 1));
        let (got, len, stop) = scan(&bytes);
        assert_eq!(got, vec![record(10, 2), record(12, 1)]);
        assert_eq!((len, stop), (bytes.len(), None));
        for cut in first..bytes.len() {
            let (got, len, stop) = scan(&bytes[..cut]);
            assert_eq!(got.len(), 1, "cut at {cut}");
            assert_eq!(len, first);
            assert_eq!(stop.is_some(), cut > first, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum_and_trailing_zeros_are_a_clean_end() {
        let mut bytes = Vec::new();
        encode_into(&mut bytes, &record(1, 1));
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(scan(&bad).2, Some(Stop::Checksum { offset: 0 }));
        bytes.extend_from_slice(&[0; 100]);
        let (got, _, stop) = scan(&bytes);
        assert_eq!((got.len(), stop), (1, None));
    }

    #[test]
    fn a_record_that_goes_back_in_sequence_ends_the_valid_part() {
        let mut bytes = Vec::new();
        encode_into(&mut bytes, &record(10, 3));
        let first = bytes.len();
        encode_into(&mut bytes, &record(12, 1));
        let (got, len, stop) = scan(&bytes);
        assert_eq!((got.len(), len), (1, first));
        assert!(matches!(
            stop,
            Some(Stop::OutOfOrder {
                seq: 12,
                previous: 12,
                ..
            })
        ));
    }
}
