//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz).
//!
//! The targets are three lines each and call these functions, so fuzz code
//! compiles with the crate and cannot rot. Each function asserts the
//! properties that must hold for any input: no panic, and where the input
//! was accepted, consistency (written XML reads back the same, a signature
//! just made verifies, a decrypted notice matches its own fields).
//!
//! A panic here is the finding the fuzzer reports, so panics are allowed.
#![allow(clippy::panic)]

use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{Error, Rule};
use crate::merchant::{Merchant, MerchantConfig};
use crate::order::{self, OrderIntent, Policy, Product};
use crate::params::{self, Params};
use crate::sign::{ApiKey, SignType};
use crate::{canonical, notify, packed, refund_notify, xml};

const FUZZ_KEY: &str = "192006250b4c09247ec02edce69f6a2d";

fn merchant(sign_type: SignType) -> Merchant {
    let config = MerchantConfig {
        appid: "wxd930ea5d5a258f4f".into(),
        mch_id: "10000100".into(),
        api_key: ApiKey::new(FUZZ_KEY.into())
            .unwrap_or_else(|_| unreachable!("constant key is valid")),
        sign_type,
        sub_appid: None,
        sub_mch_id: None,
        sandbox: false,
    };
    Merchant::new(config).unwrap_or_else(|_| unreachable!("constant config is valid"))
}

/// Parses any bytes; accepted bodies must survive a write/read round trip,
/// and reading one field must agree with reading them all.
pub fn parse_xml(data: &[u8]) {
    let parsed = xml::parse(data);
    let one = xml::read_field(data, "out_trade_no", xml::ReadOptions::default());
    let expected_one = parsed
        .as_ref()
        .map(|params| params::non_empty(params, "out_trade_no").map(String::from));
    assert_eq!(
        one,
        expected_one.map_err(Clone::clone),
        "read_field disagrees with parse"
    );
    if let Ok(params) = parsed {
        let written =
            xml::write(&params).unwrap_or_else(|e| panic!("accepted params must write: {e}"));
        let reread = xml::parse_with(
            written.as_bytes(),
            xml::ReadOptions {
                max_bytes: usize::MAX,
                ..Default::default()
            },
        );
        assert_eq!(
            reread.as_ref(),
            Ok(&params),
            "write/read round trip changed the params"
        );
    }
}

/// Splits bytes into pairs; canonicalization must not depend on input order.
pub fn canonicalize(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let pairs: Vec<(String, String)> = text
        .split('\n')
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (String::from(k), String::from(v)))
        .collect();
    let forward = crate::params::from_pairs(pairs.iter().cloned());
    let backward = crate::params::from_pairs(pairs.into_iter().rev());
    match (forward, backward) {
        (Ok(a), Ok(b)) => assert_eq!(canonical::canonicalize(&a), canonical::canonicalize(&b)),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("order changed acceptance: {a:?} vs {b:?}"),
    }
}

/// Verifies any body as a payment notification, with both algorithms, and
/// checks that a re-signed copy of any accepted field set verifies, that
/// checking an accepted notice against an order decides as verifying with
/// that order does, and that a body refused without an order is refused
/// alike with any order that signs with the merchant's algorithm.
pub fn verify_payment_notification(data: &[u8]) {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let m = merchant(sign_type);
        match m.verify_payment_notification(data, None) {
            Ok(notice) => {
                assert!(!notice.out_trade_no.is_empty());
                check_later_decides_alike(&m, data, &notice);
            }
            Err(refusal) => assert_refusal_stands_with_an_order(&m, data, &refusal, "fuzz input"),
        }
        if let Ok(mut params) = xml::parse(data) {
            let sign = m.sign(&params, sign_type);
            params.insert("sign".into(), sign);
            assert!(
                m.verify(&params, sign_type).is_ok(),
                "a fresh signature must verify"
            );
        }
    }
    let _ = notify::nack(&String::from_utf8_lossy(data));
}

/// Asserts that `data`, refused when verified without an order, is refused
/// alike with an order signing with the merchant's algorithm, declared or
/// not: what lets the payment callback verify a refused body only once.
pub fn assert_refusal_stands_with_an_order(
    m: &Merchant,
    data: &[u8],
    refusal: &Error,
    label: &str,
) {
    for declared in [None, Some(m.sign_type())] {
        let order = notify::ExpectedOrder {
            out_trade_no: "WX0001".into(),
            total_fee: 1,
            fee_type: None,
            sign_type: declared,
        };
        assert_eq!(
            m.verify_payment_notification(data, Some(&order))
                .err()
                .as_ref(),
            Some(refusal),
            "{label}: a refusal without the order must stand with it"
        );
    }
}

fn check_later_decides_alike(m: &Merchant, data: &[u8], notice: &notify::PaymentNotice) {
    let own = notify::ExpectedOrder {
        out_trade_no: notice.out_trade_no.clone(),
        total_fee: notice.total_fee,
        fee_type: Some(notice.fee_type.clone()),
        sign_type: None,
    };
    let other_amount = notify::ExpectedOrder {
        total_fee: notice.total_fee.wrapping_add(1),
        ..own.clone()
    };
    for order in [own, other_amount] {
        assert_eq!(
            m.check_payment_notice(notice, &order),
            m.verify_payment_notification(data, Some(&order)).map(drop),
            "checking later must decide as verifying with the order"
        );
    }
}

/// Decrypts any text as `req_info`, and any body as a refund notification.
pub fn decrypt_refund(data: &[u8]) {
    let m = merchant(SignType::Md5);
    if let Ok(notice) = m.verify_refund_notification(data, None) {
        let own = refund_notify::ExpectedRefund {
            out_trade_no: notice.out_trade_no,
            out_refund_no: notice.out_refund_no,
            refund_fee: notice.refund_fee,
        };
        let other_amount = refund_notify::ExpectedRefund {
            refund_fee: own.refund_fee.wrapping_add(1),
            ..own.clone()
        };
        for refund in [own, other_amount] {
            assert_refund_checked_later_decides_alike(&m, data, &refund, "fuzz input");
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(plain) = refund_notify::decrypt_req_info(&text, m.key()) {
        let again = refund_notify::encrypt_req_info(&plain, m.key());
        assert_eq!(
            refund_notify::decrypt_req_info(&again, m.key()).ok(),
            Some(plain)
        );
    }
}

/// Asserts that decrypting `data` without a refund and checking the notice
/// against `expected` afterwards decides as decrypting with it.
pub fn assert_refund_checked_later_decides_alike(
    m: &Merchant,
    data: &[u8],
    expected: &refund_notify::ExpectedRefund,
    label: &str,
) {
    let later = m
        .verify_refund_notification(data, None)
        .and_then(|notice| m.check_refund_notice(&notice, expected));
    let at_once = m.verify_refund_notification(data, Some(expected)).map(drop);
    assert_eq!(
        later, at_once,
        "{label}: checking later must decide as decrypting with the refund"
    );
}

/// Validates an intent built from the bytes against a fixed catalog: an
/// accepted order is priced from the catalog alone.
pub fn validate_order(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1f}');
    let mut next = || String::from(parts.next().unwrap_or_default());
    let intent = OrderIntent {
        product_id: next(),
        quantity: next().parse().unwrap_or(1),
        trade_type: next(),
        payer_openid: Some(next()).filter(|s| !s.is_empty()),
        client_ip: next(),
        idempotency_key: next(),
        note: Some(next()).filter(|s| !s.is_empty()),
        scene_info: Some(next()).filter(|s| !s.is_empty()),
    };
    let catalog = [
        Product {
            product_id: "tea".into(),
            name: "乌龙茶 Oolong".into(),
            unit_price_fen: 1_800,
            max_quantity: 10,
        },
        Product {
            product_id: "credits".into(),
            name: "Agent credits".into(),
            unit_price_fen: 100,
            max_quantity: 1_000,
        },
    ];
    if let Ok(order) = order::validate(&intent, &catalog, &Policy::default()) {
        let product = catalog
            .iter()
            .find(|p| p.product_id == order.product_id)
            .unwrap_or_else(|| panic!("accepted order names a catalog product"));
        assert_eq!(
            order.total_fee,
            product.unit_price_fen * u64::from(order.quantity)
        );
        assert!(order.body.len() <= order::MAX_BODY_BYTES);
        assert_eq!(order.out_trade_no.len(), 32);
    }
}

/// Parses params for a signature round trip used by the differential target.
pub fn params_from_lines(data: &[u8]) -> Option<Params> {
    let text = core::str::from_utf8(data).ok()?;
    crate::params::from_pairs(text.split('\n').filter_map(|l| l.split_once('='))).ok()
}

/// Differential check of canonicalization and signing: for any accepted
/// `k=v` lines, the crate's canonical string and both signatures must equal
/// a naive reimplementation that re-splits the raw lines, sorts them by
/// name bytes, builds the whole `k=v&...&key=K` string and hashes it with
/// the md-5 / hmac / sha2 crates directly.
pub fn sign_differential(data: &[u8]) {
    use hmac::{Hmac, KeyInit, Mac};
    use md5::{Digest, Md5};
    use sha2::Sha256;

    let Some(params) = params_from_lines(data) else {
        return;
    };
    // params_from_lines accepted the bytes, so they are UTF-8 with unique names.
    let text =
        core::str::from_utf8(data).unwrap_or_else(|_| unreachable!("accepted input is UTF-8"));
    let mut pairs: Vec<(&str, &str)> = text
        .split('\n')
        .filter_map(|line| line.split_once('='))
        .filter(|(name, value)| *name != "sign" && !value.is_empty())
        .collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut canonical = String::new();
    for (name, value) in &pairs {
        if !canonical.is_empty() {
            canonical.push('&');
        }
        canonical.push_str(name);
        canonical.push('=');
        canonical.push_str(value);
    }
    assert_eq!(
        canonical::canonicalize(&params),
        canonical,
        "canonical string differs"
    );

    let mut signed = canonical;
    if !signed.is_empty() {
        signed.push('&');
    }
    signed.push_str("key=");
    signed.push_str(FUZZ_KEY);

    let key =
        ApiKey::new(FUZZ_KEY.into()).unwrap_or_else(|_| unreachable!("constant key is valid"));
    let md5 = hex::encode_upper(Md5::digest(signed.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(FUZZ_KEY.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(signed.as_bytes());
    let hmac = hex::encode_upper(mac.finalize().into_bytes());
    let packed = packed::pack(text.split('\n').filter_map(|line| line.split_once('=')));
    for (sign_type, expected) in [(SignType::Md5, md5), (SignType::HmacSha256, hmac)] {
        assert_eq!(
            crate::sign::sign(&params, sign_type, &key),
            expected,
            "{sign_type} signature differs"
        );
        match &packed {
            Ok(packed) => assert_eq!(
                packed::sign_packed(packed, sign_type, &key).as_ref(),
                Ok(&expected),
                "{sign_type} packed signature differs"
            ),
            Err(e) => assert!(
                matches!(e, Error::InvalidField(f) if f.rule == Rule::ControlCharacter),
                "accepted params that do not pack for another reason: {e:?}"
            ),
        }
    }
    assert_packed_reads_alike(text, &key);
}

/// Any text read as packed fields: refused, or signed exactly as the same
/// fields in a map are.
fn assert_packed_reads_alike(text: &str, key: &ApiKey) {
    let Ok(fields) = packed::unpack(text) else {
        return;
    };
    let params = params::from_pairs(fields.iter().copied())
        .unwrap_or_else(|e| panic!("unpacked fields the map refuses: {e:?}"));
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        assert_eq!(
            packed::sign_packed(text, sign_type, key).as_ref(),
            Ok(&crate::sign::sign(&params, sign_type, key)),
            "packed text signs unlike its fields"
        );
    }
}
