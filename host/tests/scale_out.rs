//! Scale-out and crash safety, proved on real processes: several `wxpay
//! serve` gateways sharing one Redis, and gateways killed with `kill -9` at
//! random points while payments and notifications flow. No payment may be
//! lost, applied twice or credited twice, and the audit log must agree
//! with the state. Every run is bounded in count and time, on loopback.
//!
//! The chaos tests print their random seed; `WXPAY_CHAOS_SEED` replays the
//! same kill plan and traffic (the processes' own timing still varies).

// Test helpers report a failure by panicking.
#![allow(clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use wxpay::simulator::config::Settings;
use wxpay::store::{OrderState, SqliteStore, Store, Verdict};

#[path = "support/mod.rs"]
mod support;

#[path = "support/fixture.rs"]
mod fixture;

use support::processes::{
    Served, config_file, edit_config, free_port, serve, simulator_with, text, use_redis,
    with_config,
};

/// The exact acknowledgement WeChat stops retrying on.
const ACK: &str = "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";

/// Where the gateways keep their state.
enum Backend {
    Sqlite,
    Redis,
}

/// Gateways (real processes) on one store, a simulator, and an agent.
struct Cluster {
    _dir: tempfile::TempDir,
    sim: String,
    configs: Vec<PathBuf>,
    ports: Vec<u16>,
    served: Mutex<Vec<Option<Served>>>,
    store: Arc<dyn Store>,
    http: reqwest::Client,
}

impl Cluster {
    async fn start(gateways: usize, backend: &Backend, settings: Settings, fast: bool) -> Self {
        let sim = simulator_with(settings).await;
        let dir = tempfile::tempdir().expect("dir");
        let prefix = support::redis::unique_prefix();
        let mut configs = Vec::new();
        let mut ports = Vec::new();
        for i in 0..gateways {
            let home = dir.path().join(format!("gateway-{i}"));
            std::fs::create_dir_all(&home).expect("dir");
            let port = free_port();
            let config = config_file(&home, &sim, port);
            if let Backend::Redis = backend {
                use_redis(&config, support::redis::url(), &prefix);
            }
            if fast {
                edit_config(&config, "interval_secs = 60", "interval_secs = 1");
                edit_config(
                    &config,
                    "pending_after_secs = 120",
                    "pending_after_secs = 1",
                );
            }
            configs.push(config);
            ports.push(port);
        }
        let store: Arc<dyn Store> = match backend {
            Backend::Redis => Arc::new(support::redis::open(&prefix)),
            Backend::Sqlite => {
                Arc::new(SqliteStore::open(dir.path().join("gateway-0/wxpay.db")).expect("open"))
            }
        };
        let served = Mutex::new(configs.iter().map(|c| Some(serve(c))).collect());
        Self {
            _dir: dir,
            sim,
            configs,
            ports,
            served,
            store,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    /// Enrolls an agent with the operator CLI; returns its token.
    fn agent(&self, id: &str, products: &str, budget_fen: u64) -> String {
        let run = with_config(&self.configs[0]);
        let added = run(&[
            "agents",
            "add",
            id,
            "--capabilities",
            "create,read,charge",
            "--products",
            products,
            "--cap-fen",
            "200000",
            "--daily-budget-fen",
            &budget_fen.to_string(),
        ]);
        assert!(added.status.success(), "{}", text(&added.stderr));
        text(&added.stdout).trim().to_owned()
    }

    fn url(&self, gateway: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[gateway])
    }

    /// An agent API call; `None` when the gateway did not answer.
    async fn api(
        &self,
        gateway: usize,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let request = match body {
            Some(body) => self
                .http
                .post(self.url(gateway, path))
                .header("Content-Type", "application/json")
                .body(body.to_string()),
            None => self.http.get(self.url(gateway, path)),
        };
        let response = request.bearer_auth(token).send().await.ok()?;
        let status = response.status().as_u16();
        let value = serde_json::from_str(&response.text().await.ok()?).ok()?;
        Some((status, value))
    }

    async fn notify(&self, gateway: usize, body: Vec<u8>) -> (u16, String) {
        let response = self
            .http
            .post(self.url(gateway, "/notify/pay"))
            .body(body)
            .send()
            .await
            .expect("the gateway answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("text"))
    }

    /// Asks the simulator to have the payer pay; true when it took it.
    async fn pay(&self, no: &str) -> bool {
        let paid = self
            .http
            .post(format!("{}/admin/pay", self.sim))
            .header("Content-Type", "application/json")
            .body(json!({"out_trade_no": no}).to_string())
            .send()
            .await;
        paid.is_ok_and(|r| r.status().is_success())
    }

    /// `kill -9` of one gateway, if it runs.
    fn kill(&self, gateway: usize) {
        let taken = self.served.lock().expect("lock")[gateway].take();
        if let Some(served) = taken {
            served.kill();
        }
    }

    /// Starts the gateway again (killing it first if it runs).
    async fn restart(&self, gateway: usize) {
        self.kill(gateway);
        let started = tokio::task::block_in_place(|| serve(&self.configs[gateway]));
        self.served.lock().expect("lock")[gateway] = Some(started);
    }
}

/// A top-up of `amount_fen` for `payer` through `gateway`; its payment id.
async fn top_up(
    cluster: &Cluster,
    gateway: usize,
    token: &str,
    payer: &str,
    amount_fen: u64,
    key: &str,
) -> Option<String> {
    let body = json!({"amount_fen": amount_fen, "idempotency_key": key});
    let path = format!("/v1/balances/{payer}/topups");
    let (status, reply) = cluster.api(gateway, token, &path, Some(body)).await?;
    assert!(status < 300, "top-up refused: {status} {reply}");
    reply["payment_id"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_apply_each_notification_exactly_once() {
    const ORDERS: usize = 4;
    const DELIVERIES: usize = 40;
    let cluster = Cluster::start(2, &Backend::Redis, Settings::default(), false).await;
    let token = cluster.agent("biller", "credits-100", 10_000_000);
    for k in 0..ORDERS {
        let payer = format!("payer-{k}");
        let no = top_up(&cluster, k % 2, &token, &payer, 1_000, &format!("t-{k}"))
            .await
            .expect("the top-up is placed");
        let body = fixture::payment_notification(&no, 1_000, &format!("4200000{k}"));
        let deliveries = (0..DELIVERIES).map(|i| cluster.notify(i % 2, body.clone()));
        let replies = join_all(deliveries).await;
        for (status, reply) in &replies {
            assert_eq!(
                (*status, reply.as_str()),
                (200, ACK),
                "every delivery is ACKed"
            );
        }

        let order = cluster.store.order(&no).expect("read").expect("stored");
        assert_eq!(order.state, OrderState::Paid);
        assert_eq!(order.version, 3, "created, pending, paid: one state change");
        let recorded: Vec<Verdict> = cluster
            .store
            .notifications(u32::MAX, 0)
            .expect("notifications")
            .into_iter()
            .filter(|n| n.out_trade_no.as_deref() == Some(no.as_str()))
            .map(|n| n.verdict)
            .collect();
        assert_eq!(recorded.len(), DELIVERIES, "every delivery is recorded");
        let accepted = recorded.iter().filter(|v| **v == Verdict::Accepted);
        assert_eq!(accepted.count(), 1);
        assert!(
            recorded
                .iter()
                .all(|v| matches!(v, Verdict::Accepted | Verdict::Duplicate))
        );
        let entries = cluster.store.ledger(&payer, 100).expect("ledger");
        assert_eq!(entries.len(), 1, "one credit: {entries:?}");
        assert_eq!(cluster.store.balance(&payer).expect("balance"), 1_000);
        let paid_events = cluster
            .store
            .audit(0, 10_000)
            .expect("audit")
            .into_iter()
            .filter(|e| e.subject == no && e.action == "notification.payment")
            .count();
        assert_eq!(paid_events, 1, "one audit record of the payment");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_two_gateways_cannot_together_exceed_a_budget_or_a_balance() {
    let cluster = Cluster::start(2, &Backend::Redis, Settings::default(), false).await;
    let buyer = cluster.agent("buyer", "tea", 4_800);
    let attempts = (0..12).map(|i| {
        let body = json!({"product_id": "tea", "idempotency_key": format!("b-{i}")});
        cluster.api(i % 2, &buyer, "/v1/payments", Some(body))
    });
    let outcomes: Vec<(u16, Value)> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.expect("the gateway answers"))
        .collect();
    let placed = outcomes
        .iter()
        .filter(|(_, v)| v["status"] == "payment_pending")
        .count();
    assert_eq!(
        placed, 4,
        "4,800 fen buys four 1,200-fen teas: {outcomes:?}"
    );
    for (status, reply) in outcomes
        .iter()
        .filter(|(_, v)| v["status"] != "payment_pending")
    {
        assert_eq!(
            (*status, reply["error"]["code"].as_str()),
            (403, Some("over_budget")),
            "{reply}"
        );
    }

    let biller = cluster.agent("biller", "credits-100", 10_000_000);
    let no = top_up(&cluster, 0, &biller, "shared", 1_000, "top")
        .await
        .expect("placed");
    let (status, ack) = cluster
        .notify(1, fixture::payment_notification(&no, 1_000, "4200000099"))
        .await;
    assert_eq!((status, ack.as_str()), (200, ACK));
    // Two agents charge the same payer through both gateways at once.
    let second = cluster.agent("biller-2", "credits-100", 10_000_000);
    let charges = (0..16).map(|i| {
        let body =
            json!({"payer_id": "shared", "amount_fen": 150, "idempotency_key": format!("c-{i}")});
        let token = if i % 4 < 2 { &biller } else { &second };
        cluster.api(i % 2, token, "/v1/charges", Some(body))
    });
    let charged: Vec<(u16, Value)> = join_all(charges)
        .await
        .into_iter()
        .map(|r| r.expect("the gateway answers"))
        .collect();
    let ok = charged.iter().filter(|(s, _)| *s < 300).count();
    assert_eq!(ok, 6, "1,000 fen covers six 150-fen charges: {charged:?}");
    for (status, reply) in charged.iter().filter(|(s, _)| *s >= 300) {
        assert_eq!(
            (*status, reply["error"]["code"].as_str()),
            (402, Some("insufficient_funds")),
            "{reply}"
        );
    }
    for gateway in 0..2 {
        let (_, balance) = cluster
            .api(gateway, &biller, "/v1/balances/shared", None)
            .await
            .expect("balance");
        assert_eq!(balance["balance_fen"], 100, "{balance}");
    }
}

/// What the driver did: orders placed, and those the payer paid.
#[derive(Debug, Default)]
struct Traffic {
    /// Top-up payment id → payer.
    topups: BTreeMap<String, String>,
    /// Paid at (simulated) WeChat.
    paid: BTreeSet<String>,
}

/// Places payments and top-ups through random live gateways, and has the
/// simulator pay each one, until told to stop. Requests that fail because
/// a gateway died are retried with the same idempotency key.
async fn drive(
    cluster: &Cluster,
    token: &str,
    stop: &AtomicBool,
    seed: u64,
    lane: usize,
) -> Traffic {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (0x5eed + lane as u64));
    let mut traffic = Traffic::default();
    let mut retry: Vec<usize> = Vec::new();
    let mut next = lane * 1_000_000;
    while !stop.load(Ordering::Relaxed) {
        let i = match retry.pop() {
            Some(i) => i,
            None => {
                next += 1;
                next
            }
        };
        let gateway = rng.random_range(0..cluster.ports.len());
        let placed = if i % 2 == 0 {
            let payer = format!("payer-{}", i % 5);
            let no = top_up_once(cluster, gateway, token, &payer, i).await;
            if let Some(no) = &no {
                traffic.topups.insert(no.clone(), payer);
            }
            no
        } else {
            let body = json!({"product_id": "tea", "idempotency_key": format!("p-{i}")});
            match cluster
                .api(gateway, token, "/v1/payments", Some(body))
                .await
            {
                Some((_, v)) if v["status"] == "payment_pending" => {
                    v["payment_id"].as_str().map(str::to_owned)
                }
                _ => None,
            }
        };
        match placed {
            Some(no) if cluster.pay(&no).await => {
                traffic.paid.insert(no);
            }
            Some(_) => {}
            None => retry.push(i),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
    }
    traffic
}

async fn top_up_once(
    cluster: &Cluster,
    gateway: usize,
    token: &str,
    payer: &str,
    i: usize,
) -> Option<String> {
    let body = json!({"amount_fen": 500, "idempotency_key": format!("t-{i}")});
    let path = format!("/v1/balances/{payer}/topups");
    pending_id(cluster.api(gateway, token, &path, Some(body)).await)
}

/// The payment id of a reply saying the payment waits for the payer.
fn pending_id(reply: Option<(u16, Value)>) -> Option<String> {
    match reply {
        Some((_, v)) if v["status"] == "payment_pending" => {
            v["payment_id"].as_str().map(str::to_owned)
        }
        _ => None,
    }
}

/// Agents placing payments at once during the chaos tests.
const DRIVERS: usize = 3;

/// Kills gateways with `kill -9` at random moments while traffic flows,
/// restarts them, then checks that nothing was lost or applied twice.
async fn chaos(backend: Backend, gateways: usize, rounds: usize) {
    let seed = std::env::var("WXPAY_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("chaos seed {seed} (replay its plan with WXPAY_CHAOS_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let settings = Settings {
        clock_scale: 600.0,
        notify_timeout_ms: 2_000,
        ..Settings::default()
    };
    let cluster = Cluster::start(gateways, &backend, settings, true).await;
    let token = cluster.agent("shopper", "tea,credits-100", 1_000_000_000);
    let plan: Vec<(usize, u64, u64)> = (0..rounds)
        .map(|_| {
            (
                rng.random_range(0..gateways),
                rng.random_range(100..500),
                rng.random_range(0..150),
            )
        })
        .collect();
    let stop = AtomicBool::new(false);
    let kills = async {
        for (gateway, before_ms, down_ms) in &plan {
            tokio::time::sleep(Duration::from_millis(*before_ms)).await;
            cluster.kill(*gateway);
            tokio::time::sleep(Duration::from_millis(*down_ms)).await;
            cluster.restart(*gateway).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
    };
    let drivers = join_all((0..DRIVERS).map(|lane| drive(&cluster, &token, &stop, seed, lane)));
    let (lanes, ()) = tokio::join!(drivers, kills);
    let mut traffic = Traffic::default();
    for lane in lanes {
        traffic.topups.extend(lane.topups);
        traffic.paid.extend(lane.paid);
    }
    check_nothing_lost_or_doubled(&cluster, &traffic).await;
}

/// Every order paid at WeChat ends paid (by a callback retry or by
/// reconciliation); nothing is credited, applied or audited twice.
async fn check_nothing_lost_or_doubled(cluster: &Cluster, traffic: &Traffic) {
    assert!(!traffic.paid.is_empty(), "the driver got payments through");
    let store = Arc::clone(&cluster.store);
    let unpaid = |store: &Arc<dyn Store>| -> Vec<String> {
        traffic
            .paid
            .iter()
            .filter(|no| {
                store
                    .order(no)
                    .expect("read")
                    .is_none_or(|o| o.state != OrderState::Paid)
            })
            .cloned()
            .collect()
    };
    let start = Instant::now();
    loop {
        let left = unpaid(&store);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "paid at WeChat but not in the store: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Nothing is paid that the payer did not pay, and nothing is credited
    // twice: one ledger entry per paid top-up, balances are their sums.
    let audit = store.audit(0, u32::MAX).expect("audit");
    let seqs: Vec<i64> = audit.iter().map(|e| e.seq).collect();
    let expected: Vec<i64> = (1..=i64::try_from(audit.len()).expect("fits")).collect();
    assert_eq!(seqs, expected, "the audit log has no gaps and no rewrites");
    let mut balances: BTreeMap<&str, u64> = BTreeMap::new();
    for (no, payer) in &traffic.topups {
        if traffic.paid.contains(no) {
            *balances.entry(payer).or_default() += 500;
        }
    }
    for (payer, expected) in &balances {
        let entries = store.ledger(payer, 10_000).expect("ledger");
        let credits: Vec<&str> = entries.iter().map(|e| e.reference.as_str()).collect();
        let unique: BTreeSet<&str> = credits.iter().copied().collect();
        assert_eq!(
            credits.len(),
            unique.len(),
            "a top-up credited twice: {credits:?}"
        );
        assert_eq!(
            store.balance(payer).expect("balance"),
            *expected,
            "{payer}: the sum of its paid top-ups"
        );
    }
    for no in &traffic.paid {
        let payments = audit
            .iter()
            .filter(|e| &e.subject == no && e.outcome == "paid")
            .count();
        assert_eq!(payments, 1, "{no}: one audit record of its payment");
    }
    let audited_paid: BTreeSet<&str> = audit
        .iter()
        .filter(|e| e.outcome == "paid")
        .map(|e| e.subject.as_str())
        .collect();
    for no in audited_paid {
        assert!(
            traffic.paid.contains(no),
            "{no} is audited as paid but was never paid"
        );
    }
    let accepted: Vec<String> = store
        .notifications(u32::MAX, 0)
        .expect("notifications")
        .into_iter()
        .filter(|n| n.verdict == Verdict::Accepted)
        .filter_map(|n| n.out_trade_no)
        .collect();
    let distinct: BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(
        accepted.len(),
        distinct.len(),
        "a notification applied twice"
    );
    let by_reconciliation = audit
        .iter()
        .filter(|e| e.outcome == "paid" && e.actor == "reconciliation")
        .count();
    eprintln!(
        "chaos: {} orders paid ({} learnt by reconciliation, the rest by notification), \
         {} top-ups, {} audit events",
        traffic.paid.len(),
        by_reconciliation,
        traffic.topups.len(),
        audit.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_either_gateway_on_redis_loses_nothing_and_applies_nothing_twice() {
    chaos(Backend::Redis, 2, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_gateway_on_sqlite_loses_nothing_and_applies_nothing_twice() {
    chaos(Backend::Sqlite, 1, 16).await;
}
