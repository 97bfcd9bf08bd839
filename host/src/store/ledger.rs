//! Prepaid balances: an append-only ledger per payer.
//!
//! Why a ledger and not a balance column: a balance that is the sum of
//! immutable entries can be audited and cannot drift. Top-ups are credited
//! in the same transaction that records their order as paid — by a
//! verified notification or a verified orderquery — and only once (one
//! entry per order, enforced by a unique key). A charge checks the balance
//! and appends its debit in one transaction, so concurrent charges can
//! never take a balance below zero.

use rusqlite::{Connection, Row, params};

use super::StoreResult;
use super::error::{SqlContext as _, StoreError};
use super::rows::{from_sql_int, to_sql_int};

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Its number, increasing.
    pub seq: i64,
    /// Whose balance.
    pub payer_id: String,
    /// Fen: positive for a top-up, negative for a charge.
    pub amount_fen: i64,
    /// `topup` or `charge`.
    pub kind: String,
    /// The top-up's order number, or the charge's key.
    pub reference: String,
    /// The agent that caused it.
    pub agent_id: Option<String>,
    /// The charge's note.
    pub note: Option<String>,
    /// When.
    pub at_ms: i64,
}

/// A debit to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeInput {
    /// Whose balance.
    pub payer_id: String,
    /// Fen to debit, at least 1.
    pub amount_fen: u64,
    /// Unique per charge: the same reference is the same charge.
    pub reference: String,
    /// The agent charging.
    pub agent_id: String,
    /// What it was for.
    pub note: Option<String>,
    /// When.
    pub at_ms: i64,
}

/// The outcome of a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Charge {
    /// Debited; the balance after it.
    Charged {
        /// The entry written.
        entry: LedgerEntry,
        /// The balance now.
        balance_fen: u64,
    },
    /// A charge with this reference exists; nothing was written.
    Exists {
        /// The entry found.
        entry: LedgerEntry,
        /// The balance now.
        balance_fen: u64,
    },
    /// The balance is too small; nothing was written.
    InsufficientFunds {
        /// The balance now.
        balance_fen: u64,
    },
}

pub(super) const LEDGER_COLUMNS: &str =
    "seq, payer_id, amount_fen, kind, ref, agent_id, note, at_ms";

pub(super) fn entry_row(row: &Row<'_>) -> StoreResult<LedgerEntry> {
    Ok(LedgerEntry {
        seq: row.get(0).ctx("read ledger")?,
        payer_id: row.get(1).ctx("read ledger")?,
        amount_fen: row.get(2).ctx("read ledger")?,
        kind: row.get(3).ctx("read ledger")?,
        reference: row.get(4).ctx("read ledger")?,
        agent_id: row.get(5).ctx("read ledger")?,
        note: row.get(6).ctx("read ledger")?,
        at_ms: row.get(7).ctx("read ledger")?,
    })
}

/// The payer's balance: the sum of its entries, never negative.
pub(super) fn balance_in(conn: &Connection, payer_id: &str) -> StoreResult<u64> {
    let sum: i64 = conn
        .prepare_cached("SELECT COALESCE(SUM(amount_fen), 0) FROM ledger WHERE payer_id = ?1")
        .and_then(|mut stmt| stmt.query_row(params![payer_id], |r| r.get(0)))
        .ctx("sum ledger")?;
    from_sql_int(sum, "balance")
}

fn entry_by_ref(
    conn: &Connection,
    kind: &str,
    reference: &str,
) -> StoreResult<Option<LedgerEntry>> {
    let sql = format!("SELECT {LEDGER_COLUMNS} FROM ledger WHERE kind = ?1 AND ref = ?2");
    let mut stmt = conn.prepare_cached(&sql).ctx("read ledger")?;
    let mut rows = stmt.query(params![kind, reference]).ctx("read ledger")?;
    rows.next().ctx("read ledger")?.map(entry_row).transpose()
}

/// Credits a paid top-up order, once; a no-op for other orders.
pub(super) fn credit_topup_in(
    conn: &Connection,
    out_trade_no: &str,
    at_ms: i64,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO ledger (payer_id, amount_fen, kind, ref, agent_id, note, at_ms)
         SELECT t.payer_id, o.total_fee, 'topup', t.out_trade_no, t.agent_id, NULL, ?2
           FROM topups t JOIN orders o ON o.out_trade_no = t.out_trade_no
          WHERE t.out_trade_no = ?1 AND o.total_fee > 0",
    )
    .and_then(|mut stmt| stmt.execute(params![out_trade_no, at_ms]))
    .ctx("credit top-up")?;
    Ok(())
}

/// Records that an order is a top-up for a payer. Returns the payer the
/// order is recorded for (the given one, or an earlier one).
pub(super) fn register_topup_in(
    conn: &Connection,
    out_trade_no: &str,
    payer_id: &str,
    agent_id: Option<&str>,
    at_ms: i64,
) -> StoreResult<String> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO topups (out_trade_no, payer_id, agent_id, created_at_ms)
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut stmt| stmt.execute(params![out_trade_no, payer_id, agent_id, at_ms]))
    .ctx("register top-up")?;
    conn.prepare_cached("SELECT payer_id FROM topups WHERE out_trade_no = ?1")
        .and_then(|mut stmt| stmt.query_row(params![out_trade_no], |r| r.get(0)))
        .ctx("read top-up")
}

/// The debit, checked against the balance in the same transaction.
pub(super) fn charge_in(conn: &Connection, charge: &ChargeInput) -> StoreResult<Charge> {
    if charge.amount_fen == 0 {
        return Err(StoreError::InvalidInput {
            field: "amount_fen",
            reason: "a charge is at least 1 fen".into(),
        });
    }
    if let Some(entry) = entry_by_ref(conn, "charge", &charge.reference)? {
        let balance_fen = balance_in(conn, &entry.payer_id)?;
        return Ok(Charge::Exists { entry, balance_fen });
    }
    let balance = balance_in(conn, &charge.payer_id)?;
    if balance < charge.amount_fen {
        return Ok(Charge::InsufficientFunds {
            balance_fen: balance,
        });
    }
    let debit = -to_sql_int(charge.amount_fen, "amount_fen")?;
    conn.prepare_cached(
        "INSERT INTO ledger (payer_id, amount_fen, kind, ref, agent_id, note, at_ms)
         VALUES (?1, ?2, 'charge', ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            charge.payer_id,
            debit,
            charge.reference,
            charge.agent_id,
            charge.note,
            charge.at_ms
        ])
    })
    .ctx("append charge")?;
    let entry = entry_by_ref(conn, "charge", &charge.reference)?
        .ok_or_else(|| StoreError::corrupt("ledger", "an appended charge is missing"))?;
    Ok(Charge::Charged {
        entry,
        balance_fen: balance - charge.amount_fen,
    })
}
