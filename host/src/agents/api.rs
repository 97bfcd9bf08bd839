//! The agent API: JSON over HTTP under `/v1`, served by `wxpay serve`.
//!
//! Every request carries `Authorization: Bearer <token>`; the token is
//! hashed and looked up, and the agent's grant goes with the request into
//! [`payments`](super::payments), which checks it before anything is signed.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::balances::{self, BalanceView, ChargeIntent, ChargeView, TopupIntent};
use super::meters::{self, AddUsage, MeterView, OpenMeter, Settle};
use super::payments::{self, PaymentIntent, PaymentView, RefundIntent, RefundView};
use super::{Agent, AgentError, Capability, admit, token_hash};
use crate::gateway::{Gateway, now_ms};

/// The longest a `wait` may hold the request.
pub const MAX_WAIT: Duration = Duration::from_secs(120);

/// The largest request body an agent may send.
pub const MAX_BODY: usize = 16 * 1024;

/// The `/v1` routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/products", get(products))
        .route("/v1/payments", post(create))
        .route("/v1/payments/{id}", get(read))
        .route("/v1/payments/{id}/wait", get(wait))
        .route("/v1/payments/{id}/close", post(close))
        .route("/v1/payments/{id}/refunds", post(refund))
        .route("/v1/payments/{id}/refunds/{refund_id}", get(read_refund))
        .route("/v1/balances/{payer_id}", get(read_balance))
        .route("/v1/balances/{payer_id}/topups", post(topup))
        .route("/v1/charges", post(charge))
        .route("/v1/meters", post(open_meter))
        .route("/v1/meters/{id}", get(read_meter))
        .route("/v1/meters/{id}/usage", post(add_usage))
        .route("/v1/meters/{id}/settle", post(settle_meter))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(gateway)
}

/// The agent behind the request's bearer token.
struct Authenticated(Agent);

impl FromRequestParts<Arc<Gateway>> for Authenticated {
    type Rejection = AgentError;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Arc<Gateway>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                AgentError::unauthorized(
                    "unauthorized",
                    "send the agent token as `Authorization: Bearer <token>`",
                )
            })?;
        let hash = token_hash(token.trim());
        let record = gateway
            .read(move |s| s.agent_by_token(&hash))
            .await?
            .ok_or_else(|| AgentError::unauthorized("unauthorized", "unknown token"))?;
        match admit(&record, now_ms()) {
            Ok(agent) => Ok(Self(agent)),
            Err(error) => {
                let detail = json!({"code": error.code});
                gateway
                    .audit(
                        &format!("agent:{}", record.agent_id),
                        "auth",
                        &record.agent_id,
                        "refused",
                        detail,
                    )
                    .await?;
                Err(error)
            }
        }
    }
}

/// Reads a JSON body; errors name the field serde names.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, AgentError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let mut error = AgentError::invalid("body", format!("the JSON body is not valid: {e}"));
        error.code = "invalid_json";
        error
    })
}

async fn products(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
) -> Result<Json<serde_json::Value>, AgentError> {
    payments::require(&gateway, &agent, Capability::Read, "products.read", "-").await?;
    let listed: Vec<_> = gateway
        .catalog()
        .iter()
        .filter(|p| agent.grant.covers(&p.product_id))
        .map(|p| {
            json!({
                "product_id": p.product_id,
                "name": p.name,
                "unit_price_fen": p.unit_price_fen,
                "max_quantity": p.max_quantity,
            })
        })
        .collect();
    Ok(Json(json!({
        "products": listed,
        "per_payment_cap_fen": agent.grant.per_payment_cap_fen,
        "approval_threshold_fen": agent.grant.approval_threshold_fen,
    })))
}

async fn create(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
    bytes: Bytes,
) -> Result<Json<PaymentView>, AgentError> {
    let intent: PaymentIntent = body(&bytes)?;
    payments::create_payment(&gateway, &agent, intent)
        .await
        .map(Json)
}

async fn read(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<PaymentView>, AgentError> {
    payments::get_payment(&gateway, &agent, &id).await.map(Json)
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    timeout_s: Option<u64>,
}

async fn wait(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Json<PaymentView>, AgentError> {
    let timeout = Duration::from_secs(query.timeout_s.unwrap_or(30)).min(MAX_WAIT);
    payments::wait_payment(&gateway, &agent, &id, timeout)
        .await
        .map(Json)
}

async fn close(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<PaymentView>, AgentError> {
    payments::close_payment(&gateway, &agent, &id)
        .await
        .map(Json)
}

async fn refund(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<RefundView>, AgentError> {
    let intent: RefundIntent = body(&bytes)?;
    payments::refund_payment(&gateway, &agent, &id, intent)
        .await
        .map(Json)
}

async fn read_refund(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
    Path((id, refund_id)): Path<(String, String)>,
) -> Result<Json<RefundView>, AgentError> {
    payments::get_refund(&gateway, &agent, &id, &refund_id)
        .await
        .map(Json)
}

async fn read_balance(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
    Path(payer_id): Path<String>,
) -> Result<Json<BalanceView>, AgentError> {
    balances::balance(&gateway, &agent, &payer_id)
        .await
        .map(Json)
}

async fn topup(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
    Path(payer_id): Path<String>,
    bytes: Bytes,
) -> Result<Json<PaymentView>, AgentError> {
    let intent: TopupIntent = body(&bytes)?;
    balances::topup(&gateway, &agent, &payer_id, intent)
        .await
        .map(Json)
}

async fn charge(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
    bytes: Bytes,
) -> Result<Json<ChargeView>, AgentError> {
    let intent: ChargeIntent = body(&bytes)?;
    balances::charge(&gateway, &agent, intent).await.map(Json)
}

async fn open_meter(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
    bytes: Bytes,
) -> Result<Json<MeterView>, AgentError> {
    let intent: OpenMeter = body(&bytes)?;
    meters::open(&gateway, &agent, intent).await.map(Json)
}

async fn read_meter(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<MeterView>, AgentError> {
    meters::read(&gateway, &agent, &id).await.map(Json)
}

async fn add_usage(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<MeterView>, AgentError> {
    let usage: AddUsage = body(&bytes)?;
    meters::add(&gateway, &agent, &id, usage).await.map(Json)
}

async fn settle_meter(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(agent): Authenticated,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<PaymentView>, AgentError> {
    let settle: Settle = if bytes.is_empty() {
        Settle::default()
    } else {
        body(&bytes)?
    };
    meters::settle(&gateway, &agent, &id, settle)
        .await
        .map(Json)
}
