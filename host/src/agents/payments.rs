//! What an agent can do, each step checked against its grant before the
//! gateway signs anything, and each outcome — refusals included — audited.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Agent, AgentError, BUDGET_WINDOW_MS, Capability};
use crate::error::Error;
use crate::gateway::{Gateway, OrderRequest, RefundRequestInput, now_ms, same_order};
use crate::store::{
    Admission, Approval, ApprovalInput, ApprovalKind, ApprovalState, Inserted, Order, OrderState,
    Refund, SpendLimit, Transition,
};

/// `POST /v1/payments`: what the agent wants sold. No price: the catalog has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentIntent {
    /// Catalog product.
    pub product_id: String,
    /// Units (default 1).
    #[serde(default = "one")]
    pub quantity: u32,
    /// `NATIVE` (default, a QR code), `JSAPI`, `APP` or `MWEB`.
    #[serde(default = "native")]
    pub trade_type: String,
    /// The payer's openid, for `JSAPI`.
    #[serde(default)]
    pub payer_openid: Option<String>,
    /// The payer's IP (APP, MWEB); the server's otherwise (default 127.0.0.1).
    #[serde(default)]
    pub client_ip: Option<String>,
    /// The same key returns the same payment, never a second one.
    pub idempotency_key: String,
    /// A short note; it reaches `attach` only if the policy admits it.
    #[serde(default)]
    pub note: Option<String>,
    /// Scene info JSON, for `MWEB`.
    #[serde(default)]
    pub scene_info: Option<String>,
}

const fn one() -> u32 {
    1
}

fn native() -> String {
    "NATIVE".into()
}

/// `POST /v1/payments/{id}/refunds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundIntent {
    /// Required: the same key is the same refund.
    pub idempotency_key: String,
    /// Fen to refund (default: what is left of the payment).
    #[serde(default)]
    pub amount_fen: Option<u64>,
    /// Shown to the payer.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The approval a payment or refund waits for, as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalView {
    /// Its number (`wxpay approvals approve <id>`).
    pub id: i64,
    /// `pending`, `approved` or `denied`.
    pub state: String,
    /// The decider's reason.
    pub reason: Option<String>,
}

/// A payment as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentView {
    /// The payment's id (the merchant order number).
    pub payment_id: String,
    /// The merchant order number WeChat knows.
    pub out_trade_no: String,
    /// `pending_approval`, `created`, `payment_pending`, `paid`, `closed`,
    /// `failed`, `refunding`, `refunded`, `reversed` or `denied`.
    pub status: String,
    /// The product.
    pub product_id: Option<String>,
    /// Units.
    pub quantity: u32,
    /// The price, from the catalog, in fen.
    pub amount_fen: u64,
    /// WeChat's estimated fee, in fen.
    pub fee_estimate_fen: Option<u64>,
    /// When it can no longer be paid (RFC 3339).
    pub expires_at: Option<String>,
    /// For `NATIVE`: the URL to encode as a QR code…
    pub code_url: Option<String>,
    /// …and that QR code as SVG.
    pub qr_svg: Option<String>,
    /// For `JSAPI`/`APP`: the signed parameters for the payer's client.
    pub client_params: Option<BTreeMap<String, String>>,
    /// WeChat's transaction id, once paid.
    pub transaction_id: Option<String>,
    /// The approval it waits for or waited for.
    pub approval: Option<ApprovalView>,
}

/// A refund as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundView {
    /// The refund's id (the merchant refund number).
    pub refund_id: String,
    /// The payment refunded.
    pub payment_id: String,
    /// Fen.
    pub amount_fen: u64,
    /// `pending_approval`, `denied`, `requested`, `processing`,
    /// `succeeded`, `closed` or `failed`.
    pub status: String,
    /// The approval it waits for or waited for.
    pub approval: Option<ApprovalView>,
}

fn actor(agent: &Agent) -> String {
    format!("agent:{}", agent.id)
}

/// Refuses with `error` after auditing the refusal.
async fn refuse(
    gateway: &Gateway,
    agent: &Agent,
    action: &str,
    subject: &str,
    error: AgentError,
) -> AgentError {
    gateway.metrics().guardrail_refusal(error.code);
    let detail = json!({"code": error.code, "field": error.field, "message": error.message});
    if let Err(e) = gateway
        .audit(&actor(agent), action, subject, "refused", detail)
        .await
    {
        return AgentError::from(e);
    }
    error
}

pub(super) async fn require(
    gateway: &Gateway,
    agent: &Agent,
    capability: Capability,
    action: &str,
    subject: &str,
) -> Result<(), AgentError> {
    if agent.grant.allows(capability) {
        return Ok(());
    }
    let error = AgentError::forbidden(
        "capability_missing",
        format!(
            "this agent's grant does not include `{}`; ask the operator to extend it",
            capability.as_str()
        ),
    );
    Err(refuse(gateway, agent, action, subject, error).await)
}

fn status_of(state: OrderState) -> &'static str {
    match state {
        OrderState::Pending => "payment_pending",
        other => other.as_str(),
    }
}

fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
}

/// The code URL as an SVG QR code.
pub fn qr_svg(code_url: &str) -> Option<String> {
    let code = qrcode::QrCode::new(code_url.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build(),
    )
}

fn approval_view(a: &Approval) -> ApprovalView {
    ApprovalView {
        id: a.id,
        state: a.state.as_str().to_owned(),
        reason: a.reason.clone(),
    }
}

fn order_view(
    order: &Order,
    fee: Option<u64>,
    params: Option<Vec<(String, String)>>,
) -> PaymentView {
    PaymentView {
        payment_id: order.out_trade_no.clone(),
        out_trade_no: order.out_trade_no.clone(),
        status: status_of(order.state).to_owned(),
        product_id: order.product_id.clone(),
        quantity: order.quantity,
        amount_fen: order.total_fee,
        fee_estimate_fen: fee,
        expires_at: rfc3339(order.expires_at_ms),
        code_url: order.code_url.clone(),
        qr_svg: order.code_url.as_deref().and_then(qr_svg),
        client_params: params.map(|p| p.into_iter().collect()),
        transaction_id: order.transaction_id.clone(),
        approval: None,
    }
}

fn pending_view(approval: &Approval) -> PaymentView {
    let request: Option<OrderRequest> = serde_json::from_str(&approval.request_json).ok();
    let status = match approval.state {
        ApprovalState::Pending => "pending_approval",
        ApprovalState::Denied => "denied",
        ApprovalState::Approved => "created",
    };
    PaymentView {
        payment_id: approval.subject.clone(),
        out_trade_no: approval.subject.clone(),
        status: status.to_owned(),
        product_id: request.as_ref().map(|r| r.product_id.clone()),
        quantity: request.as_ref().map_or(0, |r| r.quantity),
        amount_fen: approval.amount_fen,
        fee_estimate_fen: None,
        expires_at: None,
        code_url: None,
        qr_svg: None,
        client_params: None,
        transaction_id: None,
        approval: Some(approval_view(approval)),
    }
}

/// `POST /v1/payments`.
pub async fn create_payment(
    gateway: &Gateway,
    agent: &Agent,
    intent: PaymentIntent,
) -> Result<PaymentView, AgentError> {
    const ACTION: &str = "payment.create";
    let product = intent.product_id.clone();
    require(gateway, agent, Capability::Create, ACTION, &product).await?;
    if !agent.grant.covers(&product) {
        let error = AgentError::forbidden(
            "product_not_allowed",
            format!("this agent may not sell product {product:?}; call list_products for the ones it may"),
        )
        .at("product_id");
        return Err(refuse(gateway, agent, ACTION, &product, error).await);
    }
    let request = order_request(agent, &intent);
    let who = actor(agent);
    let validated = gateway.validate(&request, &who).await?;
    let amount = validated.total_fee;
    let no = validated.out_trade_no.clone();
    if amount > agent.grant.per_payment_cap_fen {
        let error = AgentError::forbidden(
            "over_cap",
            format!(
                "{amount} fen is over this agent's per-payment cap of {} fen; lower the quantity",
                agent.grant.per_payment_cap_fen
            ),
        )
        .at("quantity");
        return Err(refuse(gateway, agent, ACTION, &no, error).await);
    }
    let order = gateway.order_record(&request, &validated);
    let now = now_ms();
    let needs_approval = agent
        .grant
        .approval_threshold_fen
        .is_some_and(|threshold| amount > threshold);
    let approval = needs_approval.then(|| ApprovalInput {
        kind: ApprovalKind::Payment,
        subject: no.clone(),
        agent_id: agent.id.clone(),
        amount_fen: amount,
        request_json: serde_json::to_string(&request).unwrap_or_else(|_| "{}".into()),
        requested_at_ms: now,
    });
    let limit = SpendLimit {
        since_ms: now - BUDGET_WINDOW_MS,
        limit_fen: agent.grant.daily_budget_fen,
    };
    let insert = order.clone();
    let admission = gateway
        .db(move |s| s.admit_agent_payment(&insert, approval.as_ref(), Some(limit)))
        .await?;
    match admission {
        Admission::Ordered => {
            let placed = gateway.place(order, &validated, &who).await?;
            Ok(order_view(
                &placed.order,
                Some(placed.fee_estimate_fen),
                placed.client_params,
            ))
        }
        Admission::OrderExists(existing) => {
            if !same_order(&existing, &order) {
                return Err(AgentError::conflict(
                    "idempotency_conflict",
                    "this idempotency key was used for a different payment; use a new key",
                )
                .at("idempotency_key"));
            }
            let placed = gateway.place(existing, &validated, &who).await?;
            Ok(order_view(
                &placed.order,
                Some(placed.fee_estimate_fen),
                placed.client_params,
            ))
        }
        Admission::ApprovalExists(existing) => {
            if existing.amount_fen != amount || existing.agent_id != agent.id {
                return Err(AgentError::conflict(
                    "idempotency_conflict",
                    "this idempotency key was used for a different payment; use a new key",
                )
                .at("idempotency_key"));
            }
            Ok(pending_view(&existing))
        }
        Admission::AwaitingApproval(approval) => {
            gateway.metrics().approval("payment", "requested");
            let detail = json!({"approval_id": approval.id, "amount_fen": amount, "threshold_fen": agent.grant.approval_threshold_fen});
            gateway
                .audit(&who, ACTION, &no, "pending_approval", detail)
                .await?;
            Ok(pending_view(&approval))
        }
        Admission::OverBudget { spent_fen } => {
            let left = agent.grant.daily_budget_fen.saturating_sub(spent_fen);
            let error = AgentError::forbidden(
                "over_budget",
                format!(
                    "{amount} fen would exceed this agent's 24-hour budget: {left} fen of {} fen is left",
                    agent.grant.daily_budget_fen
                ),
            );
            Err(refuse(gateway, agent, ACTION, &no, error).await)
        }
    }
}

/// The gateway's request for an agent's intent, in the agent's key space.
pub(super) fn order_request(agent: &Agent, intent: &PaymentIntent) -> OrderRequest {
    OrderRequest {
        product_id: intent.product_id.clone(),
        quantity: intent.quantity,
        trade_type: intent.trade_type.clone(),
        payer_openid: intent.payer_openid.clone(),
        client_ip: intent
            .client_ip
            .clone()
            .unwrap_or_else(|| "127.0.0.1".into()),
        idempotency_key: intent.idempotency_key.clone(),
        note: intent.note.clone(),
        scene_info: intent.scene_info.clone(),
        agent_id: Some(agent.id.clone()),
    }
}

/// `GET /v1/payments/{id}`.
pub async fn get_payment(
    gateway: &Gateway,
    agent: &Agent,
    id: &str,
) -> Result<PaymentView, AgentError> {
    require(gateway, agent, Capability::Read, "payment.read", id).await?;
    view(gateway, agent, id).await
}

async fn view(gateway: &Gateway, agent: &Agent, id: &str) -> Result<PaymentView, AgentError> {
    let no = id.to_owned();
    let order = gateway.read(move |s| s.order(&no)).await?;
    if let Some(order) = order.filter(|o| o.agent_id.as_deref() == Some(agent.id.as_str())) {
        let mut shown = order_view(&order, None, None);
        let subject = order.out_trade_no.clone();
        let approval = gateway
            .read(move |s| s.approval(ApprovalKind::Payment, &subject))
            .await?;
        shown.approval = approval.as_ref().map(approval_view);
        return Ok(shown);
    }
    let no = id.to_owned();
    let approval = gateway
        .read(move |s| s.approval(ApprovalKind::Payment, &no))
        .await?;
    match approval.filter(|a| a.agent_id == agent.id) {
        Some(a) => Ok(pending_view(&a)),
        None => Err(AgentError::not_found(format!(
            "this agent has no payment {id}"
        ))),
    }
}

/// Statuses a payment leaves on its own (by payment, approval or expiry).
const WAITING: [&str; 3] = ["created", "payment_pending", "pending_approval"];

/// `GET /v1/payments/{id}/wait?timeout_s=`: returns at once unless the
/// payment is waiting (created, payment_pending, pending_approval); then
/// when its status changes, or when the timeout passes.
pub async fn wait_payment(
    gateway: &Gateway,
    agent: &Agent,
    id: &str,
    timeout: Duration,
) -> Result<PaymentView, AgentError> {
    require(gateway, agent, Capability::Read, "payment.read", id).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let first = view(gateway, agent, id).await?;
    if !WAITING.contains(&first.status.as_str()) {
        return Ok(first);
    }
    loop {
        let notified = gateway.changes().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = view(gateway, agent, id).await?;
        if now.status != first.status {
            return Ok(now);
        }
        let poll = tokio::time::Instant::now() + Duration::from_secs(1);
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(poll.min(deadline)) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return view(gateway, agent, id).await;
        }
    }
}

/// `POST /v1/payments/{id}/close`.
pub async fn close_payment(
    gateway: &Gateway,
    agent: &Agent,
    id: &str,
) -> Result<PaymentView, AgentError> {
    require(gateway, agent, Capability::Close, "payment.close", id).await?;
    let shown = view(gateway, agent, id).await?;
    if let Some(approval) = shown.approval.as_ref().filter(|a| a.state == "pending") {
        let (approval_id, who) = (approval.id, actor(agent));
        let withdrawn = gateway
            .db(move |s| {
                s.decide_approval(
                    approval_id,
                    ApprovalState::Denied,
                    &who,
                    Some("withdrawn by the agent"),
                    now_ms(),
                )
            })
            .await?;
        if !withdrawn.applied() {
            return view(gateway, agent, id).await;
        }
        gateway
            .audit(
                &actor(agent),
                "payment.close",
                id,
                "withdrawn",
                json!({"approval_id": approval_id}),
            )
            .await?;
        return view(gateway, agent, id).await;
    }
    let closed = gateway.close_order(id, &actor(agent)).await?;
    Ok(order_view(&closed, None, None))
}

/// The refund number for an agent's refund key: the same key, the same refund.
fn refund_number(agent: &Agent, payment_id: &str, key: &str) -> String {
    super::derived_id("RF", "wxpay-refund", &[&agent.id, payment_id, key])
}

/// `POST /v1/payments/{id}/refunds`.
pub async fn refund_payment(
    gateway: &Gateway,
    agent: &Agent,
    id: &str,
    intent: RefundIntent,
) -> Result<RefundView, AgentError> {
    const ACTION: &str = "refund.create";
    require(gateway, agent, Capability::Refund, ACTION, id).await?;
    super::balances::check_key(&intent.idempotency_key)?;
    let no = id.to_owned();
    let order = gateway
        .read(move |s| s.order(&no))
        .await?
        .filter(|o| o.agent_id.as_deref() == Some(agent.id.as_str()))
        .ok_or_else(|| AgentError::not_found(format!("this agent has no payment {id}")))?;
    if !order.state.is_paid() {
        let error = AgentError::conflict(
            "not_paid",
            format!(
                "payment {id} is {}; only paid payments can be refunded",
                status_of(order.state)
            ),
        );
        return Err(refuse(gateway, agent, ACTION, id, error).await);
    }
    let out_refund_no = refund_number(agent, id, &intent.idempotency_key);
    let trade = order.out_trade_no.clone();
    let refunded = gateway.read(move |s| s.refunded_total(&trade)).await?;
    let amount = match intent.amount_fen {
        Some(amount) => amount,
        None => order.total_fee.saturating_sub(refunded),
    };
    if amount == 0 || amount > order.total_fee {
        return Err(AgentError::invalid(
            "amount_fen",
            format!(
                "must be between 1 and the payment's {} fen",
                order.total_fee
            ),
        ));
    }
    let input = RefundRequestInput {
        out_trade_no: order.out_trade_no.clone(),
        out_refund_no: out_refund_no.clone(),
        refund_fee: amount,
        reason: intent.reason,
    };
    if !agent.grant.refunds_need_approval {
        let refund = gateway.refund(&input, &actor(agent)).await?;
        return Ok(refund_view(&refund, None));
    }
    let no = out_refund_no.clone();
    if let Some(refund) = gateway.read(move |s| s.refund(&no)).await? {
        let approval = approval_for(gateway, ApprovalKind::Refund, &refund.out_refund_no).await?;
        return Ok(refund_view(&refund, approval.as_ref()));
    }
    let approval = ApprovalInput {
        kind: ApprovalKind::Refund,
        subject: out_refund_no.clone(),
        agent_id: agent.id.clone(),
        amount_fen: amount,
        request_json: serde_json::to_string(&input).unwrap_or_else(|_| "{}".into()),
        requested_at_ms: now_ms(),
    };
    let stored = approval.clone();
    let approval = match gateway.db(move |s| s.insert_approval(&stored)).await? {
        Inserted::New => {
            gateway.metrics().approval("refund", "requested");
            let a = approval_for(gateway, ApprovalKind::Refund, &out_refund_no)
                .await?
                .ok_or_else(|| AgentError::internal("the approval request was not stored"))?;
            gateway
                .audit(
                    &actor(agent),
                    ACTION,
                    &out_refund_no,
                    "pending_approval",
                    json!({"approval_id": a.id, "payment_id": id, "amount_fen": amount}),
                )
                .await?;
            a
        }
        Inserted::Exists(existing) if existing.amount_fen == amount => existing,
        Inserted::Exists(_) => {
            return Err(AgentError::conflict(
                "idempotency_conflict",
                "this idempotency key was used for a refund of another amount; use a new key",
            )
            .at("idempotency_key"));
        }
    };
    Ok(pending_refund_view(&approval, id))
}

/// `GET /v1/payments/{id}/refunds/{refund_id}`.
pub async fn get_refund(
    gateway: &Gateway,
    agent: &Agent,
    payment_id: &str,
    refund_id: &str,
) -> Result<RefundView, AgentError> {
    require(gateway, agent, Capability::Read, "refund.read", refund_id).await?;
    view(gateway, agent, payment_id).await?;
    let approval = approval_for(gateway, ApprovalKind::Refund, refund_id).await?;
    let no = refund_id.to_owned();
    match gateway.read(move |s| s.refund(&no)).await? {
        Some(refund) if refund.out_trade_no == payment_id => {
            Ok(refund_view(&refund, approval.as_ref()))
        }
        _ => match approval.filter(|a| a.agent_id == agent.id) {
            Some(a) => Ok(pending_refund_view(&a, payment_id)),
            None => Err(AgentError::not_found(format!(
                "payment {payment_id} has no refund {refund_id}"
            ))),
        },
    }
}

async fn approval_for(
    gateway: &Gateway,
    kind: ApprovalKind,
    subject: &str,
) -> Result<Option<Approval>, Error> {
    let subject = subject.to_owned();
    gateway.read(move |s| s.approval(kind, &subject)).await
}

fn refund_view(refund: &Refund, approval: Option<&Approval>) -> RefundView {
    RefundView {
        refund_id: refund.out_refund_no.clone(),
        payment_id: refund.out_trade_no.clone(),
        amount_fen: refund.refund_fee,
        status: refund.state.as_str().to_owned(),
        approval: approval.map(approval_view),
    }
}

fn pending_refund_view(approval: &Approval, payment_id: &str) -> RefundView {
    RefundView {
        refund_id: approval.subject.clone(),
        payment_id: payment_id.to_owned(),
        amount_fen: approval.amount_fen,
        status: match approval.state {
            ApprovalState::Pending => "pending_approval",
            ApprovalState::Denied => "denied",
            ApprovalState::Approved => "requested",
        }
        .to_owned(),
        approval: Some(approval_view(approval)),
    }
}

/// Proof that an operator's passkey assertion, bound to one approval, was
/// just verified. Only the console's passkey ceremony makes one.
#[derive(Debug)]
pub struct PasskeyProof {
    approval_id: i64,
}

impl PasskeyProof {
    /// Made by the console after `finish_passkey_authentication` succeeded
    /// for a ceremony started for `approval_id`.
    pub(crate) fn verified_for(approval_id: i64) -> Self {
        Self { approval_id }
    }
}

/// `wxpay approvals approve`: marks the approval approved (once), then
/// carries out the payment or refund it held. Approving an approved one
/// again retries the carrying out; reconciliation retries it too.
///
/// Refused with [`Error::PasskeyRequired`] when the amount is above
/// `console.passkey_threshold_fen`: that takes [`approve_with_passkey`].
pub async fn approve(gateway: &Gateway, id: i64, operator: &str) -> Result<Approval, Error> {
    approve_as(gateway, id, operator, None).await
}

/// Approves with a verified passkey assertion bound to this approval: the
/// only way past `console.passkey_threshold_fen`.
pub async fn approve_with_passkey(
    gateway: &Gateway,
    operator: &str,
    proof: &PasskeyProof,
) -> Result<Approval, Error> {
    approve_as(gateway, proof.approval_id, operator, Some(proof)).await
}

async fn approve_as(
    gateway: &Gateway,
    id: i64,
    operator: &str,
    proof: Option<&PasskeyProof>,
) -> Result<Approval, Error> {
    let asked = gateway
        .read(move |s| s.approval_by_id(id))
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "approval",
            id: id.to_string(),
        })?;
    let threshold_fen = gateway.config().console.passkey_threshold_fen;
    let proven = proof.is_some_and(|p| p.approval_id == id);
    if asked.amount_fen > threshold_fen && !proven {
        gateway
            .metrics()
            .approval(asked.kind.as_str(), "needs_passkey");
        return Err(Error::PasskeyRequired {
            id,
            amount_fen: asked.amount_fen,
            threshold_fen,
        });
    }
    let decided = gateway
        .db({
            let operator = operator.to_owned();
            move |s| s.decide_approval(id, ApprovalState::Approved, &operator, None, now_ms())
        })
        .await?;
    let who = format!("operator:{operator}");
    let approval = match decided {
        // Approving again carries out what was approved, if it has not
        // happened yet: the order and refund numbers make it harmless.
        Transition::AlreadyThere(a) => a,
        other => {
            let a = decided_or_error(other, id, ApprovalState::Approved)?;
            gateway.metrics().approval(a.kind.as_str(), "approved");
            gateway
                .audit(&who, "approval.approve", &a.subject, "approved", json!({"approval_id": id, "kind": a.kind.as_str(), "amount_fen": a.amount_fen, "agent_id": a.agent_id, "passkey": proven}))
                .await?;
            a
        }
    };
    carry_out(gateway, &approval, &who).await?;
    Ok(approval)
}

/// Sends what an approved approval held. Safe to repeat: the order and
/// refund numbers are fixed by the request.
pub async fn carry_out(gateway: &Gateway, approval: &Approval, actor: &str) -> Result<(), Error> {
    let bad = |e: serde_json::Error| Error::input("approval request", e);
    match approval.kind {
        ApprovalKind::Payment => {
            let request: OrderRequest =
                serde_json::from_str(&approval.request_json).map_err(bad)?;
            gateway.create_order(&request, actor).await.map(|_| ())
        }
        ApprovalKind::Refund => {
            let input: RefundRequestInput =
                serde_json::from_str(&approval.request_json).map_err(bad)?;
            gateway.refund(&input, actor).await.map(|_| ())
        }
    }
}

/// `wxpay approvals deny`.
pub async fn deny(
    gateway: &Gateway,
    id: i64,
    operator: &str,
    reason: &str,
) -> Result<Approval, Error> {
    let decided = gateway
        .db({
            let (operator, reason) = (operator.to_owned(), reason.to_owned());
            move |s| {
                s.decide_approval(
                    id,
                    ApprovalState::Denied,
                    &operator,
                    Some(&reason),
                    now_ms(),
                )
            }
        })
        .await?;
    let approval = decided_or_error(decided, id, ApprovalState::Denied)?;
    gateway.metrics().approval(approval.kind.as_str(), "denied");
    gateway
        .audit(
            &format!("operator:{operator}"),
            "approval.deny",
            &approval.subject,
            "denied",
            json!({"approval_id": id, "reason": reason}),
        )
        .await?;
    Ok(approval)
}

fn decided_or_error(
    decided: Transition<Approval>,
    id: i64,
    to: ApprovalState,
) -> Result<Approval, Error> {
    match decided {
        Transition::Applied(a) => Ok(a),
        Transition::Missing => Err(Error::NotFound {
            what: "approval",
            id: id.to_string(),
        }),
        Transition::AlreadyThere(a) | Transition::Refused(a) => Err(Error::Conflict {
            what: "approval",
            id: id.to_string(),
            reason: format!("it is already {}; it cannot become {to}", a.state),
        }),
    }
}
