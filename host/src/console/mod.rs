//! The operators' console: `/console`, served by `wxpay serve` beside the
//! agent API.
//!
//! Why a web page and passkeys: people who run a payment gateway would
//! rather look than read logs, and the one decision they make — letting a
//! large payment or refund go — is the one an attacker most wants to
//! forge. So operators sign in with a passkey (no password to phish or
//! reuse), sessions live in an `HttpOnly`, `SameSite=Strict` cookie, every
//! state-changing request must carry the session's CSRF token and come
//! from the console's own origin, and an approval above
//! `console.passkey_threshold_fen` needs a fresh assertion whose ceremony
//! was started for exactly that approval and can be used once.
//!
//! The pages are plain server-rendered HTML that works without script;
//! one small script (no build step) runs the WebAuthn ceremonies and
//! refreshes the page's main region when the server-sent event stream
//! says something changed.

mod assets;
mod error;
mod events;
mod html;
mod operators;
mod pages;
mod passkeys;
mod session;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use self::operators::{Invite, invite, operator_names, remove_operator};

use self::error::ConsoleError;
use self::passkeys::Passkeys;
use crate::error::Error;
use crate::gateway::Gateway;

/// The largest request body the console accepts (a WebAuthn response is a
/// few kilobytes).
const MAX_BODY: usize = 64 * 1024;

/// What every console handler shares.
struct Console {
    gateway: Arc<Gateway>,
    passkeys: Passkeys,
    /// The origin browsers use, e.g. `http://localhost:8081`.
    origin: String,
}

/// The `/console` routes. Fails if `console.url` cannot be a WebAuthn
/// relying party.
pub fn router(gateway: Arc<Gateway>) -> Result<Router, Error> {
    let origin = gateway.config().console_url();
    let passkeys = Passkeys::new(&origin)?;
    let console = Arc::new(Console {
        gateway,
        passkeys,
        origin,
    });
    Ok(Router::new()
        .route("/console", get(pages::home))
        .route("/console/", get(pages::home))
        .route("/console/assets/{name}", get(assets::serve))
        .route("/console/sign-in", get(pages::sign_in))
        .route("/console/register", get(pages::register))
        .route(
            "/console/api/register/start",
            post(passkeys::register_start),
        )
        .route(
            "/console/api/register/finish",
            post(passkeys::register_finish),
        )
        .route("/console/api/sign-in/start", post(passkeys::sign_in_start))
        .route(
            "/console/api/sign-in/finish",
            post(passkeys::sign_in_finish),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/approvals", get(pages::approvals))
        .route("/console/approvals/{id}/approve", post(pages::approve))
        .route("/console/approvals/{id}/deny", post(pages::deny))
        .route(
            "/console/api/approvals/{id}/passkey/start",
            post(passkeys::approval_start),
        )
        .route(
            "/console/api/approvals/{id}/passkey/finish",
            post(passkeys::approval_finish),
        )
        .route("/console/payments", get(pages::payments))
        .route("/console/payments/{id}", get(pages::payment))
        .route("/console/refunds", get(pages::refunds))
        .route("/console/balances", get(pages::balances))
        .route("/console/agents", get(pages::agents))
        .route("/console/audit", get(pages::audit))
        .route("/console/events", get(events::stream))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&console),
            session::guard,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(console))
}

impl Console {
    /// Runs a store read (see [`Gateway::read`]).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn crate::store::Store) -> crate::store::StoreResult<T> + Send + 'static,
    ) -> Result<T, ConsoleError> {
        Ok(self.gateway.read(f).await?)
    }

    /// Runs a store write (see [`Gateway::db`]).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn crate::store::Store) -> crate::store::StoreResult<T> + Send + 'static,
    ) -> Result<T, ConsoleError> {
        Ok(self.gateway.db(f).await?)
    }

    /// Whether the console is served over HTTPS (cookies are then `Secure`).
    fn is_https(&self) -> bool {
        self.origin.starts_with("https://")
    }
}
