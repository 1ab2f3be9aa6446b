//! Errors of a session, and the one place that maps request errors to wire error codes.

use crate::actors::directory::DirectoryError;
use crate::actors::entity::EntityError;
use crate::actors::thread::GroupError;
use crate::registration::codes::CodeError;
use crate::registration::phone::PhoneError;
use crate::registration::verifier::VerifierError;
use crate::store::StoreError;
use crate::wire::messages::{AccountDevices, Error, ErrorCode};
use crate::wire::ProtocolError;

/// Why a session ended abnormally. Each closes this connection only.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The peer's bytes or handshake were wrong. (peer's fault)
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The login was refused (the peer was told why). (peer's fault)
    #[error("login refused: {0}")]
    LoginRefused(Error),
    /// The socket failed or a deadline passed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A deadline passed (handshake, idle, write).
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The peer closed the connection.
    #[error("closed by peer")]
    Closed,
    /// The transport carried something that is not a frame (a WebSocket text message, a
    /// broken WebSocket frame). (peer's fault)
    #[error("{0}")]
    NotAFrame(String),
}

/// Why one request failed. The session answers with [`RequestError::to_wire`] and goes on.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A field is missing or out of bounds. (client's fault)
    #[error("{0}")]
    InvalidArgument(String),
    /// The request needs a device session. (client's fault)
    #[error("this request needs an authenticated device session")]
    NotAuthenticated,
    /// The phone number is unusable. (client's fault)
    #[error(transparent)]
    Phone(#[from] PhoneError),
    /// The addressed account has no devices. (client's fault)
    #[error("account is not registered")]
    UnknownAccount,
    /// The envelopes do not match the recipient's devices. (client's state is stale)
    #[error("envelopes do not match the recipient's devices")]
    MismatchedDevices(Vec<u32>),
    /// Verification failed. (client's fault)
    #[error(transparent)]
    Code(#[from] CodeError),
    /// Too fast. (client's fault)
    #[error("rate limited; retry in {0} ms")]
    RateLimited(u64),
    /// The verifier could not send the code. (the relay's side)
    #[error("verifier failed: {0}")]
    Verifier(#[from] VerifierError),
    /// Storage failed. (the relay's fault)
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// An actor was unreachable. (the relay's fault, usually shutdown)
    #[error("{0}")]
    Directory(#[from] DirectoryError),
    /// A group refused the request.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// The caller may not do that (e.g. link from a companion). (client's fault)
    #[error("{0}")]
    NotAllowed(String),
    /// The account is banned for abuse, until `until_ms` (`None`: permanently). (client's
    /// fault)
    #[error("{}", banned_text(*until_ms))]
    Banned { until_ms: Option<u64> },
    /// A blob upload was refused: too large, over quota, or blobs are off.
    #[error(transparent)]
    Blob(#[from] super::blobs::BlobRefusal),
    /// A business entity refused the request.
    #[error(transparent)]
    Entity(#[from] EntityError),
}

impl RequestError {
    /// Whether the relay (its disk, its actors, its verifier) failed, not the client.
    pub fn is_relay_fault(&self) -> bool {
        matches!(
            self,
            Self::Store(_)
                | Self::Directory(_)
                | Self::Verifier(_)
                | Self::Group(GroupError::Store(_))
                | Self::Entity(EntityError::Store(_))
        )
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }

    /// The error the peer sees. Internal details are logged, not sent.
    pub fn to_wire(&self) -> Error {
        let (code, message) = match self {
            Self::InvalidArgument(m) => (ErrorCode::InvalidArgument, m.clone()),
            Self::NotAuthenticated => (ErrorCode::NotAuthenticated, self.to_string()),
            Self::Phone(e) => (ErrorCode::InvalidPhoneNumber, e.to_string()),
            Self::UnknownAccount => (ErrorCode::UnknownAccount, self.to_string()),
            Self::MismatchedDevices(devices) => {
                let mut e = Error::new(ErrorCode::MismatchedDevices, self.to_string());
                e.devices = devices.clone();
                return e;
            }
            Self::Code(CodeError::Wrong { attempts_left }) => {
                let mut e = Error::new(ErrorCode::WrongCode, "wrong verification code");
                e.attempts_left = *attempts_left;
                return e;
            }
            Self::Code(CodeError::Expired) => (
                ErrorCode::CodeExpired,
                "no pending code for this number, or it expired".into(),
            ),
            Self::Code(CodeError::TooManyAttempts) => (
                ErrorCode::TooManyAttempts,
                "too many wrong codes; request a new one".into(),
            ),
            Self::Code(CodeError::Malformed) => (
                ErrorCode::InvalidArgument,
                "code must be the digits that were sent".into(),
            ),
            Self::RateLimited(ms) => {
                let mut e = Error::new(ErrorCode::RateLimited, self.to_string());
                e.retry_after_ms = *ms;
                return e;
            }
            Self::Banned { until_ms } => {
                let mut e = Error::new(ErrorCode::Banned, self.to_string());
                e.banned_until_ms = until_ms.unwrap_or(0);
                e.banned_forever = until_ms.is_none();
                return e;
            }
            Self::Verifier(_) => (
                ErrorCode::VerifierFailed,
                "the relay could not send the code; try again later".into(),
            ),
            Self::Store(e @ StoreError::StorageFull { .. }) => {
                (ErrorCode::StorageFull, e.to_string())
            }
            Self::Store(_) | Self::Directory(_) | Self::Group(GroupError::Store(_)) => (
                ErrorCode::Internal,
                "internal error; retry with the same msg_id".into(),
            ),
            Self::NotAllowed(m) => (ErrorCode::NotAllowed, m.clone()),
            Self::Entity(e) => {
                let code = match e {
                    EntityError::UnknownEntity(_) => ErrorCode::UnknownEntity,
                    EntityError::UnknownThread(_) => ErrorCode::UnknownThread,
                    EntityError::NotAdmin(_) => ErrorCode::NotEntityAdmin,
                    EntityError::NotAssigned(_) => ErrorCode::NotAssigned,
                    EntityError::NotAgent(_) => ErrorCode::NotAnAgent,
                    EntityError::NotStaff(_) => ErrorCode::NotAllowed,
                    EntityError::Invalid(_) => ErrorCode::InvalidArgument,
                    EntityError::Store(_) => {
                        return Error::new(ErrorCode::Internal, "internal error");
                    }
                };
                (code, e.to_string())
            }
            Self::Blob(b) => {
                use super::blobs::BlobRefusal;
                let code = match b {
                    BlobRefusal::Disabled => ErrorCode::BlobsDisabled,
                    BlobRefusal::TooLarge { .. } => ErrorCode::BlobTooLarge,
                    BlobRefusal::Quota { .. } => ErrorCode::QuotaExceeded,
                };
                (code, b.to_string())
            }
            Self::Group(g) => match g {
                GroupError::Unknown => (ErrorCode::UnknownGroup, g.to_string()),
                GroupError::NotMember | GroupError::NotAdmin => {
                    (ErrorCode::NotAllowed, g.to_string())
                }
                GroupError::UnknownAccount(_) => (ErrorCode::UnknownAccount, g.to_string()),
                GroupError::Invalid(m) => (ErrorCode::InvalidArgument, m.clone()),
                GroupError::Mismatch(lists) => {
                    let mut e = Error::new(ErrorCode::MismatchedDevices, g.to_string());
                    e.members = lists
                        .iter()
                        .map(|(account, devices)| AccountDevices {
                            account: account.clone(),
                            devices: devices.clone(),
                        })
                        .collect();
                    return e;
                }
                GroupError::Store(_) => (ErrorCode::Internal, "internal error".into()),
            },
        };
        Error::new(code, message)
    }
}

/// "banned until <RFC 3339 time>" or "banned permanently".
fn banned_text(until_ms: Option<u64>) -> String {
    match until_ms {
        Some(ms) => format!(
            "this account is banned for abuse until {}",
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
            )
        ),
        None => "this account is banned for abuse permanently".into(),
    }
}
