//! `wxpay bench …`: load and speed measurements on this machine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::ComponentArgs;
use crate::bench::load::{self, LoadOptions};
use crate::bench::micro::{self, Effort, Sides};
use crate::bench::suite::{self, EndToEnd, RedisChoice, SuiteOptions};
use crate::error::Error;
use crate::sandbox::bindings::types::SignType;
use crate::sandbox::{Sandbox, SandboxLimits};

#[derive(Debug, Args)]
pub(super) struct BenchArgs {
    #[command(subcommand)]
    what: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Drive payment intents and notifications through a gateway's HTTP
    /// stack (simulator as WeChat) and print throughput and p50/p99/p999.
    Load(LoadArgs),
    /// Run the whole suite — the component against native code,
    /// instantiation, cold start, callbacks and intents end to end on
    /// SQLite and Redis — each beside a baseline from the same run, and
    /// write the results to BENCHMARKS.md.
    Suite(SuiteArgs),
    /// Run one side of one of the suite's component rows a given number of
    /// times, untimed, for a profiler: `perf record`, or `valgrind
    /// --tool=callgrind`, whose instruction counts do not depend on the
    /// machine's load. Two runs of different lengths give the cost per call.
    /// Instances use on-demand allocation, which valgrind can run.
    Repeat(RepeatArgs),
}

#[derive(Debug, Args)]
struct RepeatArgs {
    /// The row whose work to repeat.
    #[arg(value_enum)]
    row: Row,
    /// The side to run.
    #[arg(long, value_enum, default_value_t = Side::Component)]
    side: Side,
    /// How many calls.
    #[arg(long, default_value_t = 10_000)]
    calls: usize,
    #[command(flatten)]
    component: ComponentArgs,
}

/// The suite's rows that compare the component with native code.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Row {
    /// Sign a 16-field unifiedorder as a list of pairs, MD5.
    SignMd5,
    /// The same, HMAC-SHA256.
    SignHmac,
    /// Sign the same fields packed into one string, MD5.
    SignPackedMd5,
    /// The same, HMAC-SHA256.
    SignPackedHmac,
    /// Verify a payment notification against its order.
    Verify,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Side {
    /// Through the component.
    Component,
    /// The same core compiled natively.
    Native,
}

#[derive(Debug, Args)]
struct SuiteArgs {
    /// The results file; its part between the result markers is replaced.
    #[arg(long, value_name = "FILE", default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Print the results without writing them.
    #[arg(long)]
    print_only: bool,
    /// A smoke run: every measurement taken, briefly (figures are rough).
    #[arg(long)]
    quick: bool,
    /// Only the component against native code, instantiation and cold
    /// start, without the end-to-end runs (well under a minute, for
    /// iterating on the component). Implies --print-only.
    #[arg(long)]
    micro_only: bool,
    /// Run the Redis measurements on this server (default: start a private
    /// redis-server if one is installed).
    #[arg(long, value_name = "URL", conflicts_with = "no_redis")]
    redis: Option<String>,
    /// Skip the Redis measurements.
    #[arg(long)]
    no_redis: bool,
    #[command(flatten)]
    component: ComponentArgs,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Payment intents to place; each order then gets one notification.
    #[arg(long, default_value_t = 2_000)]
    intents: usize,
    /// Pending orders to add straight to the store, each then notified
    /// like the placed ones (first deliveries beyond what intents feed).
    #[arg(long, default_value_t = 0)]
    seeded: usize,
    /// Extra rounds of duplicate notifications.
    #[arg(long, default_value_t = 1)]
    duplicates: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Offered requests per second (default: as fast as the concurrency allows).
    #[arg(long)]
    rate: Option<f64>,
    /// Keep the gateway's state in this Redis (redis://…) instead of SQLite.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 120)]
    deadline_secs: u64,
    #[command(flatten)]
    component: ComponentArgs,
}

/// `wxpay bench`.
pub(super) fn run(args: &BenchArgs) -> Result<(), Error> {
    match &args.what {
        BenchCommand::Load(load_args) => run_load(load_args),
        BenchCommand::Suite(suite_args) => run_suite(suite_args),
        BenchCommand::Repeat(repeat_args) => run_repeat(repeat_args),
    }
}

fn run_repeat(args: &RepeatArgs) -> Result<(), Error> {
    let limits = SandboxLimits {
        pool_instances: 0,
        ..SandboxLimits::default()
    };
    let sandbox = Sandbox::from_bytes(&args.component.bytes()?, limits)?;
    let sides = match args.side {
        Side::Component => Sides::Subject,
        Side::Native => Sides::Baseline,
    };
    let effort = Effort::repeat(sides, args.calls);
    let row = match args.row {
        Row::SignMd5 => micro::sign(&sandbox, effort, SignType::Md5)?,
        Row::SignHmac => micro::sign(&sandbox, effort, SignType::HmacSha256)?,
        Row::SignPackedMd5 => micro::sign_packed(&sandbox, effort, SignType::Md5)?,
        Row::SignPackedHmac => micro::sign_packed(&sandbox, effort, SignType::HmacSha256)?,
        Row::Verify => micro::verify(&sandbox, effort)?,
    };
    let side = args.side.to_possible_value().map(|v| v.get_name().to_owned());
    println!(
        "{}: {} calls, {} side",
        row.name,
        args.calls,
        side.unwrap_or_default()
    );
    Ok(())
}

fn run_suite(args: &SuiteArgs) -> Result<(), Error> {
    let options = SuiteOptions {
        component: args.component.bytes()?,
        wxpay: std::env::current_exe().map_err(|e| Error::input("this executable", e))?,
        effort: if args.quick {
            Effort::QUICK
        } else {
            Effort::FULL
        },
        end_to_end: if args.quick {
            EndToEnd::quick()
        } else {
            EndToEnd::full()
        },
        redis: match (&args.redis, args.no_redis) {
            (Some(url), _) => RedisChoice::Url(url.clone()),
            (None, true) => RedisChoice::Skip,
            (None, false) => RedisChoice::StartOwn,
        },
        micro_only: args.micro_only,
        out: (!args.print_only && !args.micro_only).then(|| args.out.clone()),
    };
    suite::run(&options, &mut std::io::stdout()).map(|_| ())
}

fn run_load(load_args: &LoadArgs) -> Result<(), Error> {
    if load_args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(Error::input(
            "--rate",
            "must be a positive number of requests per second",
        ));
    }
    if load_args.concurrency == 0 {
        return Err(Error::input("--concurrency", "must be at least 1"));
    }
    let sandbox = Arc::new(load_args.component.sandbox()?);
    let options = LoadOptions {
        intents: load_args.intents,
        seeded: load_args.seeded,
        duplicates: load_args.duplicates,
        concurrency: load_args.concurrency,
        rate: load_args.rate,
        redis: load_args.redis.clone(),
        deadline: Duration::from_secs(load_args.deadline_secs),
    };
    super::block_on(async {
        let mut out = std::io::stdout();
        load::run(sandbox, &options, &mut out).await.map(|_| ())
    })
}
