//! WAL checkpoints, off the commit path.
//!
//! Why: by default SQLite checkpoints inside a commit once the WAL passes
//! a thousand pages: the writer that happens to cross the line copies the
//! pages into the database and flushes it, while every writer queued
//! behind it waits. Those stalls of tens of milliseconds are what a p99
//! latency sees. Here the writer never checkpoints (`wal_autocheckpoint =
//! 0`); a thread of the store's own, with its own connection, runs passive
//! checkpoints a few times a second. A passive checkpoint takes no lock
//! that writers or readers wait for, and durability does not depend on it:
//! a commit is durable once its WAL frames are flushed.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::BUSY_TIMEOUT;

/// How often the WAL is checkpointed.
const EVERY: Duration = Duration::from_millis(250);

/// The checkpointing thread; it checkpoints once more and stops on drop.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path`. Without a thread (the
    /// system refused one) the WAL is still checkpointed by the next
    /// store that opens it; nothing is lost either way.
    pub(super) fn start(path: PathBuf) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wxpay-sqlite-checkpoint".into())
            .spawn(move || {
                let Ok(conn) = Connection::open(&path) else {
                    return;
                };
                let _ = conn.busy_timeout(BUSY_TIMEOUT);
                loop {
                    checkpoint(&conn);
                    match stopped.recv_timeout(EVERY) {
                        Err(RecvTimeoutError::Timeout) => continue,
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                checkpoint(&conn);
            })
            .ok();
        Self {
            stop: Some(stop),
            thread,
        }
    }
}

/// One passive checkpoint. A failure (the file is gone, the disk is full)
/// is logged; the WAL keeps every commit meanwhile.
fn checkpoint(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
