//! `wxpay bench suite` and `cargo bench`: everything users pay for, each
//! figure beside a baseline measured in the same run, written to
//! `BENCHMARKS.md`.
//!
//! # What is measured, and against what
//!
//! | measurement | baseline |
//! |---|---|
//! | sign a 16-field unifiedorder in the component, MD5 and HMAC-SHA256 | the same core compiled natively |
//! | verify a payment notification in the component | the same core compiled natively |
//! | instantiate per request (pooling allocator) | the on-demand allocator |
//! | `wxpay sign` as a new process, cached / not cached | `wxpay --version` |
//! | notification callbacks end to end at fixed offered loads, SQLite and Redis | a server that only ACKs, same client, same loads |
//! | agent intent → signed unifiedorder → simulator → `payment_pending` | (its p50/p99 at a fixed rate) |
//!
//! The end-to-end runs check their own work: every callback must get the
//! exact ACK and every order must end paid, or the suite fails.
//!
//! # Where the results go
//!
//! The report is printed, and with `out` set it replaces the part of that
//! file between [`BEGIN`] and [`END`] (appended if the markers are
//! missing), so analysis written around the results survives a re-run.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::load::{self, Pace, PhaseReport};
use super::micro::{self, Comparison, Effort, human};
use super::redis_server;
use crate::demo::Stage;
use crate::error::Error;
use crate::sandbox::Sandbox;
use crate::sandbox::bindings::types::SignType;

/// Where the generated part of the results file starts.
pub const BEGIN: &str = "<!-- results: written by `wxpay bench suite`; edits here are replaced -->";
/// Where it ends.
pub const END: &str = "<!-- end of results -->";

/// How much end-to-end load to apply.
#[derive(Debug, Clone)]
pub struct EndToEnd {
    /// Intents placed through the agent API; more orders are seeded in the
    /// store for the callback runs, so every callback run is first deliveries.
    pub orders: usize,
    /// Intents per second offered.
    pub intent_rate: f64,
    /// Notifications per second offered, one run each.
    pub loads: Vec<f64>,
    /// How long each fixed load runs.
    pub seconds_per_load: f64,
    /// First deliveries sent back to back.
    pub saturated: usize,
    /// The pause between seeding orders and the first measured callback:
    /// seeding writes tens of thousands of orders in seconds, a burst no
    /// gateway sees, and its checkpoint is let finish first.
    pub settle: Duration,
    /// Requests in flight at most.
    pub concurrency: usize,
}

impl EndToEnd {
    /// The suite's standard loads.
    pub fn full() -> Self {
        Self {
            orders: 2_000,
            intent_rate: 200.0,
            loads: vec![1_000.0, 2_500.0, 5_000.0],
            seconds_per_load: 3.0,
            saturated: 30_000,
            settle: Duration::from_secs(10),
            concurrency: 64,
        }
    }

    /// A smoke run.
    pub fn quick() -> Self {
        Self {
            orders: 40,
            intent_rate: 100.0,
            loads: vec![200.0],
            seconds_per_load: 0.3,
            saturated: 100,
            settle: Duration::ZERO,
            concurrency: 8,
        }
    }
}

/// Which Redis the Redis runs use.
#[derive(Debug, Clone)]
pub enum RedisChoice {
    /// This server (`redis://…`, `redis+unix://…`).
    Url(String),
    /// A private `redis-server` started for the run, if one is installed.
    StartOwn,
    /// None: the Redis rows say they were not run.
    Skip,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// The component under test.
    pub component: Vec<u8>,
    /// The `wxpay` binary started for the cold-start measurements.
    pub wxpay: PathBuf,
    /// Micro-benchmark effort.
    pub effort: Effort,
    /// End-to-end effort.
    pub end_to_end: EndToEnd,
    /// Only the measurements against native code, instantiation and cold
    /// start: well under a minute, for iterating on the component. Such a
    /// partial run is never written to the results file.
    pub micro_only: bool,
    /// The Redis for the Redis runs.
    pub redis: RedisChoice,
    /// The results file to update.
    pub out: Option<PathBuf>,
}

/// One store's end-to-end results.
#[derive(Debug)]
pub struct StoreRun {
    /// `SQLite` or `Redis`.
    pub store: &'static str,
    /// Intents at the fixed intent rate.
    pub intents: PhaseReport,
    /// Per offered load: the gateway, and the floor at the same load.
    pub callbacks: Vec<(f64, PhaseReport, PhaseReport)>,
    /// Back to back at full concurrency: the gateway and the floor.
    pub saturated: (PhaseReport, PhaseReport),
    /// Back to back again, every notification a duplicate of one already
    /// acknowledged (WeChat's retries).
    pub duplicates: PhaseReport,
}

/// Everything the suite measured.
#[derive(Debug)]
pub struct SuiteReport {
    /// The machine, in one line.
    pub machine: String,
    /// Component against native, instantiation, cold start.
    pub micro: Vec<Comparison>,
    /// SQLite, then Redis when it ran.
    pub stores: Vec<StoreRun>,
    /// Why a store did not run.
    pub skipped: Vec<String>,
}

/// Runs the suite, printing as it goes; writes the results file if asked.
pub fn run(options: &SuiteOptions, out: &mut (dyn Write + Send)) -> Result<SuiteReport, Error> {
    let machine = super::machine();
    say(out, &format!("wxpay bench suite — {machine}\n"));
    if options.micro_only && options.out.is_some() {
        return Err(Error::input(
            "results file",
            "a micro-only run is partial and is never written; print it instead",
        ));
    }
    let sandbox = Arc::new(Sandbox::from_bytes(
        &options.component,
        crate::sandbox::SandboxLimits::default(),
    )?);
    let micro = run_micro(&sandbox, options, out)?;
    if options.micro_only {
        return Ok(SuiteReport {
            machine,
            micro,
            stores: Vec::new(),
            skipped: vec!["end to end: not run: micro-only".to_owned()],
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::input("tokio runtime", e))?;
    let mut stores = vec![runtime.block_on(end_to_end(
        Arc::clone(&sandbox),
        None,
        &options.end_to_end,
        out,
    ))?];
    let mut skipped = Vec::new();
    match redis_url(&options.redis)? {
        Ok(url) => stores.push(runtime.block_on(end_to_end(
            sandbox,
            Some(&url),
            &options.end_to_end,
            out,
        ))?),
        Err(why) => {
            say(out, &format!("Redis: not run: {why}"));
            skipped.push(format!("Redis: not run: {why}"));
        }
    }
    let report = SuiteReport {
        machine,
        micro,
        stores,
        skipped,
    };
    if let Some(path) = &options.out {
        write_results(path, &markdown(&report, options))?;
        say(out, &format!("\nresults written to {}", path.display()));
    }
    Ok(report)
}

fn run_micro(
    sandbox: &Sandbox,
    options: &SuiteOptions,
    out: &mut (dyn Write + Send),
) -> Result<Vec<Comparison>, Error> {
    let effort = options.effort;
    let mut results = vec![
        micro::sign(sandbox, effort, SignType::Md5)?,
        micro::sign(sandbox, effort, SignType::HmacSha256)?,
        micro::sign_packed(sandbox, effort, SignType::Md5)?,
        micro::sign_packed(sandbox, effort, SignType::HmacSha256)?,
        micro::verify(sandbox, effort)?,
        micro::instantiate(&options.component, effort)?,
    ];
    results.extend(micro::cold_start(&options.wxpay, effort)?);
    for c in &results {
        say(out, &comparison_line(c));
    }
    Ok(results)
}

fn comparison_line(c: &Comparison) -> String {
    format!(
        "{:<66} {:>10}   baseline {:>10} ({})   ratio {:>6.2}×{}",
        c.name,
        human(c.subject),
        human(c.baseline),
        c.baseline_name,
        c.ratio(),
        goal_note(c)
    )
}

fn goal_note(c: &Comparison) -> String {
    match (c.goal, c.meets_goal()) {
        (Some(goal), Some(true)) => format!("   goal {goal}: met"),
        (Some(goal), _) => format!("   goal {goal}: NOT met"),
        (None, _) => String::new(),
    }
}

/// The URL to use, or why Redis is not run.
fn redis_url(choice: &RedisChoice) -> Result<Result<String, String>, Error> {
    Ok(match choice {
        RedisChoice::Url(url) => Ok(url.clone()),
        RedisChoice::Skip => Err("--no-redis was given".to_owned()),
        RedisChoice::StartOwn => match redis_server::find() {
            Some(binary) => Ok(redis_server::start(&binary, redis_server::DURABLE)?),
            None => Err("redis-server is not installed (give --redis URL)".to_owned()),
        },
    })
}

async fn end_to_end(
    sandbox: Arc<Sandbox>,
    redis: Option<&str>,
    e2e: &EndToEnd,
    out: &mut (dyn Write + Send),
) -> Result<StoreRun, Error> {
    let store = if redis.is_some() { "Redis" } else { "SQLite" };
    say(
        out,
        &format!("\n{store}: gateway, simulator over TLS and the load generator on this machine"),
    );
    let stage = Stage::start(sandbox, redis).await?;
    let token = stage
        .agent("bench-agent", &load::bench_grant(e2e.orders))
        .await?;
    let http = load::client(e2e.concurrency)?;
    let deadline = Duration::from_secs(120);
    let at = |rate: Option<f64>| Pace {
        concurrency: e2e.concurrency,
        rate,
        deadline,
    };
    let (intents, placed) = load::place_intents(
        &http,
        &stage.api,
        &token,
        e2e.orders,
        at(Some(e2e.intent_rate)),
    )
    .await;
    say(out, &intents.line());
    load::all_succeeded([&intents])?;
    let per_load = |rate: f64| (rate * e2e.seconds_per_load).ceil() as usize;
    let needed = e2e.loads.iter().map(|&r| per_load(r)).sum::<usize>() + e2e.saturated;
    let template = placed
        .first()
        .ok_or_else(|| Error::input("bench", "no intent was placed"))?;
    let seeded = load::seed_orders(
        &stage.gateway,
        template,
        needed.saturating_sub(placed.len()),
    )
    .await?;
    let orders: Vec<_> = placed.into_iter().chain(seeded).collect();
    tokio::time::sleep(e2e.settle).await;
    let mut fresh = load::notification_bodies(&stage.gateway, &orders)?.into_iter();
    let mut first_deliveries = |n: usize| Arc::new(fresh.by_ref().take(n).collect::<Vec<_>>());
    let floor = load::http_floor().await?;
    let mut callbacks = Vec::new();
    for &rate in &e2e.loads {
        let bodies = first_deliveries(per_load(rate));
        let count = bodies.len();
        let ours = load::notify(&stage.api, &bodies, "callbacks", count, at(Some(rate))).await?;
        let base = load::notify(&floor, &bodies, "floor", count, at(Some(rate))).await?;
        say(
            out,
            &format!("at {rate}/s  {}\n            {}", ours.line(), base.line()),
        );
        callbacks.push((rate, ours, base));
    }
    let bodies = first_deliveries(e2e.saturated);
    let count = bodies.len();
    let ours = load::notify(&stage.api, &bodies, "callbacks", count, at(None)).await?;
    let base = load::notify(&floor, &bodies, "floor", count, at(None)).await?;
    say(
        out,
        &format!("saturated   {}\n            {}", ours.line(), base.line()),
    );
    let duplicates = load::notify(&stage.api, &bodies, "duplicates", count, at(None)).await?;
    say(out, &format!("duplicates  {}", duplicates.line()));
    load::check_paid(&stage.gateway, &orders).await?;
    let at_loads = callbacks.iter().flat_map(|(_, o, b)| [o, b]);
    load::all_succeeded([&ours, &base, &duplicates].into_iter().chain(at_loads))?;
    Ok(StoreRun {
        store,
        intents,
        callbacks,
        saturated: (ours, base),
        duplicates,
    })
}

fn say(out: &mut (dyn Write + Send), line: &str) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The results as Markdown, between the markers.
pub fn markdown(report: &SuiteReport, options: &SuiteOptions) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{BEGIN}\n");
    let _ = writeln!(
        md,
        "Machine: {}. wxpay {}. Effort: {} rounds × {} calls, {} processes per kind; \
         {} intents at {}/s, callbacks for {} s per load, {} back to back.\n",
        report.machine,
        env!("CARGO_PKG_VERSION"),
        options.effort.rounds,
        options.effort.batch,
        options.effort.processes,
        options.end_to_end.orders,
        options.end_to_end.intent_rate,
        options.end_to_end.seconds_per_load,
        options.end_to_end.saturated,
    );
    md.push_str("### The component and its start-up\n\n");
    md.push_str("| measurement | time | baseline | baseline time | ratio | goal | met |\n");
    md.push_str("|---|---:|---|---:|---:|---|---|\n");
    for c in &report.micro {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.2}× | {} | {} |",
            c.name,
            human(c.subject),
            c.baseline_name,
            human(c.baseline),
            c.ratio(),
            c.goal.map_or_else(|| "—".to_owned(), |g| g.to_string()),
            match c.meets_goal() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            }
        );
    }
    for run in &report.stores {
        store_tables(&mut md, run);
    }
    for skipped in &report.skipped {
        let _ = writeln!(md, "\n{skipped}");
    }
    let _ = writeln!(md, "\n{END}");
    md
}

fn store_tables(md: &mut String, run: &StoreRun) {
    let _ = writeln!(
        md,
        "\n### Notification callbacks end to end on {} (HTTP, verify, durable write, ACK)\n",
        run.store
    );
    md.push_str(
        "Every row but the last is first deliveries: each notification moves a pending order to paid. \
         The last sends each of the back-to-back run's notifications again (WeChat's retries). \
         Baseline: a server on the same HTTP stack that only returns the ACK, driven by the same client at the same load. \
         Latency runs from when each request was due.\n\n",
    );
    md.push_str("| offered | achieved | p50 | p99 | floor p50 | floor p99 | p99 ÷ floor | goal p99 ≤ 10 ms |\n");
    md.push_str("|---:|---:|---:|---:|---:|---:|---:|---|\n");
    let row = |md: &mut String, offered: String, ours: &PhaseReport, floor: &PhaseReport| {
        let p99 = ours.percentile(0.99);
        let _ = writeln!(
            md,
            "| {offered} | {:.0}/s | {} | {} | {} | {} | {:.2}× | {} |",
            ours.throughput(),
            ms(ours.percentile(0.5)),
            ms(p99),
            ms(floor.percentile(0.5)),
            ms(floor.percentile(0.99)),
            p99.as_secs_f64() / floor.percentile(0.99).as_secs_f64().max(f64::MIN_POSITIVE),
            if p99 <= Duration::from_millis(10) {
                "met"
            } else {
                "**not met**"
            },
        );
    };
    for (rate, ours, floor) in &run.callbacks {
        row(md, format!("{rate:.0}/s"), ours, floor);
    }
    let (ours, floor) = &run.saturated;
    row(md, "back to back".to_owned(), ours, floor);
    row(
        md,
        "back to back, duplicates".to_owned(),
        &run.duplicates,
        floor,
    );
    let _ = writeln!(
        md,
        "\nThroughput back to back, first deliveries: {:.0}/s, {:.2}× the floor's {:.0}/s (goal: ≥ 20,000/s with p99 ≤ 10 ms: {}).",
        ours.throughput(),
        ours.throughput() / floor.throughput().max(f64::MIN_POSITIVE),
        floor.throughput(),
        if ours.throughput() >= 20_000.0 && ours.percentile(0.99) <= Duration::from_millis(10) {
            "met"
        } else {
            "**not met**"
        }
    );
    let i = &run.intents;
    let _ = writeln!(
        md,
        "\nAgent intents (guardrails, signed unifiedorder, simulator over TLS, durable writes, `payment_pending`) \
         at {:.0}/s offered: p50 {}, p99 {} (goal p99 ≤ 10 ms: {}).",
        i.throughput(),
        ms(i.percentile(0.5)),
        ms(i.percentile(0.99)),
        if i.percentile(0.99) <= Duration::from_millis(10) {
            "met"
        } else {
            "**not met**"
        }
    );
}

/// Replaces the marked part of `path` with `results`; a file without the
/// markers gets them appended, so nothing written there is lost.
pub fn write_results(path: &Path, results: &str) -> Result<(), Error> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let updated = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{}{}",
            &existing[..begin],
            results.trim_end(),
            &existing[end + END.len()..]
        ),
        _ if existing.trim().is_empty() => format!("# Benchmarks\n\n{results}"),
        _ => format!("{}\n\n{results}", existing.trim_end()),
    };
    std::fs::write(path, updated).map_err(|e| Error::input(path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::{BEGIN, END, write_results};

    #[test]
    fn a_rerun_replaces_only_the_marked_results() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("BENCHMARKS.md");
        write_results(&path, &format!("{BEGIN}\nfirst\n{END}\n")).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, format!("{text}\n## Analysis\nkept\n")).expect("annotate");
        write_results(&path, &format!("{BEGIN}\nsecond\n{END}\n")).expect("rewrite");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("second") && !text.contains("first"), "{text}");
        assert!(text.contains("## Analysis\nkept"), "{text}");
        assert_eq!(text.matches(BEGIN).count(), 1);
    }
}
