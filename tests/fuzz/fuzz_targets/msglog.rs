//! The message log's recovery: arbitrary bytes as a segment file. Every input ends in the
//! records before the first bad one (and why it is bad) or a specific error, never a panic;
//! the records kept encode to bytes that read back as the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relaybox::store::msglog;

fuzz_target!(|data: &[u8]| {
    let (records, valid, _) = msglog::scan(data);
    let mut again = Vec::new();
    for r in &records {
        msglog::encode_into(&mut again, r);
    }
    let (back, len, stop) = msglog::scan(&again);
    assert_eq!((back, len, stop), (records, again.len(), None));
    assert!(valid <= data.len());
    let _ = msglog::recover_bytes(data);
});
