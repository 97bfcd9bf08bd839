//! Explaining signature failures.
//!
//! "签名错误" is the most asked-about WeChat Pay error, and it has a short
//! list of causes (see the protocol notes §9): the wrong key, a sign-type
//! mismatch, values trimmed or re-encoded on one side only, non-UTF-8
//! bytes, camel-case slips in JSAPI fields, and sandbox vs production keys.
//! These functions look for the traces each cause leaves. The key-less one
//! shows the signed string with the key as `***`; the merchant one can also
//! test hypotheses with the key, and reports only yes or no.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::canonical::{SIGN_FIELD, canonicalize};
use crate::error::Result;
use crate::merchant::Merchant;
use crate::params::{Params, non_empty};
use crate::sign::{SignType, signatures_equal};

/// A diagnosis that needs no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The string that is hashed, with the key as `***`.
    pub redacted_string_to_sign: String,
    /// What the received sign's length suggests.
    pub sign_looks_like: Option<SignType>,
    /// Likely causes, most likely first.
    pub likely_causes: Vec<String>,
}

/// Diagnoses `params` (with its `sign`) against the algorithm `expected`.
pub fn explain(params: &Params, expected: SignType) -> Explanation {
    let canonical = canonicalize(params);
    let redacted = if canonical.is_empty() {
        String::from("key=***")
    } else {
        format!("{canonical}&key=***")
    };
    let received = non_empty(params, SIGN_FIELD).unwrap_or_default();
    let looks_like = SignType::guess_from_sign(received);
    let mut causes = Vec::new();
    if received.is_empty() {
        causes.push(String::from(
            "the message has no `sign` field: a forged or truncated message",
        ));
    }
    sign_type_causes(params, expected, received, looks_like, &mut causes);
    value_causes(params, &mut causes);
    causes.push(String::from(
        "wrong key kind: v2 signs with the 32-character APIv2 key, not the AppSecret or the APIv3 key, and the key must belong to this mch_id",
    ));
    causes.push(String::from(
        "sandbox vs production: /sandboxnew/ calls sign with the sandbox key from getsignkey (MD5 only); production calls with the APIv2 key",
    ));
    Explanation {
        redacted_string_to_sign: redacted,
        sign_looks_like: looks_like,
        likely_causes: causes,
    }
}

fn sign_type_causes(
    params: &Params,
    expected: SignType,
    received: &str,
    looks: Option<SignType>,
    causes: &mut Vec<String>,
) {
    if let Some(looks) = looks
        && looks != expected
    {
        causes.push(format!(
            "sign-type mismatch: the sign has {} hex digits, which is {looks}, but it was verified with {expected}",
            received.len()
        ));
    }
    if !received.is_empty() && looks.is_none() {
        causes.push(format!(
            "the sign is {} characters long; MD5 gives 32 and HMAC-SHA256 64 upper-case hex digits",
            received.len()
        ));
    }
    if received.bytes().any(|b| b.is_ascii_lowercase()) {
        causes.push(String::from(
            "the sign has lower-case hex digits; WeChat signs in upper case",
        ));
    }
    // JSAPI client parameters spell it `signType`.
    let declared = non_empty(params, "sign_type").or_else(|| non_empty(params, "signType"));
    match declared {
        Some(declared) if declared != expected.as_str() => causes.push(format!(
            "the message declares sign_type={declared} but was verified with {expected}"
        )),
        Some(_) => {}
        None if expected == SignType::HmacSha256 => causes.push(String::from(
            "no sign_type field: it must be sent (and signed) with HMAC-SHA256 requests; notifications may omit it",
        )),
        None => {}
    }
}

fn value_causes(params: &Params, causes: &mut Vec<String>) {
    for (name, value) in params.iter().filter(|(k, _)| k.as_str() != SIGN_FIELD) {
        if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
            causes.push(format!(
                "`{name}` has surrounding whitespace: some SDKs trim before signing and others do not"
            ));
        }
        if looks_url_encoded(value) {
            causes.push(format!(
                "`{name}` looks URL-encoded: values are signed raw, not encoded"
            ));
        }
        if ["&amp;", "&lt;", "&gt;", "&quot;", "&#"]
            .iter()
            .any(|e| value.contains(e))
        {
            causes.push(format!(
                "`{name}` holds an XML escape: it was escaped twice, or signed before unescaping"
            ));
        }
        if value.contains('\u{fffd}') {
            causes.push(format!(
                "`{name}` holds U+FFFD: the bytes were not UTF-8 (GBK?) somewhere"
            ));
        }
    }
    let jsapi = params
        .get("package")
        .is_some_and(|p| p.starts_with("prepay_id="));
    for camel in ["appId", "timeStamp", "nonceStr", "signType"] {
        let lower = camel.to_ascii_lowercase();
        if jsapi && params.contains_key(lower.as_str()) {
            causes.push(format!(
                "`{lower}` should be `{camel}` in JSAPI parameters (case-sensitive)"
            ));
        }
    }
}

fn looks_url_encoded(value: &str) -> bool {
    value
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

impl Merchant {
    /// Tests the usual hypotheses with this merchant's key; the answers are
    /// sentences, never the key or a signature computed with it.
    pub fn diagnose_signature(&self, params: &Params) -> Result<Vec<String>> {
        let received = non_empty(params, SIGN_FIELD).unwrap_or_default();
        let configured = self.config.sign_type;
        let mut findings = Vec::new();
        let matches = |p: &Params, t: SignType| signatures_equal(&self.sign(p, t), received);
        if received.is_empty() {
            findings.push(String::from("no `sign` field to check"));
        } else if matches(params, configured) {
            findings.push(format!(
                "the signature is valid with this merchant's key and {configured}"
            ));
        } else if matches(params, configured.other()) {
            findings.push(format!(
                "the signature is valid with {} but this merchant uses {configured}: align sign_type on both sides",
                configured.other()
            ));
        } else if matches(&trimmed(params), configured) {
            findings.push(String::from(
                "the signature is valid once values are trimmed: the signer trimmed whitespace the message still carries",
            ));
        } else if matches(
            &params
                .clone()
                .into_iter()
                .filter(|(k, _)| k != "sign_type")
                .collect(),
            configured,
        ) {
            findings.push(String::from(
                "the signature is valid without sign_type: the signer left sign_type out of the signed fields",
            ));
        } else {
            findings.push(String::from(
                "the signature does not match this merchant's key under either algorithm: a different key (AppSecret, APIv3, sandbox or another merchant's) or changed values",
            ));
        }
        findings.extend(explain(params, configured).likely_causes);
        Ok(findings)
    }
}

fn trimmed(params: &Params) -> Params {
    params
        .iter()
        .map(|(k, v)| (k.clone(), String::from(v.trim())))
        .collect()
}
