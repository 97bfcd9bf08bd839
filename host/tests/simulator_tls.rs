//! The simulator over HTTPS: refund and reverse need the merchant's client
//! certificate, other endpoints do not. Certificates are made for the test.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use wxpay::Error;
use wxpay::sandbox::bindings::merchant_api::{OrderRef, RefundRequest};
use wxpay::sandbox::bindings::types::{self, SignType};
use wxpay::sandbox::signer::MerchantSettings;
use wxpay::simulator::Simulator;
use wxpay::simulator::config::SimulatorConfig;

#[path = "support/mod.rs"]
mod support;
use support::pki::{client, pki};

const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secapi_needs_the_client_certificate_over_https() {
    let pki = pki();
    let config = SimulatorConfig::parse(&format!(
        "[[merchants]]\nappid = \"wxd930ea5d5a258f4f\"\nmch_id = \"10000100\"\napi_key = \"{KEY}\"\n"
    ))
    .expect("config");
    let sim = Simulator::new(&config).expect("simulator");
    let addr = sim
        .spawn_tls("127.0.0.1:0".parse().expect("addr"), &pki.files)
        .await
        .expect("https");
    let base = format!("https://127.0.0.1:{}", addr.port());

    let mut signer = support::sandbox().instantiate().expect("instance");
    let settings = MerchantSettings {
        appid: "wxd930ea5d5a258f4f".into(),
        mch_id: "10000100".into(),
        sign_type: SignType::Md5,
        sub_appid: None,
        sub_mch_id: None,
        sandbox: false,
    };
    let merchant = signer
        .merchant(&settings, &support::key(KEY))
        .expect("merchant");
    let post = |client: &reqwest::Client, path: String, body: String| {
        let request = client.post(format!("{base}{path}")).body(body);
        async move {
            request
                .send()
                .await
                .expect("https answer")
                .bytes()
                .await
                .expect("body")
        }
    };

    // No certificate is needed to query.
    let query = signer
        .order_query(&merchant, &OrderRef::OutTradeNo("TLS0000001".into()), "n")
        .expect("s");
    let reply = post(&client(&pki, false), query.path, query.body).await;
    assert!(matches!(
        signer.verify_response(&merchant, &reply, SignType::Md5),
        Err(Error::Guest(types::Error::Wechat(w))) if w.code == "ORDERNOTEXIST"
    ));

    // Refund without the certificate is refused; with it, WeChat's business rules answer.
    let refund = RefundRequest {
        order: OrderRef::OutTradeNo("TLS0000001".into()),
        out_refund_no: "R1".into(),
        total_fee: 1,
        refund_fee: 1,
        refund_fee_type: None,
        refund_desc: None,
        refund_account: None,
        notify_url: None,
    };
    let request = signer.refund(&merchant, &refund, "n").expect("s");
    assert!(request.needs_client_cert);
    let reply = post(
        &client(&pki, false),
        request.path.clone(),
        request.body.clone(),
    )
    .await;
    assert!(matches!(
        signer.verify_response(&merchant, &reply, SignType::Md5),
        Err(Error::Guest(types::Error::ReturnFailed(m))) if m == "请求需要双向证书"
    ));
    let reply = post(&client(&pki, true), request.path, request.body).await;
    assert!(matches!(
        signer.verify_response(&merchant, &reply, SignType::Md5),
        Err(Error::Guest(types::Error::Wechat(w))) if w.code == "ORDERNOTEXIST"
    ));
    signer.drop_merchant(merchant).expect("drop");
}
