//! The callback server: where WeChat Pay delivers payment and refund
//! notifications.
//!
//! Why it is this small: every decision lives in the
//! [`Gateway`](crate::gateway::Gateway), which verifies in the component,
//! commits to the store and only then chooses the reply. This module adds
//! what only HTTP knows: the body cap (refused before it is read), the
//! deadline (WeChat waits 5 s, so we answer within 4 s — a late SUCCESS is
//! as good as none), and a refusal when the gateway fails, so that WeChat
//! sends the notification again rather than us losing it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::Instrument as _;

use crate::gateway::{Gateway, NotifyReply};
use crate::metrics::Metrics;
use crate::store::Verdict;

/// Paths WeChat posts to; `server.public_url` plus these are the notify URLs.
pub const PAY_PATH: &str = "/notify/pay";
/// See [`PAY_PATH`].
pub const REFUND_PATH: &str = "/notify/refund";

/// Time allowed for one notification, inside WeChat's 5-second wait.
pub const DEADLINE: Duration = Duration::from_secs(4);

/// A refusal that needs no component: used when the gateway itself failed.
const UNAVAILABLE: &str = "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[temporarily unavailable]]></return_msg></xml>";

/// The notification routes and `/healthz`.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let limit = gateway.config().server.max_body_bytes;
    Router::new()
        .route(PAY_PATH, post(payment))
        .route(REFUND_PATH, post(refund))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(gateway)
}

/// The span every log line about one notification is written in; the
/// gateway records the payment id in it once it has read one.
fn notification_span(kind: &'static str) -> tracing::Span {
    tracing::info_span!("notification", kind, payment_id = tracing::field::Empty)
}

async fn payment(State(gateway): State<Arc<Gateway>>, body: Bytes) -> Response {
    let span = notification_span("payment");
    let started = Instant::now();
    let work = async { gateway.payment_notification(body.to_vec()).await };
    let outcome = tokio::time::timeout(DEADLINE, work.instrument(span.clone())).await;
    span.in_scope(|| observe(gateway.metrics(), "payment", &outcome, started));
    span.in_scope(|| answer("payment", outcome))
}

async fn refund(State(gateway): State<Arc<Gateway>>, body: Bytes) -> Response {
    let span = notification_span("refund");
    let started = Instant::now();
    let work = async { gateway.refund_notification(body.to_vec()).await };
    let outcome = tokio::time::timeout(DEADLINE, work.instrument(span.clone())).await;
    span.in_scope(|| observe(gateway.metrics(), "refund", &outcome, started));
    span.in_scope(|| answer("refund", outcome))
}

type Outcome = Result<Result<NotifyReply, crate::Error>, tokio::time::error::Elapsed>;

/// Counts the notification and how long it took to answer.
fn observe(metrics: &Metrics, kind: &'static str, outcome: &Outcome, started: Instant) {
    let answer = match outcome {
        Ok(Ok(reply)) => {
            let verdict = match reply.verdict {
                Verdict::Accepted => "accepted",
                Verdict::Duplicate => "duplicate",
                Verdict::Rejected(_) => "rejected",
            };
            metrics.notification(kind, verdict, reply.reason);
            tracing::info!(verdict, reason = reply.reason, "notification answered");
            if reply.acknowledged { "ack" } else { "refused" }
        }
        Ok(Err(_)) => "error",
        Err(_) => "timeout",
    };
    metrics.callback(kind, answer, started.elapsed());
}

fn answer(kind: &'static str, outcome: Outcome) -> Response {
    let xml = |status: StatusCode, body: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
            body,
        )
            .into_response()
    };
    match outcome {
        Ok(Ok(reply)) => xml(StatusCode::OK, reply.body),
        Ok(Err(e)) => {
            tracing::error!(kind, error = %e, "notification not processed; WeChat will retry");
            xml(StatusCode::INTERNAL_SERVER_ERROR, UNAVAILABLE.to_owned())
        }
        Err(_) => {
            tracing::error!(
                kind,
                "notification took longer than the deadline; WeChat will retry"
            );
            xml(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE.to_owned())
        }
    }
}
