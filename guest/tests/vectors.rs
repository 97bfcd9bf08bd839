//! Known-answer vectors from `tests/vectors/`, run against the native core.
//! `host/tests/component_vectors.rs` runs the same files through the component.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use wxpay_guest::notify::ExpectedOrder;
use wxpay_guest::refund_notify::ExpectedRefund;
use wxpay_guest::{
    ApiKey, Error, Merchant, MerchantConfig, SignType, canonical, fuzzing, packed, params, sign,
};

#[path = "../../tests/support/vectors.rs"]
mod vectors;
use vectors::{ClientVector, Decoded, NotificationVector, SignatureVector, check_outcome, load};

fn sign_type(wire: &str) -> SignType {
    SignType::from_wire(wire).expect("MD5 or HMAC-SHA256")
}

fn merchant(appid: &str, mch_id: &str, key: &str, sign_type: SignType) -> Merchant {
    Merchant::new(MerchantConfig {
        appid: appid.into(),
        mch_id: mch_id.into(),
        api_key: ApiKey::new(key.into()).expect("vector key"),
        sign_type,
        sub_appid: None,
        sub_mch_id: None,
        sandbox: false,
    })
    .expect("vector merchant")
}

#[test]
fn signature_vectors() {
    let all: Vec<SignatureVector> = load("signatures.json");
    assert!(all.len() >= 11);
    for v in all {
        let p = params::from_pairs(v.params.clone()).expect(&v.id);
        assert_eq!(
            canonical::canonicalize(&p),
            v.canonical,
            "{} canonical",
            v.id
        );
        let key = ApiKey::new(v.key.clone()).expect(&v.id);
        let st = sign_type(&v.sign_type);
        assert_eq!(sign::sign(&p, st, &key), v.sign, "{} sign", v.id);
        let fields =
            packed::pack(v.params.iter().map(|(k, val)| (k.as_str(), val.as_str()))).expect(&v.id);
        assert_eq!(
            packed::sign_packed(&fields, st, &key).as_ref(),
            Ok(&v.sign),
            "{} sign packed",
            v.id
        );
        let mut signed = p.clone();
        signed.insert("sign".into(), v.sign.clone());
        assert_eq!(sign::verify(&signed, st, &key), Ok(()), "{} verify", v.id);
        assert_eq!(
            sign::verify(&signed, st.other(), &key),
            Err(Error::SignatureMismatch(st.other())),
            "{} must not verify with the other algorithm",
            v.id
        );
    }
}

#[test]
fn client_param_vectors() {
    let all: Vec<ClientVector> = load("client_params.json");
    assert_eq!(all.len(), 4);
    for v in all {
        let m = merchant(&v.appid, &v.mch_id, &v.key, sign_type(&v.sign_type));
        let got = match v.kind.as_str() {
            "jsapi" => m.jsapi_params(&v.prepay_id, &v.nonce, v.timestamp),
            "app" => m.app_params(&v.prepay_id, &v.nonce, v.timestamp),
            other => panic!("unknown kind {other}"),
        };
        assert_eq!(got.expect(&v.id), v.expected, "{}", v.id);
    }
}

/// The WIT case name of an error, as the vector files spell it.
fn case_name(e: &Error) -> &'static str {
    match e {
        Error::InvalidField(_) => "invalid-field",
        Error::DuplicateField(_) => "duplicate-field",
        Error::XmlRejected(_) => "xml-rejected",
        Error::SignatureMissing => "signature-missing",
        Error::SignatureMismatch(_) => "signature-mismatch",
        Error::SignTypeMismatch(_) => "sign-type-mismatch",
        Error::WrongMerchant(_) => "wrong-merchant",
        Error::OrderMismatch(_) => "order-mismatch",
        Error::AmountMismatch(_) => "amount-mismatch",
        Error::ReturnFailed(_) => "return-failed",
        Error::Wechat(_) => "wechat",
        Error::DecryptFailed(_) => "decrypt-failed",
        _ => "unknown",
    }
}

#[test]
fn notification_vectors() {
    let all: Vec<NotificationVector> = load("notifications.json");
    assert!(all.len() >= 12);
    for v in all {
        let m = merchant(
            &v.merchant.appid,
            &v.merchant.mch_id,
            &v.merchant.key,
            sign_type(&v.merchant.sign_type),
        );
        let result: Result<Decoded<'_>, &str> = match v.kind.as_str() {
            "payment" => {
                let expected = v.expected_order.as_ref().map(|e| ExpectedOrder {
                    out_trade_no: e.out_trade_no.clone(),
                    total_fee: e.total_fee,
                    fee_type: None,
                    sign_type: None,
                });
                if let Err(refusal) = m.verify_payment_notification(v.body.as_bytes(), None) {
                    fuzzing::assert_refusal_stands_with_an_order(
                        &m,
                        v.body.as_bytes(),
                        &refusal,
                        &v.id,
                    );
                }
                m.verify_payment_notification(v.body.as_bytes(), expected.as_ref())
                    .map(|n| {
                        let extra = vec![
                            ("paid", n.paid.to_string()),
                            ("total_fee", n.total_fee.to_string()),
                        ];
                        (params::to_pairs(&n.fields), extra)
                    })
                    .map_err(|e| case_name(&e))
            }
            "refund" => {
                let expected = v.expected_refund.as_ref().map(|e| ExpectedRefund {
                    out_trade_no: e.out_trade_no.clone(),
                    out_refund_no: e.out_refund_no.clone(),
                    refund_fee: e.refund_fee,
                });
                if let Some(expected) = &expected {
                    fuzzing::assert_refund_checked_later_decides_alike(
                        &m,
                        v.body.as_bytes(),
                        expected,
                        &v.id,
                    );
                }
                m.verify_refund_notification(v.body.as_bytes(), expected.as_ref())
                    .map(|n| (params::to_pairs(&n.fields), vec![]))
                    .map_err(|e| case_name(&e))
            }
            other => panic!("unknown kind {other}"),
        };
        check_outcome(&v.id, result, &v.outcome);
    }
}
