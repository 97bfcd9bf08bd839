//! Notifications: WeChat POSTs the result to `notify_url` and retries until
//! the merchant answers with the SUCCESS acknowledgement.
//!
//! Schedule (official docs): the first attempt at once, then after
//! 15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h — 24 h 4 min in
//! all. An attempt counts as acknowledged only when the reply is HTTP 200
//! with XML whose `return_code` is `SUCCESS`; anything else, or no answer
//! within the timeout, means "send again".

use std::time::Duration;

use wxpay_guest::{ApiKey, Merchant, MerchantConfig, Params, SignType, xml};

use super::protocol::nonce;
use super::scenario::Scenario;
use super::state::{Attempt, Env, Order, OrderKey, TradeState};
use super::{Simulator, clock, endpoints};

/// Seconds between attempts after the first.
pub const RETRY_SCHEDULE_SECS: [u64; 15] = [
    15, 15, 30, 180, 600, 1_200, 1_800, 1_800, 1_800, 3_600, 10_800, 10_800, 10_800, 21_600, 21_600,
];

/// A notification body and what it is.
struct Message {
    variant: &'static str,
    body: String,
}

fn signer<'a>(sim: &'a Simulator, order: &Order) -> Option<&'a Merchant> {
    sim.shared
        .merchants
        .get(&order.mch_id)
        .map(|m| m.in_env(order.env))
}

fn payment_fields(order: &Order) -> Params {
    let mut p = Params::new();
    let payment = order.payment.as_ref();
    let mut put = |k: &str, v: String| {
        p.insert(k.into(), v);
    };
    put("return_code", "SUCCESS".into());
    put("result_code", "SUCCESS".into());
    put("appid", order.appid.clone());
    put("mch_id", order.mch_id.clone());
    put("nonce_str", nonce());
    put("out_trade_no", order.out_trade_no.clone());
    put("total_fee", order.total_fee.to_string());
    put("cash_fee", order.total_fee.to_string());
    put("fee_type", order.fee_type.clone());
    put("trade_type", order.trade_type.clone());
    put("is_subscribe", "N".into());
    if let Some(payment) = payment {
        put("transaction_id", payment.transaction_id.clone());
        put("bank_type", payment.bank_type.clone());
        put("openid", payment.openid.clone());
        put("time_end", clock::compact(payment.paid_at));
    }
    if let Some(attach) = &order.attach {
        put("attach", attach.clone());
    }
    p
}

fn signed(signer: &Merchant, mut fields: Params, sign_type: SignType) -> Params {
    let sign = signer.sign(&fields, sign_type);
    fields.insert("sign".into(), sign);
    fields
}

fn write(fields: &Params) -> String {
    xml::write(fields).unwrap_or_default()
}

/// The genuine notification and, for the misbehaving scenarios, the bad
/// one that goes first.
fn payment_messages(signer: &Merchant, order: &Order) -> (Option<Message>, Message) {
    // HMAC notifications come without sign_type, as WeChat sends them.
    let sign_type = if order.hmac && order.env == Env::Production {
        SignType::HmacSha256
    } else {
        SignType::Md5
    };
    let fields = payment_fields(order);
    let genuine = Message {
        variant: "genuine",
        body: write(&signed(signer, fields.clone(), sign_type)),
    };
    let bad = match order.scenario {
        Scenario::ForgedSignature => {
            let forger = forged_merchant(order);
            Some(Message {
                variant: "forged_signature",
                body: write(&signed(&forger, fields, sign_type)),
            })
        }
        Scenario::MissingSign => Some(Message {
            variant: "missing_sign",
            body: write(&fields),
        }),
        Scenario::TamperedTotalFee => {
            let mut tampered = signed(signer, fields, sign_type);
            tampered.insert(
                "total_fee".into(),
                (order.total_fee.saturating_sub(1).max(1) + 1000).to_string(),
            );
            Some(Message {
                variant: "tampered_total_fee",
                body: write(&tampered),
            })
        }
        Scenario::WrongAppid => {
            let mut other = fields;
            other.insert("appid".into(), "wx0000000000000000".into());
            Some(Message {
                variant: "wrong_appid",
                body: write(&signed(signer, other, sign_type)),
            })
        }
        _ => None,
    };
    (bad, genuine)
}

/// A merchant with a key nobody has, to forge with.
fn forged_merchant(order: &Order) -> Merchant {
    let config = MerchantConfig {
        appid: order.appid.clone(),
        mch_id: order.mch_id.clone(),
        api_key: ApiKey::new("f0rg3df0rg3df0rg3df0rg3df0rg3d00".into())
            .unwrap_or_else(|_| unreachable!("constant key is valid")),
        sign_type: SignType::Md5,
        sub_appid: None,
        sub_mch_id: None,
        sandbox: false,
    };
    Merchant::new(config).unwrap_or_else(|_| unreachable!("order ids were valid at creation"))
}

/// Sends the payment notification for a just-paid order, in the background.
pub(super) fn spawn_payment_notification(sim: Simulator, key: OrderKey) {
    tokio::spawn(async move { deliver_payment(sim, key).await });
}

async fn deliver_payment(sim: Simulator, key: OrderKey) {
    let (url, scenario, bad, genuine) = {
        let book = sim.shared.book.lock().await;
        let Some(order) = book.orders.get(&key) else {
            return;
        };
        let (Some(url), Some(signer)) = (order.notify_url.clone(), signer(&sim, order)) else {
            return;
        };
        let (bad, genuine) = payment_messages(signer, order);
        (url, order.scenario, bad, genuine)
    };
    match scenario {
        Scenario::NoNotification => return,
        Scenario::LateNotification => sim.shared.clock.sleep(Duration::from_secs(600)).await,
        _ => {}
    }
    if let Some(bad) = bad {
        post(&sim, &key, "payment", &url, &bad).await;
    }
    let acknowledged = if scenario == Scenario::ConcurrentDuplicate {
        let (a, b) = tokio::join!(
            post(&sim, &key, "payment", &url, &genuine),
            post(&sim, &key, "payment", &url, &genuine)
        );
        a || b || retry(&sim, &key, "payment", &url, &genuine).await
    } else {
        retry_from_first(&sim, &key, "payment", &url, &genuine).await
    };
    if acknowledged && scenario == Scenario::DuplicateNotification {
        let again = Message {
            variant: "duplicate",
            body: genuine.body,
        };
        post(&sim, &key, "payment", &url, &again).await;
    }
}

async fn retry_from_first(
    sim: &Simulator,
    key: &OrderKey,
    kind: &'static str,
    url: &str,
    message: &Message,
) -> bool {
    post(sim, key, kind, url, message).await || retry(sim, key, kind, url, message).await
}

/// The 15 retries after a first attempt that was not acknowledged.
async fn retry(
    sim: &Simulator,
    key: &OrderKey,
    kind: &'static str,
    url: &str,
    message: &Message,
) -> bool {
    for interval in RETRY_SCHEDULE_SECS {
        sim.shared.clock.sleep(Duration::from_secs(interval)).await;
        if post(sim, key, kind, url, message).await {
            return true;
        }
    }
    false
}

/// One POST; records the attempt and says whether it was acknowledged.
async fn post(
    sim: &Simulator,
    key: &OrderKey,
    kind: &'static str,
    url: &str,
    message: &Message,
) -> bool {
    let at = sim.shared.clock.now();
    let reply = sim
        .shared
        .http
        .post(url)
        .header("Content-Type", "text/xml")
        .body(message.body.clone())
        .send()
        .await;
    let (status, acknowledged, error) = match reply {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.bytes().await.unwrap_or_default();
            let ack = status == 200
                && xml::parse(&body)
                    .is_ok_and(|p| p.get("return_code").map(String::as_str) == Some("SUCCESS"));
            (Some(status), ack, None)
        }
        Err(e) => (None, false, Some(e.to_string())),
    };
    let mut book = sim.shared.book.lock().await;
    if let Some(order) = book.orders.get_mut(key) {
        order.notifications.push(Attempt {
            kind,
            variant: message.variant,
            at,
            status,
            acknowledged,
            error,
        });
    }
    acknowledged
}

/// A refund succeeds after the configured delay; then its notification goes out.
pub(super) fn spawn_refund_settlement(sim: Simulator, key: OrderKey, out_refund_no: String) {
    tokio::spawn(async move {
        let delay = Duration::from_secs(sim.shared.settings.refund_settle_secs);
        sim.shared.clock.sleep(delay).await;
        let (url, message) = {
            let mut book = sim.shared.book.lock().await;
            let now = sim.shared.clock.now();
            let Some(order) = book.orders.get_mut(&key) else {
                return;
            };
            let Some(refund) = order
                .refunds
                .iter_mut()
                .find(|r| r.out_refund_no == out_refund_no)
            else {
                return;
            };
            refund.status = "SUCCESS";
            refund.success_at = Some(now);
            let Some(url) = refund.notify_url.clone() else {
                return;
            };
            let order = order.clone();
            let Some(signer) = signer(&sim, &order) else {
                return;
            };
            (url, refund_message(signer, &order, &out_refund_no))
        };
        retry_from_first(&sim, &key, "refund", &url, &message).await;
    });
}

fn refund_message(signer: &Merchant, order: &Order, out_refund_no: &str) -> Message {
    let refund = order
        .refunds
        .iter()
        .find(|r| r.out_refund_no == out_refund_no);
    let mut inner = Params::new();
    let mut put = |k: &str, v: String| {
        inner.insert(k.into(), v);
    };
    put("out_trade_no", order.out_trade_no.clone());
    put(
        "transaction_id",
        order
            .payment
            .as_ref()
            .map(|p| p.transaction_id.clone())
            .unwrap_or_default(),
    );
    put("total_fee", order.total_fee.to_string());
    put("settlement_total_fee", order.total_fee.to_string());
    if let Some(refund) = refund {
        put("out_refund_no", refund.out_refund_no.clone());
        put("refund_id", refund.refund_id.clone());
        put("refund_fee", refund.refund_fee.to_string());
        put("settlement_refund_fee", refund.refund_fee.to_string());
        put("refund_status", refund.status.into());
        if let Some(at) = refund.success_at {
            put("success_time", clock::spaced(at));
        }
    }
    put("refund_recv_accout", "支付用户的零钱".into());
    put("refund_account", "REFUND_SOURCE_UNSETTLED_FUNDS".into());
    put("refund_request_source", "API".into());
    let plaintext = xml::write_root(&inner, xml::ROOT_REFUND).unwrap_or_default();
    let mut outer = Params::new();
    outer.insert("return_code".into(), "SUCCESS".into());
    outer.insert("appid".into(), order.appid.clone());
    outer.insert("mch_id".into(), order.mch_id.clone());
    outer.insert("nonce_str".into(), nonce());
    outer.insert(
        "req_info".into(),
        signer.encrypt_refund_info(plaintext.as_bytes()),
    );
    Message {
        variant: "genuine",
        body: write(&outer),
    }
}

/// A micropay waiting for the payer's password completes after a while.
pub(super) fn spawn_userpaying_completion(sim: Simulator, key: OrderKey) {
    tokio::spawn(async move {
        let delay = Duration::from_secs(sim.shared.settings.userpaying_secs);
        sim.shared.clock.sleep(delay).await;
        let now = sim.shared.clock.now();
        let mut book = sim.shared.book.lock().await;
        if let Some(order) = book.orders.get_mut(&key)
            && order.state == TradeState::UserPaying
        {
            endpoints::mark_paid(order, now, None);
        }
    });
}
