//! The simulator over HTTP, driven with requests built and replies verified
//! by the signing component, with a small receiver for its notifications.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use wxpay::Error;
use wxpay::sandbox::bindings::merchant_api::{
    BillRequest, ExpectedOrder, ExpectedRefund, MicropayRequest, OrderRef, RefundRef,
    RefundRequest, SignedRequest, UnifiedOrder,
};
use wxpay::sandbox::bindings::types::{self, SignType};
use wxpay::sandbox::signer::{MerchantSettings, Pairs};
use wxpay::sandbox::{MerchantHandle, SignerInstance};
use wxpay::simulator::Simulator;
use wxpay::simulator::config::SimulatorConfig;

#[path = "support/mod.rs"]
mod support;

const APPID: &str = "wxd930ea5d5a258f4f";
const MCH_ID: &str = "10000100";
const KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const SANDBOX_KEY: &str = "0123456789abcdef0123456789abcdef";

/// What the receiver got, and how it answered.
#[derive(Debug, Clone)]
struct Received {
    body: Vec<u8>,
    acked: bool,
}

/// How the receiver answers one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// The SUCCESS acknowledgement.
    Ack,
    /// A FAIL reply: "send it again".
    Fail,
    /// `SUCCESS` as plain text, which is not the acknowledgement.
    PlainText,
    /// The SUCCESS XML with HTTP 500, which is not the acknowledgement either.
    ServerError,
}

const ACK_XML: &str = "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";
const FAIL_XML: &str = "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[busy]]></return_msg></xml>";

/// A merchant's notify endpoint: records every POST and answers from a
/// plan, acknowledging once the plan runs out.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    plan: Arc<Mutex<VecDeque<Reply>>>,
}

async fn receive(State(r): State<Receiver>, body: Bytes) -> (axum::http::StatusCode, &'static str) {
    let reply = r
        .plan
        .lock()
        .expect("plan")
        .pop_front()
        .unwrap_or(Reply::Ack);
    let acked = reply == Reply::Ack;
    r.got.lock().expect("log").push(Received {
        body: body.to_vec(),
        acked,
    });
    let ok = axum::http::StatusCode::OK;
    match reply {
        Reply::Ack => (ok, ACK_XML),
        Reply::Fail => (ok, FAIL_XML),
        Reply::PlainText => (ok, "SUCCESS"),
        Reply::ServerError => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, ACK_XML),
    }
}

impl Receiver {
    async fn start(plan: &[Reply]) -> (Self, SocketAddr) {
        let receiver = Self::default();
        receiver
            .plan
            .lock()
            .expect("plan")
            .extend(plan.iter().copied());
        let app = axum::Router::new()
            .route("/notify", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, addr)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("log").clone()
    }

    /// Waits until `n` notifications arrived (bounded by `limit`).
    async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.received().len() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.received()
    }
}

struct Fixture {
    base: String,
    http: reqwest::Client,
    signer: SignerInstance,
    merchant: MerchantHandle,
    notify_url: String,
    receiver: Receiver,
}

fn config(clock_scale: f64) -> SimulatorConfig {
    let mut config = SimulatorConfig::parse(&format!(
        "[[merchants]]\nappid = \"{APPID}\"\nmch_id = \"{MCH_ID}\"\napi_key = \"{KEY}\"\nsandbox_key = \"{SANDBOX_KEY}\"\n"
    ))
    .expect("config");
    config.settings.clock_scale = clock_scale;
    config.settings.close_after_secs = 300;
    config.settings.timeout_delay_ms = 1_500;
    config
}

fn settings(sign_type: SignType, sandbox: bool) -> MerchantSettings {
    MerchantSettings {
        appid: APPID.into(),
        mch_id: MCH_ID.into(),
        sign_type,
        sub_appid: None,
        sub_mch_id: None,
        sandbox,
    }
}

impl Fixture {
    async fn start(sign_type: SignType, clock_scale: f64, plan: &[Reply]) -> Self {
        let sim = Simulator::new(&config(clock_scale)).expect("simulator");
        let addr = sim
            .spawn("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("serve");
        let (receiver, receiver_addr) = Receiver::start(plan).await;
        let mut signer = support::sandbox().instantiate().expect("instance");
        let merchant = signer
            .merchant(&settings(sign_type, false), &support::key(KEY))
            .expect("merchant");
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .build()
                .expect("client"),
            signer,
            merchant,
            notify_url: format!("http://{receiver_addr}/notify"),
            receiver,
        }
    }

    async fn post_raw(&self, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .expect("simulator answers")
    }

    /// Sends a signed request and verifies the reply with the component.
    async fn call(&mut self, request: &SignedRequest) -> Result<Pairs, Error> {
        let body = self
            .post_raw(&request.path, request.body.clone().into_bytes())
            .await
            .bytes()
            .await
            .expect("body");
        self.signer
            .verify_response(&self.merchant, &body, request.sign_type)
    }

    fn order(&self, out_trade_no: &str, total_fee: u64, trade_type: &str) -> UnifiedOrder {
        UnifiedOrder {
            body: "Oolong tea".into(),
            out_trade_no: out_trade_no.into(),
            total_fee,
            spbill_create_ip: "127.0.0.1".into(),
            notify_url: self.notify_url.clone(),
            trade_type: trade_type.into(),
            device_info: None,
            detail: None,
            attach: Some("order note".into()),
            fee_type: None,
            time_start: None,
            time_expire: None,
            goods_tag: None,
            product_id: (trade_type == "NATIVE").then(|| "tea".into()),
            limit_pay: None,
            openid: (trade_type == "JSAPI").then(|| "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into()),
            sub_openid: None,
            receipt: None,
            scene_info: (trade_type == "MWEB").then(|| r#"{"h5_info":{"type":"Wap"}}"#.into()),
            profit_sharing: None,
        }
    }

    async fn place(&mut self, out_trade_no: &str, total_fee: u64) -> Pairs {
        let order = self.order(out_trade_no, total_fee, "NATIVE");
        let request = self
            .signer
            .unified_order(&self.merchant, &order, "nonce1")
            .expect("signed");
        self.call(&request).await.expect("order placed")
    }

    async fn pay(&self, out_trade_no: &str) {
        let response = self
            .http
            .post(format!("{}/admin/pay", self.base))
            .header("Content-Type", "application/json")
            .body(format!(r#"{{"out_trade_no":"{out_trade_no}"}}"#))
            .send()
            .await
            .expect("admin");
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    }

    fn verify_notification(
        &mut self,
        body: &[u8],
        out_trade_no: &str,
        total_fee: u64,
    ) -> Result<String, Error> {
        let expected = ExpectedOrder {
            out_trade_no: out_trade_no.into(),
            total_fee,
            fee_type: None,
            sign_type: None,
        };
        self.signer
            .verify_payment_notification(&self.merchant, body, Some(&expected))
            .map(|n| n.transaction_id)
    }

    async fn query(&mut self, out_trade_no: &str) -> Pairs {
        let request = self
            .signer
            .order_query(
                &self.merchant,
                &OrderRef::OutTradeNo(out_trade_no.into()),
                "nonce2",
            )
            .expect("signed");
        self.call(&request).await.expect("query")
    }
}

fn field<'a>(pairs: &'a Pairs, name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn wechat_code(result: Result<Pairs, Error>) -> String {
    match result {
        Err(Error::Guest(types::Error::Wechat(w))) => w.code,
        other => panic!("expected a WeChat business error, got {other:?}"),
    }
}

fn return_failed(result: Result<Pairs, Error>) -> String {
    match result {
        Err(Error::Guest(types::Error::ReturnFailed(msg))) => msg,
        other => panic!("expected return_code=FAIL, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_placed_queried_paid_and_notified() {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let mut f = Fixture::start(sign_type, 1.0, &[]).await;
        for trade_type in ["NATIVE", "JSAPI", "APP", "MWEB"] {
            let no = format!("T{trade_type}0001");
            let order = f.order(&no, 1, trade_type);
            let request = f
                .signer
                .unified_order(&f.merchant, &order, "nonce1")
                .expect("signed");
            let reply = f.call(&request).await.expect("placed");
            assert!(field(&reply, "prepay_id").starts_with("wx"));
            assert_eq!(field(&reply, "code_url").is_empty(), trade_type != "NATIVE");
            assert_eq!(field(&reply, "mweb_url").is_empty(), trade_type != "MWEB");
            // Identical re-entry returns the same prepay_id.
            let again = f.call(&request).await.expect("re-entry");
            assert_eq!(field(&again, "prepay_id"), field(&reply, "prepay_id"));
        }
        assert_eq!(
            field(&f.query("TNATIVE0001").await, "trade_state"),
            "NOTPAY"
        );
        f.pay("TNATIVE0001").await;
        let got = f.receiver.wait_for(1, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1, "one notification, acknowledged");
        let txn = f
            .verify_notification(&got[0].body, "TNATIVE0001", 1)
            .expect("genuine notification");
        let queried = f.query("TNATIVE0001").await;
        assert_eq!(field(&queried, "trade_state"), "SUCCESS");
        assert_eq!(field(&queried, "transaction_id"), txn);
        assert_eq!(txn.len(), 28);
        let by_txn = f
            .signer
            .order_query(&f.merchant, &OrderRef::TransactionId(txn.clone()), "n3")
            .expect("signed");
        assert_eq!(
            field(&f.call(&by_txn).await.expect("query"), "out_trade_no"),
            "TNATIVE0001"
        );
        // A paid order cannot be ordered again or closed.
        let request = f
            .signer
            .unified_order(&f.merchant, &f.order("TNATIVE0001", 1, "NATIVE"), "n4")
            .expect("s");
        assert_eq!(wechat_code(f.call(&request).await), "ORDERPAID");
        let close = f
            .signer
            .close_order(&f.merchant, "TNATIVE0001", "n5")
            .expect("s");
        assert_eq!(wechat_code(f.call(&close).await), "ORDERPAID");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_rules_answer_with_wechat_err_codes() {
    let mut f = Fixture::start(SignType::Md5, 1.0, &[]).await;
    f.place("RULES00001", 500).await;
    let changed = f
        .signer
        .unified_order(&f.merchant, &f.order("RULES00001", 501, "NATIVE"), "n")
        .expect("s");
    assert_eq!(wechat_code(f.call(&changed).await), "INVALID_REQUEST");
    let close = f
        .signer
        .close_order(&f.merchant, "RULES00001", "n")
        .expect("s");
    assert_eq!(
        wechat_code(f.call(&close).await),
        "TRADE_STATE_ERROR",
        "too early to close"
    );
    let missing = f
        .signer
        .order_query(
            &f.merchant,
            &OrderRef::OutTradeNo("NOSUCHORDER".into()),
            "n",
        )
        .expect("s");
    assert_eq!(wechat_code(f.call(&missing).await), "ORDERNOTEXIST");
    let unpaid_refund = refund_request("RULES00001", "R1", 500, 100);
    let request = f
        .signer
        .refund(&f.merchant, &unpaid_refund, "n")
        .expect("s");
    assert!(request.needs_client_cert);
    assert_eq!(wechat_code(f.call(&request).await), "ORDERNOTEXIST");
    let no_refund = f
        .signer
        .refund_query(
            &f.merchant,
            &RefundRef::OutRefundNo("R404".into()),
            None,
            "n",
        )
        .expect("s");
    assert_eq!(wechat_code(f.call(&no_refund).await), "REFUNDNOTEXIST");

    // Requests the component would refuse, built with sign-params: the simulator answers as WeChat does.
    let raw = |pairs: &[(&str, &str)]| -> Pairs {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    };
    let jsapi_without_openid = raw(&[
        ("body", "x"),
        ("out_trade_no", "RULES00002"),
        ("total_fee", "1"),
        ("spbill_create_ip", "127.0.0.1"),
        ("notify_url", "http://127.0.0.1/n"),
        ("trade_type", "JSAPI"),
    ]);
    let request = f
        .signer
        .sign_params(&f.merchant, &jsapi_without_openid, "/pay/unifiedorder", "n")
        .expect("s");
    assert_eq!(wechat_code(f.call(&request).await), "PARAM_ERROR");
    let lacking = raw(&[("body", "x"), ("out_trade_no", "RULES00003")]);
    let request = f
        .signer
        .sign_params(&f.merchant, &lacking, "/pay/unifiedorder", "n")
        .expect("s");
    assert_eq!(wechat_code(f.call(&request).await), "LACK_PARAMS");
    let decimal = raw(&[
        ("body", "x"),
        ("out_trade_no", "RULES00004"),
        ("total_fee", "1.00"),
        ("spbill_create_ip", "127.0.0.1"),
        ("notify_url", "http://127.0.0.1/n"),
        ("trade_type", "APP"),
    ]);
    let request = f
        .signer
        .sign_params(&f.merchant, &decimal, "/pay/unifiedorder", "n")
        .expect("s");
    assert_eq!(wechat_code(f.call(&request).await), "PARAM_ERROR");
}

/// A micropay with a valid payment code.
fn micropay(out_trade_no: &str, total_fee: u64) -> MicropayRequest {
    MicropayRequest {
        body: "Coffee".into(),
        out_trade_no: out_trade_no.into(),
        total_fee,
        spbill_create_ip: "127.0.0.1".into(),
        auth_code: "134567890123456789".into(),
        device_info: None,
        attach: None,
        fee_type: None,
        goods_tag: None,
        limit_pay: None,
        time_start: None,
        time_expire: None,
    }
}

fn refund_request(
    out_trade_no: &str,
    out_refund_no: &str,
    total_fee: u64,
    refund_fee: u64,
) -> RefundRequest {
    RefundRequest {
        order: OrderRef::OutTradeNo(out_trade_no.into()),
        out_refund_no: out_refund_no.into(),
        total_fee,
        refund_fee,
        refund_fee_type: None,
        refund_desc: None,
        refund_account: None,
        notify_url: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_come_back_unsigned_in_wechats_order() {
    let mut f = Fixture::start(SignType::HmacSha256, 1.0, &[]).await;
    let request = f
        .signer
        .unified_order(&f.merchant, &f.order("PROTO00001", 1, "NATIVE"), "n")
        .expect("s");
    let url = format!("{}/pay/unifiedorder", f.base);
    let get = f
        .http
        .get(&url)
        .send()
        .await
        .expect("answer")
        .bytes()
        .await
        .expect("body");
    assert_eq!(
        return_failed(
            f.signer
                .verify_response(&f.merchant, &get, SignType::HmacSha256)
        ),
        "请使用post方法"
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "post数据为空"),
        (
            b"<xml><a>\xff</a></xml>".to_vec(),
            "编码格式错误，请使用UTF-8",
        ),
        (
            b"<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml><a>&x;</a></xml>"
                .to_vec(),
            "XML格式错误",
        ),
        (b"<xml><a>1</a>".to_vec(), "XML格式错误"),
        (
            request
                .body
                .replace("<total_fee>1<", "<total_fee>2<")
                .into_bytes(),
            "签名错误，请检查后再试",
        ),
        (
            request.body.replace("10000100", "99999999").into_bytes(),
            "商户号mch_id或sub_mch_id不存在",
        ),
    ];
    for (body, message) in cases {
        let reply = f
            .post_raw("/pay/unifiedorder", body)
            .await
            .bytes()
            .await
            .expect("body");
        assert_eq!(
            return_failed(
                f.signer
                    .verify_response(&f.merchant, &reply, SignType::HmacSha256)
            ),
            message
        );
    }
    // An HMAC request verified as MD5 by a confused client fails: replies use the request's algorithm.
    let reply = f
        .post_raw(&request.path, request.body.clone().into_bytes())
        .await
        .bytes()
        .await
        .expect("b");
    assert!(
        f.signer
            .verify_response(&f.merchant, &reply, SignType::HmacSha256)
            .is_ok()
    );
    assert!(matches!(
        f.signer.verify_response(&f.merchant, &reply, SignType::Md5),
        Err(Error::Guest(types::Error::SignatureMismatch(_)))
    ));
    let not_found = f.post_raw("/pay/nothing", b"<xml/>".to_vec()).await;
    assert_eq!(not_found.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_settle_and_notify_encrypted() {
    let mut f = Fixture::start(SignType::Md5, 600.0, &[]).await;
    f.place("REFUND0001", 1000).await;
    f.pay("REFUND0001").await;
    f.receiver.wait_for(1, Duration::from_secs(5)).await;
    let mut refund = refund_request("REFUND0001", "RF0001", 1000, 300);
    refund.notify_url = Some(f.notify_url.clone());
    let request = f.signer.refund(&f.merchant, &refund, "n").expect("s");
    assert_eq!(request.path, "/secapi/pay/refund");
    let reply = f.call(&request).await.expect("refund accepted");
    assert_eq!(field(&reply, "refund_fee"), "300");
    // The same out_refund_no with the same fields is the same refund; a different amount is refused.
    let again = f.call(&request).await.expect("idempotent");
    assert_eq!(field(&again, "refund_id"), field(&reply, "refund_id"));
    let changed = f
        .signer
        .refund(
            &f.merchant,
            &refund_request("REFUND0001", "RF0001", 1000, 301),
            "n",
        )
        .expect("s");
    assert_eq!(wechat_code(f.call(&changed).await), "INVALID_REQUEST");
    let too_much = f
        .signer
        .refund(
            &f.merchant,
            &refund_request("REFUND0001", "RF0002", 1000, 701),
            "n",
        )
        .expect("s");
    assert_eq!(wechat_code(f.call(&too_much).await), "ERROR");
    let wrong_total = f
        .signer
        .refund(
            &f.merchant,
            &refund_request("REFUND0001", "RF0003", 999, 1),
            "n",
        )
        .expect("s");
    assert_eq!(wechat_code(f.call(&wrong_total).await), "INVALID_REQUEST");

    let query = f
        .signer
        .refund_query(
            &f.merchant,
            &RefundRef::OutTradeNo("REFUND0001".into()),
            None,
            "n",
        )
        .expect("s");
    let before = f.call(&query).await.expect("refundquery");
    assert_eq!(field(&before, "refund_count"), "1");
    assert_eq!(field(&before, "refund_status_0"), "PROCESSING");
    assert_eq!(field(&f.query("REFUND0001").await, "trade_state"), "REFUND");

    // 60 simulated seconds later (0.1 s at x600) the refund succeeds and its notification arrives.
    let got = f.receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2);
    let expected = ExpectedRefund {
        out_trade_no: "REFUND0001".into(),
        out_refund_no: "RF0001".into(),
        refund_fee: 300,
    };
    let notice = f
        .signer
        .verify_refund_notification(&f.merchant, &got[1].body, Some(&expected))
        .expect("decrypts and matches");
    assert_eq!(notice.refund_status, "SUCCESS");
    let after = f.call(&query).await.expect("refundquery");
    assert_eq!(field(&after, "refund_status_0"), "SUCCESS");
    assert!(!field(&after, "refund_success_time_0").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micropay_reverse_close_and_bill() {
    let mut f = Fixture::start(SignType::Md5, 600.0, &[]).await;
    let request = f
        .signer
        .micropay(&f.merchant, &micropay("MICRO00001", 1), "n")
        .expect("s");
    let paid = f.call(&request).await.expect("paid at once");
    assert_eq!(field(&paid, "trade_type"), "MICROPAY");
    let request = f
        .signer
        .micropay(&f.merchant, &micropay("MICRO00002", 2), "n")
        .expect("s");
    assert_eq!(wechat_code(f.call(&request).await), "USERPAYING");
    assert_eq!(
        field(&f.query("MICRO00002").await, "trade_state"),
        "USERPAYING"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        field(&f.query("MICRO00002").await, "trade_state"),
        "SUCCESS",
        "the payer confirmed"
    );
    let request = f
        .signer
        .micropay(&f.merchant, &micropay("MICRO00003", 3), "n")
        .expect("s");
    assert_eq!(wechat_code(f.call(&request).await), "SYSTEMERROR");
    assert_eq!(
        field(&f.query("MICRO00003").await, "trade_state"),
        "SUCCESS",
        "query reveals the truth"
    );
    let reverse = f
        .signer
        .reverse(&f.merchant, &OrderRef::OutTradeNo("MICRO00003".into()), "n")
        .expect("s");
    assert!(reverse.needs_client_cert);
    assert_eq!(
        field(&f.call(&reverse).await.expect("reversed"), "recall"),
        "N"
    );
    assert_eq!(
        field(&f.query("MICRO00003").await, "trade_state"),
        "REVOKED"
    );

    // Orders can be closed 5 simulated minutes (0.5 s at x600) after placing.
    f.place("CLOSE00001", 1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let close = f
        .signer
        .close_order(&f.merchant, "CLOSE00001", "n")
        .expect("s");
    f.call(&close).await.expect("closed");
    assert_eq!(field(&f.query("CLOSE00001").await, "trade_state"), "CLOSED");
    assert_eq!(wechat_code(f.call(&close).await), "ORDERCLOSED");
    let reorder = f
        .signer
        .unified_order(&f.merchant, &f.order("CLOSE00001", 1, "NATIVE"), "n")
        .expect("s");
    assert_eq!(wechat_code(f.call(&reorder).await), "ORDERCLOSED");

    // The bill lists the day's paid orders in WeChat's text format.
    let today = f.query("MICRO00001").await;
    let date = &field(&today, "time_end")[..8];
    let bill = BillRequest {
        bill_date: date.into(),
        bill_type: "ALL".into(),
        gzip: false,
    };
    let request = f.signer.download_bill(&f.merchant, &bill, "n").expect("s");
    let body = f
        .post_raw(&request.path, request.body.clone().into_bytes())
        .await
        .bytes()
        .await
        .expect("b");
    let text = f.signer.check_bill(&f.merchant, &body).expect("a bill");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("交易时间,公众账号ID"));
    assert!(lines[1].starts_with('`') && lines[1].contains("`MICRO00001"));
    assert!(lines[lines.len() - 2].starts_with("总交易单数"));
    assert!(
        lines[lines.len() - 1].starts_with("`2,`0.03"),
        "{}",
        lines[lines.len() - 1]
    );
    let empty = BillRequest {
        bill_date: "20200101".into(),
        bill_type: "ALL".into(),
        gzip: false,
    };
    let request = f.signer.download_bill(&f.merchant, &empty, "n").expect("s");
    let body = f
        .post_raw(&request.path, request.body.clone().into_bytes())
        .await
        .bytes()
        .await
        .expect("b");
    assert!(
        return_failed(f.signer.check_bill(&f.merchant, &body).map(|_| Vec::new()))
            .starts_with("No Bill Exist")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_needs_the_key_from_getsignkey() {
    let mut f = Fixture::start(SignType::Md5, 1.0, &[]).await;
    let request = f.signer.get_sign_key(&f.merchant, "n").expect("s");
    assert_eq!(request.path, "/sandboxnew/pay/getsignkey");
    let reply = f.call(&request).await.expect("sandbox key");
    assert_eq!(field(&reply, "sandbox_signkey"), SANDBOX_KEY);

    // The production key is refused under /sandboxnew/ with WeChat's sandbox message.
    let mut production_in_sandbox = f
        .signer
        .unified_order(&f.merchant, &f.order("SANDBOX001", 101, "NATIVE"), "n")
        .expect("s");
    production_in_sandbox.path = format!("/sandboxnew{}", production_in_sandbox.path);
    let reply = f
        .post_raw(
            &production_in_sandbox.path,
            production_in_sandbox.body.into_bytes(),
        )
        .await
        .bytes()
        .await
        .expect("b");
    assert!(
        return_failed(f.signer.verify_response(&f.merchant, &reply, SignType::Md5))
            .starts_with("沙箱验证签名失败")
    );

    let mut signer = support::sandbox().instantiate().expect("instance");
    let sandbox = signer
        .merchant(&settings(SignType::Md5, true), &support::key(SANDBOX_KEY))
        .expect("sandbox merchant");
    let request = signer
        .unified_order(&sandbox, &f.order("SANDBOX001", 101, "NATIVE"), "n")
        .expect("s");
    assert_eq!(request.path, "/sandboxnew/pay/unifiedorder");
    let body = f
        .post_raw(&request.path, request.body.into_bytes())
        .await
        .bytes()
        .await
        .expect("b");
    let reply = signer
        .verify_response(&sandbox, &body, SignType::Md5)
        .expect("sandbox order");
    assert_eq!(field(&reply, "device_info"), "sandbox");
    // Sandbox and production keep separate books.
    let missing = f
        .signer
        .order_query(&f.merchant, &OrderRef::OutTradeNo("SANDBOX001".into()), "n")
        .expect("s");
    assert_eq!(wechat_code(f.call(&missing).await), "ORDERNOTEXIST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_retry_on_wechats_schedule_until_acknowledged() {
    // x20000: the 24 h 4 min schedule takes about 4.3 s.
    let mut f = Fixture::start(SignType::Md5, 20_000.0, &[Reply::Fail; 20]).await;
    f.place("RETRY00001", 1).await;
    f.pay("RETRY00001").await;
    let got = f.receiver.wait_for(17, Duration::from_secs(15)).await;
    assert_eq!(
        got.len(),
        16,
        "the first attempt and 15 retries, then WeChat gives up"
    );
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "every retry is the same message"
    );
    let times = attempt_times(&f, "RETRY00001").await;
    assert_eq!(times.len(), 16);
    for (i, interval) in wxpay::simulator::RETRY_SCHEDULE_SECS.iter().enumerate() {
        let gap = (times[i + 1] - times[i]).num_seconds();
        assert!(
            gap >= *interval as i64,
            "retry {} came after {gap} s, before its {interval} s",
            i + 1
        );
    }
    let span = (times[15] - times[0]).num_seconds();
    assert!(
        span >= 24 * 3600 + 4 * 60,
        "the schedule spans 24 h 4 min, got {span} s"
    );

    // Only HTTP 200 with return_code SUCCESS counts; anything else is sent again.
    let plan = [Reply::Fail, Reply::PlainText, Reply::ServerError];
    let mut f = Fixture::start(SignType::Md5, 20_000.0, &plan).await;
    f.place("RETRY00002", 1).await;
    f.pay("RETRY00002").await;
    let got = f.receiver.wait_for(5, Duration::from_secs(3)).await;
    assert_eq!(
        got.iter().map(|r| r.acked).collect::<Vec<_>>(),
        [false, false, false, true],
        "stops at the first ACK"
    );
    assert_eq!(attempt_times(&f, "RETRY00002").await.len(), 4);
}

/// The simulated times of an order's notification attempts, from the admin API.
async fn attempt_times(
    f: &Fixture,
    out_trade_no: &str,
) -> Vec<chrono::DateTime<chrono::FixedOffset>> {
    let order = f
        .http
        .get(format!("{}/admin/orders/{out_trade_no}", f.base))
        .send()
        .await
        .expect("admin");
    let order: serde_json::Value =
        serde_json::from_slice(&order.bytes().await.expect("body")).expect("json");
    order["notifications"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| chrono::DateTime::parse_from_rfc3339(a["at"].as_str().expect("at")).expect("time"))
        .collect()
}

/// Places an order with the scenario's amount, pays it, and returns what the receiver got.
async fn scenario_run(total_fee: u64, expect: usize) -> (Fixture, Vec<Received>, String) {
    let mut f = Fixture::start(SignType::Md5, 600.0, &[]).await;
    let no = format!("SCEN{total_fee}0001");
    f.place(&no, total_fee).await;
    f.pay(&no).await;
    let got = f.receiver.wait_for(expect, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = if got.len() < expect {
        got
    } else {
        f.receiver.received()
    };
    (f, got, no)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_by_amount_misbehave_as_documented() {
    // Bad notification first, then the genuine one: the component refuses the bad one.
    for (fee, bad) in [
        (106, "signature-mismatch"),
        (107, "signature-missing"),
        (108, "signature-mismatch"),
        (109, "wrong-merchant"),
    ] {
        let (mut f, got, no) = scenario_run(fee, 2).await;
        assert_eq!(got.len(), 2, "amount {fee}");
        match f.verify_notification(&got[0].body, &no, fee) {
            Err(Error::Guest(e)) => assert_eq!(support::case_name(&e), bad, "amount {fee}"),
            other => panic!("amount {fee}: the bad notification was accepted: {other:?}"),
        }
        f.verify_notification(&got[1].body, &no, fee)
            .expect("then the genuine one");
    }
    // Duplicates: the same genuine message twice, sequentially and concurrently.
    for fee in [102, 103] {
        let (mut f, got, no) = scenario_run(fee, 2).await;
        assert_eq!(got.len(), 2, "amount {fee}");
        assert_eq!(got[0].body, got[1].body);
        f.verify_notification(&got[1].body, &no, fee)
            .expect("genuine");
    }
    // None at all: the merchant must query.
    let (mut f, got, no) = scenario_run(105, 1).await;
    assert!(got.is_empty());
    assert_eq!(field(&f.query(&no).await, "trade_state"), "SUCCESS");
    // Late: 10 simulated minutes (1 s at x600).
    let (_f, got, _) = scenario_run(104, 1).await;
    assert_eq!(got.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_order_failures_succeed_on_retry() {
    let mut f = Fixture::start(SignType::Md5, 1.0, &[]).await;
    let request = f
        .signer
        .unified_order(&f.merchant, &f.order("FAIL110001", 110, "NATIVE"), "n")
        .expect("s");
    match f.call(&request).await {
        Err(Error::Guest(types::Error::Wechat(w))) => {
            assert!(w.code == "SYSTEMERROR" && w.retryable)
        }
        other => panic!("expected SYSTEMERROR, got {other:?}"),
    }
    f.call(&request)
        .await
        .expect("the identical retry succeeds");

    let request = f
        .signer
        .unified_order(&f.merchant, &f.order("FAIL112001", 112, "NATIVE"), "n")
        .expect("s");
    let page = f
        .post_raw(&request.path, request.body.clone().into_bytes())
        .await;
    assert_eq!(page.status(), 502);
    assert!(page.text().await.expect("text").starts_with("<html>"));
    f.call(&request).await.expect("then it works");

    let request = f
        .signer
        .unified_order(&f.merchant, &f.order("FAIL111001", 111, "NATIVE"), "n")
        .expect("s");
    let timed_out = f
        .http
        .post(format!("{}{}", f.base, request.path))
        .body(request.body.clone())
        .send()
        .await;
    assert!(
        timed_out.is_err_and(|e| e.is_timeout()),
        "the first reply is held past the client's 1 s timeout"
    );
    f.call(&request).await.expect("the retry succeeds");

    // A scenario set through the admin API before the order exists.
    let preset = f
        .http
        .post(format!("{}/admin/scenario", f.base))
        .header("Content-Type", "application/json")
        .body(r#"{"out_trade_no":"PRESET0001","scenario":"system_error_then_success"}"#)
        .send()
        .await
        .expect("admin");
    assert!(preset.status().is_success());
    let request = f
        .signer
        .unified_order(&f.merchant, &f.order("PRESET0001", 1, "NATIVE"), "n")
        .expect("s");
    assert_eq!(wechat_code(f.call(&request).await), "SYSTEMERROR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_err_codes_and_expiry() {
    let mut f = Fixture::start(SignType::Md5, 600.0, &[]).await;
    let request = f
        .signer
        .micropay(&f.merchant, &micropay("MORE000001", 4), "n")
        .expect("s");
    assert_eq!(wechat_code(f.call(&request).await), "NOTENOUGH");
    assert_eq!(
        field(&f.query("MORE000001").await, "trade_state"),
        "PAYERROR"
    );
    let request = f
        .signer
        .micropay(&f.merchant, &micropay("MORE000001", 5), "n")
        .expect("s");
    assert_eq!(wechat_code(f.call(&request).await), "OUT_TRADE_NO_USED");

    // 113: the first refund is rate limited and not accepted; the retry is.
    f.place("MORE000113", 113).await;
    f.pay("MORE000113").await;
    let request = f
        .signer
        .refund(
            &f.merchant,
            &refund_request("MORE000113", "RF113", 113, 13),
            "n",
        )
        .expect("s");
    match f.call(&request).await {
        Err(Error::Guest(types::Error::Wechat(w))) => {
            assert!(w.code == "FREQUENCY_LIMITED" && w.retryable)
        }
        other => panic!("expected FREQUENCY_LIMITED, got {other:?}"),
    }
    f.call(&request).await.expect("the retry is accepted");

    // time_expire shortens the 2-hour life of the code: 6 simulated minutes is 0.6 s at x600.
    let soon =
        chrono::Utc::now() + chrono::Duration::hours(8) + chrono::Duration::seconds(360 + 60);
    let mut order = f.order("MORE000002", 1, "NATIVE");
    order.time_expire = Some(soon.format("%Y%m%d%H%M%S").to_string());
    let request = f.signer.unified_order(&f.merchant, &order, "n").expect("s");
    f.call(&request).await.expect("placed");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let late = f
        .http
        .post(format!("{}/admin/pay", f.base))
        .header("Content-Type", "application/json")
        .body(r#"{"out_trade_no":"MORE000002"}"#)
        .send()
        .await
        .expect("admin");
    assert_eq!(
        late.status(),
        409,
        "the code expired before the payer scanned it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_limited_to_fifty_and_to_a_year() {
    let mut f = Fixture::start(SignType::Md5, 1.0, &[]).await;
    f.place("LIMIT00001", 100).await;
    f.pay("LIMIT00001").await;
    for n in 0..50 {
        let refund = refund_request("LIMIT00001", &format!("RL{n}"), 100, 1);
        let request = f.signer.refund(&f.merchant, &refund, "n").expect("s");
        f.call(&request)
            .await
            .unwrap_or_else(|e| panic!("refund {n}: {e}"));
    }
    let fifty_first = f
        .signer
        .refund(
            &f.merchant,
            &refund_request("LIMIT00001", "RL50", 100, 1),
            "n",
        )
        .expect("s");
    assert_eq!(wechat_code(f.call(&fifty_first).await), "ERROR");

    f.place("LIMIT00002", 100).await;
    f.pay("LIMIT00002").await;
    let jump = f
        .http
        .post(format!("{}/admin/clock", f.base))
        .header("Content-Type", "application/json")
        .body(r#"{"advance_secs": 31622400}"#)
        .send()
        .await
        .expect("admin");
    assert!(jump.status().is_success());
    let late = f
        .signer
        .refund(
            &f.merchant,
            &refund_request("LIMIT00002", "RLATE", 100, 1),
            "n",
        )
        .expect("s");
    assert_eq!(
        wechat_code(f.call(&late).await),
        "TRADE_OVERDUE",
        "366 days after payment"
    );
}
