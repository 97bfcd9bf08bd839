//! Hostile inputs: each gets its typed error, never a panic.
//! `host/tests/hostile.rs` sends the same bodies through the component.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use wxpay_guest::error::{DecryptReason, Rule, XmlReason};
use wxpay_guest::notify::ExpectedOrder;
use wxpay_guest::{ApiKey, Error, Merchant, MerchantConfig, SignType, params, sign, xml};

const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

fn merchant(sign_type: SignType) -> Merchant {
    Merchant::new(MerchantConfig {
        appid: "wx2421b1c4370ec43b".into(),
        mch_id: "10000100".into(),
        api_key: ApiKey::new(KEY.into()).expect("key"),
        sign_type,
        sub_appid: None,
        sub_mch_id: None,
        sandbox: false,
    })
    .expect("merchant")
}

fn xml_reason(body: &[u8]) -> XmlReason {
    match xml::parse(body) {
        Err(Error::XmlRejected(e)) => e.reason,
        other => panic!("expected an XML rejection, got {other:?}"),
    }
}

#[test]
fn xxe_and_entity_expansion_are_refused() {
    let xxe = br#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><a>&xxe;</a></xml>"#;
    assert_eq!(xml_reason(xxe), XmlReason::Doctype);
    let laughs = br#"<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><xml><a>&lol2;</a></xml>"#;
    assert_eq!(xml_reason(laughs), XmlReason::Doctype);
    assert_eq!(xml_reason(b"<xml><a>&lol;</a></xml>"), XmlReason::Entity);
    assert_eq!(xml_reason(b"<!ENTITY x 'y'><xml/>"), XmlReason::Entity);
    assert_eq!(xml_reason(b"<!doctype xml><xml/>"), XmlReason::Doctype);
}

#[test]
fn oversize_bodies_are_refused_before_parsing() {
    let mut big = b"<xml><a>".to_vec();
    big.resize(10 * 1024 * 1024, b'x');
    big.extend_from_slice(b"</a></xml>");
    assert_eq!(xml_reason(&big), XmlReason::TooLarge);
    let small_cap = xml::ReadOptions {
        max_bytes: 16,
        ..Default::default()
    };
    assert!(matches!(
        xml::parse_with(b"<xml><a>12345678</a></xml>", small_cap),
        Err(Error::XmlRejected(e)) if e.reason == XmlReason::TooLarge
    ));
}

#[test]
fn shape_violations_have_reasons() {
    assert_eq!(
        xml_reason(b"<xml><a>\xff\xfe</a></xml>"),
        XmlReason::NotUtf8
    );
    assert_eq!(
        xml_reason(b"<xml><a><b>1</b></a></xml>"),
        XmlReason::Nesting
    );
    assert_eq!(
        xml_reason(b"<xml><?pi x?><a>1</a></xml>"),
        XmlReason::ProcessingInstruction
    );
    assert_eq!(
        xml_reason(b"<xml><!-- c --><a>1</a></xml>"),
        XmlReason::Comment
    );
    assert_eq!(xml_reason(b"<root><a>1</a></root>"), XmlReason::WrongRoot);
    assert_eq!(
        xml_reason(b"<xml><a>1</a></xml><xml/>"),
        XmlReason::OutsideRoot
    );
    assert_eq!(
        xml_reason(b"<xml><a x=\"1\">1</a></xml>"),
        XmlReason::Attribute
    );
    assert_eq!(xml_reason(b"<xml><a>1</b></xml>"), XmlReason::Malformed);
    assert_eq!(xml_reason(b"<xml><a>1</a>"), XmlReason::Malformed);
    assert_eq!(xml_reason(b"   "), XmlReason::Empty);
    assert_eq!(
        xml_reason(b"<?xml version=\"1.0\" encoding=\"GBK\"?><xml/>"),
        XmlReason::Encoding
    );
    assert_eq!(xml_reason(b"<xml>text<a>1</a></xml>"), XmlReason::Malformed);
    // Found by the xml_parse fuzz target: raw characters XML 1.0 forbids.
    assert_eq!(xml_reason(b"<xml><a>\0</a></xml>"), XmlReason::Malformed);
    assert_eq!(
        xml_reason(b"<xml><a><![CDATA[\x01]]></a></xml>"),
        XmlReason::Malformed
    );
    assert_eq!(
        xml_reason("<xml><a>\u{fffe}</a></xml>".as_bytes()),
        XmlReason::Malformed
    );
}

/// The reader matches each end tag against the element it must close
/// (quick-xml does not compare the names a second time): a wrong one is
/// refused, and the detail names the tag that was due.
#[test]
fn end_tags_must_close_the_element_that_is_open() {
    let detail = |body: &[u8]| match xml::parse(body) {
        Err(Error::XmlRejected(e)) if e.reason == XmlReason::Malformed => e.detail,
        other => panic!("expected a malformed-XML refusal, got {other:?}"),
    };
    assert_eq!(
        detail(b"<xml><a>1</b></xml>"),
        "</b> where </a> was due, at byte 13"
    );
    assert_eq!(
        detail(b"<xml><a>1</a></root>"),
        "</root> where </xml> was due, at byte 20"
    );
    assert_eq!(xml_reason(b"</xml>"), XmlReason::Malformed);
    assert_eq!(xml_reason(b"<xml></xml></xml>"), XmlReason::Malformed);
    let spaced = xml::parse(b"<xml><a>1</a ></xml\n>").expect("spaces before `>`");
    assert_eq!(spaced.get("a").map(String::as_str), Some("1"));
}

#[test]
fn duplicate_fields_are_refused() {
    assert_eq!(
        xml::parse(b"<xml><total_fee>1</total_fee><total_fee>100</total_fee></xml>"),
        Err(Error::DuplicateField("total_fee".into()))
    );
    assert_eq!(
        params::from_pairs([("a", "1"), ("a", "2")]),
        Err(Error::DuplicateField("a".into()))
    );
}

#[test]
fn accepted_shapes_parse() {
    let body = "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xml>\n <a><![CDATA[x]]>y&amp;&#20013;</a>\n <b/>\n <c></c>\n</xml>\n";
    let p = xml::parse(body.as_bytes()).expect("valid body");
    assert_eq!(p.get("a").map(String::as_str), Some("xy&中"));
    assert_eq!(p.get("b").map(String::as_str), Some(""));
    assert_eq!(p.get("c").map(String::as_str), Some(""));
}

#[test]
fn read_field_reads_one_field_as_parse_reads_them_all() {
    let options = xml::ReadOptions::default();
    let body = b"<xml><out_trade_no>T1</out_trade_no><attach></attach></xml>";
    assert_eq!(
        xml::read_field(body, "out_trade_no", options),
        Ok(Some("T1".into()))
    );
    assert_eq!(xml::read_field(body, "attach", options), Ok(None), "empty");
    assert_eq!(xml::read_field(body, "openid", options), Ok(None), "absent");
    assert_eq!(
        xml::read_field(b"<xml><a>1</a><a>2</a></xml>", "b", options),
        Err(Error::DuplicateField("a".into())),
        "the whole body is checked, not only the field asked for"
    );
    let xxe = br#"<!DOCTYPE xml [<!ENTITY e "x">]><xml><a>&e;</a></xml>"#;
    assert_eq!(
        xml::read_field(xxe, "a", options),
        xml::parse(xxe).map(|_| None)
    );
}

#[test]
fn writer_refuses_what_xml_cannot_carry() {
    let p = params::from_pairs([("a", "bell\u{7}")]).expect("pairs");
    assert_eq!(
        xml::write(&p),
        Err(Error::InvalidField(wxpay_guest::error::FieldError {
            field: "a".into(),
            rule: Rule::ControlCharacter
        }))
    );
    assert!(matches!(
        params::from_pairs([("a<b", "1")]),
        Err(Error::InvalidField(_))
    ));
}

fn signed_notification(fields: &[(&str, &str)], sign_type: SignType, key: &str) -> Vec<u8> {
    let mut p = params::from_pairs(fields.iter().copied()).expect("fields");
    let s = sign::sign(&p, sign_type, &ApiKey::new(key.into()).expect("key"));
    p.insert("sign".into(), s);
    xml::write(&p).expect("writable").into_bytes()
}

const PAID: &[(&str, &str)] = &[
    ("return_code", "SUCCESS"),
    ("result_code", "SUCCESS"),
    ("appid", "wx2421b1c4370ec43b"),
    ("mch_id", "10000100"),
    ("nonce_str", "abc"),
    ("out_trade_no", "WX0001"),
    ("transaction_id", "4200000001"),
    ("total_fee", "100"),
    ("time_end", "20260101120000"),
];

fn expected() -> ExpectedOrder {
    ExpectedOrder {
        out_trade_no: "WX0001".into(),
        total_fee: 100,
        fee_type: None,
        sign_type: None,
    }
}

#[test]
fn notifications_are_checked_field_by_field() {
    let m = merchant(SignType::Md5);
    let ok = signed_notification(PAID, SignType::Md5, KEY);
    let notice = m
        .verify_payment_notification(&ok, Some(&expected()))
        .expect("genuine");
    assert!(notice.paid);
    assert_eq!(notice.total_fee, 100);

    let forged = signed_notification(PAID, SignType::Md5, "00000000000000000000000000000000");
    assert_eq!(
        m.verify_payment_notification(&forged, None),
        Err(Error::SignatureMismatch(SignType::Md5))
    );

    let unsigned = xml::write(&params::from_pairs(PAID.iter().copied()).expect("p")).expect("w");
    assert_eq!(
        m.verify_payment_notification(unsigned.as_bytes(), None),
        Err(Error::SignatureMissing)
    );

    let tampered = String::from_utf8(ok)
        .expect("utf8")
        .replace("<total_fee>100<", "<total_fee>1<");
    assert_eq!(
        m.verify_payment_notification(tampered.as_bytes(), None),
        Err(Error::SignatureMismatch(SignType::Md5))
    );

    let mut cheap: Vec<(&str, &str)> = PAID.to_vec();
    cheap.retain(|(k, _)| *k != "total_fee");
    cheap.push(("total_fee", "1"));
    let cheap = signed_notification(&cheap, SignType::Md5, KEY);
    assert!(
        matches!(m.verify_payment_notification(&cheap, Some(&expected())), Err(Error::AmountMismatch(x)) if x.found == "1")
    );

    for (field, value) in [("appid", "wx0000000000000000"), ("mch_id", "99999999")] {
        let mut other: Vec<(&str, &str)> =
            PAID.iter().copied().filter(|(k, _)| *k != field).collect();
        other.push((field, value));
        let body = signed_notification(&other, SignType::Md5, KEY);
        assert!(
            matches!(m.verify_payment_notification(&body, None), Err(Error::WrongMerchant(x)) if x.field == field)
        );
    }

    let mut other_order: Vec<(&str, &str)> = PAID
        .iter()
        .copied()
        .filter(|(k, _)| *k != "out_trade_no")
        .collect();
    other_order.push(("out_trade_no", "WX0002"));
    let body = signed_notification(&other_order, SignType::Md5, KEY);
    assert!(matches!(
        m.verify_payment_notification(&body, Some(&expected())),
        Err(Error::OrderMismatch(_))
    ));

    let mut bad_amount: Vec<(&str, &str)> = PAID
        .iter()
        .copied()
        .filter(|(k, _)| *k != "total_fee")
        .collect();
    bad_amount.push(("total_fee", "1.00"));
    let body = signed_notification(&bad_amount, SignType::Md5, KEY);
    assert!(
        matches!(m.verify_payment_notification(&body, None), Err(Error::InvalidField(f)) if f.field == "total_fee")
    );
}

#[test]
fn the_message_cannot_choose_its_algorithm() {
    let hmac_merchant = merchant(SignType::HmacSha256);
    let mut md5_declared: Vec<(&str, &str)> = PAID.to_vec();
    md5_declared.push(("sign_type", "MD5"));
    let body = signed_notification(&md5_declared, SignType::Md5, KEY);
    assert!(matches!(
        hmac_merchant.verify_payment_notification(&body, None),
        Err(Error::SignTypeMismatch(_))
    ));
    // Without sign_type, an MD5 signature still fails against an HMAC merchant.
    let body = signed_notification(PAID, SignType::Md5, KEY);
    assert_eq!(
        hmac_merchant.verify_payment_notification(&body, None),
        Err(Error::SignatureMismatch(SignType::HmacSha256))
    );
    // The order's recorded algorithm overrides the merchant's default.
    let md5_order = ExpectedOrder {
        sign_type: Some(SignType::Md5),
        ..expected()
    };
    assert!(
        hmac_merchant
            .verify_payment_notification(&body, Some(&md5_order))
            .is_ok()
    );
}

/// Verifying without the order and then checking the notice against it
/// decides exactly as verifying with the order does, for every way the
/// order can differ; and an order placed with the other algorithm is
/// never settled by a notice verified with the merchant's.
#[test]
fn checking_a_verified_notice_later_decides_as_verifying_with_the_order() {
    let m = merchant(SignType::Md5);
    let body = signed_notification(PAID, SignType::Md5, KEY);
    let notice = m.verify_payment_notification(&body, None).expect("genuine");
    let orders = [
        expected(),
        ExpectedOrder {
            total_fee: 99,
            ..expected()
        },
        ExpectedOrder {
            out_trade_no: "WX0002".into(),
            ..expected()
        },
        ExpectedOrder {
            fee_type: Some("USD".into()),
            ..expected()
        },
        ExpectedOrder {
            sign_type: Some(SignType::Md5),
            ..expected()
        },
    ];
    for order in &orders {
        assert_eq!(
            m.check_payment_notice(&notice, order),
            m.verify_payment_notification(&body, Some(order)).map(drop),
            "{order:?}"
        );
    }
    assert!(m.check_payment_notice(&notice, &orders[0]).is_ok());
    assert!(matches!(
        m.check_payment_notice(&notice, &orders[1]),
        Err(Error::AmountMismatch(_))
    ));

    let hmac_order = ExpectedOrder {
        sign_type: Some(SignType::HmacSha256),
        ..expected()
    };
    assert!(matches!(
        m.check_payment_notice(&notice, &hmac_order),
        Err(Error::SignTypeMismatch(x)) if x.expected == "HMAC-SHA256" && x.found == "MD5"
    ));
    assert!(
        m.verify_payment_notification(&body, Some(&hmac_order))
            .is_err()
    );
}

#[test]
fn return_code_fail_is_reported_not_trusted() {
    let m = merchant(SignType::Md5);
    let body =
        "<xml><return_code>FAIL</return_code><return_msg><![CDATA[签名错误]]></return_msg></xml>"
            .as_bytes();
    assert_eq!(
        m.verify_payment_notification(body, None),
        Err(Error::ReturnFailed("签名错误".into()))
    );
    assert_eq!(
        m.verify_response(body, SignType::Md5),
        Err(Error::ReturnFailed("签名错误".into()))
    );
}

#[test]
fn refund_notifications_fail_closed() {
    let m = merchant(SignType::Md5);
    let outer = |req_info: &str| {
        format!(
            "<xml><return_code>SUCCESS</return_code><appid>wx2421b1c4370ec43b</appid><mch_id>10000100</mch_id><req_info>{req_info}</req_info></xml>"
        )
    };
    let decrypt = |body: String| m.verify_refund_notification(body.as_bytes(), None);
    assert_eq!(
        decrypt(outer("not base64!")),
        Err(Error::DecryptFailed(DecryptReason::Base64))
    );
    assert_eq!(
        decrypt(outer("AAAA")),
        Err(Error::DecryptFailed(DecryptReason::BlockLength))
    );
    let k = ApiKey::new(KEY.into()).expect("key");
    let wrong = ApiKey::new("ffffffffffffffffffffffffffffffff".into()).expect("key");
    let inner = "<root><out_trade_no>WX0001</out_trade_no></root>";
    let by_other_key = wxpay_guest::refund_notify::encrypt_req_info(inner.as_bytes(), &wrong);
    assert!(matches!(
        decrypt(outer(&by_other_key)),
        Err(Error::DecryptFailed(_) | Error::XmlRejected(_))
    ));
    let nested = wxpay_guest::refund_notify::encrypt_req_info(b"<root><a><b/></a></root>", &k);
    assert!(
        matches!(decrypt(outer(&nested)), Err(Error::XmlRejected(e)) if e.reason == XmlReason::Nesting)
    );
    let incomplete = wxpay_guest::refund_notify::encrypt_req_info(inner.as_bytes(), &k);
    assert!(
        matches!(decrypt(outer(&incomplete)), Err(Error::InvalidField(f)) if f.field == "refund_status")
    );
    let no_req_info = "<xml><return_code>SUCCESS</return_code><appid>wx2421b1c4370ec43b</appid><mch_id>10000100</mch_id></xml>";
    assert_eq!(
        m.verify_refund_notification(no_req_info.as_bytes(), None),
        Err(Error::DecryptFailed(DecryptReason::Missing))
    );
}

#[test]
fn refund_outer_fields_never_override_decrypted_ones() {
    let m = merchant(SignType::Md5);
    let k = ApiKey::new(KEY.into()).expect("key");
    let inner = "<root><out_trade_no>WX0001</out_trade_no><transaction_id>42</transaction_id><out_refund_no>R1</out_refund_no><refund_id>50</refund_id><total_fee>100</total_fee><refund_fee>30</refund_fee><refund_status>SUCCESS</refund_status></root>";
    let body = format!(
        "<xml><return_code>SUCCESS</return_code><appid>wx2421b1c4370ec43b</appid><mch_id>10000100</mch_id><refund_fee>100</refund_fee><out_trade_no>EVIL</out_trade_no><req_info>{}</req_info></xml>",
        wxpay_guest::refund_notify::encrypt_req_info(inner.as_bytes(), &k)
    );
    let notice = m
        .verify_refund_notification(body.as_bytes(), None)
        .expect("genuine");
    assert_eq!(notice.refund_fee, 30);
    assert_eq!(notice.out_trade_no, "WX0001");
    assert!(!notice.fields.contains_key("req_info"));
}

#[test]
fn errors_and_debug_never_show_the_key() {
    let m = merchant(SignType::HmacSha256);
    assert!(!format!("{m:?}").contains(KEY));
    let body = signed_notification(PAID, SignType::Md5, KEY);
    let e = m
        .verify_payment_notification(&body, None)
        .expect_err("wrong algorithm");
    assert!(!format!("{e} {e:?}").contains(KEY));
    let findings = m
        .diagnose_signature(&xml::parse(&body).expect("p"))
        .expect("diagnose");
    assert!(findings[0].contains("valid with MD5"), "{findings:?}");
    assert!(!findings.concat().contains(KEY));
    let explained =
        wxpay_guest::explain::explain(&xml::parse(&body).expect("p"), SignType::HmacSha256);
    assert!(explained.redacted_string_to_sign.ends_with("&key=***"));
    assert!(!explained.likely_causes.concat().contains(KEY));
    assert!(
        matches!(ApiKey::new("has space".into()), Err(Error::InvalidField(f)) if f.field == "api_key")
    );
}

#[test]
fn explanations_name_the_likely_cause() {
    use wxpay_guest::explain::explain;
    let notice = xml::parse(&signed_notification(PAID, SignType::Md5, KEY)).expect("p");
    let causes = explain(&notice, SignType::Md5).likely_causes.concat();
    assert!(!causes.contains("appId"), "{causes}");
    assert!(!causes.contains("sign-type mismatch"), "{causes}");

    let jsapi = params::from_pairs([
        ("appid", "wx1"),
        ("timestamp", "1601234567"),
        ("nonceStr", "n"),
        ("package", "prepay_id=wx1"),
        ("signType", "MD5"),
        ("sign", "c52d6b09e8a039d6e8696a014bb37160"),
    ])
    .expect("p");
    let e = explain(&jsapi, SignType::HmacSha256);
    assert_eq!(e.sign_looks_like, Some(SignType::Md5));
    let causes = e.likely_causes.concat();
    for expected in [
        "`timestamp` should be `timeStamp`",
        "`appid` should be `appId`",
        "lower-case hex",
        "sign-type mismatch",
        "declares sign_type=MD5",
    ] {
        assert!(
            causes.contains(expected),
            "missing {expected:?} in {causes}"
        );
    }
    let encoded =
        params::from_pairs([("body", "%E8%85%BE"), ("attach", " x"), ("sign", "AB")]).expect("p");
    let causes = explain(&encoded, SignType::Md5).likely_causes.concat();
    assert!(
        causes.contains("URL-encoded")
            && causes.contains("surrounding whitespace")
            && causes.contains("2 characters long"),
        "{causes}"
    );
}
