//! What the simulated WeChat remembers: orders, refunds, and every
//! notification attempt. Production and sandbox are separate books, as
//! they are separate systems at WeChat.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::scenario::Scenario;

/// `trade_state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeState {
    /// Placed, not paid.
    NotPay,
    /// Paid.
    Success,
    /// Closed before payment.
    Closed,
    /// Payment failed.
    PayError,
    /// Micropay: the payer is entering a password.
    UserPaying,
    /// Reversed.
    Revoked,
    /// Paid, then (partly) refunded.
    Refund,
}

impl TradeState {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotPay => "NOTPAY",
            Self::Success => "SUCCESS",
            Self::Closed => "CLOSED",
            Self::PayError => "PAYERROR",
            Self::UserPaying => "USERPAYING",
            Self::Revoked => "REVOKED",
            Self::Refund => "REFUND",
        }
    }

    /// `trade_state_desc`.
    pub fn description(self) -> &'static str {
        match self {
            Self::NotPay => "订单未支付",
            Self::Success => "支付成功",
            Self::Closed => "订单已关闭",
            Self::PayError => "支付失败",
            Self::UserPaying => "需要用户输入支付密码",
            Self::Revoked => "订单已撤销",
            Self::Refund => "订单发生过退款，退款详情请查询退款单",
        }
    }
}

/// Which system an order lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    /// `api.mch.weixin.qq.com/pay/...`
    Production,
    /// `/sandboxnew/...`
    Sandbox,
}

/// The payment part of an order, once paid.
#[derive(Debug, Clone, Serialize)]
pub struct Payment {
    /// `transaction_id`.
    pub transaction_id: String,
    /// `bank_type`.
    pub bank_type: String,
    /// The payer.
    pub openid: String,
    /// When it was paid.
    pub paid_at: DateTime<Utc>,
}

/// A refund of an order.
#[derive(Debug, Clone, Serialize)]
pub struct Refund {
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// WeChat's refund id.
    pub refund_id: String,
    /// Amount refunded, fen.
    pub refund_fee: u64,
    /// `PROCESSING`, then `SUCCESS`.
    pub status: &'static str,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// When it succeeded.
    pub success_at: Option<DateTime<Utc>>,
    /// Where its notification goes.
    pub notify_url: Option<String>,
    /// The request fields that must be identical on a retry.
    pub fingerprint: String,
}

/// One order.
#[derive(Debug, Clone, Serialize)]
pub struct Order {
    /// Production or sandbox.
    pub env: Env,
    /// `appid`.
    pub appid: String,
    /// `mch_id`.
    pub mch_id: String,
    /// `out_trade_no`.
    pub out_trade_no: String,
    /// `body`.
    pub body: String,
    /// `total_fee`, fen.
    pub total_fee: u64,
    /// `fee_type`.
    pub fee_type: String,
    /// `trade_type`.
    pub trade_type: String,
    /// `openid` from the request.
    pub openid: Option<String>,
    /// `attach`.
    pub attach: Option<String>,
    /// `notify_url`.
    pub notify_url: Option<String>,
    /// Whether the request was HMAC-SHA256 (notifications follow it).
    pub hmac: bool,
    /// `prepay_id`.
    pub prepay_id: Option<String>,
    /// When prepay_id and code_url expire.
    pub prepay_expires_at: DateTime<Utc>,
    /// `code_url` for NATIVE.
    pub code_url: Option<String>,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// `trade_state`.
    pub state: TradeState,
    /// Set once paid.
    pub payment: Option<Payment>,
    /// Refunds, oldest first.
    pub refunds: Vec<Refund>,
    /// What goes wrong on purpose.
    pub scenario: Scenario,
    /// Whether a refund request was already refused for the scenario.
    pub refund_throttled: bool,
    /// The request fields that must be identical on a re-entry.
    pub fingerprint: String,
    /// Every notification attempt for this order.
    pub notifications: Vec<Attempt>,
}

impl Order {
    /// Fen refunded so far.
    pub fn refunded(&self) -> u64 {
        self.refunds.iter().map(|r| r.refund_fee).sum()
    }
}

/// One POST of a notification to the merchant.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// `payment` or `refund`.
    pub kind: &'static str,
    /// What was sent: `genuine`, or the scenario's bad variant.
    pub variant: &'static str,
    /// Simulated time of the attempt.
    pub at: DateTime<Utc>,
    /// HTTP status, if a reply came.
    pub status: Option<u16>,
    /// Whether the reply was the SUCCESS acknowledgement.
    pub acknowledged: bool,
    /// Transport error, if any.
    pub error: Option<String>,
}

/// The key of an order.
pub type OrderKey = (Env, String, String);

/// Everything the simulator remembers.
#[derive(Debug, Default)]
pub struct Book {
    /// Orders by (env, mch_id, out_trade_no).
    pub orders: BTreeMap<OrderKey, Order>,
    /// Scenarios set through the admin API before the order exists.
    pub preset: BTreeMap<OrderKey, Scenario>,
    /// Orders whose first unifiedorder already failed on purpose.
    pub failed_once: BTreeSet<OrderKey>,
}

impl Book {
    /// The order with this transaction id.
    pub fn by_transaction(
        &mut self,
        env: Env,
        mch_id: &str,
        transaction_id: &str,
    ) -> Option<&mut Order> {
        self.orders.values_mut().find(|o| {
            o.env == env
                && o.mch_id == mch_id
                && o.payment
                    .as_ref()
                    .is_some_and(|p| p.transaction_id == transaction_id)
        })
    }

    /// The order with this out_trade_no.
    pub fn by_out_trade_no(
        &mut self,
        env: Env,
        mch_id: &str,
        out_trade_no: &str,
    ) -> Option<&mut Order> {
        self.orders
            .get_mut(&(env, mch_id.to_owned(), out_trade_no.to_owned()))
    }
}
