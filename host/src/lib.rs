//! # wxpay: the host
//!
//! The process that holds the merchant key and runs the signing component
//! (`guest/`, contract `wit/signer.wit`) inside wasmtime. This crate is
//! organised by the stages the data passes through:
//!
//! - [`sandbox`]: the component under wasmtime — engine policy, the allowed
//!   imports, and a typed handle on an instance.
//! - [`key`]: reading the key from a private file or the environment.
//! - [`wechat`]: the HTTP client to WeChat Pay: timeouts, identical-body
//!   retries, client certificates, replies verified by the component.
//! - [`store`]: durable state — orders, refunds, notifications, audit log.
//! - [`gateway`]: the sequence every money movement follows — validate and
//!   sign in the component, call WeChat, believe only what was verified,
//!   commit with compare-and-set, audit — plus reconciliation and the
//!   start-up self-check.
//! - [`callbacks`]: the axum server WeChat posts notifications to.
//! - [`config`]: `wxpay.toml`, which names where secrets are, never holds them.
//! - [`simulator`]: an offline WeChat Pay v2 server to develop and test against.
//! - [`cli`]: the operator commands (`serve`, `order`, `notifications`,
//!   `verify-notification`, `config`, `inspect`, `sign`, `verify`,
//!   `explain`, `simulate`).
//!
//! Only [`sandbox`], [`key`], [`error`] and [`fuzzing`] are built without the
//! default `gateway` feature: the fuzz targets need the component under
//! wasmtime, not the server around it, and build in half the crates.

pub mod error;
pub mod fuzzing;
pub mod key;
pub mod sandbox;

/// Items built only with the `gateway` feature (on by default).
macro_rules! with_gateway {
    ($($item:item)*) => { $(#[cfg(feature = "gateway")] $item)* };
}

with_gateway! {
    pub mod agents;
    pub mod bench;
    pub mod callbacks;
    pub mod cli;
    pub mod config;
    pub mod console;
    pub mod demo;
    pub mod gateway;
    mod listen;
    pub mod mcp;
    pub mod metrics;
    pub mod pkcs12;
    pub mod simulator;
    pub mod store;
    pub mod wechat;
}

pub use error::Error;
