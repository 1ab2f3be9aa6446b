//! Every protobuf message a peer can send or the relay can answer, and the decrypted inner
//! end-to-end payload: decoding arbitrary bytes never panics, and what decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use relaybox::e2e::payload::Inner;
use relaybox::wire::messages::{ClientFrame, Login, LoginResult, ServerFrame};

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(m) = M::decode(data) {
        let again = M::decode(m.encode_to_vec().as_slice()).expect("re-encoded message decodes");
        assert_eq!(m, again);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<ClientFrame>(data);
    round_trip::<ServerFrame>(data);
    round_trip::<Login>(data);
    round_trip::<LoginResult>(data);
    if let Ok(inner) = Inner::decode(data) {
        Inner::decode(&inner.encode()).expect("re-encoded inner payload decodes");
    }
});
