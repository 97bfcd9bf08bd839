//! The SQLite schema, as an ordered list of migrations.
//!
//! A migration is never edited once released: a change is a new entry at
//! the end. At open, the migrations the database has not seen are applied
//! in one transaction, each recorded in `schema_migrations`, so a crash
//! leaves the database at the old version or the new one, never between.
//! A database that records a version this build does not know is refused.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::error::{SqlContext as _, StoreError};

/// One step of the schema.
struct Migration {
    /// Its number: 1, 2, 3, … with no gaps.
    version: i64,
    /// The SQL it runs (several statements).
    sql: &'static str,
}

/// Every migration, in order.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: V1_INITIAL,
    },
    Migration {
        version: 2,
        sql: V2_REFUND_RECONCILIATION,
    },
    Migration {
        version: 3,
        sql: V3_AGENTS,
    },
    Migration {
        version: 4,
        sql: V4_LEDGER,
    },
    Migration {
        version: 5,
        sql: V5_METERS,
    },
    Migration {
        version: 6,
        sql: V6_LEASES,
    },
    Migration {
        version: 7,
        sql: V7_CONSOLE,
    },
];

/// The highest schema version this build knows.
pub(crate) const KNOWN_VERSION: i64 = 7;

/// The operator console's records (invites, operators and their passkeys,
/// sessions, ceremonies in flight), as JSON documents the console owns; and
/// the audit log by subject, for a payment's history.
const V7_CONSOLE: &str = "
CREATE TABLE console_records (
    kind          TEXT NOT NULL,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    expires_at_ms INTEGER,
    PRIMARY KEY (kind, key)
) STRICT;
CREATE INDEX audit_log_subject ON audit_log (subject, seq);
";

/// Named leases, so gateways sharing a store take turns at periodic work
/// (one reconciles at a time) instead of all asking WeChat the same thing.
const V6_LEASES: &str = "
CREATE TABLE leases (
    name          TEXT PRIMARY KEY NOT NULL,
    holder        TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
) STRICT;
";

/// Metering sessions: small usage charges accumulated and settled as one
/// payment.
const V5_METERS: &str = "
CREATE TABLE meters (
    meter_id      TEXT PRIMARY KEY NOT NULL,
    agent_id      TEXT NOT NULL,
    payer_id      TEXT NOT NULL,
    out_trade_no  TEXT,
    created_at_ms INTEGER NOT NULL,
    settled_at_ms INTEGER
) STRICT;

CREATE TABLE meter_usage (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    meter_id   TEXT NOT NULL REFERENCES meters (meter_id),
    ref        TEXT NOT NULL UNIQUE,
    amount_fen INTEGER NOT NULL CHECK (amount_fen > 0),
    note       TEXT,
    at_ms      INTEGER NOT NULL
) STRICT;
CREATE INDEX meter_usage_meter ON meter_usage (meter_id);
";

/// Prepaid balances: an append-only ledger per payer (a balance is the sum
/// of its entries), and the top-up orders whose payment credits it.
const V4_LEDGER: &str = "
CREATE TABLE ledger (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    payer_id  TEXT NOT NULL,
    amount_fen INTEGER NOT NULL CHECK (amount_fen != 0),
    kind      TEXT NOT NULL CHECK (kind IN ('topup', 'charge')),
    ref       TEXT NOT NULL,
    agent_id  TEXT,
    note      TEXT,
    at_ms     INTEGER NOT NULL,
    UNIQUE (kind, ref)
) STRICT;
CREATE INDEX ledger_payer ON ledger (payer_id, seq);
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only');
END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only');
END;

CREATE TABLE topups (
    out_trade_no TEXT PRIMARY KEY NOT NULL,
    payer_id     TEXT NOT NULL,
    agent_id     TEXT,
    created_at_ms INTEGER NOT NULL
) STRICT;
";

/// Agents with their grants, and the approval queue. A payment or refund
/// waiting for a human lives in `approvals` (with the request that will be
/// sent when approved) and becomes an order or refund only when approved.
const V3_AGENTS: &str = "
CREATE TABLE agents (
    agent_id      TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    token_sha256  TEXT NOT NULL UNIQUE,
    grant_json    TEXT NOT NULL CHECK (json_valid(grant_json)),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER,
    revoked_at_ms INTEGER
) STRICT;

CREATE TABLE approvals (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL CHECK (kind IN ('payment', 'refund')),
    subject         TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    amount_fen      INTEGER NOT NULL CHECK (amount_fen >= 0),
    request_json    TEXT NOT NULL CHECK (json_valid(request_json)),
    state           TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied')),
    reason          TEXT,
    decided_by      TEXT,
    requested_at_ms INTEGER NOT NULL,
    decided_at_ms   INTEGER,
    UNIQUE (kind, subject)
) STRICT;
CREATE INDEX approvals_state ON approvals (state, id);

-- Budgets: an agent's orders in a time window.
CREATE INDEX orders_agent_created ON orders (agent_id, created_at_ms);
";

/// Reconciliation lists refunds by state and age, as it does orders.
const V2_REFUND_RECONCILIATION: &str = "
CREATE INDEX refunds_state_updated ON refunds (state, updated_at_ms);
";

const V1_INITIAL: &str = "
CREATE TABLE orders (
    out_trade_no    TEXT PRIMARY KEY NOT NULL,
    mch_id          TEXT NOT NULL,
    appid           TEXT NOT NULL,
    product_id      TEXT,
    quantity        INTEGER NOT NULL CHECK (quantity >= 0),
    total_fee       INTEGER NOT NULL CHECK (total_fee >= 0),
    fee_type        TEXT NOT NULL,
    sign_type       TEXT NOT NULL CHECK (sign_type IN ('MD5', 'HMAC-SHA256')),
    trade_type      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('created', 'pending', 'paid', 'closed',
                        'failed', 'refunding', 'refunded', 'reversed')),
    prepay_id       TEXT,
    code_url        TEXT,
    transaction_id  TEXT,
    idempotency_key TEXT,
    agent_id        TEXT,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    paid_at_ms      INTEGER,
    version         INTEGER NOT NULL CHECK (version >= 1)
) STRICT;

-- One order per (agent, idempotency key); NULLs never collide.
CREATE UNIQUE INDEX orders_idempotency ON orders (agent_id, idempotency_key)
    WHERE agent_id IS NOT NULL AND idempotency_key IS NOT NULL;
-- Reconciliation: orders in a state, oldest change first.
CREATE INDEX orders_state_updated ON orders (state, updated_at_ms);

CREATE TABLE refunds (
    out_refund_no TEXT PRIMARY KEY NOT NULL,
    out_trade_no  TEXT NOT NULL REFERENCES orders (out_trade_no),
    refund_fee    INTEGER NOT NULL CHECK (refund_fee >= 0),
    state         TEXT NOT NULL CHECK (state IN ('requested', 'processing', 'succeeded',
                      'closed', 'failed')),
    refund_id     TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 1)
) STRICT;
CREATE INDEX refunds_order ON refunds (out_trade_no);

-- Every notification as received, also for orders we do not know,
-- so no foreign key on out_trade_no.
CREATE TABLE notifications (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL CHECK (kind IN ('payment', 'refund')),
    received_at_ms INTEGER NOT NULL,
    body           BLOB NOT NULL,
    verdict        TEXT NOT NULL CHECK (verdict IN ('accepted', 'duplicate')
                       OR verdict LIKE 'rejected:%'),
    out_trade_no   TEXT,
    dedupe_key     TEXT
) STRICT;
CREATE INDEX notifications_order ON notifications (out_trade_no);
CREATE INDEX notifications_dedupe ON notifications (dedupe_key);

-- The evidence is not rewritten.
CREATE TRIGGER notifications_no_update BEFORE UPDATE ON notifications
BEGIN
    SELECT RAISE(ABORT, 'notifications are immutable');
END;

CREATE TABLE audit_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL CHECK (json_valid(detail))
) STRICT;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
";

/// Brings the schema up to [`KNOWN_VERSION`], or refuses a newer one.
/// Returns the version the database is at afterwards.
pub(crate) fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    debug_assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(KNOWN_VERSION));
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("begin migration")?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version       INTEGER PRIMARY KEY NOT NULL,
            applied_at_ms INTEGER NOT NULL
        ) STRICT;",
    )
    .ctx("create schema_migrations")?;
    let current = applied_version(&tx)?;
    if current > KNOWN_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: KNOWN_VERSION,
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.execute_batch(migration.sql).ctx("apply migration")?;
        // The one clock read in the store, by SQLite and for this
        // bookkeeping column only; no behaviour depends on it.
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at_ms)
             VALUES (?1, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
            params![migration.version],
        )
        .ctx("record migration")?;
    }
    tx.commit().ctx("commit migration")?;
    Ok(KNOWN_VERSION)
}

/// The highest applied version (0 for a new database), after checking that
/// versions 1..=highest are all recorded.
fn applied_version(conn: &Connection) -> Result<i64, StoreError> {
    let (count, max): (i64, Option<i64>) = conn
        .query_row(
            "SELECT COUNT(*), MAX(version) FROM schema_migrations",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .ctx("read schema version")?
        .unwrap_or((0, None));
    let max = max.unwrap_or(0);
    if max > KNOWN_VERSION {
        return Ok(max);
    }
    if count != max {
        return Err(StoreError::corrupt(
            "schema_migrations",
            format!("{count} versions recorded, the highest is {max}"),
        ));
    }
    Ok(max)
}
