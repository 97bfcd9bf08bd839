//! What the pages show, read from the store.
//!
//! The audit log is the gateway's complete, ordered story — every state
//! change is audited with the payment, refund or payer it touched as its
//! subject — so the lists (payments, refunds, payers) are the subjects of
//! the newest events, each then read fresh from its own record. A single
//! payment's history is read by subject, however old it is.

use std::collections::BTreeSet;

use crate::store::{
    Approval, ApprovalKind, ApprovalState, AuditEvent, LedgerEntry, Order, Refund, Store,
    StoreResult,
};

/// How many of the newest audit events the lists look through.
pub(super) const WINDOW: u32 = 5_000;

/// The most rows a list shows.
pub(super) const MAX_ROWS: usize = 200;

/// Up to `limit` audit events with `seq < before` (the newest when
/// `None`), newest first.
pub(super) fn newest_events(
    store: &dyn Store,
    before: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<AuditEvent>> {
    let head = match before {
        Some(before) => before,
        None => store.latest_audit_seq()?.saturating_add(1),
    };
    let after = head
        .saturating_sub(1)
        .saturating_sub(i64::from(limit))
        .max(0);
    let mut events = store.audit(after, limit)?;
    events.retain(|e| e.seq < head);
    events.reverse();
    Ok(events)
}

fn is_payment_event(e: &AuditEvent) -> bool {
    let action = e.action.as_str();
    (action.starts_with("order.") && e.outcome != "refused")
        || matches!(action, "notification.payment" | "payment.close")
}

fn is_refund_event(e: &AuditEvent) -> bool {
    let action = e.action.as_str();
    (action == "refund.create" && e.outcome != "refused")
        || matches!(action, "refund.state" | "notification.refund")
}

/// Distinct subjects of matching events, newest first.
fn subjects(events: &[AuditEvent], keep: fn(&AuditEvent) -> bool) -> Vec<String> {
    let mut seen = BTreeSet::new();
    events
        .iter()
        .filter(|e| keep(e) && seen.insert(e.subject.clone()))
        .map(|e| e.subject.clone())
        .take(MAX_ROWS)
        .collect()
}

/// The newest orders, plus payment approvals that have no order yet.
pub(super) fn recent_orders(store: &dyn Store) -> StoreResult<(Vec<Order>, Vec<Approval>)> {
    let events = newest_events(store, None, WINDOW)?;
    let mut orders = Vec::new();
    for no in subjects(&events, is_payment_event) {
        if let Some(order) = store.order(&no)? {
            orders.push(order);
        }
    }
    let waiting = store
        .approvals(None, MAX_ROWS as u32)?
        .into_iter()
        .filter(|a| a.kind == ApprovalKind::Payment && a.state != ApprovalState::Approved)
        .collect();
    Ok((orders, waiting))
}

/// The newest refunds.
pub(super) fn recent_refunds(store: &dyn Store) -> StoreResult<Vec<Refund>> {
    let events = newest_events(store, None, WINDOW)?;
    let mut refunds = Vec::new();
    for no in subjects(&events, is_refund_event) {
        if let Some(refund) = store.refund(&no)? {
            refunds.push(refund);
        }
    }
    Ok(refunds)
}

/// One payment: its order or approval, its history, its refunds.
pub(super) struct PaymentDetail {
    pub(super) order: Option<Order>,
    pub(super) approval: Option<Approval>,
    /// Events about it, oldest first.
    pub(super) history: Vec<AuditEvent>,
    pub(super) refunds: Vec<Refund>,
}

/// The most events a payment's history shows (its newest).
const HISTORY: u32 = 500;

pub(super) fn payment_detail(store: &dyn Store, id: &str) -> StoreResult<PaymentDetail> {
    Ok(PaymentDetail {
        order: store.order(id)?,
        approval: store.approval(ApprovalKind::Payment, id)?,
        history: store.audit_about(id, HISTORY)?,
        refunds: store.order_refunds(id)?,
    })
}

/// A payer's balance and newest ledger entries.
pub(super) struct PayerView {
    pub(super) payer_id: String,
    pub(super) balance_fen: u64,
    pub(super) entries: Vec<LedgerEntry>,
}

/// Payers seen in the newest events (and `also`, when given).
pub(super) fn payers(store: &dyn Store, also: Option<&str>) -> StoreResult<Vec<PayerView>> {
    let events = newest_events(store, None, WINDOW)?;
    let mut ids: Vec<String> = also.map(str::to_owned).into_iter().collect();
    ids.extend(subjects(&events, |e| {
        e.action.starts_with("charge.") || e.action.starts_with("balance.")
    }));
    let mut seen = BTreeSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    ids.into_iter()
        .map(|payer_id| {
            Ok(PayerView {
                balance_fen: store.balance(&payer_id)?,
                entries: store.ledger(&payer_id, 20)?,
                payer_id,
            })
        })
        .collect()
}
