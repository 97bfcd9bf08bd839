//! The shape of the known-answer vector files in `tests/vectors/`, shared by
//! the native tests (`guest/tests`) and the component tests (`host/tests`)
//! through `#[path]`, so both read the files the same way.

#![allow(dead_code, unreachable_pub)]

use serde::Deserialize;

/// Reads `tests/vectors/<file>` and returns its `vectors` list.
pub fn load<T: for<'de> Deserialize<'de>>(file: &str) -> Vec<T> {
    let path = format!("{}/../tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut doc: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_value(doc["vectors"].take()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `signatures.json`.
#[derive(Debug, Deserialize)]
pub struct SignatureVector {
    pub id: String,
    pub params: Vec<(String, String)>,
    pub key: String,
    pub sign_type: String,
    pub canonical: String,
    pub sign: String,
}

/// `client_params.json`.
#[derive(Debug, Deserialize)]
pub struct ClientVector {
    pub id: String,
    pub kind: String,
    pub appid: String,
    pub mch_id: String,
    pub key: String,
    pub sign_type: String,
    pub prepay_id: String,
    pub nonce: String,
    pub timestamp: u64,
    pub expected: Vec<(String, String)>,
}

/// The merchant a notification vector is checked by.
#[derive(Debug, Deserialize)]
pub struct VectorMerchant {
    pub appid: String,
    pub mch_id: String,
    pub key: String,
    pub sign_type: String,
}

/// What a payment notification must be about.
#[derive(Debug, Deserialize)]
pub struct VectorExpectedOrder {
    pub out_trade_no: String,
    pub total_fee: u64,
}

/// What a refund notification must be about.
#[derive(Debug, Deserialize)]
pub struct VectorExpectedRefund {
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub refund_fee: u64,
}

/// `notifications.json`: `outcome` is `{"ok": {field: value}}` or `{"error": "<wit case>"}`.
#[derive(Debug, Deserialize)]
pub struct NotificationVector {
    pub id: String,
    pub kind: String,
    pub merchant: VectorMerchant,
    pub body: String,
    #[serde(default)]
    pub expected_order: Option<VectorExpectedOrder>,
    #[serde(default)]
    pub expected_refund: Option<VectorExpectedRefund>,
    pub outcome: Outcome,
}

/// The expected result of a notification vector.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok(serde_json::Map<String, serde_json::Value>),
    Error(String),
}

/// What a verifier returned for a notification vector: the decoded fields,
/// plus derived values (`paid`, parsed amounts) that are looked up first.
pub type Decoded<'a> = (Vec<(String, String)>, Vec<(&'a str, String)>);

/// Checks a verifier's result against the vector's outcome: every expected
/// field on success, or the error's WIT case name on failure.
pub fn check_outcome(id: &str, result: Result<Decoded<'_>, &str>, outcome: &Outcome) {
    match (result, outcome) {
        (Ok((fields, derived)), Outcome::Ok(expected)) => {
            for (name, want) in expected {
                let want = match want {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let got = derived
                    .iter()
                    .map(|(k, v)| (*k, v))
                    .chain(fields.iter().map(|(k, v)| (k.as_str(), v)))
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("{id}: no field {name}"));
                assert_eq!(got, want, "{id}: field {name}");
            }
        }
        (Err(case), Outcome::Error(want)) => assert_eq!(case, want, "{id}"),
        (result, _) => panic!("{id}: expected {outcome:?}, got {result:?}"),
    }
}
