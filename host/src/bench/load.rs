//! `wxpay bench load`: payment intents and notifications driven through
//! the real HTTP stack of a gateway, with the simulator as WeChat.
//!
//! # Why it is shaped this way
//!
//! **What users wait for, end to end.** An intent is an agent's `POST
//! /v1/payments`: guardrails, the order signed in the component, the
//! unifiedorder round trip to the simulator over TLS, and the durable
//! writes, until `payment_pending` comes back. A notification is WeChat's
//! `POST /notify/pay`: parsing and verifying in the component against the
//! stored order, the durable compare-and-set, and the ACK. Each order the
//! intents placed gets one genuine notification, then optional duplicates
//! (the common case of WeChat retrying), measured apart.
//!
//! **Latency from when a request was due.** With `--rate`, each request is
//! due at a fixed time; its latency runs from then, not from when it was
//! sent, so a stalled gateway shows up in the percentiles instead of
//! silently slowing the generator (no coordinated omission). Without a
//! rate, `--concurrency` requests are kept in flight back to back.
//!
//! **A floor beside the figure.** The same notifications then go to a
//! server that only answers the ACK, from the same generator: what this
//! machine's HTTP stack and generator cost before the gateway does any
//! work. Notifications are sent the way WeChat's servers would send them,
//! one keep-alive connection per worker (see `deliver.rs`), so the generator
//! takes as little as it can of the cores it shares with the gateway.
//!
//! **Bounded and honest.** Counts are fixed, a deadline stops a run that
//! cannot finish, and the run fails unless every intent was placed, every
//! notification got the exact ACK, and every order is paid in the store
//! afterwards. The generator shares the machine with the gateway and the
//! simulator, which the report says.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use hyper::body::Bytes;

use super::deliver::Deliverer;
use crate::agents::{Capability, Grant};
use crate::demo::Stage;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::sandbox::Sandbox;
use crate::store::{Inserted, Order, OrderState, StoreResult};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Payment intents to place (and then notifications to send, one each).
    pub intents: usize,
    /// More pending orders written straight to the store (see
    /// [`seed_orders`]), so the notifications outnumber the intents.
    pub seeded: usize,
    /// Extra copies of every notification, sent after the first round.
    pub duplicates: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests per second offered (`None`: as fast as `concurrency` allows).
    pub rate: Option<f64>,
    /// Put the gateway's state in this Redis instead of SQLite.
    pub redis: Option<String>,
    /// Give up on a phase after this long.
    pub deadline: Duration,
}

/// How a phase sends its requests.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests per second offered (`None`: back to back).
    pub rate: Option<f64>,
    /// Give up after this long.
    pub deadline: Duration,
}

impl LoadOptions {
    fn pace(&self) -> Pace {
        Pace {
            concurrency: self.concurrency,
            rate: self.rate,
            deadline: self.deadline,
        }
    }
}

/// One phase's measurements.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// What was measured.
    pub name: &'static str,
    /// Requests that succeeded.
    pub ok: usize,
    /// Requests that failed, with the first failure.
    pub failed: usize,
    /// The first failure, if any.
    pub first_failure: Option<String>,
    /// From the first request due to the last answer.
    pub elapsed: Duration,
    /// Latencies of the successful requests, sorted.
    pub latencies: Vec<Duration>,
}

impl PhaseReport {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The latency below which `q` of the successful requests finished.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    /// The report as one aligned line.
    pub fn line(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "{:<24} {:>7} ok {:>5} failed {:>10.1}/s   p50 {:>7.2} ms   p99 {:>7.2} ms   p999 {:>7.2} ms",
            self.name,
            self.ok,
            self.failed,
            self.throughput(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
            ms(self.percentile(0.999)),
        )
    }
}

/// Runs the load and prints a report to `out`. Fails when any request
/// failed or any order did not end paid.
pub async fn run(
    sandbox: Arc<Sandbox>,
    options: &LoadOptions,
    out: &mut (dyn Write + Send),
) -> Result<Vec<PhaseReport>, Error> {
    let stage = Stage::start(sandbox, options.redis.as_deref()).await?;
    let token = stage
        .agent("bench-agent", &bench_grant(options.intents))
        .await?;
    let store = stage.gateway.config().store.location();
    say(out, &format!("wxpay bench load — {}", super::machine()));
    say(
        out,
        &format!(
            "gateway on {store}; simulator (WeChat) over TLS; generator, gateway and simulator share this machine"
        ),
    );
    say(
        out,
        &format!(
            "{} intents, {} seeded orders, {} duplicate rounds, concurrency {}, offered rate {}\n",
            options.intents,
            options.seeded,
            options.duplicates,
            options.concurrency,
            options
                .rate
                .map_or("unlimited".to_owned(), |r| format!("{r}/s"))
        ),
    );

    let http = client(options.concurrency)?;
    let pace = options.pace();
    let intents = place_intents(&http, &stage.api, &token, options.intents, pace).await;
    say(out, &intents.0.line());
    all_succeeded([&intents.0])?;
    let mut orders = intents.1;
    if let Some(template) = orders.first().cloned() {
        orders.extend(seed_orders(&stage.gateway, &template, options.seeded).await?);
    }
    let bodies = Arc::new(notification_bodies(&stage.gateway, &orders)?);
    say(out, &format!("sending {} notifications", bodies.len()));
    let mut reports = vec![intents.0];
    let count = bodies.len();
    let first = notify(&stage.api, &bodies, "notifications (first)", count, pace).await?;
    say(out, &first.line());
    reports.push(first);
    let floor = notify(
        &http_floor().await?,
        &bodies,
        "floor (ACK only)",
        count,
        pace,
    )
    .await?;
    say(out, &floor.line());
    reports.push(floor);
    for _ in 0..options.duplicates {
        let name = "notifications (duplicate)";
        let again = notify(&stage.api, &bodies, name, count, pace).await?;
        say(out, &again.line());
        reports.push(again);
    }
    check_paid(&stage.gateway, &orders).await?;
    say(
        out,
        &format!("\nall {} orders are paid in the store", orders.len()),
    );
    if let Some(stats) = stage.gateway.store().commit_stats() {
        say(
            out,
            &format!(
                "store: {} changes in {} commits and {} flushes of the WAL",
                stats.changes, stats.commits, stats.flushes
            ),
        );
    }
    all_succeeded(&reports)?;
    Ok(reports)
}

/// An HTTP client keeping `concurrency` connections alive.
pub(crate) fn client(concurrency: usize) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(1))
        .build()
        .map_err(|e| Error::input("http client", e))
}

/// Fails, naming the first failure, unless every request of every phase succeeded.
pub(crate) fn all_succeeded<'a>(
    reports: impl IntoIterator<Item = &'a PhaseReport>,
) -> Result<(), Error> {
    match reports.into_iter().find(|r| r.failed > 0) {
        None => Ok(()),
        Some(failed) => Err(Error::input(
            "bench",
            format!(
                "{}: {} requests failed, first: {}",
                failed.name,
                failed.failed,
                failed.first_failure.as_deref().unwrap_or("?")
            ),
        )),
    }
}

fn say(out: &mut (dyn Write + Send), line: &str) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// An agent allowed `intents` tea orders.
pub(crate) fn bench_grant(intents: usize) -> Grant {
    Grant {
        capabilities: [Capability::Create, Capability::Read].into_iter().collect(),
        products: vec!["tea".into()],
        per_payment_cap_fen: 10_000,
        daily_budget_fen: 1_200 * intents as u64 + 1,
        approval_threshold_fen: None,
        refunds_need_approval: true,
    }
}

/// A placed order: its number and amount.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    out_trade_no: String,
    amount_fen: u64,
}

/// `count` agent intents (`POST /v1/payments`) until `payment_pending`.
pub(crate) async fn place_intents(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    count: usize,
    pace: Pace,
) -> (PhaseReport, Vec<Placed>) {
    let placed = Arc::new(std::sync::Mutex::new(Vec::with_capacity(count)));
    let (http, url, token, run) = (
        http.clone(),
        format!("{api}/v1/payments"),
        token.to_owned(),
        std::process::id(),
    );
    let sink = Arc::clone(&placed);
    let request: Request = Arc::new(move |_worker, i| {
        let (http, url, token, sink) =
            (http.clone(), url.clone(), token.clone(), Arc::clone(&sink));
        Box::pin(async move {
            let body = json!({"product_id": "tea", "idempotency_key": format!("bench-{run}-{i}")});
            let reply = http
                .post(&url)
                .bearer_auth(&token)
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = reply.status();
            let text = reply.text().await.map_err(|e| e.to_string())?;
            let value: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if !status.is_success() || value["status"] != "payment_pending" {
                return Err(format!("{status}: {text}"));
            }
            let order = Placed {
                out_trade_no: value["payment_id"].as_str().unwrap_or_default().to_owned(),
                amount_fen: value["amount_fen"].as_u64().unwrap_or_default(),
            };
            sink.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(order);
            Ok(())
        })
    });
    let report = drive("intents (agent API)", count, request, pace).await;
    let orders = std::mem::take(
        &mut *placed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    (report, orders)
}

/// `count` more pending orders like `template` (one the agent API placed),
/// written straight to the gateway's store, so callbacks can be measured
/// on first deliveries at rates the intent path could not feed in time.
/// They belong to no agent, so no budget counts them.
pub(crate) async fn seed_orders(
    gateway: &Gateway,
    template: &Placed,
    count: usize,
) -> Result<Vec<Placed>, Error> {
    let template = gateway.stored_order(&template.out_trade_no).await?;
    let run = std::process::id();
    let mut writes = tokio::task::JoinSet::new();
    let mut seeded = Vec::with_capacity(count);
    for i in 0..count {
        let order = Order {
            out_trade_no: format!("seed{run}x{i}"),
            idempotency_key: None,
            agent_id: None,
            ..template.clone()
        };
        seeded.push(Placed {
            out_trade_no: order.out_trade_no.clone(),
            amount_fen: order.total_fee,
        });
        let store = Arc::clone(gateway.store());
        writes.spawn_blocking(move || store.insert_order(&order));
        if writes.len() >= SEED_WRITERS {
            seeded_one(writes.join_next().await)?;
        }
    }
    while let Some(joined) = writes.join_next().await {
        seeded_one(Some(joined))?;
    }
    Ok(seeded)
}

/// Writes in flight while seeding: enough for group commit to batch them.
const SEED_WRITERS: usize = 64;

type SeedWrite = Result<StoreResult<Inserted<Order>>, tokio::task::JoinError>;

fn seeded_one(joined: Option<SeedWrite>) -> Result<(), Error> {
    match joined {
        None | Some(Ok(Ok(Inserted::New))) => Ok(()),
        Some(Ok(Ok(Inserted::Exists(o)))) => Err(Error::input(
            "bench",
            format!("seeded order {} already exists", o.out_trade_no),
        )),
        Some(Ok(Err(e))) => Err(e.into()),
        Some(Err(e)) => Err(Error::input("bench seeding task", e)),
    }
}

/// One genuine payment notification per order, signed in the component
/// with the gateway's own merchant (the key never leaves it).
pub(crate) fn notification_bodies(
    gateway: &Gateway,
    orders: &[Placed],
) -> Result<Vec<Bytes>, Error> {
    orders
        .iter()
        .enumerate()
        .map(|(i, order)| {
            gateway.sign(|s| {
                super::payment_notification(
                    &mut s.instance,
                    &s.merchant,
                    &order.out_trade_no,
                    order.amount_fen,
                    &format!("42{i:026}"),
                )
                .map(Bytes::from)
            })
        })
        .collect()
}

/// `count` notifications to `{api}/notify/pay`, going round `bodies`,
/// from one connection per worker (see `Deliverer`); each must get the
/// exact ACK.
pub(crate) async fn notify(
    api: &str,
    bodies: &Arc<Vec<Bytes>>,
    name: &'static str,
    count: usize,
    pace: Pace,
) -> Result<PhaseReport, Error> {
    let deliverer = Deliverer::new(&format!("{api}/notify/pay"), pace.concurrency)?;
    let bodies = Arc::clone(bodies);
    let request: Request = Arc::new(move |worker, i| {
        let body = bodies
            .get(i % bodies.len().max(1))
            .cloned()
            .unwrap_or_default();
        let deliverer = Arc::clone(&deliverer);
        Box::pin(async move {
            let answer = deliverer.post(worker, body).await?;
            if answer.status.is_success() && acknowledged(&answer.body) {
                Ok(())
            } else {
                Err(format!(
                    "{}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ))
            }
        })
    });
    Ok(drive(name, count, request, pace).await)
}

/// Whether `body` is, byte for byte, the ACK WeChat waits for.
fn acknowledged(body: &[u8]) -> bool {
    body == wxpay_guest::notify::ACK.as_bytes()
}

/// Fails unless every order is paid in the gateway's store.
pub(crate) async fn check_paid(gateway: &Gateway, orders: &[Placed]) -> Result<(), Error> {
    let numbers: Vec<String> = orders.iter().map(|o| o.out_trade_no.clone()).collect();
    let unpaid = gateway
        .db(move |s| {
            let mut unpaid = Vec::new();
            for no in &numbers {
                if s.order(no)?.is_none_or(|o| o.state != OrderState::Paid) {
                    unpaid.push(no.clone());
                }
            }
            Ok(unpaid)
        })
        .await?;
    match unpaid.first() {
        None => Ok(()),
        Some(first) => Err(Error::input(
            "bench load",
            format!(
                "{} orders are not paid after their ACK, e.g. {first}",
                unpaid.len()
            ),
        )),
    }
}

/// Request `i` (second argument), sent by a worker (first argument).
type Request = Arc<
    dyn Fn(usize, usize) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// Sends requests `0..count` with `concurrency` workers, each request due
/// at its slot of the offered rate (or at once without a rate).
async fn drive(name: &'static str, count: usize, request: Request, pace: Pace) -> PhaseReport {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + pace.deadline;
    let rate = pace.rate.filter(|r| *r > 0.0);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..pace.concurrency.max(1) {
        let (next, request) = (Arc::clone(&next), Arc::clone(&request));
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures: Vec<String> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() > deadline {
                    return (latencies, failures);
                }
                let due = match rate {
                    Some(rate) => start + Duration::from_secs_f64(i as f64 / rate),
                    None => Instant::now(),
                };
                tokio::time::sleep_until(due.into()).await;
                match tokio::time::timeout_at(deadline.into(), request(worker, i)).await {
                    Ok(Ok(())) => latencies.push(due.elapsed()),
                    Ok(Err(e)) => failures.push(e),
                    Err(_) => failures.push("deadline passed".to_owned()),
                }
            }
        });
    }
    let mut latencies = Vec::with_capacity(count);
    let mut failures = Vec::new();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((l, f)) => {
                latencies.extend(l);
                failures.extend(f);
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let missing = count.saturating_sub(latencies.len() + failures.len());
    PhaseReport {
        name,
        ok: latencies.len(),
        failed: failures.len() + missing,
        first_failure: failures
            .first()
            .cloned()
            .or_else(|| (missing > 0).then(|| format!("{missing} not sent before the deadline"))),
        elapsed,
        latencies,
    }
}

/// A server that answers every `POST /notify/pay` with the ACK and does
/// nothing else: the floor under which no callback handler on this HTTP
/// stack and machine can go. Returns its base URL.
pub(crate) async fn http_floor() -> Result<String, Error> {
    let (listener, addr) = crate::listen::bind(([127, 0, 0, 1], 0).into()).await?;
    let app = axum::Router::new().route(
        "/notify/pay",
        axum::routing::post(|body: axum::body::Bytes| async move {
            std::hint::black_box(body);
            wxpay_guest::notify::ACK
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(crate::listen::no_delay(listener), app).await {
            tracing::error!(error = %e, "the HTTP floor server stopped");
        }
    });
    Ok(format!("http://{addr}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{PhaseReport, acknowledged};

    #[test]
    fn percentiles_are_nearest_rank_over_the_sorted_latencies() {
        let report = PhaseReport {
            name: "t",
            ok: 1_000,
            failed: 0,
            first_failure: None,
            elapsed: Duration::from_secs(2),
            latencies: (1..=1_000).map(Duration::from_millis).collect(),
        };
        let ms = |q| report.percentile(q).as_millis();
        assert_eq!(
            (ms(0.5), ms(0.99), ms(0.999), ms(1.0)),
            (500, 990, 999, 1_000)
        );
        assert!((report.throughput() - 500.0).abs() < 1e-9);
        let empty = PhaseReport {
            latencies: Vec::new(),
            ok: 0,
            ..report
        };
        assert_eq!(empty.percentile(0.99), Duration::ZERO);
        assert_eq!(empty.throughput(), 0.0);
    }

    #[test]
    fn only_the_exact_ack_counts_as_acknowledged() {
        assert!(acknowledged(wxpay_guest::notify::ACK.as_bytes()));
        let with_a_reason = wxpay_guest::notify::ACK.replace("OK", "received");
        let refusal = wxpay_guest::notify::nack("busy");
        for other in [with_a_reason.as_str(), refusal.as_str(), ""] {
            assert!(!acknowledged(other.as_bytes()), "{other}");
        }
    }
}
