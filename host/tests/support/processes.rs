//! `wxpay` run as a process, as operators run it: the commands, `wxpay
//! serve` on the documented example config, and an in-process simulator
//! for it to talk to.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use wxpay::simulator::Simulator;
use wxpay::simulator::config::{Settings, SimulatorConfig};

/// The merchant key of the example config and the simulator.
pub const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

pub fn wxpay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wxpay"))
        .args(args)
        .env_remove("WXPAY_API_KEY")
        .env_remove("WXPAY_CONFIG")
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("wxpay-cli-test-cache"),
        )
        .output()
        .expect("wxpay runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(KEY) && !text(&out.stderr).contains(KEY));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// `wxpay ARGS -c CONFIG`.
pub fn with_config(config: &Path) -> impl Fn(&[&str]) -> Output + use<> {
    let c = config.to_str().expect("utf8").to_owned();
    move |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-c", c.as_str()]);
        wxpay(&all)
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// The documented example, pointed at this test's simulator, key and files.
pub fn config_file(dir: &Path, simulator: &str, port: u16) -> PathBuf {
    let key = dir.join("api_key");
    std::fs::write(&key, KEY).expect("key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let example = include_str!("../../../examples/wxpay.toml");
    let text = example
        .replace(
            "key_file = \"api_key\"",
            &format!("key_file = {:?}", key.display().to_string()),
        )
        .replace("http://127.0.0.1:8090", simulator)
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace(
            "sqlite = \"wxpay.db\"",
            &format!("sqlite = {:?}", dir.join("wxpay.db").display().to_string()),
        );
    let path = dir.join("wxpay.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// A simulator for the example config's merchant, on a free port.
pub async fn simulator() -> String {
    simulator_with(Settings::default()).await
}

/// Like [`simulator`], with other timing.
pub async fn simulator_with(settings: Settings) -> String {
    let mut config = SimulatorConfig::parse(&format!(
        "[[merchants]]\nappid = \"wxd930ea5d5a258f4f\"\nmch_id = \"10000100\"\napi_key = \"{KEY}\"\n"
    ))
    .expect("simulator config");
    config.settings = settings;
    let addr = Simulator::new(&config)
        .expect("simulator")
        .spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("spawn");
    format!("http://127.0.0.1:{}", addr.port())
}

/// Replaces `from` (which must be there) with `to` in the config file.
pub fn edit_config(config: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(config).expect("read config");
    assert!(text.contains(from), "{from:?} is not in the config");
    std::fs::write(config, text.replacen(from, to, 1)).expect("write config");
}

/// Points the config's store at Redis, under `prefix`.
pub fn use_redis(config: &Path, url: &str, prefix: &str) {
    let text = std::fs::read_to_string(config).expect("read config");
    let start = text.find("[store]").expect("a [store] section");
    let end = text[start..]
        .find("\n[reconcile]")
        .map_or(text.len(), |i| start + i);
    let store = format!("[store]\nredis = {url:?}\nkey_prefix = {prefix:?}\n");
    let edited = format!("{}{store}{}", &text[..start], &text[end..]);
    std::fs::write(config, edited).expect("write config");
}

/// A running `wxpay serve`, stopped with SIGTERM when dropped.
pub struct Served(Child);

impl Served {
    /// `kill -9`: no shutdown, no flush, nothing after this instant.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.0),
            rustix::process::Signal::TERM,
        );
        let _ = self.0.wait();
    }
}

pub fn serve(config: &Path) -> Served {
    serve_with(config, &[], Stdio::null())
}

/// `wxpay serve` with `extra` arguments, its log going to `stderr`.
pub fn serve_with(config: &Path, extra: &[&str], stderr: Stdio) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxpay"))
        .args(["serve", "--no-probe", "-c", config.to_str().expect("utf8")])
        .args(extra)
        .env_remove("WXPAY_API_KEY")
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("wxpay-cli-test-cache"),
        )
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("line");
    assert!(line.contains("listening on"), "{line}");
    Served(child)
}
