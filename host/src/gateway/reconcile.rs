//! Reconciliation: ask WeChat about what the store still thinks is open.
//!
//! Notifications get lost — the gateway was down for WeChat's whole
//! 24-hour retry schedule, a proxy ate them, a reply was lost after
//! unifiedorder. So a background task periodically asks WeChat (orderquery,
//! refundquery) about orders and refunds that stayed open past a threshold
//! — and about all of them at start-up — and applies the answers with the
//! same compare-and-set rules as the callbacks. Orders past their expiry
//! are closed at WeChat, so a late payment cannot land on an order the
//! agent was told had expired.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tracing::Instrument as _;

use super::{Gateway, audit_event, now_ms, wechat_code};
use crate::sandbox::bindings::merchant_api::RefundRef;
use crate::store::{Order, OrderState, Refund, RefundPatch, RefundState};

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Orders asked about.
    pub orders_checked: usize,
    /// Orders whose state changed (closing included).
    pub orders_changed: usize,
    /// Expired orders closed.
    pub orders_closed: usize,
    /// Refunds asked about.
    pub refunds_checked: usize,
    /// Refunds whose state changed.
    pub refunds_changed: usize,
    /// Refunds sent again because WeChat never received them.
    pub refunds_resent: usize,
    /// Approved payments and refunds sent that had not been sent.
    pub approvals_carried_out: usize,
    /// Failures, one line each; the next pass tries again.
    pub errors: Vec<String>,
}

/// The lease a gateway holds while it reconciles.
const RECONCILIATION_LEASE: &str = "reconciliation";

const ACTOR: &str = "reconciliation";

impl Gateway {
    /// One pass over orders and refunds unchanged for `pending_after`.
    pub async fn reconcile_once(&self, pending_after: Duration) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let cutoff = now_ms() - i64::try_from(pending_after.as_millis()).unwrap_or(i64::MAX);
        let batch = self.config.reconcile.batch;
        let open = [OrderState::Created, OrderState::Pending];
        match self
            .db(move |s| s.orders_in_state(&open, cutoff, batch))
            .await
        {
            Ok(orders) => {
                for order in orders {
                    let span = tracing::info_span!("reconcile", payment_id = %order.out_trade_no);
                    self.reconcile_order(order, &mut report)
                        .instrument(span)
                        .await;
                }
            }
            Err(e) => report.errors.push(e.to_string()),
        }
        match self.db(move |s| s.approvals_to_carry_out(batch)).await {
            Ok(approvals) => {
                for approval in approvals {
                    match crate::agents::carry_out(self, &approval, ACTOR).await {
                        Ok(()) => report.approvals_carried_out += 1,
                        Err(e) => report.errors.push(format!("approval {}: {e}", approval.id)),
                    }
                }
            }
            Err(e) => report.errors.push(e.to_string()),
        }
        let open = [RefundState::Requested, RefundState::Processing];
        match self
            .db(move |s| s.refunds_in_state(&open, cutoff, batch))
            .await
        {
            Ok(refunds) => {
                for refund in refunds {
                    let span = tracing::info_span!("reconcile", payment_id = %refund.out_trade_no);
                    self.reconcile_refund(refund, &mut report)
                        .instrument(span)
                        .await;
                }
            }
            Err(e) => report.errors.push(e.to_string()),
        }
        self.count_reconciliation(&report);
        report
    }

    fn count_reconciliation(&self, report: &ReconcileReport) {
        let metrics = &self.metrics;
        metrics.reconciliation("orders_checked", report.orders_checked);
        metrics.reconciliation("orders_changed", report.orders_changed);
        metrics.reconciliation("orders_closed", report.orders_closed);
        metrics.reconciliation("refunds_checked", report.refunds_checked);
        metrics.reconciliation("refunds_changed", report.refunds_changed);
        metrics.reconciliation("refunds_resent", report.refunds_resent);
        metrics.reconciliation("approvals_carried_out", report.approvals_carried_out);
        metrics.reconciliation("errors", report.errors.len());
    }

    /// Runs passes every `interval` until `shutdown` fires; the first pass
    /// looks at every open record, however recent. Gateways sharing a
    /// store take turns: a pass runs only under the reconciliation lease,
    /// so WeChat is asked once, not once per gateway; when its holder
    /// dies, another takes over within three intervals.
    pub async fn run_reconciliation(
        self: Arc<Self>,
        interval: Duration,
        pending_after: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut threshold = Duration::ZERO;
        loop {
            if self.hold_reconciliation_lease(interval).await {
                let report = self.reconcile_once(threshold).await;
                log_report(&report);
                threshold = pending_after;
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Takes or renews the reconciliation lease for three intervals.
    async fn hold_reconciliation_lease(&self, interval: Duration) -> bool {
        let holder = self.instance_id().to_owned();
        let now = now_ms();
        let span = i64::try_from(interval.saturating_mul(3).as_millis())
            .unwrap_or(i64::MAX)
            .max(3_000);
        let until = now.saturating_add(span);
        match self
            .db(move |s| s.acquire_lease(RECONCILIATION_LEASE, &holder, now, until))
            .await
        {
            Ok(held) => {
                if !held {
                    tracing::debug!("another gateway holds the reconciliation lease");
                }
                held
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconciliation skipped: cannot take the lease");
                false
            }
        }
    }

    async fn reconcile_order(&self, order: Order, report: &mut ReconcileReport) {
        report.orders_checked += 1;
        let before = order.state;
        let no = order.out_trade_no.clone();
        let now = match self.query_order(&no, ACTOR).await {
            Ok(now) => now,
            Err(e) => return report.errors.push(format!("order {no}: {e}")),
        };
        if now.state != before {
            report.orders_changed += 1;
        }
        let expired = now.expires_at_ms <= now_ms();
        if expired && now.state == OrderState::Pending {
            match self.close_order(&no, ACTOR).await {
                Ok(_) => {
                    report.orders_closed += 1;
                    report.orders_changed += 1;
                }
                Err(e) => report.errors.push(format!("order {no}: close: {e}")),
            }
        }
    }

    async fn reconcile_refund(&self, refund: Refund, report: &mut ReconcileReport) {
        report.refunds_checked += 1;
        let by = RefundRef::OutRefundNo(refund.out_refund_no.clone());
        let reply = self
            .call(|s, nonce| s.instance.refund_query(&s.merchant, &by, None, nonce))
            .await;
        let no = refund.out_refund_no.clone();
        let fields = match reply {
            Ok(reply) => reply.fields,
            Err(e) if wechat_code(&e) == Some("REFUNDNOTEXIST") => {
                return self.resend_refund(refund, report).await;
            }
            Err(e) => return report.errors.push(format!("refund {no}: {e}")),
        };
        let value = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let refund_id = value("refund_id_0").unwrap_or_default();
        let to = match value("refund_status_0").as_deref() {
            Some("SUCCESS") => RefundState::Succeeded,
            Some("REFUNDCLOSE") => RefundState::Closed,
            Some("CHANGE") => RefundState::Failed,
            Some("PROCESSING") if refund.state == RefundState::Requested => RefundState::Processing,
            _ => return,
        };
        let event = audit_event(
            ACTOR,
            "refund.state",
            &refund.out_refund_no,
            to.as_str(),
            json!({"from": refund.state.as_str(), "refund_id": refund_id, "via": "refundquery"}),
        );
        let outcome = if to == RefundState::Processing {
            let patch = RefundPatch {
                refund_id: Some(refund_id.clone()),
            };
            let from = [RefundState::Requested];
            let trade = refund.out_trade_no.clone();
            self.db(move |s| {
                let cas = s.transition_refund(&no, &from, to, patch, now_ms())?;
                s.settle_order(&trade, now_ms())?;
                if cas.applied() {
                    s.append_audit(&event)?;
                }
                Ok(cas)
            })
            .await
        } else {
            let id = refund_id.clone();
            self.db(move |s| s.apply_refund_outcome(&no, &id, to, None, now_ms(), Some(&event)))
                .await
        };
        match outcome {
            Ok(cas) if cas.applied() => {
                report.refunds_changed += 1;
                self.changes.notify_waiters();
            }
            Ok(_) => {}
            Err(e) => report
                .errors
                .push(format!("refund {}: {e}", refund.out_refund_no)),
        }
    }

    /// A refund WeChat never received: send it again, same number.
    async fn resend_refund(&self, refund: Refund, report: &mut ReconcileReport) {
        if refund.state != RefundState::Requested {
            return;
        }
        let trade = refund.out_trade_no.clone();
        let no = refund.out_refund_no.clone();
        let order = match self.read(move |s| s.order(&trade)).await {
            Ok(Some(order)) => order,
            Ok(None) => {
                return report
                    .errors
                    .push(format!("refund {no}: its order is missing"));
            }
            Err(e) => return report.errors.push(format!("refund {no}: {e}")),
        };
        match self.send_refund(&order, refund, None, ACTOR).await {
            Ok(_) => {
                report.refunds_resent += 1;
                report.refunds_changed += 1;
            }
            Err(e) => report.errors.push(format!("refund {no}: resend: {e}")),
        }
    }
}

fn log_report(report: &ReconcileReport) {
    if report.orders_checked + report.refunds_checked + report.approvals_carried_out == 0
        && report.errors.is_empty()
    {
        return;
    }
    tracing::info!(
        orders_checked = report.orders_checked,
        orders_changed = report.orders_changed,
        orders_closed = report.orders_closed,
        refunds_checked = report.refunds_checked,
        refunds_changed = report.refunds_changed,
        refunds_resent = report.refunds_resent,
        approvals_carried_out = report.approvals_carried_out,
        errors = report.errors.len(),
        "reconciliation pass"
    );
    for error in &report.errors {
        tracing::warn!(%error, "reconciliation");
    }
}
