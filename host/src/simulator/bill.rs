//! `downloadbill`: the day's orders as WeChat's text bill.
//!
//! The format: a header line, one line per order with every field prefixed
//! by a backtick, then a summary header and a summary line. Money is in
//! yuan with two decimals. The fee column uses 0.6 %.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::clock;
use super::state::{Order, TradeState};

const DETAIL_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUMMARY_HEADER: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";
const FEE_RATE_BPS: u64 = 60;

/// Fen as yuan with two decimals.
pub fn yuan(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

fn fee(fen: u64) -> u64 {
    (fen * FEE_RATE_BPS + 5_000) / 10_000
}

fn row(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| format!("`{f}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The bill for `date` (yyyyMMdd, Beijing), or `None` when there is nothing in it.
pub fn render(orders: &[&Order], date: &str, bill_type: &str) -> Option<String> {
    let mut lines = vec![DETAIL_HEADER.to_owned()];
    let (mut count, mut settled, mut refunded, mut fees, mut total) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for order in orders {
        let Some(payment) = &order.payment else {
            continue;
        };
        if clock::day(payment.paid_at) != date || order.state == TradeState::Revoked {
            continue;
        }
        let refund_total = order.refunded();
        let include = match bill_type {
            "SUCCESS" => true,
            "REFUND" | "RECHARGE_REFUND" => refund_total > 0,
            _ => true,
        };
        if !include {
            continue;
        }
        count += 1;
        settled += order.total_fee;
        refunded += refund_total;
        fees += fee(order.total_fee);
        total += order.total_fee;
        let last_refund = order.refunds.last();
        lines.push(row(&[
            clock::spaced(payment.paid_at),
            order.appid.clone(),
            order.mch_id.clone(),
            "0".into(),
            String::new(),
            payment.transaction_id.clone(),
            order.out_trade_no.clone(),
            payment.openid.clone(),
            order.trade_type.clone(),
            if refund_total > 0 {
                "REFUND".into()
            } else {
                "SUCCESS".into()
            },
            payment.bank_type.clone(),
            order.fee_type.clone(),
            yuan(order.total_fee),
            "0.00".into(),
            last_refund
                .map(|r| r.refund_id.clone())
                .unwrap_or_else(|| "0".into()),
            last_refund
                .map(|r| r.out_refund_no.clone())
                .unwrap_or_else(|| "0".into()),
            yuan(refund_total),
            "0.00".into(),
            if refund_total > 0 {
                "ORIGINAL".into()
            } else {
                String::new()
            },
            last_refund.map(|r| r.status.to_owned()).unwrap_or_default(),
            order.body.clone(),
            order.attach.clone().unwrap_or_default(),
            yuan(fee(order.total_fee)),
            "0.60%".into(),
            yuan(order.total_fee),
            yuan(refund_total),
            String::new(),
        ]));
    }
    if count == 0 {
        return None;
    }
    lines.push(SUMMARY_HEADER.to_owned());
    lines.push(row(&[
        count.to_string(),
        yuan(settled),
        yuan(refunded),
        "0.00".into(),
        yuan(fees),
        yuan(total),
        yuan(refunded),
    ]));
    Some(lines.join("\r\n") + "\r\n")
}

/// The bill as an HTTP reply. WeChat gzips on request; the simulator
/// returns plain text either way (see the fidelity notes).
pub fn response(text: String, _gzip_requested: bool) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}
