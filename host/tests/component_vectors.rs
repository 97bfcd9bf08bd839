//! The known-answer vectors of `tests/vectors/`, through the component in
//! wasmtime (the same files `guest/tests/vectors.rs` runs natively).

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use wxpay::sandbox::SignerInstance;
use wxpay::sandbox::bindings::merchant_api::{ExpectedOrder, ExpectedRefund};
use wxpay::sandbox::bindings::types::{self, SignType};
use wxpay::sandbox::signer::MerchantSettings;
use wxpay::{Error, key::ApiKey};
use wxpay_guest::packed;

#[path = "support/mod.rs"]
mod support;
#[path = "../../tests/support/vectors.rs"]
mod vectors;
use vectors::{ClientVector, Decoded, NotificationVector, SignatureVector, check_outcome, load};

fn sign_type(wire: &str) -> SignType {
    match wire {
        "MD5" => SignType::Md5,
        "HMAC-SHA256" => SignType::HmacSha256,
        other => panic!("unknown sign type {other}"),
    }
}

fn settings(appid: &str, mch_id: &str, sign_type: SignType) -> MerchantSettings {
    MerchantSettings {
        appid: appid.into(),
        mch_id: mch_id.into(),
        sign_type,
        sub_appid: None,
        sub_mch_id: None,
        sandbox: false,
    }
}

fn instance() -> SignerInstance {
    support::sandbox().instantiate().expect("instantiates")
}

#[test]
fn signature_vectors_through_the_component() {
    let mut signer = instance();
    let all: Vec<SignatureVector> = load("signatures.json");
    assert!(all.len() >= 11);
    for v in all {
        assert_eq!(
            signer.canonicalize(&v.params).expect(&v.id),
            v.canonical,
            "{} canonical",
            v.id
        );
        let key = support::key(&v.key);
        let st = sign_type(&v.sign_type);
        let merchant = signer
            .merchant(&settings("wxd930ea5d5a258f4f", "10000100", st), &key)
            .expect(&v.id);
        assert_eq!(
            signer.sign(&merchant, &v.params, None).expect(&v.id),
            v.sign,
            "{} sign",
            v.id
        );
        let fields =
            packed::pack(v.params.iter().map(|(k, val)| (k.as_str(), val.as_str()))).expect(&v.id);
        assert_eq!(
            signer.sign_packed(&merchant, &fields, None).expect(&v.id),
            v.sign,
            "{} sign packed",
            v.id
        );
        signer.drop_merchant(merchant).expect("drop");
    }
}

#[test]
fn client_param_vectors_through_the_component() {
    let mut signer = instance();
    let all: Vec<ClientVector> = load("client_params.json");
    assert_eq!(all.len(), 4);
    for v in all {
        let merchant = signer
            .merchant(
                &settings(&v.appid, &v.mch_id, sign_type(&v.sign_type)),
                &support::key(&v.key),
            )
            .expect(&v.id);
        let got = match v.kind.as_str() {
            "jsapi" => signer.jsapi_params(&merchant, &v.prepay_id, &v.nonce, v.timestamp),
            "app" => signer.app_params(&merchant, &v.prepay_id, &v.nonce, v.timestamp),
            other => panic!("unknown kind {other}"),
        };
        assert_eq!(got.expect(&v.id), v.expected, "{}", v.id);
        signer.drop_merchant(merchant).expect("drop");
    }
}

/// The WIT case name of a guest error; any other failure is a test failure.
fn guest_case(e: Error) -> &'static str {
    match e {
        Error::Guest(g) => support::case_name(&g),
        other => panic!("not a guest error: {other}"),
    }
}

#[test]
fn notification_vectors_through_the_component() {
    let mut signer = instance();
    let all: Vec<NotificationVector> = load("notifications.json");
    assert!(all.len() >= 12);
    for v in all {
        let m = &v.merchant;
        let merchant = signer
            .merchant(
                &settings(&m.appid, &m.mch_id, sign_type(&m.sign_type)),
                &support::key(&m.key),
            )
            .expect(&v.id);
        let body = v.body.as_bytes();
        let result: Result<Decoded<'_>, &str> = match v.kind.as_str() {
            "payment" => {
                let expected = v.expected_order.as_ref().map(|e| ExpectedOrder {
                    out_trade_no: e.out_trade_no.clone(),
                    total_fee: e.total_fee,
                    fee_type: None,
                    sign_type: None,
                });
                if let Err(refusal) = signer.verify_payment_notification(&merchant, body, None) {
                    let refusal = guest_case(refusal);
                    for declared in [None, Some(sign_type(&m.sign_type))] {
                        let order = ExpectedOrder {
                            out_trade_no: "WX0001".into(),
                            total_fee: 1,
                            fee_type: None,
                            sign_type: declared,
                        };
                        let with_order = signer
                            .verify_payment_notification(&merchant, body, Some(&order))
                            .map(drop)
                            .map_err(guest_case);
                        assert_eq!(with_order, Err(refusal), "{}: refused alike", v.id);
                    }
                }
                signer
                    .verify_payment_notification(&merchant, body, expected.as_ref())
                    .map(|n| {
                        (
                            vec![
                                ("out_trade_no".to_owned(), n.out_trade_no),
                                ("transaction_id".to_owned(), n.transaction_id),
                                ("fee_type".to_owned(), n.fee_type),
                            ],
                            vec![
                                ("paid", n.paid.to_string()),
                                ("total_fee", n.total_fee.to_string()),
                            ],
                        )
                    })
                    .map_err(guest_case)
            }
            "refund" => {
                let expected = v.expected_refund.as_ref().map(|e| ExpectedRefund {
                    out_trade_no: e.out_trade_no.clone(),
                    out_refund_no: e.out_refund_no.clone(),
                    refund_fee: e.refund_fee,
                });
                if let Some(expected) = &expected {
                    let later = signer
                        .verify_refund_notification(&merchant, body, None)
                        .and_then(|notice| signer.check_refund_notice(&merchant, &notice, expected))
                        .map_err(guest_case);
                    let at_once = signer
                        .verify_refund_notification(&merchant, body, Some(expected))
                        .map(drop)
                        .map_err(guest_case);
                    assert_eq!(later, at_once, "{}: checked later", v.id);
                }
                signer
                    .verify_refund_notification(&merchant, body, expected.as_ref())
                    .map(|n| (n.fields, vec![]))
                    .map_err(guest_case)
            }
            other => panic!("unknown kind {other}"),
        };
        check_outcome(&v.id, result, &v.outcome);
    }
}

#[test]
fn typed_errors_cross_the_boundary() {
    let mut signer = instance();
    let duplicate = vec![
        ("a".to_owned(), "1".to_owned()),
        ("a".to_owned(), "2".to_owned()),
    ];
    assert!(
        matches!(signer.canonicalize(&duplicate), Err(Error::Guest(types::Error::DuplicateField(f))) if f == "a")
    );
    let key = ApiKey::from_env("WXPAY_TEST_UNSET_VARIABLE");
    assert!(matches!(key, Err(Error::KeyEnv { .. })));
}

#[test]
fn sign_packed_refuses_what_sign_refuses_and_what_it_cannot_read() {
    let mut signer = instance();
    let merchant = signer
        .merchant(
            &settings("wxd930ea5d5a258f4f", "10000100", SignType::Md5),
            &support::key("192006250b4c09247ec02edce69f6a2d"),
        )
        .expect("merchant");
    let refusal = |signer: &mut SignerInstance, fields: &str| match signer
        .sign_packed(&merchant, fields, None)
    {
        Err(Error::Guest(e)) => e,
        other => panic!("{fields:?} must be refused by the guest, got {other:?}"),
    };
    assert!(matches!(
        refusal(&mut signer, "a=1\0a=2"),
        types::Error::DuplicateField(f) if f == "a"
    ));
    assert!(matches!(
        refusal(&mut signer, "a=1\0body"),
        types::Error::InvalidField(types::FieldError { field, rule: types::Rule::Format(_) })
            if field == "params"
    ));
    assert!(matches!(
        refusal(&mut signer, "bad name=1"),
        types::Error::InvalidField(types::FieldError { field, rule: types::Rule::Charset(_) })
            if field == "bad name"
    ));
    // The instance is still good after refusals: they are errors, not traps.
    let v1 = concat!(
        "body=test\0appid=wxd930ea5d5a258f4f\0mch_id=10000100\0",
        "device_info=1000\0nonce_str=ibuaiVcKdpRxkhJA"
    );
    assert_eq!(
        signer.sign_packed(&merchant, v1, None).expect("signs"),
        "9A0A8659F005D6984697E2CA0A9CF3B7"
    );
}
