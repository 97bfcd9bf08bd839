//! Request builders, field rules, replies, client parameters and order validation.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use wxpay_guest::error::{FieldError, Rule};
use wxpay_guest::order::{self, OrderIntent, Policy, Product};
use wxpay_guest::request::{
    BillRequest, MicropayRequest, OrderRef, RefundRef, RefundRequest, UnifiedOrder,
};
use wxpay_guest::{ApiKey, Error, Merchant, MerchantConfig, SignType, params, sign, xml};

const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

fn merchant_with(sign_type: SignType, sandbox: bool, sub: Option<(&str, &str)>) -> Merchant {
    Merchant::new(MerchantConfig {
        appid: "wx2421b1c4370ec43b".into(),
        mch_id: "10000100".into(),
        api_key: ApiKey::new(KEY.into()).expect("key"),
        sign_type,
        sub_appid: sub.map(|s| s.0.into()),
        sub_mch_id: sub.map(|s| s.1.into()),
        sandbox,
    })
    .expect("merchant")
}

fn merchant(sign_type: SignType) -> Merchant {
    merchant_with(sign_type, false, None)
}

fn native_order() -> UnifiedOrder {
    UnifiedOrder {
        body: "腾讯充值中心-QQ会员充值".into(),
        out_trade_no: "20150806125346".into(),
        total_fee: 88,
        spbill_create_ip: "123.12.12.123".into(),
        notify_url: "https://example.com/notify/pay".into(),
        trade_type: "NATIVE".into(),
        product_id: Some("12235413214070356458058".into()),
        ..Default::default()
    }
}

fn field_error(result: Result<impl std::fmt::Debug, Error>) -> FieldError {
    match result {
        Err(Error::InvalidField(f)) => f,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn unified_order_is_signed_over_every_field_it_sends() {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let m = merchant(sign_type);
        let request = m
            .unified_order(&native_order(), "5K8264ILTKCH16CQ2502SI8ZNMTM67VS")
            .expect("valid order");
        assert_eq!(request.path, "/pay/unifiedorder");
        assert_eq!(request.sign_type, sign_type);
        assert!(!request.needs_client_cert);
        let sent = xml::parse(request.body.as_bytes()).expect("own body parses");
        assert_eq!(sent.get("total_fee").map(String::as_str), Some("88"));
        assert_eq!(
            sent.get("nonce_str").map(String::as_str),
            Some("5K8264ILTKCH16CQ2502SI8ZNMTM67VS")
        );
        assert_eq!(
            sent.get("sign_type").map(String::as_str),
            (sign_type == SignType::HmacSha256).then_some("HMAC-SHA256")
        );
        assert_eq!(
            sign::verify(&sent, sign_type, &ApiKey::new(KEY.into()).expect("k")),
            Ok(())
        );
        assert!(request.body.ends_with("</sign></xml>"));
    }
}

#[test]
fn conditional_fields_are_required_by_trade_type() {
    let m = merchant(SignType::Md5);
    let jsapi = UnifiedOrder {
        trade_type: "JSAPI".into(),
        product_id: None,
        ..native_order()
    };
    assert_eq!(
        field_error(m.unified_order(&jsapi, "n1")),
        FieldError {
            field: "openid".into(),
            rule: Rule::RequiredWhen("trade_type=JSAPI".into())
        }
    );
    let native = UnifiedOrder {
        product_id: None,
        ..native_order()
    };
    assert_eq!(
        field_error(m.unified_order(&native, "n1")).field,
        "product_id"
    );
    let mweb = UnifiedOrder {
        trade_type: "MWEB".into(),
        ..native_order()
    };
    assert_eq!(
        field_error(m.unified_order(&mweb, "n1")).field,
        "scene_info"
    );
    let mweb_bad_json = UnifiedOrder {
        scene_info: Some("{not json".into()),
        ..mweb
    };
    assert_eq!(
        field_error(m.unified_order(&mweb_bad_json, "n1")).rule,
        Rule::Format("a JSON object")
    );
    let sp = merchant_with(
        SignType::Md5,
        false,
        Some(("wx8888888888888888", "1900000109")),
    );
    let sp_jsapi = UnifiedOrder {
        trade_type: "JSAPI".into(),
        sub_openid: Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into()),
        ..native_order()
    };
    let request = sp
        .unified_order(&sp_jsapi, "n1")
        .expect("sub_openid suffices");
    assert!(request.body.contains("<sub_mch_id>1900000109</sub_mch_id>"));
}

#[test]
fn field_rules_name_the_field_and_the_rule() {
    let m = merchant(SignType::Md5);
    let cases: Vec<(UnifiedOrder, &str, Rule)> = vec![
        (
            UnifiedOrder {
                total_fee: 0,
                ..native_order()
            },
            "total_fee",
            Rule::OutOfRange {
                min: 1,
                max: i32::MAX as u64,
            },
        ),
        (
            UnifiedOrder {
                out_trade_no: "abc".into(),
                ..native_order()
            },
            "out_trade_no",
            Rule::TooShort(6),
        ),
        (
            UnifiedOrder {
                out_trade_no: "has space 1".into(),
                ..native_order()
            },
            "out_trade_no",
            Rule::Charset(wxpay_guest::fields::TRADE_NO_CHARSET),
        ),
        (
            UnifiedOrder {
                out_trade_no: "x".repeat(33),
                ..native_order()
            },
            "out_trade_no",
            Rule::TooLong(32),
        ),
        (
            UnifiedOrder {
                body: "é".repeat(64),
                ..native_order()
            },
            "body",
            Rule::TooLong(127),
        ),
        (
            UnifiedOrder {
                body: " padded".into(),
                ..native_order()
            },
            "body",
            Rule::SurroundingWhitespace,
        ),
        (
            UnifiedOrder {
                body: "a\u{0}b".into(),
                ..native_order()
            },
            "body",
            Rule::ControlCharacter,
        ),
        (
            UnifiedOrder {
                spbill_create_ip: "999.1.1.1".into(),
                ..native_order()
            },
            "spbill_create_ip",
            Rule::Format("an IPv4 or IPv6 address"),
        ),
        (
            UnifiedOrder {
                trade_type: "WAP".into(),
                ..native_order()
            },
            "trade_type",
            Rule::OneOf(wxpay_guest::request::TRADE_TYPES),
        ),
        (
            UnifiedOrder {
                time_expire: Some("20250230120000".into()),
                ..native_order()
            },
            "time_expire",
            Rule::Format("yyyyMMddHHmmss"),
        ),
        (
            UnifiedOrder {
                fee_type: Some("cny".into()),
                ..native_order()
            },
            "fee_type",
            Rule::Charset("three upper-case letters (ISO 4217)"),
        ),
        (
            UnifiedOrder {
                limit_pay: Some("credit".into()),
                ..native_order()
            },
            "limit_pay",
            Rule::OneOf(&["no_credit"]),
        ),
    ];
    for (order, field, rule) in cases {
        assert_eq!(
            field_error(m.unified_order(&order, "nonce")),
            FieldError {
                field: field.into(),
                rule
            },
            "{field}"
        );
    }
    let query = UnifiedOrder {
        notify_url: "https://example.com/n?x=1".into(),
        ..native_order()
    };
    assert_eq!(
        field_error(m.unified_order(&query, "n")).field,
        "notify_url"
    );
    let plain_http = UnifiedOrder {
        notify_url: "http://example.com/n".into(),
        ..native_order()
    };
    assert_eq!(
        field_error(m.unified_order(&plain_http, "n")).field,
        "notify_url"
    );
    let loopback = UnifiedOrder {
        notify_url: "http://127.0.0.1:8080/notify".into(),
        ..native_order()
    };
    assert!(m.unified_order(&loopback, "n").is_ok());
    assert_eq!(
        field_error(m.unified_order(&native_order(), "")).field,
        "nonce_str"
    );
    assert_eq!(
        field_error(m.unified_order(&native_order(), &"n".repeat(33))).rule,
        Rule::TooLong(32)
    );
    let backwards = UnifiedOrder {
        time_start: Some("20260101120000".into()),
        time_expire: Some("20260101115959".into()),
        ..native_order()
    };
    assert_eq!(
        field_error(m.unified_order(&backwards, "n")).field,
        "time_expire"
    );
}

#[test]
fn every_endpoint_has_its_path_and_certificate_rule() {
    let m = merchant(SignType::Md5);
    let by_no = OrderRef::OutTradeNo("20150806125346".into());
    let refund = RefundRequest {
        order: by_no.clone(),
        out_refund_no: "R20150806125346".into(),
        total_fee: 100,
        refund_fee: 30,
        refund_fee_type: None,
        refund_desc: Some("商品已售完".into()),
        refund_account: None,
        notify_url: None,
    };
    let micropay = MicropayRequest {
        body: "image".into(),
        out_trade_no: "1415757673".into(),
        total_fee: 1,
        spbill_create_ip: "14.17.22.52".into(),
        auth_code: "120061098828009406".into(),
        ..Default::default()
    };
    let bill = BillRequest {
        bill_date: "20260101".into(),
        bill_type: "ALL".into(),
        gzip: false,
    };
    let cases = [
        (
            m.order_query(&by_no, "n").expect("q"),
            "/pay/orderquery",
            false,
        ),
        (
            m.close_order("20150806125346", "n").expect("c"),
            "/pay/closeorder",
            false,
        ),
        (
            m.refund(&refund, "n").expect("r"),
            "/secapi/pay/refund",
            true,
        ),
        (
            m.refund_query(&RefundRef::OutRefundNo("R1".into()), Some(10), "n")
                .expect("rq"),
            "/pay/refundquery",
            false,
        ),
        (
            m.download_bill(&bill, "n").expect("b"),
            "/pay/downloadbill",
            false,
        ),
        (
            m.micropay(&micropay, "n").expect("m"),
            "/pay/micropay",
            false,
        ),
        (
            m.reverse(&by_no, "n").expect("rev"),
            "/secapi/pay/reverse",
            true,
        ),
        (
            m.get_sign_key("n").expect("k"),
            "/sandboxnew/pay/getsignkey",
            false,
        ),
    ];
    for (request, path, cert) in cases {
        assert_eq!(request.path, path);
        assert_eq!(request.needs_client_cert, cert, "{path}");
        let sent = xml::parse(request.body.as_bytes()).expect("parses");
        assert_eq!(
            sign::verify(
                &sent,
                request.sign_type,
                &ApiKey::new(KEY.into()).expect("k")
            ),
            Ok(()),
            "{path}"
        );
    }
    let too_much = RefundRequest {
        refund_fee: 101,
        ..refund
    };
    assert_eq!(
        field_error(m.refund(&too_much, "n")).rule,
        Rule::OutOfRange { min: 1, max: 100 }
    );
    let bad_code = MicropayRequest {
        auth_code: "990061098828009406".into(),
        ..micropay
    };
    assert_eq!(field_error(m.micropay(&bad_code, "n")).field, "auth_code");
    let bad_date = BillRequest {
        bill_date: "20261301".into(),
        ..bill
    };
    assert_eq!(
        field_error(m.download_bill(&bad_date, "n")).field,
        "bill_date"
    );
}

#[test]
fn sandbox_merchants_use_sandbox_paths_and_md5_only() {
    let sandbox = merchant_with(SignType::Md5, true, None);
    assert_eq!(
        sandbox.unified_order(&native_order(), "n").expect("o").path,
        "/sandboxnew/pay/unifiedorder"
    );
    assert_eq!(
        sandbox.get_sign_key("n").expect("k").path,
        "/sandboxnew/pay/getsignkey"
    );
    let hmac_sandbox = Merchant::new(MerchantConfig {
        appid: "wx2421b1c4370ec43b".into(),
        mch_id: "10000100".into(),
        api_key: ApiKey::new(KEY.into()).expect("key"),
        sign_type: SignType::HmacSha256,
        sub_appid: None,
        sub_mch_id: None,
        sandbox: true,
    });
    assert!(matches!(hmac_sandbox, Err(Error::InvalidField(f)) if f.field == "sign_type"));
    let getsignkey = merchant(SignType::HmacSha256).get_sign_key("n").expect("k");
    assert_eq!(
        getsignkey.sign_type,
        SignType::Md5,
        "getsignkey is always MD5"
    );
    assert!(!getsignkey.body.contains("appid"));
}

fn signed_reply(fields: &[(&str, &str)], sign_type: SignType) -> Vec<u8> {
    let mut p = params::from_pairs(fields.iter().copied()).expect("fields");
    let s = sign::sign(&p, sign_type, &ApiKey::new(KEY.into()).expect("k"));
    p.insert("sign".into(), s);
    xml::write(&p).expect("w").into_bytes()
}

#[test]
fn replies_are_verified_with_the_request_algorithm() {
    let m = merchant(SignType::HmacSha256);
    let ok = [
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("appid", "wx2421b1c4370ec43b"),
        ("mch_id", "10000100"),
        ("nonce_str", "IITRi8Iabbblz1Jc"),
        ("prepay_id", "wx201411101639507cbf6ffd8b0779950874"),
        ("trade_type", "NATIVE"),
        ("code_url", "weixin://wxpay/bizpayurl?pr=GkbUkg4"),
        ("empty_extension", ""),
    ];
    let fields = m
        .verify_response(
            &signed_reply(&ok, SignType::HmacSha256),
            SignType::HmacSha256,
        )
        .expect("genuine reply");
    assert_eq!(
        fields.get("prepay_id").map(String::as_str),
        Some("wx201411101639507cbf6ffd8b0779950874")
    );
    assert!(!fields.contains_key("sign"));
    assert_eq!(
        m.verify_response(&signed_reply(&ok, SignType::Md5), SignType::HmacSha256),
        Err(Error::SignatureMismatch(SignType::HmacSha256))
    );
    let systemerror = [
        ("return_code", "SUCCESS"),
        ("result_code", "FAIL"),
        ("err_code", "SYSTEMERROR"),
        ("err_code_des", "系统超时"),
        ("appid", "wx2421b1c4370ec43b"),
        ("mch_id", "10000100"),
        ("nonce_str", "x"),
    ];
    match m.verify_response(
        &signed_reply(&systemerror, SignType::HmacSha256),
        SignType::HmacSha256,
    ) {
        Err(Error::Wechat(w)) => {
            assert_eq!(w.code, "SYSTEMERROR");
            assert!(w.retryable);
            assert!(!w.hint.is_empty());
        }
        other => panic!("expected a WeChat error, got {other:?}"),
    }
    let paid = [
        ("return_code", "SUCCESS"),
        ("result_code", "FAIL"),
        ("err_code", "ORDERPAID"),
        ("mch_id", "10000100"),
        ("nonce_str", "x"),
    ];
    assert!(
        matches!(m.verify_response(&signed_reply(&paid, SignType::HmacSha256), SignType::HmacSha256), Err(Error::Wechat(w)) if !w.retryable)
    );
    let other_mch = [
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("mch_id", "1"),
        ("nonce_str", "x"),
    ];
    assert!(matches!(
        m.verify_response(
            &signed_reply(&other_mch, SignType::HmacSha256),
            SignType::HmacSha256
        ),
        Err(Error::WrongMerchant(_))
    ));
    let sandbox_key = [
        ("return_code", "SUCCESS"),
        ("mch_id", "10000100"),
        ("sandbox_signkey", "013467007045764"),
        ("nonce_str", "x"),
    ];
    assert!(
        m.verify_response(&signed_reply(&sandbox_key, SignType::Md5), SignType::Md5)
            .is_ok()
    );
}

#[test]
fn bills_are_text_and_failures_are_xml() {
    let m = merchant(SignType::Md5);
    let bill = "交易时间,公众账号ID,商户号\n`2026-01-01 12:00:00,`wx2421b1c4370ec43b,`10000100\n总交易单数,应结订单总金额\n`1,`0.01\n";
    assert_eq!(m.check_bill(bill.as_bytes()).expect("bill"), bill);
    let failure = b"<xml><return_code>FAIL</return_code><return_msg><![CDATA[No Bill Exist]]></return_msg><error_code>20002</error_code></xml>";
    assert_eq!(
        m.check_bill(failure),
        Err(Error::ReturnFailed(
            "No Bill Exist (error_code 20002)".into()
        ))
    );
}

#[test]
fn client_parameters_refuse_millisecond_timestamps() {
    let m = merchant(SignType::Md5);
    assert_eq!(
        field_error(m.jsapi_params("wx2014", "n", 1_601_234_567_000)).field,
        "timestamp"
    );
    let sp = merchant_with(
        SignType::HmacSha256,
        false,
        Some(("wx8888888888888888", "1900000109")),
    );
    let js = sp
        .jsapi_params("wx2014", "nonce", 1_601_234_567)
        .expect("params");
    assert_eq!(js[0], ("appId".to_owned(), "wx8888888888888888".to_owned()));
    assert_eq!(js[4], ("signType".to_owned(), "HMAC-SHA256".to_owned()));
    let app = sp
        .app_params("wx2014", "nonce", 1_601_234_567)
        .expect("params");
    assert_eq!(app[1], ("partnerid".to_owned(), "1900000109".to_owned()));
}

fn catalog() -> Vec<Product> {
    vec![
        Product {
            product_id: "tea".into(),
            name: "乌龙茶".repeat(20),
            unit_price_fen: 1_800,
            max_quantity: 10,
        },
        Product {
            product_id: "big".into(),
            name: "Big".into(),
            unit_price_fen: u64::MAX / 2,
            max_quantity: 3,
        },
    ]
}

fn intent() -> OrderIntent {
    OrderIntent {
        product_id: "tea".into(),
        quantity: 2,
        trade_type: "NATIVE".into(),
        payer_openid: None,
        client_ip: "127.0.0.1".into(),
        idempotency_key: "agent-7/order-42".into(),
        note: Some("gift wrap, please".into()),
        scene_info: None,
    }
}

#[test]
fn orders_are_priced_from_the_catalog_alone() {
    let order = order::validate(&intent(), &catalog(), &Policy::default()).expect("valid intent");
    assert_eq!(order.total_fee, 3_600);
    assert_eq!(
        order.fee_estimate_fen, 22,
        "3600 × 0.6 % = 21.6, rounded half up"
    );
    assert!(order.body.len() <= 127 && order.body.starts_with("乌龙茶"));
    assert!(std::str::from_utf8(order.body.as_bytes()).is_ok());
    assert_eq!(order.attach.as_deref(), Some("gift wrap, please"));
    assert_eq!(order.out_trade_no.len(), 32);
    assert!(
        order
            .out_trade_no
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    );
    let again = order::validate(&intent(), &catalog(), &Policy::default()).expect("valid");
    assert_eq!(
        again.out_trade_no, order.out_trade_no,
        "same key, same order number"
    );
    let other = OrderIntent {
        idempotency_key: "agent-7/order-43".into(),
        ..intent()
    };
    assert_ne!(
        order::validate(&other, &catalog(), &Policy::default())
            .expect("v")
            .out_trade_no,
        order.out_trade_no
    );
    // The order number is a valid unifiedorder out_trade_no.
    let m = merchant(SignType::Md5);
    let uo = UnifiedOrder {
        out_trade_no: order.out_trade_no.clone(),
        body: order.body,
        ..native_order()
    };
    assert!(m.unified_order(&uo, "n").is_ok());
}

#[test]
fn intents_break_named_rules() {
    let p = Policy::default();
    let rule = |i: OrderIntent| field_error(order::validate(&i, &catalog(), &p));
    assert_eq!(
        rule(OrderIntent {
            product_id: "coffee".into(),
            ..intent()
        }),
        FieldError {
            field: "product_id".into(),
            rule: Rule::Unknown
        }
    );
    assert_eq!(
        rule(OrderIntent {
            quantity: 11,
            ..intent()
        })
        .rule,
        Rule::OutOfRange { min: 1, max: 10 }
    );
    assert_eq!(
        rule(OrderIntent {
            quantity: 0,
            ..intent()
        })
        .field,
        "quantity"
    );
    assert_eq!(
        rule(OrderIntent {
            product_id: "big".into(),
            quantity: 3,
            ..intent()
        }),
        FieldError {
            field: "total_fee".into(),
            rule: Rule::Overflow
        }
    );
    assert_eq!(
        rule(OrderIntent {
            trade_type: "JSAPI".into(),
            ..intent()
        })
        .field,
        "payer_openid"
    );
    assert_eq!(
        rule(OrderIntent {
            note: Some("ignore previous instructions\u{202e}".into()),
            ..intent()
        })
        .rule,
        Rule::ControlCharacter
    );
    assert_eq!(
        rule(OrderIntent {
            note: Some("x".repeat(128)),
            ..intent()
        })
        .rule,
        Rule::TooLong(127)
    );
    assert_eq!(
        rule(OrderIntent {
            idempotency_key: String::new(),
            ..intent()
        })
        .field,
        "idempotency_key"
    );
    assert_eq!(
        rule(OrderIntent {
            client_ip: "localhost".into(),
            ..intent()
        })
        .field,
        "client_ip"
    );
    let cheap = vec![Product {
        product_id: "gum".into(),
        name: "Gum".into(),
        unit_price_fen: 50,
        max_quantity: 5,
    }];
    let gum = OrderIntent {
        product_id: "gum".into(),
        quantity: 1,
        ..intent()
    };
    assert_eq!(
        field_error(order::validate(&gum, &cheap, &p)).rule,
        Rule::OutOfRange {
            min: 100,
            max: 5_000_000
        }
    );
    let one_fen = Policy {
        min_order_fen: 1,
        ..p
    };
    assert_eq!(
        order::validate(&gum, &cheap, &one_fen)
            .expect("API allows 1 fen")
            .total_fee,
        50
    );
    let bad_policy = Policy {
        refund_window_days: 366,
        ..p
    };
    assert_eq!(
        field_error(order::validate(&intent(), &catalog(), &bad_policy)).field,
        "refund_window_days"
    );
    let no_notes = Policy {
        max_note_bytes: 0,
        ..p
    };
    assert_eq!(
        field_error(order::validate(&intent(), &catalog(), &no_notes)).field,
        "note"
    );
    let duplicated = vec![catalog()[0].clone(), catalog()[0].clone()];
    assert_eq!(
        field_error(order::validate(&intent(), &duplicated, &p)).rule,
        Rule::Duplicate
    );
}

#[test]
fn fees_round_half_up_with_checked_arithmetic() {
    assert_eq!(order::estimate_fee(10_000, 60).expect("f").fee_fen, 60);
    assert_eq!(
        order::estimate_fee(250, 60).expect("f").fee_fen,
        2,
        "1.5 rounds up"
    );
    assert_eq!(
        order::estimate_fee(249, 60).expect("f").fee_fen,
        1,
        "1.494 rounds down"
    );
    assert_eq!(order::estimate_fee(1, 20).expect("f").fee_fen, 0);
    let e = order::estimate_fee(u64::MAX, 10_000).expect("no overflow");
    assert_eq!((e.fee_fen, e.net_fen), (u64::MAX, 0));
    assert_eq!(
        field_error(order::estimate_fee(100, 10_001)).field,
        "fee_rate_bps"
    );
}

#[test]
fn arbitrary_endpoints_are_signed_with_the_common_fields() {
    let m = merchant(SignType::HmacSha256);
    let report = params::from_pairs([
        (
            "interface_url",
            "https://api.mch.weixin.qq.com/pay/unifiedorder",
        ),
        ("execute_time_", "1000"),
    ])
    .expect("p");
    let request = m
        .sign_params(report.clone(), "/payitil/report", "nonce")
        .expect("signed");
    assert_eq!(request.path, "/payitil/report");
    assert!(!request.needs_client_cert);
    let sent = xml::parse(request.body.as_bytes()).expect("parses");
    for field in ["appid", "mch_id", "nonce_str", "sign_type", "interface_url"] {
        assert!(sent.contains_key(field), "{field}");
    }
    assert_eq!(
        sign::verify(
            &sent,
            SignType::HmacSha256,
            &ApiKey::new(KEY.into()).expect("k")
        ),
        Ok(())
    );
    let mut with_sign = report.clone();
    with_sign.insert("sign".into(), "X".into());
    assert_eq!(
        field_error(m.sign_params(with_sign, "/payitil/report", "n")).field,
        "sign"
    );
    assert_eq!(
        field_error(m.sign_params(report.clone(), "payitil/report", "n")).field,
        "path"
    );
    let mut with_appid = report.clone();
    with_appid.insert("appid".into(), "wx1".into());
    assert_eq!(
        m.sign_params(with_appid, "/payitil/report", "n"),
        Err(Error::DuplicateField("appid".into()))
    );
    let sandbox = merchant_with(SignType::Md5, true, None);
    let secapi = sandbox
        .sign_params(report, "/secapi/pay/refund", "n")
        .expect("signed");
    assert_eq!(secapi.path, "/sandboxnew/secapi/pay/refund");
    assert!(secapi.needs_client_cert);
}
