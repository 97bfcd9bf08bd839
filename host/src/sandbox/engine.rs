//! Engine policy: how the component is compiled, bounded and instantiated.
//!
//! One [`Sandbox`] per process: it owns the wasmtime `Engine`, the compiled
//! component and an `InstancePre` with imports already resolved, so that
//! each [`SignerInstance`](super::SignerInstance) costs only a store and an
//! instantiation. Every store gets a memory cap and a budget per call
//! ([`CallBudget`]): by default a deadline enforced with wasmtime's epoch
//! interruption, which costs the guest a counter check at loop heads and
//! function entries; fuel instead counts every block, which made signing
//! and verifying 20–40 % slower (measured by `wxpay bench suite`). Fuel
//! stays available where its determinism matters — the same input always
//! stops at the same point — as in tests of the limits themselves.
//!
//! Instances come from a pooling allocator sized for this component (a
//! few MiB of memory each, [`SandboxLimits::pool_instances`] at once), so
//! instantiation reuses warm slots instead of mapping memory per request.
//!
//! Compiling the component takes tens of milliseconds; a gateway that
//! restarts often should not pay that each time. [`Sandbox::cached`] keeps
//! the compiled artifact on disk, named by a hash of the component bytes and
//! of wasmtime's own compatibility hash (its version and this exact
//! configuration), so a stale artifact is simply never looked up. Loading
//! compiled code is trusting it, so a cache file is used only if it sits in
//! a directory only we can write, is owned by us and not writable by
//! others; anything else is ignored and rebuilt, never trusted blindly.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Precompiled,
    Store, StoreLimits, StoreLimitsBuilder,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{Signer, SignerPre};
use super::imports;
use crate::error::Error;

/// The component built from `guest/` by `build.rs`.
pub static EMBEDDED_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wxpay_signer.wasm"));

/// How long one call into the component may run before it traps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallBudget {
    /// Wall-clock time, checked every [`EPOCH_TICK`] by epoch interruption:
    /// a call traps between its deadline and one tick later.
    Deadline(Duration),
    /// Fuel, about one unit per wasm instruction: deterministic, slower.
    Fuel(u64),
}

/// How often the engine's epoch advances when calls have deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

impl CallBudget {
    /// The deadline in epoch ticks, counting the tick in progress.
    fn ticks(duration: Duration) -> u64 {
        let ticks = duration.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) + 1;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// Grants the budget to `store` before a call.
    pub(crate) fn grant<T>(self, store: &mut Store<T>) -> Result<(), Error> {
        match self {
            Self::Deadline(duration) => {
                store.set_epoch_deadline(Self::ticks(duration));
                Ok(())
            }
            Self::Fuel(fuel) => store.set_fuel(fuel).map_err(Error::component),
        }
    }
}

/// Bounds for each instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Largest linear memory, in bytes.
    pub max_memory_bytes: usize,
    /// What each call may spend.
    pub budget: CallBudget,
    /// Instances that may exist at once (the pooling allocator's size).
    /// Zero turns the pool off: each instance maps its memory when it is
    /// created (wasmtime's on-demand allocator), with no limit on how many.
    pub pool_instances: u32,
}

impl Default for SandboxLimits {
    /// 64 MiB and one second per call: a 10 MiB body is refused well
    /// inside both, while a runaway loop ends in about a second.
    fn default() -> Self {
        Self {
            max_memory_bytes: 64 << 20,
            budget: CallBudget::Deadline(Duration::from_secs(1)),
            pool_instances: 64,
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

/// Advances `engine`'s epoch every [`EPOCH_TICK`] for as long as anything
/// (this sandbox, a compiled component, an instance's store) still holds
/// the engine, so a deadline keeps working for every instance it made.
fn start_epoch_ticker(engine: &Engine) -> Result<(), Error> {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("wxpay-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(drop)
        .map_err(|e| Error::Component(format!("cannot start the epoch thread: {e}")))
}

impl Sandbox {
    /// The embedded component with default limits.
    pub fn embedded() -> Result<Self, Error> {
        Self::from_bytes(EMBEDDED_COMPONENT, SandboxLimits::default())
    }

    /// Another build of the component (`--component FILE`). It is held to
    /// the same import policy as the embedded one.
    pub fn from_bytes(bytes: &[u8], limits: SandboxLimits) -> Result<Self, Error> {
        let engine = Engine::new(&engine_config(&limits)).map_err(Error::component)?;
        let component = Component::new(&engine, bytes).map_err(Error::component)?;
        Self::assemble(engine, component, bytes, limits)
    }

    /// Like [`Sandbox::from_bytes`], with the compiled artifact cached in
    /// `dir` (created with mode 0700 if missing). Says whether the cache was used.
    pub fn cached(
        bytes: &[u8],
        limits: SandboxLimits,
        dir: &Path,
    ) -> Result<(Self, CacheOutcome), Error> {
        let engine = Engine::new(&engine_config(&limits)).map_err(Error::component)?;
        let path = dir.join(format!("wxpay-signer-{}.cwasm", cache_key(&engine, bytes)));
        let (component, outcome) = match load_cached(&engine, dir, &path) {
            Some(component) => (component, CacheOutcome::Hit),
            None => {
                let outcome = if path.exists() {
                    CacheOutcome::Ignored
                } else {
                    CacheOutcome::Miss
                };
                let component = Component::new(&engine, bytes).map_err(Error::component)?;
                store_cached(&component, dir, &path);
                (component, outcome)
            }
        };
        Ok((Self::assemble(engine, component, bytes, limits)?, outcome))
    }

    fn assemble(
        engine: Engine,
        component: Component,
        bytes: &[u8],
        limits: SandboxLimits,
    ) -> Result<Self, Error> {
        imports::check(&engine, &component)?;
        let mut linker = Linker::new(&engine);
        imports::link_allowed(&mut linker).map_err(Error::component)?;
        let pre = SignerPre::new(
            linker
                .instantiate_pre(&component)
                .map_err(Error::component)?,
        )
        .map_err(Error::component)?;
        if let CallBudget::Deadline(_) = limits.budget {
            start_epoch_ticker(&engine)?;
        }
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
        self.limits.budget.grant(&mut store)?;
        let bindings: Signer = self.pre.instantiate(&mut store).map_err(Error::component)?;
        Ok(super::SignerInstance::new(
            store,
            bindings,
            self.limits.budget,
        ))
    }
}

fn engine_config(limits: &SandboxLimits) -> Config {
    let mut config = Config::new();
    config.cranelift_opt_level(OptLevel::Speed);
    match limits.budget {
        CallBudget::Deadline(_) => config.epoch_interruption(true),
        CallBudget::Fuel(_) => config.consume_fuel(true),
    };
    config.wasm_component_model(true);
    if std::env::var_os("WXPAY_PERF_MAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if limits.pool_instances > 0 {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config(limits)));
    }
    config
}

/// Bytes of each table zeroed in place when its instance goes, rather than
/// handed back to the kernel. The component's tables hold about a hundred
/// functions (under 2 KiB), so zeroing them costs less than the `madvise`
/// that would return their pages and the page faults that would bring them
/// back at the next instantiation: 34 → 27 µs an instantiation here.
const TABLE_KEEP_RESIDENT: usize = 16 * 1024;

fn pool_config(limits: &SandboxLimits) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(limits.pool_instances)
        .total_core_instances(limits.pool_instances.saturating_mul(4))
        .total_memories(limits.pool_instances.saturating_mul(2))
        .total_tables(limits.pool_instances.saturating_mul(2))
        .total_stacks(limits.pool_instances)
        .max_memory_size(limits.max_memory_bytes)
        .table_keep_resident(TABLE_KEEP_RESIDENT);
    pool
}

/// What [`Sandbox::cached`] did with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The compiled artifact was loaded from the cache.
    Hit,
    /// There was none; the component was compiled and the artifact written.
    Miss,
    /// A file was there but could not be trusted or loaded; it was rebuilt.
    Ignored,
}

/// SHA-256 over the component bytes and wasmtime's compatibility hash.
fn cache_key(engine: &Engine, bytes: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let mut sha = Sha256::new();
    sha.update(hasher.finish().to_le_bytes());
    sha.update(bytes);
    hex::encode(&sha.finalize()[..16])
}

/// Only files we own, in a directory only we can write, that nobody else
/// can write either.
#[cfg(unix)]
fn trusted(dir: &Path, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let uid = rustix::process::geteuid().as_raw();
    let private = |p: &Path, forbidden: u32| {
        std::fs::symlink_metadata(p).is_ok_and(|m| {
            m.uid() == uid && m.mode() & forbidden == 0 && !m.file_type().is_symlink()
        })
    };
    private(dir, 0o022) && private(path, 0o022)
}

#[cfg(not(unix))]
fn trusted(_dir: &Path, _path: &Path) -> bool {
    false
}

fn load_cached(engine: &Engine, dir: &Path, path: &Path) -> Option<Component> {
    if !trusted(dir, path) {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    if Engine::detect_precompiled(&bytes) != Some(Precompiled::Component) {
        return None;
    }
    // SAFETY: the bytes come from a file only this user can have written,
    // in a directory only this user can write, named by the hash of the
    // component and of this engine's configuration; wasmtime itself rejects
    // artifacts from another version or configuration with an error.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, &bytes) };
    component.ok()
}

/// Writes the artifact atomically; a cache that cannot be written is not an error.
fn store_cached(component: &Component, dir: &Path, path: &Path) {
    let Ok(bytes) = component.serialize() else {
        return;
    };
    if create_private_dir(dir).is_err() {
        return;
    }
    let temp: PathBuf = path.with_extension(format!("tmp{}", std::process::id()));
    if write_private(&temp, &bytes).is_ok() {
        let _ = std::fs::rename(&temp, path);
    }
    let _ = std::fs::remove_file(&temp);
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
