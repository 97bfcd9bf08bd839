//! A real Redis for the tests: one `redis-server` per test binary, on a
//! private Unix socket, with the durability the store demands (`appendonly
//! yes`, `appendfsync always`). Each test takes its own key prefix, so tests
//! run in parallel on one server without seeing each other's records.
//!
//! `WXPAY_TEST_REDIS_URL` points the tests at a server of your own instead.
//! Without either, the tests fail and say how to install one: nothing is
//! skipped.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use wxpay::bench::redis_server;
use wxpay::store::RedisStore;

/// The URL of the test server, starting it on first use.
pub fn url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("WXPAY_TEST_REDIS_URL").unwrap_or_else(|_| start(redis_server::DURABLE))
    })
}

/// Another server of this process's own, with `settings` (e.g. weaker
/// durability, which the shared server must never have even briefly).
pub fn start_with(settings: &[&str]) -> String {
    start(settings)
}

/// A prefix no other test in this process uses.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("test:{}:{n}:", std::process::id())
}

/// A store under a fresh prefix.
pub fn store() -> RedisStore {
    open(&unique_prefix())
}

/// A new connection to the records under `prefix`.
pub fn open(prefix: &str) -> RedisStore {
    RedisStore::open(url(), prefix).expect("open the Redis store")
}

fn start(settings: &[&str]) -> String {
    let binary = redis_server::find().unwrap_or_else(|| {
        panic!(
            "the Redis store tests need redis-server: install it (`apt-get install redis-server`, \
             as .ci/run does) or set WXPAY_TEST_REDIS_URL to a server with appendonly yes and \
             appendfsync always"
        )
    });
    redis_server::start(&binary, settings).unwrap_or_else(|e| panic!("{e}"))
}
