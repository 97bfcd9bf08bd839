//! The WeChat client against the simulator: identical-body retries for
//! what may be retried, nothing else, client certificates for /secapi/,
//! and every reply verified by the component.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use std::time::Duration;

use wxpay::sandbox::bindings::merchant_api::{BillRequest, OrderRef, RefundRequest, UnifiedOrder};
use wxpay::sandbox::bindings::types::{self, SignType};
use wxpay::sandbox::signer::MerchantSettings;
use wxpay::sandbox::{MerchantHandle, SignerInstance};
use wxpay::simulator::Simulator;
use wxpay::simulator::config::SimulatorConfig;
use wxpay::wechat::{
    CallError, ClientConfig, ClientIdentity, Environment, RetryPolicy, WechatClient,
};

#[path = "support/mod.rs"]
mod support;

const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

fn simulator() -> Simulator {
    let mut config = SimulatorConfig::parse(&format!(
        "[[merchants]]\nappid = \"wxd930ea5d5a258f4f\"\nmch_id = \"10000100\"\napi_key = \"{KEY}\"\n"
    ))
    .expect("config");
    config.settings.timeout_delay_ms = 1_500;
    Simulator::new(&config).expect("simulator")
}

fn merchant(signer: &mut SignerInstance) -> MerchantHandle {
    let settings = MerchantSettings {
        appid: "wxd930ea5d5a258f4f".into(),
        mch_id: "10000100".into(),
        sign_type: SignType::HmacSha256,
        sub_appid: None,
        sub_mch_id: None,
        sandbox: false,
    };
    signer
        .merchant(&settings, &support::key(KEY))
        .expect("merchant")
}

fn fast(config: &mut ClientConfig) {
    config.total_timeout = Duration::from_millis(700);
    config.retry = RetryPolicy {
        base_delay: Duration::from_millis(10),
        ..RetryPolicy::default()
    };
}

fn order(no: &str, total_fee: u64) -> UnifiedOrder {
    UnifiedOrder {
        body: "Tea".into(),
        out_trade_no: no.into(),
        total_fee,
        spbill_create_ip: "127.0.0.1".into(),
        notify_url: "http://127.0.0.1:9/notify".into(),
        trade_type: "NATIVE".into(),
        device_info: None,
        detail: None,
        attach: None,
        fee_type: None,
        time_start: None,
        time_expire: None,
        goods_tag: None,
        product_id: Some("tea".into()),
        limit_pay: None,
        openid: None,
        sub_openid: None,
        receipt: None,
        scene_info: None,
        profit_sharing: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_with_the_identical_body() {
    let addr = simulator()
        .spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let mut config = ClientConfig::new(Environment::Custom(format!("http://{addr}/")));
    fast(&mut config);
    let client = WechatClient::new(&config).expect("client");
    let mut signer = support::sandbox().instantiate().expect("instance");
    let m = merchant(&mut signer);

    // 110 SYSTEMERROR, 111 held past the timeout, 112 an HTML page: one retry each.
    for (no, fee) in [
        ("CLIENT0110", 110),
        ("CLIENT0111", 111),
        ("CLIENT0112", 112),
    ] {
        let request = signer
            .unified_order(&m, &order(no, fee), "nonce")
            .expect("signed");
        let delivered = client
            .call(&mut signer, &m, &request)
            .await
            .unwrap_or_else(|e| panic!("{no}: {e}"));
        assert_eq!(delivered.attempts, 2, "{no}");
        assert!(
            delivered
                .fields
                .iter()
                .any(|(k, v)| k == "prepay_id" && v.starts_with("wx"))
        );
    }

    // A business refusal that must not be retried comes back at once, typed.
    let request = signer
        .close_order(&m, "NOSUCHORDER1", "nonce")
        .expect("signed");
    match client.call(&mut signer, &m, &request).await {
        Err(CallError::Refused {
            attempts: 1,
            source,
        }) => {
            assert!(
                matches!(source.guest(), Some(types::Error::Wechat(w)) if w.code == "ORDERNOTEXIST")
            );
        }
        other => panic!("expected ORDERNOTEXIST after one attempt, got {other:?}"),
    }

    // The bill comes back as text.
    let bill = BillRequest {
        bill_date: "20200101".into(),
        bill_type: "ALL".into(),
        gzip: false,
    };
    let request = signer.download_bill(&m, &bill, "nonce").expect("signed");
    assert!(matches!(
        client.fetch_bill(&mut signer, &m, &request).await,
        Err(CallError::Refused { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_host_exhausts_the_retry_budget() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    let mut config = ClientConfig::new(Environment::Custom(format!("http://127.0.0.1:{port}")));
    fast(&mut config);
    let client = WechatClient::new(&config).expect("client");
    let mut signer = support::sandbox().instantiate().expect("instance");
    let m = merchant(&mut signer);
    let request = signer
        .order_query(&m, &OrderRef::OutTradeNo("CLIENT0001".into()), "n")
        .expect("s");
    match client.call(&mut signer, &m, &request).await {
        Err(CallError::Transport { attempts, .. }) => assert_eq!(attempts, 3),
        other => panic!("expected a transport failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_use_the_client_certificate_and_slow_down_when_rate_limited() {
    let pki = support::pki::pki();
    let addr = simulator()
        .spawn_tls("127.0.0.1:0".parse().expect("addr"), &pki.files)
        .await
        .expect("https");
    let ca = tempfile::NamedTempFile::new().expect("ca file");
    std::fs::write(ca.path(), &pki.ca_pem).expect("write ca");
    let mut config = ClientConfig::new(Environment::Custom(format!(
        "https://127.0.0.1:{}",
        addr.port()
    )));
    fast(&mut config);
    config.extra_roots = vec![ca.path().to_path_buf()];
    let without_identity = WechatClient::new(&config).expect("client");
    config.identity = Some(ClientIdentity::Pem {
        cert: pki.client_cert.clone(),
        key: pki.client_key.clone(),
    });
    let client = WechatClient::new(&config).expect("client with certificate");

    let mut signer = support::sandbox().instantiate().expect("instance");
    let m = merchant(&mut signer);
    let request = signer
        .unified_order(&m, &order("CLIENT0113", 113), "nonce")
        .expect("signed");
    client
        .call(&mut signer, &m, &request)
        .await
        .expect("order over https");
    let paid = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("root"))
        .build()
        .expect("admin client")
        .post(format!("https://127.0.0.1:{}/admin/pay", addr.port()))
        .header("Content-Type", "application/json")
        .body(r#"{"out_trade_no":"CLIENT0113"}"#)
        .send()
        .await
        .expect("admin");
    assert!(paid.status().is_success());

    let refund = RefundRequest {
        order: OrderRef::OutTradeNo("CLIENT0113".into()),
        out_refund_no: "RCLIENT0113".into(),
        total_fee: 113,
        refund_fee: 13,
        refund_fee_type: None,
        refund_desc: None,
        refund_account: None,
        notify_url: None,
    };
    let request = signer.refund(&m, &refund, "nonce").expect("signed");
    assert!(matches!(
        without_identity.call(&mut signer, &m, &request).await,
        Err(CallError::ClientCertificateMissing { .. })
    ));
    let delivered = client
        .call(&mut signer, &m, &request)
        .await
        .expect("refund accepted on retry");
    assert_eq!(
        delivered.attempts, 2,
        "FREQUENCY_LIMITED first, then accepted"
    );
    assert!(
        delivered
            .fields
            .iter()
            .any(|(k, v)| k == "refund_fee" && v == "13")
    );
}
