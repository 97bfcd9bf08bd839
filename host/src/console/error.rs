//! The console's one error type, answered as a small HTML page for a
//! browser's form post or as JSON for the console script.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

/// Why a console request was refused. The message is for the operator and
/// never carries a secret (tokens, cookies, keys).
#[derive(Debug)]
#[non_exhaustive]
pub(super) enum ConsoleError {
    /// No valid session: the browser must sign in (pages redirect there).
    SignedOut,
    /// The request did not prove it came from the console: a wrong or
    /// missing CSRF token or `Origin`.
    Forgery(&'static str),
    /// A WebAuthn ceremony failed: unknown or used ceremony, wrong
    /// approval, or an assertion or attestation that does not verify.
    Passkey(String),
    /// The request cannot be used as sent.
    BadRequest(String),
    /// What was asked for is not stored.
    NotFound(String),
    /// The gateway refused or failed.
    Gateway(Error),
}

impl From<Error> for ConsoleError {
    fn from(e: Error) -> Self {
        Self::Gateway(e)
    }
}

impl From<crate::store::StoreError> for ConsoleError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Gateway(e.into())
    }
}

impl ConsoleError {
    fn status_and_message(&self) -> (StatusCode, String) {
        match self {
            Self::SignedOut => (StatusCode::UNAUTHORIZED, "sign in first".to_owned()),
            Self::Forgery(why) => (
                StatusCode::FORBIDDEN,
                format!("refused as a possible cross-site request: {why}"),
            ),
            Self::Passkey(why) => (
                StatusCode::FORBIDDEN,
                format!("passkey check failed: {why}"),
            ),
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, why.clone()),
            Self::NotFound(what) => (StatusCode::NOT_FOUND, format!("{what} not found")),
            Self::Gateway(e) => (gateway_status(e), e.to_string()),
        }
    }

    /// The error as JSON, for the console script.
    pub(super) fn json(self) -> Response {
        let (status, message) = self.status_and_message();
        (status, Json(json!({"error": message}))).into_response()
    }
}

fn gateway_status(e: &Error) -> StatusCode {
    match e {
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::Conflict { .. } => StatusCode::CONFLICT,
        Error::PasskeyRequired { .. } => StatusCode::FORBIDDEN,
        Error::Input { .. } => StatusCode::BAD_REQUEST,
        Error::Wechat { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = self.status_and_message();
        let page = super::html::message_page(status.as_str(), &message);
        (status, Html(page)).into_response()
    }
}

/// A JSON endpoint's error.
pub(super) struct JsonError(pub(super) ConsoleError);

impl From<ConsoleError> for JsonError {
    fn from(e: ConsoleError) -> Self {
        Self(e)
    }
}

impl From<Error> for JsonError {
    fn from(e: Error) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        self.0.json()
    }
}
