//! The durable store: orders, refunds, raw notifications with their
//! verdicts, and an append-only audit log.
//!
//! # Why it is shaped this way
//!
//! **Durable before acknowledged.** WeChat stops retrying a notification
//! once the merchant ACKs it, and an agent acts on an order once the
//! gateway answers. So nothing is acknowledged before it is on disk: every
//! write returns only after its transaction has committed and been flushed
//! (the SQLite backend flushes its WAL itself before it answers a batch of
//! writes). [`Store::apply_paid_notification`] records the raw
//! notification *and* applies the payment in one transaction, so the
//! callback handler can ACK exactly when it resolves to `Ok`: a crash
//! before that loses nothing WeChat will not send again, and a crash after
//! it loses nothing at all.
//!
//! **Compare-and-set transitions.** A payment can be learnt three ways at
//! once — the notification, its duplicate, and an order query racing both.
//! Each is a transition `from` a set of states `to` one state, applied as a
//! single conditional update: exactly one caller gets
//! [`Transition::Applied`]; the others get [`Transition::AlreadyThere`]
//! (nothing to do, ACK again) or [`Transition::Refused`] (the order moved
//! elsewhere, e.g. closed). No read-modify-write spans two calls, so no
//! interleaving double-applies, and every applied change bumps the
//! record's `version`.
//!
//! **Honest for Redis.** The Redis backend ([`RedisStore`]) implements the
//! same trait, for several gateways sharing one state. So every method is one atomic unit that a single Lua
//! function (or `WATCH`/`MULTI`) can perform: an insert checks its unique keys and
//! writes in one step; a transition compares the state and writes; the
//! payment notification appends to a list and transitions; a refund insert
//! sums the order's refunds and writes. No method hands out a transaction
//! or a cursor, queries are bounded by `limit`, and callers pass every time
//! in (milliseconds since the epoch), so no backend reads a clock and tests
//! are deterministic. Listings are ordered by things Redis can index: a
//! sequence number, or `updated_at_ms` within a state.
//!
//! **No secrets.** The store never sees the merchant key. Notification
//! bodies are kept as received (they carry a signature, not the key);
//! errors name operations, tables and fields, never stored values.

use std::fmt;

mod agents;
mod console;
mod error;
mod ledger;
mod meters;
pub mod redis_store;
mod rows;
mod schema;
pub mod sqlite;
mod types;

pub use self::agents::{
    Admission, AgentRecord, AgentStatus, Approval, ApprovalInput, ApprovalKind, ApprovalState,
    SpendLimit,
};
pub use self::console::{ConsoleKind, ConsoleRecord};
pub use self::error::StoreError;
pub use self::ledger::{Charge, ChargeInput, LedgerEntry};
pub use self::meters::{Meter, Usage};
pub use self::redis_store::{RedisSettings, RedisStore};
pub use self::sqlite::{CommitStats, SqliteSettings, SqliteStore};
pub use self::types::{
    AuditEvent, AuditEventInput, Inserted, NotificationKind, NotificationRecord, Order, OrderPatch,
    OrderState, OrderTerms, PaidNotification, PaymentApplied, Refund, RefundInsert, RefundPatch,
    RefundState, Transition, Verdict,
};

/// A store call's result, arriving later, holding no thread meanwhile.
pub type StoreFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = StoreResult<T>> + Send + 'static>>;

/// Where the durable state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// One SQLite file: one gateway (or several processes on one machine).
    Sqlite(std::path::PathBuf),
    /// A Redis server shared by several gateways; every key starts with
    /// `key_prefix`.
    Redis {
        /// `redis://[user:password@]host[:port][/db]`.
        url: String,
        /// Prepended to every key.
        key_prefix: String,
    },
}

impl fmt::Display for StoreLocation {
    /// Where, for logs: a Redis password is never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "SQLite {}", path.display()),
            Self::Redis { url, key_prefix } => {
                write!(
                    f,
                    "Redis {} under {key_prefix:?}",
                    redis_store::redact_url(url)
                )
            }
        }
    }
}

impl StoreLocation {
    /// Opens the store. Blocks (connects, migrates): call it off the
    /// async runtime.
    pub fn open(&self) -> StoreResult<std::sync::Arc<dyn Store>> {
        Ok(match self {
            Self::Sqlite(path) => std::sync::Arc::new(SqliteStore::open(path)?),
            Self::Redis { url, key_prefix } => {
                std::sync::Arc::new(RedisStore::open(url, key_prefix)?)
            }
        })
    }
}

/// Refuses an audit event whose detail is not JSON, before anything is
/// written.
fn check_audit(event: &AuditEventInput) -> StoreResult<()> {
    match serde_json::from_str::<serde_json::Value>(&event.detail) {
        Ok(_) => Ok(()),
        Err(e) => Err(StoreError::InvalidInput {
            field: "detail",
            reason: format!("not JSON: {e}"),
        }),
    }
}

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The highest schema version this build of the SQLite store knows.
pub const SCHEMA_VERSION: i64 = schema::KNOWN_VERSION;

/// Durable storage for the gateway. Every method is atomic, and every write
/// is durable when it returns `Ok`; on `Err` nothing was written.
///
/// Methods are synchronous: callers on an async runtime use
/// `spawn_blocking`, except for the few that return a [`StoreFuture`].
pub trait Store: Send + Sync {
    /// True when reads answer from this machine's memory or disk without
    /// waiting for another process, a lock held across a flush, or the
    /// network: an async caller may then run them in place instead of
    /// handing them to a blocking thread (two thread switches saved per
    /// read). Writes always go to a blocking thread.
    fn reads_are_local(&self) -> bool {
        false
    }

    /// How changes were grouped into commits and flushes, for a store
    /// that groups them (SQLite).
    fn commit_stats(&self) -> Option<CommitStats> {
        None
    }

    /// Stores a new order, with `version` 1 (the given version is ignored).
    ///
    /// If an order with the same `out_trade_no` exists — or, when both
    /// `agent_id` and `idempotency_key` are set, one with the same pair —
    /// that order is returned as [`Inserted::Exists`] and nothing is
    /// written. The caller decides whether it is the same request.
    fn insert_order(&self, order: &Order) -> StoreResult<Inserted<Order>>;

    /// The order, if stored.
    fn order(&self, out_trade_no: &str) -> StoreResult<Option<Order>>;

    /// [`Store::order`] as a future, for the notification callback: a store
    /// whose reads wait for the network answers without parking a thread
    /// per read; one whose reads are local answers at once.
    fn fetch_order(&self, out_trade_no: &str) -> StoreFuture<Option<Order>>;

    /// Moves the order to `to` if it is in one of `from`, setting the
    /// patch's fields that are `Some`, `updated_at_ms = at_ms` and bumping
    /// `version` — one compare-and-set. An order already in `to` is left
    /// untouched ([`Transition::AlreadyThere`]), even if `to` is in `from`.
    /// `audit` is appended in the same atomic step if, and only if, the
    /// transition is applied: a crash cannot separate the two.
    fn transition_order(
        &self,
        out_trade_no: &str,
        from: &[OrderState],
        to: OrderState,
        patch: OrderPatch,
        at_ms: i64,
        audit: Option<&AuditEventInput>,
    ) -> StoreResult<Transition<Order>>;

    /// Up to `limit` orders in one of `states` whose last change is before
    /// `older_than_ms`, oldest change first: what reconciliation must ask
    /// WeChat about.
    fn orders_in_state(
        &self,
        states: &[OrderState],
        older_than_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Order>>;

    /// Stores a new refund, with `version` 1, unless its `out_refund_no` is
    /// taken, its order is missing, or it would take the order's refunds
    /// past `total_fee` (checked atomically with the insert).
    fn insert_refund(&self, refund: &Refund) -> StoreResult<RefundInsert>;

    /// The refund, if stored.
    fn refund(&self, out_refund_no: &str) -> StoreResult<Option<Refund>>;

    /// Like [`Store::transition_order`], for a refund.
    fn transition_refund(
        &self,
        out_refund_no: &str,
        from: &[RefundState],
        to: RefundState,
        patch: RefundPatch,
        at_ms: i64,
    ) -> StoreResult<Transition<Refund>>;

    /// The sum of the order's refunds that did or may still move money
    /// (requested, processing, succeeded; not failed or closed), in fen.
    fn refunded_total(&self, out_trade_no: &str) -> StoreResult<u64>;

    /// Records a notification as received, with the verdict on it. Returns
    /// its id. Recorded notifications are never changed.
    fn record_notification(
        &self,
        kind: NotificationKind,
        body: &[u8],
        at_ms: i64,
        out_trade_no: Option<&str>,
        dedupe_key: Option<&str>,
        verdict: &Verdict,
    ) -> StoreResult<i64>;

    /// Up to `limit` notifications, oldest first, skipping `offset`.
    fn notifications(&self, limit: u32, offset: u32) -> StoreResult<Vec<NotificationRecord>>;

    /// Appends an event to the audit log and returns its `seq`. `detail`
    /// must be JSON. The log cannot be changed or shortened.
    fn append_audit(&self, event: &AuditEventInput) -> StoreResult<i64>;

    /// Up to `limit` audit events with `seq > after_seq`, in order.
    fn audit(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEvent>>;

    /// A verified payment notification, in one atomic step. When the order
    /// does not have the terms the notification was checked against
    /// (`paid.terms`), nothing is written and the order is returned
    /// ([`PaymentApplied::TermsDiffer`]). Otherwise this moves the order
    /// from Created or Pending to Paid (setting `transaction_id` and
    /// `paid_at_ms`), and records the raw body with `dedupe_key =
    /// transaction_id` and the verdict ([`PaymentApplied::Recorded`]):
    ///
    /// - [`Transition::Applied`], `accepted`: this call paid the order.
    /// - [`Transition::AlreadyThere`], `duplicate`: it was already paid
    ///   with this transaction (also if refunds have since moved it on).
    /// - [`Transition::Refused`], `rejected:…`: it is closed, failed or
    ///   reversed, or was paid by another transaction.
    /// - [`Transition::Missing`], `rejected:unknown order`.
    ///
    /// When the future resolves to `Ok`, both writes are durable and the
    /// caller may ACK (for the first two outcomes). The signature must be
    /// verified, and the notification checked against `terms`, before
    /// calling: the store does not read the body. Because the terms are
    /// compared in the same step, the callback need not read the order
    /// first: one round trip to the store for a notification that matches.
    /// `audit` is appended in the same step when this call paid the order;
    /// it is checked (JSON `detail`) before anything is written.
    ///
    /// It is a future, holding no thread while the change waits for the
    /// disk or the network: this is the callback's one write, and a burst
    /// of notifications must not park a thread each.
    fn apply_paid_notification(&self, paid: PaidNotification) -> StoreFuture<PaymentApplied>;

    /// Up to `limit` refunds in one of `states` whose last change is before
    /// `older_than_ms`, oldest change first: refunds whose outcome
    /// reconciliation must ask WeChat about.
    fn refunds_in_state(
        &self,
        states: &[RefundState],
        older_than_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Refund>>;

    /// A refund outcome WeChat reported (by a verified notification when
    /// `body` is `Some`, or by refundquery), in one atomic step: moves the
    /// refund from Requested or Processing to `to` (Succeeded, Closed or
    /// Failed), settles its order (see [`Store::settle_order`]) and, for
    /// a notification, records the body with `dedupe_key =
    /// refund_id:state` and the verdict (accepted, duplicate, or
    /// rejected when the refund already ended differently or is unknown).
    /// `audit` is appended in the same step when this call moved the refund.
    fn apply_refund_outcome(
        &self,
        out_refund_no: &str,
        refund_id: &str,
        to: RefundState,
        body: Option<&[u8]>,
        at_ms: i64,
        audit: Option<&AuditEventInput>,
    ) -> StoreResult<Transition<Refund>>;

    /// Puts a paid order in the state its refunds say: Refunding while any
    /// is Requested or Processing, else Refunded if any Succeeded, else
    /// Paid. Orders that are not paid are left alone. Returns the order.
    fn settle_order(&self, out_trade_no: &str, at_ms: i64) -> StoreResult<Option<Order>>;

    /// Stores a new agent. Returns false, writing nothing, when its id or
    /// token hash is taken.
    fn insert_agent(&self, agent: &AgentRecord) -> StoreResult<bool>;

    /// The agent whose token hashes to `token_sha256`.
    fn agent_by_token(&self, token_sha256: &str) -> StoreResult<Option<AgentRecord>>;

    /// The agent with this id.
    fn agent(&self, agent_id: &str) -> StoreResult<Option<AgentRecord>>;

    /// Every agent, oldest first.
    fn agents(&self) -> StoreResult<Vec<AgentRecord>>;

    /// Revokes an agent (once; a second revocation keeps the first time).
    /// Returns the agent as it is now.
    fn revoke_agent(&self, agent_id: &str, at_ms: i64) -> StoreResult<Option<AgentRecord>>;

    /// What the agent has committed since `since_ms`, in fen: its orders
    /// not closed or failed, plus its payments waiting for approval.
    fn agent_spend(&self, agent_id: &str, since_ms: i64) -> StoreResult<u64>;

    /// An agent's payment, in one atomic step: unless an order with the
    /// same number (or agent and idempotency key) or an approval for the
    /// same number exists, and unless `limit` would be exceeded by
    /// `order.total_fee`, stores the order — or, when `approval` is given,
    /// the approval request instead. Two concurrent calls cannot together
    /// pass the limit.
    fn admit_agent_payment(
        &self,
        order: &Order,
        approval: Option<&ApprovalInput>,
        limit: Option<SpendLimit>,
    ) -> StoreResult<Admission>;

    /// Stores an approval request unless one exists for the same kind and
    /// subject (returned, nothing written).
    fn insert_approval(&self, approval: &ApprovalInput) -> StoreResult<Inserted<Approval>>;

    /// The approval for a payment or refund number.
    fn approval(&self, kind: ApprovalKind, subject: &str) -> StoreResult<Option<Approval>>;

    /// The approval with this id.
    fn approval_by_id(&self, id: i64) -> StoreResult<Option<Approval>>;

    /// Up to `limit` approvals, in one state or all, oldest first.
    fn approvals(&self, state: Option<ApprovalState>, limit: u32) -> StoreResult<Vec<Approval>>;

    /// Moves a pending approval to Approved or Denied (compare-and-set).
    fn decide_approval(
        &self,
        id: i64,
        to: ApprovalState,
        decided_by: &str,
        reason: Option<&str>,
        at_ms: i64,
    ) -> StoreResult<Transition<Approval>>;

    /// Records that an order is a top-up of `payer_id`'s balance, before
    /// the order is placed. When it is paid — however that is learnt — the
    /// ledger is credited with its amount in the same transaction, once.
    /// Returns the payer the order is recorded for (an earlier one wins).
    fn register_topup(
        &self,
        out_trade_no: &str,
        payer_id: &str,
        agent_id: Option<&str>,
        at_ms: i64,
    ) -> StoreResult<String>;

    /// Debits a balance unless that would take it below zero; the same
    /// reference is the same charge. One atomic step.
    fn charge(&self, charge: &ChargeInput) -> StoreResult<Charge>;

    /// The payer's balance: the sum of its ledger entries.
    fn balance(&self, payer_id: &str) -> StoreResult<u64>;

    /// The payer's latest `limit` ledger entries, newest first.
    fn ledger(&self, payer_id: &str, limit: u32) -> StoreResult<Vec<LedgerEntry>>;

    /// Opens a metering session (or returns the one with this id).
    fn open_meter(
        &self,
        meter_id: &str,
        agent_id: &str,
        payer_id: &str,
        at_ms: i64,
    ) -> StoreResult<Meter>;

    /// Adds usage to an open meter; the same reference is the same usage.
    fn add_usage(
        &self,
        meter_id: &str,
        reference: &str,
        amount_fen: u64,
        note: Option<&str>,
        at_ms: i64,
    ) -> StoreResult<Usage>;

    /// The meter with its total.
    fn meter(&self, meter_id: &str) -> StoreResult<Option<Meter>>;

    /// Closes the meter to further usage and records its settlement order
    /// (only the first settlement sets it). Returns the meter as it is now.
    fn settle_meter(
        &self,
        meter_id: &str,
        out_trade_no: &str,
        at_ms: i64,
    ) -> StoreResult<Option<Meter>>;

    /// Up to `limit` approved approvals whose payment or refund is not
    /// stored yet (carrying it out failed or was interrupted), oldest first.
    fn approvals_to_carry_out(&self, limit: u32) -> StoreResult<Vec<Approval>>;

    /// Takes or renews the lease `name` for `holder` until `until_ms`,
    /// unless another holder's lease is still valid at `now_ms`. Returns
    /// whether `holder` holds it now. Gateways sharing a store use it to
    /// take turns at periodic work; a holder that dies loses it at expiry.
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<bool>;

    /// The `seq` of the newest audit event, 0 for an empty log.
    fn latest_audit_seq(&self) -> StoreResult<i64>;

    /// Up to `limit` of the newest audit events whose subject is `subject`
    /// (a payment, refund, payer or agent), oldest first.
    fn audit_about(&self, subject: &str, limit: u32) -> StoreResult<Vec<AuditEvent>>;

    /// The order's refunds, oldest first.
    fn order_refunds(&self, out_trade_no: &str) -> StoreResult<Vec<Refund>>;

    /// Stores the console record, replacing one with the same kind and key,
    /// and deletes the kind's records expired at `now_ms` (abandoned
    /// ceremonies and ended sessions do not pile up).
    fn put_console_record(&self, record: &ConsoleRecord, now_ms: i64) -> StoreResult<()>;

    /// The console record's document, unless it is missing or expired at
    /// `now_ms`.
    fn console_record(
        &self,
        kind: ConsoleKind,
        key: &str,
        now_ms: i64,
    ) -> StoreResult<Option<String>>;

    /// Deletes the console record and returns its document if it was there
    /// and unexpired at `now_ms` — atomically, so of two concurrent takers
    /// exactly one gets it (one-time invites and challenges).
    fn take_console_record(
        &self,
        kind: ConsoleKind,
        key: &str,
        now_ms: i64,
    ) -> StoreResult<Option<String>>;

    /// Every unexpired record of the kind at `now_ms`, as (key, document),
    /// in key order.
    fn console_records(&self, kind: ConsoleKind, now_ms: i64)
    -> StoreResult<Vec<(String, String)>>;
}
