//! Orders and refunds: place, query, close, refund.
//!
//! Each step stores before it sends and applies what WeChat answers with a
//! compare-and-set, so a crash or a lost reply leaves a record that
//! reconciliation (or the same request again) finishes, never a payment
//! the store does not know about. A retried create with the same
//! idempotency key sends the same `out_trade_no`; WeChat answers a repeated
//! unifiedorder with the same prepay id.

use serde_json::json;

use super::{Gateway, audit_event, beijing_time, now_ms, parse_beijing_time, wechat_code};
use crate::error::Error;
use crate::sandbox::bindings::keyless::{OrderIntent, ValidatedOrder};
use crate::sandbox::bindings::merchant_api::{OrderRef, RefundRequest, UnifiedOrder};
use crate::sandbox::signer::Pairs;
use crate::store::{
    AuditEventInput, Inserted, Order, OrderPatch, OrderState, Refund, RefundInsert, RefundPatch,
    RefundState, Transition,
};

/// What an operator or an agent asks for. The price is not part of it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct OrderRequest {
    /// Catalog product.
    pub product_id: String,
    /// Units.
    pub quantity: u32,
    /// `NATIVE`, `JSAPI`, `APP` or `MWEB`.
    pub trade_type: String,
    /// Required for `JSAPI`.
    pub payer_openid: Option<String>,
    /// The payer's or the server's IP.
    pub client_ip: String,
    /// The same key always means the same order.
    pub idempotency_key: String,
    /// Free text, admitted to `attach` by the policy.
    pub note: Option<String>,
    /// Required for `MWEB`.
    pub scene_info: Option<String>,
    /// The agent placing it; `None` for the operator.
    pub agent_id: Option<String>,
}

/// A placed order and what the payer needs.
#[derive(Debug, Clone)]
pub struct CreatedOrder {
    /// The stored order.
    pub order: Order,
    /// WeChat's estimated fee.
    pub fee_estimate_fen: u64,
    /// `JSAPI` / `APP` client parameters, signed.
    pub client_params: Option<Pairs>,
}

/// A refund as asked for.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RefundRequestInput {
    /// The order.
    pub out_trade_no: String,
    /// The refund's number; reuse it to retry the same refund.
    pub out_refund_no: String,
    /// Fen, at most what is left of the order.
    pub refund_fee: u64,
    /// Shown to the payer.
    pub reason: Option<String>,
}

fn field<'a>(fields: &'a Pairs, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Gateway {
    /// One compare-and-set on an order, on the blocking pool. `audit` is
    /// written with the change; callers without one audit afterwards.
    async fn move_order(
        &self,
        out_trade_no: String,
        from: &[OrderState],
        to: OrderState,
        patch: OrderPatch,
        audit: Option<AuditEventInput>,
    ) -> Result<Transition<Order>, Error> {
        let from = from.to_vec();
        let audited = audit.is_some();
        let moved = self
            .db(move |s| {
                s.transition_order(&out_trade_no, &from, to, patch, now_ms(), audit.as_ref())
            })
            .await?;
        // Gateway::audit wakes waiters for the others.
        if audited && moved.applied() {
            self.changes.notify_waiters();
        }
        Ok(moved)
    }

    /// The stored order, or [`Error::NotFound`].
    pub async fn stored_order(&self, out_trade_no: &str) -> Result<Order, Error> {
        let no = out_trade_no.to_owned();
        self.read(move |s| s.order(&no))
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "order",
                id: out_trade_no.to_owned(),
            })
    }

    /// Places an order: validates it against the catalog, stores it, sends
    /// unifiedorder, and stores the prepay id.
    pub async fn create_order(
        &self,
        request: &OrderRequest,
        actor: &str,
    ) -> Result<CreatedOrder, Error> {
        let validated = self.validate(request, actor).await?;
        let fresh = self.order_record(request, &validated);
        let insert = fresh.clone();
        let order = match self.db(move |s| s.insert_order(&insert)).await? {
            Inserted::New => fresh,
            Inserted::Exists(existing) => {
                same_request(&existing, &fresh)?;
                existing
            }
        };
        self.place(order, &validated, actor).await
    }

    /// Checks a request against the catalog and policy in the component;
    /// a refusal is audited.
    pub async fn validate(
        &self,
        request: &OrderRequest,
        actor: &str,
    ) -> Result<ValidatedOrder, Error> {
        let namespace = request.agent_id.as_deref().unwrap_or("operator");
        let intent = OrderIntent {
            product_id: request.product_id.clone(),
            quantity: request.quantity,
            trade_type: request.trade_type.clone(),
            payer_openid: request.payer_openid.clone(),
            client_ip: request.client_ip.clone(),
            idempotency_key: format!("{namespace}/{}", request.idempotency_key),
            note: request.note.clone(),
            scene_info: request.scene_info.clone(),
        };
        let validated = self.sign(|s| {
            s.instance
                .validate_order(&intent, &self.catalog, self.policy)
        });
        if let Err(e) = &validated {
            self.audit(
                actor,
                "order.create",
                &request.product_id,
                "refused",
                json!({"reason": e.to_string()}),
            )
            .await?;
        }
        validated
    }

    /// The order to store for a validated request, in state Created.
    pub fn order_record(&self, request: &OrderRequest, validated: &ValidatedOrder) -> Order {
        let now = now_ms();
        let settings = self.signers.settings();
        Order {
            out_trade_no: validated.out_trade_no.clone(),
            mch_id: settings.mch_id.clone(),
            appid: settings.appid.clone(),
            product_id: Some(validated.product_id.clone()),
            quantity: validated.quantity,
            total_fee: validated.total_fee,
            fee_type: "CNY".into(),
            sign_type: settings.sign_type.into(),
            trade_type: validated.trade_type.clone(),
            state: OrderState::Created,
            prepay_id: None,
            code_url: None,
            transaction_id: None,
            idempotency_key: Some(request.idempotency_key.clone()),
            agent_id: request.agent_id.clone(),
            created_at_ms: now,
            updated_at_ms: now,
            expires_at_ms: now + i64::from(validated.expiry_minutes) * 60_000,
            paid_at_ms: None,
            version: 1,
        }
    }

    /// Sends unifiedorder for a stored order still in Created, and stores
    /// the prepay id; an order already past Created is returned as it is.
    #[tracing::instrument(name = "payment", skip_all, fields(payment_id = %order.out_trade_no))]
    pub async fn place(
        &self,
        order: Order,
        validated: &ValidatedOrder,
        actor: &str,
    ) -> Result<CreatedOrder, Error> {
        if order.state != OrderState::Created {
            return self.finish_created(order, validated.fee_estimate_fen).await;
        }
        let unified = UnifiedOrder {
            body: validated.body.clone(),
            out_trade_no: order.out_trade_no.clone(),
            total_fee: order.total_fee,
            spbill_create_ip: validated.spbill_create_ip.clone(),
            notify_url: self.config.pay_notify_url(),
            trade_type: order.trade_type.clone(),
            device_info: None,
            detail: None,
            attach: validated.attach.clone(),
            fee_type: None,
            time_start: Some(beijing_time(order.created_at_ms)),
            time_expire: Some(beijing_time(order.expires_at_ms)),
            goods_tag: None,
            product_id: Some(validated.product_id.clone()),
            limit_pay: None,
            openid: validated.openid.clone(),
            sub_openid: None,
            receipt: None,
            scene_info: validated.scene_info.clone(),
            profit_sharing: None,
        };
        let reply = self
            .call(|s, nonce| s.instance.unified_order(&s.merchant, &unified, nonce))
            .await;
        let no = order.out_trade_no.clone();
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => return Err(self.order_not_placed(order, actor, e).await),
        };
        let patch = OrderPatch {
            prepay_id: field(&reply.fields, "prepay_id").map(str::to_owned),
            code_url: field(&reply.fields, "code_url").map(str::to_owned),
            ..OrderPatch::default()
        };
        let from = [OrderState::Created];
        let cas = self
            .move_order(no, &from, OrderState::Pending, patch, None)
            .await?;
        let order = cas.record().cloned().unwrap_or(order);
        self.audit(
            actor,
            "order.create",
            &order.out_trade_no,
            "pending",
            json!({"total_fee": order.total_fee, "product_id": order.product_id, "attempts": reply.attempts}),
        )
        .await?;
        self.finish_created(order, validated.fee_estimate_fen).await
    }

    /// Adds the client parameters a JSAPI or APP payer needs.
    async fn finish_created(&self, order: Order, fee: u64) -> Result<CreatedOrder, Error> {
        let client_params = match (order.trade_type.as_str(), &order.prepay_id) {
            ("JSAPI", Some(prepay)) => Some(self.sign(|s| {
                let timestamp = u64::try_from(now_ms() / 1000).unwrap_or_default();
                s.instance
                    .jsapi_params(&s.merchant, prepay, &super::nonce(), timestamp)
            })?),
            ("APP", Some(prepay)) => Some(self.sign(|s| {
                let timestamp = u64::try_from(now_ms() / 1000).unwrap_or_default();
                s.instance
                    .app_params(&s.merchant, prepay, &super::nonce(), timestamp)
            })?),
            _ => None,
        };
        Ok(CreatedOrder {
            order,
            fee_estimate_fen: fee,
            client_params,
        })
    }

    /// unifiedorder failed: a business refusal fails the order; a transport
    /// failure leaves it Created for a retry or reconciliation.
    async fn order_not_placed(&self, order: Order, actor: &str, e: Error) -> Error {
        let no = order.out_trade_no.clone();
        let code = wechat_code(&e).map(str::to_owned);
        let outcome = match code.as_deref() {
            Some("ORDERPAID") => {
                let _ = self.query_order(&no, actor).await;
                "already paid"
            }
            Some("SYSTEMERROR" | "BIZERR_NEED_RETRY" | "FREQUENCY_LIMITED") | None => "not placed",
            Some(_) => {
                let from = [OrderState::Created];
                let failed = self
                    .move_order(no, &from, OrderState::Failed, OrderPatch::default(), None)
                    .await;
                if let Err(store) = failed {
                    return store;
                }
                "failed"
            }
        };
        let detail = json!({"error": e.to_string(), "err_code": code});
        if let Err(audit) = self
            .audit(actor, "order.create", &order.out_trade_no, outcome, detail)
            .await
        {
            return audit;
        }
        e
    }

    /// Asks WeChat about an order and applies the answer.
    #[tracing::instrument(name = "payment", skip_all, fields(payment_id = %out_trade_no))]
    pub async fn query_order(&self, out_trade_no: &str, actor: &str) -> Result<Order, Error> {
        let order = self.stored_order(out_trade_no).await?;
        let by = match &order.transaction_id {
            Some(id) => OrderRef::TransactionId(id.clone()),
            None => OrderRef::OutTradeNo(order.out_trade_no.clone()),
        };
        let reply = self
            .call(|s, nonce| s.instance.order_query(&s.merchant, &by, nonce))
            .await;
        let updated = match reply {
            Ok(reply) => self.apply_trade_state(&order, &reply.fields).await?,
            Err(e) if wechat_code(&e) == Some("ORDERNOTEXIST") => {
                self.never_reached_wechat(order).await?
            }
            Err(e) => {
                self.audit(
                    actor,
                    "order.query",
                    out_trade_no,
                    "error",
                    json!({"error": e.to_string()}),
                )
                .await?;
                return Err(e);
            }
        };
        Ok(updated)
    }

    /// Applies an orderquery reply's `trade_state`.
    async fn apply_trade_state(&self, order: &Order, fields: &Pairs) -> Result<Order, Error> {
        let state = field(fields, "trade_state").unwrap_or_default();
        let open = [OrderState::Created, OrderState::Pending];
        let (to, patch) = match state {
            "SUCCESS" => {
                let total = field(fields, "total_fee").and_then(|v| v.parse::<u64>().ok());
                if total != Some(order.total_fee) {
                    return Err(Error::Conflict {
                        what: "order",
                        id: order.out_trade_no.clone(),
                        reason: format!(
                            "WeChat reports total_fee {total:?}, the order is {} fen; not applied",
                            order.total_fee
                        ),
                    });
                }
                let patch = OrderPatch {
                    transaction_id: field(fields, "transaction_id").map(str::to_owned),
                    paid_at_ms: Some(
                        field(fields, "time_end")
                            .and_then(parse_beijing_time)
                            .unwrap_or_else(now_ms),
                    ),
                    ..OrderPatch::default()
                };
                (OrderState::Paid, patch)
            }
            "CLOSED" => (OrderState::Closed, OrderPatch::default()),
            "PAYERROR" => (OrderState::Failed, OrderPatch::default()),
            "REVOKED" => (OrderState::Reversed, OrderPatch::default()),
            "NOTPAY" | "USERPAYING" => (OrderState::Pending, OrderPatch::default()),
            _ => return Ok(order.clone()),
        };
        let from: &[OrderState] = if to == OrderState::Pending {
            &[OrderState::Created]
        } else {
            &open
        };
        let from = from.to_vec();
        let no = order.out_trade_no.clone();
        let event = audit_event(
            "reconciliation",
            "order.state",
            &order.out_trade_no,
            to.as_str(),
            json!({"from": order.state.as_str(), "trade_state": state, "via": "orderquery"}),
        );
        let cas = self.move_order(no, &from, to, patch, Some(event)).await?;
        Ok(cas.record().cloned().unwrap_or_else(|| order.clone()))
    }

    /// WeChat has no such order: it never arrived. Once expired, it never will.
    async fn never_reached_wechat(&self, order: Order) -> Result<Order, Error> {
        if order.state != OrderState::Created || order.expires_at_ms > now_ms() {
            return Ok(order);
        }
        let no = order.out_trade_no.clone();
        let from = [OrderState::Created];
        let cas = self
            .move_order(no, &from, OrderState::Closed, OrderPatch::default(), None)
            .await?;
        self.audit(
            "reconciliation",
            "order.state",
            &order.out_trade_no,
            "closed",
            json!({"reason": "expired; WeChat never received it"}),
        )
        .await?;
        Ok(cas.record().cloned().unwrap_or(order))
    }

    /// Closes an unpaid order at WeChat, then in the store.
    #[tracing::instrument(name = "payment", skip_all, fields(payment_id = %out_trade_no))]
    pub async fn close_order(&self, out_trade_no: &str, actor: &str) -> Result<Order, Error> {
        let order = self.stored_order(out_trade_no).await?;
        if !matches!(order.state, OrderState::Created | OrderState::Pending) {
            return Err(Error::Conflict {
                what: "order",
                id: out_trade_no.to_owned(),
                reason: format!(
                    "it is {}; only created or pending orders can be closed",
                    order.state
                ),
            });
        }
        let reply = self
            .call(|s, nonce| s.instance.close_order(&s.merchant, out_trade_no, nonce))
            .await;
        match reply {
            Ok(_) => {}
            Err(e) if wechat_code(&e) == Some("ORDERCLOSED") => {}
            Err(e) if wechat_code(&e) == Some("ORDERPAID") => {
                self.query_order(out_trade_no, actor).await?;
                self.audit(
                    actor,
                    "order.close",
                    out_trade_no,
                    "already paid",
                    json!({}),
                )
                .await?;
                return Err(e);
            }
            Err(e) => {
                self.audit(
                    actor,
                    "order.close",
                    out_trade_no,
                    "error",
                    json!({"error": e.to_string()}),
                )
                .await?;
                return Err(e);
            }
        }
        let no = out_trade_no.to_owned();
        let from = [OrderState::Created, OrderState::Pending];
        let cas = self
            .move_order(no, &from, OrderState::Closed, OrderPatch::default(), None)
            .await?;
        self.audit(actor, "order.close", out_trade_no, "closed", json!({}))
            .await?;
        cas.record().cloned().ok_or_else(|| Error::NotFound {
            what: "order",
            id: out_trade_no.to_owned(),
        })
    }

    /// Refunds part or all of a paid order. The refund is stored (checked
    /// against what is left of the order) before it is sent; sending it
    /// again with the same `out_refund_no` is safe.
    #[tracing::instrument(name = "payment", skip_all, fields(payment_id = %input.out_trade_no))]
    pub async fn refund(&self, input: &RefundRequestInput, actor: &str) -> Result<Refund, Error> {
        let order = self.stored_order(&input.out_trade_no).await?;
        if !order.state.is_paid() {
            return Err(Error::Conflict {
                what: "order",
                id: order.out_trade_no.clone(),
                reason: format!("it is {}; only paid orders can be refunded", order.state),
            });
        }
        let now = now_ms();
        let refund = Refund {
            out_refund_no: input.out_refund_no.clone(),
            out_trade_no: order.out_trade_no.clone(),
            refund_fee: input.refund_fee,
            state: RefundState::Requested,
            refund_id: None,
            created_at_ms: now,
            updated_at_ms: now,
            version: 1,
        };
        let insert = refund.clone();
        let stored = match self.db(move |s| s.insert_refund(&insert)).await? {
            RefundInsert::New => {
                let no = order.out_trade_no.clone();
                self.db(move |s| s.settle_order(&no, now_ms())).await?;
                refund
            }
            RefundInsert::Exists(existing) => {
                if existing.out_trade_no != refund.out_trade_no
                    || existing.refund_fee != refund.refund_fee
                {
                    return Err(Error::Conflict {
                        what: "refund",
                        id: refund.out_refund_no.clone(),
                        reason: "this out_refund_no was used for a different refund".into(),
                    });
                }
                if existing.state != RefundState::Requested {
                    return Ok(existing);
                }
                existing
            }
            RefundInsert::OrderMissing => {
                return Err(Error::NotFound {
                    what: "order",
                    id: order.out_trade_no.clone(),
                });
            }
            RefundInsert::ExceedsOrder {
                total_fee,
                refunded,
            } => {
                let reason = format!(
                    "refund_fee {} exceeds what is left: the order is {total_fee} fen and {refunded} fen is refunded or being refunded",
                    refund.refund_fee
                );
                self.audit(
                    actor,
                    "refund.create",
                    &refund.out_refund_no,
                    "refused",
                    json!({"reason": reason}),
                )
                .await?;
                return Err(Error::Conflict {
                    what: "refund",
                    id: refund.out_refund_no.clone(),
                    reason,
                });
            }
        };
        self.send_refund(&order, stored, input.reason.clone(), actor)
            .await
    }

    pub(super) async fn send_refund(
        &self,
        order: &Order,
        refund: Refund,
        reason: Option<String>,
        actor: &str,
    ) -> Result<Refund, Error> {
        let request = RefundRequest {
            order: match &order.transaction_id {
                Some(id) => OrderRef::TransactionId(id.clone()),
                None => OrderRef::OutTradeNo(order.out_trade_no.clone()),
            },
            out_refund_no: refund.out_refund_no.clone(),
            total_fee: order.total_fee,
            refund_fee: refund.refund_fee,
            refund_fee_type: None,
            refund_desc: reason,
            refund_account: None,
            notify_url: Some(self.config.refund_notify_url()),
        };
        let reply = self
            .call(|s, nonce| s.instance.refund(&s.merchant, &request, nonce))
            .await;
        let no = refund.out_refund_no.clone();
        let from = [RefundState::Requested];
        let (to, patch, outcome) = match &reply {
            Ok(reply) => (
                RefundState::Processing,
                RefundPatch {
                    refund_id: field(&reply.fields, "refund_id").map(str::to_owned),
                },
                "processing",
            ),
            Err(e) if wechat_code(e).is_some_and(|c| !retryable_code(c)) => {
                (RefundState::Failed, RefundPatch::default(), "failed")
            }
            Err(_) => (RefundState::Requested, RefundPatch::default(), "not sent"),
        };
        let updated = if to == RefundState::Requested {
            refund
        } else {
            let cas = self
                .db(move |s| s.transition_refund(&no, &from, to, patch, now_ms()))
                .await?;
            let trade = order.out_trade_no.clone();
            self.db(move |s| s.settle_order(&trade, now_ms())).await?;
            cas.record().cloned().unwrap_or(refund)
        };
        let detail = match &reply {
            Ok(r) => {
                json!({"refund_fee": updated.refund_fee, "out_trade_no": updated.out_trade_no, "attempts": r.attempts})
            }
            Err(e) => {
                json!({"refund_fee": updated.refund_fee, "out_trade_no": updated.out_trade_no, "error": e.to_string()})
            }
        };
        self.audit(
            actor,
            "refund.create",
            &updated.out_refund_no,
            outcome,
            detail,
        )
        .await?;
        match reply {
            Ok(_) => Ok(updated),
            Err(e) => Err(e),
        }
    }
}

/// Codes that leave a refund worth sending again with the same number.
fn retryable_code(code: &str) -> bool {
    matches!(
        code,
        "SYSTEMERROR" | "BIZERR_NEED_RETRY" | "FREQUENCY_LIMITED" | "NOTENOUGH"
    )
}

/// Whether an order found under an idempotency key is the order now asked
/// for: same product, quantity, trade type and amount.
pub fn same_order(existing: &Order, fresh: &Order) -> bool {
    existing.product_id == fresh.product_id
        && existing.quantity == fresh.quantity
        && existing.trade_type == fresh.trade_type
        && existing.total_fee == fresh.total_fee
}

/// [`same_order`], or the conflict to report.
fn same_request(existing: &Order, fresh: &Order) -> Result<(), Error> {
    if same_order(existing, fresh) {
        Ok(())
    } else {
        Err(Error::Conflict {
            what: "order",
            id: existing.out_trade_no.clone(),
            reason: "this idempotency key was used for a different order".into(),
        })
    }
}
