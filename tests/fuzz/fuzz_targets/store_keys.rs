//! The store's key decoders fed arbitrary bytes: they never panic, and what they accept
//! encodes back to a key that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relaybox::store::keys;

fuzz_target!(|data: &[u8]| {
    if let Some(d) = keys::parse_device(data) {
        assert_eq!(keys::parse_device(&keys::device(&d)), Some(d));
    }
    if let Some((d, seq)) = keys::parse_queue(data) {
        let k = keys::queue(&d, seq);
        assert_eq!(keys::parse_queue(&k), Some((d, seq)));
        assert_eq!(keys::parse_queue_seq(&k), Some(seq));
    }
    let _ = keys::parse_queue_seq(data);
});
