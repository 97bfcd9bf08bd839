//! Order validation: an agent's intent plus the merchant's catalog and
//! policy give an order whose price the agent cannot influence.
//!
//! An agent names a product and a quantity; it never names an amount. The
//! price is the catalog's unit price times the quantity, in integer fen,
//! with checked arithmetic. `body` is the catalog's name. The agent's free
//! text is kept out of `body` entirely and reaches `attach` only when it is
//! short and clean. `out_trade_no` is derived from the idempotency key, so a
//! retried intent maps to the same WeChat order and can never become a
//! second charge.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result, Rule};
use crate::fields;
use crate::request::TRADE_TYPES;
use crate::text::{floor_char_boundary, is_control_or_bidi};

/// A buyer's intent, as an agent states it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct OrderIntent {
    pub product_id: String,
    pub quantity: u32,
    pub trade_type: String,
    pub payer_openid: Option<String>,
    pub client_ip: String,
    pub idempotency_key: String,
    pub note: Option<String>,
    pub scene_info: Option<String>,
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Product {
    pub product_id: String,
    pub name: String,
    pub unit_price_fen: u64,
    pub max_quantity: u32,
}

/// The merchant's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Policy {
    pub min_order_fen: u64,
    pub max_order_fen: u64,
    pub refund_window_days: u32,
    pub fee_rate_bps: u32,
    pub order_expiry_minutes: u32,
    pub max_note_bytes: u32,
}

impl Default for Policy {
    /// 1 CNY minimum, 50,000 CNY maximum, 30-day refunds, 0.6 % fees,
    /// 2-hour expiry, notes up to 127 bytes.
    fn default() -> Self {
        Self {
            min_order_fen: 100,
            max_order_fen: 5_000_000,
            refund_window_days: 30,
            fee_rate_bps: 60,
            order_expiry_minutes: 120,
            max_note_bytes: 127,
        }
    }
}

/// An order the agent could not price.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ValidatedOrder {
    pub out_trade_no: String,
    pub body: String,
    pub total_fee: u64,
    pub trade_type: String,
    pub product_id: String,
    pub quantity: u32,
    pub openid: Option<String>,
    pub spbill_create_ip: String,
    pub attach: Option<String>,
    pub scene_info: Option<String>,
    pub fee_estimate_fen: u64,
    pub expiry_minutes: u32,
    pub refund_window_days: u32,
}

/// A fee estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeEstimate {
    /// Fee in fen, rounded half up.
    pub fee_fen: u64,
    /// Amount minus fee.
    pub net_fen: u64,
}

/// WeChat's `body` limit, in bytes.
pub const MAX_BODY_BYTES: usize = 127;
/// Largest fee rate, 100 %.
pub const MAX_FEE_RATE_BPS: u32 = 10_000;

/// Validates `intent` against `catalog` and `policy`.
pub fn validate(
    intent: &OrderIntent,
    catalog: &[Product],
    policy: &Policy,
) -> Result<ValidatedOrder> {
    check_policy(policy)?;
    check_catalog(catalog)?;
    let product = catalog
        .iter()
        .find(|p| p.product_id == intent.product_id)
        .ok_or_else(|| Error::field("product_id", Rule::Unknown))?;
    if !(1..=product.max_quantity).contains(&intent.quantity) {
        return Err(Error::field(
            "quantity",
            Rule::OutOfRange {
                min: 1,
                max: u64::from(product.max_quantity),
            },
        ));
    }
    let total_fee = product
        .unit_price_fen
        .checked_mul(u64::from(intent.quantity))
        .ok_or_else(|| Error::field("total_fee", Rule::Overflow))?;
    let max = policy.max_order_fen.min(fields::MAX_FEE);
    if !(policy.min_order_fen..=max).contains(&total_fee) {
        return Err(Error::field(
            "total_fee",
            Rule::OutOfRange {
                min: policy.min_order_fen,
                max,
            },
        ));
    }
    check_trade_type(intent)?;
    fields::ip("client_ip", &intent.client_ip)?;
    let attach = check_note(intent.note.as_deref(), policy.max_note_bytes)?;
    Ok(ValidatedOrder {
        out_trade_no: out_trade_no_for(&intent.idempotency_key)?,
        body: body_from_name(&product.name),
        total_fee,
        trade_type: intent.trade_type.clone(),
        product_id: product.product_id.clone(),
        quantity: intent.quantity,
        openid: intent.payer_openid.clone(),
        spbill_create_ip: intent.client_ip.clone(),
        attach,
        scene_info: intent.scene_info.clone(),
        fee_estimate_fen: estimate_fee(total_fee, policy.fee_rate_bps)?.fee_fen,
        expiry_minutes: policy.order_expiry_minutes,
        refund_window_days: policy.refund_window_days,
    })
}

fn check_policy(policy: &Policy) -> Result<()> {
    let range = |field: &str, value: u64, min: u64, max: u64| {
        if (min..=max).contains(&value) {
            Ok(())
        } else {
            Err(Error::field(field, Rule::OutOfRange { min, max }))
        }
    };
    range("min_order_fen", policy.min_order_fen, 1, fields::MAX_FEE)?;
    range(
        "max_order_fen",
        policy.max_order_fen,
        policy.min_order_fen,
        u64::MAX,
    )?;
    range(
        "refund_window_days",
        policy.refund_window_days.into(),
        1,
        365,
    )?;
    range(
        "fee_rate_bps",
        policy.fee_rate_bps.into(),
        0,
        MAX_FEE_RATE_BPS.into(),
    )?;
    range(
        "order_expiry_minutes",
        policy.order_expiry_minutes.into(),
        5,
        120,
    )?;
    range("max_note_bytes", policy.max_note_bytes.into(), 0, 127)
}

fn check_catalog(catalog: &[Product]) -> Result<()> {
    let mut ids: Vec<&str> = Vec::with_capacity(catalog.len());
    for product in catalog {
        fields::id("product_id", &product.product_id, 32)?;
        if ids.contains(&product.product_id.as_str()) {
            return Err(Error::field("product_id", Rule::Duplicate));
        }
        ids.push(&product.product_id);
        fields::text("name", &product.name, 1024)?;
        if product.unit_price_fen == 0 {
            return Err(Error::field(
                "unit_price_fen",
                Rule::OutOfRange {
                    min: 1,
                    max: fields::MAX_FEE,
                },
            ));
        }
        if product.max_quantity == 0 {
            return Err(Error::field(
                "max_quantity",
                Rule::OutOfRange {
                    min: 1,
                    max: u32::MAX.into(),
                },
            ));
        }
    }
    Ok(())
}

fn check_trade_type(intent: &OrderIntent) -> Result<()> {
    fields::one_of("trade_type", &intent.trade_type, TRADE_TYPES)?;
    let condition = || format!("trade_type={}", intent.trade_type);
    match (
        intent.trade_type.as_str(),
        &intent.payer_openid,
        &intent.scene_info,
    ) {
        ("JSAPI", None, _) => {
            return Err(Error::field(
                "payer_openid",
                Rule::RequiredWhen(condition()),
            ));
        }
        ("MWEB", _, None) => {
            return Err(Error::field("scene_info", Rule::RequiredWhen(condition())));
        }
        _ => {}
    }
    if let Some(openid) = &intent.payer_openid {
        fields::id("payer_openid", openid, 128)?;
    }
    if let Some(scene) = &intent.scene_info {
        fields::json_object("scene_info", scene, 256)?;
    }
    Ok(())
}

/// The note may reach `attach` only when it is within the policy's cap and
/// holds no control or bidirectional-override characters.
fn check_note(note: Option<&str>, max_bytes: u32) -> Result<Option<String>> {
    let Some(note) = note else { return Ok(None) };
    if note.is_empty() {
        return Ok(None);
    }
    if max_bytes == 0 {
        return Err(Error::field(
            "note",
            Rule::ForbiddenWhen(String::from("the policy accepts no notes")),
        ));
    }
    if note.chars().any(is_control_or_bidi) {
        return Err(Error::field("note", Rule::ControlCharacter));
    }
    fields::text("note", note, max_bytes as usize)?;
    Ok(Some(String::from(note)))
}

/// The catalog name, cut to 127 bytes on a character boundary.
pub fn body_from_name(name: &str) -> String {
    String::from(&name[..floor_char_boundary(name, MAX_BODY_BYTES)])
}

/// `WX` + the first 30 upper-case hex digits of SHA-256 over a domain tag
/// and the idempotency key: 32 characters of `[0-9A-Z]`, a valid
/// `out_trade_no`, the same for the same key.
pub fn out_trade_no_for(idempotency_key: &str) -> Result<String> {
    fields::token(
        "idempotency_key",
        idempotency_key,
        1,
        128,
        |b| b.is_ascii_graphic(),
        "printable ASCII without spaces",
    )?;
    let mut hasher = Sha256::new();
    hasher.update(b"wxpay/out_trade_no/v1\0");
    hasher.update(idempotency_key.as_bytes());
    let digest = hex::encode_upper(hasher.finalize());
    Ok(format!("WX{}", &digest[..30]))
}

/// Fee = amount × rate / 10000, rounded half up, with checked arithmetic.
pub fn estimate_fee(amount_fen: u64, rate_bps: u32) -> Result<FeeEstimate> {
    if rate_bps > MAX_FEE_RATE_BPS {
        return Err(Error::field(
            "fee_rate_bps",
            Rule::OutOfRange {
                min: 0,
                max: MAX_FEE_RATE_BPS.into(),
            },
        ));
    }
    let scaled = u128::from(amount_fen) * u128::from(rate_bps) + 5_000;
    let fee_fen =
        u64::try_from(scaled / 10_000).map_err(|_| Error::field("amount_fen", Rule::Overflow))?;
    Ok(FeeEstimate {
        fee_fen,
        net_fen: amount_fen.saturating_sub(fee_fen),
    })
}
