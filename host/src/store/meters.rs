//! Metering sessions: usage accumulated in small amounts and settled as
//! one payment, so a session of many cheap prompts costs one WeChat fee.
//!
//! Usage can be added only while the meter is open; settling closes it in
//! the same compare-and-set that records the settlement's order number, so
//! no usage lands after the amount was fixed.

use rusqlite::{Connection, Row, params};

use super::StoreResult;
use super::error::{SqlContext as _, StoreError};
use super::rows::{from_sql_int, to_sql_int};

/// A meter as stored, with its accumulated total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meter {
    /// Its id.
    pub meter_id: String,
    /// The agent that opened it.
    pub agent_id: String,
    /// The payer it meters.
    pub payer_id: String,
    /// The settlement order, once settled.
    pub out_trade_no: Option<String>,
    /// When it was opened.
    pub created_at_ms: i64,
    /// When it was settled.
    pub settled_at_ms: Option<i64>,
    /// The sum of its usage, in fen.
    pub total_fen: u64,
}

/// The outcome of adding usage.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Usage {
    /// Added; the meter as it is now.
    Added(Meter),
    /// Usage with this reference exists (its amount given); nothing written.
    Exists {
        /// The meter as it is.
        meter: Meter,
        /// The amount recorded under the reference.
        amount_fen: u64,
    },
    /// The meter is settled; nothing written.
    Settled(Meter),
    /// No such meter.
    Missing,
}

pub(super) fn select_meter(conn: &Connection, meter_id: &str) -> StoreResult<Option<Meter>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT m.meter_id, m.agent_id, m.payer_id, m.out_trade_no, m.created_at_ms,
                    m.settled_at_ms,
                    (SELECT COALESCE(SUM(amount_fen), 0) FROM meter_usage u WHERE u.meter_id = m.meter_id)
               FROM meters m WHERE m.meter_id = ?1",
        )
        .ctx("read meter")?;
    let mut rows = stmt.query(params![meter_id]).ctx("read meter")?;
    rows.next().ctx("read meter")?.map(meter_row).transpose()
}

fn meter_row(row: &Row<'_>) -> StoreResult<Meter> {
    let total: i64 = row.get(6).ctx("read meter")?;
    Ok(Meter {
        meter_id: row.get(0).ctx("read meter")?,
        agent_id: row.get(1).ctx("read meter")?,
        payer_id: row.get(2).ctx("read meter")?,
        out_trade_no: row.get(3).ctx("read meter")?,
        created_at_ms: row.get(4).ctx("read meter")?,
        settled_at_ms: row.get(5).ctx("read meter")?,
        total_fen: from_sql_int(total, "meter total")?,
    })
}

pub(super) fn open_meter_in(
    conn: &Connection,
    meter_id: &str,
    agent_id: &str,
    payer_id: &str,
    at_ms: i64,
) -> StoreResult<Meter> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO meters (meter_id, agent_id, payer_id, created_at_ms)
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut stmt| stmt.execute(params![meter_id, agent_id, payer_id, at_ms]))
    .ctx("open meter")?;
    select_meter(conn, meter_id)?
        .ok_or_else(|| StoreError::corrupt("meters", "an opened meter is missing"))
}

pub(super) fn add_usage_in(
    conn: &Connection,
    meter_id: &str,
    reference: &str,
    amount_fen: u64,
    note: Option<&str>,
    at_ms: i64,
) -> StoreResult<Usage> {
    let Some(meter) = select_meter(conn, meter_id)? else {
        return Ok(Usage::Missing);
    };
    let existing: Option<i64> = conn
        .prepare_cached("SELECT amount_fen FROM meter_usage WHERE ref = ?1")
        .and_then(|mut stmt| {
            let mut rows = stmt.query(params![reference])?;
            rows.next()?.map(|r| r.get(0)).transpose()
        })
        .ctx("read usage")?;
    if let Some(amount) = existing {
        return Ok(Usage::Exists {
            meter,
            amount_fen: from_sql_int(amount, "usage amount")?,
        });
    }
    if meter.settled_at_ms.is_some() {
        return Ok(Usage::Settled(meter));
    }
    let amount = to_sql_int(amount_fen, "amount_fen")?;
    conn.prepare_cached(
        "INSERT INTO meter_usage (meter_id, ref, amount_fen, note, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| stmt.execute(params![meter_id, reference, amount, note, at_ms]))
    .ctx("add usage")?;
    let now = select_meter(conn, meter_id)?
        .ok_or_else(|| StoreError::corrupt("meters", "a metered meter is missing"))?;
    Ok(Usage::Added(now))
}

/// Closes an open meter, recording its settlement order; a settled meter
/// is returned as it is (its own order number).
pub(super) fn settle_in(
    conn: &Connection,
    meter_id: &str,
    out_trade_no: &str,
    at_ms: i64,
) -> StoreResult<Option<Meter>> {
    conn.prepare_cached(
        "UPDATE meters SET out_trade_no = ?2, settled_at_ms = ?3
         WHERE meter_id = ?1 AND settled_at_ms IS NULL",
    )
    .and_then(|mut stmt| stmt.execute(params![meter_id, out_trade_no, at_ms]))
    .ctx("settle meter")?;
    select_meter(conn, meter_id)
}
