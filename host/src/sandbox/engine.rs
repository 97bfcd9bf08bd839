//! Engine policy: how the component is compiled, bounded and instantiated.
//!
//! One [`Sandbox`] per process: it owns the wasmtime `Engine`, the compiled
//! component and an `InstancePre` with imports already resolved, so that
//! each [`SignerInstance`](super::SignerInstance) costs only a store and an
//! instantiation. Every store gets a memory cap and a fuel budget per call:
//! fuel, rather than epochs, because it is deterministic (the same input
//! always stops at the same point, which makes limits testable) and because
//! the component makes no host calls that could block.

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, OptLevel, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{Signer, SignerPre};
use super::imports;
use crate::error::Error;

/// The component built from `guest/` by `build.rs`.
pub static EMBEDDED_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wxpay_signer.wasm"));

/// Bounds for each instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Largest linear memory, in bytes.
    pub max_memory_bytes: usize,
    /// Fuel granted before each call (about one unit per wasm instruction).
    pub fuel_per_call: u64,
}

impl Default for SandboxLimits {
    /// 64 MiB and 2·10⁹ fuel: a 10 MiB body is refused well inside both,
    /// while a runaway loop ends in about a second.
    fn default() -> Self {
        Self {
            max_memory_bytes: 64 << 20,
            fuel_per_call: 2_000_000_000,
        }
    }
}

/// Per-store state: the (empty) WASI context and the limits.
pub struct StoreState {
    ctx: WasiCtx,
    pub(crate) table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// The compiled component, ready to instantiate.
pub struct Sandbox {
    engine: Engine,
    component: Component,
    pre: SignerPre<StoreState>,
    limits: SandboxLimits,
    sha256: [u8; 32],
    size: usize,
}

impl Sandbox {
    /// The embedded component with default limits.
    pub fn embedded() -> Result<Self, Error> {
        Self::from_bytes(EMBEDDED_COMPONENT, SandboxLimits::default())
    }

    /// Another build of the component (`--component FILE`). It is held to
    /// the same import policy as the embedded one.
    pub fn from_bytes(bytes: &[u8], limits: SandboxLimits) -> Result<Self, Error> {
        let engine = Engine::new(&engine_config()).map_err(Error::component)?;
        let component = Component::new(&engine, bytes).map_err(Error::component)?;
        imports::check(&engine, &component)?;
        let mut linker = Linker::new(&engine);
        imports::link_allowed(&mut linker).map_err(Error::component)?;
        let pre = SignerPre::new(
            linker
                .instantiate_pre(&component)
                .map_err(Error::component)?,
        )
        .map_err(Error::component)?;
        Ok(Self {
            engine,
            component,
            pre,
            limits,
            sha256: Sha256::digest(bytes).into(),
            size: bytes.len(),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiled component.
    pub fn component(&self) -> &Component {
        &self.component
    }

    /// SHA-256 of the component bytes.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The limits each instance gets.
    pub fn limits(&self) -> SandboxLimits {
        self.limits
    }

    /// A fresh instance with its own memory.
    pub fn instantiate(&self) -> Result<super::SignerInstance, Error> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.max_memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let state = StoreState {
            ctx: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store
            .set_fuel(self.limits.fuel_per_call)
            .map_err(Error::component)?;
        let bindings: Signer = self.pre.instantiate(&mut store).map_err(Error::component)?;
        Ok(super::SignerInstance::new(
            store,
            bindings,
            self.limits.fuel_per_call,
        ))
    }
}

fn engine_config() -> Config {
    let mut config = Config::new();
    config.cranelift_opt_level(OptLevel::Speed);
    config.consume_fuel(true);
    config.wasm_component_model(true);
    config
}
