//! A private `redis-server` for benchmarks and tests: on a Unix socket in
//! a fresh directory, with the durability the Redis store demands
//! (`appendonly yes`, `appendfsync always`) unless told otherwise.
//!
//! A small shell supervisor stops the server, and removes its files, when
//! the process that started it ends, however it ends: a benchmark killed
//! halfway leaves nothing running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Error;

/// The settings the Redis store requires.
pub const DURABLE: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

/// `redis-server` on `PATH` (or in `/usr/bin`, `/usr/sbin`), if installed.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// Starts `binary` with `settings` and returns its `redis+unix://` URL
/// once it accepts connections.
pub fn start(binary: &Path, settings: &[&str]) -> Result<String, Error> {
    let dir = tempfile::Builder::new()
        .prefix("wxpay-redis-")
        .tempdir()
        .map_err(|e| Error::input("redis-server: temp dir", e))?
        .keep();
    let socket = dir.join("redis.sock");
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
        .arg(binary)
        .arg(&dir)
        .arg(std::process::id().to_string())
        .args(settings)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::input("redis-server: start", e))?;
    // Kept so the child is reaped only when this process ends.
    static SUPERVISORS: Mutex<Vec<Child>> = Mutex::new(Vec::new());
    SUPERVISORS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(supervisor);
    wait_until_ready(&socket, &dir)?;
    Ok(format!("redis+unix://{}", socket.display()))
}

fn wait_until_ready(socket: &Path, dir: &Path) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    Err(Error::input(
        "redis-server",
        format!("did not start within 20 s; its log:\n{log}"),
    ))
}
