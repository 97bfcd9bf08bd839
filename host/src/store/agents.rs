//! What the store keeps about agents: who they are (by the hash of their
//! token), what they were granted, and the approval queue — with the
//! SQLite statements that read and write them.
//!
//! The store does not interpret a grant: it keeps it as JSON for the
//! [`agents`](crate::agents) module, which owns its meaning. It only
//! enforces what must be atomic with a write: an agent's spend in a window
//! checked in the same transaction as the order or approval that adds to it.

use std::fmt;

use rusqlite::{Connection, Row, params};

use super::StoreResult;
use super::error::{SqlContext as _, StoreError};
use super::rows::{from_sql_int, to_sql_int};
use super::types::{Order, Transition};

/// An agent as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// Its id, unique.
    pub agent_id: String,
    /// A name for people.
    pub name: String,
    /// Hex SHA-256 of its bearer token; the token itself is never stored.
    pub token_sha256: String,
    /// The grant, as JSON.
    pub grant_json: String,
    /// When it was added.
    pub created_at_ms: i64,
    /// When its token stops working.
    pub expires_at_ms: Option<i64>,
    /// When it was revoked.
    pub revoked_at_ms: Option<i64>,
}

/// Whether an agent's token works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    /// It works.
    Active,
    /// The operator revoked it.
    Revoked,
    /// Its lifetime ended.
    Expired,
}

impl AgentStatus {
    /// The word for people.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

impl AgentRecord {
    /// Whether its token works at `now_ms`; a revoked token is revoked
    /// even after it would have expired.
    pub fn status(&self, now_ms: i64) -> AgentStatus {
        if self.revoked_at_ms.is_some() {
            AgentStatus::Revoked
        } else if self.expires_at_ms.is_some_and(|at| at <= now_ms) {
            AgentStatus::Expired
        } else {
            AgentStatus::Active
        }
    }
}

impl fmt::Debug for AgentRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRecord")
            .field("agent_id", &self.agent_id)
            .field("name", &self.name)
            .field("grant_json", &self.grant_json)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("revoked_at_ms", &self.revoked_at_ms)
            .finish_non_exhaustive()
    }
}

/// What an approval is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalKind {
    /// A payment over the agent's approval threshold.
    Payment,
    /// A refund.
    Refund,
}

impl ApprovalKind {
    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Refund => "refund",
        }
    }

    /// Reads the stored spelling, exactly.
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Payment, Self::Refund]
            .into_iter()
            .find(|k| k.as_str() == value)
    }
}

/// Where an approval is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalState {
    /// Waiting for a person.
    Pending,
    /// Approved: the payment or refund was (or is being) sent.
    Approved,
    /// Denied: nothing was sent.
    Denied,
}

impl ApprovalState {
    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
        }
    }

    /// Reads the stored spelling, exactly.
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Denied]
            .into_iter()
            .find(|s| s.as_str() == value)
    }
}

impl fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new approval request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalInput {
    /// Payment or refund.
    pub kind: ApprovalKind,
    /// The `out_trade_no` or `out_refund_no` it will create.
    pub subject: String,
    /// The agent asking.
    pub agent_id: String,
    /// The amount in fen.
    pub amount_fen: u64,
    /// The request to carry out when approved, as JSON.
    pub request_json: String,
    /// When it was asked.
    pub requested_at_ms: i64,
}

/// An approval as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Its number.
    pub id: i64,
    /// Payment or refund.
    pub kind: ApprovalKind,
    /// The `out_trade_no` or `out_refund_no`.
    pub subject: String,
    /// The agent that asked.
    pub agent_id: String,
    /// The amount in fen.
    pub amount_fen: u64,
    /// The request to carry out, as JSON.
    pub request_json: String,
    /// Where it is.
    pub state: ApprovalState,
    /// The decider's reason.
    pub reason: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When it was asked.
    pub requested_at_ms: i64,
    /// When it was decided.
    pub decided_at_ms: Option<i64>,
}

/// A spending limit checked atomically with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendLimit {
    /// The window starts here (ms since the epoch).
    pub since_ms: i64,
    /// The most the agent may have committed in the window, in fen.
    pub limit_fen: u64,
}

/// The outcome of admitting an agent's payment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Admission {
    /// The order was stored.
    Ordered,
    /// The approval request was stored; the order waits for it.
    AwaitingApproval(Approval),
    /// An order with this number or key exists; nothing was written.
    OrderExists(Order),
    /// An approval for this order number exists; nothing was written.
    ApprovalExists(Approval),
    /// The payment would take the agent past its budget; nothing was written.
    OverBudget {
        /// What the agent has committed in the window.
        spent_fen: u64,
    },
}

pub(super) const AGENT_COLUMNS: &str =
    "agent_id, name, token_sha256, grant_json, created_at_ms, expires_at_ms, revoked_at_ms";

pub(super) const APPROVAL_COLUMNS: &str = "id, kind, subject, agent_id, amount_fen, request_json, \
    state, reason, decided_by, requested_at_ms, decided_at_ms";

pub(super) fn agent_row(row: &Row<'_>) -> StoreResult<AgentRecord> {
    Ok(AgentRecord {
        agent_id: row.get(0).ctx("read agent")?,
        name: row.get(1).ctx("read agent")?,
        token_sha256: row.get(2).ctx("read agent")?,
        grant_json: row.get(3).ctx("read agent")?,
        created_at_ms: row.get(4).ctx("read agent")?,
        expires_at_ms: row.get(5).ctx("read agent")?,
        revoked_at_ms: row.get(6).ctx("read agent")?,
    })
}

pub(super) fn approval_row(row: &Row<'_>) -> StoreResult<Approval> {
    let kind: String = row.get(1).ctx("read approval")?;
    let state: String = row.get(6).ctx("read approval")?;
    let amount: i64 = row.get(4).ctx("read approval")?;
    Ok(Approval {
        id: row.get(0).ctx("read approval")?,
        kind: ApprovalKind::parse(&kind)
            .ok_or_else(|| StoreError::corrupt("approvals.kind", format!("unknown {kind:?}")))?,
        subject: row.get(2).ctx("read approval")?,
        agent_id: row.get(3).ctx("read approval")?,
        amount_fen: from_sql_int(amount, "approvals.amount_fen")?,
        request_json: row.get(5).ctx("read approval")?,
        state: ApprovalState::parse(&state)
            .ok_or_else(|| StoreError::corrupt("approvals.state", format!("unknown {state:?}")))?,
        reason: row.get(7).ctx("read approval")?,
        decided_by: row.get(8).ctx("read approval")?,
        requested_at_ms: row.get(9).ctx("read approval")?,
        decided_at_ms: row.get(10).ctx("read approval")?,
    })
}

/// What the agent has committed since `since_ms`: its orders that may move
/// money (not closed or failed) and its payments waiting for approval.
pub(super) fn spent_since(conn: &Connection, agent_id: &str, since_ms: i64) -> StoreResult<u64> {
    let total: i64 = conn
        .prepare_cached(
            "SELECT
               (SELECT COALESCE(SUM(total_fee), 0) FROM orders
                 WHERE agent_id = ?1 AND created_at_ms >= ?2 AND state NOT IN ('closed', 'failed'))
             + (SELECT COALESCE(SUM(amount_fen), 0) FROM approvals
                 WHERE agent_id = ?1 AND kind = 'payment' AND state = 'pending'
                   AND requested_at_ms >= ?2)",
        )
        .and_then(|mut stmt| stmt.query_row(params![agent_id, since_ms], |r| r.get(0)))
        .ctx("sum agent spend")?;
    from_sql_int(total, "agent spend")
}

pub(super) fn insert_approval_row(conn: &Connection, a: &ApprovalInput) -> StoreResult<i64> {
    let amount = to_sql_int(a.amount_fen, "amount_fen")?;
    conn.prepare_cached(
        "INSERT INTO approvals (kind, subject, agent_id, amount_fen, request_json, state,
                                requested_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
    )
    .and_then(|mut stmt| {
        stmt.insert(params![
            a.kind.as_str(),
            a.subject,
            a.agent_id,
            amount,
            a.request_json,
            a.requested_at_ms,
        ])
    })
    .ctx("insert approval")
}

pub(super) fn select_approval(
    conn: &Connection,
    kind: ApprovalKind,
    subject: &str,
) -> StoreResult<Option<Approval>> {
    let sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE kind = ?1 AND subject = ?2");
    let mut stmt = conn.prepare_cached(&sql).ctx("read approval")?;
    let mut rows = stmt
        .query(params![kind.as_str(), subject])
        .ctx("read approval")?;
    rows.next()
        .ctx("read approval")?
        .map(approval_row)
        .transpose()
}

pub(super) fn select_approval_by_id(conn: &Connection, id: i64) -> StoreResult<Option<Approval>> {
    let sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql).ctx("read approval")?;
    let mut rows = stmt.query(params![id]).ctx("read approval")?;
    rows.next()
        .ctx("read approval")?
        .map(approval_row)
        .transpose()
}

/// The compare-and-set that decides an approval: only a pending one moves.
pub(super) fn decide(
    conn: &Connection,
    id: i64,
    to: ApprovalState,
    by: &str,
    reason: Option<&str>,
    at_ms: i64,
) -> StoreResult<Transition<Approval>> {
    let changed = conn
        .prepare_cached(
            "UPDATE approvals SET state = ?2, decided_by = ?3, reason = ?4, decided_at_ms = ?5
             WHERE id = ?1 AND state = 'pending'",
        )
        .and_then(|mut stmt| stmt.execute(params![id, to.as_str(), by, reason, at_ms]))
        .ctx("decide approval")?;
    Ok(match select_approval_by_id(conn, id)? {
        None => Transition::Missing,
        Some(a) if changed > 0 => Transition::Applied(a),
        Some(a) if a.state == to => Transition::AlreadyThere(a),
        Some(a) => Transition::Refused(a),
    })
}
