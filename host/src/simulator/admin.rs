//! The admin API: the payer's side and the test operator's controls.
//!
//! - `POST /admin/pay` `{"out_trade_no": "...", "mch_id"?: "...", "sandbox"?: false, "openid"?: "..."}`
//!   marks a NOTPAY order paid, as if the payer scanned the QR code, and
//!   starts its notification.
//! - `POST /admin/scenario` `{"out_trade_no": "...", "scenario": "forged_signature", ...}` sets
//!   the scenario of an order, or of an order number not used yet.
//! - `GET /admin/orders/{out_trade_no}?mch_id=&sandbox=` shows an order
//!   with its refunds and every notification attempt.
//! - `GET /admin/scenarios` lists the scenarios chosen by amount.
//! - `POST /admin/clock` `{"advance_secs": 31622400}` jumps simulated time
//!   forward (to expire codes or refund windows without waiting).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::scenario::{BY_AMOUNT, Scenario};
use super::state::{Env, OrderKey, TradeState};
use super::{Simulator, endpoints, notify};

pub(super) fn routes() -> axum::Router<Simulator> {
    axum::Router::new()
        .route("/admin/pay", post(pay))
        .route("/admin/scenario", post(set_scenario))
        .route("/admin/orders/{out_trade_no}", get(show_order))
        .route("/admin/scenarios", get(list_scenarios))
        .route("/admin/clock", post(advance_clock))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderName {
    out_trade_no: String,
    #[serde(default)]
    mch_id: Option<String>,
    #[serde(default)]
    sandbox: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PayRequest {
    #[serde(flatten)]
    order: OrderName,
    #[serde(default)]
    openid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioRequest {
    #[serde(flatten)]
    order: OrderName,
    scenario: Scenario,
}

#[derive(Debug, Deserialize)]
struct OrderQuery {
    #[serde(default)]
    mch_id: Option<String>,
    #[serde(default)]
    sandbox: bool,
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Resolves an order name to its key: the mch_id may be left out when only
/// one merchant is configured.
fn key_for(sim: &Simulator, name: &OrderName) -> Result<OrderKey, (StatusCode, String)> {
    let env = if name.sandbox {
        Env::Sandbox
    } else {
        Env::Production
    };
    let mch_id = match &name.mch_id {
        Some(id) if sim.shared.merchants.contains_key(id) => id.clone(),
        Some(id) => {
            return Err((StatusCode::NOT_FOUND, format!("unknown mch_id {id}")));
        }
        None if sim.shared.merchants.len() == 1 => sim
            .shared
            .merchants
            .keys()
            .next()
            .cloned()
            .unwrap_or_default(),
        None => {
            let message = "several merchants are configured: give mch_id";
            return Err((StatusCode::BAD_REQUEST, message.into()));
        }
    };
    Ok((env, mch_id, name.out_trade_no.clone()))
}

async fn pay(State(sim): State<Simulator>, Json(request): Json<PayRequest>) -> Response {
    let key = match key_for(&sim, &request.order) {
        Ok(k) => k,
        Err((status, message)) => return problem(status, message),
    };
    let now = sim.shared.clock.now();
    let mut book = sim.shared.book.lock().await;
    let Some(order) = book.orders.get_mut(&key) else {
        return problem(StatusCode::NOT_FOUND, format!("no order {}", key.2));
    };
    if order.state != TradeState::NotPay {
        return problem(
            StatusCode::CONFLICT,
            format!("order is {}, not NOTPAY", order.state.as_str()),
        );
    }
    if order.prepay_expires_at <= now {
        return problem(
            StatusCode::CONFLICT,
            "the prepay_id / code_url expired (2 hours)",
        );
    }
    endpoints::mark_paid(order, now, request.openid);
    let shown = json!(order);
    drop(book);
    notify::spawn_payment_notification(sim.clone(), key);
    Json(shown).into_response()
}

async fn set_scenario(
    State(sim): State<Simulator>,
    Json(request): Json<ScenarioRequest>,
) -> Response {
    let key = match key_for(&sim, &request.order) {
        Ok(k) => k,
        Err((status, message)) => return problem(status, message),
    };
    let mut book = sim.shared.book.lock().await;
    match book.orders.get_mut(&key) {
        Some(order) => order.scenario = request.scenario,
        None => {
            book.preset.insert(key, request.scenario);
        }
    }
    Json(json!({ "out_trade_no": request.order.out_trade_no, "scenario": request.scenario }))
        .into_response()
}

async fn show_order(
    State(sim): State<Simulator>,
    Path(out_trade_no): Path<String>,
    Query(q): Query<OrderQuery>,
) -> Response {
    let name = OrderName {
        out_trade_no,
        mch_id: q.mch_id,
        sandbox: q.sandbox,
    };
    let key = match key_for(&sim, &name) {
        Ok(k) => k,
        Err((status, message)) => return problem(status, message),
    };
    let book = sim.shared.book.lock().await;
    match book.orders.get(&key) {
        Some(order) => Json(json!(order)).into_response(),
        None => problem(StatusCode::NOT_FOUND, format!("no order {}", key.2)),
    }
}

async fn list_scenarios() -> Response {
    let table: Vec<_> = BY_AMOUNT
        .iter()
        .map(|(fen, s)| json!({ "total_fee": fen, "scenario": s }))
        .collect();
    Json(json!(table)).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockRequest {
    advance_secs: u32,
}

async fn advance_clock(
    State(sim): State<Simulator>,
    Json(request): Json<ClockRequest>,
) -> Response {
    sim.shared.clock.advance(request.advance_secs);
    let now = sim.shared.clock.now();
    Json(json!({ "now": now, "beijing": super::clock::compact(now) })).into_response()
}
