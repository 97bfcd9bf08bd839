//! The durable store, one suite run against both backends — real SQLite
//! files and a real Redis server — so they keep the same semantics:
//! idempotent inserts, compare-and-set transitions (also under concurrency,
//! through one store and through several connections), durability across
//! reopen, the audit log, refunds, reconciliation queries, agents, budgets,
//! approvals, the ledger and meters. SQLite's migrations and pragmas, and
//! Redis's durability check, are tested on their own.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use wxpay::store::{
    Admission, AgentRecord, ApprovalInput, ApprovalKind, ApprovalState, AuditEventInput, Charge,
    ChargeInput, ConsoleKind, ConsoleRecord, Inserted, NotificationKind, Order, OrderPatch,
    OrderState, OrderTerms, PaidNotification, PaymentApplied, Refund, RefundInsert, RefundPatch,
    RefundState, SCHEMA_VERSION, SpendLimit, SqliteStore, Store, StoreError, Transition, Usage,
    Verdict,
};
use wxpay_guest::SignType;

const T0: i64 = 1_700_000_000_000;
const BODY: &[u8] = b"<xml><return_code><![CDATA[SUCCESS]]></return_code></xml>";

fn order(out_trade_no: &str, state: OrderState, updated_at_ms: i64) -> Order {
    Order {
        out_trade_no: out_trade_no.to_owned(),
        mch_id: "10000100".to_owned(),
        appid: "wxd930ea5d5a258f4f".to_owned(),
        product_id: Some("coffee".to_owned()),
        quantity: 1,
        total_fee: 100,
        fee_type: "CNY".to_owned(),
        sign_type: SignType::HmacSha256,
        trade_type: "NATIVE".to_owned(),
        state,
        prepay_id: None,
        code_url: None,
        transaction_id: None,
        idempotency_key: None,
        agent_id: None,
        created_at_ms: updated_at_ms,
        updated_at_ms,
        expires_at_ms: updated_at_ms + 7_200_000,
        paid_at_ms: None,
        version: 0,
    }
}

fn refund(out_refund_no: &str, out_trade_no: &str, fee: u64) -> Refund {
    Refund {
        out_refund_no: out_refund_no.to_owned(),
        out_trade_no: out_trade_no.to_owned(),
        refund_fee: fee,
        state: RefundState::Requested,
        refund_id: None,
        created_at_ms: T0,
        updated_at_ms: T0,
        version: 0,
    }
}

fn audit_input(action: &str) -> AuditEventInput {
    AuditEventInput {
        at_ms: T0,
        actor: "agent-1".to_owned(),
        action: action.to_owned(),
        subject: "order-1".to_owned(),
        outcome: "ok".to_owned(),
        detail: r#"{"total_fee":100}"#.to_owned(),
    }
}

/// Where a test's records live. `open` connects again, as another thread
/// or process would.
enum Backend {
    Sqlite(tempfile::TempDir),
    Redis(String),
}

impl Backend {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    fn redis() -> Self {
        Self::Redis(support::redis::unique_prefix())
    }

    fn open(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(dir) => Arc::new(SqliteStore::open(sqlite_path(dir)).expect("open")),
            Self::Redis(prefix) => Arc::new(support::redis::open(prefix)),
        }
    }
}

/// Runs `work(i, store)` on `threads` threads at once, each with its own
/// connection (as separate processes would have), started together.
fn on_connections<T: Send>(
    backend: &Backend,
    threads: usize,
    work: impl Fn(usize, &dyn Store) -> T + Sync,
) -> Vec<T> {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    // A thread that cannot open still reaches the barrier,
                    // so the others are not left waiting for it forever.
                    let store = std::panic::catch_unwind(|| backend.open());
                    barrier.wait();
                    let store = store.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    work(i, &*store)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

fn sqlite_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("wxpay.db")
}

/// Runs each named test function once per backend, as `sqlite::name` and
/// `redis::name`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $test() {
                super::$test(&super::Backend::sqlite());
            })*
        }
        mod redis {
            $(#[test]
            fn $test() {
                super::$test(&super::Backend::redis());
            })*
        }
    };
}

on_both_backends!(
    insert_is_idempotent_on_out_trade_no,
    insert_is_idempotent_on_agent_and_key,
    amounts_beyond_the_store_range_are_a_typed_error,
    transitions_are_compare_and_set,
    payment_notification_outcomes_are_recorded_with_verdicts,
    a_payment_checked_against_other_terms_writes_nothing,
    notifications_keep_raw_bytes_and_page_oldest_first,
    concurrent_duplicate_notifications_through_one_store_apply_once,
    concurrent_duplicate_notifications_through_separate_connections_apply_once,
    paid_notifications_from_tasks_and_threads_apply_once_together,
    an_applied_payment_survives_reopening,
    the_audit_log_is_ordered,
    refunds_are_idempotent_and_never_exceed_the_order,
    orders_in_state_lists_the_oldest_stale_orders_first,
    refund_outcomes_settle_the_order_and_record_the_notification_once,
    a_failed_refund_puts_the_order_back_to_paid,
    refunds_in_state_lists_the_oldest_open_refunds_first,
    agents_are_found_by_token_and_revoked_once,
    admission_holds_a_budget_against_concurrent_payments,
    approvals_are_decided_once_and_carried_out,
    top_ups_are_credited_once_and_charges_never_overdraw,
    meters_accumulate_until_settled,
    audit_events_are_appended_with_the_change_and_only_then,
    a_lease_has_one_holder_until_it_expires,
    console_records_expire_and_one_time_records_are_taken_once,
    expired_console_records_are_purged_by_the_next_put_of_their_kind,
    the_audit_head_is_the_newest_seq,
    the_audit_log_is_read_by_subject,
    an_orders_refunds_are_listed_oldest_first,
    a_fetched_order_is_the_stored_one,
);

/// The terms of every order [`order`] makes.
fn terms() -> OrderTerms {
    order("-", OrderState::Created, T0).terms()
}

/// The transition of a payment applied to an order with its terms.
fn recorded(applied: PaymentApplied) -> Transition {
    match applied {
        PaymentApplied::Recorded(transition) => transition,
        PaymentApplied::TermsDiffer(order) => panic!("terms differ: {order:?}"),
    }
}

/// The callback's write for `out_trade_no`, checked against the order's
/// terms (those [`order`] gives when it is not stored), awaited on this
/// thread.
fn pay(
    store: &dyn Store,
    out_trade_no: &str,
    transaction_id: &str,
    paid_at_ms: i64,
    at_ms: i64,
    audit: Option<&AuditEventInput>,
) -> Result<Transition, StoreError> {
    pay_with_terms(
        store,
        PaidNotification {
            out_trade_no: out_trade_no.into(),
            transaction_id: transaction_id.into(),
            paid_at_ms,
            body: BODY.to_vec(),
            at_ms,
            terms: store
                .order(out_trade_no)
                .expect("read order")
                .map_or_else(terms, |o| o.terms()),
            audit: audit.cloned(),
        },
    )
    .map(recorded)
}

fn pay_with_terms(store: &dyn Store, paid: PaidNotification) -> Result<PaymentApplied, StoreError> {
    futures::executor::block_on(store.apply_paid_notification(paid))
}

/// `each` payments of order `o-1` from each of `threads` threads, started
/// together, through one store.
fn pay_from_threads(store: &Arc<dyn Store>, threads: usize, each: usize) -> Vec<Transition> {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (store, barrier) = (Arc::clone(store), &barrier);
                s.spawn(move || {
                    barrier.wait();
                    (0..each)
                        .map(|i| {
                            pay(&*store, "o-1", "tx-1", T0, T0 + i as i64, None).expect("apply")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    })
}

fn insert_new(store: &dyn Store, o: &Order) {
    match store.insert_order(o).expect("insert order") {
        Inserted::New => {}
        Inserted::Exists(found) => panic!("{} already stored: {found:?}", o.out_trade_no),
    }
}

fn stored(store: &dyn Store, out_trade_no: &str) -> Order {
    store
        .order(out_trade_no)
        .expect("read order")
        .unwrap_or_else(|| panic!("{out_trade_no} is not stored"))
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("raw connection")
}

// --- opening and migrations ------------------------------------------------

#[test]
fn migrations_apply_once_and_reopen_is_idempotent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wxpay.db");
    {
        let store = SqliteStore::open(&path).expect("create");
        insert_new(&store, &order("o-1", OrderState::Created, T0));
    }
    for _ in 0..2 {
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(
            store.settings().expect("settings").schema_version,
            SCHEMA_VERSION
        );
        assert_eq!(stored(&store, "o-1").state, OrderState::Created);
    }
    let rows: i64 = raw(&path)
        .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
        .expect("count migrations");
    assert_eq!(rows, SCHEMA_VERSION, "each migration is recorded once");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wxpay.db");
    drop(SqliteStore::open(&path).expect("create"));
    raw(&path)
        .execute(
            "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?1, 0)",
            [SCHEMA_VERSION + 1],
        )
        .expect("pretend a newer build migrated");
    match SqliteStore::open(&path) {
        Err(StoreError::SchemaTooNew { found, known }) => {
            assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

/// Gateways that start together on a new file race to turn it into a WAL
/// database (here, connections on threads, as separate processes would
/// open); SQLite answers the losers `database is locked` without waiting,
/// and none of them may fail to open for it.
#[test]
fn connections_opening_a_new_database_at_once_all_open() {
    const ROUNDS: usize = 25;
    const CONNECTIONS: usize = 12;
    for _ in 0..ROUNDS {
        let backend = Backend::sqlite();
        let heads = on_connections(&backend, CONNECTIONS, |_, store| {
            store.latest_audit_seq().expect("audit head")
        });
        assert_eq!(heads, vec![0; CONNECTIONS]);
    }
}

#[test]
fn wal_and_a_flush_before_every_answer_are_in_force() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wxpay.db");
    let store = SqliteStore::open(&path).expect("open");
    let settings = store.settings().expect("settings");
    assert_eq!(settings.journal_mode, "wal");
    assert_eq!(
        settings.synchronous, 1,
        "1 is NORMAL: COMMIT does not flush"
    );
    assert!(settings.flushes_wal, "so the store flushes the WAL itself");
    assert!(settings.foreign_keys);
    assert!(settings.busy_timeout_ms >= 1000, "{settings:?}");
    assert_eq!(
        settings.temp_store, 2,
        "2 is MEMORY: savepoint journals in small chunks"
    );
    assert!(
        settings.stable_plans,
        "statements are not planned again per value"
    );
    // WAL is a property of the file: another connection sees it too.
    let mode: String = raw(&path)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
}

#[test]
fn the_wal_is_checkpointed_in_the_background_not_by_commits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wxpay.db");
    let store = SqliteStore::open(&path).expect("open");
    std::thread::sleep(std::time::Duration::from_millis(600));
    let before = std::fs::metadata(&path).expect("db file").len();
    for i in 0..400 {
        insert_new(
            &store,
            &order(&format!("ckpt-{i}"), OrderState::Created, T0),
        );
    }
    let wal = dir.path().join("wxpay.db-wal");
    assert!(
        std::fs::metadata(&wal).expect("WAL").len() > 0,
        "commits went to the WAL"
    );
    // 400 small orders are far below SQLite's own threshold (1000 pages),
    // so only the store's thread can have copied them into the database.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&path).expect("db file").len() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file never grew: no checkpoint ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(store);
    let reopened = SqliteStore::open(&path).expect("reopen");
    assert!(reopened.order("ckpt-399").expect("read").is_some());
}

// --- inserts -----------------------------------------------------------------

fn insert_is_idempotent_on_out_trade_no(backend: &Backend) {
    let store = backend.open();
    let store = &*store;
    let first = order("o-1", OrderState::Created, T0);
    insert_new(store, &first);
    let mut again = order("o-1", OrderState::Pending, T0 + 5);
    again.total_fee = 999;
    match store.insert_order(&again).expect("insert again") {
        Inserted::Exists(found) => {
            assert_eq!(
                found.total_fee, 100,
                "the stored order is returned unchanged"
            );
            assert_eq!(found.state, OrderState::Created);
            assert_eq!(found.version, 1, "inserted at version 1 whatever was given");
        }
        Inserted::New => panic!("a second order under o-1 was stored"),
    }
}

fn insert_is_idempotent_on_agent_and_key(backend: &Backend) {
    let store = backend.open();
    let store = &*store;
    let keyed = |no: &str, agent: &str| Order {
        agent_id: Some(agent.to_owned()),
        idempotency_key: Some("key-1".to_owned()),
        ..order(no, OrderState::Created, T0)
    };
    insert_new(store, &keyed("o-1", "agent-a"));
    match store
        .insert_order(&keyed("o-2", "agent-a"))
        .expect("insert")
    {
        Inserted::Exists(found) => assert_eq!(found.out_trade_no, "o-1"),
        Inserted::New => panic!("the same agent and key made a second order"),
    }
    assert!(store.order("o-2").expect("read").is_none());
    // The key is per agent, and an order without an agent never collides.
    insert_new(store, &keyed("o-3", "agent-b"));
    let unowned = |no: &str| Order {
        idempotency_key: Some("key-1".to_owned()),
        ..order(no, OrderState::Created, T0)
    };
    insert_new(store, &unowned("o-4"));
    insert_new(store, &unowned("o-5"));
}

fn amounts_beyond_the_store_range_are_a_typed_error(backend: &Backend) {
    let store = backend.open();
    let store = &*store;
    let mut huge = order("o-1", OrderState::Created, T0);
    huge.total_fee = u64::MAX;
    match store.insert_order(&huge) {
        Err(StoreError::AmountOutOfRange { field }) => assert_eq!(field, "total_fee"),
        other => panic!("expected AmountOutOfRange, got {other:?}"),
    }
    assert!(
        store.order("o-1").expect("read").is_none(),
        "nothing written"
    );
}

// --- transitions -------------------------------------------------------------

fn transitions_are_compare_and_set(backend: &Backend) {
    let store = backend.open();
    let store = &*store;
    insert_new(store, &order("o-1", OrderState::Created, T0));
    let issued = OrderPatch {
        prepay_id: Some("wx-prepay-1".to_owned()),
        code_url: Some("weixin://wxpay/bizpayurl?pr=1".to_owned()),
        ..OrderPatch::default()
    };
    let created = [OrderState::Created];

    match store.transition_order("o-1", &created, OrderState::Pending, issued, T0 + 1, None) {
        Ok(Transition::Applied(o)) => {
            assert_eq!(o.state, OrderState::Pending);
            assert_eq!(o.version, 2);
            assert_eq!(o.updated_at_ms, T0 + 1);
            assert_eq!(o.prepay_id.as_deref(), Some("wx-prepay-1"));
        }
        other => panic!("expected Applied, got {other:?}"),
    }

    // Again, even with another patch and `to` among `from`: nothing changes.
    let other_patch = OrderPatch {
        prepay_id: Some("wx-prepay-2".to_owned()),
        ..OrderPatch::default()
    };
    let either = [OrderState::Created, OrderState::Pending];
    match store.transition_order(
        "o-1",
        &either,
        OrderState::Pending,
        other_patch,
        T0 + 2,
        None,
    ) {
        Ok(Transition::AlreadyThere(o)) => {
            assert_eq!((o.version, o.updated_at_ms), (2, T0 + 1));
            assert_eq!(o.prepay_id.as_deref(), Some("wx-prepay-1"));
        }
        other => panic!("expected AlreadyThere, got {other:?}"),
    }

    let refused = store.transition_order(
        "o-1",
        &created,
        OrderState::Closed,
        OrderPatch::default(),
        T0 + 3,
        None,
    );
    match refused {
        Ok(Transition::Refused(o)) => assert_eq!((o.state, o.version), (OrderState::Pending, 2)),
        other => panic!("expected Refused, got {other:?}"),
    }

    let missing = store.transition_order(
        "nope",
        &created,
        OrderState::Pending,
        OrderPatch::default(),
        T0,
        None,
    );
    assert_eq!(missing.expect("transition"), Transition::Missing);
    assert_eq!(stored(store, "o-1").version, 2);
}

fn payment_notification_outcomes_are_recorded_with_verdicts(backend: &Backend) {
    let store = backend.open();
    let store = &*store;
    insert_new(store, &order("paid", OrderState::Pending, T0));
    insert_new(store, &order("closed", OrderState::Closed, T0));

    let first = pay(store, "paid", "tx-1", T0 + 10, T0 + 11, None);
    match first.expect("apply") {
        Transition::Applied(o) => {
            assert_eq!(o.state, OrderState::Paid);
            assert_eq!(o.transaction_id.as_deref(), Some("tx-1"));
            assert_eq!(o.paid_at_ms, Some(T0 + 10));
        }
        other => panic!("expected Applied, got {other:?}"),
    }
    // A refund moves the order on; the same notification is still a duplicate.
    let to_refunding = store.transition_order(
        "paid",
        &[OrderState::Paid],
        OrderState::Refunding,
        OrderPatch::default(),
        T0 + 20,
        None,
    );
    assert!(to_refunding.expect("refunding").applied());
    let again = pay(store, "paid", "tx-1", T0 + 10, T0 + 30, None);
    assert!(
        matches!(again, Ok(Transition::AlreadyThere(_))),
        "{again:?}"
    );
    let other_tx = pay(store, "paid", "tx-2", T0 + 10, T0 + 31, None);
    assert!(
        matches!(other_tx, Ok(Transition::Refused(_))),
        "{other_tx:?}"
    );
    let closed = pay(store, "closed", "tx-3", T0, T0 + 32, None);
    assert!(matches!(closed, Ok(Transition::Refused(_))), "{closed:?}");
    let unknown = pay(store, "ghost", "tx-4", T0, T0 + 33, None);
    assert_eq!(unknown.expect("apply"), Transition::Missing);

    let records = store.notifications(10, 0).expect("notifications");
    let verdicts: Vec<String> = records.iter().map(|n| n.verdict.to_stored()).collect();
    assert_eq!(
        verdicts,
        [
            "accepted",
            "duplicate",
            "rejected:transaction_id differs from the recorded payment",
            "rejected:order is closed",
            "rejected:unknown order",
        ]
    );
    assert!(records.iter().all(|n| n.kind == NotificationKind::Payment));
    assert!(records.iter().all(|n| n.body == BODY));
    assert_eq!(records[4].out_trade_no.as_deref(), Some("ghost"));
    assert_eq!(records[0].dedupe_key.as_deref(), Some("tx-1"));
    assert_eq!(
        stored(store, "paid").transaction_id.as_deref(),
        Some("tx-1")
    );
}

fn a_payment_checked_against_other_terms_writes_nothing(backend: &Backend) {
    // The store pays an order only if it has the terms the notification
    // was checked against; otherwise it returns the order as it is and
    // records nothing, so the gateway can check the notification against it.
    let store = backend.open();
    let store = &*store;
    insert_new(store, &order("o-1", OrderState::Pending, T0));
    let before = stored(store, "o-1");
    let audit = audit_input("notification.payment");
    let paid = |terms: OrderTerms| PaidNotification {
        out_trade_no: "o-1".into(),
        transaction_id: "tx-1".into(),
        paid_at_ms: T0,
        body: BODY.to_vec(),
        at_ms: T0 + 1,
        terms,
        audit: Some(audit.clone()),
    };
    let other_terms = [
        OrderTerms {
            total_fee: 1,
            ..terms()
        },
        OrderTerms {
            fee_type: "USD".into(),
            ..terms()
        },
        OrderTerms {
            sign_type: SignType::Md5,
            ..terms()
        },
    ];
    for other in other_terms {
        let applied = pay_with_terms(store, paid(other.clone())).expect("apply");
        assert_eq!(
            applied,
            PaymentApplied::TermsDiffer(before.clone()),
            "{other:?}"
        );
    }
    assert_eq!(stored(store, "o-1"), before, "the order is unchanged");
    assert!(
        store
            .notifications(10, 0)
            .expect("notifications")
            .is_empty()
    );
    assert!(store.audit(0, 10).expect("audit").is_empty());

    let applied = pay_with_terms(store, paid(terms())).expect("apply");
    assert!(recorded(applied).applied());
    assert_eq!(store.notifications(10, 0).expect("notifications").len(), 1);
    assert_eq!(store.audit(0, 10).expect("audit").len(), 1);
    let again = pay_with_terms(
        store,
        paid(OrderTerms {
            total_fee: 1,
            ..terms()
        }),
    );
    assert!(
        matches!(again, Ok(PaymentApplied::TermsDiffer(ref o)) if o.state == OrderState::Paid),
        "a paid order's terms are still compared: {again:?}"
    );
    assert_eq!(store.notifications(10, 0).expect("notifications").len(), 1);
}

fn notifications_keep_raw_bytes_and_page_oldest_first(backend: &Backend) {
    let store = backend.open();
    let store = &*store;
    let body = [0xff_u8, 0x00, b'<', 0xfe];
    let rejected = Verdict::Rejected("signature does not match".to_owned());
    for i in 0..5 {
        let id = store
            .record_notification(
                NotificationKind::Refund,
                &body,
                T0 + i,
                None,
                None,
                &rejected,
            )
            .expect("record");
        assert_eq!(id, i + 1);
    }
    let page = store.notifications(2, 3).expect("page");
    let ids: Vec<i64> = page.iter().map(|n| n.id).collect();
    assert_eq!(ids, [4, 5]);
    assert_eq!(page[0].body, body);
    assert_eq!(page[0].verdict, rejected);
    assert_eq!(page[0].received_at_ms, T0 + 3);
}

#[test]
fn recorded_notifications_cannot_be_rewritten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wxpay.db");
    let store = SqliteStore::open(&path).expect("open");
    store
        .record_notification(
            NotificationKind::Payment,
            BODY,
            T0,
            Some("o-1"),
            None,
            &Verdict::Accepted,
        )
        .expect("record");
    let rewrite = raw(&path).execute("UPDATE notifications SET verdict = 'duplicate'", []);
    assert!(rewrite.is_err(), "{rewrite:?}");
    assert_eq!(
        store.notifications(1, 0).expect("read")[0].verdict,
        Verdict::Accepted
    );
}

// --- concurrency and durability ----------------------------------------------

/// Counts (applied, already there, anything else) over all results.
fn tally(results: &[Transition]) -> (usize, usize, usize) {
    let applied = results.iter().filter(|t| t.applied()).count();
    let there = results
        .iter()
        .filter(|t| matches!(t, Transition::AlreadyThere(_)))
        .count();
    (applied, there, results.len() - applied - there)
}

fn assert_paid_once(store: &dyn Store, results: &[Transition], total: usize) {
    assert_eq!(tally(results), (1, total - 1, 0));
    let o = stored(store, "o-1");
    assert_eq!((o.state, o.version), (OrderState::Paid, 2), "bumped once");
    let records = store.notifications(u32::MAX, 0).expect("notifications");
    assert_eq!(records.len(), total, "every notification recorded");
    let accepted = records.iter().filter(|n| n.verdict == Verdict::Accepted);
    assert_eq!(accepted.count(), 1);
    assert!(
        records
            .iter()
            .all(|n| matches!(n.verdict, Verdict::Accepted | Verdict::Duplicate))
    );
}

fn concurrent_duplicate_notifications_through_one_store_apply_once(backend: &Backend) {
    const THREADS: usize = 8;
    const EACH: usize = 50;
    let store = backend.open();
    insert_new(&*store, &order("o-1", OrderState::Pending, T0));
    let results = pay_from_threads(&store, THREADS, EACH);
    assert_paid_once(&*store, &results, THREADS * EACH);
}

fn concurrent_duplicate_notifications_through_separate_connections_apply_once(backend: &Backend) {
    // Each thread has its own connection, as separate processes would: the
    // compare-and-set is the backend's, not a mutex in this process.
    const THREADS: usize = 4;
    const EACH: usize = 25;
    insert_new(&*backend.open(), &order("o-1", OrderState::Pending, T0));
    let results: Vec<Transition> = on_connections(backend, THREADS, |_, store| {
        (0..EACH)
            .map(|_| pay(store, "o-1", "tx-1", T0, T0, None).expect("apply"))
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    assert_paid_once(&*backend.open(), &results, THREADS * EACH);
}

fn paid_notifications_from_tasks_and_threads_apply_once_together(backend: &Backend) {
    // Futures spawned on a runtime and futures awaited on plain threads
    // share one compare-and-set: one pays, the rest are duplicates, every
    // one is recorded, and only the paying one (if a task) audits.
    const TASKS: usize = 60;
    const THREADS: usize = 4;
    const EACH: usize = 10;
    let store = backend.open();
    insert_new(&*store, &order("o-1", OrderState::Pending, T0));
    let paid = |i: usize| PaidNotification {
        out_trade_no: "o-1".into(),
        transaction_id: "tx-1".into(),
        paid_at_ms: T0,
        body: BODY.to_vec(),
        at_ms: T0 + i as i64,
        terms: terms(),
        audit: Some(audit_input("notification.payment")),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let futures: Vec<_> = (0..TASKS)
        .map(|i| runtime.spawn(store.apply_paid_notification(paid(i))))
        .collect();
    let blocking = pay_from_threads(&store, THREADS, EACH);
    let mut results = runtime.block_on(async {
        let mut results = Vec::new();
        for future in futures {
            results.push(recorded(future.await.expect("task").expect("apply")));
        }
        results
    });
    let audited = results.iter().any(Transition::applied);
    results.extend(blocking);
    assert_paid_once(&*store, &results, TASKS + THREADS * EACH);
    let audit = store.audit(0, 100).expect("audit");
    assert_eq!(audit.len(), usize::from(audited), "{audit:?}");
    let refused = runtime.block_on(store.apply_paid_notification(PaidNotification {
        audit: Some(AuditEventInput {
            detail: "not json".into(),
            ..audit_input("notification.payment")
        }),
        ..paid(0)
    }));
    assert!(
        refused.is_err(),
        "a malformed audit event is refused up front"
    );
}

fn a_fetched_order_is_the_stored_one(backend: &Backend) {
    // The callback's read, as a future: awaited on a plain thread and as a
    // task on a runtime, it gives what the blocking read gives.
    let store = backend.open();
    insert_new(&*store, &order("o-1", OrderState::Pending, T0));
    let expected = store.order("o-1").expect("read");
    assert!(expected.is_some());
    assert_eq!(
        futures::executor::block_on(store.fetch_order("o-1")).expect("fetch"),
        expected
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime");
    let task = runtime.spawn(store.fetch_order("o-1"));
    assert_eq!(
        runtime.block_on(task).expect("task").expect("fetch"),
        expected
    );
    assert_eq!(
        futures::executor::block_on(store.fetch_order("o-2")).expect("fetch"),
        None
    );
}

fn an_applied_payment_survives_reopening(backend: &Backend) {
    {
        let store = backend.open();
        insert_new(&*store, &order("o-1", OrderState::Pending, T0));
        let applied = pay(&*store, "o-1", "tx-1", T0 + 5, T0 + 6, None);
        assert!(applied.expect("apply").applied());
        store
            .append_audit(&audit_input("order.paid"))
            .expect("audit");
    }
    let store = backend.open();
    let o = stored(&*store, "o-1");
    assert_eq!(o.state, OrderState::Paid);
    assert_eq!(o.transaction_id.as_deref(), Some("tx-1"));
    assert_eq!(o.paid_at_ms, Some(T0 + 5));
    assert_eq!(store.notifications(10, 0).expect("notifications").len(), 1);
    assert_eq!(store.audit(0, 10).expect("audit").len(), 1);
}

// --- audit log ---------------------------------------------------------------

fn console_record(
    kind: ConsoleKind,
    key: &str,
    value: &str,
    expires: Option<i64>,
) -> ConsoleRecord {
    ConsoleRecord {
        kind,
        key: key.to_owned(),
        value: value.to_owned(),
        expires_at_ms: expires,
    }
}

fn console_records_expire_and_one_time_records_are_taken_once(backend: &Backend) {
    let store = backend.open();
    let now = 1_000_000;
    for record in [
        console_record(ConsoleKind::Invite, "b", "{\"n\":2}", Some(now + 10)),
        console_record(ConsoleKind::Invite, "a", "{\"n\":1}", None),
        console_record(ConsoleKind::Invite, "old", "{}", Some(now)),
        console_record(ConsoleKind::Session, "a", "{\"session\":true}", None),
    ] {
        store.put_console_record(&record, now).expect("put");
    }
    let read = |kind, key: &str, at| store.console_record(kind, key, at).expect("read");
    assert_eq!(
        read(ConsoleKind::Invite, "a", now).as_deref(),
        Some("{\"n\":1}")
    );
    assert_eq!(
        read(ConsoleKind::Session, "a", now).as_deref(),
        Some("{\"session\":true}"),
        "kinds are separate key spaces"
    );
    assert_eq!(
        read(ConsoleKind::Invite, "old", now),
        None,
        "expired at its instant"
    );
    assert_eq!(
        read(ConsoleKind::Invite, "b", now + 9).as_deref(),
        Some("{\"n\":2}")
    );
    assert_eq!(read(ConsoleKind::Invite, "b", now + 10), None);

    let listed = store
        .console_records(ConsoleKind::Invite, now)
        .expect("list");
    assert_eq!(
        listed,
        [
            ("a".to_owned(), "{\"n\":1}".to_owned()),
            ("b".to_owned(), "{\"n\":2}".to_owned())
        ],
        "live records in key order"
    );

    store
        .put_console_record(
            &console_record(ConsoleKind::Invite, "a", "{\"n\":3}", None),
            now,
        )
        .expect("replace");
    let taken = on_connections(backend, 4, |_, store| {
        store
            .take_console_record(ConsoleKind::Invite, "a", now)
            .expect("take")
    });
    let winners: Vec<_> = taken.iter().flatten().collect();
    assert_eq!(
        winners,
        ["{\"n\":3}"],
        "exactly one taker gets it: {taken:?}"
    );
    assert_eq!(read(ConsoleKind::Invite, "a", now), None);
    assert_eq!(
        store
            .take_console_record(ConsoleKind::Invite, "b", now + 10)
            .expect("take"),
        None,
        "an expired record cannot be taken"
    );
    assert_eq!(
        store
            .console_records(ConsoleKind::Invite, now)
            .expect("list"),
        [],
        "taking removes it, expired or not"
    );
}

/// Whether the backend still keeps the record, expired or not.
fn console_record_is_kept(backend: &Backend, kind: ConsoleKind, key: &str) -> bool {
    match backend {
        Backend::Sqlite(dir) => {
            raw(&sqlite_path(dir))
                .query_row(
                    "SELECT count(*) FROM console_records WHERE kind = ?1 AND key = ?2",
                    [kind.as_str(), key],
                    |r| r.get::<_, i64>(0),
                )
                .expect("count")
                == 1
        }
        Backend::Redis(prefix) => {
            let mut conn = ::redis::Client::open(support::redis::url())
                .and_then(|c| c.get_connection())
                .expect("connect");
            ::redis::cmd("EXISTS")
                .arg(format!("{prefix}console:{}:{key}", kind.as_str()))
                .query::<i64>(&mut conn)
                .expect("exists")
                == 1
        }
    }
}

fn expired_console_records_are_purged_by_the_next_put_of_their_kind(backend: &Backend) {
    let store = backend.open();
    let now = 1_000_000;
    for record in [
        console_record(ConsoleKind::Ceremony, "abandoned", "{}", Some(now + 5)),
        console_record(ConsoleKind::Session, "other-kind", "{}", Some(now + 5)),
        console_record(ConsoleKind::Ceremony, "open", "{}", Some(now + 50)),
    ] {
        store.put_console_record(&record, now).expect("put");
    }
    assert!(console_record_is_kept(
        backend,
        ConsoleKind::Ceremony,
        "abandoned"
    ));
    let later = console_record(ConsoleKind::Ceremony, "new", "{}", Some(now + 60));
    store.put_console_record(&later, now + 5).expect("put");
    assert!(
        !console_record_is_kept(backend, ConsoleKind::Ceremony, "abandoned"),
        "expired at the put's instant: gone"
    );
    assert!(console_record_is_kept(
        backend,
        ConsoleKind::Ceremony,
        "open"
    ));
    assert!(console_record_is_kept(
        backend,
        ConsoleKind::Ceremony,
        "new"
    ));
    assert!(
        console_record_is_kept(backend, ConsoleKind::Session, "other-kind"),
        "another kind waits for its own next put"
    );
}

fn the_audit_head_is_the_newest_seq(backend: &Backend) {
    let store = backend.open();
    assert_eq!(store.latest_audit_seq().expect("head"), 0, "an empty log");
    let first = store.append_audit(&audit_input("a")).expect("append");
    let second = store.append_audit(&audit_input("b")).expect("append");
    assert!(second > first);
    assert_eq!(store.latest_audit_seq().expect("head"), second);
}

fn about(subject: &str, action: &str) -> AuditEventInput {
    AuditEventInput {
        subject: subject.to_owned(),
        ..audit_input(action)
    }
}

fn the_audit_log_is_read_by_subject(backend: &Backend) {
    let store = backend.open();
    for (subject, action) in [
        ("pay-1", "order.create"),
        ("pay-2", "order.create"),
        ("pay-1", "notification.payment"),
        ("pay-10", "order.create"),
        ("pay-1", "refund.create"),
    ] {
        store.append_audit(&about(subject, action)).expect("append");
    }
    let actions = |subject: &str, limit| -> Vec<String> {
        store
            .audit_about(subject, limit)
            .expect("about")
            .into_iter()
            .map(|e| {
                assert_eq!(e.subject, subject);
                e.action
            })
            .collect()
    };
    assert_eq!(
        actions("pay-1", 10),
        ["order.create", "notification.payment", "refund.create"],
        "oldest first, and not pay-10's"
    );
    assert_eq!(
        actions("pay-1", 2),
        ["notification.payment", "refund.create"],
        "the newest `limit`"
    );
    assert!(actions("pay-1", 0).is_empty());
    assert!(actions("pay-3", 10).is_empty());
}

fn an_orders_refunds_are_listed_oldest_first(backend: &Backend) {
    let store = backend.open();
    let store = &*store;
    insert_new(store, &order("o-1", OrderState::Paid, T0));
    insert_new(store, &order("o-2", OrderState::Paid, T0));
    let later = Refund {
        created_at_ms: T0 + 5,
        ..refund("r-a", "o-1", 10)
    };
    for r in [later, refund("r-b", "o-1", 20), refund("r-c", "o-2", 30)] {
        assert_eq!(store.insert_refund(&r).expect("insert"), RefundInsert::New);
    }
    let listed: Vec<String> = store
        .order_refunds("o-1")
        .expect("refunds")
        .into_iter()
        .map(|r| r.out_refund_no)
        .collect();
    assert_eq!(listed, ["r-b", "r-a"], "o-1's only, oldest first");
    assert!(store.order_refunds("o-3").expect("refunds").is_empty());
}

fn the_audit_log_is_ordered(backend: &Backend) {
    let store = backend.open();
    let seqs: Vec<i64> = ["order.create", "order.pay", "refund.create"]
        .into_iter()
        .map(|action| store.append_audit(&audit_input(action)).expect("append"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    let all = store.audit(0, 10).expect("audit");
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["order.create", "order.pay", "refund.create"]);
    assert_eq!(all[0].detail, r#"{"total_fee":100}"#);
    let after_first = store.audit(seqs[0], 1).expect("audit");
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].seq, seqs[1]);
    assert!(store.audit(seqs[2], 10).expect("audit").is_empty());

    let bad = AuditEventInput {
        detail: "not json".to_owned(),
        ..audit_input("x")
    };
    match store.append_audit(&bad) {
        Err(StoreError::InvalidInput { field, .. }) => assert_eq!(field, "detail"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert_eq!(store.audit(0, 10).expect("audit"), all, "nothing appended");
}

#[test]
fn the_sqlite_audit_log_refuses_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(sqlite_path(&dir)).expect("open");
    store
        .append_audit(&audit_input("order.create"))
        .expect("append");
    let before = store.audit(0, 10).expect("audit");
    let conn = raw(&sqlite_path(&dir));
    for sql in [
        "UPDATE audit_log SET outcome = 'forged'",
        "DELETE FROM audit_log WHERE seq = 1",
        "DELETE FROM audit_log",
    ] {
        match conn.execute(sql, []) {
            Err(e) => assert!(e.to_string().contains("append-only"), "{sql}: {e}"),
            Ok(n) => panic!("{sql} changed {n} rows"),
        }
    }
    assert_eq!(store.audit(0, 10).expect("audit"), before, "unchanged");
}

// --- refunds -----------------------------------------------------------------

fn refunds_are_idempotent_and_never_exceed_the_order(backend: &Backend) {
    let store = backend.open();
    let store = &*store;
    insert_new(store, &order("o-1", OrderState::Paid, T0));

    assert_eq!(
        store.insert_refund(&refund("r-1", "o-1", 30)).expect("r-1"),
        RefundInsert::New
    );
    match store
        .insert_refund(&refund("r-1", "o-1", 50))
        .expect("r-1 again")
    {
        RefundInsert::Exists(r) => assert_eq!((r.refund_fee, r.version), (30, 1)),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(
        store.insert_refund(&refund("r-2", "o-1", 80)).expect("r-2"),
        RefundInsert::ExceedsOrder {
            total_fee: 100,
            refunded: 30
        }
    );
    assert_eq!(
        store.insert_refund(&refund("r-3", "o-1", 70)).expect("r-3"),
        RefundInsert::New
    );
    assert_eq!(store.refunded_total("o-1").expect("total"), 100);
    assert_eq!(
        store
            .insert_refund(&refund("r-4", "ghost", 1))
            .expect("r-4"),
        RefundInsert::OrderMissing
    );
    assert!(matches!(
        store.insert_refund(&refund("r-5", "o-1", u64::MAX)),
        Err(StoreError::AmountOutOfRange {
            field: "refund_fee"
        })
    ));

    let accepted = RefundPatch {
        refund_id: Some("wx-refund-1".to_owned()),
    };
    let requested = [RefundState::Requested];
    match store.transition_refund("r-1", &requested, RefundState::Processing, accepted, T0 + 1) {
        Ok(Transition::Applied(r)) => {
            assert_eq!((r.state, r.version), (RefundState::Processing, 2));
            assert_eq!(r.refund_id.as_deref(), Some("wx-refund-1"));
        }
        other => panic!("expected Applied, got {other:?}"),
    }
    let again = store.transition_refund(
        "r-1",
        &requested,
        RefundState::Processing,
        RefundPatch::default(),
        T0 + 2,
    );
    assert!(
        matches!(again, Ok(Transition::AlreadyThere(_))),
        "{again:?}"
    );
    let failed = store.transition_refund(
        "r-3",
        &requested,
        RefundState::Failed,
        RefundPatch::default(),
        T0 + 3,
    );
    assert!(failed.expect("fail r-3").applied());
    assert_eq!(
        store.refunded_total("o-1").expect("total"),
        30,
        "failed refunds do not count"
    );
    let missing = store.transition_refund(
        "r-9",
        &requested,
        RefundState::Failed,
        RefundPatch::default(),
        T0,
    );
    assert_eq!(missing.expect("missing"), Transition::Missing);
    assert_eq!(
        store.refund("r-1").expect("read").map(|r| r.state),
        Some(RefundState::Processing)
    );
}

// --- reconciliation ----------------------------------------------------------

fn orders_in_state_lists_the_oldest_stale_orders_first(backend: &Backend) {
    let store = backend.open();
    let store = &*store;
    insert_new(store, &order("p-new", OrderState::Pending, T0 + 900));
    insert_new(store, &order("p-old", OrderState::Pending, T0 + 100));
    insert_new(store, &order("c-old", OrderState::Created, T0 + 200));
    insert_new(store, &order("paid", OrderState::Paid, T0));
    insert_new(store, &order("p-mid", OrderState::Pending, T0 + 300));

    let states = [OrderState::Created, OrderState::Pending];
    let listed = store.orders_in_state(&states, T0 + 500, 10).expect("list");
    let names: Vec<&str> = listed.iter().map(|o| o.out_trade_no.as_str()).collect();
    assert_eq!(names, ["p-old", "c-old", "p-mid"]);

    let limited = store.orders_in_state(&states, T0 + 500, 2).expect("list");
    assert_eq!(limited.len(), 2);
    let none = store.orders_in_state(&[], T0 + 500, 10).expect("list");
    assert!(none.is_empty());

    // Touching an order moves it out of the stale window.
    let touched = store.transition_order(
        "p-old",
        &[OrderState::Pending],
        OrderState::Closed,
        OrderPatch::default(),
        T0 + 1000,
        None,
    );
    assert!(touched.expect("close").applied());
    let listed = store.orders_in_state(&states, T0 + 500, 10).expect("list");
    assert_eq!(listed.len(), 2);
}

#[test]
fn state_names_round_trip() {
    for s in OrderState::ALL {
        assert_eq!(OrderState::parse(s.as_str()), Some(s));
    }
    for s in RefundState::ALL {
        assert_eq!(RefundState::parse(s.as_str()), Some(s));
    }
    assert_eq!(OrderState::parse("PAID"), None);
    for v in [
        Verdict::Accepted,
        Verdict::Duplicate,
        Verdict::Rejected("bad sign".to_owned()),
    ] {
        assert_eq!(Verdict::parse(&v.to_stored()), Some(v));
    }
    assert_eq!(Verdict::parse("rejected"), None);
}

fn refund_outcomes_settle_the_order_and_record_the_notification_once(backend: &Backend) {
    let store = backend.open();
    let store = &*store;
    let mut paid = order("PAID-1", OrderState::Paid, T0);
    paid.total_fee = 300;
    insert_new(store, &paid);
    for no in ["R-A", "R-B"] {
        assert_eq!(
            store
                .insert_refund(&refund(no, "PAID-1", 100))
                .expect("insert"),
            RefundInsert::New
        );
    }
    let order = store
        .settle_order("PAID-1", T0 + 1)
        .expect("settle")
        .expect("order");
    assert_eq!(order.state, OrderState::Refunding, "refunds in flight");

    let first = store
        .apply_refund_outcome(
            "R-A",
            "5030001",
            RefundState::Succeeded,
            Some(BODY),
            T0 + 2,
            None,
        )
        .expect("apply");
    assert!(first.applied());
    assert_eq!(
        stored(store, "PAID-1").state,
        OrderState::Refunding,
        "R-B is still in flight"
    );
    let again = store
        .apply_refund_outcome(
            "R-A",
            "5030001",
            RefundState::Succeeded,
            Some(BODY),
            T0 + 3,
            None,
        )
        .expect("apply");
    assert!(matches!(again, Transition::AlreadyThere(_)), "{again:?}");
    let other_id = store
        .apply_refund_outcome(
            "R-A",
            "5039999",
            RefundState::Succeeded,
            Some(BODY),
            T0 + 3,
            None,
        )
        .expect("apply");
    assert!(matches!(other_id, Transition::AlreadyThere(_)));
    let closed_late = store
        .apply_refund_outcome(
            "R-A",
            "5030001",
            RefundState::Closed,
            Some(BODY),
            T0 + 3,
            None,
        )
        .expect("apply");
    assert!(
        matches!(closed_late, Transition::Refused(_)),
        "an ended refund stays ended"
    );

    let closed = store
        .apply_refund_outcome("R-B", "5030002", RefundState::Closed, None, T0 + 4, None)
        .expect("apply");
    assert!(closed.applied());
    assert_eq!(stored(store, "PAID-1").state, OrderState::Refunded);
    assert_eq!(store.refunded_total("PAID-1").expect("total"), 100);

    let verdicts: Vec<_> = store
        .notifications(10, 0)
        .expect("notifications")
        .into_iter()
        .map(|n| (n.kind, n.verdict))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (NotificationKind::Refund, Verdict::Accepted),
            (NotificationKind::Refund, Verdict::Duplicate),
            (
                NotificationKind::Refund,
                Verdict::Rejected("refund_id differs from the recorded refund".into())
            ),
            (
                NotificationKind::Refund,
                Verdict::Rejected("refund is succeeded".into())
            ),
        ],
        "the outcome by refundquery (no body) records no notification"
    );
    let missing = store
        .apply_refund_outcome("R-NONE", "1", RefundState::Succeeded, Some(BODY), T0, None)
        .expect("apply");
    assert_eq!(missing, Transition::Missing);
}

fn a_failed_refund_puts_the_order_back_to_paid(backend: &Backend) {
    let store = backend.open();
    let store = &*store;
    insert_new(store, &order("PAID-2", OrderState::Paid, T0));
    assert_eq!(
        store
            .insert_refund(&refund("R-C", "PAID-2", 100))
            .expect("insert"),
        RefundInsert::New
    );
    store.settle_order("PAID-2", T0).expect("settle");
    let failed = store
        .apply_refund_outcome("R-C", "5030003", RefundState::Failed, None, T0 + 1, None)
        .expect("apply");
    assert!(failed.applied());
    assert_eq!(stored(store, "PAID-2").state, OrderState::Paid);
    assert_eq!(store.refunded_total("PAID-2").expect("total"), 0);
    let unpaid = order("OPEN-2", OrderState::Pending, T0);
    insert_new(store, &unpaid);
    let untouched = store
        .settle_order("OPEN-2", T0 + 2)
        .expect("settle")
        .expect("order");
    assert_eq!(
        (untouched.state, untouched.version),
        (OrderState::Pending, 1)
    );
}

fn refunds_in_state_lists_the_oldest_open_refunds_first(backend: &Backend) {
    let store = backend.open();
    let store = &*store;
    let mut paid = order("PAID-3", OrderState::Paid, T0);
    paid.total_fee = 1_000;
    insert_new(store, &paid);
    for (no, at) in [("R-NEW", T0 + 50), ("R-OLD", T0 + 10), ("R-MID", T0 + 30)] {
        let mut r = refund(no, "PAID-3", 10);
        r.updated_at_ms = at;
        assert_eq!(store.insert_refund(&r).expect("insert"), RefundInsert::New);
    }
    let settled = store
        .apply_refund_outcome("R-MID", "1", RefundState::Succeeded, None, T0 + 31, None)
        .expect("apply");
    assert!(settled.applied());
    let open = [RefundState::Requested, RefundState::Processing];
    let listed: Vec<_> = store
        .refunds_in_state(&open, T0 + 100, 10)
        .expect("list")
        .into_iter()
        .map(|r| r.out_refund_no)
        .collect();
    assert_eq!(listed, ["R-OLD", "R-NEW"]);
    let older: Vec<_> = store
        .refunds_in_state(&open, T0 + 20, 10)
        .expect("list")
        .into_iter()
        .map(|r| r.out_refund_no)
        .collect();
    assert_eq!(older, ["R-OLD"]);
    assert_eq!(
        store
            .refunds_in_state(&open, T0 + 100, 1)
            .expect("list")
            .len(),
        1
    );
}

// --- agents, budgets and approvals ---------------------------------------------

fn agent_record(agent_id: &str, token_sha256: &str) -> AgentRecord {
    AgentRecord {
        agent_id: agent_id.to_owned(),
        name: format!("{agent_id} name"),
        token_sha256: token_sha256.to_owned(),
        grant_json: r#"{"caps":["create"]}"#.to_owned(),
        created_at_ms: T0,
        expires_at_ms: Some(T0 + 1_000),
        revoked_at_ms: None,
    }
}

fn agents_are_found_by_token_and_revoked_once(backend: &Backend) {
    let store = backend.open();
    assert!(
        store
            .insert_agent(&agent_record("a-2", "hash-2"))
            .expect("insert")
    );
    assert!(
        store
            .insert_agent(&agent_record("a-1", "hash-1"))
            .expect("insert")
    );
    assert!(
        !store
            .insert_agent(&agent_record("a-1", "hash-9"))
            .expect("insert"),
        "the id is taken"
    );
    assert!(
        !store
            .insert_agent(&agent_record("a-9", "hash-1"))
            .expect("insert"),
        "the token hash is taken"
    );
    let found = store
        .agent_by_token("hash-1")
        .expect("read")
        .expect("found");
    assert_eq!(found, agent_record("a-1", "hash-1"));
    assert!(store.agent_by_token("hash-9").expect("read").is_none());
    let ids: Vec<String> = store
        .agents()
        .expect("list")
        .into_iter()
        .map(|a| a.agent_id)
        .collect();
    assert_eq!(ids, ["a-1", "a-2"], "oldest first, then by id");
    let revoked = store.revoke_agent("a-1", T0 + 5).expect("revoke");
    assert_eq!(revoked.and_then(|a| a.revoked_at_ms), Some(T0 + 5));
    let again = store.revoke_agent("a-1", T0 + 9).expect("revoke");
    assert_eq!(
        again.and_then(|a| a.revoked_at_ms),
        Some(T0 + 5),
        "the first revocation stands"
    );
    assert!(store.revoke_agent("ghost", T0).expect("revoke").is_none());
}

fn agent_order(no: &str, agent: &str, fee: u64) -> Order {
    Order {
        agent_id: Some(agent.to_owned()),
        idempotency_key: Some(format!("key-{no}")),
        total_fee: fee,
        ..order(no, OrderState::Created, T0)
    }
}

fn approval_input(kind: ApprovalKind, subject: &str, amount_fen: u64) -> ApprovalInput {
    ApprovalInput {
        kind,
        subject: subject.to_owned(),
        agent_id: "agent-b".to_owned(),
        amount_fen,
        request_json: "{}".to_owned(),
        requested_at_ms: T0,
    }
}

fn admission_holds_a_budget_against_concurrent_payments(backend: &Backend) {
    const TRIES: usize = 12;
    let limit = SpendLimit {
        since_ms: T0 - 1,
        limit_fen: 500,
    };
    let outcomes: Vec<Admission> = on_connections(backend, TRIES, |i, store| {
        store
            .admit_agent_payment(
                &agent_order(&format!("B-{i}"), "agent-b", 100),
                None,
                Some(limit),
            )
            .expect("admit")
    });
    let ordered = outcomes
        .iter()
        .filter(|a| matches!(a, Admission::Ordered))
        .count();
    assert_eq!(ordered, 5, "500 fen buys exactly five 100-fen payments");
    assert!(
        outcomes.iter().all(|a| matches!(
            a,
            Admission::Ordered | Admission::OverBudget { spent_fen: 500 }
        )),
        "{outcomes:?}"
    );
    let store = backend.open();
    assert_eq!(
        store.agent_spend("agent-b", limit.since_ms).expect("spend"),
        500
    );

    // A closed order frees its budget; a pending approval holds it.
    let first_paid = (0..TRIES)
        .map(|i| format!("B-{i}"))
        .find(|no| store.order(no).expect("read").is_some())
        .expect("an admitted order");
    let closed = store.transition_order(
        &first_paid,
        &[OrderState::Created],
        OrderState::Closed,
        OrderPatch::default(),
        T0 + 1,
        None,
    );
    assert!(closed.expect("close").applied());
    let held = approval_input(ApprovalKind::Payment, "B-BIG", 100);
    match store
        .admit_agent_payment(
            &agent_order("B-BIG", "agent-b", 100),
            Some(&held),
            Some(limit),
        )
        .expect("admit")
    {
        Admission::AwaitingApproval(a) => {
            assert_eq!((a.state, a.amount_fen), (ApprovalState::Pending, 100));
        }
        other => panic!("expected AwaitingApproval, got {other:?}"),
    }
    assert!(
        store.order("B-BIG").expect("read").is_none(),
        "no order yet"
    );
    assert_eq!(
        store.agent_spend("agent-b", limit.since_ms).expect("spend"),
        500
    );
    let again = store
        .admit_agent_payment(
            &agent_order("B-BIG", "agent-b", 100),
            Some(&held),
            Some(limit),
        )
        .expect("admit");
    assert!(matches!(again, Admission::ApprovalExists(_)), "{again:?}");
    let over = store
        .admit_agent_payment(&agent_order("B-MORE", "agent-b", 1), None, Some(limit))
        .expect("admit");
    assert_eq!(over, Admission::OverBudget { spent_fen: 500 });
    let same_key = store
        .admit_agent_payment(&agent_order(&first_paid, "agent-b", 100), None, None)
        .expect("admit");
    assert!(
        matches!(same_key, Admission::OrderExists(_)),
        "{same_key:?}"
    );
}

fn approvals_are_decided_once_and_carried_out(backend: &Backend) {
    let store = backend.open();
    let payment = approval_input(ApprovalKind::Payment, "P-1", 900);
    let refund_request = approval_input(ApprovalKind::Refund, "RF-1", 50);
    for input in [&payment, &refund_request] {
        assert_eq!(store.insert_approval(input).expect("insert"), Inserted::New);
    }
    match store.insert_approval(&payment).expect("again") {
        Inserted::Exists(a) => assert_eq!(a.subject, "P-1"),
        Inserted::New => panic!("a second approval for P-1"),
    }
    let p = store
        .approval(ApprovalKind::Payment, "P-1")
        .expect("read")
        .expect("found");
    let r = store
        .approval(ApprovalKind::Refund, "RF-1")
        .expect("read")
        .expect("found");
    assert_eq!(store.approval_by_id(p.id).expect("read"), Some(p.clone()));
    assert!(
        store
            .approval(ApprovalKind::Refund, "P-1")
            .expect("read")
            .is_none()
    );

    let approved = store
        .decide_approval(p.id, ApprovalState::Approved, "ops", None, T0 + 1)
        .expect("decide");
    match approved {
        Transition::Applied(a) => {
            assert_eq!(a.state, ApprovalState::Approved);
            assert_eq!(a.decided_by.as_deref(), Some("ops"));
            assert_eq!(a.decided_at_ms, Some(T0 + 1));
        }
        other => panic!("expected Applied, got {other:?}"),
    }
    let twice = store
        .decide_approval(p.id, ApprovalState::Approved, "ops", None, T0 + 2)
        .expect("decide");
    assert!(matches!(twice, Transition::AlreadyThere(_)), "{twice:?}");
    let reversed = store
        .decide_approval(p.id, ApprovalState::Denied, "ops", Some("no"), T0 + 3)
        .expect("decide");
    assert!(matches!(reversed, Transition::Refused(_)), "{reversed:?}");
    let denied = store
        .decide_approval(r.id, ApprovalState::Denied, "ops", Some("too much"), T0 + 4)
        .expect("decide");
    assert_eq!(
        denied.record().and_then(|a| a.reason.clone()).as_deref(),
        Some("too much")
    );
    assert_eq!(
        store
            .decide_approval(9_999, ApprovalState::Denied, "ops", None, T0)
            .expect("decide"),
        Transition::Missing
    );

    let states = |state| -> Vec<String> {
        store
            .approvals(state, 10)
            .expect("list")
            .into_iter()
            .map(|a| a.subject)
            .collect()
    };
    assert_eq!(states(None), ["P-1", "RF-1"]);
    assert_eq!(states(Some(ApprovalState::Approved)), ["P-1"]);
    assert!(states(Some(ApprovalState::Pending)).is_empty());
    assert!(store.approvals(None, 0).expect("list").is_empty());

    let to_carry_out = store.approvals_to_carry_out(10).expect("list");
    assert_eq!(to_carry_out.len(), 1);
    assert_eq!(to_carry_out[0].subject, "P-1");
    insert_new(store.as_ref(), &order("P-1", OrderState::Created, T0));
    assert!(
        store.approvals_to_carry_out(10).expect("list").is_empty(),
        "its order exists now"
    );
}

// --- ledger and meters -------------------------------------------------------

fn paid_topup(store: &dyn Store, no: &str, payer: &str, fee: u64) {
    let mut o = order(no, OrderState::Pending, T0);
    o.total_fee = fee;
    insert_new(store, &o);
    assert_eq!(
        store
            .register_topup(no, payer, Some("agent"), T0)
            .expect("register"),
        payer
    );
    let paid = store
        .transition_order(
            no,
            &[OrderState::Pending],
            OrderState::Paid,
            OrderPatch::default(),
            T0 + 1,
            None,
        )
        .expect("pay");
    assert!(paid.applied());
}

fn charge_input(payer: &str, amount_fen: u64, reference: &str) -> ChargeInput {
    ChargeInput {
        payer_id: payer.to_owned(),
        amount_fen,
        reference: reference.to_owned(),
        agent_id: "agent".to_owned(),
        note: Some("prompt".to_owned()),
        at_ms: T0 + 2,
    }
}

fn top_ups_are_credited_once_and_charges_never_overdraw(backend: &Backend) {
    let store = backend.open();
    paid_topup(&*store, "TOP-1", "payer-1", 300);
    assert_eq!(
        store
            .register_topup("TOP-1", "payer-2", None, T0)
            .expect("register"),
        "payer-1",
        "the first payer stays"
    );
    // Learning the payment again (a duplicate notification) credits nothing.
    let again = pay(&*store, "TOP-1", "tx", T0, T0 + 3, None);
    assert!(
        matches!(again, Ok(Transition::AlreadyThere(_))),
        "{again:?}"
    );
    assert_eq!(store.balance("payer-1").expect("balance"), 300);

    match store
        .charge(&charge_input("payer-1", 120, "c-1"))
        .expect("charge")
    {
        Charge::Charged { entry, balance_fen } => {
            assert_eq!((entry.amount_fen, balance_fen), (-120, 180));
            assert_eq!(entry.note.as_deref(), Some("prompt"));
        }
        other => panic!("expected Charged, got {other:?}"),
    }
    match store
        .charge(&charge_input("payer-1", 999, "c-1"))
        .expect("charge")
    {
        Charge::Exists { entry, balance_fen } => {
            assert_eq!((entry.amount_fen, balance_fen), (-120, 180));
        }
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(
        store
            .charge(&charge_input("payer-1", 181, "c-2"))
            .expect("charge"),
        Charge::InsufficientFunds { balance_fen: 180 }
    );
    assert_eq!(
        store
            .charge(&charge_input("nobody", 1, "c-3"))
            .expect("charge"),
        Charge::InsufficientFunds { balance_fen: 0 }
    );
    assert!(matches!(
        store.charge(&charge_input("payer-1", 0, "c-4")),
        Err(StoreError::InvalidInput {
            field: "amount_fen",
            ..
        })
    ));
    let entries = store.ledger("payer-1", 10).expect("ledger");
    let kinds: Vec<(&str, i64)> = entries
        .iter()
        .map(|e| (e.kind.as_str(), e.amount_fen))
        .collect();
    assert_eq!(kinds, [("charge", -120), ("topup", 300)], "newest first");
    assert_eq!(store.ledger("payer-1", 1).expect("ledger").len(), 1);
    assert!(store.ledger("payer-1", 0).expect("ledger").is_empty());
}

fn meters_accumulate_until_settled(backend: &Backend) {
    let store = backend.open();
    let opened = store.open_meter("m-1", "agent", "payer", T0).expect("open");
    assert_eq!((opened.total_fen, opened.settled_at_ms), (0, None));
    let reopened = store
        .open_meter("m-1", "other", "other", T0 + 1)
        .expect("open");
    assert_eq!(reopened, opened, "the first opening stands");
    for (reference, amount) in [("u-1", 3), ("u-2", 4)] {
        let added = store
            .add_usage("m-1", reference, amount, Some("tokens"), T0 + 1)
            .expect("usage");
        assert!(matches!(added, Usage::Added(_)), "{added:?}");
    }
    match store
        .add_usage("m-1", "u-1", 50, None, T0 + 2)
        .expect("usage")
    {
        Usage::Exists { meter, amount_fen } => assert_eq!((meter.total_fen, amount_fen), (7, 3)),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(
        store.add_usage("m-9", "u-9", 1, None, T0).expect("usage"),
        Usage::Missing
    );
    let settled = store
        .settle_meter("m-1", "SETTLE-1", T0 + 3)
        .expect("settle")
        .expect("meter");
    assert_eq!(settled.out_trade_no.as_deref(), Some("SETTLE-1"));
    assert_eq!(
        (settled.total_fen, settled.settled_at_ms),
        (7, Some(T0 + 3))
    );
    let late = store
        .add_usage("m-1", "u-3", 1, None, T0 + 4)
        .expect("usage");
    assert!(matches!(late, Usage::Settled(_)), "{late:?}");
    let resettled = store
        .settle_meter("m-1", "SETTLE-2", T0 + 5)
        .expect("settle")
        .expect("meter");
    assert_eq!(resettled, settled, "only the first settlement counts");
    assert_eq!(store.meter("m-1").expect("read"), Some(settled));
    assert!(
        store
            .settle_meter("m-9", "X", T0)
            .expect("settle")
            .is_none()
    );
}

fn audit_events_are_appended_with_the_change_and_only_then(backend: &Backend) {
    let store = backend.open();
    insert_new(&*store, &order("A-1", OrderState::Pending, T0));
    let event = audit_input("order.paid");
    let actions = || -> Vec<String> {
        store
            .audit(0, 100)
            .expect("audit")
            .into_iter()
            .map(|e| e.action)
            .collect()
    };
    let bad = AuditEventInput {
        detail: "{not json".to_owned(),
        ..audit_input("order.paid")
    };
    let refused = pay(&*store, "A-1", "tx", T0, T0 + 1, Some(&bad));
    assert!(
        matches!(
            refused,
            Err(StoreError::InvalidInput {
                field: "detail",
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        stored(&*store, "A-1").state,
        OrderState::Pending,
        "nothing written"
    );
    assert!(store.notifications(10, 0).expect("read").is_empty());

    for _ in 0..3 {
        let paid = pay(&*store, "A-1", "tx", T0, T0 + 1, Some(&event)).expect("apply");
        assert!(paid.record().is_some_and(|o| o.state == OrderState::Paid));
    }
    assert_eq!(actions(), ["order.paid"], "once, for the call that paid");

    let refunding = audit_input("order.refunding");
    for _ in 0..2 {
        let moved = store.transition_order(
            "A-1",
            &[OrderState::Paid],
            OrderState::Refunding,
            OrderPatch::default(),
            T0 + 2,
            Some(&refunding),
        );
        assert!(moved.expect("move").record().is_some());
    }
    let missing = store.transition_order(
        "ghost",
        &[OrderState::Paid],
        OrderState::Refunding,
        OrderPatch::default(),
        T0 + 2,
        Some(&refunding),
    );
    assert_eq!(missing.expect("move"), Transition::Missing);
    assert_eq!(actions(), ["order.paid", "order.refunding"]);

    assert_eq!(
        store
            .insert_refund(&refund("AR-1", "A-1", 50))
            .expect("insert"),
        RefundInsert::New
    );
    let succeeded = audit_input("refund.succeeded");
    for _ in 0..2 {
        let outcome = store.apply_refund_outcome(
            "AR-1",
            "r-1",
            RefundState::Succeeded,
            Some(BODY),
            T0 + 3,
            Some(&succeeded),
        );
        assert!(outcome.expect("apply").record().is_some());
    }
    assert_eq!(
        actions(),
        ["order.paid", "order.refunding", "refund.succeeded"]
    );
}

fn a_lease_has_one_holder_until_it_expires(backend: &Backend) {
    let store = backend.open();
    let take = |holder: &str, now: i64| {
        store
            .acquire_lease("reconciliation", holder, now, now + 3_000)
            .expect("lease")
    };
    assert!(take("a", T0), "a free lease is taken");
    assert!(!take("b", T0 + 1_000), "b waits while a holds it");
    assert!(take("a", T0 + 2_000), "a renews, until T0 + 5 s");
    assert!(!take("b", T0 + 4_999), "still a's");
    assert!(take("b", T0 + 5_000), "expired: b takes over");
    assert!(!take("a", T0 + 5_001), "and a now waits");
    assert!(
        store
            .acquire_lease("other", "a", T0, T0 + 1)
            .expect("lease"),
        "leases are per name"
    );
    // Many contenders at once: exactly one wins.
    let winners = on_connections(backend, 8, |i, store| {
        store
            .acquire_lease("race", &format!("h{i}"), T0, T0 + 10)
            .expect("lease")
    })
    .into_iter()
    .filter(|won| *won)
    .count();
    assert_eq!(winners, 1);
}

// --- Redis only ----------------------------------------------------------------

#[test]
fn redis_refuses_a_server_that_does_not_fsync_every_write() {
    let durable_but = |weaker: &[&'static str]| {
        let mut settings = wxpay::bench::redis_server::DURABLE.to_vec();
        settings.extend_from_slice(weaker);
        settings
    };
    for (settings, setting, found) in [
        (durable_but(&["--appendonly", "no"]), "appendonly", "no"),
        (
            durable_but(&["--appendfsync", "everysec"]),
            "appendfsync",
            "everysec",
        ),
        (
            durable_but(&["--no-appendfsync-on-rewrite", "yes"]),
            "no-appendfsync-on-rewrite",
            "yes",
        ),
    ] {
        let url = support::redis::start_with(&settings);
        match wxpay::store::RedisStore::open(&url, "x:") {
            Err(StoreError::RedisNotDurable {
                setting: refused,
                found: value,
                ..
            }) => assert_eq!((refused, value.as_str()), (setting, found)),
            other => panic!("expected RedisNotDurable for {settings:?}, got {other:?}"),
        }
    }
    let settings = support::redis::store().settings().expect("settings");
    assert_eq!(
        (
            settings.appendonly.as_str(),
            settings.appendfsync.as_str(),
            settings.no_appendfsync_on_rewrite.as_str()
        ),
        ("yes", "always", "no")
    );
}

#[test]
fn redis_errors_never_show_the_password() {
    let refused = wxpay::store::RedisStore::open("redis://user:s3cret-pass@127.0.0.1:1/0", "x:");
    let message = match refused {
        Err(e) => e.to_string(),
        Ok(_) => panic!("nothing listens on port 1"),
    };
    assert!(message.contains("user:***@127.0.0.1:1"), "{message}");
    assert!(!message.contains("s3cret-pass"), "{message}");
}

/// A server that lost the store's function library (flushed, or replaced
/// by an empty one) gets it back on the next call, which then succeeds.
#[test]
fn redis_loads_its_functions_again_on_a_server_that_lost_them() {
    let url = support::redis::start_with(wxpay::bench::redis_server::DURABLE);
    let store = wxpay::store::RedisStore::open(&url, "x:").expect("open");
    insert_new(&store, &order("o-1", OrderState::Pending, T0));
    let mut conn = ::redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("connect");
    let libraries = |conn: &mut ::redis::Connection| -> usize {
        let listed: Vec<::redis::Value> = ::redis::cmd("FUNCTION")
            .arg("LIST")
            .query(conn)
            .expect("list");
        listed.len()
    };
    assert_eq!(libraries(&mut conn), 1, "loaded when the store opened");
    let _: () = ::redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query(&mut conn)
        .expect("flush");
    assert_eq!(libraries(&mut conn), 0);
    assert_eq!(stored(&store, "o-1").state, OrderState::Pending);
    assert_eq!(libraries(&mut conn), 1, "loaded again by the read");
}

/// Without Redis Functions (before Redis 7.0, or with the command
/// disabled) the store refuses to open, and says what it needs.
#[test]
fn redis_without_functions_is_refused_at_open() {
    let mut settings = wxpay::bench::redis_server::DURABLE.to_vec();
    settings.extend(["--rename-command", "FUNCTION", ""]);
    let url = support::redis::start_with(&settings);
    match wxpay::store::RedisStore::open(&url, "x:") {
        Err(e @ StoreError::Redis { .. }) => {
            let message = e.to_string();
            assert!(message.contains("Redis 7.0 or later"), "{message}");
        }
        other => panic!("expected a Redis error, got {other:?}"),
    }
}

#[test]
fn redis_prefixes_keep_deployments_apart() {
    let (a, b) = (support::redis::store(), support::redis::store());
    insert_new(&a, &order("o-1", OrderState::Pending, T0));
    assert!(b.order("o-1").expect("read").is_none());
    insert_new(&b, &order("o-1", OrderState::Created, T0));
    assert_eq!(stored(&a, "o-1").state, OrderState::Pending);
}

mod ledger_invariants {
    use std::sync::Arc;

    use proptest::collection::vec;
    use proptest::prelude::*;
    use wxpay::store::{Charge, ChargeInput, Store};

    use super::{Backend, T0, paid_topup};

    /// Funds each payer by a paid top-up order, then runs the charges from
    /// four threads at once, each on its own connection.
    fn run(
        backend: &Backend,
        topups: &[u64],
        charges: &[(usize, u64)],
    ) -> (Arc<dyn Store>, Vec<u64>, Vec<Vec<u64>>) {
        let store = backend.open();
        for (i, amount) in topups.iter().enumerate() {
            paid_topup(
                &*store,
                &format!("TOPUP-{i}"),
                &format!("payer-{i}"),
                *amount,
            );
        }
        let mut charged = vec![0u64; topups.len()];
        let mut refused = vec![Vec::new(); topups.len()];
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let store = backend.open();
                    let mine: Vec<(usize, (usize, u64))> = charges
                        .iter()
                        .copied()
                        .enumerate()
                        .filter(|(n, _)| n % 4 == t)
                        .collect();
                    scope.spawn(move || {
                        let mut done = Vec::new();
                        for (n, (payer, amount)) in mine {
                            let input = ChargeInput {
                                payer_id: format!("payer-{payer}"),
                                amount_fen: amount,
                                reference: format!("charge-{n}"),
                                agent_id: "agent".into(),
                                note: None,
                                at_ms: T0 + 2,
                            };
                            let ok = matches!(
                                store.charge(&input).expect("charge"),
                                Charge::Charged { .. }
                            );
                            done.push((payer, amount, ok));
                        }
                        done
                    })
                })
                .collect();
            for handle in handles {
                for (payer, amount, ok) in handle.join().expect("thread") {
                    if ok {
                        charged[payer] += amount;
                    } else {
                        refused[payer].push(amount);
                    }
                }
            }
        });
        (store, charged, refused)
    }

    fn check(backend: &Backend, topups: &[u64], raw: &[(usize, u64)]) -> Result<(), TestCaseError> {
        let charges: Vec<_> = raw.iter().map(|(p, a)| (p % topups.len(), *a)).collect();
        let (store, charged, refused) = run(backend, topups, &charges);
        for (i, topup) in topups.iter().enumerate() {
            let payer = format!("payer-{i}");
            let balance = store.balance(&payer).expect("balance");
            let entries = store.ledger(&payer, 1_000).expect("ledger");
            let sum: i64 = entries.iter().map(|e| e.amount_fen).sum();
            prop_assert!(
                charged[i] <= *topup,
                "payer {i} overdrawn: {} > {topup}",
                charged[i]
            );
            prop_assert_eq!(balance, topup - charged[i]);
            prop_assert_eq!(i64::try_from(balance).expect("fits"), sum);
            prop_assert_eq!(entries.iter().filter(|e| e.kind == "topup").count(), 1);
            // Balances only fall while charging, so every refused charge
            // is larger than what is left at the end.
            for amount in &refused[i] {
                prop_assert!(balance < *amount, "refused {amount} with {balance} left");
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn sqlite_balances_are_sums_of_entries_and_never_negative(
            topups in vec(1u64..5_000, 1..4),
            raw in vec((0usize..4, 1u64..2_000), 1..30),
        ) {
            check(&Backend::sqlite(), &topups, &raw)?;
        }

        #[test]
        fn redis_balances_are_sums_of_entries_and_never_negative(
            topups in vec(1u64..5_000, 1..4),
            raw in vec((0usize..4, 1u64..2_000), 1..30),
        ) {
            check(&Backend::redis(), &topups, &raw)?;
        }
    }
}

/// An agent's spend since any time is exactly the sum of its orders created
/// since then that are not closed or failed, whatever minute boundaries the
/// orders and the time fall on (the Redis store sums whole minutes from an
/// index and counts the first minute order by order).
mod spend_invariants {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use wxpay::store::{Inserted, OrderPatch, OrderState, Store, Transition};

    use super::{Backend, T0, agent_order};

    const MINUTE: i64 = 60_000;

    /// Orders as (created offset from T0 in ms, fee, closed afterwards);
    /// `since` offsets, to which each order's own time is added.
    fn check(
        backend: &Backend,
        orders: &[(i64, u64, bool)],
        since: &[i64],
    ) -> Result<(), TestCaseError> {
        let store = backend.open();
        place(store.as_ref(), orders)?;
        let spend = |at: i64| -> u64 {
            orders
                .iter()
                .filter(|(created, _, closed)| T0 + created >= at && !closed)
                .map(|(_, fee, _)| fee)
                .sum()
        };
        let mut times: Vec<i64> = since.iter().map(|s| T0 + s).collect();
        for (created, _, _) in orders {
            let at = T0 + created;
            times.extend([at - 1, at, at + 1, at - at.rem_euclid(MINUTE)]);
        }
        for at in times {
            prop_assert_eq!(
                store.agent_spend("agent-s", at).expect("spend"),
                spend(at),
                "since {}",
                at - T0
            );
        }
        Ok(())
    }

    fn place(store: &dyn Store, orders: &[(i64, u64, bool)]) -> Result<(), TestCaseError> {
        for (i, (created, fee, closed)) in orders.iter().enumerate() {
            let no = format!("spend-{i}");
            let mut order = agent_order(&no, "agent-s", *fee);
            order.created_at_ms = T0 + created;
            order.updated_at_ms = T0 + created;
            prop_assert!(matches!(
                store.insert_order(&order).expect("insert"),
                Inserted::New
            ));
            if *closed {
                let moved = store
                    .transition_order(
                        &no,
                        &[OrderState::Created],
                        OrderState::Closed,
                        OrderPatch::default(),
                        T0 + created + 1,
                        None,
                    )
                    .expect("close");
                prop_assert!(matches!(moved, Transition::Applied(_)));
            }
        }
        Ok(())
    }

    fn orders() -> impl Strategy<Value = Vec<(i64, u64, bool)>> {
        vec(
            (-3 * MINUTE..3 * MINUTE, 1u64..10_000, any::<bool>()),
            0..24,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn sqlite_spend_is_the_sum_of_live_orders_since(
            orders in orders(),
            since in vec(-4 * MINUTE..4 * MINUTE, 1..6),
        ) {
            check(&Backend::sqlite(), &orders, &since)?;
        }

        #[test]
        fn redis_spend_is_the_sum_of_live_orders_since(
            orders in orders(),
            since in vec(-4 * MINUTE..4 * MINUTE, 1..6),
        ) {
            check(&Backend::redis(), &orders, &since)?;
        }
    }

    /// Deletes the backend's keys (named without the prefix), as a store
    /// from before an index would lack them; returns how many existed.
    fn delete_keys(backend: &Backend, keys: &[&str]) -> usize {
        let Backend::Redis(prefix) = backend else {
            unreachable!("a Redis backend")
        };
        let mut conn = redis::Client::open(super::support::redis::url())
            .and_then(|c| c.get_connection())
            .expect("connect");
        let mut delete = redis::cmd("DEL");
        for key in keys {
            delete.arg(format!("{prefix}{key}"));
        }
        delete.query(&mut conn).expect("delete")
    }

    /// Audit events appended before the subject index existed are
    /// indexed when the store opens.
    #[test]
    fn redis_indexes_the_audit_log_by_subject_written_before_the_index_existed() {
        let backend = Backend::redis();
        let store = backend.open();
        for subject in ["pay-1", "pay-2", "pay-1"] {
            store
                .append_audit(&super::about(subject, "order.create"))
                .expect("append");
        }
        let removed = delete_keys(
            &backend,
            &[
                "audit_subject:pay-1",
                "audit_subject:pay-2",
                "audit_subject_index",
            ],
        );
        assert_eq!(removed, 3, "the index existed and is gone");
        assert!(store.audit_about("pay-1", 10).expect("about").is_empty());
        let seqs = |store: &dyn Store| -> Vec<i64> {
            store
                .audit_about("pay-1", 10)
                .expect("about")
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        assert_eq!(seqs(backend.open().as_ref()), [1, 3], "rebuilt at open");
        assert_eq!(seqs(backend.open().as_ref()), [1, 3], "and only once");
    }

    /// Data written before the per-minute index existed is indexed when
    /// the store opens, once.
    #[test]
    fn redis_indexes_spend_written_before_the_index_existed() {
        let backend = Backend::redis();
        let orders = [
            (-MINUTE, 300, false),
            (10, 200, true),
            (2 * MINUTE, 500, false),
        ];
        place(backend.open().as_ref(), &orders).expect("place");
        let removed = delete_keys(
            &backend,
            &[
                "agent_spend:agent-s",
                "agent_spend_minutes:agent-s",
                "spend_index",
            ],
        );
        assert_eq!(removed, 3, "the index existed and is gone");
        let reopened = backend.open();
        assert_eq!(
            reopened.agent_spend("agent-s", T0 - MINUTE).expect("spend"),
            800
        );
        assert_eq!(
            reopened.agent_spend("agent-s", T0 + 11).expect("spend"),
            500
        );
        assert_eq!(
            backend
                .open()
                .agent_spend("agent-s", T0 - MINUTE)
                .expect("spend"),
            800
        );
    }
}
