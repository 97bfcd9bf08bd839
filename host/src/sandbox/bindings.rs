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
