//! A real Redis for the tests: one `redis-server` per test binary, on a
//! private Unix socket, with the durability the store demands (`appendonly
//! yes`, `appendfsync always`). Each test takes its own key prefix, so tests
//! run in parallel on one server without seeing each other's records.
//!
//! `WXPAY_TEST_REDIS_URL` points the tests at a server of your own instead.
//! Without either, the tests fail and say how to install one: nothing is
//! skipped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use wxpay::store::RedisStore;

/// The URL of the test server, starting it on first use.
pub fn url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("WXPAY_TEST_REDIS_URL")
            .unwrap_or_else(|_| start(&["--appendonly", "yes", "--appendfsync", "always"]))
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
    let binary = redis_server();
    let dir = tempfile::Builder::new()
        .prefix("wxpay-redis-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let socket = dir.join("redis.sock");
    // A tiny supervisor: the server goes (and its files with it) when this
    // test process does, however it ends.
    let script = r#"
        binary=$1 dir=$2 parent=$3
        shift 3
        "$binary" --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --dir "$dir" \
             --save "" --logfile "$dir/redis.log" "$@" &
        server=$!
        while kill -0 "$parent" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.5; done
        kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$dir"
    "#;
    let supervisor = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&binary)
        .arg(&dir)
        .arg(std::process::id().to_string())
        .args(settings)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    // It outlives every test on purpose and ends by itself with the process.
    static SUPERVISORS: Mutex<Vec<Child>> = Mutex::new(Vec::new());
    SUPERVISORS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(supervisor);
    let url = format!("redis+unix://{}", socket.display());
    wait_until_ready(&socket, &dir);
    url
}

fn wait_until_ready(socket: &std::path::Path, dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    panic!("redis-server did not start within 20 s; its log:\n{log}");
}

fn redis_server() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the Redis store tests need redis-server: install it (`apt-get install redis-server`, \
             as .ci/run does) or set WXPAY_TEST_REDIS_URL to a server with appendonly yes and \
             appendfsync always"
        )
    })
}
