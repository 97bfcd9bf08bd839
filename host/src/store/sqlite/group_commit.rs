//! Group commit: many writers, one fsync.
//!
//! Why: with `synchronous = FULL` a commit returns only once the disk has
//! flushed the WAL, and a disk flushes a few thousand times a second at
//! best. Notifications and intents arrive concurrently; if each waited for
//! its own flush, the disk's flush rate would cap the gateway. Instead, a
//! writer that arrives while a batch is open runs its change inside that
//! batch's transaction, in a savepoint of its own, and the last writer in
//! line commits for everyone: one flush makes the whole batch durable.
//!
//! What stays true:
//! - **Nothing returns before it is durable.** A writer returns only after
//!   the `COMMIT` holding its change has returned, so a caller never
//!   acknowledges a change that a crash could still undo.
//! - **Writers stay isolated.** A change that fails is rolled back to its
//!   savepoint and its writer gets its own error; the rest of the batch is
//!   unaffected. A change that panics is rolled back the same way before
//!   the panic resumes.
//! - **A failed commit loses nothing acknowledged.** If `COMMIT` fails,
//!   the batch is rolled back and every writer in it gets the error.
//! - **Readers see only committed batches.** They use their own
//!   connections (see [`super::readers`]), and WAL gives each read the
//!   last committed state.
//!
//! A batch closes when no writer is queued behind the current one, or when
//! it reaches [`MAX_BATCH`] changes, so a steady stream still commits
//! regularly and an idle store commits each change at once.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rusqlite::Connection;

use super::super::StoreResult;
use super::super::error::{SqlContext as _, StoreError};

/// Most changes one commit carries.
pub(super) const MAX_BATCH: usize = 256;

/// How a batch ended: committed, or rolled back and why. Each writer
/// holds its batch's outcome and waits on it alone: finishing a batch
/// wakes only that batch's writers, and they never contend for the writer
/// lock the next batch is using.
#[derive(Debug, Default)]
struct Outcome {
    ended: Mutex<Option<Result<(), String>>>,
    woken: Condvar,
}

impl Outcome {
    fn set(&self, result: Result<(), String>) {
        *self.ended.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        self.woken.notify_all();
    }

    fn wait(&self) -> Result<(), String> {
        let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(result) = ended.as_ref() {
                return result.clone();
            }
            ended = self
                .woken
                .wait(ended)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The one writing connection and the batch it has open.
#[derive(Debug)]
pub(super) struct GroupCommit {
    writer: Mutex<Writer>,
    /// Writers waiting for the writer lock: while there are any, the
    /// current writer leaves the batch open for them.
    queued: AtomicUsize,
}

/// The writing connection and its open batch, behind [`GroupCommit`]'s lock.
#[derive(Debug)]
pub(super) struct Writer {
    conn: Connection,
    /// The open batch's outcome, to be decided; `None` when no batch is open.
    open: Option<Arc<Outcome>>,
    /// Changes in the open batch.
    changes: usize,
    /// Totals since the store opened.
    stats: CommitStats,
}

/// How well changes were grouped since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Changes run.
    pub changes: u64,
    /// Batches committed (each one flush of the WAL).
    pub commits: u64,
    /// Batches rolled back because the commit or a savepoint failed.
    pub aborted: u64,
}

/// How one change inside the batch went.
enum Change<T> {
    Done(StoreResult<T>),
    Panicked(Box<dyn std::any::Any + Send>),
}

impl GroupCommit {
    /// Takes over `conn`, which must not be inside a transaction.
    pub(super) fn new(conn: Connection) -> Self {
        Self {
            writer: Mutex::new(Writer {
                conn,
                open: None,
                changes: 0,
                stats: CommitStats::default(),
            }),
            queued: AtomicUsize::new(0),
        }
    }

    /// The writer connection, for settings and for reads on a store that
    /// has no separate readers (in memory). A thread that panicked while
    /// holding it rolled its change back first, so a poisoned lock is safe.
    pub(super) fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Totals since the store opened.
    pub(super) fn stats(&self) -> CommitStats {
        self.lock().stats
    }

    /// Runs `change` in the current batch and returns once that batch is
    /// durable (or has failed, in which case nothing of `change` is kept).
    pub(super) fn write<T>(
        &self,
        change: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut writer = self.lock();
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let batch = writer.join()?;
        let change = match writer.run(change) {
            Ok(change) => change,
            Err(broken) => {
                writer.abort(broken.to_string());
                return Err(broken);
            }
        };
        if self.queued.load(Ordering::SeqCst) == 0 || writer.changes >= MAX_BATCH {
            writer.commit();
        }
        drop(writer);
        let ended = batch.wait();
        match (change, ended) {
            (Change::Panicked(payload), _) => resume_unwind(payload),
            (Change::Done(result), Ok(())) => result,
            (Change::Done(_), Err(detail)) => Err(StoreError::Sqlite {
                op: "commit",
                detail,
            }),
        }
    }
}

impl Writer {
    /// The connection (outside any change of the batch).
    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Opens a batch unless one is open, and returns its outcome slot.
    /// `IMMEDIATE` takes the database's write lock up front, so other
    /// processes queue behind the batch instead of deadlocking with it.
    fn join(&mut self) -> StoreResult<Arc<Outcome>> {
        if let Some(open) = &self.open {
            return Ok(Arc::clone(open));
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .ctx("begin transaction")?;
        self.changes = 0;
        Ok(Arc::clone(self.open.insert(Arc::default())))
    }

    /// Runs one change in its own savepoint. `Err` means the batch itself
    /// is in an unknown state and must be abandoned.
    fn run<T>(
        &mut self,
        change: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<Change<T>> {
        self.conn
            .execute_batch("SAVEPOINT change")
            .ctx("begin change")?;
        self.changes += 1;
        self.stats.changes += 1;
        let outcome = match catch_unwind(AssertUnwindSafe(|| change(&self.conn))) {
            Ok(result) => Change::Done(result),
            Err(payload) => Change::Panicked(payload),
        };
        let end = if matches!(outcome, Change::Done(Ok(_))) {
            "RELEASE change"
        } else {
            "ROLLBACK TO change; RELEASE change"
        };
        self.conn.execute_batch(end).ctx("end change")?;
        Ok(outcome)
    }

    /// Commits the open batch; on failure rolls it back.
    fn commit(&mut self) {
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => {
                self.stats.commits += 1;
                self.finish(Ok(()));
            }
            Err(e) => self.abort(e.to_string()),
        }
    }

    /// Rolls the open batch back; every writer in it gets `why`.
    fn abort(&mut self, why: String) {
        // Undoes whatever a failed COMMIT or savepoint left; when SQLite has
        // already rolled back on its own there is nothing to undo.
        let _ = self.conn.execute_batch("ROLLBACK");
        self.stats.aborted += 1;
        self.finish(Err(why));
    }

    fn finish(&mut self, outcome: Result<(), String>) {
        if let Some(open) = self.open.take() {
            open.set(outcome);
        }
        self.changes = 0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::sync::mpsc;
    use std::thread;

    use super::*;

    fn store() -> GroupCommit {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE row (id INTEGER PRIMARY KEY,
                 parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .unwrap();
        GroupCommit::new(conn)
    }

    fn insert(id: i64, parent: Option<i64>) -> impl FnOnce(&Connection) -> StoreResult<i64> {
        move |conn| {
            conn.execute("INSERT INTO row (id, parent) VALUES (?1, ?2)", (id, parent))
                .ctx("insert row")?;
            Ok(id)
        }
    }

    fn rows(gc: &GroupCommit) -> Vec<i64> {
        let writer = gc.lock();
        let mut stmt = writer
            .conn()
            .prepare("SELECT id FROM row ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Runs `first` so that it finishes its change only once another
    /// writer is queued behind it, then runs `second` as that writer: both
    /// land in one batch, deterministically.
    fn in_one_batch<A: Send, B: Send>(
        gc: &GroupCommit,
        first: impl FnOnce(&Connection) -> StoreResult<A> + Send,
        second: impl FnOnce(&Connection) -> StoreResult<B> + Send,
    ) -> (thread::Result<StoreResult<A>>, StoreResult<B>) {
        let (started, wait_started) = mpsc::channel();
        thread::scope(|scope| {
            let a = scope.spawn(|| {
                gc.write(|conn| {
                    started.send(()).unwrap();
                    while gc.queued.load(Ordering::SeqCst) == 0 {
                        thread::yield_now();
                    }
                    first(conn)
                })
            });
            wait_started.recv().unwrap();
            let b = gc.write(second);
            (a.join(), b)
        })
    }

    #[test]
    fn a_lone_change_commits_at_once() {
        let gc = store();
        assert_eq!(gc.write(insert(1, None)).unwrap(), 1);
        assert_eq!(rows(&gc), [1]);
        let stats = gc.stats();
        assert_eq!((stats.changes, stats.commits, stats.aborted), (1, 1, 0));
        assert!(
            gc.lock().conn().is_autocommit(),
            "no transaction is left open"
        );
    }

    #[test]
    fn a_writer_queued_behind_another_shares_its_commit() {
        let gc = store();
        let (a, b) = in_one_batch(&gc, insert(1, None), insert(2, None));
        assert_eq!(a.unwrap().unwrap(), 1);
        assert_eq!(b.unwrap(), 2);
        assert_eq!(rows(&gc), [1, 2]);
        assert_eq!(gc.stats().commits, 1, "two changes, one commit");
        assert_eq!(gc.stats().changes, 2);
    }

    #[test]
    fn a_failing_change_is_rolled_back_alone() {
        let gc = store();
        let (a, b) = in_one_batch(&gc, insert(1, None), |conn: &Connection| {
            insert(2, None)(conn)?;
            insert(1, None)(conn)
        });
        assert_eq!(a.unwrap().unwrap(), 1);
        assert!(
            matches!(
                b,
                Err(StoreError::Sqlite {
                    op: "insert row",
                    ..
                })
            ),
            "{b:?}"
        );
        assert_eq!(
            rows(&gc),
            [1],
            "the failed change left nothing, row 1 stayed"
        );
        assert_eq!(gc.stats().commits, 1);
    }

    #[test]
    fn a_panicking_change_is_rolled_back_and_the_panic_resumes() {
        let gc = store();
        let (a, b) = in_one_batch(
            &gc,
            |conn: &Connection| -> StoreResult<i64> {
                insert(1, None)(conn)?;
                panic!("a defect in a change");
            },
            insert(2, None),
        );
        assert!(a.is_err(), "the panic reaches the writer that caused it");
        assert_eq!(b.unwrap(), 2);
        assert_eq!(rows(&gc), [2]);
        gc.write(insert(3, None)).unwrap();
        assert_eq!(rows(&gc), [2, 3], "the store keeps working");
    }

    #[test]
    fn a_failed_commit_fails_every_writer_of_the_batch_and_keeps_nothing() {
        let gc = store();
        // The dangling parent is a deferred constraint: the change itself
        // succeeds and the COMMIT refuses the batch.
        let (a, b) = in_one_batch(&gc, insert(1, None), insert(2, Some(99)));
        for outcome in [a.unwrap().map(|_| ()), b.map(|_| ())] {
            assert!(
                matches!(&outcome, Err(StoreError::Sqlite { op: "commit", detail }) if detail.contains("FOREIGN KEY")),
                "{outcome:?}"
            );
        }
        assert_eq!(rows(&gc), Vec::<i64>::new());
        let stats = gc.stats();
        assert_eq!((stats.commits, stats.aborted), (0, 1));
        gc.write(insert(3, None)).unwrap();
        assert_eq!(rows(&gc), [3], "the next batch starts clean");
    }

    #[test]
    fn many_concurrent_writers_all_land() {
        let gc = store();
        let barrier = std::sync::Barrier::new(16);
        thread::scope(|scope| {
            for t in 0..16_i64 {
                let (gc, barrier) = (&gc, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    for i in 0..50 {
                        let id = t * 1000 + i;
                        assert_eq!(gc.write(insert(id, None)).unwrap(), id);
                    }
                });
            }
        });
        assert_eq!(rows(&gc).len(), 800);
        let stats = gc.stats();
        assert_eq!(stats.changes, 800);
        assert!(stats.commits <= 800 && stats.commits > 0, "{stats:?}");
        assert!(gc.lock().conn().is_autocommit());
    }
}
