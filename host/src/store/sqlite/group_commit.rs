//! Group commit: many writers, one flush.
//!
//! Why: a change is durable only once the disk has flushed it, and a disk
//! flushes a few thousand times a second at best. Notifications and
//! intents arrive concurrently; if each waited for its own flush, the
//! disk's flush rate would cap the gateway. So changes are grouped twice:
//!
//! - **Batches.** A writer that arrives while a batch is open runs its
//!   change inside that batch's transaction, in a savepoint of its own;
//!   the last writer in line commits the batch.
//! - **Flushes.** On a file, the connection runs with `synchronous =
//!   NORMAL`: `COMMIT` writes the batch to the WAL and returns without
//!   waiting for the disk. The store's writing thread then flushes the WAL
//!   itself (`fdatasync`), outside the writer lock, so changes keep
//!   joining the next batch meanwhile. One flush makes every batch written
//!   before it durable, because the WAL is appended in order.
//!
//! Changes come in two ways. [`GroupCommit::write`] runs the change on the
//! caller's thread and blocks until it is durable. [`GroupCommit::submit`]
//! hands the change to the writing thread and returns a future: the hot
//! paths (a notification's write) hold no thread while their batch waits
//! for the disk, and the writing thread runs a whole queue of them in one
//! batch without a thread switch between them. Submitted changes wait in
//! an inbox with a lock of its own, so a submitter (an async worker) never
//! waits while the writing thread runs a batch: it would stall every
//! other request that worker serves.
//!
//! What stays true:
//! - **Nothing is answered before it is durable.** A writer gets its
//!   result only after a flush that began after its batch's `COMMIT`
//!   returned, so a caller never acknowledges a change that a crash or a
//!   power cut could still undo. SQLite's WAL with `NORMAL` stays
//!   consistent across a power cut and loses at most the batches not yet
//!   flushed: exactly those whose writers are still waiting.
//! - **Writers stay isolated.** A change that fails is rolled back to its
//!   savepoint and its writer gets its own error; the rest of the batch is
//!   unaffected. A change that panics is rolled back the same way (a
//!   blocking writer's panic then resumes; a submitted one's becomes an
//!   error, so the writing thread lives on).
//! - **A failed commit or flush acknowledges nothing.** If `COMMIT` fails
//!   the batch is rolled back; if the flush fails the batch may or may not
//!   survive a power cut, and the store refuses every later write (the
//!   disk may have dropped what it was given) until it is opened again.
//!   Either way every writer in the batch gets the error.
//! - **Readers see committed batches**, through their own connections (see
//!   [`super::readers`]) — possibly a flush before they are durable.
//!   Nothing leaves the store on the strength of such a read alone: every
//!   action with effects outside it (an ACK, an agent's reply, a request
//!   to WeChat) follows a write of its own, and that write's flush covers
//!   every batch before it.
//!
//! A batch closes when nobody is queued to join it and no flush is in
//! flight, or when it reaches [`MAX_BATCH`] changes, so a steady stream
//! still commits regularly and an idle store commits and flushes each
//! change at once. Under load (the writing thread's last round ran more
//! than one change), a store that flushes keeps the writing thread's batch
//! open for [`COMMIT_DELAY`] and runs submitted changes as they arrive, in
//! slices: the batch's changes run while the requests behind the next ones
//! are still being handled, instead of all of them after the delay. In
//! memory, where nothing is flushed and readers share the writer's
//! connection, a batch is never kept open that way: they would see changes
//! not yet committed.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::super::StoreResult;
use super::super::error::{SqlContext as _, StoreError};

/// Most changes one commit carries.
pub(super) const MAX_BATCH: usize = 256;

/// How long the writing thread keeps a batch open while changes keep
/// coming (its last round ran more than one), like PostgreSQL's
/// `commit_delay`, running each change as it arrives: an idle store still
/// commits each change at once.
pub(super) const COMMIT_DELAY: Duration = Duration::from_millis(1);

/// While a batch fills, how long the writing thread waits before it runs
/// what has arrived: long enough that submitters need not wake it for
/// each change.
const FILL_SLICE: Duration = Duration::from_micros(250);

/// Makes everything committed so far durable: flushes the WAL file.
pub(super) type Flush = Box<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// Told how the batch it joined ended.
type Then = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A submitted change, run by the writing thread.
type Job = Box<dyn FnOnce(&mut Writer) + Send>;

/// How a batch ended: durable, or not and why. Each blocking writer
/// waits on its batch's outcome alone, and a submitted change is told
/// through a callback: finishing a batch wakes only that batch's writers.
#[derive(Default)]
struct Outcome {
    state: Mutex<OutcomeState>,
    woken: Condvar,
}

#[derive(Default)]
struct OutcomeState {
    ended: Option<Result<(), String>>,
    then: Vec<Then>,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome").finish_non_exhaustive()
    }
}

impl Outcome {
    fn lock(&self) -> MutexGuard<'_, OutcomeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, result: Result<(), String>) {
        let then = {
            let mut state = self.lock();
            state.ended = Some(result.clone());
            std::mem::take(&mut state.then)
        };
        self.woken.notify_all();
        for told in then {
            told(result.clone());
        }
    }

    /// Runs `then` once the batch has ended.
    fn then(&self, then: Then) {
        let mut state = self.lock();
        match state.ended.clone() {
            Some(result) => {
                drop(state);
                then(result);
            }
            None => state.then.push(then),
        }
    }

    fn wait(&self) -> Result<(), String> {
        let mut state = self.lock();
        loop {
            if let Some(result) = state.ended.as_ref() {
                return result.clone();
            }
            state = self
                .woken
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The one writing connection, its open batch, and the thread that runs
/// submitted changes and makes committed batches durable.
pub(super) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the writers and the writing thread share. Whoever takes both
/// locks takes the writer's first.
struct Shared {
    writer: Mutex<Writer>,
    /// Blocking writers waiting for the writer lock: while there are any,
    /// the current writer leaves the batch open for them.
    queued: AtomicUsize,
    /// What the writing thread has to do, behind a lock held only briefly.
    inbox: Mutex<Inbox>,
    /// Signalled, with the inbox lock, when there is work for the thread.
    work: Condvar,
    /// How long a batch stays open under load: [`COMMIT_DELAY`].
    commit_delay: Duration,
}

/// Work for the writing thread, behind [`Shared::inbox`].
#[derive(Default)]
struct Inbox {
    /// Submitted changes waiting for the writing thread.
    jobs: Vec<Job>,
    /// A blocking writer committed a batch (to be flushed) or left one open
    /// (to be committed).
    poked: bool,
    /// What the writing thread is waiting for, if it is waiting on
    /// [`Shared::work`]: a submitter wakes it only when it has to.
    waiting: Waiting,
    /// The store is closing; the writing thread stops once idle.
    closing: bool,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The writer's state is behind its lock; formatting takes no lock.
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

/// The writing connection and its batches, behind [`GroupCommit`]'s lock.
pub(super) struct Writer {
    conn: Connection,
    /// The open batch's outcome, to be decided; `None` when no batch is open.
    open: Option<Arc<Outcome>>,
    /// Changes in the open batch.
    changes: usize,
    /// Whether a committed batch still needs a flush (false: `COMMIT` is
    /// durable by itself, or durability is not wanted).
    flushes: bool,
    /// Batches committed to the WAL and waiting for a flush.
    unflushed: Vec<Arc<Outcome>>,
    /// The writing thread is waiting for the disk.
    flushing: bool,
    /// The writing thread keeps the open batch open for changes still to
    /// come, and commits it when its commit delay is over.
    filling: bool,
    /// Set by a failed flush: nothing more is written.
    broken: Option<String>,
    /// Totals since the store opened.
    stats: CommitStats,
}

/// Why the writing thread sleeps on [`Shared::work`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Waiting {
    /// It is running changes or flushing, and looks for new work after.
    #[default]
    No,
    /// It has nothing to do: any new work must wake it.
    ForWork,
    /// It waits a [`FILL_SLICE`] while the batch fills: only a full
    /// batch's worth of submitted changes, or the store closing, cuts that
    /// short.
    ForBatchToFill,
}

/// How well changes were grouped since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Changes run.
    pub changes: u64,
    /// Batches committed.
    pub commits: u64,
    /// Flushes of the WAL (each one wait for the disk); 0 in memory.
    pub flushes: u64,
    /// Batches rolled back, or left unacknowledged, because the commit, a
    /// savepoint or the flush failed.
    pub aborted: u64,
}

/// How one change inside the batch went.
enum Change<T> {
    Done(StoreResult<T>),
    Panicked(Box<dyn std::any::Any + Send>),
}

impl GroupCommit {
    /// Takes over `conn`, which must not be inside a transaction, and
    /// starts the writing thread. With `flush`, `conn` must commit without
    /// waiting for the disk (WAL, `synchronous = NORMAL`) and `flush` must
    /// make all it committed durable. Without, a `COMMIT` that returns is
    /// taken as the end (durable already, or durability not wanted: memory).
    pub(super) fn new(conn: Connection, flush: Option<Flush>) -> std::io::Result<Self> {
        Self::with_commit_delay(conn, flush, COMMIT_DELAY)
    }

    fn with_commit_delay(
        conn: Connection,
        flush: Option<Flush>,
        commit_delay: Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            writer: Mutex::new(Writer {
                conn,
                open: None,
                changes: 0,
                flushes: flush.is_some(),
                unflushed: Vec::new(),
                flushing: false,
                filling: false,
                broken: None,
                stats: CommitStats::default(),
            }),
            queued: AtomicUsize::new(0),
            inbox: Mutex::default(),
            work: Condvar::new(),
            commit_delay,
        });
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("wxpay-sqlite-writer".into())
            .spawn(move || serving.serve(flush.as_ref()))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// The writer connection, for settings and for reads on a store that
    /// has no separate readers (in memory). A thread that panicked while
    /// holding it rolled its change back first, so a poisoned lock is safe.
    pub(super) fn lock(&self) -> MutexGuard<'_, Writer> {
        self.shared.lock()
    }

    /// Totals since the store opened.
    pub(super) fn stats(&self) -> CommitStats {
        self.lock().stats
    }

    /// Runs `change` in the current batch and returns once that batch is
    /// durable (or has failed, in which case nothing of `change` is
    /// acknowledged).
    pub(super) fn write<T>(
        &self,
        change: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let shared = &*self.shared;
        shared.queued.fetch_add(1, Ordering::SeqCst);
        let mut writer = shared.lock();
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        writer.refuse_if_broken()?;
        let batch = writer.join()?;
        let change = match writer.run(change) {
            Ok(change) => change,
            Err(broken) => {
                writer.abort(broken.to_string());
                return Err(broken);
            }
        };
        let others_coming = shared.queued.load(Ordering::SeqCst) > 0
            || writer.flushing
            || writer.filling
            || !shared.inbox().jobs.is_empty();
        if !others_coming || writer.changes >= MAX_BATCH {
            writer.commit();
        }
        drop(writer);
        // The writing thread flushes the batch, or commits it if it is left
        // open and nobody else does.
        shared.poke();
        let ended = batch.wait();
        match (change, ended) {
            (Change::Panicked(payload), _) => resume_unwind(payload),
            (Change::Done(result), ended) => durable(result, ended),
        }
    }

    /// Hands `change` to the writing thread at once; the future resolves
    /// once its batch is durable (or has failed), holding no thread
    /// meanwhile. Dropping the future does not withdraw the change: a
    /// caller that gave up (a callback past its deadline) answers as if it
    /// failed, and the change, if it was made, is there for the retry.
    pub(super) fn submit<T: Send + 'static>(
        &self,
        change: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> impl Future<Output = StoreResult<T>> + Send + 'static {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |writer: &mut Writer| writer.run_submitted(change, answer));
        let wake = {
            let mut inbox = self.shared.inbox();
            inbox.jobs.push(job);
            match inbox.waiting {
                Waiting::No => false,
                Waiting::ForWork => true,
                Waiting::ForBatchToFill => inbox.jobs.len() >= MAX_BATCH,
            }
        };
        // A thread woken for nothing costs two context switches.
        if wake {
            self.shared.work.notify_one();
        }
        async move {
            answered.await.unwrap_or_else(|_| {
                Err(StoreError::Sqlite {
                    op: "write",
                    detail: "the store closed before the change was made".into(),
                })
            })
        }
    }
}

/// A change's own result once its batch ended: the batch's failure wins.
fn durable<T>(result: StoreResult<T>, ended: Result<(), String>) -> StoreResult<T> {
    match ended {
        Ok(()) => result,
        Err(detail) => Err(StoreError::Sqlite {
            op: "commit",
            detail,
        }),
    }
}

impl Drop for GroupCommit {
    /// Stops the writing thread once it has run every submitted change and
    /// flushed every batch.
    fn drop(&mut self) {
        self.shared.inbox().closing = true;
        self.shared.work.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the writing thread a blocking writer committed or left a batch
    /// open; wakes it only if it is waiting for work.
    fn poke(&self) {
        let wake = {
            let mut inbox = self.inbox();
            inbox.poked = true;
            inbox.waiting == Waiting::ForWork
        };
        if wake {
            self.work.notify_one();
        }
    }

    /// A batch is open and nobody is queued to join it: this thread kept it
    /// open, or its writers left it to this thread (they saw a flush in
    /// flight, the batch filling, or changes queued).
    fn left_open(&self, writer: &Writer) -> bool {
        writer.open.is_some() && self.queued.load(Ordering::SeqCst) == 0
    }

    /// Waits for work and takes the submitted changes. `None` once the
    /// store is closing and nothing is left to do.
    fn next_jobs(&self) -> Option<Vec<Job>> {
        let mut inbox = self.inbox();
        while inbox.jobs.is_empty() && !inbox.poked {
            if inbox.closing {
                return None;
            }
            inbox.waiting = Waiting::ForWork;
            inbox = self
                .work
                .wait(inbox)
                .unwrap_or_else(PoisonError::into_inner);
            inbox.waiting = Waiting::No;
        }
        inbox.poked = false;
        Some(std::mem::take(&mut inbox.jobs))
    }

    /// While a batch fills, waits until something has been submitted,
    /// looking every [`FILL_SLICE`] (submitters do not wake it), or until
    /// `until`; takes what is there, and says whether the batch stays open
    /// after it (not once `until` has passed or the store is closing).
    fn jobs_before(&self, until: Instant) -> (Vec<Job>, bool) {
        let mut inbox = self.inbox();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let open = !left.is_zero() && !inbox.closing;
            if !inbox.jobs.is_empty() || !open {
                return (std::mem::take(&mut inbox.jobs), open);
            }
            inbox.waiting = Waiting::ForBatchToFill;
            inbox = self
                .work
                .wait_timeout(inbox, left.min(FILL_SLICE))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            inbox.waiting = Waiting::No;
        }
    }

    /// Keeps the open batch open until `until`, running what is submitted
    /// meanwhile. The writer lock is let go between slices, so blocking
    /// writers join the batch too (and leave it to this thread to commit).
    fn fill<'a>(
        &'a self,
        mut writer: MutexGuard<'a, Writer>,
        until: Instant,
    ) -> MutexGuard<'a, Writer> {
        writer.filling = true;
        while writer.open.is_some() {
            drop(writer);
            let (jobs, open) = self.jobs_before(until);
            writer = self.lock();
            writer.run_jobs(jobs);
            if !open {
                break;
            }
        }
        writer.filling = false;
        writer
    }

    /// The writing thread: runs the submitted changes in the open batch
    /// (under load, keeping it open for the commit delay), commits it,
    /// flushes, tells the writers; round again.
    fn serve(&self, flush: Option<&Flush>) {
        let mut busy = false;
        while let Some(jobs) = self.next_jobs() {
            // The changes run while the callers of the next ones are still
            // at work, not after the delay.
            let fill_until =
                (busy && flush.is_some()).then(|| Instant::now() + self.commit_delay);
            let mut writer = self.lock();
            let before = writer.stats.changes;
            writer.run_jobs(jobs);
            if let Some(until) = fill_until {
                writer = self.fill(writer, until);
            }
            if self.left_open(&writer) {
                writer.commit();
            }
            busy = writer.stats.changes - before > 1;
            let batches = std::mem::take(&mut writer.unflushed);
            let Some(flush) = flush.filter(|_| !batches.is_empty()) else {
                continue;
            };
            writer.flushing = true;
            drop(writer);
            let flushed = flush().map_err(|e| format!("flush the WAL: {e}"));
            let mut writer = self.lock();
            writer.flushing = false;
            writer.stats.flushes += 1;
            if let Err(why) = &flushed {
                writer.stats.aborted += batches.len() as u64;
                writer.broken = Some(why.clone());
            }
            drop(writer);
            for batch in batches {
                batch.set(flushed.clone());
            }
        }
    }
}

impl Writer {
    /// The connection (outside any change of the batch).
    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Whether batches are flushed by this store rather than by `COMMIT`.
    pub(super) fn flushes_itself(&self) -> bool {
        self.flushes
    }

    /// Runs one of the few statements every change runs, parsed once.
    fn execute_cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    fn refuse_if_broken(&self) -> StoreResult<()> {
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(StoreError::Sqlite {
                op: "write",
                detail: format!("the store stopped writing after a failed flush: {why}"),
            }),
        }
    }

    /// Runs submitted changes in the open batch, committing it whenever it
    /// is full.
    fn run_jobs(&mut self, jobs: Vec<Job>) {
        for job in jobs {
            job(self);
            if self.changes >= MAX_BATCH {
                self.commit();
            }
        }
    }

    /// Runs a submitted change in the open batch; its answer is sent once
    /// the batch has ended, or at once when the change never joined one.
    fn run_submitted<T: Send + 'static>(
        &mut self,
        change: impl FnOnce(&Connection) -> StoreResult<T>,
        answer: tokio::sync::oneshot::Sender<StoreResult<T>>,
    ) {
        let joined = self.refuse_if_broken().and_then(|()| self.join());
        let batch = match joined {
            Ok(batch) => batch,
            Err(refused) => {
                let _ = answer.send(Err(refused));
                return;
            }
        };
        let result = match self.run(change) {
            Ok(Change::Done(result)) => result,
            Ok(Change::Panicked(_)) => {
                tracing::error!("a store change panicked; it was rolled back");
                Err(StoreError::Sqlite {
                    op: "write",
                    detail: "the change failed unexpectedly and was rolled back".into(),
                })
            }
            Err(broken) => {
                self.abort(broken.to_string());
                let _ = answer.send(Err(broken));
                return;
            }
        };
        batch.then(Box::new(move |ended| {
            let _ = answer.send(durable(result, ended));
        }));
    }

    /// Opens a batch unless one is open, and returns its outcome slot.
    /// `IMMEDIATE` takes the database's write lock up front, so other
    /// processes queue behind the batch instead of deadlocking with it.
    fn join(&mut self) -> StoreResult<Arc<Outcome>> {
        if let Some(open) = &self.open {
            return Ok(Arc::clone(open));
        }
        self.execute_cached("BEGIN IMMEDIATE")
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
        self.execute_cached("SAVEPOINT change")
            .ctx("begin change")?;
        self.changes += 1;
        self.stats.changes += 1;
        let outcome = match catch_unwind(AssertUnwindSafe(|| change(&self.conn))) {
            Ok(result) => Change::Done(result),
            Err(payload) => Change::Panicked(payload),
        };
        if !matches!(outcome, Change::Done(Ok(_))) {
            self.execute_cached("ROLLBACK TO change")
                .ctx("roll back change")?;
        }
        self.execute_cached("RELEASE change").ctx("end change")?;
        Ok(outcome)
    }

    /// Commits the open batch (then it waits for a flush, unless `COMMIT`
    /// is durable by itself); on failure rolls it back.
    fn commit(&mut self) {
        match self.execute_cached("COMMIT") {
            Ok(()) => {
                self.stats.commits += 1;
                self.changes = 0;
                if let Some(open) = self.open.take() {
                    if self.flushes {
                        self.unflushed.push(open);
                    } else {
                        open.set(Ok(()));
                    }
                }
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
        if let Some(open) = self.open.take() {
            open.set(Err(why));
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
        GroupCommit::new(conn, None).unwrap()
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
                    while gc.shared.queued.load(Ordering::SeqCst) == 0 {
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

    #[test]
    fn many_submitted_changes_from_many_threads_all_land_and_are_answered() {
        let flushed = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&flushed);
        let flush: Flush = Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let gc = flushed_by(flush, COMMIT_DELAY);
        let per_thread = MAX_BATCH as i64;
        thread::scope(|scope| {
            for t in 0..4_i64 {
                let gc = &gc;
                scope.spawn(move || {
                    // All submitted before any is awaited: the queue outgrows
                    // a batch while the writing thread lets one fill.
                    let answers: Vec<_> = (0..per_thread)
                        .map(|i| gc.submit(insert(t * 10_000 + i, None)))
                        .collect();
                    let rt = runtime();
                    for (i, answer) in (0..per_thread).zip(answers) {
                        assert_eq!(rt.block_on(answer).unwrap(), t * 10_000 + i);
                    }
                });
            }
        });
        assert_eq!(rows(&gc).len(), 4 * MAX_BATCH);
        let stats = gc.stats();
        assert_eq!(stats.changes, 4 * MAX_BATCH as u64);
        assert!(stats.commits < stats.changes, "grouped: {stats:?}");
        assert_eq!(stats.flushes, flushed.load(Ordering::SeqCst) as u64);
    }

    #[test]
    fn submitting_does_not_wait_for_the_change_being_run() {
        let gc = store();
        let (entered, wait_entered) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let running = gc.submit(move |conn| {
            entered.send(()).unwrap();
            released.recv().unwrap();
            insert(1, None)(conn)
        });
        wait_entered.recv().unwrap();
        let (submitted, wait_submitted) = mpsc::channel();
        let next = thread::scope(|scope| {
            let submitter = scope.spawn(|| {
                let next = gc.submit(insert(2, None));
                submitted.send(()).unwrap();
                next
            });
            // Under the old single lock this waited until the release below.
            let prompt = wait_submitted.recv_timeout(std::time::Duration::from_secs(5));
            release.send(()).unwrap();
            assert!(prompt.is_ok(), "submit waited for the running change");
            submitter.join().unwrap()
        });
        let rt = runtime();
        assert_eq!(rt.block_on(running).unwrap(), 1);
        assert_eq!(rt.block_on(next).unwrap(), 2);
        assert_eq!(rows(&gc), [1, 2]);
    }

    /// A flush that waits for the test to allow it, counting how many ran.
    struct Gate {
        allow: std::sync::mpsc::SyncSender<Result<(), String>>,
    }

    fn gated() -> (GroupCommit, Gate) {
        gated_with_commit_delay(COMMIT_DELAY)
    }

    fn gated_with_commit_delay(commit_delay: Duration) -> (GroupCommit, Gate) {
        let (allow, allowed) = mpsc::sync_channel::<Result<(), String>>(16);
        let allowed = Mutex::new(allowed);
        let flush: Flush = Box::new(move || {
            let outcome = allowed.lock().unwrap().recv().unwrap();
            outcome.map_err(std::io::Error::other)
        });
        (flushed_by(flush, commit_delay), Gate { allow })
    }

    /// A store of rows whose batches `flush` makes durable.
    fn flushed_by(flush: Flush, commit_delay: Duration) -> GroupCommit {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE row (id INTEGER PRIMARY KEY, parent INTEGER);")
            .unwrap();
        GroupCommit::with_commit_delay(conn, Some(flush), commit_delay).unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    /// Waits until the writing thread is inside a flush.
    fn until_flushing(gc: &GroupCommit) {
        while !gc.lock().flushing {
            thread::yield_now();
        }
    }

    #[test]
    fn a_submitted_change_is_answered_only_after_its_flush() {
        let (gc, gate) = gated();
        let rt = runtime();
        let mut answer = Box::pin(gc.submit(insert(1, None)));
        until_flushing(&gc);
        let early = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_millis(100), &mut answer).await
        });
        assert!(early.is_err(), "answered before the flush");
        assert_eq!(rows(&gc), [1], "committed, waiting for the disk");
        gate.allow.send(Ok(())).unwrap();
        assert_eq!(rt.block_on(answer).unwrap(), 1);
        let stats = gc.stats();
        assert_eq!((stats.commits, stats.flushes), (1, 1));
    }

    #[test]
    fn changes_made_during_a_flush_share_the_next_commit_and_flush() {
        let (gc, gate) = gated();
        let rt = runtime();
        let first = gc.submit(insert(1, None));
        until_flushing(&gc);
        let later = [gc.submit(insert(2, None)), gc.submit(insert(3, None))];
        let blocking = thread::scope(|scope| {
            let writer = scope.spawn(|| gc.write(insert(4, None)));
            while gc.stats().changes < 2 {
                thread::yield_now();
            }
            gate.allow.send(Ok(())).unwrap();
            gate.allow.send(Ok(())).unwrap();
            writer.join().unwrap()
        });
        assert_eq!(blocking.unwrap(), 4);
        assert_eq!(rt.block_on(first).unwrap(), 1);
        for (answer, id) in later.into_iter().zip([2, 3]) {
            assert_eq!(rt.block_on(answer).unwrap(), id);
        }
        let stats = gc.stats();
        assert_eq!(
            (stats.changes, stats.commits, stats.flushes),
            (4, 2, 2),
            "{stats:?}"
        );
    }

    /// Runs a lone change, then two submitted during its flush: the round
    /// that runs those two is busy, so the writing thread keeps its next
    /// batch open. Every flush is allowed; all three are answered.
    fn after_a_busy_round(gc: &GroupCommit, gate: &Gate, rt: &tokio::runtime::Runtime) {
        let lone = gc.submit(insert(1, None));
        until_flushing(gc);
        let busy = [gc.submit(insert(2, None)), gc.submit(insert(3, None))];
        gate.allow.send(Ok(())).unwrap();
        while !{
            let writer = gc.lock();
            writer.flushing && writer.stats.changes == 3
        } {
            thread::yield_now();
        }
        gate.allow.send(Ok(())).unwrap();
        assert_eq!(rt.block_on(lone).unwrap(), 1);
        for (answer, id) in busy.into_iter().zip([2, 3]) {
            assert_eq!(rt.block_on(answer).unwrap(), id);
        }
    }

    #[test]
    fn a_blocking_writer_leaves_a_batch_kept_open_to_the_writing_thread() {
        let (gc, gate) = gated_with_commit_delay(Duration::from_secs(1));
        let rt = runtime();
        after_a_busy_round(&gc, &gate, &rt);
        let submitted = gc.submit(insert(4, None));
        while gc.stats().changes < 4 {
            thread::yield_now();
        }
        let (blocking, meanwhile) = thread::scope(|scope| {
            let writer = scope.spawn(|| gc.write(insert(5, None)));
            while gc.stats().changes < 5 {
                thread::yield_now();
            }
            let meanwhile = gc.stats();
            gate.allow.send(Ok(())).unwrap();
            (writer.join().unwrap(), meanwhile)
        });
        assert_eq!(meanwhile.commits, 2, "committed before the delay: {meanwhile:?}");
        assert_eq!(blocking.unwrap(), 5);
        assert_eq!(rt.block_on(submitted).unwrap(), 4);
        let stats = gc.stats();
        assert_eq!((stats.commits, stats.flushes), (3, 3), "{stats:?}");
    }

    #[test]
    fn under_load_changes_run_as_they_arrive_and_share_the_open_batch() {
        // A delay no test run waits out: closing the store ends the batch.
        let (gc, gate) = gated_with_commit_delay(Duration::from_secs(600));
        let rt = runtime();
        after_a_busy_round(&gc, &gate, &rt);

        let (ran, runs) = mpsc::channel();
        let noted = |id: i64| {
            let ran = ran.clone();
            move |conn: &Connection| {
                ran.send(id).unwrap();
                insert(id, None)(conn)
            }
        };
        let patience = Duration::from_secs(10);
        let first = gc.submit(noted(4));
        assert_eq!(runs.recv_timeout(patience), Ok(4), "waited for the delay");
        let second = gc.submit(noted(5));
        assert_eq!(runs.recv_timeout(patience), Ok(5), "waited for the delay");
        let stats = gc.stats();
        assert_eq!(
            (stats.changes, stats.commits),
            (5, 2),
            "both are in the open batch: {stats:?}"
        );
        gate.allow.send(Ok(())).unwrap();
        drop(gc);
        assert_eq!(rt.block_on(first).unwrap(), 4);
        assert_eq!(rt.block_on(second).unwrap(), 5);
    }

    #[test]
    fn a_batch_kept_open_commits_at_its_deadline_while_changes_keep_coming() {
        let gc = flushed_by(Box::new(|| Ok(())), Duration::from_millis(10));
        // Each change takes 2 ms, and whenever one starts the next is
        // submitted: the writing thread finds changes waiting at every look.
        let (started, starts) = mpsc::channel();
        let slow = |id: i64| {
            let started = started.clone();
            move |conn: &Connection| {
                started.send(()).unwrap();
                thread::sleep(Duration::from_millis(2));
                insert(id, None)(conn)
            }
        };
        let mut answers: Vec<_> = (1..=3).map(|id| gc.submit(slow(id))).collect();
        for id in 4..=100 {
            starts.recv().unwrap();
            answers.push(gc.submit(slow(id)));
        }
        let rt = runtime();
        for (answer, id) in answers.into_iter().zip(1..) {
            assert_eq!(rt.block_on(answer).unwrap(), id);
        }
        // At least 200 ms of changes, in batches kept open for 10 ms.
        let stats = gc.stats();
        assert!(stats.commits >= 6, "a batch outlived its delay: {stats:?}");
    }

    #[test]
    fn a_failed_flush_answers_an_error_and_the_store_stops_writing() {
        let (gc, gate) = gated();
        let rt = runtime();
        let answer = gc.submit(insert(1, None));
        gate.allow.send(Err("disk gone".into())).unwrap();
        let failed = rt.block_on(answer);
        assert!(
            matches!(&failed, Err(StoreError::Sqlite { op: "commit", detail }) if detail.contains("disk gone")),
            "{failed:?}"
        );
        let refused = gc.write(insert(2, None));
        assert!(
            matches!(&refused, Err(StoreError::Sqlite { detail, .. }) if detail.contains("failed flush")),
            "{refused:?}"
        );
        let submitted = rt.block_on(gc.submit(insert(3, None)));
        assert!(submitted.is_err(), "{submitted:?}");
        assert_eq!(gc.stats().aborted, 1);
    }

    #[test]
    fn a_submitted_change_that_fails_or_panics_is_rolled_back_alone() {
        let gc = store();
        let rt = runtime();
        assert_eq!(rt.block_on(gc.submit(insert(1, None))).unwrap(), 1);
        let duplicate = rt.block_on(gc.submit(|conn: &Connection| {
            insert(2, None)(conn)?;
            insert(1, None)(conn)
        }));
        assert!(duplicate.is_err(), "{duplicate:?}");
        let panicked = rt.block_on(gc.submit(|conn: &Connection| -> StoreResult<i64> {
            insert(5, None)(conn)?;
            panic!("a defect in a change");
        }));
        assert!(panicked.is_err(), "{panicked:?}");
        assert_eq!(rt.block_on(gc.submit(insert(3, None))).unwrap(), 3);
        assert_eq!(rows(&gc), [1, 3], "the writing thread lives on");
    }
}
