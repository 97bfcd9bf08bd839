//! Reading rows back into domain types, and the checked conversions
//! between Rust's unsigned amounts and SQLite's signed integers.
//!
//! Nothing here panics on what is in the database: a value this build
//! cannot read is [`StoreError::Corrupt`].

use rusqlite::Row;
use rusqlite::types::FromSql;
use wxpay_guest::SignType;

use super::error::{SqlContext as _, StoreError};
use super::types::{
    AuditEvent, NotificationKind, NotificationRecord, Order, OrderState, Refund, RefundState,
    Verdict,
};

/// The columns [`order`] reads, in its order.
pub(crate) const ORDER_COLUMNS: &str = "out_trade_no, mch_id, appid, product_id, quantity, \
    total_fee, fee_type, sign_type, trade_type, state, prepay_id, code_url, transaction_id, \
    idempotency_key, agent_id, created_at_ms, updated_at_ms, expires_at_ms, paid_at_ms, version";

/// The columns [`refund`] reads, in its order.
pub(crate) const REFUND_COLUMNS: &str = "out_refund_no, out_trade_no, refund_fee, state, \
    refund_id, created_at_ms, updated_at_ms, version";

/// The columns [`notification`] reads, in its order.
pub(crate) const NOTIFICATION_COLUMNS: &str =
    "id, kind, received_at_ms, body, verdict, out_trade_no, dedupe_key";

/// The columns [`audit_event`] reads, in its order.
pub(crate) const AUDIT_COLUMNS: &str = "seq, at_ms, actor, action, subject, outcome, detail";

/// An unsigned amount as SQLite's INTEGER.
pub(crate) fn to_sql_int(value: u64, field: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::AmountOutOfRange { field })
}

/// A stored INTEGER as an unsigned amount.
pub(crate) fn from_sql_int<T: TryFrom<i64>>(value: i64, what: &str) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| StoreError::corrupt(what, format!("{value} is out of range")))
}

fn get<T: FromSql>(row: &Row<'_>, idx: usize) -> Result<T, StoreError> {
    row.get(idx).ctx("read row")
}

fn order_state(value: &str) -> Result<OrderState, StoreError> {
    OrderState::parse(value)
        .ok_or_else(|| StoreError::corrupt("orders.state", format!("unknown state {value:?}")))
}

fn refund_state(value: &str) -> Result<RefundState, StoreError> {
    RefundState::parse(value)
        .ok_or_else(|| StoreError::corrupt("refunds.state", format!("unknown state {value:?}")))
}

/// A row of [`ORDER_COLUMNS`].
pub(crate) fn order(row: &Row<'_>) -> Result<Order, StoreError> {
    let sign_type: String = get(row, 7)?;
    let state: String = get(row, 9)?;
    Ok(Order {
        out_trade_no: get(row, 0)?,
        mch_id: get(row, 1)?,
        appid: get(row, 2)?,
        product_id: get(row, 3)?,
        quantity: from_sql_int(get(row, 4)?, "orders.quantity")?,
        total_fee: from_sql_int(get(row, 5)?, "orders.total_fee")?,
        fee_type: get(row, 6)?,
        sign_type: SignType::from_wire(&sign_type).ok_or_else(|| {
            StoreError::corrupt("orders.sign_type", format!("unknown {sign_type:?}"))
        })?,
        trade_type: get(row, 8)?,
        state: order_state(&state)?,
        prepay_id: get(row, 10)?,
        code_url: get(row, 11)?,
        transaction_id: get(row, 12)?,
        idempotency_key: get(row, 13)?,
        agent_id: get(row, 14)?,
        created_at_ms: get(row, 15)?,
        updated_at_ms: get(row, 16)?,
        expires_at_ms: get(row, 17)?,
        paid_at_ms: get(row, 18)?,
        version: from_sql_int(get(row, 19)?, "orders.version")?,
    })
}

/// A row of [`REFUND_COLUMNS`].
pub(crate) fn refund(row: &Row<'_>) -> Result<Refund, StoreError> {
    let state: String = get(row, 3)?;
    Ok(Refund {
        out_refund_no: get(row, 0)?,
        out_trade_no: get(row, 1)?,
        refund_fee: from_sql_int(get(row, 2)?, "refunds.refund_fee")?,
        state: refund_state(&state)?,
        refund_id: get(row, 4)?,
        created_at_ms: get(row, 5)?,
        updated_at_ms: get(row, 6)?,
        version: from_sql_int(get(row, 7)?, "refunds.version")?,
    })
}

/// A row of [`NOTIFICATION_COLUMNS`].
pub(crate) fn notification(row: &Row<'_>) -> Result<NotificationRecord, StoreError> {
    let kind: String = get(row, 1)?;
    let verdict: String = get(row, 4)?;
    Ok(NotificationRecord {
        id: get(row, 0)?,
        kind: NotificationKind::parse(&kind).ok_or_else(|| {
            StoreError::corrupt("notifications.kind", format!("unknown {kind:?}"))
        })?,
        received_at_ms: get(row, 2)?,
        body: get(row, 3)?,
        verdict: Verdict::parse(&verdict).ok_or_else(|| {
            StoreError::corrupt("notifications.verdict", format!("unknown {verdict:?}"))
        })?,
        out_trade_no: get(row, 5)?,
        dedupe_key: get(row, 6)?,
    })
}

/// A row of [`AUDIT_COLUMNS`].
pub(crate) fn audit_event(row: &Row<'_>) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        seq: get(row, 0)?,
        at_ms: get(row, 1)?,
        actor: get(row, 2)?,
        action: get(row, 3)?,
        subject: get(row, 4)?,
        outcome: get(row, 5)?,
        detail: get(row, 6)?,
    })
}
