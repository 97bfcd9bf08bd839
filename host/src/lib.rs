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
//! - [`simulator`]: an offline WeChat Pay v2 server to develop and test against.
//! - [`cli`]: the operator commands (`inspect`, `sign`, `verify`, `explain`,
//!   `simulate`).
//!
//! Later stages (callbacks, the agent API) build on these.

pub mod cli;
pub mod error;
pub mod key;
pub mod sandbox;
pub mod simulator;
pub mod store;
pub mod wechat;

pub use error::Error;
