//! Signed-in browsers: the session cookie, the CSRF token and the origin
//! check every state-changing request passes.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq as _;

use super::Console;
use super::error::ConsoleError;
use super::operators::{self, SessionRecord};
use crate::store::{Store, StoreResult};

/// The session cookie's name.
const COOKIE: &str = "wxpay_console";

/// The header the console script sends the CSRF token in.
const CSRF_HEADER: &str = "x-csrf-token";

/// A request from a signed-in operator.
pub(super) struct SignedIn {
    pub(super) session: SessionRecord,
    /// The cookie's value (to end the session).
    cookie: String,
}

impl SignedIn {
    pub(super) fn operator(&self) -> &str {
        &self.session.operator
    }

    /// The session cookie's value.
    pub(super) fn cookie(&self) -> &str {
        &self.cookie
    }

    /// Refuses unless `presented` is this session's CSRF token.
    pub(super) fn check_csrf(&self, presented: Option<&str>) -> Result<(), ConsoleError> {
        let presented = presented.ok_or(ConsoleError::Forgery("no CSRF token"))?;
        let expected = self.session.csrf.as_bytes();
        if bool::from(presented.as_bytes().ct_eq(expected)) {
            Ok(())
        } else {
            Err(ConsoleError::Forgery("wrong CSRF token"))
        }
    }

    /// Like [`SignedIn::check_csrf`], with the token from the script's header.
    pub(super) fn check_csrf_header(&self, headers: &HeaderMap) -> Result<(), ConsoleError> {
        self.check_csrf(headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()))
    }
}

impl FromRequestParts<Arc<Console>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let signed_out = |parts: &Parts| {
            if parts.method == Method::GET && !parts.uri.path().starts_with("/console/events") {
                Redirect::to("/console/sign-in").into_response()
            } else {
                ConsoleError::SignedOut.json()
            }
        };
        let Some(cookie) = cookie_value(&parts.headers) else {
            return Err(signed_out(parts));
        };
        let found = {
            let cookie = cookie.clone();
            console
                .read(move |s| live_session(s, &cookie))
                .await
                .map_err(IntoResponse::into_response)?
        };
        match found {
            Some(session) => Ok(Self { session, cookie }),
            None => Err(signed_out(parts)),
        }
    }
}

/// The session behind the cookie, if it is live and its operator has not
/// been removed since it began.
pub(super) fn live_session(store: &dyn Store, cookie: &str) -> StoreResult<Option<SessionRecord>> {
    let Some(session) = operators::session(store, cookie)? else {
        return Ok(None);
    };
    let operator_exists = operators::operator(store, &session.operator)?.is_some();
    Ok(operator_exists.then_some(session))
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The `Set-Cookie` value that gives the browser a session.
pub(super) fn session_cookie(console: &Console, value: &str, max_age_secs: i64) -> String {
    let secure = if console.is_https() { "; Secure" } else { "" };
    format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    )
}

/// `POST /console/sign-out`.
pub(super) async fn sign_out(
    State(console): State<Arc<Console>>,
    signed_in: SignedIn,
    axum::Form(form): axum::Form<super::pages::CsrfForm>,
) -> Result<Response, ConsoleError> {
    signed_in.check_csrf(Some(&form.csrf))?;
    let cookie = signed_in.cookie().to_owned();
    console
        .write(move |s| operators::close_session(s, &cookie))
        .await?;
    console
        .gateway
        .audit(
            &format!("operator:{}", signed_in.operator()),
            "console.sign_out",
            signed_in.operator(),
            "signed out",
            serde_json::json!({}),
        )
        .await?;
    let clear = session_cookie(&console, "", 0);
    Ok((
        [(header::SET_COOKIE, clear)],
        Redirect::to("/console/sign-in"),
    )
        .into_response())
}

/// Refuses any non-GET request whose `Origin` is not the console's own
/// (browsers send `Origin` with every POST; a request without one did not
/// come from a console page), and adds the security headers.
pub(super) async fn guard(
    State(console): State<Arc<Console>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = match cross_site(&console, &request) {
        Some(refusal) if request.uri().path().starts_with("/console/api/") => refusal.json(),
        Some(refusal) => refusal.into_response(),
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name.clone(), header::HeaderValue::from_static(value));
    }
    response
}

/// Why a request cannot have come from a console page, if it cannot.
fn cross_site(console: &Console, request: &Request) -> Option<ConsoleError> {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return None;
    }
    match request.headers().get(header::ORIGIN).map(|v| v.to_str()) {
        None => Some(ConsoleError::Forgery("no Origin header")),
        Some(Ok(origin)) if origin == console.origin => None,
        Some(_) => Some(ConsoleError::Forgery("the Origin is not the console's")),
    }
}

/// Sent with every console response: no framing (clickjacking an approve
/// button), no third-party script or style, no referrer to other sites
/// (`no-referrer` would also blank the `Origin` of the console's own form
/// posts), no caching of pages that show payments.
const SECURITY_HEADERS: &[(header::HeaderName, &str)] = &[
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "same-origin"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-store"),
];
