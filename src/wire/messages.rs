//! The protobuf messages of `proto/relaybox.proto`, generated at build time by prost (compiled
//! with protox, so no system `protoc` is needed), plus small helpers to build common answers.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/relaybox.v1.rs"));

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
