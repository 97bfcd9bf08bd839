//! Rust bindings generated from `wit/signer.wit`. The WIT file carries the
//! documentation; the generated items repeat it where they can.
#![allow(missing_docs, unreachable_pub, clippy::use_self)]

wasmtime::component::bindgen!({
    world: "signer",
    path: "../wit",
});

pub use exports::wxpay::signer::keyless;
pub use exports::wxpay::signer::merchant_api;
pub use exports::wxpay::signer::types;

impl From<wxpay_guest::SignType> for types::SignType {
    fn from(t: wxpay_guest::SignType) -> Self {
        match t {
            wxpay_guest::SignType::Md5 => Self::Md5,
            wxpay_guest::SignType::HmacSha256 => Self::HmacSha256,
        }
    }
}

impl From<types::SignType> for wxpay_guest::SignType {
    fn from(t: types::SignType) -> Self {
        match t {
            types::SignType::Md5 => Self::Md5,
            types::SignType::HmacSha256 => Self::HmacSha256,
        }
    }
}
