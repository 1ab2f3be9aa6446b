//! The operator API's one error type, and the one place its HTTP status codes are decided.
//! Every error answers a JSON body: `{"error": {"code": "...", "message": "..."}}`, plus
//! `"parameter"` for a bad parameter.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Why an admin request failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No bearer token, or not the one in `admin.token` (the caller's fault).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A path or query parameter is missing, unknown or malformed (the caller's fault).
    #[error("parameter {parameter}: {reason}")]
    BadParameter {
        parameter: &'static str,
        reason: String,
    },
    /// The route, account or device does not exist (the caller's fault).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method (the caller's fault).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request does not fit the target's state, e.g. lifting a ban on an account that
    /// is not banned (the caller's fault).
    #[error("{0}")]
    Conflict(String),
    /// The relay is shutting down or the store is unavailable (retry later).
    #[error("{0}")]
    Unavailable(String),
    /// The store or the disk failed (the relay's fault; details are in its log).
    #[error("internal error: {0}")]
    Internal(String),
}

impl AdminError {
    pub fn bad(parameter: &'static str, reason: impl Into<String>) -> Self {
        Self::BadParameter {
            parameter,
            reason: reason.into(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::BadParameter { .. } => "bad_parameter",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<crate::store::StoreError> for AdminError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "Admin request failed in the store.");
        Self::Internal(e.to_string())
    }
}

/// Every error answer of the operator API.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": {"code": "bad_parameter", "message": "parameter limit: must be a whole number from 1 to 1000, got \"0\"", "parameter": "limit"}}))]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `unauthorized`, `bad_parameter`, `not_found`, `method_not_allowed`, `conflict`,
    /// `unavailable` or `internal`; one per HTTP status.
    #[schema(value_type = String)]
    code: &'static str,
    /// A sentence for the operator.
    message: String,
    /// For `bad_parameter`: the path or query parameter or body field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    parameter: Option<&'static str>,
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadParameter { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let parameter = match self {
            Self::BadParameter { parameter, .. } => Some(*parameter),
            _ => None,
        };
        let mut res = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized(_)) {
            res.insert_header(("WWW-Authenticate", "Bearer realm=\"relaybox-admin\""));
        }
        res.json(ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                parameter,
            },
        })
    }
}
