//! Engine policy: the on-disk compilation cache and the instance pool.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;

use wxpay::Error;
use wxpay::sandbox::engine::CacheOutcome;
use wxpay::sandbox::{EMBEDDED_COMPONENT, Sandbox, SandboxLimits};

fn canonical(sandbox: &Sandbox) -> String {
    let mut s = sandbox.instantiate().expect("instance");
    s.canonicalize(&vec![("b".into(), "2".into()), ("a".into(), "1".into())])
        .expect("canonicalize")
}

fn cache_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

#[test]
fn the_compiled_component_is_cached_and_untrusted_files_are_ignored() {
    let root = tempfile::tempdir().expect("dir");
    let dir = root.path().join("cache");
    let limits = SandboxLimits::default();
    let load = || Sandbox::cached(EMBEDDED_COMPONENT, limits, &dir).expect("loads");

    let (first, outcome) = load();
    assert_eq!(outcome, CacheOutcome::Miss);
    assert_eq!(canonical(&first), "a=1&b=2");
    let mode = std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let (second, outcome) = load();
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(canonical(&second), "a=1&b=2");

    // A corrupted artifact is ignored and rebuilt.
    let file = cache_file(&dir);
    std::fs::write(&file, b"not a compiled component").expect("corrupt");
    assert_eq!(load().1, CacheOutcome::Ignored);
    assert_eq!(load().1, CacheOutcome::Hit, "rebuilt");

    // A file others may write is never loaded.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (third, outcome) = load();
    assert_eq!(outcome, CacheOutcome::Ignored);
    assert_eq!(canonical(&third), "a=1&b=2");

    // Nor is anything in a directory others may write.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    assert_eq!(load().1, CacheOutcome::Ignored);
    assert_eq!(load().1, CacheOutcome::Ignored);
}

#[test]
fn instances_come_from_a_bounded_pool() {
    let limits = SandboxLimits {
        pool_instances: 2,
        ..SandboxLimits::default()
    };
    let sandbox = Sandbox::from_bytes(EMBEDDED_COMPONENT, limits).expect("loads");
    let a = sandbox.instantiate().expect("first");
    let b = sandbox.instantiate().expect("second");
    assert!(
        matches!(sandbox.instantiate(), Err(Error::Component(_))),
        "the pool holds two"
    );
    drop(a);
    let mut c = sandbox.instantiate().expect("a slot was freed");
    assert_eq!(
        c.canonicalize(&vec![("x".into(), "1".into())])
            .expect("works"),
        "x=1"
    );
    drop(b);
}
