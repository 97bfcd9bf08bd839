//! The component imports exactly what Rust's std needs on wasip2 and
//! nothing else; a component that imports more is refused at load.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use std::collections::BTreeSet;

use wxpay::Error;
use wxpay::sandbox::imports::{ALLOWED_INTERFACES, FORBIDDEN_PREFIXES, import_names, unversioned};
use wxpay::sandbox::{Sandbox, SandboxLimits};

#[path = "support/mod.rs"]
mod support;

#[test]
fn the_embedded_component_imports_exactly_the_allowed_set() {
    let sandbox = support::sandbox();
    let names = import_names(sandbox.engine(), sandbox.component());
    let actual: BTreeSet<&str> = names.iter().map(|n| unversioned(n)).collect();
    let allowed: BTreeSet<&str> = ALLOWED_INTERFACES.iter().copied().collect();
    assert_eq!(actual, allowed);
    for name in &names {
        assert!(
            name.starts_with("wasi:io/") || name.starts_with("wasi:cli/"),
            "{name}"
        );
        assert!(
            !FORBIDDEN_PREFIXES.iter().any(|p| name.starts_with(p)),
            "{name}"
        );
    }
}

#[test]
fn the_component_exports_the_contract() {
    let sandbox = support::sandbox();
    let exports: Vec<String> = sandbox
        .component()
        .component_type()
        .exports(sandbox.engine())
        .map(|(name, _)| name.to_owned())
        .collect();
    assert_eq!(
        exports,
        [
            "wxpay:signer/types@0.1.0",
            "wxpay:signer/keyless@0.1.0",
            "wxpay:signer/merchant-api@0.1.0"
        ]
    );
}

fn component_importing(interface: &str) -> Vec<u8> {
    wat::parse_str(format!(r#"(component (import "{interface}" (instance)))"#))
        .expect("valid component text")
}

#[test]
fn components_with_other_imports_are_refused() {
    for interface in [
        "wasi:sockets/tcp@0.2.6",
        "wasi:http/outgoing-handler@0.2.6",
        "wasi:filesystem/preopens@0.2.6",
        "wasi:clocks/wall-clock@0.2.6",
        "wasi:random/random@0.2.6",
        "example:anything/else",
    ] {
        match Sandbox::from_bytes(&component_importing(interface), SandboxLimits::default()) {
            Err(Error::ForbiddenImport { name }) => assert_eq!(name, interface),
            Err(other) => panic!("{interface}: wrong error {other}"),
            Ok(_) => panic!("{interface}: accepted"),
        }
    }
}

#[test]
fn a_component_without_the_contract_is_refused() {
    let empty = wat::parse_str("(component)").expect("valid component text");
    assert!(matches!(
        Sandbox::from_bytes(&empty, SandboxLimits::default()),
        Err(Error::Component(_))
    ));
    assert!(matches!(
        Sandbox::from_bytes(b"not wasm", SandboxLimits::default()),
        Err(Error::Component(_))
    ));
}
