//! Prepaid balances: the answer to micropayments.
//!
//! WeChat's smallest sensible order (and the merchant's minimum, and the
//! 0.6% fee on every payment) make a payment per prompt absurd. So a payer
//! tops up once — an ordinary WeChat payment, credited only when it is
//! verified as paid — and agents debit the balance per prompt or per
//! token. A debit is atomic and never takes the balance below zero; when
//! funds run short the error says how much to top up.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::payments::{self, PaymentIntent, PaymentView};
use super::{Agent, AgentError, Capability};
use crate::gateway::{Gateway, now_ms};
use crate::store::{Charge, ChargeInput, LedgerEntry};

/// `POST /v1/balances/{payer_id}/topups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopupIntent {
    /// Fen to add: a multiple of the top-up product's price, within the
    /// configured minimum and maximum.
    pub amount_fen: u64,
    /// The same key is the same top-up.
    pub idempotency_key: String,
    /// `NATIVE` (default), `JSAPI`, `APP` or `MWEB`.
    #[serde(default)]
    pub trade_type: Option<String>,
    /// The payer's openid, for `JSAPI`.
    #[serde(default)]
    pub payer_openid: Option<String>,
    /// The payer's IP, for `APP`/`MWEB`.
    #[serde(default)]
    pub client_ip: Option<String>,
}

/// `POST /v1/charges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeIntent {
    /// Whose balance.
    pub payer_id: String,
    /// Fen to debit, at least 1.
    pub amount_fen: u64,
    /// The same key is the same charge.
    pub idempotency_key: String,
    /// What it is for (e.g. `prompt 42: 1,830 tokens`).
    #[serde(default)]
    pub note: Option<String>,
}

/// A balance as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceView {
    /// Whose.
    pub payer_id: String,
    /// Fen available.
    pub balance_fen: u64,
    /// The latest entries, newest first.
    pub entries: Vec<EntryView>,
}

/// A ledger entry as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryView {
    /// `topup` or `charge`.
    pub kind: String,
    /// Signed fen.
    pub amount_fen: i64,
    /// The top-up's payment id or the charge's id.
    pub reference: String,
    /// The charge's note.
    pub note: Option<String>,
    /// When (RFC 3339).
    pub at: Option<String>,
}

/// A charge's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeView {
    /// The charge's id.
    pub charge_id: String,
    /// Whose balance.
    pub payer_id: String,
    /// Fen debited.
    pub amount_fen: u64,
    /// The balance after it.
    pub balance_fen: u64,
}

const ACTOR_PREFIX: &str = "agent:";

fn entry_view(e: &LedgerEntry) -> EntryView {
    EntryView {
        kind: e.kind.clone(),
        amount_fen: e.amount_fen,
        reference: e.reference.clone(),
        note: e.note.clone(),
        at: chrono::DateTime::from_timestamp_millis(e.at_ms).map(|t| t.to_rfc3339()),
    }
}

/// Payer ids: 1..=64 of `[A-Za-z0-9_.@-]` (an openid fits).
pub(super) fn check_payer(payer_id: &str) -> Result<(), AgentError> {
    let ok = !payer_id.is_empty()
        && payer_id.len() <= 64
        && payer_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AgentError::invalid(
            "payer_id",
            "must be 1..=64 of A-Z a-z 0-9 _ . @ -",
        ))
    }
}

pub(super) fn check_key(key: &str) -> Result<(), AgentError> {
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AgentError::invalid(
            "idempotency_key",
            "must be 1..=128 printable ASCII characters",
        ));
    }
    Ok(())
}

/// `GET /v1/balances/{payer_id}`.
pub async fn balance(
    gateway: &Gateway,
    agent: &Agent,
    payer_id: &str,
) -> Result<BalanceView, AgentError> {
    payments::require(gateway, agent, Capability::Read, "balance.read", payer_id).await?;
    check_payer(payer_id)?;
    let payer = payer_id.to_owned();
    let (balance_fen, entries) = gateway
        .db(move |s| Ok((s.balance(&payer)?, s.ledger(&payer, 20)?)))
        .await?;
    Ok(BalanceView {
        payer_id: payer_id.to_owned(),
        balance_fen,
        entries: entries.iter().map(entry_view).collect(),
    })
}

/// `POST /v1/balances/{payer_id}/topups`: a payment whose verified
/// payment credits the balance.
pub async fn topup(
    gateway: &Gateway,
    agent: &Agent,
    payer_id: &str,
    intent: TopupIntent,
) -> Result<PaymentView, AgentError> {
    check_payer(payer_id)?;
    check_key(&intent.idempotency_key)?;
    let ledger = &gateway.config().ledger;
    let product_id = ledger.topup_product.clone().ok_or_else(|| {
        AgentError::conflict(
            "not_configured",
            "top-ups are not configured on this gateway ([ledger] topup_product)",
        )
    })?;
    let step = topup_step(gateway)
        .ok_or_else(|| AgentError::internal("the top-up product is not in the catalog"))?;
    let amount = intent.amount_fen;
    if amount < ledger.min_topup_fen
        || amount > ledger.max_topup_fen
        || !amount.is_multiple_of(step)
    {
        return Err(AgentError::invalid(
            "amount_fen",
            format!(
                "must be a multiple of {step} fen between {} and {} fen",
                ledger.min_topup_fen, ledger.max_topup_fen
            ),
        ));
    }
    let quantity =
        u32::try_from(amount / step).map_err(|_| AgentError::invalid("amount_fen", "too large"))?;
    let key = format!("topup/{payer_id}/{}", intent.idempotency_key);
    let payment = PaymentIntent {
        product_id,
        quantity,
        trade_type: intent.trade_type.unwrap_or_else(|| "NATIVE".into()),
        payer_openid: intent.payer_openid,
        client_ip: intent.client_ip,
        idempotency_key: key,
        note: None,
        scene_info: None,
    };
    // The order number is fixed by the key: record the top-up before the
    // order exists, so no payment can land uncredited.
    let request = payments::order_request(agent, &payment);
    let actor = format!("{ACTOR_PREFIX}{}", agent.id);
    let no = gateway.validate(&request, &actor).await?.out_trade_no;
    let (payer, agent_id) = (payer_id.to_owned(), agent.id.clone());
    let recorded = gateway
        .db(move |s| s.register_topup(&no, &payer, Some(&agent_id), now_ms()))
        .await?;
    if recorded != payer_id {
        return Err(AgentError::conflict(
            "idempotency_conflict",
            "this idempotency key was used for another payer's top-up",
        )
        .at("idempotency_key"));
    }
    payments::create_payment(gateway, agent, payment).await
}

/// `POST /v1/charges`.
pub async fn charge(
    gateway: &Gateway,
    agent: &Agent,
    intent: ChargeIntent,
) -> Result<ChargeView, AgentError> {
    const ACTION: &str = "charge.create";
    let actor = format!("{ACTOR_PREFIX}{}", agent.id);
    payments::require(gateway, agent, Capability::Charge, ACTION, &intent.payer_id).await?;
    check_payer(&intent.payer_id)?;
    check_key(&intent.idempotency_key)?;
    if intent.amount_fen == 0 || intent.amount_fen > agent.grant.per_payment_cap_fen {
        return Err(AgentError::invalid(
            "amount_fen",
            format!(
                "must be between 1 and this agent's cap of {} fen",
                agent.grant.per_payment_cap_fen
            ),
        ));
    }
    let input = ChargeInput {
        payer_id: intent.payer_id.clone(),
        amount_fen: intent.amount_fen,
        reference: format!("{}/{}", agent.id, intent.idempotency_key),
        agent_id: agent.id.clone(),
        note: intent.note.clone(),
        at_ms: now_ms(),
    };
    let charged = gateway.db(move |s| s.charge(&input)).await?;
    match charged {
        Charge::Charged { entry, balance_fen } => {
            gateway
                .audit(&actor, ACTION, &intent.payer_id, "charged", json!({"amount_fen": intent.amount_fen, "charge_id": entry.reference, "balance_fen": balance_fen}))
                .await?;
            Ok(charge_view(&entry, balance_fen))
        }
        Charge::Exists { entry, balance_fen } => {
            let same = entry.payer_id == intent.payer_id
                && entry.amount_fen.unsigned_abs() == intent.amount_fen;
            if !same {
                return Err(AgentError::conflict(
                    "idempotency_conflict",
                    "this idempotency key was used for another charge; use a new key",
                )
                .at("idempotency_key"));
            }
            Ok(charge_view(&entry, balance_fen))
        }
        Charge::InsufficientFunds { balance_fen } => {
            let suggestion = suggested_topup(gateway, intent.amount_fen - balance_fen);
            let error = AgentError {
                status: 402,
                code: "insufficient_funds",
                field: Some("amount_fen".into()),
                message: format!(
                    "the balance of {} is {balance_fen} fen, {} fen short; ask the payer to top up {suggestion} fen (POST /v1/balances/{}/topups)",
                    intent.payer_id,
                    intent.amount_fen - balance_fen,
                    intent.payer_id
                ),
            };
            gateway
                .audit(&actor, ACTION, &intent.payer_id, "refused", json!({"code": error.code, "balance_fen": balance_fen, "amount_fen": intent.amount_fen}))
                .await?;
            Err(error)
        }
    }
}

/// The top-up step: the price of the configured top-up product.
fn topup_step(gateway: &Gateway) -> Option<u64> {
    let id = gateway.config().ledger.topup_product.as_ref()?;
    gateway
        .catalog()
        .iter()
        .find(|p| &p.product_id == id)
        .map(|p| p.unit_price_fen)
}

/// The smallest allowed top-up that covers `short` fen.
fn suggested_topup(gateway: &Gateway, short: u64) -> u64 {
    let ledger = &gateway.config().ledger;
    let step = topup_step(gateway).map_or(1, |step| step.max(1));
    let rounded = short.div_ceil(step) * step;
    rounded.max(ledger.min_topup_fen)
}

fn charge_view(entry: &LedgerEntry, balance_fen: u64) -> ChargeView {
    ChargeView {
        charge_id: entry.reference.clone(),
        payer_id: entry.payer_id.clone(),
        amount_fen: entry.amount_fen.unsigned_abs(),
        balance_fen,
    }
}
