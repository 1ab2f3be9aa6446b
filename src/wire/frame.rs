//! Length-prefixed framing: `u16` big-endian length, then that many bytes (one Noise message).
//!
//! [`FrameDecoder`] is a push parser: feed it whatever bytes arrived, pull complete frames
//! out. It never allocates more than one frame's worth beyond what it was given.

use super::ProtocolError;

/// Largest payload a frame can carry: the Noise message limit, which is also `u16::MAX`.
pub const MAX_FRAME_BYTES: usize = 65_535;

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 2;

/// Prepends the length header to `payload`.
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let len = u16::try_from(payload.len())
        .map_err(|_| ProtocolError::FrameTooLarge { len: payload.len() })?;
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Incremental frame parser.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Largest payload accepted; frames above it are refused (`FrameTooLarge`).
    limit: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `limit` bytes (at most [`MAX_FRAME_BYTES`]).
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit: limit.min(MAX_FRAME_BYTES),
        }
    }

    /// Changes the largest payload accepted from now on.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(MAX_FRAME_BYTES);
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's payload, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtocolError> {
        let Some(header) = self.buf.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if len > self.limit {
            return Err(ProtocolError::FrameTooLarge { len });
        }
        if self.buf.len() < FRAME_HEADER_BYTES + len {
            return Ok(None);
        }
        let frame = self.buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len].to_vec();
        self.buf.drain(..FRAME_HEADER_BYTES + len);
        if self.buf.is_empty() {
            // An idle connection holds no buffer.
            self.buf = Vec::new();
        }
        Ok(Some(frame))
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_frame_split_across_reads_is_reassembled() {
        let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
        let bytes = encode(b"hello").unwrap();
        d.extend(&bytes[..3]);
        assert_eq!(d.next_frame().unwrap(), None);
        d.extend(&bytes[3..]);
        assert_eq!(d.next_frame().unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_its_body_arrives() {
        let mut d = FrameDecoder::new(100);
        d.extend(&[0x01, 0x00]);
        assert!(matches!(
            d.next_frame(),
            Err(ProtocolError::FrameTooLarge { len: 256 })
        ));
    }

    #[test]
    fn encoding_a_payload_over_u16_fails() {
        assert!(encode(&vec![0; MAX_FRAME_BYTES + 1]).is_err());
    }

    proptest! {
        #[test]
        fn frames_round_trip_whatever_the_read_sizes(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            chunk in 1usize..50,
        ) {
            let mut wire = Vec::new();
            for p in &payloads { wire.extend(encode(p).unwrap()); }
            let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
            let mut out = Vec::new();
            for c in wire.chunks(chunk) {
                d.extend(c);
                while let Some(f) = d.next_frame().unwrap() { out.push(f); }
            }
            prop_assert_eq!(out, payloads);
        }
    }
}
