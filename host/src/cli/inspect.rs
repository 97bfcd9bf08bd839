//! `wxpay inspect`: what exactly is the component this binary runs?

use std::path::PathBuf;

use clap::Args;
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;

use super::ComponentArgs;
use crate::error::Error;
use crate::sandbox::engine::EMBEDDED_COMPONENT;
use crate::sandbox::imports::{ALLOWED_INTERFACES, FORBIDDEN_PREFIXES, import_names, unversioned};

#[derive(Debug, Args)]
pub(super) struct InspectArgs {
    #[command(flatten)]
    component: ComponentArgs,
    /// Also write the component's bytes to this file (for Python, Node or wasm-tools).
    #[arg(long, value_name = "FILE")]
    write_component: Option<PathBuf>,
}

pub(super) fn run(args: &InspectArgs) -> Result<(), Error> {
    let sandbox = args.component.sandbox()?;
    let engine = sandbox.engine();
    let component = sandbox.component();
    outln!("component: {}", args.component.label());
    outln!("size: {} bytes", sandbox.size());
    outln!("sha256: {}", hex::encode(sandbox.sha256()));

    let imports = import_names(engine, component);
    outln!("imports ({}):", imports.len());
    for name in &imports {
        let verdict = if ALLOWED_INTERFACES.contains(&unversioned(name)) {
            "allowed"
        } else {
            "FORBIDDEN"
        };
        outln!("  {name}  [{verdict}]");
    }
    let forbidden: Vec<&str> = FORBIDDEN_PREFIXES
        .iter()
        .copied()
        .filter(|p| imports.iter().any(|i| i.starts_with(p)))
        .collect();
    if forbidden.is_empty() {
        outln!("network, filesystem, clocks, random: none imported");
    } else {
        outln!("forbidden families imported: {}", forbidden.join(", "));
    }

    outln!("exports:");
    for (name, item) in component.component_type().exports(engine) {
        outln!("  {name}");
        print_instance_exports(engine, &item.ty)?;
    }
    if let Some(path) = &args.write_component {
        let bytes = match &args.component.component {
            Some(src) => {
                std::fs::read(src).map_err(|e| Error::input(src.display().to_string(), e))?
            }
            None => EMBEDDED_COMPONENT.to_vec(),
        };
        std::fs::write(path, bytes).map_err(|e| Error::input(path.display().to_string(), e))?;
        outln!("wrote {}", path.display());
    }
    Ok(())
}

fn print_instance_exports(engine: &Engine, item: &ComponentItem) -> Result<(), Error> {
    let ComponentItem::ComponentInstance(instance) = item else {
        return Ok(());
    };
    for (name, export) in instance.exports(engine) {
        let kind = match export.ty {
            ComponentItem::ComponentFunc(_) => "func",
            ComponentItem::Resource(_) => "resource",
            ComponentItem::Type(_) => "type",
            _ => "other",
        };
        if kind != "type" {
            outln!("    {kind} {name}");
        }
    }
    Ok(())
}
