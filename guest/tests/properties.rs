//! Property tests of the core's invariants.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use proptest::prelude::*;
use wxpay_guest::{ApiKey, Error, Params, SignType, canonical, params, sign, xml};

fn field_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,20}"
}

/// Any value XML 1.0 can carry, with the awkward ones over-represented.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        "\\PC{0,30}",
        Just(String::new()),
        Just("]]>".to_owned()),
        Just("a]]>b]]]]>c".to_owned()),
        Just("<&>\"'".to_owned()),
        Just("腾讯充值中心-QQ会员充值".to_owned()),
        Just("line\r\nbreak\rcr\ttab\n".to_owned()),
        Just("&amp;&lt;".to_owned()),
    ]
}

fn unique_params() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map(field_name(), value(), 0..12).prop_map(|m| m.into_iter().collect())
}

fn key() -> ApiKey {
    ApiKey::new("192006250b4c09247ec02edce69f6a2d".into()).expect("key")
}

proptest! {
    #[test]
    fn canonicalization_is_order_independent(pairs in unique_params(), seed in any::<u64>()) {
        let mut shuffled = pairs.clone();
        // A deterministic shuffle driven by the seed.
        let n = shuffled.len();
        for i in (1..n).rev() {
            let j = (seed.rotate_left(i as u32) % (i as u64 + 1)) as usize;
            shuffled.swap(i, j);
        }
        let a = params::from_pairs(pairs).expect("unique names");
        let b = params::from_pairs(shuffled).expect("unique names");
        prop_assert_eq!(canonical::canonicalize(&a), canonical::canonicalize(&b));
    }

    #[test]
    fn canonicalization_skips_exactly_empty_values_and_sign(pairs in unique_params(), sign_value in value()) {
        let mut p = params::from_pairs(pairs).expect("unique names");
        p.insert("sign".into(), sign_value);
        let canonical = canonical::canonicalize(&p);
        let expected: Vec<String> = p
            .iter()
            .filter(|(k, v)| k.as_str() != "sign" && !v.is_empty())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        prop_assert_eq!(canonical, expected.join("&"));
    }

    #[test]
    fn xml_round_trips_any_value(pairs in unique_params()) {
        let p = params::from_pairs(pairs).expect("unique names");
        let written = xml::write(&p).expect("writable");
        let read = xml::parse_with(written.as_bytes(), xml::ReadOptions { max_bytes: usize::MAX, ..Default::default() });
        prop_assert_eq!(read, Ok(p));
    }

    /// Fields in any order, repeats included, read as inserting them one
    /// at a time in document order would: the same map, or the same
    /// duplicate refused (the reader keeps them as a list while they come
    /// in name order, and builds the map when one does not).
    #[test]
    fn xml_fields_in_any_order_read_as_inserted_one_by_one(
        pairs in prop::collection::vec(("[ab_]{1,3}", "[a-z0-9]{0,3}"), 0..10),
    ) {
        let body: String = pairs.iter().map(|(k, v)| format!("<{k}>{v}</{k}>")).collect();
        let read = xml::parse(format!("<xml>{body}</xml>").as_bytes());
        prop_assert_eq!(read, params::from_pairs(pairs));
    }

    #[test]
    fn sign_then_verify_and_any_one_char_change_fails(
        pairs in unique_params(),
        hmac in any::<bool>(),
        pick in any::<prop::sample::Index>(),
        replacement in "[a-z0-9]",
    ) {
        let sign_type = if hmac { SignType::HmacSha256 } else { SignType::Md5 };
        let mut p: Params = params::from_pairs(pairs).expect("unique names");
        p.insert("mch_id".into(), "10000100".into());
        let signature = sign::sign(&p, sign_type, &key());
        let mut signed = p.clone();
        signed.insert("sign".into(), signature.clone());
        prop_assert_eq!(sign::verify(&signed, sign_type, &key()), Ok(()));

        // Change one character of the canonical string (a name or a value).
        let canonical = canonical::canonicalize(&p);
        let chars: Vec<char> = canonical.chars().collect();
        let at = pick.index(chars.len());
        let mut changed: Vec<char> = chars;
        let new_char = replacement.chars().next().expect("one char");
        prop_assume!(changed[at] != new_char && changed[at] != '=' && changed[at] != '&');
        changed[at] = new_char;
        let changed: String = changed.into_iter().collect();
        let tampered: Option<Params> = changed
            .split('&')
            .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect::<Option<Vec<_>>>()
            .and_then(|pairs| params::from_pairs(pairs).ok());
        prop_assume!(tampered.is_some());
        let mut tampered = tampered.expect("checked");
        tampered.insert("sign".into(), signature.clone());
        prop_assert_eq!(sign::verify(&tampered, sign_type, &key()), Err(Error::SignatureMismatch(sign_type)));

        // Change one character of the signature itself.
        let mut bad_sign: Vec<char> = signature.chars().collect();
        let i = pick.index(bad_sign.len());
        bad_sign[i] = if bad_sign[i] == '0' { '1' } else { '0' };
        signed.insert("sign".into(), bad_sign.into_iter().collect());
        prop_assert_eq!(sign::verify(&signed, sign_type, &key()), Err(Error::SignatureMismatch(sign_type)));
    }

    #[test]
    fn refund_encryption_round_trips(plaintext in "\\PC{0,200}") {
        let k = key();
        let encrypted = wxpay_guest::refund_notify::encrypt_req_info(plaintext.as_bytes(), &k);
        let decrypted = wxpay_guest::refund_notify::decrypt_req_info(&encrypted, &k).expect("own ciphertext");
        prop_assert_eq!(decrypted, plaintext.into_bytes());
    }

    #[test]
    fn parser_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = xml::parse(&body);
    }

    #[test]
    fn parser_never_panics_on_xmlish_text(body in "(<|>|/|xml|a|!|\\[|CDATA|\\]|&|;|#|x|[0-9]| |\\?|=|\"){0,80}") {
        let _ = xml::parse(body.as_bytes());
    }
}
