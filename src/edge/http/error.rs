//! Errors of the public HTTP listener, and the one place that maps them to HTTP statuses.
//!
//! Every refused request gets a specific status and a JSON body
//! `{"error": "<kind>", "message": "<what was wrong>"}`, so a client (or curl) can tell a bad
//! session id from a refused connection.

use std::net::SocketAddr;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::edge::limits::Refused;
use crate::wire::messages::ErrorCode;

/// Why the HTTP listener failed to start or refused a request.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address is busy or not ours. (operator's fault)
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The `[tls]` certificate or key is unusable. (operator's fault)
    #[error("TLS: {0}")]
    Tls(String),
    /// No route at this path. (client's fault)
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// A known path with another method. (client's fault)
    #[error("method {0} not allowed here")]
    MethodNotAllowed(String),
    /// `GET /v1/ws` without a valid WebSocket upgrade. (client's fault)
    #[error("not a WebSocket upgrade: {0}")]
    NotWebSocket(String),
    /// A split-mode session id that is not 32 hex digits. (client's fault)
    #[error("malformed stream session id (expected 32 hex digits)")]
    MalformedSid,
    /// A split-mode session id the relay does not know (never issued, or its session ended).
    /// (client's state is stale)
    #[error("unknown or expired stream session")]
    UnknownSid,
    /// A split-mode upload with no bytes. (client's fault)
    #[error("empty upload: a split-mode POST carries at least one frame")]
    EmptyUpload,
    /// A split-mode upload larger than the relay accepts at once. (client's fault)
    #[error("upload of more than {limit} bytes; send fewer frames per request")]
    UploadTooLarge { limit: usize },
    /// The request body broke off. (network or client)
    #[error("reading the request body: {0}")]
    Body(String),
    /// Admission refused the session (connection caps, handshake rate). (client's load)
    #[error("{}", .0.reason)]
    Refused(Refused),
    /// The relay is shutting down and starts no new sessions. (nobody's fault)
    #[error("relay is shutting down; reconnect later")]
    ShuttingDown,
    /// The connection has no peer address (not a TCP socket). (relay's setup)
    #[error("no peer address")]
    NoPeerAddress,
}

impl HttpError {
    /// Short stable name of the error for the JSON body.
    fn kind(&self) -> &'static str {
        match self {
            Self::Bind { .. } | Self::Tls(_) | Self::NoPeerAddress => "internal",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::NotWebSocket(_) => "not_websocket",
            Self::MalformedSid => "malformed_session_id",
            Self::UnknownSid => "unknown_session",
            Self::EmptyUpload => "empty_upload",
            Self::UploadTooLarge { .. } => "upload_too_large",
            Self::Body(_) => "bad_body",
            Self::Refused(r) if r.code == ErrorCode::RateLimited => "rate_limited",
            Self::Refused(_) => "too_many_connections",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Bind { .. } | Self::Tls(_) | Self::NoPeerAddress => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::NotFound(_) | Self::UnknownSid => StatusCode::NOT_FOUND,
            Self::NotWebSocket(_) | Self::MalformedSid | Self::EmptyUpload | Self::Body(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::UploadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Refused(r) if r.code == ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Refused(_) | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if matches!(self, Self::Refused(_) | Self::ShuttingDown) {
            res.insert_header((header::RETRY_AFTER, "1"));
        }
        res.json(serde_json::json!({
            "error": self.kind(),
            "message": self.to_string(),
        }))
    }
}

impl actix_web::Responder for HttpError {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _req: &actix_web::HttpRequest) -> HttpResponse {
        self.error_response()
    }
}
