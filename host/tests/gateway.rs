//! The gateway end to end against the simulator: orders placed, paid,
//! notified, queried, closed and refunded; forged, duplicate and concurrent
//! notifications; retries; reconciliation; the sandbox key flow; and the
//! key kept out of every log line and reply.

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use std::time::Duration;

use wxpay::gateway::{RefundRequestInput, now_ms};
use wxpay::sandbox::bindings::types::SignType;
use wxpay::store::{NotificationKind, OrderState, RefundState, Verdict};

#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/mod.rs"]
mod support;

use fixture::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_placed_paid_notified_queried_and_another_closed() {
    let f = Fixture::start(Options::default()).await;
    let no = f.create("tea", "first").await;
    let again = f.create("tea", "first").await;
    assert_eq!(no, again, "the same idempotency key gives the same order");
    let conflict = f
        .gateway
        .create_order(&f.request("normal", "first"), "test")
        .await;
    assert!(
        matches!(conflict, Err(wxpay::Error::Conflict { .. })),
        "{conflict:?}"
    );

    f.pay(&no).await;
    let paid = f.wait_for(&no, OrderState::Paid).await;
    assert!(paid.transaction_id.is_some());
    assert_eq!(paid.total_fee, 1200);
    let queried = f.gateway.query_order(&no, "test").await.expect("query");
    assert_eq!(queried.state, OrderState::Paid);
    assert_eq!(
        queried.version, paid.version,
        "a query that learns nothing changes nothing"
    );

    let accepted: Vec<_> = f
        .notifications()
        .await
        .into_iter()
        .filter(|n| n.out_trade_no.as_deref() == Some(no.as_str()))
        .collect();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0].verdict, Verdict::Accepted);
    assert!(
        f.audit()
            .await
            .iter()
            .any(|e| e.action == "notification.payment" && e.subject == no && e.outcome == "paid")
    );

    let refused = f.gateway.close_order(&no, "test").await;
    assert!(
        matches!(refused, Err(wxpay::Error::Conflict { .. })),
        "{refused:?}"
    );

    let open = f.create("tea", "second").await;
    f.admin("clock", serde_json::json!({"advance_secs": 301}))
        .await;
    let closed = f.gateway.close_order(&open, "test").await.expect("close");
    assert_eq!(closed.state, OrderState::Closed);
    let queried = f.gateway.query_order(&open, "test").await.expect("query");
    assert_eq!(queried.state, OrderState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_needs_the_client_certificate_and_settles_by_notification() {
    refund_flow(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pkcs12_client_certificate_as_wechat_issues_it_works_too() {
    refund_flow(true).await;
}

async fn refund_flow(pkcs12: bool) {
    let f = Fixture::start(Options {
        tls: true,
        pkcs12,
        ..Options::default()
    })
    .await;
    let no = f.create("tea", "refund-me").await;
    f.pay(&no).await;
    f.wait_for(&no, OrderState::Paid).await;

    let input = |out_refund_no: &str, refund_fee| RefundRequestInput {
        out_trade_no: no.clone(),
        out_refund_no: out_refund_no.into(),
        refund_fee,
        reason: Some("customer asked".into()),
    };
    let too_much = f.gateway.refund(&input("R-TOO-MUCH", 1201), "test").await;
    assert!(
        matches!(too_much, Err(wxpay::Error::Conflict { .. })),
        "{too_much:?}"
    );

    let refund = f
        .gateway
        .refund(&input("R-1", 500), "test")
        .await
        .expect("refund");
    assert_eq!(refund.state, RefundState::Processing);
    assert!(refund.refund_id.is_some());
    assert_eq!(f.order(&no).await.state, OrderState::Refunding);
    let again = f
        .gateway
        .refund(&input("R-1", 500), "test")
        .await
        .expect("same refund");
    assert_eq!(again.out_refund_no, "R-1");
    let reused = f.gateway.refund(&input("R-1", 400), "test").await;
    assert!(
        matches!(reused, Err(wxpay::Error::Conflict { .. })),
        "{reused:?}"
    );

    // The simulator settles the refund after 60 simulated seconds (1 s here)
    // and sends the encrypted refund notification.
    f.wait_for(&no, OrderState::Refunded).await;
    let refund = f
        .gateway
        .db(|s| s.refund("R-1"))
        .await
        .expect("store")
        .expect("refund");
    assert_eq!(refund.state, RefundState::Succeeded);
    let refund_notes: Vec<_> = f
        .notifications()
        .await
        .into_iter()
        .filter(|n| n.kind == NotificationKind::Refund)
        .collect();
    assert!(
        refund_notes.iter().any(|n| n.verdict == Verdict::Accepted),
        "{refund_notes:?}"
    );

    let other_amount = refund_notification(&no, "R-1", 400);
    let (status, reply) = f.post_notification("/notify/refund", other_amount).await;
    assert_eq!(status, 200);
    assert!(reply.contains("FAIL"), "{reply}");
    let recorded = f.notifications().await;
    let refused = recorded.last().expect("the refused notification");
    assert!(
        matches!(&refused.verdict, Verdict::Rejected(why) if why.contains("refund_fee")),
        "{refused:?}"
    );
    let kept = f.gateway.db(|s| s.refund("R-1")).await.expect("store");
    assert_eq!(
        kept.map(|r| (r.state, r.refund_fee)),
        Some((RefundState::Succeeded, 500))
    );

    let over = f.gateway.refund(&input("R-2", 701), "test").await;
    assert!(
        matches!(over, Err(wxpay::Error::Conflict { .. })),
        "{over:?}"
    );
}

/// A refund notification for `out_refund_no` of `out_trade_no`, encrypted
/// with the test merchant's key as WeChat encrypts it.
fn refund_notification(out_trade_no: &str, out_refund_no: &str, refund_fee: u64) -> Vec<u8> {
    let merchant = wxpay_guest::Merchant::new(wxpay_guest::MerchantConfig {
        appid: APPID.into(),
        mch_id: MCH_ID.into(),
        api_key: wxpay_guest::ApiKey::new(KEY.into()).expect("key"),
        sign_type: wxpay_guest::SignType::Md5,
        sub_appid: None,
        sub_mch_id: None,
        sandbox: false,
    })
    .expect("merchant");
    let inner = format!(
        "<root><out_trade_no>{out_trade_no}</out_trade_no><transaction_id>4200000001</transaction_id>\
         <out_refund_no>{out_refund_no}</out_refund_no><refund_id>50300000001</refund_id>\
         <total_fee>1200</total_fee><refund_fee>{refund_fee}</refund_fee>\
         <refund_status>SUCCESS</refund_status></root>"
    );
    let req_info = merchant.encrypt_refund_info(inner.as_bytes());
    format!(
        "<xml><return_code>SUCCESS</return_code><appid>{APPID}</appid><mch_id>{MCH_ID}</mch_id>\
         <nonce_str>n0123456789</nonce_str><req_info>{req_info}</req_info></xml>"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_client_certificate_a_refund_is_kept_for_a_retry() {
    let f = Fixture::start(Options {
        tls: true,
        client_cert: false,
        ..Options::default()
    })
    .await;
    let no = f.create("tea", "no-cert").await;
    f.pay(&no).await;
    f.wait_for(&no, OrderState::Paid).await;
    let input = RefundRequestInput {
        out_trade_no: no.clone(),
        out_refund_no: "R-NOCERT".into(),
        refund_fee: 100,
        reason: None,
    };
    let error = f
        .gateway
        .refund(&input, "test")
        .await
        .expect_err("no certificate");
    assert!(error.to_string().contains("client certificate"), "{error}");
    let stored = f
        .gateway
        .db(|s| s.refund("R-NOCERT"))
        .await
        .expect("store")
        .expect("kept");
    assert_eq!(
        stored.state,
        RefundState::Requested,
        "kept to be sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_finds_a_payment_whose_notification_never_came_and_closes_expired_orders() {
    let f = Fixture::start(Options::default()).await;
    let silent = f.create("silent", "silent").await;
    f.pay(&silent).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f.order(&silent).await.state, OrderState::Pending);

    let expired = f.create("tea", "expired").await;
    let db = f.db.clone();
    let no = expired.clone();
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(db).expect("open");
        conn.execute(
            "UPDATE orders SET expires_at_ms = ?1 WHERE out_trade_no = ?2",
            rusqlite::params![now_ms() - 1, no],
        )
        .expect("expire");
    })
    .await
    .expect("task");
    f.admin("clock", serde_json::json!({"advance_secs": 301}))
        .await;

    let report = f.gateway.reconcile_once(Duration::ZERO).await;
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.orders_checked, 2, "{report:?}");
    assert_eq!(report.orders_closed, 1, "{report:?}");
    let paid = f.order(&silent).await;
    assert_eq!(paid.state, OrderState::Paid);
    assert!(paid.transaction_id.is_some());
    assert_eq!(f.order(&expired).await.state, OrderState::Closed);
    let audit = f.audit().await;
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "reconciliation" && e.subject == silent && e.outcome == "paid")
    );

    let quiet = f.gateway.reconcile_once(Duration::ZERO).await;
    assert_eq!(quiet.orders_checked, 0, "nothing is left open: {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemerror_and_timeouts_are_retried_with_the_same_request() {
    let f = Fixture::start(Options::default()).await;
    for (product, key) in [("systemerror", "se"), ("slow", "slow")] {
        let no = f.create(product, key).await;
        let audit = f.audit().await;
        let created = audit
            .iter()
            .find(|e| e.subject == no && e.action == "order.create")
            .expect("audited");
        let detail: serde_json::Value = serde_json::from_str(&created.detail).expect("json");
        assert_eq!(detail["attempts"], 2, "{product}: {detail}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_notifications_are_refused_audited_and_change_nothing() {
    let f = Fixture::start(Options::default()).await;
    for (product, reason) in [
        ("forged", "signature"),
        ("unsigned", "sign"),
        ("tampered", "signature"),
        ("other-app", "appid"),
    ] {
        let no = f.create(product, product).await;
        f.pay(&no).await;
        let paid = f.wait_for(&no, OrderState::Paid).await;
        assert_eq!(paid.version, 3, "{product}: created, pending, paid — once");
        let notes: Vec<_> = f
            .notifications()
            .await
            .into_iter()
            .filter(|n| n.out_trade_no.as_deref() == Some(no.as_str()))
            .collect();
        let rejected: Vec<_> = notes
            .iter()
            .filter_map(|n| match &n.verdict {
                Verdict::Rejected(why) => Some(why.clone()),
                _ => None,
            })
            .collect();
        assert!(
            rejected.iter().any(|why| why.contains(reason)),
            "{product}: {rejected:?}"
        );
        assert_eq!(
            notes
                .iter()
                .filter(|n| n.verdict == Verdict::Accepted)
                .count(),
            1,
            "{product}"
        );
        assert!(
            f.audit()
                .await
                .iter()
                .any(|e| e.subject == no && e.outcome == "rejected"),
            "{product}: audited"
        );
    }

    // Hand-made forgeries against a pending order.
    let no = f.create("tea", "target").await;
    let genuine = f.notification(&no, 1200, "4200000000000000000000000001");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"<xml><out_trade_no>".to_vec()),
        (
            "doctype",
            b"<!DOCTYPE x [<!ENTITY e 'x'>]><xml><a>&e;</a></xml>".to_vec(),
        ),
        (
            "amount",
            f.notification(&no, 1, "4200000000000000000000000002"),
        ),
        (
            "amount beyond what a store can hold",
            f.notification(&no, u64::MAX, "4200000000000000000000000003"),
        ),
        (
            "unknown order",
            f.notification("WX00000000000000000000000000UNKN", 1200, "42"),
        ),
        (
            "altered after signing",
            String::from_utf8(genuine.clone())
                .expect("utf8")
                .replace("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "attacker")
                .into_bytes(),
        ),
    ];
    for (case, body) in cases {
        let (status, reply) = f.post_notification("/notify/pay", body.clone()).await;
        assert_eq!(status, 200, "{case}");
        assert!(reply.contains("FAIL"), "{case}: {reply}");
        assert_ne!(reply, ACK, "{case}");
        assert_eq!(f.order(&no).await.state, OrderState::Pending, "{case}");
        let recorded: Vec<_> = f
            .notifications()
            .await
            .into_iter()
            .filter(|n| n.body == body)
            .collect();
        assert_eq!(recorded.len(), 1, "{case}: recorded once");
        if case.starts_with("amount") {
            let verdict = &recorded[0].verdict;
            assert!(
                matches!(verdict, Verdict::Rejected(why) if why.contains("total_fee")),
                "the order's amount, not the one claimed: {verdict:?}"
            );
        }
    }
    let (status, _) = f
        .post_notification("/notify/pay", vec![b'x'; 70 * 1024])
        .await;
    assert_eq!(status, 413, "bodies over the cap are refused unread");
    let (status, reply) = f
        .post_notification("/notify/refund", b"<xml></xml>".to_vec())
        .await;
    assert_eq!(status, 200);
    assert!(reply.contains("FAIL"), "{reply}");
    assert_eq!(f.order(&no).await.version, 2, "nothing changed");

    let (_, reply) = f.post_notification("/notify/pay", genuine).await;
    assert_eq!(reply, ACK);
    assert_eq!(f.order(&no).await.state, OrderState::Paid);
}

/// The merchant signs with MD5 now, but an order placed earlier with
/// HMAC-SHA256 keeps it: a notification for that order signed with MD5
/// verifies under the merchant's algorithm and must still be refused. The
/// order's own algorithm settles it; an MD5 order settles with MD5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_is_verified_with_the_algorithm_its_order_was_placed_with() {
    let f = Fixture::start(Options {
        sign_type: "MD5",
        ..Options::default()
    })
    .await;
    let md5_no = f.create("tea", "md5-order").await;
    let md5_order = f.order(&md5_no).await;
    assert_eq!(md5_order.sign_type, wxpay_guest::SignType::Md5);
    let hmac_order = wxpay::store::Order {
        out_trade_no: format!("{md5_no}H"),
        sign_type: wxpay_guest::SignType::HmacSha256,
        idempotency_key: None,
        agent_id: None,
        ..md5_order.clone()
    };
    let store = std::sync::Arc::clone(f.gateway.store());
    let inserted = hmac_order.clone();
    let written = tokio::task::spawn_blocking(move || store.insert_order(&inserted))
        .await
        .expect("join")
        .expect("insert");
    assert!(matches!(written, wxpay::store::Inserted::New));
    let hmac_no = hmac_order.out_trade_no.as_str();
    let fee = hmac_order.total_fee;
    let notify = |algorithm, no: &str, txid: &str| {
        payment_notification_signed_with(algorithm, no, fee, txid, "")
    };

    let downgraded = notify(SignType::Md5, hmac_no, "4200000000000000000000000071");
    let (status, reply) = f.post_notification("/notify/pay", downgraded).await;
    assert_eq!(status, 200);
    assert!(reply.contains("FAIL"), "{reply}");
    assert_eq!(f.order(hmac_no).await.state, OrderState::Pending);

    let genuine = notify(
        SignType::HmacSha256,
        hmac_no,
        "4200000000000000000000000072",
    );
    let (_, reply) = f.post_notification("/notify/pay", genuine).await;
    assert_eq!(reply, ACK);
    assert_eq!(f.order(hmac_no).await.state, OrderState::Paid);

    let hmac_for_md5 = notify(
        SignType::HmacSha256,
        &md5_no,
        "4200000000000000000000000073",
    );
    let (_, reply) = f.post_notification("/notify/pay", hmac_for_md5).await;
    assert!(reply.contains("FAIL"), "{reply}");
    let md5_for_md5 = notify(SignType::Md5, &md5_no, "4200000000000000000000000074");
    let (_, reply) = f.post_notification("/notify/pay", md5_for_md5).await;
    assert_eq!(reply, ACK);
    assert_eq!(f.order(&md5_no).await.state, OrderState::Paid);
}

/// A genuine notification over the configured body cap is refused even
/// when it reaches the gateway by another way than the HTTP server (which
/// refuses it unread): the cap holds on every path to verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_over_the_body_cap_is_refused_on_every_path() {
    let f = Fixture::start(Options {
        max_body_bytes: 1024,
        ..Options::default()
    })
    .await;
    let no = f.create("tea", "capped").await;
    let fee = f.order(&no).await.total_fee;
    let long = payment_notification_signed_with(
        SignType::HmacSha256,
        &no,
        fee,
        "4200000000000000000000000081",
        &"a".repeat(600),
    );
    assert!(long.len() > 1024, "{} bytes", long.len());
    let reply = f.gateway.payment_notification(long).await.expect("handled");
    assert!(!reply.acknowledged);
    assert_eq!(reply.reason, "malformed");
    assert_eq!(f.order(&no).await.state, OrderState::Pending);

    let short = payment_notification_signed_with(
        SignType::HmacSha256,
        &no,
        fee,
        "4200000000000000000000000082",
        "",
    );
    assert!(short.len() <= 1024, "{} bytes", short.len());
    let reply = f
        .gateway
        .payment_notification(short)
        .await
        .expect("handled");
    assert!(reply.acknowledged, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_concurrent_notifications_change_the_order_once() {
    let f = Fixture::start(Options::default()).await;
    for product in ["duplicate", "concurrent"] {
        let no = f.create(product, product).await;
        f.pay(&no).await;
        let paid = f.wait_for(&no, OrderState::Paid).await;
        let notes = f
            .wait_for_notifications(&no, |notes| {
                notes.iter().any(|n| n.verdict == Verdict::Duplicate)
            })
            .await;
        assert_eq!(
            notes
                .iter()
                .filter(|n| n.verdict == Verdict::Accepted)
                .count(),
            1
        );
        assert!(
            notes.iter().any(|n| n.verdict == Verdict::Duplicate),
            "{product}: {notes:?}"
        );
        assert_eq!(f.order(&no).await.version, paid.version);
    }

    let no = f.create("tea", "stampede").await;
    let body = f.notification(&no, 1200, "4200000000000000000000000099");
    let url = format!("http://{}/notify/pay", f.notify);
    let posts = (0..24).map(|_| {
        let (http, url, body) = (f.http.clone(), url.clone(), body.clone());
        async move {
            let response = http.post(url).body(body).send().await.expect("post");
            let status = response.status().as_u16();
            (status, response.text().await.expect("text"))
        }
    });
    let replies = futures_join_all(posts).await;
    assert!(
        replies
            .iter()
            .all(|(status, reply)| *status == 200 && reply == ACK),
        "{replies:?}"
    );
    let notes: Vec<_> = f
        .notifications()
        .await
        .into_iter()
        .filter(|n| n.out_trade_no.as_deref() == Some(no.as_str()))
        .collect();
    assert_eq!(notes.len(), 24);
    assert_eq!(
        notes
            .iter()
            .filter(|n| n.verdict == Verdict::Accepted)
            .count(),
        1
    );
    let order = f.order(&no).await;
    assert_eq!((order.state, order.version), (OrderState::Paid, 3));
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send,
{
    let mut set = tokio::task::JoinSet::new();
    for (i, future) in futures.enumerate() {
        set.spawn(async move { (i, future.await) });
    }
    let mut out: Vec<_> = set.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, v)| v).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_key_comes_from_getsignkey() {
    let f = Fixture::start(Options {
        sign_type: "MD5",
        sandbox: true,
        ..Options::default()
    })
    .await;
    let no = f.create("normal", "sandbox").await;
    f.pay(&no).await;
    let paid = f.wait_for(&no, OrderState::Paid).await;
    assert!(paid.transaction_id.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_sandbox_key_is_fetched_again_and_every_instance_rekeyed() {
    let f = Fixture::start(Options {
        sign_type: "MD5",
        sandbox: true,
        sandbox_key_ttl_secs: 0,
        ..Options::default()
    })
    .await;
    let before = fetched_again();
    let no = f.create("normal", "sandbox-ttl").await;
    f.pay(&no).await;
    f.wait_for(&no, OrderState::Paid).await;
    let queried = f.gateway.query_order(&no, "test").await.expect("query");
    assert_eq!(queried.state, OrderState::Paid);
    assert!(
        fetched_again() >= before + 2,
        "one fetch per call with a zero TTL"
    );
}

fn fetched_again() -> usize {
    let logs = String::from_utf8_lossy(&captured_logs().lock().expect("logs")).into_owned();
    logs.matches("sandbox key fetched again").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_appears_in_no_log_line_and_no_reply() {
    let f = Fixture::start(Options::default()).await;
    let no = f.create("forged", "leak-check").await;
    f.pay(&no).await;
    f.wait_for(&no, OrderState::Paid).await;
    let forged = f.notification(&no, 1, "4200000000000000000000000003");
    let _ = f.post_notification("/notify/pay", forged).await;
    let warnings = f.gateway.self_check(true).await;
    assert!(warnings.is_empty(), "{warnings:?}");

    let logs = String::from_utf8_lossy(&captured_logs().lock().expect("logs")).into_owned();
    assert!(
        logs.contains("notification rejected"),
        "logging is captured"
    );
    for secret in [KEY, SANDBOX_KEY] {
        assert!(!logs.contains(secret), "a log line holds a key");
        for reply in f.replies.lock().expect("replies").iter() {
            assert!(!reply.contains(secret), "a reply holds a key");
        }
        for event in f.audit().await {
            assert!(!event.detail.contains(secret) && !event.outcome.contains(secret));
        }
    }
    assert!(!f.replies.lock().expect("replies").is_empty());
    assert!(!format!("{:?}", f.gateway.config()).contains(KEY));
    assert!(!f.gateway.config().redacted_toml().contains(KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_check_catches_a_key_that_does_not_fit_the_environment() {
    // A sandbox key against production URLs: the probe's orderquery is refused.
    let f = Fixture::start(Options {
        key: SANDBOX_KEY,
        ..Options::default()
    })
    .await;
    let warnings = f.gateway.self_check(true).await;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("sandbox key") && w.contains("production")),
        "{warnings:?}"
    );
    assert!(warnings.iter().all(|w| !w.contains(SANDBOX_KEY)));

    // Any key but the production key cannot fetch the sandbox key.
    let refused = Fixture::try_start(Options {
        key: SANDBOX_KEY,
        sign_type: "MD5",
        sandbox: true,
        ..Options::default()
    })
    .await;
    match refused {
        Ok(_) => panic!("getsignkey accepted a sandbox key"),
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("getsignkey"), "{message}");
            assert!(!message.contains(SANDBOX_KEY) && !message.contains(KEY));
        }
    }
    let logs = String::from_utf8_lossy(&captured_logs().lock().expect("logs")).into_owned();
    assert!(logs.contains("needs the merchant's production APIv2 key"));

    // A key of the wrong length is reported without being shown.
    let short = Fixture::try_start(Options {
        key: "0123456789abcdef",
        ..Options::default()
    })
    .await
    .expect("gateway starts");
    let warnings = short.gateway.self_check(false).await;
    assert!(
        warnings.iter().any(|w| w.contains("16 characters")),
        "{warnings:?}"
    );
}
