//! The sandbox: the signing component running inside wasmtime.
//!
//! Why a sandbox at all? The protocol core holds the merchant key and reads
//! hostile input (notification bodies from the open internet). Running it
//! as a component gives three guarantees a library cannot:
//!
//! - **Capability-free by construction.** The linker provides only the
//!   WASI interfaces Rust's std needs on wasip2 (`wasi:io`, `wasi:cli`) —
//!   see [`imports`]. A build of the component that imported sockets,
//!   HTTP, files, clocks or randomness would fail to instantiate, and
//!   [`imports::check`] refuses it with a clear error before that.
//! - **Bounded.** Each instance has a memory cap and a time budget per
//!   call, so a pathological input ends in an error, not a stalled or
//!   bloated host.
//! - **Portable.** The same bytes run under Python and Node, so agents in
//!   any language share one verified core.
//!
//! The component is compiled once per [`Engine`](engine::Sandbox) and
//! instantiated cheaply per use through an `InstancePre`.

pub mod bindings;
pub mod engine;
pub mod imports;
pub mod signer;

pub use engine::{CallBudget, EMBEDDED_COMPONENT, Sandbox, SandboxLimits};
pub use signer::{MerchantHandle, SignerInstance};
