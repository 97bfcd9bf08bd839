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
use super::session::SignedIn;
use crate::gateway::Gateway;

/// How often the log's head is read when nothing woke the stream.
const POLL: Duration = Duration::from_secs(2);

/// The event stream: `change` events whose data is the newest audit seq.
pub(super) async fn stream(
    State(console): State<Arc<Console>>,
    _signed_in: SignedIn,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let gateway = Arc::clone(&console.gateway);
    let start = head(&gateway).await.unwrap_or(0);
    let changes = futures::stream::unfold((gateway, start), |(gateway, seen)| async move {
        loop {
            let changed = {
                let woken = gateway.changes().notified();
                match head(&gateway).await {
                    Some(now) if now != seen => Some(now),
                    _ => {
                        let _ = tokio::time::timeout(POLL, woken).await;
                        None
                    }
                }
            };
            if let Some(now) = changed {
                let event = Event::default().event("change").data(now.to_string());
                return Some((Ok(event), (gateway, now)));
            }
        }
    });
    Sse::new(changes).keep_alive(KeepAlive::default())
}

async fn head(gateway: &Gateway) -> Option<i64> {
    gateway.read(|s| s.latest_audit_seq()).await.ok()
}
