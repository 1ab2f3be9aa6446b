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
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    encode_into(&mut out, payload)?;
    Ok(out)
}

/// Appends `payload`, framed, to `out` (several frames in one buffer make one write).
pub fn encode_into(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), ProtocolError> {
    let len = u16::try_from(payload.len())
        .map_err(|_| ProtocolError::FrameTooLarge { len: payload.len() })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// The payloads of whole frames back to back in `buf` (as [`encode_into`] or
/// `Transport::encrypt_framed` write them), for transports that send one message per frame.
/// Stops at the first incomplete frame.
pub fn payloads(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let header = rest.get(..FRAME_HEADER_BYTES)?;
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        let payload = rest.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len)?;
        rest = &rest[FRAME_HEADER_BYTES + len..];
        Some(payload)
    })
}

/// Incremental frame parser. Frames are read at an offset into the buffer, which is compacted
/// once per `extend`, not once per frame: the cost is linear in the bytes received however
/// many frames one read carries.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    pos: usize,
    /// Largest payload accepted; frames above it are refused (`FrameTooLarge`).
    limit: usize,
    /// Whether a frame came out yet: only the stream's first bytes can be another protocol.
    started: bool,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `limit` bytes (at most [`MAX_FRAME_BYTES`]).
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            limit: limit.min(MAX_FRAME_BYTES),
            started: false,
        }
    }

    /// Changes the largest payload accepted from now on.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(MAX_FRAME_BYTES);
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Whether a complete frame is buffered (an error for a frame that will never be one).
    pub fn has_frame(&self) -> Result<bool, ProtocolError> {
        Ok(self.frame_len()?.is_some())
    }

    /// The next complete frame's payload, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtocolError> {
        self.take_frame(<[u8]>::to_vec)
    }

    /// Hands the next complete frame's payload to `f` where it lies in the buffer, without
    /// copying it out; `Ok(None)` (and `f` not called) if more bytes are needed.
    pub fn take_frame<R>(
        &mut self,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, ProtocolError> {
        let Some(len) = self.frame_len()? else {
            return Ok(None);
        };
        let start = self.pos + FRAME_HEADER_BYTES;
        let out = f(&self.buf[start..start + len]);
        self.pos = start + len;
        self.started = true;
        if self.pos == self.buf.len() {
            // An idle connection holds no buffer.
            self.buf = Vec::new();
            self.pos = 0;
        }
        Ok(Some(out))
    }

    /// The length of the next frame's payload if it is all buffered.
    fn frame_len(&self) -> Result<Option<usize>, ProtocolError> {
        let rest = &self.buf[self.pos..];
        let Some(header) = rest.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if len > self.limit {
            if !self.started {
                if let Some(what) = foreign_protocol(rest) {
                    return Err(ProtocolError::ForeignProtocol { len, what });
                }
            }
            return Err(ProtocolError::FrameTooLarge { len });
        }
        Ok((rest.len() >= FRAME_HEADER_BYTES + len).then_some(len))
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// What a stream's first bytes are, when they are another protocol's opening (a client
/// pointed at the wrong port): their "length" is then far over the handshake limit, and the
/// peer is better served by a name than by "frame too large". Matches as many bytes as arrived
/// (at least the two of the length header).
fn foreign_protocol(first: &[u8]) -> Option<&'static str> {
    const OPENINGS: [(&[u8], &str); 12] = [
        (b"GET ", "an HTTP request"),
        (b"POST", "an HTTP request"),
        (b"HEAD", "an HTTP request"),
        (b"PUT ", "an HTTP request"),
        (b"DELETE", "an HTTP request"),
        (b"OPTIONS", "an HTTP request"),
        (b"PATCH", "an HTTP request"),
        (b"CONNECT", "an HTTP request"),
        (b"PRI * HTTP/2", "an HTTP/2 preface"),
        (b"\x16\x03", "a TLS ClientHello"),
        (b"SSH-", "an SSH client"),
        (b"\x10", "an MQTT CONNECT"),
    ];
    OPENINGS.iter().find_map(|(opening, what)| {
        let n = first.len().min(opening.len());
        (first[..n] == opening[..n]).then_some(*what)
    })
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
    fn another_protocols_opening_is_named_only_at_the_start_of_the_stream() {
        let named = |bytes: &[u8]| {
            let mut d = FrameDecoder::new(1024);
            d.extend(bytes);
            match d.next_frame() {
                Err(ProtocolError::ForeignProtocol { what, .. }) => Some(what),
                Err(ProtocolError::FrameTooLarge { .. }) => None,
                other => panic!("expected a refusal, got {other:?}"),
            }
        };
        assert_eq!(named(b"GET / HTTP/1.1\r\n"), Some("an HTTP request"));
        assert_eq!(named(b"GE"), Some("an HTTP request"));
        assert_eq!(
            named(b"\x16\x03\x01\x02\x00\x01"),
            Some("a TLS ClientHello")
        );
        assert_eq!(named(b"SSH-2.0-OpenSSH_9.2"), Some("an SSH client"));
        assert_eq!(named(b"PRI * HTTP/2.0\r\n"), Some("an HTTP/2 preface"));
        assert_eq!(named(b"\x10\x1a\x00\x04MQTT"), Some("an MQTT CONNECT"));
        assert_eq!(named(b"GEx"), None);
        assert_eq!(named(&[0xff, 0xff]), None);
        // After a frame, the same bytes are just an oversized frame.
        let mut d = FrameDecoder::new(1024);
        d.extend(&encode(b"hi").unwrap());
        d.extend(b"GET / HTTP/1.1");
        assert_eq!(d.next_frame().unwrap().as_deref(), Some(&b"hi"[..]));
        assert!(matches!(
            d.next_frame(),
            Err(ProtocolError::FrameTooLarge { .. })
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

        #[test]
        fn payloads_splits_a_buffer_of_frames_back_into_them(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
        ) {
            let mut wire = Vec::new();
            for p in &payloads { encode_into(&mut wire, p).unwrap(); }
            let split: Vec<Vec<u8>> = super::payloads(&wire).map(<[u8]>::to_vec).collect();
            prop_assert_eq!(split, payloads);
        }
    }
}
