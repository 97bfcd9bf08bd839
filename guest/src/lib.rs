//! # wxpay-guest: the WeChat Pay v2 protocol core
//!
//! This crate is the part of wxpay that agents may run and that must never
//! be wrong: canonicalization, MD5 / HMAC-SHA256 signing, verification of
//! replies and payment notifications, refund-notification decryption,
//! JSAPI/APP client parameters, and order validation. It is built twice:
//!
//! - natively, as an ordinary library, for unit tests, property tests,
//!   fuzzing, and the simulator (which plays WeChat's side);
//! - for `wasm32-wasip2`, as a component whose contract is `wit/signer.wit`.
//!   The component glue is the one file [`component`] (wasm only).
//!
//! The core does no I/O and reads no clock and no randomness: nonces and
//! times are arguments. That keeps it deterministic, testable with
//! known-answer vectors, and importable by a sandbox that links only
//! `wasi:io` and `wasi:cli` (the baseline Rust's std needs on wasip2).
//! `BTreeMap` rather than `HashMap` keeps `wasi:random` out too — and gives
//! the byte-wise order canonicalization needs for free.
//!
//! The merchant key enters through [`merchant::MerchantConfig`], lives in a
//! zeroizing buffer inside [`sign::ApiKey`], is fed to the hash in pieces so
//! no string ever holds it, and has no getter.
//!
//! ```
//! use wxpay_guest::{params, sign::{self, ApiKey, SignType}};
//! let p = params::from_pairs([("appid", "wxd930ea5d5a258f4f"), ("mch_id", "10000100"),
//!     ("device_info", "1000"), ("body", "test"), ("nonce_str", "ibuaiVcKdpRxkhJA")]).unwrap();
//! let key = ApiKey::new("192006250b4c09247ec02edce69f6a2d".into()).unwrap();
//! assert_eq!(sign::sign(&p, SignType::Md5, &key), "9A0A8659F005D6984697E2CA0A9CF3B7");
//! ```

extern crate alloc;

pub mod canonical;
pub mod client;
pub mod error;
pub mod explain;
pub mod fields;
pub mod fuzzing;
pub mod merchant;
pub mod notify;
pub mod order;
pub mod packed;
pub mod params;
pub mod refund_notify;
pub mod request;
pub mod response;
pub mod sign;
mod text;
pub mod xml;

// The generated bindings declare exported symbols and use raw pointers;
// that is the only unsafe code in the crate, and none of it is written here.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component;

pub use error::{Error, Result};
pub use merchant::{Merchant, MerchantConfig};
pub use params::Params;
pub use sign::{ApiKey, SignType};

/// The component's allocator: dlmalloc's Rust port, the one Rust's std uses
/// on `wasm32-unknown-unknown`. On wasip2, std's default passes every
/// allocation through two more calls (`__rdl_alloc`, then wasi-libc's
/// `malloc`, in front of the same dlmalloc algorithm) and every free through
/// two more, about a quarter of what an allocation cost in all. The boundary
/// allocates once per string (`cabi_realloc`), so that is paid per field.
/// It takes memory with `memory.grow` alone: the component imports nothing
/// more.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;
