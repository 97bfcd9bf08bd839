//! Builds the signing component (`guest/`) for `wasm32-wasip2` and hands
//! its path to the host, which embeds the bytes with `include_bytes!`.
//!
//! The nested cargo uses its own target directory (so it never waits on the
//! outer build's lock), the `guest` profile (small, `panic = "abort"`), and
//! a clean environment: the outer build's RUSTFLAGS are for the host target
//! and clippy's wrapper must not leak into the guest build.
//!
//! `WXPAY_GUEST_WASM=/path/to/component.wasm` skips the nested build and
//! embeds that file instead.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "guest";
const ARTIFACT: &str = "wxpay_guest";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ sits in the workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo::rerun-if-env-changed=WXPAY_GUEST_WASM");

    let wasm = match env::var_os("WXPAY_GUEST_WASM") {
        Some(prebuilt) => {
            let prebuilt = PathBuf::from(prebuilt);
            println!("cargo::rerun-if-changed={}", prebuilt.display());
            prebuilt
        }
        None => build_guest(&root),
    };
    let embedded = out_dir.join("wxpay_signer.wasm");
    if let Err(e) = fs::copy(&wasm, &embedded) {
        fail(&format!(
            "cannot copy the component {} to {}: {e}",
            wasm.display(),
            embedded.display()
        ));
    }
}

fn build_guest(root: &Path) -> PathBuf {
    ensure_wasm_target();
    let target_dir = guest_target_dir(root);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--package",
            "wxpay-guest",
            "--lib",
            "--target",
            TARGET,
            "--profile",
            PROFILE,
        ])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MAKEFLAGS")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "building the guest component failed ({s}); the errors are above"
        )),
        Err(e) => fail(&format!(
            "cannot run cargo to build the guest component: {e}"
        )),
    }
    let artifacts = target_dir.join(TARGET).join(PROFILE);
    emit_rerun_from_dep_info(&artifacts.join(format!("{ARTIFACT}.d")), root);
    for path in ["guest/Cargo.toml", "wit", "Cargo.lock", "Cargo.toml"] {
        println!("cargo::rerun-if-changed={}", root.join(path).display());
    }
    artifacts.join(format!("{ARTIFACT}.wasm"))
}

/// `<target>/guest-build`, beside the outer build's own directories.
fn guest_target_dir(root: &Path) -> PathBuf {
    let outer = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let outer = if outer.is_absolute() {
        outer
    } else {
        root.join(outer)
    };
    outer.join("guest-build")
}

/// Installs the wasm target with rustup when it is missing, or stops with
/// one sentence saying what to run.
fn ensure_wasm_target() {
    if wasm_target_installed() {
        return;
    }
    println!(
        "cargo::warning=the {TARGET} target is missing; installing it with `rustup target add {TARGET}`"
    );
    let installed = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !installed || !wasm_target_installed() {
        fail(&format!(
            "the Rust target {TARGET} is not installed and could not be installed automatically: run `rustup target add {TARGET}` and build again"
        ));
    }
}

fn wasm_target_installed() -> bool {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output();
    match output {
        Ok(o) if o.status.success() => {
            let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Path::new(&dir).join("libstd.rlib").exists()
                || fs::read_dir(&dir).is_ok_and(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
                })
        }
        _ => false,
    }
}

/// Reruns this script when any workspace file the guest was built from changes.
fn emit_rerun_from_dep_info(dep_info: &Path, root: &Path) {
    let Ok(text) = fs::read_to_string(dep_info) else {
        return;
    };
    let Some((_, deps)) = text.split_once(": ") else {
        return;
    };
    let mut current = String::new();
    let mut chars = deps.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                current.push(' ');
                chars.next();
            }
            ' ' | '\n' | '\r' => flush_dep(&mut current, root),
            c => current.push(c),
        }
    }
    flush_dep(&mut current, root);
}

fn flush_dep(current: &mut String, root: &Path) {
    if !current.is_empty() && Path::new(current.as_str()).starts_with(root) {
        println!("cargo::rerun-if-changed={current}");
    }
    current.clear();
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1);
}
