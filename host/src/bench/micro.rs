//! The component against the same core compiled natively, and the cost of
//! getting a component ready: an instance, a process.
//!
//! # Why ratios
//!
//! A figure in microseconds says as much about the machine as about the
//! code, and these machines are small and shared. Each measurement here
//! therefore runs a baseline in the same process, interleaved with the
//! subject round by round (so a noisy second hurts both alike), and reports
//! the median of each and their ratio. The baseline is the thing the
//! subject is judged against: the native core for the component, the
//! on-demand allocator for the pool, a process that does nothing for cold
//! start.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use wxpay_guest::merchant::{Merchant as NativeMerchant, MerchantConfig as NativeConfig};
use wxpay_guest::notify::ExpectedOrder as NativeExpected;
use wxpay_guest::sign::{ApiKey as NativeKey, SignType as NativeSignType};
use wxpay_guest::{packed, params};

use crate::error::Error;
use crate::key::ApiKey;
use crate::sandbox::bindings::merchant_api::ExpectedOrder;
use crate::sandbox::bindings::types::SignType;
use crate::sandbox::signer::{MerchantSettings, Pairs};
use crate::sandbox::{MerchantHandle, Sandbox, SandboxLimits, SignerInstance};

/// The documentation's example merchant and key.
const APPID: &str = "wxd930ea5d5a258f4f";
const MCH_ID: &str = "10000100";
const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

/// How long to measure: rounds of interleaved batches.
#[derive(Debug, Clone, Copy)]
pub struct Effort {
    /// Rounds; the median round is reported.
    pub rounds: usize,
    /// Calls per batch.
    pub batch: usize,
    /// Processes started per kind, for cold start.
    pub processes: usize,
    /// Which sides run: both, timed, for a comparison; one alone for a
    /// profiler (see [`Effort::repeat`]).
    pub sides: Sides,
}

/// The sides a measurement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sides {
    /// Subject and baseline, interleaved.
    Both,
    /// Only the subject (the component, in the component rows).
    Subject,
    /// Only the baseline (the native core, in the component rows).
    Baseline,
}

impl Effort {
    /// Enough for stable medians on a noisy machine (a few seconds each).
    pub const FULL: Self = Self {
        rounds: 31,
        batch: 2_000,
        processes: 21,
        sides: Sides::Both,
    };
    /// A smoke run: every path taken, the figures rough.
    pub const QUICK: Self = Self {
        rounds: 3,
        batch: 50,
        processes: 3,
        sides: Sides::Both,
    };

    /// `calls` calls of one side and none of the other, for counting
    /// instructions or sampling under a profiler: the difference between
    /// two runs of different lengths is what the calls cost, without the
    /// set-up. The times such a run returns are not a comparison.
    pub const fn repeat(sides: Sides, calls: usize) -> Self {
        Self {
            rounds: 1,
            batch: calls,
            processes: 0,
            sides,
        }
    }
}

/// A subject and its baseline, per operation.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// What was measured.
    pub name: &'static str,
    /// What it is judged against.
    pub baseline_name: &'static str,
    /// Median time per operation of the subject.
    pub subject: Duration,
    /// Median time per operation of the baseline.
    pub baseline: Duration,
    /// The goal, if the product sets one.
    pub goal: Option<Goal>,
}

/// A goal the product sets for a measurement.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// At most this many times the baseline.
    RatioAtMost(f64),
    /// At most this long per operation.
    AtMost(Duration),
}

impl Comparison {
    /// Subject time over baseline time.
    pub fn ratio(&self) -> f64 {
        self.subject.as_secs_f64() / self.baseline.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Whether the goal is met (`None` without a goal).
    pub fn meets_goal(&self) -> Option<bool> {
        self.goal.map(|goal| match goal {
            Goal::RatioAtMost(most) => self.ratio() <= most,
            Goal::AtMost(most) => self.subject <= most,
        })
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RatioAtMost(r) => write!(f, "≤ {r}×"),
            Self::AtMost(d) => write!(f, "≤ {}", human(*d)),
        }
    }
}

/// A duration with a unit that suits it.
pub fn human(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// Times `rounds` interleaved batches of `subject` and `baseline` (of the
/// sides `effort` runs); the medians per operation, zero for a side that
/// did not run.
fn interleaved(
    effort: Effort,
    mut subject: impl FnMut() -> Result<(), Error>,
    mut baseline: impl FnMut() -> Result<(), Error>,
) -> Result<(Duration, Duration), Error> {
    let batch = |f: &mut dyn FnMut() -> Result<(), Error>| -> Result<Duration, Error> {
        let start = Instant::now();
        for _ in 0..effort.batch {
            f()?;
        }
        Ok(start.elapsed() / u32::try_from(effort.batch.max(1)).unwrap_or(u32::MAX))
    };
    let (run_subject, run_baseline) = match effort.sides {
        Sides::Both => (true, true),
        Sides::Subject => (true, false),
        Sides::Baseline => (false, true),
    };
    if run_subject && run_baseline {
        batch(&mut subject)?;
        batch(&mut baseline)?;
    }
    let mut subjects = Vec::with_capacity(effort.rounds);
    let mut baselines = Vec::with_capacity(effort.rounds);
    for _ in 0..effort.rounds.max(1) {
        if run_baseline {
            baselines.push(batch(&mut baseline)?);
        }
        if run_subject {
            subjects.push(batch(&mut subject)?);
        }
    }
    Ok((median(subjects), median(baselines)))
}

/// The median of `samples` (not empty).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// One merchant on both sides: in a component instance and natively.
struct BothSides {
    instance: SignerInstance,
    merchant: MerchantHandle,
    native: NativeMerchant,
}

impl BothSides {
    fn new(sandbox: &Sandbox) -> Result<Self, Error> {
        let mut instance = sandbox.instantiate()?;
        let settings = MerchantSettings {
            appid: APPID.into(),
            mch_id: MCH_ID.into(),
            sign_type: SignType::HmacSha256,
            sub_appid: None,
            sub_mch_id: None,
            sandbox: false,
        };
        let key = ApiKey::from_secret(Zeroizing::new(KEY.to_owned()))?;
        let merchant = instance.merchant(&settings, &key)?;
        let native = NativeMerchant::new(NativeConfig {
            appid: APPID.into(),
            mch_id: MCH_ID.into(),
            api_key: NativeKey::new(KEY.into()).map_err(native_error)?,
            sign_type: NativeSignType::HmacSha256,
            sub_appid: None,
            sub_mch_id: None,
            sandbox: false,
        })
        .map_err(native_error)?;
        Ok(Self {
            instance,
            merchant,
            native,
        })
    }

    /// [`interleaved`] with the component's side and the native side.
    fn compare(
        &mut self,
        effort: Effort,
        mut component: impl FnMut(&mut SignerInstance, &MerchantHandle) -> Result<(), Error>,
        mut native: impl FnMut(&NativeMerchant) -> Result<(), Error>,
    ) -> Result<(Duration, Duration), Error> {
        let Self {
            instance,
            merchant,
            native: core,
        } = self;
        interleaved(effort, || component(instance, merchant), || native(core))
    }
}

/// A unifiedorder as a merchant sends one: 16 fields besides `sign`.
pub fn unified_order_fields() -> Pairs {
    [
        ("appid", APPID),
        ("mch_id", MCH_ID),
        ("device_info", "WEB"),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("sign_type", "HMAC-SHA256"),
        ("body", "腾讯充值中心-QQ会员充值"),
        ("attach", "bench"),
        ("out_trade_no", "20150806125346"),
        ("fee_type", "CNY"),
        ("total_fee", "888"),
        ("spbill_create_ip", "123.12.12.123"),
        ("time_start", "20091225091010"),
        ("time_expire", "20091227091010"),
        ("notify_url", "https://example.com/wxpay/notify"),
        ("trade_type", "NATIVE"),
        ("product_id", "12235413214070356458058"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Signing a 16-field unifiedorder: component against native. Both run
/// the same function from the same pairs: the fields checked and put in
/// canonical order, then signed.
pub fn sign(sandbox: &Sandbox, effort: Effort, algorithm: SignType) -> Result<Comparison, Error> {
    let mut both = BothSides::new(sandbox)?;
    let pairs = unified_order_fields();
    let native_algorithm: NativeSignType = algorithm.into();
    let native_sign = |native: &NativeMerchant, pairs: &Pairs| -> Result<String, Error> {
        let params = params::from_pairs(pairs.iter().cloned()).map_err(native_error)?;
        Ok(native.sign(&params, native_algorithm))
    };
    let expected = native_sign(&both.native, &pairs)?;
    let (subject, baseline) = both.compare(
        effort,
        |instance, merchant| {
            agree(
                &instance.sign(merchant, &pairs, Some(algorithm))?,
                &expected,
            )
        },
        |native| {
            agree(
                &native_sign(native, std::hint::black_box(&pairs))?,
                &expected,
            )
        },
    )?;
    Ok(Comparison {
        name: match algorithm {
            SignType::Md5 => "sign a 16-field unifiedorder (MD5), component",
            SignType::HmacSha256 => "sign a 16-field unifiedorder (HMAC-SHA256), component",
        },
        baseline_name: "the same core, native",
        subject,
        baseline,
        goal: Some(Goal::RatioAtMost(2.5)),
    })
}

/// Signing the same 16 fields packed into one string (`sign-packed`):
/// component against native, both from the same packed string.
pub fn sign_packed(
    sandbox: &Sandbox,
    effort: Effort,
    algorithm: SignType,
) -> Result<Comparison, Error> {
    let mut both = BothSides::new(sandbox)?;
    let pairs = unified_order_fields();
    let fields =
        packed::pack(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(native_error)?;
    let native_algorithm: NativeSignType = algorithm.into();
    let expected = both.native.sign(
        &params::from_pairs(pairs.iter().cloned()).map_err(native_error)?,
        native_algorithm,
    );
    let (subject, baseline) = both.compare(
        effort,
        |instance, merchant| {
            agree(
                &instance.sign_packed(merchant, &fields, Some(algorithm))?,
                &expected,
            )
        },
        |native| {
            let signature = native
                .sign_packed(std::hint::black_box(&fields), native_algorithm)
                .map_err(native_error)?;
            agree(&signature, &expected)
        },
    )?;
    Ok(Comparison {
        name: match algorithm {
            SignType::Md5 => "sign the same 16 fields packed (MD5), component",
            SignType::HmacSha256 => "sign the same 16 fields packed (HMAC-SHA256), component",
        },
        baseline_name: "the same core, native",
        subject,
        baseline,
        goal: Some(Goal::RatioAtMost(2.5)),
    })
}

/// Verifying a payment notification against its order: component against native.
pub fn verify(sandbox: &Sandbox, effort: Effort) -> Result<Comparison, Error> {
    let mut both = BothSides::new(sandbox)?;
    let body = super::payment_notification(
        &mut both.instance,
        &both.merchant,
        "20150806125346",
        888,
        "4200000000000000000000000042",
    )?;
    let expected = ExpectedOrder {
        out_trade_no: "20150806125346".into(),
        total_fee: 888,
        fee_type: Some("CNY".into()),
        sign_type: Some(SignType::HmacSha256),
    };
    let native_expected = NativeExpected {
        out_trade_no: expected.out_trade_no.clone(),
        total_fee: 888,
        fee_type: Some("CNY".into()),
        sign_type: Some(NativeSignType::HmacSha256),
    };
    let (subject, baseline) = both.compare(
        effort,
        |instance, merchant| {
            let notice = instance.verify_payment_notification(merchant, &body, Some(&expected))?;
            agree(&notice.transaction_id, "4200000000000000000000000042")
        },
        |native| {
            let notice = native
                .verify_payment_notification(std::hint::black_box(&body), Some(&native_expected))
                .map_err(native_error)?;
            agree(&notice.transaction_id, "4200000000000000000000000042")
        },
    )?;
    Ok(Comparison {
        name: "verify a payment notification (parse, signature, order), component",
        baseline_name: "the same core, native",
        subject,
        baseline,
        goal: Some(Goal::RatioAtMost(2.5)),
    })
}

fn native_error(e: wxpay_guest::Error) -> Error {
    Error::input("bench: the native core", e)
}

fn agree(got: &str, want: &str) -> Result<(), Error> {
    if got == want {
        Ok(())
    } else {
        Err(Error::input(
            "bench",
            format!("the two sides disagree: {got} != {want}"),
        ))
    }
}

/// A fresh instance per request from the `InstancePre`, pooling allocator
/// against on-demand allocation.
pub fn instantiate(bytes: &[u8], effort: Effort) -> Result<Comparison, Error> {
    let pooled = Sandbox::from_bytes(bytes, SandboxLimits::default())?;
    let on_demand = Sandbox::from_bytes(
        bytes,
        SandboxLimits {
            pool_instances: 0,
            ..SandboxLimits::default()
        },
    )?;
    let (subject, baseline) = interleaved(
        effort,
        || pooled.instantiate().map(drop),
        || on_demand.instantiate().map(drop),
    )?;
    Ok(Comparison {
        name: "instantiate per request (InstancePre, pooling allocator)",
        baseline_name: "the same, on-demand allocator",
        subject,
        baseline,
        goal: Some(Goal::AtMost(Duration::from_micros(30))),
    })
}

/// `wxpay sign` as a fresh process, to its first signature, with the
/// compiled component from the cache and without; the baseline is the same
/// binary printing its version (process start, nothing else).
pub fn cold_start(wxpay: &Path, effort: Effort) -> Result<[Comparison; 2], Error> {
    let dir = tempfile::tempdir().map_err(|e| Error::input("temp dir", e))?;
    let key = dir.path().join("key");
    write_key_file(&key)?;
    let params = dir.path().join("params.json");
    let object: serde_json::Map<String, serde_json::Value> = unified_order_fields()
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    std::fs::write(&params, serde_json::Value::Object(object).to_string())
        .map_err(|e| Error::input("params file", e))?;
    let cache = dir.path().join("cache");
    let sign = |cached: bool| {
        let mut command = Command::new(wxpay);
        command
            .env("XDG_CACHE_HOME", &cache)
            .args(["sign", "--sign-type", "hmac-sha256", "--key-file"])
            .arg(&key)
            .arg(&params);
        if !cached {
            command.arg("--no-cache");
        }
        command
    };
    let mut version = Command::new(wxpay);
    version.arg("--version");
    run_process(&mut sign(true))?;
    let mut floor = Vec::new();
    let mut with_cache = Vec::new();
    let mut without_cache = Vec::new();
    for _ in 0..effort.processes.max(1) {
        floor.push(run_process(&mut version)?);
        with_cache.push(run_process(&mut sign(true))?);
        without_cache.push(run_process(&mut sign(false))?);
    }
    let baseline = median(floor);
    Ok([
        Comparison {
            name: "cold start to the first signature, compiled component cached",
            baseline_name: "`wxpay --version` (process start)",
            subject: median(with_cache),
            baseline,
            goal: Some(Goal::AtMost(Duration::from_millis(25))),
        },
        Comparison {
            name: "cold start to the first signature, no cache (compiles)",
            baseline_name: "`wxpay --version` (process start)",
            subject: median(without_cache),
            baseline,
            goal: None,
        },
    ])
}

/// The key as the host requires its file: readable by its owner only.
fn write_key_file(path: &Path) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(KEY.as_bytes()))
        .map_err(|e| Error::input("bench: key file", e))
}

fn run_process(command: &mut Command) -> Result<Duration, Error> {
    let start = Instant::now();
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::input("bench: start wxpay", e))?;
    let elapsed = start.elapsed();
    if output.status.success() {
        Ok(elapsed)
    } else {
        Err(Error::input(
            "bench: wxpay",
            format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ))
    }
}
