//! Errors as an agent sees them: a stable code, the field, and a message
//! an LLM can act on.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;
use crate::sandbox::bindings::types;

/// A refusal or failure, answered as
/// `{"error": {"code": "...", "field": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AgentError {
    /// The HTTP status.
    pub status: u16,
    /// A stable, machine-readable code, e.g. `over_budget`.
    pub code: &'static str,
    /// The request field at fault, when one is.
    pub field: Option<String>,
    /// What happened and what to do about it.
    pub message: String,
}

impl AgentError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: status.as_u16(),
            code,
            field: None,
            message: message.into(),
        }
    }

    /// The token is missing, unknown, expired or revoked.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// The grant does not allow it.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// A request field breaks a rule.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
        }
    }

    /// No such payment for this agent.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The request contradicts an earlier one or the payment's state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// Something on our side failed; the request may be retried.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Names the field.
    #[must_use]
    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl From<Error> for AgentError {
    fn from(e: Error) -> Self {
        match &e {
            Error::Guest(types::Error::InvalidField(f)) => {
                Self::invalid(f.field.clone(), e.to_string())
            }
            Error::Guest(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", e.to_string())
            }
            Error::NotFound { .. } => Self::not_found(e.to_string()),
            Error::Conflict { .. } => Self::conflict("conflict", e.to_string()),
            Error::PasskeyRequired { .. } => {
                Self::new(StatusCode::FORBIDDEN, "passkey_required", e.to_string())
            }
            Error::Wechat { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "wechat_error",
                format!("{e}; the same request may be sent again with the same idempotency key"),
            ),
            _ => Self::internal(e.to_string()),
        }
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body =
            json!({"error": {"code": self.code, "field": self.field, "message": self.message}});
        (status, Json(body)).into_response()
    }
}
