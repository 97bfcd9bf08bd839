//! The `wxpay` binary as operators run it.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

#[path = "support/mod.rs"]
mod support;

const KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const V1_JSON: &str = r#"{"appid":"wxd930ea5d5a258f4f","mch_id":"10000100","device_info":"1000","body":"test","nonce_str":"ibuaiVcKdpRxkhJA"}"#;

fn wxpay(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxpay"))
        .args(args)
        .env_remove("WXPAY_API_KEY")
        .env_remove("WXPAY_APPID")
        .env_remove("WXPAY_MCH_ID")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wxpay runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wxpay exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_no_key(out: &Output) {
    assert!(!text(&out.stdout).contains(KEY), "key on stdout");
    assert!(!text(&out.stderr).contains(KEY), "key on stderr");
}

#[test]
fn inspect_shows_no_network_filesystem_clock_or_random_import() {
    let dir = tempfile::tempdir().expect("dir");
    let copy = dir.path().join("wxpay-signer.wasm");
    let out = wxpay(
        &["inspect", "--write-component", copy.to_str().expect("utf8")],
        "",
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("imports (13):"), "{stdout}");
    assert!(
        stdout.contains("network, filesystem, clocks, random: none imported"),
        "{stdout}"
    );
    assert!(!stdout.contains("FORBIDDEN"));
    assert!(stdout.contains("func [static]merchant.create"));
    let bytes = std::fs::read(&copy).expect("component written");
    assert!(stdout.contains(&format!("size: {} bytes", bytes.len())));

    // The written copy loads through --component and reports the same hash.
    let again = wxpay(
        &["inspect", "--component", copy.to_str().expect("utf8")],
        "",
        &[],
    );
    let sha = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("sha256:"))
            .map(str::to_owned)
    };
    assert_eq!(sha(&text(&again.stdout)), sha(&stdout));
}

#[test]
fn sign_reads_the_key_from_a_private_file_or_the_environment() {
    let file = support::key_file(KEY, 0o600);
    let path = file.path().to_str().expect("utf8");
    let out = wxpay(&["sign", "--key-file", path], V1_JSON, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "9A0A8659F005D6984697E2CA0A9CF3B7");
    assert_no_key(&out);

    let out = wxpay(
        &["sign", "--sign-type", "hmac-sha256"],
        V1_JSON,
        &[("WXPAY_API_KEY", KEY)],
    );
    assert_eq!(
        text(&out.stdout).trim(),
        "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
    );
    assert_no_key(&out);

    let out = wxpay(&["sign", "--xml", "--key-file", path], V1_JSON, &[]);
    assert!(
        text(&out.stdout)
            .contains("<sign><![CDATA[9A0A8659F005D6984697E2CA0A9CF3B7]]></sign></xml>")
    );
}

#[test]
fn sign_refuses_a_readable_key_file_and_a_missing_key() {
    let file = support::key_file(KEY, 0o644);
    let out = wxpay(
        &["sign", "--key-file", file.path().to_str().expect("utf8")],
        V1_JSON,
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("chmod 600"),
        "{}",
        text(&out.stderr)
    );
    assert_no_key(&out);

    let out = wxpay(&["sign"], V1_JSON, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("WXPAY_API_KEY"));
}

#[test]
fn sign_reports_bad_params_with_field_and_rule() {
    let out = wxpay(
        &["sign"],
        r#"{"appid":"wx1","mch_id":"1","total_fee":1}"#,
        &[("WXPAY_API_KEY", KEY)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("params.total_fee"),
        "{}",
        text(&out.stderr)
    );
    let out = wxpay(
        &["sign"],
        "<xml><a>1</a><a>2</a></xml>",
        &[("WXPAY_API_KEY", KEY)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("field `a` appears more than once"),
        "{}",
        text(&out.stderr)
    );
}

fn notification_n1() -> String {
    #[derive(serde::Deserialize)]
    struct N {
        id: String,
        body: String,
    }
    #[path = "../../tests/support/vectors.rs"]
    mod vectors;
    let all: Vec<N> = vectors::load("notifications.json");
    all.into_iter().find(|n| n.id == "N1").expect("N1").body
}

#[test]
fn verify_accepts_a_genuine_notification_and_refuses_a_tampered_one() {
    let env = [("WXPAY_API_KEY", KEY)];
    let body = notification_n1();
    let out = wxpay(
        &["verify", "--out-trade-no", "1409811653", "--total-fee", "1"],
        &body,
        &env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON verdict");
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["transaction_id"], "1004400740201409030005092168");
    assert_no_key(&out);

    let out = wxpay(
        &[
            "verify",
            "--out-trade-no",
            "1409811653",
            "--total-fee",
            "100",
        ],
        &body,
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("total_fee"),
        "{}",
        text(&out.stderr)
    );

    let tampered = body.replace("<total_fee>1</total_fee>", "<total_fee>2</total_fee>");
    let out = wxpay(&["verify"], &tampered, &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("signature does not match"),
        "{}",
        text(&out.stderr)
    );

    let out = wxpay(
        &["explain", "--with-key", "--sign-type", "hmac-sha256"],
        &body,
        &env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("valid with MD5"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("&key=***"));
    assert_no_key(&out);

    let alias = wxpay(
        &["explain-signature", "--sign-type", "hmac-sha256"],
        &body,
        &env,
    );
    assert!(alias.status.success(), "{}", text(&alias.stderr));
    assert_eq!(
        text(&alias.stdout),
        text(&wxpay(&["explain", "--sign-type", "hmac-sha256"], &body, &env).stdout),
        "explain-signature is the operator's name for explain"
    );
}

#[test]
fn a_closed_output_pipe_ends_output_quietly() {
    for args in [&["inspect"][..], &["tools", "--format", "openai"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wxpay"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wxpay runs");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wxpay exits");
        assert!(
            !text(&out.stderr).contains("panicked"),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {:?}", out.status);
    }
}
