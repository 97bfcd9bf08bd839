//! The agent API end to end: an agent holding only a token starts, tracks
//! and refunds payments, and every guardrail refuses what it must — before
//! anything is signed — and is audited.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use wxpay::agents::{Capability, Grant};
use wxpay::gateway::now_ms;
use wxpay::store::{ApprovalKind, ApprovalState, OrderState};

#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/mod.rs"]
mod support;

use fixture::{Fixture, Options};

fn grant(capabilities: &[Capability]) -> Grant {
    Grant {
        capabilities: capabilities.iter().copied().collect::<BTreeSet<_>>(),
        products: vec!["tea".into(), "normal".into()],
        per_payment_cap_fen: 5_000,
        daily_budget_fen: 100_000,
        approval_threshold_fen: None,
        refunds_need_approval: true,
    }
}

/// A grant to sell one product and charge balances.
fn metering_grant(product: &str) -> Grant {
    let mut g = grant(&[Capability::Create, Capability::Read, Capability::Charge]);
    g.products = vec![product.into()];
    g
}

const ALL: &[Capability] = &[
    Capability::Create,
    Capability::Read,
    Capability::Close,
    Capability::Refund,
];

fn intent(product: &str, quantity: u32, key: &str) -> Value {
    json!({"product_id": product, "quantity": quantity, "idempotency_key": key})
}

async fn create(f: &Fixture, token: &str, body: Value) -> (u16, Value) {
    f.api(token, Method::POST, "/v1/payments", Some(body)).await
}

fn code(reply: &(u16, Value)) -> (u16, &str) {
    (
        reply.0,
        reply.1["error"]["code"].as_str().unwrap_or("<none>"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_starts_a_payment_waits_for_the_callback_and_resumes() {
    let f = Fixture::start(Options::default()).await;
    let token = f.agent("shop-bot", &grant(ALL), None).await;

    let (status, products) = f.api(&token, Method::GET, "/v1/products", None).await;
    assert_eq!(status, 200, "{products}");
    let ids: Vec<_> = products["products"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["product_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        ids,
        ["tea", "normal"],
        "only the granted products are listed"
    );

    let (status, payment) = create(&f, &token, intent("tea", 2, "order-1")).await;
    assert_eq!(status, 200, "{payment}");
    assert_eq!(payment["status"], "payment_pending");
    assert_eq!(payment["amount_fen"], 2400, "the catalog sets the price");
    assert_eq!(payment["fee_estimate_fen"], 14);
    assert!(
        payment["code_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("weixin://"))
    );
    assert!(
        payment["qr_svg"]
            .as_str()
            .is_some_and(|svg| svg.contains("<svg"))
    );
    assert!(payment["expires_at"].as_str().is_some());
    let id = payment["payment_id"].as_str().expect("id").to_owned();

    let (_, again) = create(&f, &token, intent("tea", 2, "order-1")).await;
    assert_eq!(again["payment_id"], id.as_str(), "same key, same payment");
    let conflict = create(&f, &token, intent("tea", 3, "order-1")).await;
    assert_eq!(code(&conflict), (409, "idempotency_conflict"));

    let (status, unchanged) = f
        .api(
            &token,
            Method::GET,
            &format!("/v1/payments/{id}/wait?timeout_s=1"),
            None,
        )
        .await;
    assert_eq!(
        (status, unchanged["status"].as_str()),
        (200, Some("payment_pending"))
    );

    let waiter = {
        let (http, url, token) = (
            f.http.clone(),
            format!("http://{}/v1/payments/{id}/wait?timeout_s=20", f.notify),
            token.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let reply: Value = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("wait")
                .text()
                .await
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .expect("json");
            (reply, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.pay(&id).await;
    let (resumed, waited) = waiter.await.expect("waiter");
    assert_eq!(resumed["status"], "paid", "{resumed}");
    assert!(resumed["transaction_id"].as_str().is_some());
    assert!(
        waited < Duration::from_secs(10),
        "woken by the callback, not the timeout: {waited:?}"
    );

    let audit = f.audit().await;
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "agent:shop-bot" && e.action == "order.create" && e.subject == id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_guardrail_refuses_before_anything_is_signed_and_is_audited() {
    let f = Fixture::start(Options::default()).await;
    let reader = f.agent("reader", &grant(&[Capability::Read]), None).await;
    let refused = create(&f, &reader, intent("tea", 1, "k")).await;
    assert_eq!(code(&refused), (403, "capability_missing"));

    let seller = f.agent("seller", &grant(ALL), None).await;
    let wrong_product = create(&f, &seller, intent("silent", 1, "k1")).await;
    assert_eq!(code(&wrong_product), (403, "product_not_allowed"));
    assert_eq!(wrong_product.1["error"]["field"], "product_id");
    let over_cap = create(&f, &seller, intent("tea", 5, "k2")).await;
    assert_eq!(code(&over_cap), (403, "over_cap"));
    let invalid = create(&f, &seller, intent("tea", 0, "k3")).await;
    assert_eq!(code(&invalid), (422, "invalid_field"));
    assert_eq!(invalid.1["error"]["field"], "quantity", "{}", invalid.1);
    let unknown_field = create(
        &f,
        &seller,
        json!({"product_id": "tea", "idempotency_key": "k4", "price_fen": 1}),
    )
    .await;
    assert_eq!(code(&unknown_field), (422, "invalid_json"));
    assert!(
        unknown_field.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("price_fen"))
    );

    let expired = f.agent("expired", &grant(ALL), Some(now_ms() - 1)).await;
    assert_eq!(
        code(&create(&f, &expired, intent("tea", 1, "k")).await),
        (401, "token_expired")
    );
    let revoked = f.agent("revoked", &grant(ALL), None).await;
    let gone = f
        .gateway
        .db(|s| s.revoke_agent("revoked", now_ms()))
        .await
        .expect("revoke");
    assert!(gone.is_some_and(|a| a.revoked_at_ms.is_some()));
    assert_eq!(
        code(&create(&f, &revoked, intent("tea", 1, "k")).await),
        (401, "token_revoked")
    );
    assert_eq!(
        code(&create(&f, "wxpa_not-a-token", intent("tea", 1, "k")).await),
        (401, "unauthorized")
    );
    let (status, _) = f
        .http
        .post(format!("http://{}/v1/payments", f.notify))
        .body(intent("tea", 1, "k").to_string())
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .expect("no token");
    assert_eq!(status, 401);

    let orders = f
        .gateway
        .db(|s| s.orders_in_state(&OrderState::ALL, i64::MAX, 100))
        .await
        .expect("orders");
    assert!(
        orders.is_empty(),
        "no refused request reached the store: {orders:?}"
    );
    let audit = f.audit().await;
    for (actor, code) in [
        ("agent:reader", "capability_missing"),
        ("agent:seller", "product_not_allowed"),
        ("agent:seller", "over_cap"),
        ("agent:expired", "token_expired"),
        ("agent:revoked", "token_revoked"),
    ] {
        assert!(
            audit
                .iter()
                .any(|e| e.actor == actor && e.outcome == "refused" && e.detail.contains(code)),
            "{actor} {code} audited"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_cannot_together_exceed_the_budget() {
    let f = Fixture::start(Options::default()).await;
    let mut limited = grant(ALL);
    limited.daily_budget_fen = 3 * 1200;
    let token = f.agent("budgeted", &limited, None).await;
    let requests = (0..8).map(|i| {
        let (http, url, token) = (
            f.http.clone(),
            format!("http://{}/v1/payments", f.notify),
            token.clone(),
        );
        tokio::spawn(async move {
            let response = http
                .post(url)
                .bearer_auth(token)
                .header("Content-Type", "application/json")
                .body(intent("tea", 1, &format!("burst-{i}")).to_string())
                .send()
                .await
                .expect("post");
            let status = response.status().as_u16();
            let text = response.text().await.expect("text");
            (status, serde_json::from_str::<Value>(&text).expect("json"))
        })
    });
    let mut outcomes = Vec::new();
    for request in requests.collect::<Vec<_>>() {
        outcomes.push(request.await.expect("task"));
    }
    let accepted = outcomes.iter().filter(|(status, _)| *status == 200).count();
    let over = outcomes
        .iter()
        .filter(|r| code(r) == (403, "over_budget"))
        .count();
    assert_eq!((accepted, over), (3, 5), "{outcomes:?}");
    let spent = f
        .gateway
        .db(|s| s.agent_spend("budgeted", 0))
        .await
        .expect("spend");
    assert_eq!(spent, 3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_over_the_threshold_and_refunds_wait_for_a_person() {
    let f = Fixture::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    let mut cautious = grant(ALL);
    cautious.approval_threshold_fen = Some(1_000);
    let token = f.agent("cautious", &cautious, None).await;

    let (status, big) = create(&f, &token, intent("tea", 1, "big")).await;
    assert_eq!(
        (status, big["status"].as_str()),
        (200, Some("pending_approval")),
        "{big}"
    );
    let id = big["payment_id"].as_str().expect("id").to_owned();
    let approval_id = big["approval"]["id"].as_i64().expect("approval id");
    assert!(
        f.gateway
            .db({
                let id = id.clone();
                move |s| s.order(&id)
            })
            .await
            .expect("store")
            .is_none(),
        "nothing sent yet"
    );
    let (_, small) = create(&f, &token, intent("normal", 1, "small")).await;
    assert_eq!(
        small["status"], "payment_pending",
        "under the threshold: no approval"
    );

    let approved = wxpay::agents::approve(&f.gateway, approval_id, "alice")
        .await
        .expect("approve");
    assert_eq!(approved.state, ApprovalState::Approved);
    let (_, now) = f
        .api(&token, Method::GET, &format!("/v1/payments/{id}"), None)
        .await;
    assert_eq!(now["status"], "payment_pending", "{now}");
    assert_eq!(now["approval"]["state"], "approved");
    let twice = wxpay::agents::approve(&f.gateway, approval_id, "alice")
        .await
        .expect("approving again is harmless");
    assert_eq!(twice.id, approval_id);
    let orders = f
        .gateway
        .db(|s| s.orders_in_state(&OrderState::ALL, i64::MAX, 100))
        .await
        .expect("orders");
    assert_eq!(
        orders.iter().filter(|o| o.out_trade_no == id).count(),
        1,
        "one order, not two"
    );

    let (_, denied) = create(&f, &token, intent("tea", 2, "denied")).await;
    let denied_id = denied["approval"]["id"].as_i64().expect("approval id");
    wxpay::agents::deny(&f.gateway, denied_id, "alice", "too large for a trial")
        .await
        .expect("deny");
    let (_, seen) = f
        .api(
            &token,
            Method::GET,
            &format!(
                "/v1/payments/{}",
                denied["payment_id"].as_str().expect("id")
            ),
            None,
        )
        .await;
    assert_eq!(seen["status"], "denied");
    assert_eq!(seen["approval"]["reason"], "too large for a trial");

    f.pay(&id).await;
    f.wait_for(&id, OrderState::Paid).await;
    let path = format!("/v1/payments/{id}/refunds");
    let missing_key = f
        .api(
            &token,
            Method::POST,
            &path,
            Some(json!({"amount_fen": 100})),
        )
        .await;
    assert_eq!(code(&missing_key), (422, "invalid_json"));
    let (status, refund) = f
        .api(
            &token,
            Method::POST,
            &path,
            Some(json!({"idempotency_key": "r1", "amount_fen": 500})),
        )
        .await;
    assert_eq!(
        (status, refund["status"].as_str()),
        (200, Some("pending_approval")),
        "{refund}"
    );
    let (_, again) = f
        .api(
            &token,
            Method::POST,
            &path,
            Some(json!({"idempotency_key": "r1", "amount_fen": 500})),
        )
        .await;
    assert_eq!(
        again["refund_id"], refund["refund_id"],
        "same key, same refund"
    );
    let pending = f
        .gateway
        .db(|s| s.approvals(Some(ApprovalState::Pending), 10))
        .await
        .expect("approvals");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, ApprovalKind::Refund);
    wxpay::agents::approve(&f.gateway, pending[0].id, "alice")
        .await
        .expect("approve refund");
    let refund_path = format!(
        "{path}/{}",
        refund["refund_id"].as_str().expect("refund id")
    );
    let mut status = String::new();
    for _ in 0..100 {
        let (_, r) = f.api(&token, Method::GET, &refund_path, None).await;
        status = r["status"].as_str().unwrap_or_default().to_owned();
        if status == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "succeeded", "the refund notification settled it");
    let (_, payment) = f
        .api(&token, Method::GET, &format!("/v1/payments/{id}"), None)
        .await;
    assert_eq!(payment["status"], "refunded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_top_up_funds_charges_that_never_overdraw() {
    let f = Fixture::start(Options::default()).await;
    let metered = metering_grant("credits");
    let token = f.agent("meter", &metered, None).await;

    let too_small = f
        .api(
            &token,
            Method::POST,
            "/v1/balances/user-1/topups",
            Some(json!({"amount_fen": 50, "idempotency_key": "t0"})),
        )
        .await;
    assert_eq!(code(&too_small), (422, "invalid_field"));
    let (status, topup) = f
        .api(
            &token,
            Method::POST,
            "/v1/balances/user-1/topups",
            Some(json!({"amount_fen": 2000, "idempotency_key": "t1"})),
        )
        .await;
    assert_eq!(
        (status, topup["status"].as_str()),
        (200, Some("payment_pending")),
        "{topup}"
    );
    let id = topup["payment_id"].as_str().expect("id").to_owned();
    let (_, before) = f
        .api(&token, Method::GET, "/v1/balances/user-1", None)
        .await;
    assert_eq!(
        before["balance_fen"], 0,
        "nothing is credited before the payment is verified"
    );

    f.pay(&id).await;
    f.wait_for(&id, wxpay::store::OrderState::Paid).await;
    let (_, funded) = f
        .api(&token, Method::GET, "/v1/balances/user-1", None)
        .await;
    assert_eq!(funded["balance_fen"], 2000, "{funded}");
    assert_eq!(funded["entries"][0]["kind"], "topup");

    let charge = |key: &str, amount: u64| json!({"payer_id": "user-1", "amount_fen": amount, "idempotency_key": key, "note": "prompt"});
    let (status, first) = f
        .api(&token, Method::POST, "/v1/charges", Some(charge("c1", 300)))
        .await;
    assert_eq!(
        (status, first["balance_fen"].as_u64()),
        (200, Some(1700)),
        "{first}"
    );
    let (_, again) = f
        .api(&token, Method::POST, "/v1/charges", Some(charge("c1", 300)))
        .await;
    assert_eq!(again["balance_fen"], 1700, "the same key charges once");
    let conflict = f
        .api(&token, Method::POST, "/v1/charges", Some(charge("c1", 299)))
        .await;
    assert_eq!(code(&conflict), (409, "idempotency_conflict"));

    let requests = (0..12).map(|i| {
        let (http, url, token, body) = (
            f.http.clone(),
            format!("http://{}/v1/charges", f.notify),
            token.clone(),
            charge(&format!("burst-{i}"), 300),
        );
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("post")
                .status()
                .as_u16()
        })
    });
    let mut statuses = Vec::new();
    for request in requests.collect::<Vec<_>>() {
        statuses.push(request.await.expect("task"));
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 402).count(),
        7,
        "{statuses:?}"
    );
    let short = f
        .api(
            &token,
            Method::POST,
            "/v1/charges",
            Some(charge("c-last", 300)),
        )
        .await;
    assert_eq!(code(&short), (402, "insufficient_funds"));
    let message = short.1["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("200 fen") && message.contains("top up 100 fen"),
        "{message}"
    );

    let balance = f
        .gateway
        .db(|s| s.balance("user-1"))
        .await
        .expect("balance");
    let entries = f
        .gateway
        .db(|s| s.ledger("user-1", 100))
        .await
        .expect("ledger");
    assert_eq!(balance, 200);
    assert_eq!(
        entries.iter().map(|e| e.amount_fen).sum::<i64>(),
        200,
        "balance is the sum of entries"
    );
    let reader = f
        .agent("no-charge", &grant(&[Capability::Read]), None)
        .await;
    let refused = f
        .api(&reader, Method::POST, "/v1/charges", Some(charge("x", 1)))
        .await;
    assert_eq!(code(&refused), (403, "capability_missing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_up_whose_notification_never_came_is_credited_by_reconciliation() {
    let f = Fixture::start(Options::default()).await;
    let metered = metering_grant("credits");
    let token = f.agent("meter", &metered, None).await;
    // 105 fen picks the simulator's scenario without a notification.
    let (_, topup) = f
        .api(
            &token,
            Method::POST,
            "/v1/balances/user-2/topups",
            Some(json!({"amount_fen": 105, "idempotency_key": "quiet"})),
        )
        .await;
    let id = topup["payment_id"].as_str().expect("id").to_owned();
    f.pay(&id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        f.gateway
            .db(|s| s.balance("user-2"))
            .await
            .expect("balance"),
        0
    );
    let report = f.gateway.reconcile_once(Duration::ZERO).await;
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(
        f.gateway
            .db(|s| s.balance("user-2"))
            .await
            .expect("balance"),
        105
    );
    let again = f.gateway.query_order(&id, "test").await.expect("query");
    assert_eq!(again.state, wxpay::store::OrderState::Paid);
    assert_eq!(
        f.gateway
            .db(|s| s.balance("user-2"))
            .await
            .expect("balance"),
        105,
        "credited once"
    );
}

/// A real MCP client drives `wxpay mcp` over stdio; the MCP process holds
/// only the agent's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_server_serves_the_agent_tools_over_stdio() {
    use rmcp::ServiceExt as _;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::TokioChildProcess;

    let f = Fixture::start(Options::default()).await;
    let mut limited = grant(ALL);
    limited.products = vec!["tea".into(), "credits".into()];
    limited.capabilities.insert(Capability::Charge);
    let token = f.agent("mcp-agent", &limited, None).await;

    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxpay"));
    command
        .arg("mcp")
        .env("WXPAY_AGENT_TOKEN", &token)
        .env("WXPAY_GATEWAY_URL", format!("http://{}", f.notify))
        .env_remove("WXPAY_API_KEY");
    let client =
        ().serve(TokioChildProcess::new(command).expect("spawn wxpay mcp"))
            .await
            .expect("MCP handshake");

    let tools = client.list_all_tools().await.expect("tools/list");
    let annotation = |name: &str| {
        tools
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.annotations.clone())
            .unwrap_or_else(|| panic!("tool {name} with annotations"))
    };
    for name in [
        "list_products",
        "create_payment",
        "get_payment",
        "wait_for_payment",
        "request_refund",
        "get_balance",
        "charge",
    ] {
        assert!(tools.iter().any(|t| t.name == name), "{name} listed");
    }
    assert_eq!(annotation("request_refund").destructive_hint, Some(true));
    assert_eq!(annotation("charge").destructive_hint, Some(true));
    assert_eq!(annotation("get_payment").read_only_hint, Some(true));
    assert_eq!(
        annotation("create_payment").idempotent_hint,
        Some(true),
        "keyed by idempotency_key"
    );

    let call = |name: &'static str, args: Value| {
        let params = CallToolRequestParams::new(name)
            .with_arguments(args.as_object().expect("object").clone());
        let client = &client;
        async move {
            let result = client.call_tool(params).await.expect("tools/call");
            let text = result
                .content
                .iter()
                .find_map(|c| c.as_text().map(|t| t.text.clone()))
                .unwrap_or_default();
            (
                result.is_error == Some(true),
                serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
            )
        }
    };
    let (failed, products) = call("list_products", json!({})).await;
    assert!(!failed, "{products}");
    assert_eq!(products["products"][0]["product_id"], "tea");

    let (failed, payment) = call(
        "create_payment",
        json!({"product_id": "tea", "quantity": 1, "idempotency_key": "mcp-1"}),
    )
    .await;
    assert!(!failed, "{payment}");
    assert_eq!(payment["status"], "payment_pending");
    let id = payment["payment_id"].as_str().expect("id").to_owned();
    f.pay(&id).await;
    let (_, waited) = call(
        "wait_for_payment",
        json!({"payment_id": id, "timeout_s": 20}),
    )
    .await;
    assert_eq!(waited["status"], "paid", "{waited}");

    let (failed, refused) = call(
        "create_payment",
        json!({"product_id": "silent", "idempotency_key": "mcp-2"}),
    )
    .await;
    assert!(failed, "a guardrail refusal is a tool error");
    assert_eq!(refused["error"]["code"], "product_not_allowed");

    let (_, refund) = call(
        "request_refund",
        json!({"payment_id": id, "idempotency_key": "mcp-r1", "amount_fen": 100}),
    )
    .await;
    assert_eq!(refund["status"], "pending_approval", "{refund}");
    let (failed, short) = call(
        "charge",
        json!({"payer_id": "u-mcp", "amount_fen": 50, "idempotency_key": "mcp-c1"}),
    )
    .await;
    assert!(failed);
    assert_eq!(short["error"]["code"], "insufficient_funds");
    let (_, balance) = call("get_balance", json!({"payer_id": "u-mcp"})).await;
    assert_eq!(balance["balance_fen"], 0);
    client.cancel().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_closes_an_unpaid_payment_and_withdraws_one_awaiting_approval() {
    let f = Fixture::start(Options::default()).await;
    let mut g = grant(ALL);
    g.approval_threshold_fen = Some(2_000);
    let token = f.agent("closer", &g, None).await;
    let (_, payment) = create(&f, &token, intent("tea", 1, "close-me")).await;
    let id = payment["payment_id"].as_str().expect("id").to_owned();
    let early = f
        .api(
            &token,
            Method::POST,
            &format!("/v1/payments/{id}/close"),
            None,
        )
        .await;
    assert_eq!(
        code(&early),
        (502, "wechat_error"),
        "WeChat refuses a close within 5 minutes"
    );
    f.admin("clock", json!({"advance_secs": 301})).await;
    let (status, closed) = f
        .api(
            &token,
            Method::POST,
            &format!("/v1/payments/{id}/close"),
            None,
        )
        .await;
    assert_eq!(
        (status, closed["status"].as_str()),
        (200, Some("closed")),
        "{closed}"
    );

    let (_, waiting) = create(&f, &token, intent("tea", 2, "withdraw-me")).await;
    assert_eq!(waiting["status"], "pending_approval");
    let pending_id = waiting["payment_id"].as_str().expect("id");
    let (_, withdrawn) = f
        .api(
            &token,
            Method::POST,
            &format!("/v1/payments/{pending_id}/close"),
            None,
        )
        .await;
    assert_eq!(withdrawn["status"], "denied", "{withdrawn}");
    assert_eq!(withdrawn["approval"]["reason"], "withdrawn by the agent");

    let no_close = f
        .agent(
            "no-close",
            &grant(&[Capability::Create, Capability::Read]),
            None,
        )
        .await;
    let refused = f
        .api(
            &no_close,
            Method::POST,
            &format!("/v1/payments/{id}/close"),
            None,
        )
        .await;
    assert_eq!(code(&refused), (403, "capability_missing"));
    let other = f
        .api(
            &token,
            Method::GET,
            "/v1/payments/WX00000000000000000000000000NONE",
            None,
        )
        .await;
    assert_eq!(code(&other), (404, "not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metering_session_settles_many_small_charges_as_one_payment() {
    let f = Fixture::start(Options::default()).await;
    let metered = metering_grant("usage");
    let token = f.agent("meterer", &metered, None).await;
    let (status, meter) = f
        .api(
            &token,
            Method::POST,
            "/v1/meters",
            Some(json!({"payer_id": "user-9", "idempotency_key": "session-1"})),
        )
        .await;
    assert_eq!(
        (status, meter["status"].as_str()),
        (200, Some("open")),
        "{meter}"
    );
    let id = meter["meter_id"].as_str().expect("id").to_owned();
    let usage = format!("/v1/meters/{id}/usage");
    for i in 0..5 {
        let (status, _) = f
            .api(
                &token,
                Method::POST,
                &usage,
                Some(
                    json!({"amount_fen": 30, "idempotency_key": format!("p{i}"), "note": "prompt"}),
                ),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (_, repeated) = f
        .api(
            &token,
            Method::POST,
            &usage,
            Some(json!({"amount_fen": 30, "idempotency_key": "p0"})),
        )
        .await;
    assert_eq!(
        repeated["total_fen"], 150,
        "a repeated usage key counts once"
    );

    let early = {
        let (_, small) = f
            .api(
                &token,
                Method::POST,
                "/v1/meters",
                Some(json!({"payer_id": "user-9", "idempotency_key": "session-2"})),
            )
            .await;
        let small_id = small["meter_id"].as_str().expect("id").to_owned();
        f.api(
            &token,
            Method::POST,
            &format!("/v1/meters/{small_id}/usage"),
            Some(json!({"amount_fen": 20, "idempotency_key": "x"})),
        )
        .await;
        f.api(
            &token,
            Method::POST,
            &format!("/v1/meters/{small_id}/settle"),
            None,
        )
        .await
    };
    assert_eq!(code(&early), (409, "below_minimum"));

    let (status, payment) = f
        .api(
            &token,
            Method::POST,
            &format!("/v1/meters/{id}/settle"),
            None,
        )
        .await;
    assert_eq!(
        (status, payment["status"].as_str()),
        (200, Some("payment_pending")),
        "{payment}"
    );
    assert_eq!(
        payment["amount_fen"], 150,
        "one payment for the whole session"
    );
    let (_, again) = f
        .api(
            &token,
            Method::POST,
            &format!("/v1/meters/{id}/settle"),
            None,
        )
        .await;
    assert_eq!(
        again["payment_id"], payment["payment_id"],
        "settling twice is one payment"
    );
    let late = f
        .api(
            &token,
            Method::POST,
            &usage,
            Some(json!({"amount_fen": 30, "idempotency_key": "p9"})),
        )
        .await;
    assert_eq!(code(&late), (409, "meter_settled"));
    let pay_id = payment["payment_id"].as_str().expect("id").to_owned();
    f.pay(&pay_id).await;
    f.wait_for(&pay_id, wxpay::store::OrderState::Paid).await;
    let (_, settled) = f
        .api(&token, Method::GET, &format!("/v1/meters/{id}"), None)
        .await;
    assert_eq!(
        (settled["status"].as_str(), settled["payment_id"].as_str()),
        (Some("settled"), Some(pay_id.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_whose_payment_was_never_sent_is_carried_out_by_reconciliation() {
    let f = Fixture::start(Options::default()).await;
    let mut cautious = grant(ALL);
    cautious.approval_threshold_fen = Some(1_000);
    let token = f.agent("interrupted", &cautious, None).await;
    let (_, big) = create(&f, &token, intent("tea", 1, "crash")).await;
    let approval_id = big["approval"]["id"].as_i64().expect("approval id");
    let id = big["payment_id"].as_str().expect("id").to_owned();
    // Approved, and the process died before the order was sent.
    let decided = f
        .gateway
        .db(move |s| {
            s.decide_approval(
                approval_id,
                ApprovalState::Approved,
                "alice",
                None,
                now_ms(),
            )
        })
        .await
        .expect("decide");
    assert!(decided.applied());
    let (_, before) = f
        .api(&token, Method::GET, &format!("/v1/payments/{id}"), None)
        .await;
    assert_eq!(before["status"], "created", "{before}");

    let report = f.gateway.reconcile_once(Duration::from_secs(3600)).await;
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.approvals_carried_out, 1);
    let (_, after) = f
        .api(&token, Method::GET, &format!("/v1/payments/{id}"), None)
        .await;
    assert_eq!(after["status"], "payment_pending", "{after}");
    let again = f.gateway.reconcile_once(Duration::from_secs(3600)).await;
    assert_eq!(again.approvals_carried_out, 0, "carried out once");
}
