//! WAL checkpoints, off the commit path.
//!
//! Why: by default SQLite checkpoints inside a commit once the WAL passes
//! a thousand pages: the writer that happens to cross the line copies the
//! pages into the database and flushes it, while every writer queued
//! behind it waits. Those stalls of tens of milliseconds are what a p99
//! latency sees. Here the writer never checkpoints (`wal_autocheckpoint =
//! 0`); a thread of the store's own, with its own connection, runs a
//! passive checkpoint every [`EVERY`]. A passive checkpoint takes no lock
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
//!
//! The thread also flushes the database file after every round that copied
//! pages into it, because SQLite does not: a passive checkpoint flushes the
//! database file only when it copied the whole WAL, which under sustained
//! load it never does. The copied pages then waited in the page cache for
//! the restart checkpoint, whose flush of the file wrote seconds of them
//! (measured: 45 ms, at 5,000 notifications a second) while every writer
//! waited, and set p99. Flushed a round at a time, they leave the restart a
//! few milliseconds of work. Rounds are frequent ([`EVERY`]) for the same
//! reason: the WAL's flushes queue behind the database file's on the disk,
//! so many small flushes delay a commit less than a few large ones.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ffi};

/// How often the WAL is checkpointed. Measured at 5,000 notifications a
/// second: p99 11–14 ms with a round every 250 ms, 7–9 ms every 50 ms, and
/// no gain below that.
const EVERY: Duration = Duration::from_millis(50);

/// How many WAL frames may be in use before the WAL is started over:
/// 64 MiB at the 4 KiB pages the store uses. A restart holds writers back
/// for a few milliseconds (the frames since the last round, and a flush of
/// what they touched), so it should be rare: at 5,000 notifications a
/// second the WAL passes this about every 2 s (measured: 2,400 frames a
/// round of 250 ms), which keeps restarts out of p99.
const RESTART_PAST: u64 = 16_384;

/// How long a restart checkpoint waits for the writer and for readers of
/// older snapshots. Writers wait behind it meanwhile, so it gives up soon
/// (a long read, an export say, must not stall payments) and tries again
/// at the next round. Passive checkpoints never wait.
const RESTART_WAIT: Duration = Duration::from_millis(50);

/// How long restarts pause after one could not finish (a long read, an
/// export say, still holds an older snapshot). Each attempt holds writers
/// back for up to [`RESTART_WAIT`], so an attempt at every round would
/// stall payments half the time for as long as the read lasts; with this
/// pause, about one time in twenty.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

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
                let mut rounds = Rounds::new(conn, restart_past, RESTART_BACKOFF);
                loop {
                    rounds.run();
                    match stopped.recv_timeout(EVERY) {
                        Err(RecvTimeoutError::Timeout) => continue,
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                rounds.run();
            })
            .ok();
        Self {
            stop: Some(stop),
            thread,
        }
    }
}

/// The checkpointing thread's connection and what its last round found.
struct Rounds {
    conn: Connection,
    restart_past: u64,
    restart_backoff: Duration,
    /// Set while restarts pause after one that could not finish.
    no_restart_before: Option<Instant>,
    last: Option<Progress>,
    failing: Failing,
}

/// Which of a round's steps failed last time. A failure that lasts (a
/// full disk, a file gone) is logged when it begins and when it ends, not
/// at every round, 20 times a second.
#[derive(Debug, Default)]
struct Failing {
    checkpoint: bool,
    flush: bool,
    restart: bool,
}

/// Where a passive checkpoint left the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// Frames in use in the WAL.
    in_use: u64,
    /// Of those, frames copied into the database file.
    copied: u64,
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Round {
    /// The database file was flushed after new pages were copied into it.
    flushed_database: bool,
    /// A restart checkpoint was run (it may have found the WAL busy).
    restart_tried: bool,
}

impl Rounds {
    fn new(conn: Connection, restart_past: u64, restart_backoff: Duration) -> Self {
        let _ = conn.busy_timeout(RESTART_WAIT);
        Self {
            conn,
            restart_past,
            restart_backoff,
            no_restart_before: None,
            last: None,
            failing: Failing::default(),
        }
    }

    /// A passive checkpoint; a flush of the database file if it copied
    /// anything since the last round (an idle store is not flushed 20 times
    /// a second); a restart checkpoint if the WAL is past its limit and
    /// restarts are not pausing. A step that fails is tried again later;
    /// the WAL keeps every commit meanwhile.
    fn run(&mut self) -> Round {
        let progress = logged(
            &mut self.failing.checkpoint,
            "WAL checkpoint",
            checkpoint(&self.conn),
        );
        let copied_more = progress.is_some_and(|now| now.copied > 0 && Some(now) != self.last);
        let flushed_database = copied_more
            && logged(
                &mut self.failing.flush,
                "flush of the database file",
                flush_database(&self.conn),
            )
            .is_some();
        let restart_tried = progress.is_some_and(|now| now.in_use > self.restart_past)
            && self.no_restart_before.is_none_or(|t| Instant::now() >= t);
        if restart_tried {
            let finished = logged(
                &mut self.failing.restart,
                "WAL restart checkpoint",
                restart(&self.conn),
            );
            self.no_restart_before =
                (finished != Some(true)).then(|| Instant::now() + self.restart_backoff);
        }
        self.last = progress;
        Round {
            flushed_database,
            restart_tried,
        }
    }
}

/// `result`'s value; its error logged if `step` was not already failing,
/// and the end of a failure logged once.
fn logged<T, E: std::fmt::Display>(
    failing: &mut bool,
    step: &'static str,
    result: Result<T, E>,
) -> Option<T> {
    let news = began_or_ended(failing, result.is_err());
    match result {
        Ok(value) => {
            if news {
                tracing::info!(step, "works again");
            }
            Some(value)
        }
        Err(e) => {
            if news {
                tracing::warn!(step, error = %e, "failed; tried again every round");
            }
            None
        }
    }
}

/// Records whether a step failed this round; whether a failure began or
/// ended with it.
fn began_or_ended(failing: &mut bool, failed: bool) -> bool {
    std::mem::replace(failing, failed) != failed
}

/// One passive checkpoint.
fn checkpoint(conn: &Connection) -> rusqlite::Result<Progress> {
    let frames = |row: &rusqlite::Row<'_>, column| {
        row.get::<_, i64>(column)
            .map(|n| u64::try_from(n).unwrap_or(0))
    };
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(Progress {
            in_use: frames(row, 1)?,
            copied: frames(row, 2)?,
        })
    })
}

/// Flushes the database file (`fsync`) through the connection's own file
/// handle; fails with SQLite's result code. Only latency depends on it:
/// SQLite flushes the file itself before the WAL may be started over.
///
/// Why not a `File` of our own: closing any descriptor of the database
/// file drops every POSIX lock this process holds on it, those of SQLite's
/// other connections included, and SQLite has no other way to sync it.
fn flush_database(conn: &Connection) -> Result<(), FlushFailed> {
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `conn` is open and used by this thread alone, so its handle
    // is valid and no other call is running on it. FILE_POINTER writes one
    // `sqlite3_file` pointer (owned by SQLite, valid while the connection
    // is open) into `file`, which has that type. The methods table and its
    // `xSync` are SQLite's own for that file, called as its pager calls
    // them, with a sync flag SQLite defines.
    #[allow(unsafe_code)]
    let rc = unsafe {
        let found = ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        );
        match file.as_ref().and_then(|f| f.pMethods.as_ref()) {
            Some(methods) if found == ffi::SQLITE_OK => match methods.xSync {
                Some(sync) => sync(file, ffi::SQLITE_SYNC_NORMAL),
                None => ffi::SQLITE_MISUSE,
            },
            _ => ffi::SQLITE_NOTFOUND,
        }
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(FlushFailed(rc))
    }
}

/// SQLite's result code for a flush of the database file that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlushFailed(std::ffi::c_int);

impl std::fmt::Display for FlushFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SQLite result code {}", self.0)
    }
}

/// A checkpoint that lets the next commit start the WAL over; whether it
/// finished. It waits (up to [`RESTART_WAIT`]) for readers of older
/// snapshots and holds new writers back meanwhile.
fn restart(conn: &Connection) -> rusqlite::Result<bool> {
    let busy = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
        row.get::<_, i64>(0)
    })?;
    if busy != 0 {
        tracing::debug!("WAL restart checkpoint was busy; will retry");
    }
    Ok(busy == 0)
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
    use super::{Checkpointer, Round, Rounds, began_or_ended, flush_database};

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

    /// A database in WAL mode that only `writer` checkpoints, and a
    /// second connection to it for the checkpointing rounds.
    fn wal_database(dir: &Path) -> (Connection, Connection) {
        let path = dir.join("rounds.db");
        let writer = Connection::open(&path).expect("open");
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .expect("wal");
        assert_eq!(mode, "wal");
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (x BLOB);")
            .expect("schema");
        (writer, Connection::open(&path).expect("checkpointing connection"))
    }

    fn insert_rows(writer: &Connection, rows: usize) {
        for _ in 0..rows {
            writer
                .execute("INSERT INTO t (x) VALUES (zeroblob(?1))", [4000_i64])
                .expect("insert");
        }
    }

    #[test]
    fn a_round_flushes_the_database_file_only_after_copying_new_pages_into_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (writer, conn) = wal_database(dir.path());
        let mut rounds = Rounds::new(conn, u64::MAX, Duration::ZERO);
        insert_rows(&writer, 20);
        let copied = Round {
            flushed_database: true,
            restart_tried: false,
        };
        let idle = Round {
            flushed_database: false,
            ..copied
        };
        assert_eq!(rounds.run(), copied, "new pages were copied");
        assert_eq!(rounds.run(), idle, "nothing was written since");
        insert_rows(&writer, 1);
        assert_eq!(rounds.run(), copied, "a row was written since");
    }

    #[test]
    fn a_round_past_the_limit_tries_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (writer, conn) = wal_database(dir.path());
        let mut rounds = Rounds::new(conn, 10, Duration::ZERO);
        insert_rows(&writer, 20);
        assert!(rounds.run().restart_tried, "the WAL is past 10 frames");
        insert_rows(&writer, 1);
        assert!(!rounds.run().restart_tried, "the WAL was started over");
    }

    #[test]
    fn a_failure_that_lasts_is_news_when_it_begins_and_when_it_ends() {
        let mut failing = false;
        let news: Vec<bool> = [true, true, true, false, false, true]
            .into_iter()
            .map(|failed| began_or_ended(&mut failing, failed))
            .collect();
        assert_eq!(news, [true, false, false, true, false, true]);
    }

    #[test]
    fn restarts_pause_after_one_a_long_read_kept_from_finishing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (writer, conn) = wal_database(dir.path());
        let backoff = Duration::from_millis(200);
        let mut rounds = Rounds::new(conn, 10, backoff);
        insert_rows(&writer, 20);
        let reader = Connection::open(dir.path().join("rounds.db")).expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let _: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("read");
        insert_rows(&writer, 20);
        assert!(rounds.run().restart_tried, "the WAL is past 10 frames");
        assert!(
            !rounds.run().restart_tried,
            "restarts pause after one the open read kept from finishing"
        );
        reader.execute_batch("COMMIT").expect("end the read");
        std::thread::sleep(backoff + Duration::from_millis(50));
        assert!(rounds.run().restart_tried, "the pause is over");
        insert_rows(&writer, 1);
        assert!(!rounds.run().restart_tried, "the WAL was started over");
    }

    #[test]
    fn a_database_in_memory_has_no_file_to_flush() {
        let conn = Connection::open_in_memory().expect("open");
        assert!(flush_database(&conn).is_err());
    }

    #[test]
    fn the_wal_is_started_over_once_past_its_limit_under_sustained_load() {
        // A round every 50 ms restarts a WAL past 64 frames, so three
        // restarts take well under a second; the minute is for a starved
        // machine.
        // Without the restart checkpoints the WAL is never started over
        // under this load.
        let started_over = sustained_load(64, 3, Duration::from_secs(60));
        assert!(
            started_over >= 3,
            "the WAL was started over {started_over} times in a minute of sustained load"
        );
    }
}
