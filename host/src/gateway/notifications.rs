//! Payment and refund notifications: verify, commit, then acknowledge.
//!
//! WeChat stops retrying once it reads the exact SUCCESS reply, so the
//! reply is decided only after the store has durably recorded the outcome.
//! A notification is verified in the component against what *we* stored —
//! the order's amount, currency and algorithm, the refund's order and
//! amount — never against what the notification says about itself. A
//! duplicate is acknowledged and changes nothing; anything forged,
//! malformed or inconsistent is recorded with its reason, audited, refused
//! (so a genuine one is retried), and changes nothing.

use serde_json::json;

use super::{Gateway, audit_event, now_ms, parse_beijing_time};
use crate::error::Error;
use crate::metrics::rejection_reason;
use crate::sandbox::bindings::merchant_api::{ExpectedOrder, ExpectedRefund};
use crate::store::{
    NotificationKind, Order, OrderPatch, OrderState, PaidNotification, Refund, RefundState,
    Transition, Verdict,
};

/// What to answer WeChat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyReply {
    /// True when the body is the SUCCESS acknowledgement.
    pub acknowledged: bool,
    /// The XML to send back.
    pub body: String,
    /// What was decided, for logs and tests.
    pub verdict: Verdict,
    /// Why it was refused, as a metrics label (`none` when acknowledged).
    pub reason: &'static str,
}

const ACTOR: &str = "wechat";

fn out_trade_no_of(fields: &crate::sandbox::signer::Pairs) -> Option<String> {
    fields
        .iter()
        .find(|(k, v)| k == "out_trade_no" && !v.is_empty())
        .map(|(_, v)| v.clone())
}

/// What a payment notification must say, from the stored order.
fn expected_order(order: &Order) -> ExpectedOrder {
    ExpectedOrder {
        out_trade_no: order.out_trade_no.clone(),
        total_fee: order.total_fee,
        fee_type: Some(order.fee_type.clone()),
        sign_type: Some(order.sign_type.into()),
    }
}

/// What a refund notification must say, from the stored refund.
fn expected_refund(refund: &Refund) -> ExpectedRefund {
    ExpectedRefund {
        out_trade_no: refund.out_trade_no.clone(),
        out_refund_no: refund.out_refund_no.clone(),
        refund_fee: refund.refund_fee,
    }
}

impl Gateway {
    /// Handles a payment notification body.
    ///
    /// Most notifications are verified with one parse: first with the
    /// merchant's algorithm and no order, then, once the order the notice
    /// names is read, the notice is checked against it in the component.
    /// A body that fails that first verification has its order number read
    /// and its order looked up, so the refusal is recorded against it; when
    /// that order signs with the merchant's algorithm, verifying again with
    /// it would run the same checks in the same order up to the one that
    /// failed, so that refusal stands. An order placed with the other
    /// algorithm is verified again with it, the general way; so every
    /// refusal comes from the same checks either way.
    pub async fn payment_notification(&self, body: Vec<u8>) -> Result<NotifyReply, Error> {
        let kind = NotificationKind::Payment;
        let limit = self.body_limit();
        let within_limit = u32::try_from(body.len()).is_ok_and(|len| len <= limit);
        let first = within_limit.then(|| {
            self.sign(|s| {
                s.instance
                    .verify_payment_notification(&s.merchant, &body, None)
            })
        });
        let (verified, refusal) = match first {
            Some(Ok(notice)) => (Some(notice), None),
            Some(Err(Error::Guest(refusal))) => (None, Some(refusal)),
            Some(Err(_)) | None => (None, None),
        };
        let no = match &verified {
            Some(notice) => notice.out_trade_no.clone(),
            None => {
                match self.sign(|s| s.instance.read_field(&body, "out_trade_no", Some(limit))) {
                    Ok(Some(no)) => no,
                    Ok(None) => {
                        return self
                            .reject(
                                kind,
                                body,
                                None,
                                "no_order_number",
                                "no out_trade_no".into(),
                            )
                            .await;
                    }
                    Err(e) => {
                        return self
                            .reject(kind, body, None, "malformed", format!("malformed: {e}"))
                            .await;
                    }
                }
            }
        };
        tracing::Span::current().record("payment_id", no.as_str());
        let Some(order) = self.store.fetch_order(&no).await? else {
            return self
                .reject(
                    kind,
                    body,
                    Some(no),
                    "unknown_order",
                    "unknown order".into(),
                )
                .await;
        };
        let expected = expected_order(&order);
        let merchant_algorithm = self.signers.settings().sign_type;
        let same_algorithm = expected.sign_type.unwrap_or(merchant_algorithm) == merchant_algorithm;
        let checked = match (verified, refusal) {
            (Some(notice), _) if same_algorithm => self
                .sign(|s| {
                    s.instance
                        .check_payment_notice(&s.merchant, &notice, &expected)
                })
                .map(|()| notice),
            (None, Some(refusal)) if same_algorithm => Err(Error::Guest(refusal)),
            _ => self.sign(|s| {
                s.instance
                    .verify_payment_notification(&s.merchant, &body, Some(&expected))
            }),
        };
        let notice = match checked {
            Ok(notice) => notice,
            Err(e) => {
                let label = rejection_reason(&e);
                return self
                    .reject(kind, body, Some(no), label, e.to_string())
                    .await;
            }
        };
        if !notice.paid {
            return self.payment_failed(body, no, notice.err_code).await;
        }
        let paid_at = notice
            .time_end
            .as_deref()
            .and_then(parse_beijing_time)
            .unwrap_or_else(now_ms);
        let txid = notice.transaction_id.clone();
        let subject = expected.out_trade_no;
        let event = audit_event(
            ACTOR,
            "notification.payment",
            &subject,
            "paid",
            json!({"transaction_id": notice.transaction_id, "total_fee": order.total_fee}),
        );
        let applied = self
            .store
            .apply_paid_notification(PaidNotification {
                out_trade_no: no,
                transaction_id: txid,
                paid_at_ms: paid_at,
                body,
                at_ms: now_ms(),
                audit: Some(event),
            })
            .await?;
        match applied {
            Transition::Applied(_) => {
                self.changes.notify_waiters();
                self.ack(Verdict::Accepted)
            }
            Transition::AlreadyThere(_) => self.ack(Verdict::Duplicate),
            Transition::Refused(order) => {
                let reason = if order.state.is_paid() {
                    "transaction_id differs from the recorded payment".to_owned()
                } else {
                    format!("order is {}", order.state)
                };
                self.refused_after_record(kind, &subject, "state_conflict", reason)
                    .await
            }
            Transition::Missing => {
                let reason = "unknown order".to_owned();
                self.refused_after_record(kind, &subject, "unknown_order", reason)
                    .await
            }
        }
    }

    /// A verified notice that the payment failed (`result_code=FAIL`).
    async fn payment_failed(
        &self,
        body: Vec<u8>,
        no: String,
        err_code: Option<String>,
    ) -> Result<NotifyReply, Error> {
        let from = [OrderState::Created, OrderState::Pending];
        let event = audit_event(
            ACTOR,
            "notification.payment",
            &no,
            "payment failed",
            json!({"err_code": err_code}),
        );
        let changed = self
            .db(move |s| {
                let cas = s.transition_order(
                    &no,
                    &from,
                    OrderState::Failed,
                    OrderPatch::default(),
                    now_ms(),
                    Some(&event),
                )?;
                let verdict = match &cas {
                    Transition::Applied(_) => Verdict::Accepted,
                    Transition::AlreadyThere(_) => Verdict::Duplicate,
                    Transition::Refused(o) => {
                        Verdict::Rejected(format!("payment failed but the order is {}", o.state))
                    }
                    Transition::Missing => Verdict::Rejected("unknown order".into()),
                };
                s.record_notification(
                    NotificationKind::Payment,
                    &body,
                    now_ms(),
                    Some(&no),
                    None,
                    &verdict,
                )?;
                Ok(cas.applied())
            })
            .await?;
        if changed {
            self.changes.notify_waiters();
        }
        self.ack(if changed {
            Verdict::Accepted
        } else {
            Verdict::Duplicate
        })
    }

    /// Handles a refund notification body: decrypted and parsed once,
    /// then, once the refund it names is read, checked against it in the
    /// component (the same check decrypting with `expected` makes).
    pub async fn refund_notification(&self, body: Vec<u8>) -> Result<NotifyReply, Error> {
        let kind = NotificationKind::Refund;
        let first = self.sign(|s| {
            s.instance
                .verify_refund_notification(&s.merchant, &body, None)
        });
        let claimed = match first {
            Ok(notice) => notice,
            Err(e) => {
                let label = rejection_reason(&e);
                return self.reject(kind, body, None, label, e.to_string()).await;
            }
        };
        tracing::Span::current().record("payment_id", claimed.out_trade_no.as_str());
        let lookup = claimed.out_refund_no.clone();
        let Some(refund) = self.read(move |s| s.refund(&lookup)).await? else {
            let no = Some(claimed.out_trade_no);
            let reason = "unknown refund".to_owned();
            return self.reject(kind, body, no, "unknown_refund", reason).await;
        };
        let expected = expected_refund(&refund);
        let checked = self.sign(|s| {
            s.instance
                .check_refund_notice(&s.merchant, &claimed, &expected)
        });
        let notice = match checked {
            Ok(()) => claimed,
            Err(e) => {
                let no = Some(refund.out_trade_no);
                let label = rejection_reason(&e);
                return self.reject(kind, body, no, label, e.to_string()).await;
            }
        };
        let to = match notice.refund_status.as_str() {
            "SUCCESS" => RefundState::Succeeded,
            "REFUNDCLOSE" => RefundState::Closed,
            "CHANGE" => RefundState::Failed,
            other => {
                let reason = format!("unknown refund_status {other:?}");
                let no = Some(refund.out_trade_no);
                return self.reject(kind, body, no, "invalid_field", reason).await;
            }
        };
        let no = refund.out_refund_no.clone();
        let refund_id = notice.refund_id.clone();
        let event = audit_event(
            ACTOR,
            "notification.refund",
            &refund.out_refund_no,
            to.as_str(),
            json!({"refund_id": notice.refund_id, "refund_fee": refund.refund_fee, "out_trade_no": refund.out_trade_no}),
        );
        let applied = self
            .db(move |s| {
                s.apply_refund_outcome(&no, &refund_id, to, Some(&body), now_ms(), Some(&event))
            })
            .await?;
        let subject = refund.out_refund_no;
        match applied {
            Transition::Applied(_) => {
                self.changes.notify_waiters();
                self.ack(Verdict::Accepted)
            }
            Transition::AlreadyThere(r)
                if r.refund_id
                    .as_deref()
                    .is_none_or(|id| id == notice.refund_id) =>
            {
                self.ack(Verdict::Duplicate)
            }
            Transition::AlreadyThere(_) => {
                let reason = "refund_id differs from the recorded refund".to_owned();
                self.refused_after_record(kind, &subject, "state_conflict", reason)
                    .await
            }
            Transition::Refused(r) => {
                let reason = format!("refund is {}", r.state);
                self.refused_after_record(kind, &subject, "state_conflict", reason)
                    .await
            }
            Transition::Missing => {
                let reason = "unknown refund".to_owned();
                self.refused_after_record(kind, &subject, "unknown_refund", reason)
                    .await
            }
        }
    }

    fn body_limit(&self) -> u32 {
        u32::try_from(self.config.server.max_body_bytes).unwrap_or(u32::MAX)
    }

    /// Records and audits a refused notification, then refuses it.
    async fn reject(
        &self,
        kind: NotificationKind,
        body: Vec<u8>,
        out_trade_no: Option<String>,
        label: &'static str,
        reason: String,
    ) -> Result<NotifyReply, Error> {
        let verdict = Verdict::Rejected(reason.clone());
        let stored = verdict.clone();
        let no = out_trade_no.clone();
        self.db(move |s| {
            s.record_notification(kind, &body, now_ms(), no.as_deref(), None, &stored)
        })
        .await?;
        let subject = out_trade_no.unwrap_or_else(|| "-".into());
        self.refused_after_record(kind, &subject, label, reason)
            .await
    }

    /// Audits a refusal already recorded with the notification, and refuses.
    async fn refused_after_record(
        &self,
        kind: NotificationKind,
        subject: &str,
        label: &'static str,
        reason: String,
    ) -> Result<NotifyReply, Error> {
        tracing::warn!(
            kind = kind.as_str(),
            subject,
            reason = label,
            detail = %reason,
            "notification rejected"
        );
        let action = format!("notification.{}", kind.as_str());
        self.audit(
            ACTOR,
            &action,
            subject,
            "rejected",
            json!({"reason": reason}),
        )
        .await?;
        let body = self.sign(|s| s.instance.notification_nack(&reason))?;
        Ok(NotifyReply {
            acknowledged: false,
            body,
            verdict: Verdict::Rejected(reason),
            reason: label,
        })
    }

    fn ack(&self, verdict: Verdict) -> Result<NotifyReply, Error> {
        Ok(NotifyReply {
            acknowledged: true,
            body: self.ack.clone(),
            verdict,
            reason: "none",
        })
    }
}

impl Gateway {
    /// Checks a notification body as the callback would — against the
    /// stored order or refund — without recording or changing anything.
    /// Returns the fields that were verified.
    pub async fn check_notification(
        &self,
        kind: NotificationKind,
        body: &[u8],
    ) -> Result<crate::sandbox::signer::Pairs, Error> {
        match kind {
            NotificationKind::Payment => {
                let fields = self.sign(|s| s.instance.parse_xml(body, Some(self.body_limit())))?;
                let no = out_trade_no_of(&fields)
                    .ok_or_else(|| Error::input("notification", "no out_trade_no"))?;
                let expected = expected_order(&self.stored_order(&no).await?);
                self.sign(|s| {
                    s.instance
                        .verify_payment_notification(&s.merchant, body, Some(&expected))
                })?;
                Ok(crate::sandbox::signer::without_sign(&fields))
            }
            NotificationKind::Refund => {
                let claimed = self.sign(|s| {
                    s.instance
                        .verify_refund_notification(&s.merchant, body, None)
                })?;
                let lookup = claimed.out_refund_no.clone();
                let refund =
                    self.read(move |s| s.refund(&lookup))
                        .await?
                        .ok_or(Error::NotFound {
                            what: "refund",
                            id: claimed.out_refund_no,
                        })?;
                let expected = expected_refund(&refund);
                let notice = self.sign(|s| {
                    s.instance
                        .verify_refund_notification(&s.merchant, body, Some(&expected))
                })?;
                Ok(notice.fields)
            }
        }
    }
}
