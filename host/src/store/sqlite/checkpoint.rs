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
//!
//! Passive checkpoints alone let the WAL grow without bound under
//! sustained load: SQLite starts the WAL over only when a write begins
//! with every frame already copied, and with commits arriving all the
//! time that moment never comes (measured: 40 MB a second at 10,000
//! notifications a second). So once the WAL passes [`RESTART_PAST`], the
//! thread runs a restart checkpoint: it waits for readers on older
//! snapshots, holds writers back while it copies the few frames the
//! passive ones left, and the next commit writes the WAL from its start
//! again. The file keeps its size and is reused, which also spares the
//! flushes the cost of a growing file.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is checkpointed.
const EVERY: Duration = Duration::from_millis(250);

/// How many WAL frames may be in use before the WAL is started over:
/// 64 MiB at the 4 KiB pages the store uses.
const RESTART_PAST: u64 = 16_384;

/// How long a restart checkpoint waits for the writer and for readers of
/// older snapshots. Writers wait behind it meanwhile, so it gives up soon
/// (a long read, an export say, must not stall payments) and tries again
/// at the next round. Passive checkpoints never wait.
const RESTART_WAIT: Duration = Duration::from_millis(50);

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
        Self::start_with(path, RESTART_PAST)
    }

    /// [`Checkpointer::start`], starting the WAL over past `restart_past`
    /// frames.
    fn start_with(path: PathBuf, restart_past: u64) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wxpay-sqlite-checkpoint".into())
            .spawn(move || {
                let Ok(conn) = Connection::open(&path) else {
                    return;
                };
                let _ = conn.busy_timeout(RESTART_WAIT);
                loop {
                    if checkpoint(&conn) > restart_past {
                        restart(&conn);
                    }
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

/// One passive checkpoint; the frames in use in the WAL. A failure (the
/// file is gone, the disk is full) is logged; the WAL keeps every commit
/// meanwhile.
fn checkpoint(conn: &Connection) -> u64 {
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        row.get::<_, i64>(1)
    }) {
        Ok(frames) => u64::try_from(frames).unwrap_or(0),
        Err(e) => {
            tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
            0
        }
    }
}

/// A checkpoint that lets the next commit start the WAL over. It waits
/// (up to [`RESTART_WAIT`]) for readers of older snapshots and holds new
/// writers back meanwhile; when it cannot finish, the next round tries again.
fn restart(conn: &Connection) {
    match conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
        row.get::<_, i64>(0)
    }) {
        Ok(0) => {}
        Ok(_) => tracing::debug!("WAL restart checkpoint was busy; will retry"),
        Err(e) => tracing::warn!(error = %e, "WAL restart checkpoint failed; will retry"),
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

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Read;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use rusqlite::Connection;

    use super::super::BUSY_TIMEOUT;
    use super::Checkpointer;

    const ROW_BYTES: usize = 100;

    /// How many times the WAL at `wal` has been started over: the
    /// checkpoint sequence number in its header, which each restart of the
    /// log increments. Zero while the file is missing or has no header yet.
    fn times_started_over(wal: &Path) -> u32 {
        let mut header = [0u8; 16];
        match File::open(wal).and_then(|mut file| file.read_exact(&mut header)) {
            Ok(()) => u32::from_be_bytes([header[12], header[13], header[14], header[15]]),
            Err(_) => 0,
        }
    }

    /// Commits without pause while another connection reads without pause,
    /// as callbacks do, until the WAL has been started over `restarts`
    /// times or `deadline` has passed; returns how many times it was.
    fn sustained_load(restart_past: u64, restarts: u32, deadline: Duration) -> u32 {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wal.db");
        let wal = dir.path().join("wal.db-wal");
        let writer = Connection::open(&path).expect("open");
        writer.busy_timeout(BUSY_TIMEOUT).expect("busy timeout");
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .expect("wal");
        assert_eq!(mode, "wal");
        writer
            .execute_batch(
                "PRAGMA synchronous = OFF; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t (x BLOB);",
            )
            .expect("schema");
        let checkpointer = Checkpointer::start_with(path.clone(), restart_past);
        let done = Arc::new(AtomicBool::new(false));
        let reading = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let reader = Connection::open(&path).expect("reader");
                reader.busy_timeout(BUSY_TIMEOUT).expect("busy timeout");
                while !done.load(Ordering::Relaxed) {
                    let _: i64 = reader
                        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                        .expect("read");
                }
            })
        };
        let give_up = Instant::now() + deadline;
        while times_started_over(&wal) < restarts && Instant::now() < give_up {
            writer
                .execute(
                    "INSERT INTO t (x) VALUES (zeroblob(?1))",
                    [ROW_BYTES as i64],
                )
                .expect("insert");
            std::thread::sleep(Duration::from_millis(1));
        }
        done.store(true, Ordering::Relaxed);
        reading.join().expect("reader thread");
        let started_over = times_started_over(&wal);
        drop(checkpointer);
        started_over
    }

    #[test]
    fn the_wal_is_started_over_once_past_its_limit_under_sustained_load() {
        // A round every 250 ms restarts a WAL past 64 frames, so three
        // restarts take about a second; the minute is for a starved machine.
        // Without the restart checkpoints the WAL is never started over
        // under this load.
        let started_over = sustained_load(64, 3, Duration::from_secs(60));
        assert!(
            started_over >= 3,
            "the WAL was started over {started_over} times in a minute of sustained load"
        );
    }
}
