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
//!
//! A payment notification that verifies costs one trip to the store, not
//! two: the store pays the order only if the order has exactly the terms
//! the notice claims (its amount and currency, and the algorithm it was
//! verified with), compared in the same atomic step as the payment. For a
//! verified notice that comparison is the component's check against the
//! order, and a test holds the two together. An order with other terms
//! comes back unchanged, and the notice is then checked against it in the
//! component, which gives the reason it is refused. (With Redis, each trip
//! also waits for the server's flush: the order's read used to wait behind
//! other notifications' writes.)

use serde_json::json;

use super::{Gateway, audit_event, now_ms, parse_beijing_time};
use crate::error::Error;
use crate::metrics::rejection_reason;
use crate::sandbox::bindings::merchant_api::{ExpectedOrder, ExpectedRefund, PaymentNotice};
use crate::sandbox::bindings::types::SignType;
use crate::store::{
    NotificationKind, Order, OrderPatch, OrderState, OrderTerms, PaidNotification, PaymentApplied,
    Refund, RefundState, StoreError, Transition, Verdict,
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
    expected_terms(&order.out_trade_no, &order.terms())
}

/// What a payment notification about `out_trade_no` must say for an order
/// with `terms`.
fn expected_terms(out_trade_no: &str, terms: &OrderTerms) -> ExpectedOrder {
    ExpectedOrder {
        out_trade_no: out_trade_no.to_owned(),
        total_fee: terms.total_fee,
        fee_type: Some(terms.fee_type.clone()),
        sign_type: Some(terms.sign_type.into()),
    }
}

/// The terms a notice claims for its order: its amount and currency, and
/// the algorithm it was verified with. A verified notice passes the
/// component's check against an order exactly when the order has these
/// terms (its amount and currency equal, and its algorithm the one verified
/// with; `claimed_terms_are_the_component_check` holds the two together),
/// so the store's comparison of terms stands in for that check.
fn claimed_terms(notice: &PaymentNotice, verified_with: SignType) -> OrderTerms {
    OrderTerms {
        total_fee: notice.total_fee,
        fee_type: notice.fee_type.clone(),
        sign_type: verified_with.into(),
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
    /// Most notifications are verified with one parse and paid with one
    /// trip to the store: verified with the merchant's algorithm and no
    /// order, then applied if the order has the terms they claim (see the
    /// module's docs).
    ///
    /// Otherwise the order is read (or came back from the store with other
    /// terms), and the notice is checked against it in the component. A
    /// body that failed the first verification has its order number read
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
        let merchant_algorithm = self.signers.settings().sign_type;
        let mut differs = None;
        if let Some(notice) = verified.as_ref().filter(|notice| notice.paid) {
            let claimed = claimed_terms(notice, merchant_algorithm);
            match self.pay(&no, notice, claimed, body.clone()).await {
                Ok(PaymentApplied::Recorded(transition)) => {
                    return self.paid_reply(transition, &no).await;
                }
                Ok(PaymentApplied::TermsDiffer(order)) => differs = Some(order),
                // No stored order has an amount the store cannot hold: the
                // check against the order, below, refuses it and says why.
                Err(Error::Store(StoreError::AmountOutOfRange { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        let stored = match differs {
            Some(order) => Some(order),
            None => self.store.fetch_order(&no).await?,
        };
        let Some(order) = stored else {
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
        match self.pay(&no, &notice, order.terms(), body).await? {
            PaymentApplied::Recorded(transition) => self.paid_reply(transition, &no).await,
            PaymentApplied::TermsDiffer(_) => Err(StoreError::corrupt(
                "orders",
                format!("order {no} changed its amount, currency or algorithm"),
            )
            .into()),
        }
    }

    /// Records a notice checked against `terms`: pays the order if it has
    /// them (see [`crate::store::Store::apply_paid_notification`]).
    async fn pay(
        &self,
        no: &str,
        notice: &PaymentNotice,
        terms: OrderTerms,
        body: Vec<u8>,
    ) -> Result<PaymentApplied, Error> {
        let paid_at_ms = notice
            .time_end
            .as_deref()
            .and_then(parse_beijing_time)
            .unwrap_or_else(now_ms);
        let event = audit_event(
            ACTOR,
            "notification.payment",
            no,
            "paid",
            json!({"transaction_id": notice.transaction_id, "total_fee": terms.total_fee}),
        );
        let paid = PaidNotification {
            out_trade_no: no.to_owned(),
            transaction_id: notice.transaction_id.clone(),
            paid_at_ms,
            body,
            at_ms: now_ms(),
            terms,
            audit: Some(event),
        };
        Ok(self.store.apply_paid_notification(paid).await?)
    }

    /// The answer to a payment notification the store recorded.
    async fn paid_reply(
        &self,
        transition: Transition<Order>,
        subject: &str,
    ) -> Result<NotifyReply, Error> {
        match transition {
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
                self.refused_after_record(NotificationKind::Payment, subject, "state_conflict", reason)
                    .await
            }
            Transition::Missing => {
                let reason = "unknown order".to_owned();
                self.refused_after_record(NotificationKind::Payment, subject, "unknown_order", reason)
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

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;
    use crate::key::ApiKey;
    use crate::sandbox::Sandbox;
    use crate::sandbox::signer::MerchantSettings;

    fn notice(total_fee: u64, fee_type: &str) -> PaymentNotice {
        PaymentNotice {
            out_trade_no: "WX1".into(),
            transaction_id: "4200000001".into(),
            total_fee,
            fee_type: fee_type.into(),
            paid: true,
            err_code: None,
            openid: None,
            trade_type: None,
            bank_type: None,
            time_end: None,
            attach: None,
            cash_fee: None,
        }
    }

    #[test]
    fn claimed_terms_are_the_component_check() -> Result<(), Error> {
        // The callback pays an order without the component's check when
        // the order has the terms the notice claims. That is sound only
        // while the check passes for exactly those terms.
        let key = ApiKey::from_secret(Zeroizing::new("192006250b4c09247ec02edce69f6a2d".into()))?;
        let mut signer = Sandbox::embedded()?.instantiate()?;
        for algorithm in [SignType::Md5, SignType::HmacSha256] {
            let settings = MerchantSettings {
                appid: "wxd930ea5d5a258f4f".into(),
                mch_id: "10000100".into(),
                sign_type: algorithm,
                sub_appid: None,
                sub_mch_id: None,
                sandbox: false,
            };
            let merchant = signer.merchant(&settings, &key)?;
            for notice in [notice(1, "CNY"), notice(1200, "CNY"), notice(5, "USD")] {
                let claimed = claimed_terms(&notice, algorithm);
                let mut check = |terms: &OrderTerms| {
                    let expected = expected_terms(&notice.out_trade_no, terms);
                    signer.check_payment_notice(&merchant, &notice, &expected)
                };
                check(&claimed)?;
                let others = [
                    OrderTerms {
                        total_fee: claimed.total_fee + 1,
                        ..claimed.clone()
                    },
                    OrderTerms {
                        fee_type: format!("{}X", claimed.fee_type),
                        ..claimed.clone()
                    },
                    OrderTerms {
                        sign_type: claimed.sign_type.other(),
                        ..claimed.clone()
                    },
                ];
                for other in others {
                    assert!(check(&other).is_err(), "{notice:?} against {other:?}");
                }
            }
        }
        Ok(())
    }
}
