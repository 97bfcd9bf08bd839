//! The embedded default: one SQLite file in WAL mode. A write returns
//! once its commit has reached the disk: the writing connection commits
//! with `synchronous = NORMAL` and the store flushes the WAL itself before
//! it lets any writer of the batch go ([`group_commit`]).
//!
//! Every write is one change in a transaction begun `IMMEDIATE` (it takes
//! the write lock up front, so two connections — in this process or
//! another — never deadlock upgrading a read lock), and every state change
//! is a single `UPDATE … WHERE key = ? AND state IN (…)`: whichever caller
//! commits first applies it, the others see it applied. Concurrent changes
//! share one commit and one flush ([`group_commit`]); reads use their own
//! connections ([`readers`]); the WAL is checkpointed by a thread of its
//! own, never inside a commit ([`checkpoint`]).

mod checkpoint;
mod group_commit;
mod readers;

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OptionalExtension as _, Params, Row, params};

use self::checkpoint::Checkpointer;
pub use self::group_commit::CommitStats;
use self::group_commit::GroupCommit;
use self::readers::{Reader, Readers};

use super::agents::{
    self, AGENT_COLUMNS, APPROVAL_COLUMNS, Admission, AgentRecord, Approval, ApprovalInput,
    ApprovalKind, ApprovalState, SpendLimit,
};
use super::error::{SqlContext as _, StoreError};
use super::ledger::{self, Charge, ChargeInput, LEDGER_COLUMNS, LedgerEntry};
use super::meters::{self, Meter, Usage};
use super::rows::{
    self, AUDIT_COLUMNS, NOTIFICATION_COLUMNS, ORDER_COLUMNS, REFUND_COLUMNS, to_sql_int,
};
use super::schema;
use super::types::{
    AuditEvent, AuditEventInput, Inserted, NotificationKind, NotificationRecord, Order, OrderPatch,
    OrderState, OrderTerms, PaidNotification, PaymentApplied, Refund, RefundInsert, RefundPatch,
    RefundState, Transition, Verdict,
};
use super::{ConsoleKind, ConsoleRecord, Store, StoreFuture, StoreResult, check_audit};

/// How long a write waits for another connection's lock before failing
/// with `database is locked`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest pause between two requests for WAL mode ([`enter_wal`]).
const MAX_WAL_PAUSE: Duration = Duration::from_millis(50);

/// Prepared statements each connection keeps: more than the store has, so
/// none is parsed twice (rusqlite keeps 16, fewer than the writer runs,
/// and parsing showed up in profiles of the notification path).
const STATEMENT_CACHE: usize = 128;

/// The SQLite store: one writing connection whose concurrent changes are
/// committed together, and a pool of read connections. SQLite itself
/// serialises writers across connections and processes.
#[derive(Debug)]
pub struct SqliteStore {
    writer: GroupCommit,
    readers: Readers,
    /// Held for its thread. Declared last: on drop it checkpoints once
    /// more after the connections above have closed.
    _checkpointer: Option<Checkpointer>,
}

/// The connection settings in force, for checks and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteSettings {
    /// `PRAGMA journal_mode`: `wal` for a file, `memory` in memory.
    pub journal_mode: String,
    /// `PRAGMA synchronous` of the writing connection: 1 (NORMAL) on a
    /// file, whose WAL the store flushes itself before a write returns; 2
    /// (FULL) in memory.
    pub synchronous: i64,
    /// Whether the store flushes the WAL itself before a write returns.
    pub flushes_wal: bool,
    /// `PRAGMA foreign_keys`.
    pub foreign_keys: bool,
    /// `PRAGMA busy_timeout`, in milliseconds.
    pub busy_timeout_ms: i64,
    /// `PRAGMA temp_store` of the writing connection: 2 (MEMORY). Every
    /// change runs in a savepoint, whose journal of the pages it touches
    /// is then a list of small in-memory chunks; by default it is a buffer
    /// of up to 64 KiB allocated per change, which the C allocator hands
    /// back to the system after each batch and faults in again (about
    /// 12,000 page faults a second at 8,000 notifications a second,
    /// measured).
    pub temp_store: i64,
    /// Whether query plans are kept whatever values are bound (see
    /// `stable_plans`).
    pub stable_plans: bool,
    /// The schema version the database is at.
    pub schema_version: i64,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date. Fails if WAL mode or the synchronous level cannot be set,
    /// or if the schema is newer than this build.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let conn = Connection::open(path).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        Self::configure(conn, Some(path))
    }

    /// A private in-memory database, for tests. Not durable: its journal
    /// is in memory, whatever is asked.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(|e| StoreError::Open {
            path: PathBuf::from(":memory:"),
            detail: e.to_string(),
        })?;
        Self::configure(conn, None)
    }

    fn configure(mut conn: Connection, file: Option<&Path>) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).ctx("set busy_timeout")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        stable_plans(&conn)?;
        if file.is_some() {
            let mode = enter_wal(&conn)?;
            require(
                "journal_mode",
                "wal",
                &mode,
                mode.eq_ignore_ascii_case("wal"),
            )?;
        }
        let (level, wanted, number) = match file {
            Some(_) => ("NORMAL", "1 (NORMAL)", 1),
            None => ("FULL", "2 (FULL)", 2),
        };
        conn.pragma_update(None, "synchronous", level)
            .ctx("set synchronous")?;
        let synchronous: i64 = conn
            .pragma_query_one(None, "synchronous")
            .ctx("read synchronous")?;
        require(
            "synchronous",
            wanted,
            &synchronous.to_string(),
            synchronous == number,
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .ctx("set foreign_keys")?;
        let foreign_keys: i64 = conn
            .pragma_query_one(None, "foreign_keys")
            .ctx("read foreign_keys")?;
        require(
            "foreign_keys",
            "1 (ON)",
            &foreign_keys.to_string(),
            foreign_keys == 1,
        )?;
        if file.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .ctx("set wal_autocheckpoint")?;
        }
        // Why: see `SqliteSettings::temp_store`.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .ctx("set temp_store")?;
        schema::migrate(&mut conn)?;
        let flush = file.map(|path| wal_flush(wal_path(path)));
        let writer = GroupCommit::new(conn, flush).map_err(|e| StoreError::Open {
            path: file.map_or_else(|| PathBuf::from(":memory:"), Path::to_path_buf),
            detail: format!("cannot start the flushing thread: {e}"),
        })?;
        Ok(Self {
            writer,
            readers: file.map_or(Readers::Writer, Readers::file),
            _checkpointer: file.map(|path| Checkpointer::start(path.to_path_buf())),
        })
    }

    /// The settings in force on this store's writing connection.
    pub fn settings(&self) -> StoreResult<SqliteSettings> {
        let writer = self.writer.lock();
        let conn = writer.conn();
        let one = |name: &'static str| -> StoreResult<i64> {
            conn.pragma_query_one(None, name).ctx("read pragma")
        };
        Ok(SqliteSettings {
            journal_mode: conn
                .pragma_query_one(None, "journal_mode")
                .ctx("read pragma")?,
            synchronous: one("synchronous")?,
            flushes_wal: writer.flushes_itself(),
            foreign_keys: one("foreign_keys")? == 1,
            busy_timeout_ms: one("busy_timeout")?,
            temp_store: one("temp_store")?,
            stable_plans: conn
                .db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)
                .ctx("read QPSG")?,
            schema_version: conn
                .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                    r.get(0)
                })
                .ctx("read schema version")?,
        })
    }

    /// A connection for one read: it sees the last committed state.
    fn reader(&self) -> StoreResult<Reader<'_>> {
        self.readers.get(&self.writer)
    }

    /// Runs `f` as one change, durable when this returns `Ok`; concurrent
    /// changes share the commit. A change that fails leaves nothing behind.
    fn write<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        self.writer.write(f)
    }
}

/// A verified payment notification's writes: the order paid (when it may
/// be), the audit event when it was, and the notification with its verdict;
/// none of them when the order's terms are not those it was checked
/// against.
fn apply_payment(tx: &Connection, paid: &PaidNotification) -> StoreResult<PaymentApplied> {
    let PaidNotification {
        out_trade_no,
        transaction_id,
        paid_at_ms,
        body,
        at_ms,
        terms,
        audit,
    } = paid;
    let patch = OrderPatch {
        transaction_id: Some(transaction_id.clone()),
        paid_at_ms: Some(*paid_at_ms),
        ..OrderPatch::default()
    };
    let from = [OrderState::Created, OrderState::Pending];
    let cas = cas_order(tx, out_trade_no, &from, OrderState::Paid, &patch, *at_ms, Some(terms))?;
    if let Some(order) = cas.record().filter(|order| order.terms() != *terms) {
        return Ok(PaymentApplied::TermsDiffer(order.clone()));
    }
    let (transition, verdict) = payment_verdict(cas, transaction_id);
    audit_if_applied(tx, &transition, audit.as_ref())?;
    insert_notification_row(
        tx,
        NotificationKind::Payment,
        body,
        *at_ms,
        Some(out_trade_no),
        Some(transaction_id),
        &verdict,
    )?;
    Ok(PaymentApplied::Recorded(transition))
}

/// SQLite's write-ahead log for the database at `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Flushes the WAL at `wal` to the disk. The file is opened for each
/// flush, so a WAL that SQLite truncated or recreated is still the one
/// flushed; on Linux a flush through any descriptor covers every write.
fn wal_flush(wal: PathBuf) -> group_commit::Flush {
    Box::new(move || std::fs::File::open(&wal)?.sync_data())
}

/// Refuses to run unless a pragma took the value the store needs.
fn require(pragma: &'static str, wanted: &'static str, found: &str, ok: bool) -> StoreResult<()> {
    if ok {
        Ok(())
    } else {
        Err(StoreError::PragmaRefused {
            pragma,
            wanted,
            found: found.to_owned(),
        })
    }
}

/// Every row `sql` returns, decoded.
fn query_all<T>(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl Params,
    decode: fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).ctx(op)?;
    let mut rows = stmt.query(params).ctx(op)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().ctx(op)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// The first row `sql` returns, decoded.
fn query_one<T>(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl Params,
    decode: fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    let mut stmt = conn.prepare_cached(sql).ctx(op)?;
    let mut rows = stmt.query(params).ctx(op)?;
    rows.next().ctx(op)?.map(decode).transpose()
}

/// Asks for WAL mode, and waits while another connection is converting
/// the same new file: SQLite then answers `database is locked` at once,
/// without the busy handler (waiting inside could deadlock), so this asks
/// again, for up to [`BUSY_TIMEOUT`] in all.
fn enter_wal(conn: &Connection) -> StoreResult<String> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        let asked = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0));
        match asked {
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_WAL_PAUSE);
            }
            answer => return answer.ctx("set journal_mode"),
        }
    }
}

/// Whether SQLite refused for another connection's lock.
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Query plans that do not depend on the values bound (SQLite's query
/// planner stability guarantee), so a cached statement is never prepared
/// again because a parameter changed. Without it, the compare-and-set on
/// `orders` was parsed and planned anew for every notification (measured).
fn stable_plans(conn: &Connection) -> StoreResult<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .ctx("enable QPSG")?;
    Ok(())
}

/// A JSON array of state names, for `state IN (SELECT value FROM json_each(?))`:
/// one static statement whatever the number of states, and the planner can
/// still walk a `(state, ...)` index with it. For scans over many rows.
fn state_set<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = names.into_iter().map(|n| format!("\"{n}\"")).collect();
    format!("[{}]", quoted.join(","))
}

/// State names as `,a,b,`, for `instr(?, ',' || state || ',') > 0` on a row
/// already found by its key. Names are fixed identifiers without commas, so a
/// match is a whole name. `json_each` there would build a temporary table on
/// every execution: about 5.5 µs of a 12 µs compare-and-set (measured), on the
/// path every notification takes.
fn state_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().fold(String::from(","), |mut list, name| {
        list.push_str(name);
        list.push(',');
        list
    })
}

fn select_order(conn: &Connection, out_trade_no: &str) -> StoreResult<Option<Order>> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE out_trade_no = ?1");
    query_one(conn, "read order", &sql, [out_trade_no], rows::order)
}

fn select_order_by_idempotency(
    conn: &Connection,
    agent_id: &str,
    key: &str,
) -> StoreResult<Option<Order>> {
    let sql =
        format!("SELECT {ORDER_COLUMNS} FROM orders WHERE agent_id = ?1 AND idempotency_key = ?2");
    query_one(conn, "read order", &sql, [agent_id, key], rows::order)
}

fn select_refund(conn: &Connection, out_refund_no: &str) -> StoreResult<Option<Refund>> {
    let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = ?1");
    query_one(conn, "read refund", &sql, [out_refund_no], rows::refund)
}

/// The order already holding `order`'s keys, if any.
fn existing_order(conn: &Connection, order: &Order) -> StoreResult<Option<Order>> {
    if let Some(found) = select_order(conn, &order.out_trade_no)? {
        return Ok(Some(found));
    }
    match (&order.agent_id, &order.idempotency_key) {
        (Some(agent), Some(key)) => select_order_by_idempotency(conn, agent, key),
        _ => Ok(None),
    }
}

fn insert_order_row(conn: &Connection, o: &Order, total_fee: i64) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO orders ({ORDER_COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, 1)"
    );
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.execute(params![
                o.out_trade_no,
                o.mch_id,
                o.appid,
                o.product_id,
                o.quantity,
                total_fee,
                o.fee_type,
                o.sign_type.as_str(),
                o.trade_type,
                o.state.as_str(),
                o.prepay_id,
                o.code_url,
                o.transaction_id,
                o.idempotency_key,
                o.agent_id,
                o.created_at_ms,
                o.updated_at_ms,
                o.expires_at_ms,
                o.paid_at_ms,
            ])
        })
        .ctx("insert order")?;
    Ok(())
}

/// The single compare-and-set on an order, inside the caller's transaction,
/// changing nothing unless the order has `terms` (when given). An order
/// whose terms differ comes back as `AlreadyThere` or `Refused`, unchanged;
/// the caller compares its terms.
fn cas_order(
    conn: &Connection,
    out_trade_no: &str,
    from: &[OrderState],
    to: OrderState,
    patch: &OrderPatch,
    at_ms: i64,
    terms: Option<&OrderTerms>,
) -> StoreResult<Transition<Order>> {
    let total_fee = terms
        .map(|t| to_sql_int(t.total_fee, "total_fee"))
        .transpose()?;
    let updated = query_one(
        conn,
        "transition order",
        &CAS_ORDER_SQL,
        params![
            out_trade_no,
            to.as_str(),
            at_ms,
            patch.prepay_id,
            patch.code_url,
            patch.transaction_id,
            patch.paid_at_ms,
            state_list(from.iter().map(|s| s.as_str())),
            total_fee,
            terms.map(|t| t.fee_type.as_str()),
            terms.map(|t| t.sign_type.as_str()),
        ],
        rows::order,
    )?;
    if updated.is_some() && to == OrderState::Paid {
        ledger::credit_topup_in(conn, out_trade_no, at_ms)?;
    }
    outcome(updated, || select_order(conn, out_trade_no), |o| o.state == to)
}

/// [`cas_order`]'s statement. It returns the order it changed, so a
/// change (the common case: a first delivery) costs no second read.
static CAS_ORDER_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE orders SET state = ?2, updated_at_ms = ?3, version = version + 1,
            prepay_id = COALESCE(?4, prepay_id),
            code_url = COALESCE(?5, code_url),
            transaction_id = COALESCE(?6, transaction_id),
            paid_at_ms = COALESCE(?7, paid_at_ms)
         WHERE out_trade_no = ?1 AND state != ?2
           AND instr(?8, ',' || state || ',') > 0
           AND (?9 IS NULL OR (total_fee = ?9 AND fee_type = ?10 AND sign_type = ?11))
         RETURNING {ORDER_COLUMNS}"
    )
});

/// The single compare-and-set on a refund, inside the caller's transaction.
fn cas_refund(
    conn: &Connection,
    out_refund_no: &str,
    from: &[RefundState],
    to: RefundState,
    patch: &RefundPatch,
    at_ms: i64,
) -> StoreResult<Transition<Refund>> {
    let updated = query_one(
        conn,
        "transition refund",
        &CAS_REFUND_SQL,
        params![
            out_refund_no,
            to.as_str(),
            at_ms,
            patch.refund_id,
            state_list(from.iter().map(|s| s.as_str())),
        ],
        rows::refund,
    )?;
    outcome(updated, || select_refund(conn, out_refund_no), |r| r.state == to)
}

/// [`cas_refund`]'s statement, returning the refund it changed.
static CAS_REFUND_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE refunds SET state = ?2, updated_at_ms = ?3, version = version + 1,
            refund_id = COALESCE(?4, refund_id)
         WHERE out_refund_no = ?1 AND state != ?2
           AND instr(?5, ',' || state || ',') > 0
         RETURNING {REFUND_COLUMNS}"
    )
});

/// What a compare-and-set did: the record it changed, or else the record
/// as it is now (read only then), which says why nothing changed.
fn outcome<T>(
    changed: Option<T>,
    read_current: impl FnOnce() -> StoreResult<Option<T>>,
    is_at_target: impl Fn(&T) -> bool,
) -> StoreResult<Transition<T>> {
    if let Some(record) = changed {
        return Ok(Transition::Applied(record));
    }
    Ok(match read_current()? {
        None => Transition::Missing,
        Some(record) if is_at_target(&record) => Transition::AlreadyThere(record),
        Some(record) => Transition::Refused(record),
    })
}

fn refunded_total_in(conn: &Connection, out_trade_no: &str) -> StoreResult<u64> {
    let counting = RefundState::ALL
        .into_iter()
        .filter(|s| s.counts_against_order())
        .map(RefundState::as_str);
    let total: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(refund_fee), 0) FROM refunds
             WHERE out_trade_no = ?1 AND instr(?2, ',' || state || ',') > 0",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![out_trade_no, state_list(counting)], |r| r.get(0))
        })
        .ctx("sum refunds")?;
    rows::from_sql_int(total, "refunds total")
}

fn insert_notification_row(
    conn: &Connection,
    kind: NotificationKind,
    body: &[u8],
    at_ms: i64,
    out_trade_no: Option<&str>,
    dedupe_key: Option<&str>,
    verdict: &Verdict,
) -> StoreResult<i64> {
    conn.prepare_cached(
        "INSERT INTO notifications (kind, received_at_ms, body, verdict, out_trade_no, dedupe_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| {
        stmt.insert(params![
            kind.as_str(),
            at_ms,
            body,
            verdict.to_stored(),
            out_trade_no,
            dedupe_key,
        ])
    })
    .ctx("record notification")
}

fn insert_audit_row(conn: &Connection, event: &AuditEventInput) -> StoreResult<i64> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at_ms, actor, action, subject, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| {
        stmt.insert(params![
            event.at_ms,
            event.actor,
            event.action,
            event.subject,
            event.outcome,
            event.detail,
        ])
    })
    .ctx("append audit event")
}

/// Appends `audit` when the transition was applied, in the caller's
/// transaction.
fn audit_if_applied<T>(
    conn: &Connection,
    transition: &Transition<T>,
    audit: Option<&AuditEventInput>,
) -> StoreResult<()> {
    if let (true, Some(event)) = (transition.applied(), audit) {
        insert_audit_row(conn, event)?;
    }
    Ok(())
}

/// The verdict on a payment notification after its compare-and-set, and
/// the transition as the caller should see it: an order already paid with
/// the same transaction is a duplicate even if refunds have moved it on.
fn payment_verdict(cas: Transition<Order>, transaction_id: &str) -> (Transition<Order>, Verdict) {
    match cas {
        Transition::Applied(o) => (Transition::Applied(o), Verdict::Accepted),
        Transition::Missing => (
            Transition::Missing,
            Verdict::Rejected("unknown order".to_owned()),
        ),
        Transition::AlreadyThere(o) | Transition::Refused(o) if o.state.is_paid() => {
            let same = o
                .transaction_id
                .as_deref()
                .is_none_or(|t| t == transaction_id);
            if same {
                (Transition::AlreadyThere(o), Verdict::Duplicate)
            } else {
                let reason = "transaction_id differs from the recorded payment".to_owned();
                (Transition::Refused(o), Verdict::Rejected(reason))
            }
        }
        Transition::AlreadyThere(o) | Transition::Refused(o) => {
            let reason = format!("order is {}", o.state);
            (Transition::Refused(o), Verdict::Rejected(reason))
        }
    }
}

/// The order's state as its refunds imply, if it is a paid order.
fn settled_state(conn: &Connection, order: &Order) -> StoreResult<Option<OrderState>> {
    if !order.state.is_paid() {
        return Ok(None);
    }
    let count = |states: &[RefundState]| -> StoreResult<i64> {
        conn.prepare_cached(
            "SELECT COUNT(*) FROM refunds
             WHERE out_trade_no = ?1 AND instr(?2, ',' || state || ',') > 0",
        )
        .and_then(|mut stmt| {
            stmt.query_row(
                params![
                    order.out_trade_no,
                    state_list(states.iter().map(|s| s.as_str()))
                ],
                |r| r.get(0),
            )
        })
        .ctx("count refunds")
    };
    let state = if count(&[RefundState::Requested, RefundState::Processing])? > 0 {
        OrderState::Refunding
    } else if count(&[RefundState::Succeeded])? > 0 {
        OrderState::Refunded
    } else {
        OrderState::Paid
    };
    Ok(Some(state))
}

fn settle_order_in(
    conn: &Connection,
    out_trade_no: &str,
    at_ms: i64,
) -> StoreResult<Option<Order>> {
    let Some(order) = select_order(conn, out_trade_no)? else {
        return Ok(None);
    };
    let Some(to) = settled_state(conn, &order)? else {
        return Ok(Some(order));
    };
    let paid = [
        OrderState::Paid,
        OrderState::Refunding,
        OrderState::Refunded,
    ];
    let cas = cas_order(conn, out_trade_no, &paid, to, &OrderPatch::default(), at_ms, None)?;
    Ok(cas.record().cloned())
}

/// The verdict on a refund outcome after its compare-and-set.
fn refund_verdict(cas: &Transition<Refund>, refund_id: &str) -> Verdict {
    match cas {
        Transition::Applied(_) => Verdict::Accepted,
        Transition::Missing => Verdict::Rejected("unknown refund".to_owned()),
        Transition::AlreadyThere(r) if r.refund_id.as_deref().is_none_or(|id| id == refund_id) => {
            Verdict::Duplicate
        }
        Transition::AlreadyThere(_) => {
            Verdict::Rejected("refund_id differs from the recorded refund".to_owned())
        }
        Transition::Refused(r) => Verdict::Rejected(format!("refund is {}", r.state)),
    }
}

impl Store for SqliteStore {
    /// Reads of a file use their own WAL connections, which never wait for
    /// the writer; reads of a store in memory share the writer's lock.
    fn reads_are_local(&self) -> bool {
        matches!(self.readers, Readers::File { .. })
    }

    fn commit_stats(&self) -> Option<CommitStats> {
        Some(self.writer.stats())
    }

    fn insert_order(&self, order: &Order) -> StoreResult<Inserted<Order>> {
        let total_fee = to_sql_int(order.total_fee, "total_fee")?;
        self.write(|tx| {
            if let Some(found) = existing_order(tx, order)? {
                return Ok(Inserted::Exists(found));
            }
            insert_order_row(tx, order, total_fee)?;
            Ok(Inserted::New)
        })
    }

    fn order(&self, out_trade_no: &str) -> StoreResult<Option<Order>> {
        select_order(&*self.reader()?, out_trade_no)
    }

    fn fetch_order(&self, out_trade_no: &str) -> StoreFuture<Option<Order>> {
        Box::pin(std::future::ready(self.order(out_trade_no)))
    }

    fn transition_order(
        &self,
        out_trade_no: &str,
        from: &[OrderState],
        to: OrderState,
        patch: OrderPatch,
        at_ms: i64,
        audit: Option<&AuditEventInput>,
    ) -> StoreResult<Transition<Order>> {
        audit.map(check_audit).transpose()?;
        self.write(|tx| {
            let cas = cas_order(tx, out_trade_no, from, to, &patch, at_ms, None)?;
            audit_if_applied(tx, &cas, audit)?;
            Ok(cas)
        })
    }

    fn orders_in_state(
        &self,
        states: &[OrderState],
        older_than_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Order>> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders
             WHERE state IN (SELECT value FROM json_each(?1)) AND updated_at_ms < ?2
             ORDER BY updated_at_ms, out_trade_no LIMIT ?3"
        );
        let set = state_set(states.iter().map(|s| s.as_str()));
        query_all(
            &*self.reader()?,
            "list orders",
            &sql,
            params![set, older_than_ms, limit],
            rows::order,
        )
    }

    fn insert_refund(&self, refund: &Refund) -> StoreResult<RefundInsert> {
        let fee = to_sql_int(refund.refund_fee, "refund_fee")?;
        self.write(|tx| {
            if let Some(found) = select_refund(tx, &refund.out_refund_no)? {
                return Ok(RefundInsert::Exists(found));
            }
            let Some(order) = select_order(tx, &refund.out_trade_no)? else {
                return Ok(RefundInsert::OrderMissing);
            };
            if refund.state.counts_against_order() {
                let refunded = refunded_total_in(tx, &refund.out_trade_no)?;
                let after = refunded.checked_add(refund.refund_fee);
                if after.is_none_or(|after| after > order.total_fee) {
                    return Ok(RefundInsert::ExceedsOrder {
                        total_fee: order.total_fee,
                        refunded,
                    });
                }
            }
            let sql = format!(
                "INSERT INTO refunds ({REFUND_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)"
            );
            tx.prepare_cached(&sql)
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        refund.out_refund_no,
                        refund.out_trade_no,
                        fee,
                        refund.state.as_str(),
                        refund.refund_id,
                        refund.created_at_ms,
                        refund.updated_at_ms,
                    ])
                })
                .ctx("insert refund")?;
            Ok(RefundInsert::New)
        })
    }

    fn refund(&self, out_refund_no: &str) -> StoreResult<Option<Refund>> {
        select_refund(&*self.reader()?, out_refund_no)
    }

    fn transition_refund(
        &self,
        out_refund_no: &str,
        from: &[RefundState],
        to: RefundState,
        patch: RefundPatch,
        at_ms: i64,
    ) -> StoreResult<Transition<Refund>> {
        self.write(|tx| cas_refund(tx, out_refund_no, from, to, &patch, at_ms))
    }

    fn refunded_total(&self, out_trade_no: &str) -> StoreResult<u64> {
        refunded_total_in(&*self.reader()?, out_trade_no)
    }

    fn record_notification(
        &self,
        kind: NotificationKind,
        body: &[u8],
        at_ms: i64,
        out_trade_no: Option<&str>,
        dedupe_key: Option<&str>,
        verdict: &Verdict,
    ) -> StoreResult<i64> {
        self.write(|tx| {
            insert_notification_row(tx, kind, body, at_ms, out_trade_no, dedupe_key, verdict)
        })
    }

    fn notifications(&self, limit: u32, offset: u32) -> StoreResult<Vec<NotificationRecord>> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications ORDER BY id LIMIT ?1 OFFSET ?2"
        );
        query_all(
            &*self.reader()?,
            "list notifications",
            &sql,
            params![limit, offset],
            rows::notification,
        )
    }

    fn append_audit(&self, event: &AuditEventInput) -> StoreResult<i64> {
        check_audit(event)?;
        self.write(|tx| insert_audit_row(tx, event))
    }

    fn audit(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let sql =
            format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        query_all(
            &*self.reader()?,
            "read audit log",
            &sql,
            params![after_seq, limit],
            rows::audit_event,
        )
    }

    fn apply_paid_notification(&self, paid: PaidNotification) -> StoreFuture<PaymentApplied> {
        if let Some(Err(refused)) = paid.audit.as_ref().map(check_audit) {
            return Box::pin(std::future::ready(Err(refused)));
        }
        Box::pin(self.writer.submit(move |tx| apply_payment(tx, &paid)))
    }

    fn refunds_in_state(
        &self,
        states: &[RefundState],
        older_than_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Refund>> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds
             WHERE state IN (SELECT value FROM json_each(?1)) AND updated_at_ms < ?2
             ORDER BY updated_at_ms, out_refund_no LIMIT ?3"
        );
        let set = state_set(states.iter().map(|s| s.as_str()));
        query_all(
            &*self.reader()?,
            "list refunds",
            &sql,
            params![set, older_than_ms, limit],
            rows::refund,
        )
    }

    fn apply_refund_outcome(
        &self,
        out_refund_no: &str,
        refund_id: &str,
        to: RefundState,
        body: Option<&[u8]>,
        at_ms: i64,
        audit: Option<&AuditEventInput>,
    ) -> StoreResult<Transition<Refund>> {
        audit.map(check_audit).transpose()?;
        let patch = RefundPatch {
            refund_id: Some(refund_id.to_owned()),
        };
        let from = [RefundState::Requested, RefundState::Processing];
        self.write(|tx| {
            let cas = cas_refund(tx, out_refund_no, &from, to, &patch, at_ms)?;
            audit_if_applied(tx, &cas, audit)?;
            if let Some(refund) = cas.record() {
                settle_order_in(tx, &refund.out_trade_no, at_ms)?;
            }
            if let Some(body) = body {
                let verdict = refund_verdict(&cas, refund_id);
                let dedupe = format!("{refund_id}:{}", to.as_str());
                let order = cas.record().map(|r| r.out_trade_no.as_str());
                insert_notification_row(
                    tx,
                    NotificationKind::Refund,
                    body,
                    at_ms,
                    order,
                    Some(&dedupe),
                    &verdict,
                )?;
            }
            Ok(cas)
        })
    }

    fn settle_order(&self, out_trade_no: &str, at_ms: i64) -> StoreResult<Option<Order>> {
        self.write(|tx| settle_order_in(tx, out_trade_no, at_ms))
    }

    fn insert_agent(&self, agent: &AgentRecord) -> StoreResult<bool> {
        self.write(|tx| {
            let inserted = tx
                .prepare_cached(&format!(
                    "INSERT OR IGNORE INTO agents ({AGENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ))
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        agent.agent_id,
                        agent.name,
                        agent.token_sha256,
                        agent.grant_json,
                        agent.created_at_ms,
                        agent.expires_at_ms,
                        agent.revoked_at_ms,
                    ])
                })
                .ctx("insert agent")?;
            Ok(inserted == 1)
        })
    }

    fn agent_by_token(&self, token_sha256: &str) -> StoreResult<Option<AgentRecord>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE token_sha256 = ?1");
        query_one(
            &*self.reader()?,
            "read agent",
            &sql,
            params![token_sha256],
            agents::agent_row,
        )
    }

    fn agent(&self, agent_id: &str) -> StoreResult<Option<AgentRecord>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE agent_id = ?1");
        query_one(
            &*self.reader()?,
            "read agent",
            &sql,
            params![agent_id],
            agents::agent_row,
        )
    }

    fn agents(&self) -> StoreResult<Vec<AgentRecord>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY created_at_ms, agent_id");
        query_all(&*self.reader()?, "list agents", &sql, [], agents::agent_row)
    }

    fn revoke_agent(&self, agent_id: &str, at_ms: i64) -> StoreResult<Option<AgentRecord>> {
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE agents SET revoked_at_ms = ?2 WHERE agent_id = ?1 AND revoked_at_ms IS NULL",
            )
            .and_then(|mut stmt| stmt.execute(params![agent_id, at_ms]))
            .ctx("revoke agent")?;
            let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE agent_id = ?1");
            query_one(tx, "read agent", &sql, params![agent_id], agents::agent_row)
        })
    }

    fn agent_spend(&self, agent_id: &str, since_ms: i64) -> StoreResult<u64> {
        agents::spent_since(&*self.reader()?, agent_id, since_ms)
    }

    fn admit_agent_payment(
        &self,
        order: &Order,
        approval: Option<&ApprovalInput>,
        limit: Option<SpendLimit>,
    ) -> StoreResult<Admission> {
        let total_fee = to_sql_int(order.total_fee, "total_fee")?;
        self.write(|tx| {
            if let Some(found) = existing_order(tx, order)? {
                return Ok(Admission::OrderExists(found));
            }
            if let Some(found) =
                agents::select_approval(tx, ApprovalKind::Payment, &order.out_trade_no)?
            {
                return Ok(Admission::ApprovalExists(found));
            }
            if let (Some(limit), Some(agent)) = (limit, order.agent_id.as_deref()) {
                let spent = agents::spent_since(tx, agent, limit.since_ms)?;
                let after = spent.checked_add(order.total_fee);
                if after.is_none_or(|after| after > limit.limit_fen) {
                    return Ok(Admission::OverBudget { spent_fen: spent });
                }
            }
            match approval {
                Some(approval) => {
                    let id = agents::insert_approval_row(tx, approval)?;
                    let stored = agents::select_approval_by_id(tx, id)?.ok_or_else(|| {
                        StoreError::corrupt("approvals", "an inserted approval is missing")
                    })?;
                    Ok(Admission::AwaitingApproval(stored))
                }
                None => {
                    insert_order_row(tx, order, total_fee)?;
                    Ok(Admission::Ordered)
                }
            }
        })
    }

    fn insert_approval(&self, approval: &ApprovalInput) -> StoreResult<Inserted<Approval>> {
        self.write(|tx| {
            if let Some(found) = agents::select_approval(tx, approval.kind, &approval.subject)? {
                return Ok(Inserted::Exists(found));
            }
            agents::insert_approval_row(tx, approval)?;
            Ok(Inserted::New)
        })
    }

    fn approval(&self, kind: ApprovalKind, subject: &str) -> StoreResult<Option<Approval>> {
        agents::select_approval(&*self.reader()?, kind, subject)
    }

    fn approval_by_id(&self, id: i64) -> StoreResult<Option<Approval>> {
        agents::select_approval_by_id(&*self.reader()?, id)
    }

    fn approvals(&self, state: Option<ApprovalState>, limit: u32) -> StoreResult<Vec<Approval>> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE ?1 IS NULL OR state = ?1 ORDER BY id LIMIT ?2"
        );
        query_all(
            &*self.reader()?,
            "list approvals",
            &sql,
            params![state.map(ApprovalState::as_str), limit],
            agents::approval_row,
        )
    }

    fn decide_approval(
        &self,
        id: i64,
        to: ApprovalState,
        decided_by: &str,
        reason: Option<&str>,
        at_ms: i64,
    ) -> StoreResult<Transition<Approval>> {
        self.write(|tx| agents::decide(tx, id, to, decided_by, reason, at_ms))
    }

    fn register_topup(
        &self,
        out_trade_no: &str,
        payer_id: &str,
        agent_id: Option<&str>,
        at_ms: i64,
    ) -> StoreResult<String> {
        self.write(|tx| ledger::register_topup_in(tx, out_trade_no, payer_id, agent_id, at_ms))
    }

    fn charge(&self, charge: &ChargeInput) -> StoreResult<Charge> {
        self.write(|tx| ledger::charge_in(tx, charge))
    }

    fn balance(&self, payer_id: &str) -> StoreResult<u64> {
        ledger::balance_in(&*self.reader()?, payer_id)
    }

    fn ledger(&self, payer_id: &str, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
        let sql = format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger WHERE payer_id = ?1 ORDER BY seq DESC LIMIT ?2"
        );
        query_all(
            &*self.reader()?,
            "read ledger",
            &sql,
            params![payer_id, limit],
            ledger::entry_row,
        )
    }

    fn open_meter(
        &self,
        meter_id: &str,
        agent_id: &str,
        payer_id: &str,
        at_ms: i64,
    ) -> StoreResult<Meter> {
        self.write(|tx| meters::open_meter_in(tx, meter_id, agent_id, payer_id, at_ms))
    }

    fn add_usage(
        &self,
        meter_id: &str,
        reference: &str,
        amount_fen: u64,
        note: Option<&str>,
        at_ms: i64,
    ) -> StoreResult<Usage> {
        self.write(|tx| meters::add_usage_in(tx, meter_id, reference, amount_fen, note, at_ms))
    }

    fn meter(&self, meter_id: &str) -> StoreResult<Option<Meter>> {
        meters::select_meter(&*self.reader()?, meter_id)
    }

    fn settle_meter(
        &self,
        meter_id: &str,
        out_trade_no: &str,
        at_ms: i64,
    ) -> StoreResult<Option<Meter>> {
        self.write(|tx| meters::settle_in(tx, meter_id, out_trade_no, at_ms))
    }

    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO leases (name, holder, expires_at_ms) VALUES (?1, ?2, ?4)
                 ON CONFLICT (name) DO UPDATE
                    SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms
                  WHERE leases.holder = excluded.holder OR leases.expires_at_ms <= ?3",
            )
            .and_then(|mut stmt| stmt.execute(params![name, holder, now_ms, until_ms]))
            .ctx("acquire lease")?;
            let current: String = tx
                .prepare_cached("SELECT holder FROM leases WHERE name = ?1")
                .and_then(|mut stmt| stmt.query_row(params![name], |r| r.get(0)))
                .ctx("read lease")?;
            Ok(current == holder)
        })
    }

    fn latest_audit_seq(&self) -> StoreResult<i64> {
        self.reader()?
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM audit_log")
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
            .ctx("read the audit log's head")
    }

    fn audit_about(&self, subject: &str, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM (
                SELECT {AUDIT_COLUMNS} FROM audit_log WHERE subject = ?1 ORDER BY seq DESC LIMIT ?2
             ) ORDER BY seq"
        );
        query_all(
            &*self.reader()?,
            "read audit log",
            &sql,
            params![subject, limit],
            rows::audit_event,
        )
    }

    fn order_refunds(&self, out_trade_no: &str) -> StoreResult<Vec<Refund>> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE out_trade_no = ?1
             ORDER BY created_at_ms, out_refund_no"
        );
        query_all(
            &*self.reader()?,
            "read refunds",
            &sql,
            params![out_trade_no],
            rows::refund,
        )
    }

    fn put_console_record(&self, record: &ConsoleRecord, now_ms: i64) -> StoreResult<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "DELETE FROM console_records WHERE kind = ?1 AND expires_at_ms <= ?2",
            )
            .and_then(|mut stmt| stmt.execute(params![record.kind.as_str(), now_ms]))
            .ctx("purge console records")?;
            tx.prepare_cached(
                "INSERT INTO console_records (kind, key, value, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, key) DO UPDATE
                    SET value = excluded.value, expires_at_ms = excluded.expires_at_ms",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    record.kind.as_str(),
                    record.key,
                    record.value,
                    record.expires_at_ms
                ])
            })
            .ctx("store console record")?;
            Ok(())
        })
    }

    fn console_record(
        &self,
        kind: ConsoleKind,
        key: &str,
        now_ms: i64,
    ) -> StoreResult<Option<String>> {
        query_one(
            &*self.reader()?,
            "read console record",
            "SELECT value FROM console_records
             WHERE kind = ?1 AND key = ?2 AND (expires_at_ms IS NULL OR expires_at_ms > ?3)",
            params![kind.as_str(), key, now_ms],
            |row| row.get(0).ctx("read console record"),
        )
    }

    fn take_console_record(
        &self,
        kind: ConsoleKind,
        key: &str,
        now_ms: i64,
    ) -> StoreResult<Option<String>> {
        self.write(|tx| {
            let taken: Option<(String, Option<i64>)> = tx
                .prepare_cached(
                    "DELETE FROM console_records WHERE kind = ?1 AND key = ?2
                     RETURNING value, expires_at_ms",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![kind.as_str(), key], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .ctx("take console record")?;
            Ok(taken
                .and_then(|(value, expires)| expires.is_none_or(|at| at > now_ms).then_some(value)))
        })
    }

    fn console_records(
        &self,
        kind: ConsoleKind,
        now_ms: i64,
    ) -> StoreResult<Vec<(String, String)>> {
        query_all(
            &*self.reader()?,
            "read console records",
            "SELECT key, value FROM console_records
             WHERE kind = ?1 AND (expires_at_ms IS NULL OR expires_at_ms > ?2) ORDER BY key",
            params![kind.as_str(), now_ms],
            |row| {
                Ok((
                    row.get(0).ctx("read console record")?,
                    row.get(1).ctx("read console record")?,
                ))
            },
        )
    }

    fn approvals_to_carry_out(&self, limit: u32) -> StoreResult<Vec<Approval>> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals a
             WHERE a.state = 'approved'
               AND ((a.kind = 'payment'
                     AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.out_trade_no = a.subject))
                 OR (a.kind = 'refund'
                     AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.out_refund_no = a.subject)))
             ORDER BY a.id LIMIT ?1"
        );
        query_all(
            &*self.reader()?,
            "list approvals",
            &sql,
            params![limit],
            agents::approval_row,
        )
    }
}
