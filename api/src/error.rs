//! The API's error answers: a status and a JSON body `{"error": {"code", "message"}}`. Codes
//! are stable; messages name the field and the problem and never echo content.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use vigil_access::Refusal;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code, also what the audit log records.
    pub code: &'static str,
    /// A sentence for the caller.
    pub message: String,
    /// Seconds to wait, for rate-limited callers.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A malformed value: the field and what is wrong with it.
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("{field}: {problem}"),
        )
    }

    /// A body that is not what the endpoint takes (wrong type, not JSON, too large).
    pub fn body(status: StatusCode, problem: impl std::fmt::Display) -> Self {
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::new(status, "invalid_body", problem.to_string())
    }

    /// No such route.
    pub fn no_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no_route",
            "no such endpoint; see /openapi.json",
        )
    }

    /// No such resource (or not one of the caller's).
    pub fn no_resource() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_resource",
            "no such resource among those you may manage",
        )
    }

    /// A peer node holding the data asked for did not answer (or not as a node does).
    pub fn peer_unavailable(node: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "peer_unavailable",
            format!("node {node}, which holds data this request needs, did not answer; try again"),
        )
    }

    /// A store's failure: a resource moving between nodes is a refusal to retry shortly,
    /// anything else a failure of vigil itself.
    pub fn storage(error: vigil_storage::StorageError) -> Self {
        match error {
            vigil_storage::StorageError::Moving { .. } => {
                let mut refusal = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "moving",
                    format!("{error}"),
                );
                refusal.retry_after = Some(5);
                refusal
            }
            error => Self::internal(error),
        }
    }

    /// A failure of vigil itself. The cause goes to the log (errors of the stores name IDs and
    /// files, never content); the caller learns only that it happened.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "An API request failed inside vigil.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "vigil could not complete this request; the server log has the cause",
        )
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let status = match refusal {
            Refusal::Unauthenticated => StatusCode::UNAUTHORIZED,
            Refusal::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Refusal::AlreadyDecided | Refusal::NotActive | Refusal::ContentLoggingOff => {
                StatusCode::CONFLICT
            }
            Refusal::NotAvailable | Refusal::UnknownCase => StatusCode::NOT_FOUND,
            Refusal::NotOwner => return Self::no_resource(),
            Refusal::GrantTooLong => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::WrongRole
            | Refusal::NoWorkstation
            | Refusal::SelfApproval
            | Refusal::EeaRule
            | Refusal::NoGrant
            | Refusal::GrantPending
            | Refusal::GrantDenied
            | Refusal::GrantExpired
            | Refusal::GrantRevoked => StatusCode::FORBIDDEN,
        };
        Self::new(status, refusal.code(), refusal.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
