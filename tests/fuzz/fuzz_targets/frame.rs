//! The frame decoder fed arbitrary bytes in arbitrary chunks: it never panics, never returns
//! a frame above its limit, and what it returns re-encodes to exactly the bytes it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relaybox::wire::frame::{self, FrameDecoder, FRAME_HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let Some((&limit, stream)) = rest.split_first() else {
        return;
    };
    // A small limit exercises the oversize path; 255 stands for the largest frame.
    let limit = if limit == 255 {
        frame::MAX_FRAME_BYTES
    } else {
        usize::from(limit)
    };
    let chunk = usize::from(split).max(1);
    let mut dec = FrameDecoder::new(limit);
    let mut consumed = Vec::new();
    let mut refused = false;
    'feed: for piece in stream.chunks(chunk) {
        dec.extend(piece);
        loop {
            match dec.next_frame() {
                Ok(Some(payload)) => {
                    assert!(payload.len() <= limit, "frame above the decoder's limit");
                    consumed.extend(frame::encode(&payload).expect("a decoded frame re-encodes"));
                }
                Ok(None) => break,
                Err(_) => {
                    refused = true;
                    break 'feed;
                }
            }
        }
    }
    assert!(
        stream.starts_with(&consumed),
        "frames are not a prefix of the input"
    );
    if !refused {
        assert_eq!(consumed.len() + dec.buffered(), stream.len());
        // Only an incomplete frame (within the limit) may stay buffered.
        assert!(dec.buffered() < FRAME_HEADER_BYTES + limit.max(1));
    }
});
