//! Hostile inputs through the component: each gets its typed error across
//! the boundary, and limits turn runaway inputs into errors, not a stalled
//! or bloated host.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use wxpay::Error;
use wxpay::sandbox::bindings::merchant_api::ExpectedOrder;
use wxpay::sandbox::bindings::types::{self, SignType, XmlReason};
use wxpay::sandbox::signer::MerchantSettings;
use wxpay::sandbox::{CallBudget, MerchantHandle, Sandbox, SandboxLimits, SignerInstance};

#[path = "support/mod.rs"]
mod support;

const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

fn settings() -> MerchantSettings {
    MerchantSettings {
        appid: "wx2421b1c4370ec43b".into(),
        mch_id: "10000100".into(),
        sign_type: SignType::Md5,
        sub_appid: None,
        sub_mch_id: None,
        sandbox: false,
    }
}

fn merchant(signer: &mut SignerInstance) -> MerchantHandle {
    signer
        .merchant(&settings(), &support::key(KEY))
        .expect("merchant")
}

/// Why `parse-xml` refuses `body`; `read-field` must refuse it the same way.
fn xml_reason(signer: &mut SignerInstance, body: &[u8]) -> XmlReason {
    let reason = match signer.parse_xml(body, None) {
        Err(Error::Guest(types::Error::XmlRejected(e))) => e.reason,
        other => panic!("expected an XML rejection, got {other:?}"),
    };
    match signer.read_field(body, "a", None) {
        Err(Error::Guest(types::Error::XmlRejected(e))) => assert_eq!(e.reason, reason),
        other => panic!("read-field: expected an XML rejection, got {other:?}"),
    }
    reason
}

#[test]
fn hostile_xml_gets_typed_reasons_through_the_component() {
    let mut s = support::sandbox().instantiate().expect("instance");
    let xxe =
        br#"<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><a>&xxe;</a></xml>"#;
    assert_eq!(xml_reason(&mut s, xxe), XmlReason::Doctype);
    let laughs =
        br#"<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><xml><x>&b;</x></xml>"#;
    assert_eq!(xml_reason(&mut s, laughs), XmlReason::Doctype);
    assert_eq!(
        xml_reason(&mut s, b"<xml><a>&unknown;</a></xml>"),
        XmlReason::Entity
    );
    assert_eq!(
        xml_reason(&mut s, b"<xml><a>\xc3\x28</a></xml>"),
        XmlReason::NotUtf8
    );
    assert_eq!(
        xml_reason(&mut s, b"<xml><a><b>1</b></a></xml>"),
        XmlReason::Nesting
    );
    let mut ten_mb = b"<xml><a>".to_vec();
    ten_mb.resize(10 << 20, b'a');
    assert_eq!(xml_reason(&mut s, &ten_mb), XmlReason::TooLarge);
    assert!(matches!(
        s.parse_xml(b"<xml><a>1</a><a>2</a></xml>", None),
        Err(Error::Guest(types::Error::DuplicateField(f))) if f == "a"
    ));
    assert!(matches!(
        s.read_field(b"<xml><a>1</a><a>2</a></xml>", "b", None),
        Err(Error::Guest(types::Error::DuplicateField(f))) if f == "a"
    ));
    let body = b"<xml><out_trade_no>T1</out_trade_no><attach></attach></xml>";
    assert_eq!(
        s.read_field(body, "out_trade_no", None).expect("reads"),
        Some("T1".into())
    );
    assert_eq!(s.read_field(body, "attach", None).expect("reads"), None);
    assert_eq!(s.read_field(body, "openid", None).expect("reads"), None);
}

fn notification(fields: &[(&str, &str)], key: &str, signer: &mut SignerInstance) -> Vec<u8> {
    let pairs: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let signing = signer
        .merchant(&settings(), &support::key(key))
        .expect("merchant");
    let sign = signer.sign(&signing, &pairs, None).expect("sign");
    signer.drop_merchant(signing).expect("drop");
    let mut with_sign = pairs;
    with_sign.push(("sign".into(), sign));
    signer.write_xml(&with_sign).expect("xml").into_bytes()
}

#[test]
fn forged_and_mismatched_notifications_are_refused_through_the_component() {
    let mut s = support::sandbox().instantiate().expect("instance");
    let m = merchant(&mut s);
    let paid = |appid: &'static str, mch: &'static str, fee: &'static str| {
        vec![
            ("return_code", "SUCCESS"),
            ("result_code", "SUCCESS"),
            ("appid", appid),
            ("mch_id", mch),
            ("nonce_str", "n"),
            ("out_trade_no", "WX0001"),
            ("transaction_id", "4200000001"),
            ("total_fee", fee),
        ]
    };
    let expected = ExpectedOrder {
        out_trade_no: "WX0001".into(),
        total_fee: 100,
        fee_type: None,
        sign_type: None,
    };
    let verify = |s: &mut SignerInstance, body: &[u8]| {
        s.verify_payment_notification(&m, body, Some(&expected))
    };

    let genuine = notification(&paid("wx2421b1c4370ec43b", "10000100", "100"), KEY, &mut s);
    assert!(verify(&mut s, &genuine).expect("genuine").paid);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            notification(
                &paid("wx2421b1c4370ec43b", "10000100", "100"),
                "ffffffffffffffffffffffffffffffff",
                &mut s,
            ),
            "signature-mismatch",
        ),
        (
            notification(&paid("wx2421b1c4370ec43b", "10000100", "1"), KEY, &mut s),
            "amount-mismatch",
        ),
        (
            notification(&paid("wx0000000000000000", "10000100", "100"), KEY, &mut s),
            "wrong-merchant",
        ),
        (
            notification(&paid("wx2421b1c4370ec43b", "99999999", "100"), KEY, &mut s),
            "wrong-merchant",
        ),
        (
            String::from_utf8(genuine)
                .expect("utf8")
                .replace("<sign>", "<signx>")
                .replace("</sign>", "</signx>")
                .into_bytes(),
            "signature-missing",
        ),
    ];
    for (body, want) in cases {
        match verify(&mut s, &body) {
            Err(Error::Guest(e)) => assert_eq!(support::case_name(&e), want),
            other => panic!("{want}: got {other:?}"),
        }
    }
    s.drop_merchant(m).expect("drop");
}

#[test]
fn memory_and_fuel_limits_end_in_errors_and_the_host_survives() {
    let tight = SandboxLimits {
        max_memory_bytes: 4 << 20,
        ..SandboxLimits::default()
    };
    let sandbox = Sandbox::from_bytes(wxpay::sandbox::EMBEDDED_COMPONENT, tight).expect("loads");
    let mut s = sandbox.instantiate().expect("instance");
    let huge = vec![b'a'; 16 << 20];
    assert!(matches!(
        s.parse_xml(&huge, Some(u32::MAX)),
        Err(Error::Trap(_))
    ));
    assert!(
        matches!(s.canonicalize(&Vec::new()), Err(Error::Trap(_))),
        "a trapped instance stays poisoned"
    );
    let mut fresh = sandbox.instantiate().expect("a new instance works");
    assert_eq!(
        fresh
            .canonicalize(&vec![("a".into(), "1".into())])
            .expect("ok"),
        "a=1"
    );

    let starved = SandboxLimits {
        budget: CallBudget::Fuel(50_000),
        ..SandboxLimits::default()
    };
    let sandbox = Sandbox::from_bytes(wxpay::sandbox::EMBEDDED_COMPONENT, starved).expect("loads");
    let mut s = sandbox.instantiate().expect("instance");
    let body = format!(
        "<xml>{}</xml>",
        (0..2000)
            .map(|i| format!("<f{i}>v</f{i}>"))
            .collect::<String>()
    );
    assert!(matches!(
        s.parse_xml(body.as_bytes(), Some(u32::MAX)),
        Err(Error::Trap(_))
    ));
}

#[test]
fn a_call_past_its_deadline_traps_and_other_instances_work() {
    let hurried = SandboxLimits {
        budget: CallBudget::Deadline(std::time::Duration::from_millis(50)),
        ..SandboxLimits::default()
    };
    let sandbox = Sandbox::from_bytes(wxpay::sandbox::EMBEDDED_COMPONENT, hurried).expect("loads");
    let mut s = sandbox.instantiate().expect("instance");
    let mut fresh = sandbox.instantiate().expect("a second instance");
    // Instances keep their deadlines after the sandbox that made them is gone.
    drop(sandbox);
    // About 3 MB of fields: parsing them takes several times the 50 ms
    // deadline, and needs far less than the memory cap.
    let body = format!(
        "<xml>{}</xml>",
        (0..200_000)
            .map(|i| format!("<f{i}>v</f{i}>"))
            .collect::<String>()
    );
    let started = std::time::Instant::now();
    match s.parse_xml(body.as_bytes(), Some(u32::MAX)) {
        Err(Error::Trap(reason)) => assert!(reason.contains("interrupt"), "{reason}"),
        other => panic!("expected a trap, got {:?}", other.map(|p| p.len())),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        fresh
            .canonicalize(&vec![("a".into(), "1".into())])
            .expect("small calls finish well inside the deadline"),
        "a=1"
    );
}

#[test]
fn key_material_never_appears_in_errors_or_debug_output() {
    let mut s = support::sandbox().instantiate().expect("instance");
    let key = support::key(KEY);
    assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    let m = merchant(&mut s);
    let bad = notification(
        &[("return_code", "SUCCESS"), ("appid", "x"), ("mch_id", "y")],
        KEY,
        &mut s,
    );
    let e = s
        .verify_payment_notification(&m, &bad, None)
        .expect_err("wrong merchant");
    assert!(!format!("{e} {e:?}").contains(KEY));
    let pairs = vec![
        ("a".to_owned(), "1".to_owned()),
        ("sign".to_owned(), "0".repeat(64)),
    ];
    let findings = s
        .diagnose_signature(&m, &pairs)
        .expect("diagnosis")
        .concat();
    assert!(!findings.contains(KEY));
    let explanation = s
        .explain_signature(&pairs, SignType::Md5)
        .expect("explanation");
    assert_eq!(explanation.redacted_string_to_sign, "a=1&key=***");
    let bad_key = support::key("has a space");
    let refused = s.merchant(&settings(), &bad_key).expect_err("bad key");
    assert!(!format!("{refused} {refused:?}").contains("has a space"));
    s.drop_merchant(m).expect("drop");
}
