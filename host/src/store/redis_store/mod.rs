//! The shared store: Redis, for several gateways working on one set of
//! orders.
//!
//! # Why it is shaped this way
//!
//! **One function, every operation atomic.** Redis runs a Lua function to
//! the end before serving any other client, so each store operation is one
//! `FCALL` of the function in `store.lua` — compare-and-set, dedupe, budget
//! check and ledger debit included. Two gateways racing on the same notification are
//! serialised by Redis exactly as two SQLite connections are by the write
//! lock; the store test suite runs unchanged against both backends.
//!
//! **Durable before acknowledged.** A write is acknowledged by Redis after
//! it is in the append-only file, and with `appendfsync always` Redis
//! fsyncs that file before answering (also while it rewrites the file:
//! `no-appendfsync-on-rewrite no`). [`RedisStore::open`] refuses a
//! server configured otherwise (like the SQLite store refusing a journal
//! mode it cannot trust), so nothing is ACKed to WeChat that a Redis
//! restart would forget.
//!
//! **Async connections behind a synchronous trait.** The [`Store`] trait
//! is synchronous because its callers run on blocking threads. This store
//! keeps a small pool of the redis crate's multiplexed, self-reconnecting
//! async connections on its own one-thread runtime, and each call hands
//! its command to that runtime and waits for the reply. That works from
//! any thread, inside or outside the caller's runtime.
//!
//! **A function library, not a script.** `store.lua` is loaded once as a
//! Redis Functions library. Sent with `EVALSHA`, a script runs its whole
//! file on every call, building its forty helpers and their tables again;
//! a library runs that once, at load. Redis then spent about half as much
//! per call (`redis-benchmark`: 45,000 order reads a second by `EVALSHA`,
//! 95,000 by `FCALL`). The library's name carries a digest of its code, so
//! gateways of different versions can share a server.
//!
//! **Keys under a prefix.** Every key starts with the configured prefix,
//! so several deployments (or test runs) can share one server. The library
//! derives its keys from the prefix, so this store needs one Redis server
//! (or a primary with replicas), not Redis Cluster; Redis 7.0 or later
//! (for Redis Functions).

mod fields;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};

use self::fields::{Args, Fields};
use super::agents::{
    Admission, AgentRecord, Approval, ApprovalInput, ApprovalKind, ApprovalState, SpendLimit,
};
use super::error::StoreError;
use super::ledger::{Charge, ChargeInput, LedgerEntry};
use super::meters::{Meter, Usage};
use super::types::{
    AuditEvent, AuditEventInput, Inserted, NotificationKind, NotificationRecord, Order, OrderPatch,
    OrderState, PaidNotification, PaymentApplied, Refund, RefundInsert, RefundPatch, RefundState,
    Transition, Verdict,
};
use super::{ConsoleKind, ConsoleRecord, Store, StoreFuture, StoreResult, check_audit};

/// The store's function library: `store.lua` under a name that carries a
/// digest of its code.
struct Library {
    /// The library's one function, which is also the library's name.
    function: String,
    /// What `FUNCTION LOAD` is sent.
    code: String,
}

static LIBRARY: LazyLock<Library> = LazyLock::new(|| {
    let body = include_str!("store.lua");
    let digest = Sha256::digest(body.as_bytes());
    let function = format!("wxpay_store_{}", hex::encode(&digest[..8]));
    let code = format!("#!lua name={function}\nlocal FUNCTION_NAME = '{function}'\n{body}");
    Library { function, code }
});

/// Connections kept open; commands are spread across them.
const POOL_SIZE: usize = 4;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a command may wait for its reply before it fails (the write
/// may still have happened; every write is safe to repeat).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The Redis store.
pub struct RedisStore {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Vec<ConnectionManager>,
    next: AtomicUsize,
    prefix: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("connections", &self.pool.len())
            .finish_non_exhaustive()
    }
}

/// The server's persistence settings, as this store found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `appendonly`: `yes` is required.
    pub appendonly: String,
    /// `appendfsync`: `always` is required.
    pub appendfsync: String,
    /// `no-appendfsync-on-rewrite`: `no` is required. With `yes`, Redis
    /// skips the fsync while it rewrites the append-only file, and answers
    /// writes that a crash then would lose.
    pub no_appendfsync_on_rewrite: String,
}

impl RedisStore {
    /// Connects to the server at `url` (`redis://[user:password@]host[:port][/db]`)
    /// and checks that it fsyncs every write. Keys are `prefix` followed by
    /// the record's name.
    pub fn open(url: &str, prefix: &str) -> StoreResult<Self> {
        let shown = redact_url(url);
        let open_error = |detail: String| StoreError::Connect {
            url: shown.clone(),
            detail,
        };
        let client = redis::Client::open(url).map_err(|e| open_error(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wxpay-redis")
            .enable_all()
            .build()
            .map_err(|e| open_error(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2);
        let pool = (0..POOL_SIZE)
            .map(|_| {
                let (client, config) = (client.clone(), config.clone());
                on(&runtime, ConnectionManager::new_with_config(client, config))
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(&open_error)
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let store = Self {
            runtime: Some(runtime),
            pool,
            next: AtomicUsize::new(0),
            prefix: prefix.to_owned(),
        };
        store.require_durability()?;
        store.load_library()?;
        store.build_spend_index()?;
        store.build_audit_subject_index()?;
        Ok(store)
    }

    /// Loads the store's library, so that the first calls need not; a
    /// server older than Redis 7.0 fails here, with a message that says so.
    fn load_library(&self) -> StoreResult<()> {
        const OP: &str = "load the store's functions";
        on(self.runtime()?, load_library(self.connection()))
            .map_err(|detail| StoreError::Redis { op: OP, detail })?
            .map_err(|e| StoreError::Redis {
                op: OP,
                detail: if e.detail().is_some_and(|d| d.contains("unknown command")) {
                    format!("{e} (the store needs Redis 7.0 or later, for Redis Functions)")
                } else {
                    e.to_string()
                },
            })
    }

    /// Indexes agent spend by minute for orders written before the index
    /// existed (once per prefix; afterwards every change keeps it right).
    fn build_spend_index(&self) -> StoreResult<()> {
        self.build_index("build_spend_index", "indexed agent spend by minute")
    }

    /// Indexes the audit log by subject for events written before the
    /// index existed (once per prefix; afterwards every append keeps it).
    fn build_audit_subject_index(&self) -> StoreResult<()> {
        self.build_index(
            "build_audit_subject_index",
            "indexed the audit log by subject",
        )
    }

    /// Runs a one-time index build; logs how many records it indexed.
    fn build_index(&self, op: &'static str, done: &'static str) -> StoreResult<()> {
        let indexed = fields::integer(&self.call(op, &mut Args::default())?, op)?;
        if indexed > 0 {
            tracing::info!(records = indexed, "{done}");
        }
        Ok(())
    }

    /// The server's persistence settings.
    pub fn settings(&self) -> StoreResult<RedisSettings> {
        Ok(RedisSettings {
            appendonly: self.config_value("appendonly")?,
            appendfsync: self.config_value("appendfsync")?,
            no_appendfsync_on_rewrite: self.config_value("no-appendfsync-on-rewrite")?,
        })
    }

    fn require_durability(&self) -> StoreResult<()> {
        let settings = self.settings()?;
        for (setting, wanted, found) in [
            ("appendonly", "yes", settings.appendonly),
            ("appendfsync", "always", settings.appendfsync),
            (
                "no-appendfsync-on-rewrite",
                "no",
                settings.no_appendfsync_on_rewrite,
            ),
        ] {
            if found != wanted {
                return Err(StoreError::RedisNotDurable {
                    setting,
                    wanted,
                    found,
                });
            }
        }
        Ok(())
    }

    fn config_value(&self, name: &'static str) -> StoreResult<String> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(name);
        let reply = self.command("read server config", cmd)?;
        let value = match &reply {
            Value::Array(items) | Value::Set(items) => items.get(1),
            Value::Map(pairs) => pairs.first().map(|(_, value)| value),
            _ => None,
        };
        match value {
            Some(value) => text(value, "server config"),
            None => Err(StoreError::corrupt("server config", "setting missing")),
        }
    }

    fn connection(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[i].clone()
    }

    fn runtime(&self) -> StoreResult<&tokio::runtime::Runtime> {
        self.runtime.as_ref().ok_or(StoreError::Redis {
            op: "run",
            detail: "the store is shutting down".into(),
        })
    }

    /// Sends one command and waits for its reply.
    fn command(&self, op: &'static str, cmd: redis::Cmd) -> StoreResult<Value> {
        self.round_trip(op, |mut conn| async move {
            cmd.query_async::<Value>(&mut conn).await
        })
    }

    /// Runs one operation of the store function.
    fn call(&self, op: &'static str, args: &mut Args) -> StoreResult<Value> {
        let argv = self.call_argv(op, args);
        self.round_trip(op, move |conn| invoke(conn, argv))
    }

    /// The store function's arguments for `op`.
    fn call_argv(&self, op: &'static str, args: &mut Args) -> Vec<Vec<u8>> {
        let mut argv = Vec::with_capacity(args.0.len() + 2);
        argv.push(self.prefix.as_bytes().to_vec());
        argv.push(op.as_bytes().to_vec());
        argv.append(&mut args.0);
        argv
    }

    /// Starts one operation of the store function on the store's runtime;
    /// the future waits for its reply without holding a thread.
    fn call_later(
        &self,
        op: &'static str,
        args: &mut Args,
    ) -> impl Future<Output = StoreResult<Value>> + Send + 'static {
        let started = self
            .runtime()
            .map(|runtime| runtime.spawn(invoke(self.connection(), self.call_argv(op, args))));
        async move {
            started?
                .await
                .map_err(|e| StoreError::Redis {
                    op,
                    detail: format!("the store's runtime stopped: {e}"),
                })?
                .map_err(|e| StoreError::redis(op, &e))
        }
    }

    /// Runs `request` on a pooled connection, on the store's runtime, and
    /// waits for its reply.
    fn round_trip<F>(
        &self,
        op: &'static str,
        request: impl FnOnce(ConnectionManager) -> F,
    ) -> StoreResult<Value>
    where
        F: Future<Output = redis::RedisResult<Value>> + Send + 'static,
    {
        on(self.runtime()?, request(self.connection()))
            .map_err(|detail| StoreError::Redis { op, detail })?
            .map_err(|e| StoreError::redis(op, &e))
    }

    fn record<T>(
        &self,
        op: &'static str,
        args: &mut Args,
        what: &'static str,
        decode: fn(&Fields) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        record_reply(&self.call(op, args)?, what, decode)
    }

    fn records<T>(
        &self,
        op: &'static str,
        args: &mut Args,
        what: &'static str,
        decode: fn(&Fields) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let reply = self.call(op, args)?;
        list(&reply, what)?
            .iter()
            .map(|item| decode(&Fields::required(item, what)?))
            .collect()
    }

    /// A `{new}` or `{exists, record}` reply.
    fn inserted<T>(
        &self,
        op: &'static str,
        args: &mut Args,
        what: &'static str,
        decode: fn(&Fields) -> StoreResult<T>,
    ) -> StoreResult<Inserted<T>> {
        let reply = self.call(op, args)?;
        match tagged(&reply, what)? {
            (code, _) if code == "new" => Ok(Inserted::New),
            (code, [found, ..]) if code == "exists" => {
                Ok(Inserted::Exists(decode(&Fields::required(found, what)?)?))
            }
            _ => Err(StoreError::corrupt(what, "unknown outcome")),
        }
    }

    fn transition<T>(
        &self,
        op: &'static str,
        args: &mut Args,
        what: &'static str,
        decode: fn(&Fields) -> StoreResult<T>,
    ) -> StoreResult<Transition<T>> {
        transition_reply(&self.call(op, args)?, what, decode)
    }

    fn orders_or_refunds<T>(
        &self,
        op: &'static str,
        states: &[&str],
        older_than_ms: i64,
        limit: u32,
        what: &'static str,
        decode: fn(&Fields) -> StoreResult<T>,
        sort_key: fn(&T) -> (i64, &str),
    ) -> StoreResult<Vec<T>> {
        let mut args = Args::default();
        args.states(states.iter().copied())
            .int(older_than_ms)
            .int(i64::from(limit));
        let mut found = self.records(op, &mut args, what, decode)?;
        found.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(found)
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed on an async
        // thread; shutting it down in the background never blocks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The function's arguments for a payment notification.
fn payment_args(paid: &PaidNotification) -> StoreResult<Args> {
    let mut args = Args::default();
    args.text(&paid.out_trade_no)
        .text(&paid.transaction_id)
        .int(paid.paid_at_ms)
        .bytes(&paid.body)
        .int(paid.at_ms)
        .amount(paid.terms.total_fee, "total_fee")?
        .text(&paid.terms.fee_type)
        .text(paid.terms.sign_type.as_str());
    audit_event(&mut args, paid.audit.as_ref())?;
    Ok(args)
}

/// Calls the store's function with `argv` on `conn`; loads the library
/// and calls again if the server does not have it (a flushed or new
/// server), as `EVALSHA` callers do on `NOSCRIPT`.
async fn invoke(mut conn: ConnectionManager, argv: Vec<Vec<u8>>) -> redis::RedisResult<Value> {
    let mut call = redis::cmd("FCALL");
    call.arg(&LIBRARY.function).arg(0);
    for arg in &argv {
        call.arg(arg.as_slice());
    }
    match call.query_async::<Value>(&mut conn).await {
        Err(e) if is_missing_function(&e) => {
            load_library(conn.clone()).await?;
            call.query_async::<Value>(&mut conn).await
        }
        reply => reply,
    }
}

/// Loads (or loads again) the store's library on the server.
async fn load_library(mut conn: ConnectionManager) -> redis::RedisResult<()> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(&LIBRARY.code)
        .query_async::<Value>(&mut conn)
        .await
        .map(drop)
}

fn is_missing_function(e: &redis::RedisError) -> bool {
    e.code() == Some("ERR") && e.detail() == Some("Function not found")
}

/// A record, or nil when there is none.
fn record_reply<T>(
    reply: &Value,
    what: &'static str,
    decode: fn(&Fields) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    Fields::from_value(reply, what)?
        .as_ref()
        .map(decode)
        .transpose()
}

/// A `{applied|already|refused, record}` or `{missing}` reply.
fn transition_reply<T>(
    reply: &Value,
    what: &'static str,
    decode: fn(&Fields) -> StoreResult<T>,
) -> StoreResult<Transition<T>> {
    let (code, rest) = tagged(reply, what)?;
    let record = || -> StoreResult<T> {
        let value = rest.first().unwrap_or(&Value::Nil);
        decode(&Fields::required(value, what)?)
    };
    Ok(match code.as_str() {
        "applied" => Transition::Applied(record()?),
        "already" => Transition::AlreadyThere(record()?),
        "refused" => Transition::Refused(record()?),
        "missing" => Transition::Missing,
        _ => return Err(StoreError::corrupt(what, "unknown outcome")),
    })
}

/// A payment notification's outcome: the transition, or the order whose
/// terms differ.
fn payment_reply(reply: &Value) -> StoreResult<PaymentApplied> {
    let (code, rest) = tagged(reply, "orders")?;
    if code == "differs" {
        let order = fields::order(&Fields::required(nth(rest, 0, "orders")?, "orders")?)?;
        return Ok(PaymentApplied::TermsDiffer(order));
    }
    transition_reply(reply, "orders", fields::order).map(PaymentApplied::Recorded)
}

/// Runs `future` on the store's runtime and waits for it, from any thread.
fn on<F>(runtime: &tokio::runtime::Runtime, future: F) -> Result<F::Output, String>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (done, result) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        // The receiver only goes away if the caller's thread did.
        let _ = done.send(future.await);
    });
    result
        .recv()
        .map_err(|_| "the store's runtime stopped".to_owned())
}

/// The URL with any password replaced, fit for errors and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<redis url>".to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

fn optional_text(value: &Value, what: &'static str) -> StoreResult<Option<String>> {
    match value {
        Value::Nil => Ok(None),
        other => text(other, what).map(Some),
    }
}

fn text(value: &Value, what: &'static str) -> StoreResult<String> {
    String::from_utf8(fields::bulk(value, what)?.to_vec())
        .map_err(|_| StoreError::corrupt(what, "not UTF-8"))
}

fn list<'v>(value: &'v Value, what: &'static str) -> StoreResult<&'v [Value]> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(StoreError::corrupt(what, "not a list")),
    }
}

/// A `{code, ...}` reply: its code and the rest.
fn tagged<'v>(value: &'v Value, what: &'static str) -> StoreResult<(String, &'v [Value])> {
    match list(value, what)? {
        [code, rest @ ..] => Ok((text(code, what)?, rest)),
        [] => Err(StoreError::corrupt(what, "empty reply")),
    }
}

fn nth<'v>(rest: &'v [Value], i: usize, what: &'static str) -> StoreResult<&'v Value> {
    rest.get(i)
        .ok_or_else(|| StoreError::corrupt(what, "reply too short"))
}

fn order_patch(args: &mut Args, patch: &OrderPatch) {
    args.field("prepay_id", patch.prepay_id.as_deref())
        .field("code_url", patch.code_url.as_deref())
        .field("transaction_id", patch.transaction_id.as_deref())
        .int_field("paid_at_ms", patch.paid_at_ms);
}

/// An audit event to append if the change applies: a count (0 or 6) and
/// the event's fields.
fn audit_event(args: &mut Args, audit: Option<&AuditEventInput>) -> StoreResult<()> {
    match audit {
        None => {
            args.int(0);
        }
        Some(event) => {
            check_audit(event)?;
            args.int(6);
            audit_fields(args, event);
        }
    }
    Ok(())
}

fn audit_fields(args: &mut Args, event: &AuditEventInput) {
    args.int(event.at_ms)
        .text(&event.actor)
        .text(&event.action)
        .text(&event.subject)
        .text(&event.outcome)
        .text(&event.detail);
}

fn approval_input(args: &mut Args, a: &ApprovalInput) -> StoreResult<()> {
    args.text(a.kind.as_str())
        .text(&a.subject)
        .text(&a.agent_id)
        .amount(a.amount_fen, "amount_fen")?
        .text(&a.request_json)
        .int(a.requested_at_ms);
    Ok(())
}

impl Store for RedisStore {
    fn insert_order(&self, order: &Order) -> StoreResult<Inserted<Order>> {
        let mut args = Args::default();
        args.text(&order.out_trade_no)
            .opt(order.agent_id.as_deref())
            .opt(order.idempotency_key.as_deref());
        fields::order_fields(&mut args, order)?;
        self.inserted("insert_order", &mut args, "orders", fields::order)
    }

    fn order(&self, out_trade_no: &str) -> StoreResult<Option<Order>> {
        let mut args = Args::default();
        args.text(out_trade_no);
        self.record("order", &mut args, "orders", fields::order)
    }

    fn fetch_order(&self, out_trade_no: &str) -> StoreFuture<Option<Order>> {
        let mut args = Args::default();
        args.text(out_trade_no);
        let reply = self.call_later("order", &mut args);
        Box::pin(async move { record_reply(&reply.await?, "orders", fields::order) })
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
        let mut args = Args::default();
        args.text(out_trade_no)
            .states(from.iter().map(|s| s.as_str()))
            .text(to.as_str())
            .int(at_ms);
        audit_event(&mut args, audit)?;
        order_patch(&mut args, &patch);
        self.transition("transition_order", &mut args, "orders", fields::order)
    }

    fn orders_in_state(
        &self,
        states: &[OrderState],
        older_than_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Order>> {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        self.orders_or_refunds(
            "orders_in_state",
            &names,
            older_than_ms,
            limit,
            "orders",
            fields::order,
            |o| (o.updated_at_ms, o.out_trade_no.as_str()),
        )
    }

    fn insert_refund(&self, refund: &Refund) -> StoreResult<RefundInsert> {
        let mut args = Args::default();
        args.text(&refund.out_refund_no)
            .text(&refund.out_trade_no)
            .amount(refund.refund_fee, "refund_fee")?
            .text(refund.state.as_str());
        fields::refund_fields(&mut args, refund)?;
        let reply = self.call("insert_refund", &mut args)?;
        let (code, rest) = tagged(&reply, "refunds")?;
        Ok(match code.as_str() {
            "new" => RefundInsert::New,
            "exists" => RefundInsert::Exists(fields::refund(&Fields::required(
                nth(rest, 0, "refunds")?,
                "refunds",
            )?)?),
            "order_missing" => RefundInsert::OrderMissing,
            "exceeds" => RefundInsert::ExceedsOrder {
                total_fee: fields::amount(nth(rest, 0, "refunds")?, "orders.total_fee")?,
                refunded: fields::amount(nth(rest, 1, "refunds")?, "refunds total")?,
            },
            _ => return Err(StoreError::corrupt("refunds", "unknown outcome")),
        })
    }

    fn refund(&self, out_refund_no: &str) -> StoreResult<Option<Refund>> {
        let mut args = Args::default();
        args.text(out_refund_no);
        self.record("refund", &mut args, "refunds", fields::refund)
    }

    fn transition_refund(
        &self,
        out_refund_no: &str,
        from: &[RefundState],
        to: RefundState,
        patch: RefundPatch,
        at_ms: i64,
    ) -> StoreResult<Transition<Refund>> {
        let mut args = Args::default();
        args.text(out_refund_no)
            .states(from.iter().map(|s| s.as_str()))
            .text(to.as_str())
            .int(at_ms)
            .field("refund_id", patch.refund_id.as_deref());
        self.transition("transition_refund", &mut args, "refunds", fields::refund)
    }

    fn refunded_total(&self, out_trade_no: &str) -> StoreResult<u64> {
        let mut args = Args::default();
        args.text(out_trade_no);
        fields::amount(&self.call("refunded_total", &mut args)?, "refunds total")
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
        let mut args = Args::default();
        args.text(kind.as_str())
            .bytes(body)
            .int(at_ms)
            .opt(out_trade_no)
            .opt(dedupe_key)
            .text(&verdict.to_stored());
        fields::integer(
            &self.call("record_notification", &mut args)?,
            "notifications",
        )
    }

    fn notifications(&self, limit: u32, offset: u32) -> StoreResult<Vec<NotificationRecord>> {
        let mut args = Args::default();
        args.int(i64::from(limit)).int(i64::from(offset));
        self.records(
            "notifications",
            &mut args,
            "notifications",
            fields::notification,
        )
    }

    fn append_audit(&self, event: &AuditEventInput) -> StoreResult<i64> {
        check_audit(event)?;
        let mut args = Args::default();
        audit_fields(&mut args, event);
        fields::integer(&self.call("append_audit", &mut args)?, "audit_log")
    }

    fn audit(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let mut args = Args::default();
        args.int(after_seq.max(0)).int(i64::from(limit));
        self.records("audit", &mut args, "audit_log", fields::audit_event)
    }

    fn apply_paid_notification(&self, paid: PaidNotification) -> StoreFuture<PaymentApplied> {
        let mut args = match payment_args(&paid) {
            Ok(args) => args,
            Err(refused) => return Box::pin(std::future::ready(Err(refused))),
        };
        let reply = self.call_later("apply_payment_notification", &mut args);
        Box::pin(async move { payment_reply(&reply.await?) })
    }

    fn refunds_in_state(
        &self,
        states: &[RefundState],
        older_than_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Refund>> {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        self.orders_or_refunds(
            "refunds_in_state",
            &names,
            older_than_ms,
            limit,
            "refunds",
            fields::refund,
            |r| (r.updated_at_ms, r.out_refund_no.as_str()),
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
        let mut args = Args::default();
        args.text(out_refund_no).text(refund_id).text(to.as_str());
        match body {
            Some(body) => args.bytes(&[b"=", body].concat()),
            None => args.opt(None),
        };
        args.int(at_ms);
        audit_event(&mut args, audit)?;
        self.transition("apply_refund_outcome", &mut args, "refunds", fields::refund)
    }

    fn settle_order(&self, out_trade_no: &str, at_ms: i64) -> StoreResult<Option<Order>> {
        let mut args = Args::default();
        args.text(out_trade_no).int(at_ms);
        self.record("settle_order", &mut args, "orders", fields::order)
    }

    fn insert_agent(&self, agent: &AgentRecord) -> StoreResult<bool> {
        let mut args = Args::default();
        args.field("agent_id", Some(&agent.agent_id))
            .field("name", Some(&agent.name))
            .field("token_sha256", Some(&agent.token_sha256))
            .field("grant_json", Some(&agent.grant_json))
            .int_field("created_at_ms", Some(agent.created_at_ms))
            .int_field("expires_at_ms", agent.expires_at_ms)
            .int_field("revoked_at_ms", agent.revoked_at_ms);
        Ok(fields::integer(&self.call("insert_agent", &mut args)?, "agents")? == 1)
    }

    fn agent_by_token(&self, token_sha256: &str) -> StoreResult<Option<AgentRecord>> {
        let mut args = Args::default();
        args.text(token_sha256);
        self.record("agent_by_token", &mut args, "agents", fields::agent)
    }

    fn agent(&self, agent_id: &str) -> StoreResult<Option<AgentRecord>> {
        let mut args = Args::default();
        args.text(agent_id);
        self.record("agent", &mut args, "agents", fields::agent)
    }

    fn agents(&self) -> StoreResult<Vec<AgentRecord>> {
        self.records("agents", &mut Args::default(), "agents", fields::agent)
    }

    fn revoke_agent(&self, agent_id: &str, at_ms: i64) -> StoreResult<Option<AgentRecord>> {
        let mut args = Args::default();
        args.text(agent_id).int(at_ms);
        self.record("revoke_agent", &mut args, "agents", fields::agent)
    }

    fn agent_spend(&self, agent_id: &str, since_ms: i64) -> StoreResult<u64> {
        let mut args = Args::default();
        args.text(agent_id).int(since_ms);
        fields::amount(&self.call("agent_spend", &mut args)?, "agent spend")
    }

    fn admit_agent_payment(
        &self,
        order: &Order,
        approval: Option<&ApprovalInput>,
        limit: Option<SpendLimit>,
    ) -> StoreResult<Admission> {
        let mut args = Args::default();
        args.text(&order.out_trade_no)
            .opt(order.agent_id.as_deref())
            .opt(order.idempotency_key.as_deref())
            .opt_int(limit.map(|l| l.since_ms));
        match limit {
            Some(l) => args.opt(Some(&l.limit_fen.min(1 << 53).to_string())),
            None => args.opt(None),
        };
        args.amount(order.total_fee, "total_fee")?;
        match approval {
            Some(approval) => {
                args.int(6);
                approval_input(&mut args, approval)?;
            }
            None => {
                args.int(0);
            }
        }
        fields::order_fields(&mut args, order)?;
        let reply = self.call("admit_agent_payment", &mut args)?;
        let (code, rest) = tagged(&reply, "orders")?;
        let first = || nth(rest, 0, "orders");
        Ok(match code.as_str() {
            "ordered" => Admission::Ordered,
            "awaiting" => Admission::AwaitingApproval(fields::approval(&Fields::required(
                first()?,
                "approvals",
            )?)?),
            "order_exists" => {
                Admission::OrderExists(fields::order(&Fields::required(first()?, "orders")?)?)
            }
            "approval_exists" => Admission::ApprovalExists(fields::approval(&Fields::required(
                first()?,
                "approvals",
            )?)?),
            "over_budget" => Admission::OverBudget {
                spent_fen: fields::amount(first()?, "agent spend")?,
            },
            _ => return Err(StoreError::corrupt("orders", "unknown outcome")),
        })
    }

    fn insert_approval(&self, approval: &ApprovalInput) -> StoreResult<Inserted<Approval>> {
        let mut args = Args::default();
        approval_input(&mut args, approval)?;
        self.inserted("insert_approval", &mut args, "approvals", fields::approval)
    }

    fn approval(&self, kind: ApprovalKind, subject: &str) -> StoreResult<Option<Approval>> {
        let mut args = Args::default();
        args.text(kind.as_str()).text(subject);
        self.record("approval", &mut args, "approvals", fields::approval)
    }

    fn approval_by_id(&self, id: i64) -> StoreResult<Option<Approval>> {
        let mut args = Args::default();
        args.int(id);
        self.record("approval_by_id", &mut args, "approvals", fields::approval)
    }

    fn approvals(&self, state: Option<ApprovalState>, limit: u32) -> StoreResult<Vec<Approval>> {
        let mut args = Args::default();
        args.opt(state.map(ApprovalState::as_str))
            .int(i64::from(limit));
        self.records("approvals", &mut args, "approvals", fields::approval)
    }

    fn decide_approval(
        &self,
        id: i64,
        to: ApprovalState,
        decided_by: &str,
        reason: Option<&str>,
        at_ms: i64,
    ) -> StoreResult<Transition<Approval>> {
        let mut args = Args::default();
        args.int(id)
            .text(to.as_str())
            .text(decided_by)
            .opt(reason)
            .int(at_ms);
        self.transition("decide_approval", &mut args, "approvals", fields::approval)
    }

    fn register_topup(
        &self,
        out_trade_no: &str,
        payer_id: &str,
        agent_id: Option<&str>,
        at_ms: i64,
    ) -> StoreResult<String> {
        let mut args = Args::default();
        args.text(out_trade_no)
            .text(payer_id)
            .opt(agent_id)
            .int(at_ms);
        text(&self.call("register_topup", &mut args)?, "topups")
    }

    fn charge(&self, charge: &ChargeInput) -> StoreResult<Charge> {
        if charge.amount_fen == 0 {
            return Err(StoreError::InvalidInput {
                field: "amount_fen",
                reason: "a charge is at least 1 fen".into(),
            });
        }
        let mut args = Args::default();
        args.text(&charge.payer_id)
            .amount(charge.amount_fen, "amount_fen")?
            .text(&charge.reference)
            .text(&charge.agent_id)
            .opt(charge.note.as_deref())
            .int(charge.at_ms);
        let reply = self.call("charge", &mut args)?;
        let (code, rest) = tagged(&reply, "ledger")?;
        let entry = || -> StoreResult<LedgerEntry> {
            fields::ledger_entry(&Fields::required(nth(rest, 0, "ledger")?, "ledger")?)
        };
        let balance = |i| fields::amount(nth(rest, i, "ledger")?, "balance");
        Ok(match code.as_str() {
            "charged" => Charge::Charged {
                entry: entry()?,
                balance_fen: balance(1)?,
            },
            "exists" => Charge::Exists {
                entry: entry()?,
                balance_fen: balance(1)?,
            },
            "insufficient" => Charge::InsufficientFunds {
                balance_fen: balance(0)?,
            },
            _ => return Err(StoreError::corrupt("ledger", "unknown outcome")),
        })
    }

    fn balance(&self, payer_id: &str) -> StoreResult<u64> {
        let mut args = Args::default();
        args.text(payer_id);
        fields::amount(&self.call("balance", &mut args)?, "balance")
    }

    fn ledger(&self, payer_id: &str, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut args = Args::default();
        args.text(payer_id).int(i64::from(limit));
        self.records("ledger", &mut args, "ledger", fields::ledger_entry)
    }

    fn open_meter(
        &self,
        meter_id: &str,
        agent_id: &str,
        payer_id: &str,
        at_ms: i64,
    ) -> StoreResult<Meter> {
        let mut args = Args::default();
        args.text(meter_id).text(agent_id).text(payer_id).int(at_ms);
        let reply = self.call("open_meter", &mut args)?;
        fields::meter(&Fields::required(&reply, "meters")?)
    }

    fn add_usage(
        &self,
        meter_id: &str,
        reference: &str,
        amount_fen: u64,
        note: Option<&str>,
        at_ms: i64,
    ) -> StoreResult<Usage> {
        let mut args = Args::default();
        args.text(meter_id)
            .text(reference)
            .amount(amount_fen, "amount_fen")?
            .opt(note)
            .int(at_ms);
        let reply = self.call("add_usage", &mut args)?;
        let (code, rest) = tagged(&reply, "meters")?;
        let meter = || fields::meter(&Fields::required(nth(rest, 0, "meters")?, "meters")?);
        Ok(match code.as_str() {
            "added" => Usage::Added(meter()?),
            "exists" => Usage::Exists {
                meter: meter()?,
                amount_fen: fields::amount(nth(rest, 1, "meters")?, "usage amount")?,
            },
            "settled" => Usage::Settled(meter()?),
            "missing" => Usage::Missing,
            _ => return Err(StoreError::corrupt("meters", "unknown outcome")),
        })
    }

    fn meter(&self, meter_id: &str) -> StoreResult<Option<Meter>> {
        let mut args = Args::default();
        args.text(meter_id);
        self.record("meter", &mut args, "meters", fields::meter)
    }

    fn settle_meter(
        &self,
        meter_id: &str,
        out_trade_no: &str,
        at_ms: i64,
    ) -> StoreResult<Option<Meter>> {
        let mut args = Args::default();
        args.text(meter_id).text(out_trade_no).int(at_ms);
        self.record("settle_meter", &mut args, "meters", fields::meter)
    }

    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<bool> {
        let mut args = Args::default();
        args.text(name).text(holder).int(now_ms).int(until_ms);
        Ok(fields::integer(&self.call("acquire_lease", &mut args)?, "leases")? == 1)
    }

    fn latest_audit_seq(&self) -> StoreResult<i64> {
        fields::integer(
            &self.call("latest_audit_seq", &mut Args::default())?,
            "audit log",
        )
    }

    fn audit_about(&self, subject: &str, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let mut args = Args::default();
        args.text(subject).int(i64::from(limit));
        self.records("audit_about", &mut args, "audit_log", fields::audit_event)
    }

    fn order_refunds(&self, out_trade_no: &str) -> StoreResult<Vec<Refund>> {
        let mut args = Args::default();
        args.text(out_trade_no);
        let mut refunds = self.records("order_refunds", &mut args, "refunds", fields::refund)?;
        refunds.sort_by(|a, b| {
            (a.created_at_ms, &a.out_refund_no).cmp(&(b.created_at_ms, &b.out_refund_no))
        });
        Ok(refunds)
    }

    fn put_console_record(&self, record: &ConsoleRecord, now_ms: i64) -> StoreResult<()> {
        let mut args = Args::default();
        args.text(record.kind.as_str())
            .text(&record.key)
            .text(&record.value)
            .opt_int(record.expires_at_ms)
            .int(now_ms);
        self.call("put_console_record", &mut args).map(drop)
    }

    fn console_record(
        &self,
        kind: ConsoleKind,
        key: &str,
        now_ms: i64,
    ) -> StoreResult<Option<String>> {
        let mut args = Args::default();
        args.text(kind.as_str()).text(key).int(now_ms);
        optional_text(&self.call("console_record", &mut args)?, "console record")
    }

    fn take_console_record(
        &self,
        kind: ConsoleKind,
        key: &str,
        now_ms: i64,
    ) -> StoreResult<Option<String>> {
        let mut args = Args::default();
        args.text(kind.as_str()).text(key).int(now_ms);
        optional_text(
            &self.call("take_console_record", &mut args)?,
            "console record",
        )
    }

    fn console_records(
        &self,
        kind: ConsoleKind,
        now_ms: i64,
    ) -> StoreResult<Vec<(String, String)>> {
        let mut args = Args::default();
        args.text(kind.as_str()).int(now_ms);
        let reply = self.call("console_records", &mut args)?;
        list(&reply, "console records")?
            .chunks(2)
            .map(|pair| match pair {
                [name, value] => Ok((
                    text(name, "console record")?,
                    text(value, "console record")?,
                )),
                _ => Err(StoreError::corrupt("console records", "odd length")),
            })
            .collect()
    }

    fn approvals_to_carry_out(&self, limit: u32) -> StoreResult<Vec<Approval>> {
        let mut args = Args::default();
        args.int(i64::from(limit));
        self.records(
            "approvals_to_carry_out",
            &mut args,
            "approvals",
            fields::approval,
        )
    }
}
