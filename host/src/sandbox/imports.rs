//! The only imports the component may have, and the linker that provides
//! exactly those.
//!
//! Rust's std on `wasm32-wasip2` pulls in `wasi:io` (streams, poll, error)
//! and `wasi:cli` (environment, exit, stdio, terminals) even for a crate
//! that does no I/O. Nothing else is allowed: the component has no network,
//! filesystem, clock or random source, which is what lets it hold the key.

use wasmtime::Engine;
use wasmtime::component::{Component, HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
use wasmtime_wasi::p2::bindings::{cli, sync};

use super::engine::StoreState;
use crate::error::Error;

/// The allowed imports, without version: every one is what std needs.
pub const ALLOWED_INTERFACES: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stderr",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stderr",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
];

/// Interface families that must never appear.
pub const FORBIDDEN_PREFIXES: &[&str] = &[
    "wasi:sockets/",
    "wasi:http/",
    "wasi:filesystem/",
    "wasi:clocks/",
    "wasi:random/",
];

/// An import name without its `@version`.
pub fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(base, _)| base)
}

/// The component's import names, as declared.
pub fn import_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Refuses a component that imports anything outside [`ALLOWED_INTERFACES`].
pub fn check(engine: &Engine, component: &Component) -> Result<(), Error> {
    for name in import_names(engine, component) {
        if !ALLOWED_INTERFACES.contains(&unversioned(&name)) {
            return Err(Error::ForbiddenImport { name });
        }
    }
    Ok(())
}

struct Io;
impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

/// Adds exactly the allowed interfaces to the linker, backed by a WASI
/// context that inherits nothing: no environment, discarded stdio.
pub fn link_allowed(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<StoreState, Io>(linker, |s| {
        &mut s.table
    })?;
    sync::io::poll::add_to_linker::<StoreState, Io>(linker, |s| &mut s.table)?;
    sync::io::streams::add_to_linker::<StoreState, Io>(linker, |s| &mut s.table)?;
    cli::environment::add_to_linker::<StoreState, WasiCli>(linker, StoreState::cli)?;
    cli::exit::add_to_linker::<StoreState, WasiCli>(linker, StoreState::cli)?;
    cli::stdin::add_to_linker::<StoreState, WasiCli>(linker, StoreState::cli)?;
    cli::stdout::add_to_linker::<StoreState, WasiCli>(linker, StoreState::cli)?;
    cli::stderr::add_to_linker::<StoreState, WasiCli>(linker, StoreState::cli)?;
    cli::terminal_input::add_to_linker::<StoreState, WasiCli>(linker, StoreState::cli)?;
    cli::terminal_output::add_to_linker::<StoreState, WasiCli>(linker, StoreState::cli)?;
    cli::terminal_stdin::add_to_linker::<StoreState, WasiCli>(linker, StoreState::cli)?;
    cli::terminal_stdout::add_to_linker::<StoreState, WasiCli>(linker, StoreState::cli)?;
    cli::terminal_stderr::add_to_linker::<StoreState, WasiCli>(linker, StoreState::cli)?;
    Ok(())
}
