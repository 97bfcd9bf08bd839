//! `wxpay serve` and the operator commands, run as operators run them,
//! against the simulator.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use wxpay::config::GatewayConfig;

#[path = "support/mod.rs"]
mod support;

#[path = "support/fixture.rs"]
mod fixture;

use support::processes::{
    KEY, config_file, edit_config, free_port, json, serve, serve_with, simulator, text,
    with_config, wxpay,
};

#[test]
fn the_example_config_is_valid() {
    let config = GatewayConfig::parse(include_str!("../../examples/wxpay.toml"))
        .unwrap_or_else(|e| panic!("examples/wxpay.toml: {e}"));
    assert_eq!(config.products.len(), 3);
    assert_eq!(config.pay_notify_url(), "http://127.0.0.1:8080/notify/pay");
    assert_eq!(
        config.console_url(),
        "http://localhost:8080",
        "the console defaults to localhost on the listener that serves it"
    );
}

#[test]
fn config_errors_name_the_setting_and_the_rule() {
    let cases = [
        (
            "sign_type = \"HMAC-SHA256\"",
            "sign_type = \"SHA1\"",
            "merchant.sign_type must be MD5 or HMAC-SHA256",
        ),
        (
            "sandbox = false",
            "sandbox = true",
            "merchant.sign_type must be MD5 when wechat.sandbox = true",
        ),
        (
            "environment = \"custom\"",
            "environment = \"staging\"",
            "wechat.environment must be",
        ),
        (
            "max_attempts = 3",
            "max_attempts = 0",
            "wechat.max_attempts must be at least 1",
        ),
        ("batch = 100", "batch = 100\nsurprise = 1", "surprise"),
        (
            "# url = \"https://pay-admin.example.com\"",
            "url = \"http://pay-admin.example.com\"",
            "console.url must be https://, or http:// to localhost",
        ),
        (
            "session_minutes = 480",
            "session_minutes = 0",
            "console: session_minutes and invite_minutes must be at least 1",
        ),
    ];
    let example = include_str!("../../examples/wxpay.toml");
    for (from, to, message) in cases {
        assert!(example.contains(from), "{from}");
        let error = GatewayConfig::parse(&example.replace(from, to)).expect_err(to);
        assert!(error.contains(message), "{to}: {error}");
    }
}

#[test]
fn config_check_prints_the_effective_config_with_the_key_redacted() {
    let dir = tempfile::tempdir().expect("dir");
    let config = config_file(dir.path(), "http://127.0.0.1:9", 8080);
    let out = wxpay(&["config", "check", "-c", config.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("mch_id = \"10000100\""), "{stdout}");
    assert!(stdout.contains("api key: read from file"), "{stdout}");
    assert!(!stdout.contains(KEY) && !text(&out.stderr).contains(KEY));
    assert!(text(&out.stderr).contains("config ok (0 warning(s))"));
}

#[test]
fn serve_refuses_a_component_with_extra_imports() {
    let dir = tempfile::tempdir().expect("dir");
    let config = config_file(dir.path(), "http://127.0.0.1:9", free_port());
    let bad = dir.path().join("sockets.wasm");
    let component =
        wat::parse_str(r#"(component (import "wasi:sockets/tcp@0.2.6" (instance)))"#).expect("wat");
    std::fs::write(&bad, component).expect("write");
    let out = wxpay(&[
        "serve",
        "-c",
        config.to_str().expect("utf8"),
        "--component",
        bad.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("wasi:sockets/tcp@0.2.6") && stderr.contains("not allowed"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_receives_the_payment_and_operators_query_close_and_list() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let config = config_file(dir.path(), &sim, port);
    let run = with_config(&config);

    let served = serve(&config);
    let created = json(&run(&[
        "order",
        "create",
        "--product",
        "tea",
        "--quantity",
        "2",
        "--idempotency-key",
        "cli-1",
    ]));
    assert_eq!(created["state"], "pending");
    assert_eq!(
        created["total_fee"], 2400,
        "the price comes from the catalog"
    );
    let no = created["out_trade_no"].as_str().expect("no").to_owned();
    assert!(
        created["code_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("weixin://"))
    );

    let http = reqwest::Client::new();
    let paid = http
        .post(format!("{sim}/admin/pay"))
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"out_trade_no":"{no}"}}"#))
        .send()
        .await
        .expect("pay");
    assert!(paid.status().is_success());
    let mut state = String::new();
    for _ in 0..100 {
        state = json(&run(&["order", "show", &no]))["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if state == "paid" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "paid", "the callback reached `wxpay serve`");
    drop(served);

    let listed = run(&["notifications", "list"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listing = text(&listed.stdout);
    assert!(
        listing.contains(&no) && listing.contains("accepted"),
        "{listing}"
    );

    let queried = json(&run(&["order", "query", &no]));
    assert_eq!(queried["state"], "paid");

    // Paid while no gateway listens: `order query` learns it from WeChat.
    let second = json(&run(&[
        "order",
        "create",
        "--product",
        "tea",
        "--idempotency-key",
        "cli-2",
    ]));
    let second_no = second["out_trade_no"].as_str().expect("no").to_owned();
    let paid = http
        .post(format!("{sim}/admin/pay"))
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"out_trade_no":"{second_no}"}}"#))
        .send()
        .await
        .expect("pay");
    assert!(paid.status().is_success());
    assert_eq!(json(&run(&["order", "query", &second_no]))["state"], "paid");

    let third = json(&run(&[
        "order",
        "create",
        "--product",
        "tea",
        "--idempotency-key",
        "cli-3",
    ]));
    let third_no = third["out_trade_no"].as_str().expect("no").to_owned();
    let early = run(&["order", "close", &third_no]);
    assert_eq!(
        early.status.code(),
        Some(2),
        "WeChat refuses to close within 5 minutes"
    );
    assert!(
        text(&early.stderr).contains("closeorder"),
        "{}",
        text(&early.stderr)
    );
}

#[test]
fn verify_notification_checks_against_the_stored_order_and_changes_nothing() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sim = runtime.block_on(simulator());
    let dir = tempfile::tempdir().expect("dir");
    let config = config_file(dir.path(), &sim, free_port());
    let c = config.to_str().expect("utf8");
    let created = json(&wxpay(&[
        "order",
        "create",
        "--product",
        "tea",
        "--idempotency-key",
        "v-1",
        "-c",
        c,
    ]));
    let no = created["out_trade_no"].as_str().expect("no");

    let body =
        |total_fee| fixture::payment_notification(no, total_fee, "4200000000000000000000000777");
    let genuine = dir.path().join("genuine.xml");
    std::fs::write(&genuine, body(1200)).expect("write");
    let wrong_amount = dir.path().join("amount.xml");
    std::fs::write(&wrong_amount, body(1)).expect("write");

    let verified = json(&wxpay(&[
        "verify-notification",
        genuine.to_str().expect("utf8"),
        "-c",
        c,
    ]));
    assert_eq!(verified["verified"], true);
    assert_eq!(verified["fields"]["out_trade_no"], no);
    let refused = wxpay(&[
        "verify-notification",
        wrong_amount.to_str().expect("utf8"),
        "-c",
        c,
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("total_fee"),
        "{}",
        text(&refused.stderr)
    );
    let shown = json(&wxpay(&["order", "show", no, "-c", c]));
    assert_eq!(shown["state"], "pending", "verification changed nothing");
    drop(runtime);
}

#[test]
fn demo_runs_the_whole_flow_and_exits_zero() {
    let out = wxpay(&["demo"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for step in 1..=11 {
        assert!(
            stdout.contains(&format!("[{step}/11]")),
            "step {step} printed:\n{stdout}"
        );
    }
    for shown in [
        "status paid",
        "403 over_cap",
        "balance of demo-user: 1000 fen",
        "balance 565 fen",
        "402 insufficient_funds",
        "pending_approval",
        "succeeded (600 fen back to the payer)",
        "notification.refund",
        "demo complete: every step passed",
    ] {
        assert!(stdout.contains(shown), "{shown:?} in:\n{stdout}");
    }
    assert!(!stdout.contains(KEY) && !text(&out.stderr).contains(KEY));
}

#[test]
fn tools_prints_the_agent_tools_for_function_calling() {
    let openai = wxpay(&["tools", "--format", "openai"]);
    let listed: serde_json::Value = json(&openai);
    let names: Vec<_> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|t| {
            assert_eq!(t["type"], "function");
            assert_eq!(t["function"]["parameters"]["type"], "object");
            t["function"]["name"].as_str().expect("name").to_owned()
        })
        .collect();
    for name in [
        "list_products",
        "create_payment",
        "get_payment",
        "wait_for_payment",
        "request_refund",
        "get_balance",
        "charge",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    let schema: serde_json::Value = json(&wxpay(&["tools", "--format", "json-schema"]));
    let refund = schema
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["name"] == "request_refund")
        .expect("request_refund");
    assert_eq!(refund["annotations"]["destructiveHint"], true);
    let required = refund["input_schema"]["required"]
        .as_array()
        .expect("required");
    assert!(
        required.iter().any(|r| r == "idempotency_key"),
        "refunds need a key"
    );
}

#[test]
fn mcp_over_http_answers_initialize_and_refuses_to_start_without_a_token() {
    let out = wxpay(&["mcp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("WXPAY_AGENT_TOKEN"),
        "{}",
        text(&out.stderr)
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_wxpay"))
        .args(["mcp", "--http", "127.0.0.1:0"])
        .env("WXPAY_AGENT_TOKEN", "wxpa_test")
        .env("WXPAY_GATEWAY_URL", "http://127.0.0.1:9")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mcp --http");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("line");
    let url = line.trim().rsplit(' ').next().expect("url").to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "{line}"
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let reply = runtime.block_on(async {
        reqwest::Client::new()
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#)
            .send()
            .await
            .expect("initialize")
            .text()
            .await
            .expect("body")
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        reply.contains("\"serverInfo\"") && reply.contains("\"wxpay\""),
        "{reply}"
    );
    assert!(!reply.contains("wxpa_test"), "the token is not echoed");
}

/// `wxpay agents add bot` for tea, with a 10,000-fen cap; returns its token.
/// The example config with the agent API (and console and metrics) on a
/// listener of its own; returns the file and the public and private ports.
fn config_with_agent_listener(
    dir: &std::path::Path,
    simulator: &str,
) -> (std::path::PathBuf, u16, u16) {
    let (public, private) = (free_port(), free_port());
    let config = config_file(dir, simulator, public);
    edit_config(
        &config,
        "max_body_bytes = 65536\n",
        &format!("max_body_bytes = 65536\nagent_listen = \"127.0.0.1:{private}\"\n"),
    );
    (config, public, private)
}

/// An agent's payment intent for `quantity` teas; the reply's status and body.
fn place_tea(
    http: &reqwest::Client,
    port: u16,
    token: &str,
    quantity: u32,
    key: &str,
) -> impl Future<Output = (u16, serde_json::Value)> + use<> {
    let body =
        serde_json::json!({"product_id": "tea", "quantity": quantity, "idempotency_key": key});
    let request = http
        .post(format!("http://127.0.0.1:{port}/v1/payments"))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    async move {
        let reply = request.send().await.expect("pay");
        let status = reply.status().as_u16();
        let text = reply.text().await.expect("text");
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        (status, value)
    }
}

fn add_tea_agent(
    run: &impl Fn(&[&str]) -> std::process::Output,
    daily_budget_fen: &str,
    approval_threshold_fen: &str,
) -> String {
    let added = run(&[
        "agents",
        "add",
        "bot",
        "--products",
        "tea",
        "--cap-fen",
        "10000",
        "--daily-budget-fen",
        daily_budget_fen,
        "--approval-threshold-fen",
        approval_threshold_fen,
    ]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    text(&added.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_manage_agents_and_approvals_and_read_the_audit_log() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let config = config_file(dir.path(), &sim, port);
    let run = with_config(&config);
    let _served = serve(&config);
    let token = add_tea_agent(&run, "50000", "1000");
    assert!(
        token.starts_with("wxpa_"),
        "the token is printed once: {token}"
    );
    let duplicate = run(&[
        "agents",
        "add",
        "bot",
        "--products",
        "tea",
        "--cap-fen",
        "1",
        "--daily-budget-fen",
        "1",
    ]);
    assert_eq!(duplicate.status.code(), Some(2));

    let http = reqwest::Client::new();
    let api = |method: reqwest::Method, path: String, body: Option<serde_json::Value>| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let mut request = http
                .request(method, format!("http://127.0.0.1:{port}{path}"))
                .bearer_auth(token);
            if let Some(body) = body {
                request = request
                    .header("Content-Type", "application/json")
                    .body(body.to_string());
            }
            let response = request.send().await.expect("api");
            let status = response.status().as_u16();
            let value: serde_json::Value =
                serde_json::from_str(&response.text().await.expect("text")).expect("json");
            (status, value)
        }
    };
    let (_, big) = api(
        reqwest::Method::POST,
        "/v1/payments".into(),
        Some(serde_json::json!({"product_id": "tea", "idempotency_key": "a"})),
    )
    .await;
    assert_eq!(big["status"], "pending_approval", "{big}");
    let listed = json(&run(&["approvals", "list"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let id = listed[0]["id"].to_string();
    let approved = run(&["approvals", "approve", &id, "--by", "alice"]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    let (_, now) = api(
        reqwest::Method::GET,
        format!("/v1/payments/{}", big["payment_id"].as_str().expect("id")),
        None,
    )
    .await;
    assert_eq!(now["status"], "payment_pending", "{now}");

    let (_, second) = api(
        reqwest::Method::POST,
        "/v1/payments".into(),
        Some(serde_json::json!({"product_id": "tea", "quantity": 2, "idempotency_key": "b"})),
    )
    .await;
    let second_id = second["approval"]["id"].to_string();
    let denied = run(&[
        "approvals",
        "deny",
        &second_id,
        "--reason",
        "not today",
        "--by",
        "alice",
    ]);
    assert!(denied.status.success(), "{}", text(&denied.stderr));
    let (_, seen) = api(
        reqwest::Method::GET,
        format!(
            "/v1/payments/{}",
            second["payment_id"].as_str().expect("id")
        ),
        None,
    )
    .await;
    assert_eq!(
        (seen["status"].as_str(), seen["approval"]["reason"].as_str()),
        (Some("denied"), Some("not today"))
    );

    let revoked = run(&["agents", "revoke", "bot"]);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let (status, refused) = api(reqwest::Method::GET, "/v1/products".into(), None).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (401, Some("token_revoked"))
    );
    let agents = json(&run(&["agents", "list"]));
    assert!(agents[0]["revoked_at_ms"].is_i64(), "{agents}");
    assert_eq!(
        agents[0]["spent_24h_fen"], 1200,
        "the approved payment counts, the denied one does not"
    );

    let audit = run(&["audit"]);
    let log = text(&audit.stdout);
    for action in [
        "agent.add",
        "payment.create",
        "approval.approve",
        "approval.deny",
        "agent.revoke",
        "auth",
    ] {
        assert!(log.contains(action), "{action} in the audit log:\n{log}");
    }
    assert!(!log.contains(&token) && !log.contains(KEY));
}

/// A scripted flow through `wxpay serve --log-format json`: an agent pays,
/// asks for an approval and is refused over budget; WeChat pays and a
/// forged notification arrives. `/metrics` (on the private listener only)
/// counts each, and every log line is JSON, those about a payment carrying
/// its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_flow_and_json_logs_carry_the_payment_id() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().expect("dir");
    let (config, public, private) = config_with_agent_listener(dir.path(), &sim);
    let run = with_config(&config);
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let served = serve_with(&config, &["--log-format", "json"], log.into());
    let token = add_tea_agent(&run, "4000", "2000");
    let http = reqwest::Client::new();
    let pay = |quantity: u32, key: &str| place_tea(&http, private, &token, quantity, key);
    let (_, placed) = pay(1, "m-1").await;
    assert_eq!(placed["status"], "payment_pending", "{placed}");
    let no = placed["payment_id"].as_str().expect("id").to_owned();
    let (_, held) = pay(2, "m-2").await;
    assert_eq!(held["status"], "pending_approval", "{held}");
    let (status, refused) = pay(1, "m-3").await;
    assert_eq!(status, 403, "over budget: {refused}");

    let paid = http
        .post(format!("{sim}/admin/pay"))
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"out_trade_no":"{no}"}}"#))
        .send()
        .await
        .expect("pay");
    assert!(paid.status().is_success());
    let genuine = fixture::payment_notification(&no, 1_200, "4200000000000000000000000001");
    let forged = String::from_utf8(genuine).expect("utf8").replace(
        "4200000000000000000000000001",
        "4200000000000000000000000002",
    );
    let answer = http
        .post(format!("http://127.0.0.1:{public}/notify/pay"))
        .body(forged)
        .send()
        .await
        .expect("forged");
    assert!(answer.text().await.expect("text").contains("FAIL"));

    let scrape = || async {
        http.get(format!("http://127.0.0.1:{private}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text")
    };
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = scrape().await;
        if metrics.contains("verdict=\"accepted\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for line in [
        "wxpay_notifications_total{kind=\"payment\",verdict=\"accepted\",reason=\"none\"} 1",
        "wxpay_notifications_total{kind=\"payment\",verdict=\"rejected\",reason=\"signature\"} 1",
        "wxpay_callback_duration_seconds_count{kind=\"payment\",answer=\"ack\"} 1",
        "wxpay_callback_duration_seconds_count{kind=\"payment\",answer=\"refused\"} 1",
        "wxpay_wechat_calls_total{endpoint=\"/pay/unifiedorder\",err_code=\"SUCCESS\"} 1",
        "wxpay_guardrail_refusals_total{reason=\"over_budget\"} 1",
        "wxpay_approvals_total{kind=\"payment\",decision=\"requested\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }
    assert!(!metrics.contains(KEY) && !metrics.contains(&token));
    let public_scrape = http
        .get(format!("http://127.0.0.1:{public}/metrics"))
        .send()
        .await
        .expect("public");
    assert_eq!(
        public_scrape.status().as_u16(),
        404,
        "not on the public listener"
    );
    drop(served);

    let logged = std::fs::read_to_string(&log_path).expect("log");
    let lines: Vec<serde_json::Value> = logged
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let answered: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "notification answered")
        .collect();
    assert_eq!(answered.len(), 2, "{logged}");
    for line in &answered {
        assert_eq!(line["span"]["payment_id"], no.as_str(), "{line}");
    }
    for line in lines.iter().filter(|l| l.to_string().contains(&no)) {
        assert_eq!(line["span"]["payment_id"], no.as_str(), "{line}");
    }
    assert!(!logged.contains(KEY) && !logged.contains(&token));
}

#[test]
fn the_agent_api_can_listen_apart_from_the_public_callbacks() {
    let dir = tempfile::tempdir().expect("dir");
    let (public, private) = (free_port(), free_port());
    let config = config_file(dir.path(), "http://127.0.0.1:9", public);
    let text_config = std::fs::read_to_string(&config).expect("read");
    let split = text_config.replace(
        "max_body_bytes = 65536\n",
        &format!("max_body_bytes = 65536\nagent_listen = \"127.0.0.1:{private}\"\n"),
    );
    assert_ne!(split, text_config, "the example has the line to extend");
    std::fs::write(&config, split).expect("write");
    let _served = serve(&config);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let status = |port: u16, path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        runtime.block_on(async {
            let mut last = 0;
            for _ in 0..50 {
                match reqwest::Client::new()
                    .get(&url)
                    .bearer_auth("wxpa_unknown")
                    .send()
                    .await
                {
                    Ok(r) => return r.status().as_u16(),
                    Err(_) => last += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{url} never answered ({last} tries)");
        })
    };
    assert_eq!(status(public, "/healthz"), 200);
    assert_eq!(
        status(public, "/v1/products"),
        404,
        "no agent API on the public listener"
    );
    assert_eq!(
        status(private, "/v1/products"),
        401,
        "the agent API, on its own address"
    );
    assert_eq!(
        status(private, "/healthz"),
        404,
        "no callbacks on the private listener"
    );
}

#[test]
fn bench_load_drives_intents_and_notifications_on_sqlite_and_redis() {
    let redis = support::redis::url().to_owned();
    for store in [None, Some(redis.as_str())] {
        let mut args = vec![
            "bench",
            "load",
            "--intents",
            "40",
            "--duplicates",
            "1",
            "--concurrency",
            "4",
        ];
        if let Some(url) = store {
            args.extend(["--redis", url]);
        }
        let out = wxpay(&args);
        let report = text(&out.stdout);
        assert!(out.status.success(), "{report}\n{}", text(&out.stderr));
        for phase in [
            "intents (agent API)",
            "notifications (first)",
            "floor (ACK only)",
            "notifications (duplicate)",
        ] {
            let line = report
                .lines()
                .find(|l| l.starts_with(phase))
                .unwrap_or_else(|| panic!("no {phase} line in:\n{report}"));
            assert!(
                line.contains("40 ok") && line.contains("0 failed"),
                "{line}"
            );
            assert!(line.contains("p50") && line.contains("p999"), "{line}");
        }
        assert!(
            report.contains("all 40 orders are paid in the store"),
            "{report}"
        );
        let backend = if store.is_some() {
            "gateway on Redis"
        } else {
            "gateway on SQLite"
        };
        assert!(report.contains(backend), "{report}");
        assert!(!report.contains(KEY));
    }
    let refused = wxpay(&["bench", "load", "--rate", "0"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("--rate"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn bench_suite_measures_everything_against_a_baseline_and_writes_the_results() {
    let dir = tempfile::tempdir().expect("temp dir");
    let results = dir.path().join("BENCHMARKS.md");
    std::fs::write(&results, "# Mine\n\nanalysis before\n").expect("seed the file");
    let redis = support::redis::url().to_owned();
    let out = wxpay(&[
        "bench",
        "suite",
        "--quick",
        "--redis",
        &redis,
        "--out",
        results.to_str().expect("utf-8 path"),
    ]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", text(&out.stderr));
    let written = std::fs::read_to_string(&results).expect("results written");
    assert!(
        written.starts_with("# Mine\n\nanalysis before\n"),
        "what was there stays: {written}"
    );
    for row in [
        "| sign a 16-field unifiedorder (MD5), component |",
        "| sign a 16-field unifiedorder (HMAC-SHA256), component |",
        "| verify a payment notification (parse, signature, order), component |",
        "| instantiate per request (InstancePre, pooling allocator) |",
        "| cold start to the first signature, compiled component cached |",
        "| cold start to the first signature, no cache (compiles) |",
        "callbacks end to end on SQLite",
        "callbacks end to end on Redis",
        "| 200/s |",
        "| back to back |",
        "Agent intents",
    ] {
        assert!(written.contains(row), "no {row:?} in:\n{written}");
    }
    let ratios = written
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains('×'))
        .count();
    assert!(ratios >= 10, "every row carries a ratio:\n{written}");
    assert!(written.contains("Machine: "), "{written}");
    assert!(!written.contains(KEY) && !report.contains(KEY));

    // A second run replaces the results and keeps what was written around them.
    let marked = written.replace("analysis before", "my analysis");
    std::fs::write(&results, format!("{marked}\nafterword\n")).expect("annotate");
    let again = wxpay(&[
        "bench",
        "suite",
        "--quick",
        "--no-redis",
        "--out",
        results.to_str().expect("utf-8 path"),
    ]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let rewritten = std::fs::read_to_string(&results).expect("results rewritten");
    assert!(rewritten.contains("my analysis") && rewritten.contains("afterword"));
    assert!(!rewritten.contains("callbacks end to end on Redis"));
    assert!(rewritten.contains("Redis: not run: --no-redis was given"));

    // A micro-only run prints the comparisons and leaves the file alone.
    let micro = wxpay(&[
        "bench",
        "suite",
        "--quick",
        "--micro-only",
        "--out",
        results.to_str().expect("utf-8 path"),
    ]);
    let printed = text(&micro.stdout);
    assert!(micro.status.success(), "{}", text(&micro.stderr));
    assert!(printed.contains("sign a 16-field unifiedorder (MD5), component"));
    assert!(printed.contains("cold start to the first signature"));
    assert!(!printed.contains("SQLite"), "no end-to-end run: {printed}");
    let untouched = std::fs::read_to_string(&results).expect("results file");
    assert_eq!(untouched, rewritten, "a partial run is never written");
}

/// `bench repeat` runs one side of a component row, each call checked
/// against the expected answer as in the suite, for a profiler to watch.
#[test]
fn bench_repeat_runs_one_side_of_each_component_row() {
    let rows = [
        ("sign-md5", "sign a 16-field unifiedorder (MD5), component"),
        (
            "sign-hmac",
            "sign a 16-field unifiedorder (HMAC-SHA256), component",
        ),
        (
            "sign-packed-md5",
            "sign the same 16 fields packed (MD5), component",
        ),
        (
            "sign-packed-hmac",
            "sign the same 16 fields packed (HMAC-SHA256), component",
        ),
        (
            "verify",
            "verify a payment notification (parse, signature, order), component",
        ),
    ];
    for (row, name) in rows {
        for side in ["component", "native"] {
            let run = wxpay(&["bench", "repeat", row, "--side", side, "--calls", "3"]);
            assert!(run.status.success(), "{row} {side}: {}", text(&run.stderr));
            assert_eq!(
                text(&run.stdout).trim(),
                format!("{name}: 3 calls, {side} side")
            );
        }
    }
    let unknown = wxpay(&["bench", "repeat", "sign-sha1"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown.stderr));
}

#[test]
fn the_store_setting_takes_a_redis_url_and_never_prints_its_password() {
    let example = include_str!("../../examples/wxpay.toml");
    let with = |store: &str| {
        let start = example.find("[store]").expect("a [store] section");
        let end = example[start..]
            .find("[reconcile]")
            .expect("the next section")
            + start;
        let without = format!("{}{}", &example[..start], &example[end..]);
        GatewayConfig::parse(&format!("store = {store:?}\n{without}"))
    };
    let short = with("redis://ops:hunter2@10.0.0.5:6379/2").expect("short form");
    assert_eq!(
        short.store.redis.as_deref(),
        Some("redis://ops:hunter2@10.0.0.5:6379/2")
    );
    assert_eq!(short.store.key_prefix, "wxpay:");
    let shown = toml::to_string(&short.store).expect("toml");
    assert!(shown.contains("redis://ops:***@10.0.0.5:6379/2"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let path = with("state/wxpay.db").expect("a path");
    assert_eq!(
        path.store.sqlite,
        std::path::PathBuf::from("state/wxpay.db")
    );
    assert_eq!(path.store.redis, None);
    let typo = with("reddis://ops:hunter2@10.0.0.5").expect_err("not a redis URL");
    assert!(typo.contains("redis://"), "{typo}");
    assert!(!typo.contains("hunter2"), "{typo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_what_no_console_page_sent_and_the_cli_stops_at_the_passkey_threshold()
{
    let sim = simulator().await;
    let dir = tempfile::tempdir().expect("dir");
    let (config, _, private) = config_with_agent_listener(dir.path(), &sim);
    edit_config(
        &config,
        "passkey_threshold_fen = 100000",
        "passkey_threshold_fen = 5000",
    );
    let run = with_config(&config);
    let served = serve(&config);
    let token = add_tea_agent(&run, "100000", "1000");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let console = format!("http://127.0.0.1:{private}/console");
    let origin = format!("http://localhost:{private}");

    // Above the passkey threshold the CLI is refused; below it, it approves.
    let (_, big) = place_tea(&http, private, &token, 5, "c-big").await;
    let (_, small) = place_tea(&http, private, &token, 2, "c-small").await;
    let approval = |v: &serde_json::Value| v["approval"]["id"].as_i64().expect("approval id");
    let refused = run(&["approvals", "approve", &approval(&big).to_string()]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("6000 fen, above the passkey threshold of 5000 fen"),
        "{}",
        text(&refused.stderr)
    );
    let approved = run(&["approvals", "approve", &approval(&small).to_string()]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    let pending = json(&run(&["approvals", "list"]));
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    assert_eq!(pending[0]["amount_fen"], 6000, "the big one still waits");
    assert_eq!(pending[0]["needs_passkey"], true, "{pending}");

    // Pages need a session; posts need the console's own Origin.
    let page = http
        .get(format!("{console}/approvals"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status().as_u16(), 303);
    assert_eq!(page.headers()["location"], "/console/sign-in");
    let sign_in = http
        .get(format!("{console}/sign-in"))
        .send()
        .await
        .expect("sign-in");
    assert_eq!(sign_in.status().as_u16(), 200);
    let csp = sign_in.headers()["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(sign_in.headers()["x-frame-options"], "DENY");

    let post = |path: &str, origin: Option<&str>, body: &str| {
        let mut request = http
            .post(format!("{console}{path}"))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        async move {
            let reply = request.send().await.expect("post");
            (reply.status().as_u16(), reply.text().await.expect("text"))
        }
    };
    let start = "/api/sign-in/start";
    let (status, body) = post(start, None, r#"{"operator":"alice"}"#).await;
    assert_eq!(
        (status, body.contains("no Origin header")),
        (403, true),
        "{body}"
    );
    let (status, body) = post(
        start,
        Some("http://evil.example"),
        r#"{"operator":"alice"}"#,
    )
    .await;
    assert_eq!(
        (status, body.contains("not the console's")),
        (403, true),
        "{body}"
    );
    let (status, body) = post(start, Some(&origin), r#"{"operator":"alice"}"#).await;
    assert_eq!(
        (status, body.contains("no such operator")),
        (403, true),
        "{body}"
    );
    let forged_session = http
        .post(format!("{console}/approvals/1/approve"))
        .header("Origin", &origin)
        .header("Cookie", "wxpay_console=wxps_made_up")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("csrf=x")
        .send()
        .await
        .expect("post");
    assert_eq!(
        forged_session.status().as_u16(),
        401,
        "an unknown session is no session"
    );

    // An invite starts a registration ceremony for its operator only.
    let invited = run(&["operators", "invite", "alice"]);
    assert!(invited.status.success(), "{}", text(&invited.stderr));
    let link = text(&invited.stdout).trim().to_owned();
    let (_, invite) = link.split_once('#').expect("token in the fragment");
    assert!(
        link.starts_with(&format!("{origin}/console/register#wxpi_")),
        "{link}"
    );
    let (status, body) = post(
        "/api/register/start",
        Some(&origin),
        &format!(r#"{{"invite":"{invite}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let started: serde_json::Value = serde_json::from_str(&body).expect("json");
    let options = &started["options"]["publicKey"];
    assert_eq!(options["rp"]["id"], "localhost", "{started}");
    assert_eq!(options["user"]["name"], "alice", "{started}");
    assert!(
        started["ceremony"]
            .as_str()
            .is_some_and(|c| c.starts_with("wxpc_"))
    );
    let (status, body) = post(
        "/api/register/start",
        Some(&origin),
        r#"{"invite":"wxpi_not_an_invite"}"#,
    )
    .await;
    assert_eq!(
        (status, body.contains("unknown, expired or already used")),
        (403, true),
        "{body}"
    );
    let (status, body) = post(
        "/api/register/finish",
        Some(&origin),
        &format!(
            r#"{{"ceremony":"wxpc_made_up","credential":{}}}"#,
            fake_registration()
        ),
    )
    .await;
    assert_eq!(
        (status, body.contains("unknown, expired or already used")),
        (403, true),
        "{body}"
    );
    let listed = json(&run(&["operators", "list"]));
    assert_eq!(listed, serde_json::json!([]), "no passkey was registered");
    let removed = run(&["operators", "remove", "alice"]);
    assert!(!removed.status.success());
    assert!(
        text(&removed.stderr).contains("no operator alice is stored"),
        "{}",
        text(&removed.stderr)
    );
    let audit = text(&run(&["audit"]).stdout);
    assert!(audit.contains("operator.invite"), "{audit}");
    assert!(!audit.contains(invite), "the invite token is never logged");
    drop(served);
}

/// A registration response in the shape browsers send, for a ceremony
/// that does not exist.
fn fake_registration() -> serde_json::Value {
    serde_json::json!({
        "id": "AAAA",
        "rawId": "AAAA",
        "type": "public-key",
        "response": {"attestationObject": "AAAA", "clientDataJSON": "AAAA"},
        "extensions": {}
    })
}
