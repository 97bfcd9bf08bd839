//! `GET /console/events`: a server-sent event each time the audit log
//! grows, so open pages refresh when a callback lands or an agent asks.
//!
//! The gateway wakes waiters on every change it makes itself; changes by
//! another process sharing the store (the CLI, another gateway) are found
//! by looking at the log's head every two seconds.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use super::Console;
use super::session::{self, SignedIn};
use crate::gateway::Gateway;

/// How often the log's head is read when nothing woke the stream.
const POLL: Duration = Duration::from_secs(2);

/// The least time between two events of a stream: under a burst of
/// callbacks a page refreshes once a second, not once per callback.
const COALESCE: Duration = Duration::from_secs(1);

/// The event stream: `change` events whose data is the newest audit seq.
/// It ends when the session does (signed out, expired, or its operator
/// removed).
pub(super) async fn stream(
    State(console): State<Arc<Console>>,
    signed_in: SignedIn,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let gateway = Arc::clone(&console.gateway);
    let start = head(&gateway).await.unwrap_or(0);
    let watch = Watch {
        gateway,
        cookie: signed_in.cookie().to_owned(),
        seen: start,
        sent: false,
    };
    Sse::new(futures::stream::unfold(watch, next_change)).keep_alive(KeepAlive::default())
}

/// What one open stream follows.
struct Watch {
    gateway: Arc<Gateway>,
    cookie: String,
    seen: i64,
    /// Whether an event went out (the next one waits [`COALESCE`]).
    sent: bool,
}

async fn next_change(mut watch: Watch) -> Option<(Result<Event, Infallible>, Watch)> {
    if watch.sent {
        tokio::time::sleep(COALESCE).await;
    }
    loop {
        if !session_is_live(&watch.gateway, &watch.cookie).await {
            return None;
        }
        let gateway = Arc::clone(&watch.gateway);
        let woken = gateway.changes().notified();
        match head(&gateway).await {
            Some(now) if now != watch.seen => {
                watch.seen = now;
                watch.sent = true;
                let event = Event::default().event("change").data(now.to_string());
                return Some((Ok(event), watch));
            }
            _ => {
                let _ = tokio::time::timeout(POLL, woken).await;
            }
        }
    }
}

async fn session_is_live(gateway: &Gateway, cookie: &str) -> bool {
    let cookie = cookie.to_owned();
    gateway
        .read(move |s| session::live_session(s, &cookie))
        .await
        .is_ok_and(|found| found.is_some())
}

async fn head(gateway: &Gateway) -> Option<i64> {
    gateway.read(|s| s.latest_audit_seq()).await.ok()
}
