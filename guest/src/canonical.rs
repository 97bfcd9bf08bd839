//! Canonicalization: the string WeChat Pay signs.
//!
//! The rules (official "签名算法" page): every field with a non-empty value,
//! except `sign`, sorted by name byte-wise, joined as `k=v&k=v`. Values are
//! raw UTF-8: not trimmed, not URL-encoded. `sign_type` is signed when it is
//! sent, and unknown fields are signed too, because WeChat may add fields at
//! any time and signs over all of them.

use alloc::string::String;

use crate::params::Params;

/// The field that carries the signature and is never signed itself.
pub const SIGN_FIELD: &str = "sign";

/// The canonical string of `params`.
pub fn canonicalize(params: &Params) -> String {
    let mut out = String::with_capacity(canonical_len_hint(params));
    for (name, value) in signed_fields(params) {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// The fields that take part in the signature, in signing order.
pub fn signed_fields(params: &Params) -> impl Iterator<Item = (&str, &str)> {
    params
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .filter(|&(name, value)| is_signed(name, value))
}

/// Whether a field takes part in the signature: any but `sign`, when not empty.
pub fn is_signed(name: &str, value: &str) -> bool {
    name != SIGN_FIELD && !value.is_empty()
}

fn canonical_len_hint(params: &Params) -> usize {
    params.iter().map(|(k, v)| k.len() + v.len() + 2).sum()
}
