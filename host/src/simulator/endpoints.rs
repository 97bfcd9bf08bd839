//! The business rules of each endpoint, with WeChat's err_codes.

use std::time::Duration;

use axum::response::IntoResponse as _;
use chrono::{DateTime, Utc};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use wxpay_guest::{Params, canonical, fields};

use super::protocol::{Endpoint, Outcome, Request, digits, fail, html_page};
use super::scenario::Scenario;
use super::state::{Order, OrderKey, Payment, Refund, TradeState};
use super::{Simulator, bill, clock, notify};

pub(super) async fn dispatch(endpoint: Endpoint, r: &Request<'_>) -> Outcome {
    let result = match endpoint {
        Endpoint::UnifiedOrder => unified_order(r).await,
        Endpoint::OrderQuery => order_query(r).await,
        Endpoint::CloseOrder => close_order(r).await,
        Endpoint::Refund => refund(r).await,
        Endpoint::RefundQuery => refund_query(r).await,
        Endpoint::DownloadBill => download_bill(r).await,
        Endpoint::Micropay => micropay(r).await,
        Endpoint::Reverse => reverse(r).await,
        Endpoint::GetSignKey => Ok(get_sign_key(r)),
    };
    result.unwrap_or_else(|outcome| outcome)
}

type Step<T> = Result<T, Outcome>;

fn business(code: &'static str, description: impl Into<String>) -> Outcome {
    Outcome::Business(code, description.into())
}

fn required<'a>(r: &'a Request<'_>, name: &str) -> Step<&'a str> {
    r.get(name)
        .ok_or_else(|| business("LACK_PARAMS", format!("缺少参数{name}")))
}

fn amount(r: &Request<'_>, name: &str) -> Step<u64> {
    let value = required(r, name)?;
    match fields::parse_fee(name, value) {
        Ok(v) if (1..=fields::MAX_FEE).contains(&v) => Ok(v),
        _ => Err(business("PARAM_ERROR", format!("{name}参数格式错误"))),
    }
}

fn key_of(r: &Request<'_>, out_trade_no: &str) -> OrderKey {
    (r.env, r.mch_id.clone(), out_trade_no.to_owned())
}

/// The fields a re-entry must repeat exactly: all but nonce and signature.
fn fingerprint(params: &Params) -> String {
    let business: Params = params
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "nonce_str" | "sign"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    canonical::canonicalize(&business)
}

fn random_lower(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(|b| char::from(b).to_ascii_lowercase())
        .collect()
}

fn transaction_id(now: DateTime<Utc>) -> String {
    format!("4200000{}{}", clock::day(now), digits(13))
}

async fn unified_order(r: &Request<'_>) -> Step<Outcome> {
    for name in [
        "body",
        "out_trade_no",
        "spbill_create_ip",
        "notify_url",
        "trade_type",
    ] {
        required(r, name)?;
    }
    let total_fee = amount(r, "total_fee")?;
    let out_trade_no = required(r, "out_trade_no")?;
    if fields::out_trade_no(out_trade_no).is_err() {
        return Err(business("PARAM_ERROR", "out_trade_no参数格式错误"));
    }
    let trade_type = required(r, "trade_type")?;
    let needs = match trade_type {
        "JSAPI" => Some("openid"),
        "NATIVE" => Some("product_id"),
        "MWEB" => Some("scene_info"),
        "APP" => None,
        _ => return Err(business("PARAM_ERROR", "trade_type参数错误")),
    };
    if let Some(field) = needs
        && r.get(field).is_none()
    {
        return Err(business(
            "PARAM_ERROR",
            format!("{trade_type}支付必须传{field}"),
        ));
    }

    let sim = &r.sim.shared;
    let now = sim.clock.now();
    let key = key_of(r, out_trade_no);
    let fingerprint = fingerprint(&r.params);
    let mut book = sim.book.lock().await;
    if let Some(order) = book.orders.get_mut(&key) {
        return match order.state {
            TradeState::Success | TradeState::Refund => Err(business("ORDERPAID", "该订单已支付")),
            TradeState::Closed => Err(business("ORDERCLOSED", "该订单已关闭")),
            TradeState::Revoked => Err(business("ORDERREVERSED", "该订单已撤销")),
            _ if order.fingerprint != fingerprint => {
                Err(business("INVALID_REQUEST", "201 商户订单号重复"))
            }
            _ => {
                if order.prepay_expires_at <= now {
                    order.prepay_id = Some(prepay_id(now));
                    order.prepay_expires_at = now + chrono::Duration::hours(2);
                }
                Ok(Outcome::Fields(prepay_fields(order)))
            }
        };
    }
    let scenario = book
        .preset
        .get(&key)
        .copied()
        .unwrap_or_else(|| Scenario::for_amount(total_fee));
    if scenario.fails_first_order() && book.failed_once.insert(key.clone()) {
        drop(book);
        return Err(first_order_failure(r.sim, scenario).await);
    }
    let order = Order {
        env: r.env,
        appid: r.merchant.appid.clone(),
        mch_id: r.mch_id.clone(),
        out_trade_no: out_trade_no.to_owned(),
        body: required(r, "body")?.to_owned(),
        total_fee,
        fee_type: r.get("fee_type").unwrap_or("CNY").to_owned(),
        trade_type: trade_type.to_owned(),
        openid: r.get("openid").map(str::to_owned),
        attach: r.get("attach").map(str::to_owned),
        notify_url: r.get("notify_url").map(str::to_owned),
        hmac: r.sign_type == wxpay_guest::SignType::HmacSha256,
        prepay_id: Some(prepay_id(now)),
        prepay_expires_at: prepay_expiry(r, now),
        code_url: (trade_type == "NATIVE")
            .then(|| format!("weixin://wxpay/bizpayurl?pr={}", random_lower(7))),
        created_at: now,
        state: TradeState::NotPay,
        payment: None,
        refunds: Vec::new(),
        scenario,
        refund_throttled: false,
        fingerprint,
        notifications: Vec::new(),
    };
    let fields = prepay_fields(&order);
    book.orders.insert(key, order);
    Ok(Outcome::Fields(fields))
}

/// prepay_id and code_url live 2 hours, or until `time_expire` if sooner.
fn prepay_expiry(r: &Request<'_>, now: DateTime<Utc>) -> DateTime<Utc> {
    let two_hours = now + chrono::Duration::hours(2);
    let requested = r
        .get("time_expire")
        .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y%m%d%H%M%S").ok())
        .and_then(|t| {
            t.and_local_timezone(clock::beijing(now).timezone())
                .single()
        })
        .map(|t| t.with_timezone(&Utc));
    requested.map_or(two_hours, |t| t.min(two_hours))
}

fn prepay_id(now: DateTime<Utc>) -> String {
    format!("wx{}{}", clock::compact(now), random_lower(18))
}

fn prepay_fields(order: &Order) -> Params {
    let mut p = Params::new();
    p.insert("trade_type".into(), order.trade_type.clone());
    if let Some(id) = &order.prepay_id {
        p.insert("prepay_id".into(), id.clone());
        if order.trade_type == "MWEB" {
            p.insert(
                "mweb_url".into(),
                format!("https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={id}&package=1037687096"),
            );
        }
    }
    if let Some(url) = &order.code_url {
        p.insert("code_url".into(), url.clone());
    }
    p
}

async fn first_order_failure(sim: &Simulator, scenario: Scenario) -> Outcome {
    match scenario {
        Scenario::Timeout => {
            tokio::time::sleep(Duration::from_millis(sim.shared.settings.timeout_delay_ms)).await;
            business("SYSTEMERROR", "系统超时")
        }
        Scenario::HtmlErrorPage => {
            let mut page = html_page("502 Bad Gateway");
            *page.status_mut() = axum::http::StatusCode::BAD_GATEWAY;
            Outcome::Raw(Box::new(page))
        }
        _ => business("SYSTEMERROR", "系统超时，请用相同参数重新调用"),
    }
}

/// Finds the order a request names by transaction_id or out_trade_no.
fn find_order<'b>(book: &'b mut super::state::Book, r: &Request<'_>) -> Step<&'b mut Order> {
    let found = if let Some(txn) = r.get("transaction_id") {
        book.by_transaction(r.env, &r.mch_id, txn)
    } else if let Some(no) = r.get("out_trade_no") {
        book.by_out_trade_no(r.env, &r.mch_id, no)
    } else {
        return Err(business("PARAM_ERROR", "参数错误:必须输入商户单号"));
    };
    found.ok_or_else(|| business("ORDERNOTEXIST", "订单不存在"))
}

fn order_fields(order: &Order) -> Params {
    let mut p = Params::new();
    p.insert("out_trade_no".into(), order.out_trade_no.clone());
    p.insert("trade_state".into(), order.state.as_str().into());
    p.insert("trade_state_desc".into(), order.state.description().into());
    p.insert("total_fee".into(), order.total_fee.to_string());
    p.insert("fee_type".into(), order.fee_type.clone());
    p.insert("trade_type".into(), order.trade_type.clone());
    if let Some(attach) = &order.attach {
        p.insert("attach".into(), attach.clone());
    }
    if let Some(payment) = &order.payment {
        p.insert("transaction_id".into(), payment.transaction_id.clone());
        p.insert("bank_type".into(), payment.bank_type.clone());
        p.insert("openid".into(), payment.openid.clone());
        p.insert("is_subscribe".into(), "N".into());
        p.insert("cash_fee".into(), order.total_fee.to_string());
        p.insert("cash_fee_type".into(), order.fee_type.clone());
        p.insert("time_end".into(), clock::compact(payment.paid_at));
    }
    p
}

async fn order_query(r: &Request<'_>) -> Step<Outcome> {
    let mut book = r.sim.shared.book.lock().await;
    let order = find_order(&mut book, r)?;
    Ok(Outcome::Fields(order_fields(order)))
}

async fn close_order(r: &Request<'_>) -> Step<Outcome> {
    let out_trade_no = required(r, "out_trade_no")?;
    let sim = &r.sim.shared;
    let now = sim.clock.now();
    let mut book = sim.book.lock().await;
    let order = book
        .by_out_trade_no(r.env, &r.mch_id, out_trade_no)
        .ok_or_else(|| business("ORDERNOTEXIST", "订单不存在"))?;
    match order.state {
        TradeState::Success | TradeState::Refund => {
            return Err(business("ORDERPAID", "订单已支付，不能发起关单"));
        }
        TradeState::Closed | TradeState::Revoked => {
            return Err(business("ORDERCLOSED", "订单已关闭，无需继续关单"));
        }
        _ => {}
    }
    let earliest =
        order.created_at + chrono::Duration::seconds(sim.settings.close_after_secs as i64);
    if now < earliest {
        return Err(business(
            "TRADE_STATE_ERROR",
            "订单生成后不能马上调用关单接口，最短调用时间间隔为5分钟",
        ));
    }
    order.state = TradeState::Closed;
    let mut p = Params::new();
    p.insert("result_msg".into(), "OK".into());
    Ok(Outcome::Fields(p))
}

/// Marks an order paid, as if the payer scanned the code and confirmed.
pub(super) fn mark_paid(order: &mut Order, now: DateTime<Utc>, openid: Option<String>) {
    let openid = openid
        .or_else(|| order.openid.clone())
        .unwrap_or_else(|| format!("oSim{}", random_lower(24)));
    order.payment = Some(Payment {
        transaction_id: transaction_id(now),
        bank_type: "CMB_DEBIT".into(),
        openid,
        paid_at: now,
    });
    order.state = TradeState::Success;
}

async fn refund(r: &Request<'_>) -> Step<Outcome> {
    let out_refund_no = required(r, "out_refund_no")?.to_owned();
    let total_fee = amount(r, "total_fee")?;
    let refund_fee = amount(r, "refund_fee")?;
    let sim = &r.sim.shared;
    let now = sim.clock.now();
    let fingerprint = fingerprint(&r.params);
    let mut book = sim.book.lock().await;
    let order = find_order(&mut book, r)?;
    let Some(paid_at) = order.payment.as_ref().map(|p| p.paid_at) else {
        return Err(business("ORDERNOTEXIST", "订单未支付，不能退款"));
    };
    if order.state == TradeState::Revoked {
        return Err(business("ERROR", "订单已撤销"));
    }
    if order.scenario == Scenario::FrequencyLimitedRefund && !order.refund_throttled {
        order.refund_throttled = true;
        return Err(business("FREQUENCY_LIMITED", "频率限制，请稍后再试"));
    }
    if let Some(existing) = order
        .refunds
        .iter()
        .find(|x| x.out_refund_no == out_refund_no)
    {
        return if existing.fingerprint == fingerprint {
            Ok(Outcome::Fields(refund_fields(order, existing)))
        } else {
            Err(business(
                "INVALID_REQUEST",
                "订单金额或退款金额与之前请求不一致，请核实后再试",
            ))
        };
    }
    if total_fee != order.total_fee {
        return Err(business(
            "INVALID_REQUEST",
            "订单金额或退款金额与之前请求不一致，请核实后再试",
        ));
    }
    if now > paid_at + chrono::Duration::days(365) {
        return Err(business("TRADE_OVERDUE", "订单已经超过退款期限"));
    }
    if order.refunds.len() >= 50 {
        return Err(business("ERROR", "退款次数超过限制，每个订单最多退款50次"));
    }
    if order.refunded() + refund_fee > order.total_fee {
        return Err(business("ERROR", "申请退款金额超过订单可退金额"));
    }
    let refund = Refund {
        out_refund_no: out_refund_no.clone(),
        refund_id: format!("5030010{}{}", clock::day(now), digits(14)),
        refund_fee,
        status: "PROCESSING",
        requested_at: now,
        success_at: None,
        notify_url: r.get("notify_url").map(str::to_owned),
        fingerprint,
    };
    let fields = refund_fields(order, &refund);
    order.refunds.push(refund);
    order.state = TradeState::Refund;
    let key = (order.env, order.mch_id.clone(), order.out_trade_no.clone());
    drop(book);
    notify::spawn_refund_settlement(r.sim.clone(), key, out_refund_no);
    Ok(Outcome::Fields(fields))
}

fn refund_fields(order: &Order, refund: &Refund) -> Params {
    let mut p = Params::new();
    if let Some(payment) = &order.payment {
        p.insert("transaction_id".into(), payment.transaction_id.clone());
    }
    p.insert("out_trade_no".into(), order.out_trade_no.clone());
    p.insert("out_refund_no".into(), refund.out_refund_no.clone());
    p.insert("refund_id".into(), refund.refund_id.clone());
    p.insert("refund_fee".into(), refund.refund_fee.to_string());
    p.insert(
        "settlement_refund_fee".into(),
        refund.refund_fee.to_string(),
    );
    p.insert("total_fee".into(), order.total_fee.to_string());
    p.insert("settlement_total_fee".into(), order.total_fee.to_string());
    p.insert("fee_type".into(), order.fee_type.clone());
    p.insert("cash_fee".into(), order.total_fee.to_string());
    p.insert("cash_refund_fee".into(), refund.refund_fee.to_string());
    p.insert("coupon_refund_fee".into(), "0".into());
    p.insert("coupon_refund_count".into(), "0".into());
    p
}

async fn refund_query(r: &Request<'_>) -> Step<Outcome> {
    let mut book = r.sim.shared.book.lock().await;
    let not_found = || business("REFUNDNOTEXIST", "not exist");
    let by_refund = |matches: &dyn Fn(&Refund) -> bool| {
        book.orders.values().find_map(|o| {
            let mine = o.env == r.env && o.mch_id == r.mch_id;
            let refund = o.refunds.iter().find(|x| matches(x)).filter(|_| mine)?;
            Some((o, Some(refund.out_refund_no.clone())))
        })
    };
    let (order, only): (&Order, Option<String>) = if let Some(id) = r.get("refund_id") {
        by_refund(&|x| x.refund_id == id).ok_or_else(not_found)?
    } else if let Some(no) = r.get("out_refund_no") {
        by_refund(&|x| x.out_refund_no == no).ok_or_else(not_found)?
    } else if r.get("transaction_id").is_some() || r.get("out_trade_no").is_some() {
        let order = find_order(&mut book, r).map_err(|_| not_found())?;
        (&*order, None)
    } else {
        return Err(business(
            "PARAM_ERROR",
            "refund_id、out_refund_no、out_trade_no、transaction_id至少填一个",
        ));
    };
    let refunds: Vec<&Refund> = order
        .refunds
        .iter()
        .filter(|x| only.as_ref().is_none_or(|no| &x.out_refund_no == no))
        .collect();
    if refunds.is_empty() {
        return Err(not_found());
    }
    let mut p = order_fields(order);
    p.retain(|k, _| {
        matches!(
            k.as_str(),
            "out_trade_no" | "transaction_id" | "total_fee" | "fee_type" | "cash_fee"
        )
    });
    p.insert("refund_count".into(), refunds.len().to_string());
    for (n, refund) in refunds.iter().enumerate() {
        let mut put = |name: &str, value: String| {
            p.insert(format!("{name}_{n}"), value);
        };
        put("out_refund_no", refund.out_refund_no.clone());
        put("refund_id", refund.refund_id.clone());
        put("refund_channel", "ORIGINAL".into());
        put("refund_fee", refund.refund_fee.to_string());
        put("settlement_refund_fee", refund.refund_fee.to_string());
        put("refund_status", refund.status.into());
        put("refund_account", "REFUND_SOURCE_UNSETTLED_FUNDS".into());
        put("refund_recv_accout", "支付用户的零钱".into());
        if let Some(at) = refund.success_at {
            put("refund_success_time", clock::spaced(at));
        }
    }
    Ok(Outcome::Fields(p))
}

async fn download_bill(r: &Request<'_>) -> Step<Outcome> {
    let bill_fail = |msg: &str, code: &str| {
        let mut p = Params::new();
        p.insert("return_code".into(), "FAIL".into());
        p.insert("return_msg".into(), msg.into());
        p.insert("error_code".into(), code.into());
        Outcome::Raw(Box::new(match wxpay_guest::xml::write(&p) {
            Ok(body) => ([(axum::http::header::CONTENT_TYPE, "text/xml")], body).into_response(),
            Err(_) => fail(msg),
        }))
    };
    let Some(date) = r
        .get("bill_date")
        .filter(|d| fields::date8("bill_date", d).is_ok())
    else {
        return Err(bill_fail("data format error", "20001"));
    };
    let bill_type = r.get("bill_type").unwrap_or("ALL");
    if !wxpay_guest::request::BILL_TYPES.contains(&bill_type) {
        return Err(bill_fail("invalid bill_type", "20003"));
    }
    if r.get("tar_type").is_some_and(|t| t != "GZIP") {
        return Err(bill_fail("invalid tar_type", "20003"));
    }
    let book = r.sim.shared.book.lock().await;
    let orders: Vec<&Order> = book
        .orders
        .values()
        .filter(|o| o.env == r.env && o.mch_id == r.mch_id)
        .collect();
    match bill::render(&orders, date, bill_type) {
        Some(text) => {
            let gzip = r.get("tar_type").is_some();
            Ok(Outcome::Raw(Box::new(bill::response(text, gzip))))
        }
        None => Err(bill_fail("No Bill Exist", "20002")),
    }
}

async fn micropay(r: &Request<'_>) -> Step<Outcome> {
    for name in ["body", "out_trade_no", "spbill_create_ip", "auth_code"] {
        required(r, name)?;
    }
    let total_fee = amount(r, "total_fee")?;
    let code = required(r, "auth_code")?;
    let valid_code = code.len() == 18
        && code.bytes().all(|b| b.is_ascii_digit())
        && matches!(&code[..2], "10" | "11" | "12" | "13" | "14" | "15");
    if !valid_code {
        return Err(business(
            "AUTH_CODE_INVALID",
            "101 每个二维码仅限使用一次，请刷新再试",
        ));
    }
    let out_trade_no = required(r, "out_trade_no")?;
    let sim = &r.sim.shared;
    let now = sim.clock.now();
    let key = key_of(r, out_trade_no);
    let mut book = sim.book.lock().await;
    if let Some(order) = book.orders.get(&key) {
        return Err(match order.state {
            TradeState::Success | TradeState::Refund => business("ORDERPAID", "订单已支付"),
            TradeState::Revoked => business("ORDERREVERSED", "订单已撤销"),
            _ => business("OUT_TRADE_NO_USED", "商户订单号重复"),
        });
    }
    let mut order = Order {
        env: r.env,
        appid: r.merchant.appid.clone(),
        mch_id: r.mch_id.clone(),
        out_trade_no: out_trade_no.to_owned(),
        body: required(r, "body")?.to_owned(),
        total_fee,
        fee_type: r.get("fee_type").unwrap_or("CNY").to_owned(),
        trade_type: "MICROPAY".into(),
        openid: None,
        attach: r.get("attach").map(str::to_owned),
        notify_url: None,
        hmac: r.sign_type == wxpay_guest::SignType::HmacSha256,
        prepay_id: None,
        prepay_expires_at: now,
        code_url: None,
        created_at: now,
        state: TradeState::NotPay,
        payment: None,
        refunds: Vec::new(),
        scenario: Scenario::Normal,
        refund_throttled: false,
        fingerprint: fingerprint(&r.params),
        notifications: Vec::new(),
    };
    // Like WeChat's sandbox, micropay picks its case by amount (fen).
    let outcome = match total_fee {
        2 => {
            order.state = TradeState::UserPaying;
            notify::spawn_userpaying_completion(r.sim.clone(), key.clone());
            Err(business("USERPAYING", "需要用户输入支付密码"))
        }
        4 => {
            order.state = TradeState::PayError;
            Err(business("NOTENOUGH", "用户余额不足，请用户换卡支付"))
        }
        3 => {
            mark_paid(&mut order, now, None);
            Err(business("SYSTEMERROR", "系统超时，请查询订单确认支付结果"))
        }
        _ => {
            mark_paid(&mut order, now, None);
            let mut p = order_fields(&order);
            p.retain(|k, _| !matches!(k.as_str(), "trade_state" | "trade_state_desc"));
            Ok(Outcome::Fields(p))
        }
    };
    book.orders.insert(key, order);
    outcome
}

async fn reverse(r: &Request<'_>) -> Step<Outcome> {
    let mut book = r.sim.shared.book.lock().await;
    let order = find_order(&mut book, r)?;
    if order.state == TradeState::Refund {
        return Err(business("TRADE_STATE_ERROR", "订单已退款，不能撤销"));
    }
    order.state = TradeState::Revoked;
    let mut p = Params::new();
    p.insert("recall".into(), "N".into());
    Ok(Outcome::Fields(p))
}

fn get_sign_key(r: &Request<'_>) -> Outcome {
    let mut p = Params::new();
    p.insert("sandbox_signkey".into(), r.merchant.sandbox_key.clone());
    Outcome::Fields(p)
}
