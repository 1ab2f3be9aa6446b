//! The protobuf messages of `proto/relaybox.proto`, generated at build time by prost (compiled
//! with protox, so no system `protoc` is needed), plus small helpers to build common answers.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/relaybox.v1.rs"));

/// Most msg_ids in one receipt: one a client sends, and one DELIVERED receipt of the relay.
pub const MAX_RECEIPT_IDS: usize = 256;
/// Most numbers in one contact upload (`UploadContacts`).
pub const MAX_CONTACTS: usize = 5_000;

impl Error {
    /// An error with a code and a human-readable reason.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            message: message.into(),
            ..Default::default()
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code().as_str_name(), self.message)
    }
}

impl std::error::Error for Error {}

impl Deliver {
    /// The account and device whose keys encrypted this message: the agent's for a business
    /// entity's answer, else the sender's.
    pub fn encrypted_by(&self) -> (&str, u32) {
        if self.agent.is_empty() {
            (self.from.as_str(), self.from_device)
        } else {
            (self.agent.as_str(), self.agent_device)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message as _;

    proptest! {
        #[test]
        fn sends_round_trip_through_protobuf(
            req_id in any::<u64>(), msg_id in proptest::collection::vec(any::<u8>(), 16),
            to in ".{0,20}", devices in proptest::collection::vec((any::<u32>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..4),
        ) {
            let envelopes = devices.into_iter().map(|(device, olm_type, ciphertext)| Envelope { device, olm_type, ciphertext: ciphertext.into(), ..Default::default() }).collect();
            let f = ClientFrame { req_id, body: Some(client_frame::Body::Send(Send { msg_id, to, envelopes, kind: 1, ..Default::default() })) };
            prop_assert_eq!(ClientFrame::decode(f.encode_to_vec().as_slice()).unwrap(), f);
        }

        #[test]
        fn delivers_round_trip_through_protobuf(seq in any::<u64>(), from in ".{0,20}", ct in proptest::collection::vec(any::<u8>(), 0..128)) {
            let f = ServerFrame { req_id: 0, body: Some(server_frame::Body::Deliver(Deliver { seq, from, ciphertext: ct.into(), ..Default::default() })) };
            prop_assert_eq!(ServerFrame::decode(f.encode_to_vec().as_slice()).unwrap(), f);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ClientFrame::decode(bytes.as_slice());
            let _ = ServerFrame::decode(bytes.as_slice());
            let _ = Login::decode(bytes.as_slice());
            let _ = LoginResult::decode(bytes.as_slice());
        }
    }
}
