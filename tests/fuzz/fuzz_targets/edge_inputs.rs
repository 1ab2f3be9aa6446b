//! What the HTTP and MQTT edges parse from the network before anything else: account ids and
//! handles, blob ids (path traversal), blob capability URLs, MQTT topics (wildcards, foreign
//! prefixes) and MQTT JSON payloads. Arbitrary input never panics; a blob id that parses
//! never names another directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relaybox::blob::capability::{self, Method, Presented};
use relaybox::blob::BlobId;
use relaybox::edge::mqtt::{payload, topics};
use relaybox::ids::{AccountId, Handle};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        let _ = payload::parse_up(data, 4096, "@fuzz");
        let _ = payload::parse_ack(data, 4096);
        return;
    };
    let _ = AccountId::parse(text);
    let _ = Handle::parse(text);
    if let Ok(id) = BlobId::parse(text) {
        let s = id.as_str();
        assert!(
            !s.contains('/') && !s.contains('\\') && !s.contains(".."),
            "{s:?}"
        );
    }
    let _ = topics::parse("relaybox", text);
    let _ = payload::parse_up(data, 4096, "@fuzz");
    let _ = payload::parse_ack(data, 4096);
    // A presented capability URL: four newline-separated query values.
    let mut parts = text.splitn(4, '\n').map(|s| Some(s.to_owned()));
    let presented = Presented {
        m: parts.next().flatten(),
        dev: parts.next().flatten(),
        exp: parts.next().flatten(),
        sig: parts.next().flatten(),
    };
    let blob = BlobId::of(b"fuzz");
    let _ = capability::verify(&[3; 32], &blob, Method::Get, &presented, 0);
    let _ = capability::verify(&[3; 32], &blob, Method::Put, &presented, u64::MAX);
});
