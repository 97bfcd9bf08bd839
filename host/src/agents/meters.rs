//! Metering sessions: many small charges, one payment.
//!
//! When a payer has no prepaid balance, an agent can still bill per
//! prompt: it opens a meter for the payer, adds usage as it goes (each
//! addition keyed, so retries are harmless), and settles the meter as one
//! WeChat payment for the total — one fee instead of one per prompt.
//! Settling closes the meter to more usage in the same step that fixes the
//! amount, and the settlement goes through every payment guardrail.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::payments::{self, PaymentIntent, PaymentView};
use super::{Agent, AgentError, Capability};
use crate::gateway::{Gateway, now_ms};
use crate::store::{Meter, Usage};

/// `POST /v1/meters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenMeter {
    /// The payer whose usage is metered.
    pub payer_id: String,
    /// The same key is the same meter.
    pub idempotency_key: String,
}

/// `POST /v1/meters/{id}/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddUsage {
    /// Fen, at least 1.
    pub amount_fen: u64,
    /// The same key is the same usage.
    pub idempotency_key: String,
    /// What it was, e.g. `prompt 7: 640 tokens`.
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /v1/meters/{id}/settle`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settle {
    /// `NATIVE` (default), `JSAPI`, `APP` or `MWEB`.
    #[serde(default)]
    pub trade_type: Option<String>,
    /// The payer's openid, for `JSAPI`.
    #[serde(default)]
    pub payer_openid: Option<String>,
}

/// A meter as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeterView {
    /// Its id.
    pub meter_id: String,
    /// The payer.
    pub payer_id: String,
    /// Accumulated fen.
    pub total_fen: u64,
    /// `open` or `settled`.
    pub status: String,
    /// The settlement payment, once settled.
    pub payment_id: Option<String>,
}

fn view(meter: &Meter) -> MeterView {
    MeterView {
        meter_id: meter.meter_id.clone(),
        payer_id: meter.payer_id.clone(),
        total_fen: meter.total_fen,
        status: if meter.settled_at_ms.is_some() {
            "settled"
        } else {
            "open"
        }
        .to_owned(),
        payment_id: meter.out_trade_no.clone(),
    }
}

fn meter_id(agent: &Agent, key: &str) -> String {
    super::derived_id("MT", "wxpay-meter", &[&agent.id, key])
}

async fn own(gateway: &Gateway, agent: &Agent, id: &str) -> Result<Meter, AgentError> {
    let lookup = id.to_owned();
    gateway
        .db(move |s| s.meter(&lookup))
        .await?
        .filter(|m| m.agent_id == agent.id)
        .ok_or_else(|| AgentError::not_found(format!("this agent has no meter {id}")))
}

/// `POST /v1/meters`.
pub async fn open(
    gateway: &Gateway,
    agent: &Agent,
    intent: OpenMeter,
) -> Result<MeterView, AgentError> {
    payments::require(
        gateway,
        agent,
        Capability::Charge,
        "meter.open",
        &intent.payer_id,
    )
    .await?;
    if gateway.config().ledger.meter_product.is_none() {
        return Err(AgentError::conflict(
            "not_configured",
            "metering is not configured on this gateway ([ledger] meter_product)",
        ));
    }
    super::balances::check_payer(&intent.payer_id)?;
    super::balances::check_key(&intent.idempotency_key)?;
    let id = meter_id(agent, &intent.idempotency_key);
    let (agent_id, payer) = (agent.id.clone(), intent.payer_id.clone());
    let meter = gateway
        .db(move |s| s.open_meter(&id, &agent_id, &payer, now_ms()))
        .await?;
    if meter.payer_id != intent.payer_id {
        return Err(AgentError::conflict(
            "idempotency_conflict",
            "this idempotency key opened a meter for another payer",
        )
        .at("idempotency_key"));
    }
    Ok(view(&meter))
}

/// `GET /v1/meters/{id}`.
pub async fn read(gateway: &Gateway, agent: &Agent, id: &str) -> Result<MeterView, AgentError> {
    payments::require(gateway, agent, Capability::Read, "meter.read", id).await?;
    Ok(view(&own(gateway, agent, id).await?))
}

/// `POST /v1/meters/{id}/usage`.
pub async fn add(
    gateway: &Gateway,
    agent: &Agent,
    id: &str,
    usage: AddUsage,
) -> Result<MeterView, AgentError> {
    payments::require(gateway, agent, Capability::Charge, "meter.usage", id).await?;
    super::balances::check_key(&usage.idempotency_key)?;
    if usage.amount_fen == 0 || usage.amount_fen > agent.grant.per_payment_cap_fen {
        return Err(AgentError::invalid(
            "amount_fen",
            format!(
                "must be between 1 and this agent's cap of {} fen",
                agent.grant.per_payment_cap_fen
            ),
        ));
    }
    own(gateway, agent, id).await?;
    let (meter, reference, note) = (
        id.to_owned(),
        format!("{id}/{}", usage.idempotency_key),
        usage.note.clone(),
    );
    let amount = usage.amount_fen;
    let added = gateway
        .db(move |s| s.add_usage(&meter, &reference, amount, note.as_deref(), now_ms()))
        .await?;
    match added {
        Usage::Added(meter) => Ok(view(&meter)),
        Usage::Exists { meter, amount_fen } if amount_fen == usage.amount_fen => Ok(view(&meter)),
        Usage::Exists { .. } => Err(AgentError::conflict(
            "idempotency_conflict",
            "this idempotency key recorded another amount",
        )
        .at("idempotency_key")),
        Usage::Settled(_) => Err(AgentError::conflict(
            "meter_settled",
            "this meter is settled; open a new one for more usage",
        )),
        Usage::Missing => Err(AgentError::not_found(format!(
            "this agent has no meter {id}"
        ))),
    }
}

/// `POST /v1/meters/{id}/settle`: one payment for the total.
pub async fn settle(
    gateway: &Gateway,
    agent: &Agent,
    id: &str,
    settle: Settle,
) -> Result<PaymentView, AgentError> {
    payments::require(gateway, agent, Capability::Create, "meter.settle", id).await?;
    let meter = own(gateway, agent, id).await?;
    let product_id = gateway
        .config()
        .ledger
        .meter_product
        .clone()
        .ok_or_else(|| {
            AgentError::conflict(
                "not_configured",
                "metering is not configured on this gateway",
            )
        })?;
    let min = gateway.policy().min_order_fen;
    if meter.total_fen < min {
        return Err(AgentError::conflict(
            "below_minimum",
            format!(
                "the meter holds {} fen; a payment is at least {min} fen, so keep metering before settling",
                meter.total_fen
            ),
        ));
    }
    let quantity = u32::try_from(meter.total_fen)
        .map_err(|_| AgentError::invalid("total_fen", "too large for one payment"))?;
    let payment = PaymentIntent {
        product_id,
        quantity,
        trade_type: settle.trade_type.unwrap_or_else(|| "NATIVE".into()),
        payer_openid: settle.payer_openid,
        client_ip: None,
        idempotency_key: format!("meter/{id}"),
        note: None,
        scene_info: None,
    };
    let request = payments::order_request(agent, &payment);
    let actor = format!("agent:{}", agent.id);
    let no = gateway.validate(&request, &actor).await?.out_trade_no;
    let (meter_id, order) = (id.to_owned(), no.clone());
    let settled = gateway
        .db(move |s| s.settle_meter(&meter_id, &order, now_ms()))
        .await?
        .ok_or_else(|| AgentError::not_found(format!("this agent has no meter {id}")))?;
    if settled.total_fen != meter.total_fen || settled.out_trade_no.as_deref() != Some(no.as_str())
    {
        return Err(AgentError::conflict(
            "meter_changed",
            "usage arrived while settling; read the meter and settle again",
        ));
    }
    gateway
        .audit(
            &actor,
            "meter.settle",
            id,
            "settling",
            json!({"total_fen": settled.total_fen, "payment_id": no}),
        )
        .await?;
    payments::create_payment(gateway, agent, payment).await
}
