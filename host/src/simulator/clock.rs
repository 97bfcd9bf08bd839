//! Simulated time: real time, optionally sped up.
//!
//! WeChat's timings are long (prepay_id lives 2 h, notifications are
//! retried over 24 h 4 min). A scale factor lets tests walk through them in
//! seconds while every rule is still expressed in WeChat's own units.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Utc};

/// Simulated wall-clock time: real time times a scale, plus any jumps
/// made through the admin API.
#[derive(Debug)]
pub struct SimClock {
    origin_real: Instant,
    origin: DateTime<Utc>,
    scale: f64,
    jumped_secs: AtomicI64,
}

impl SimClock {
    /// Starts now, running `scale` simulated seconds per real second.
    pub fn new(scale: f64) -> Self {
        Self {
            origin_real: Instant::now(),
            origin: Utc::now(),
            scale,
            jumped_secs: AtomicI64::new(0),
        }
    }

    /// Moves simulated time forward at once (e.g. a year, to test the
    /// refund window). Waits already under way are not shortened.
    pub fn advance(&self, secs: u32) {
        self.jumped_secs
            .fetch_add(i64::from(secs), Ordering::SeqCst);
    }

    /// The simulated time now.
    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = self.origin_real.elapsed().mul_f64(self.scale);
        let jumped = chrono::Duration::seconds(self.jumped_secs.load(Ordering::SeqCst));
        self.origin + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX) + jumped
    }

    /// How long to really wait for `simulated` to pass.
    pub fn real(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.scale)
    }

    /// Waits until `simulated` time has passed.
    pub async fn sleep(&self, simulated: Duration) {
        tokio::time::sleep(self.real(simulated)).await;
    }
}

/// China Standard Time, in which WeChat writes every timestamp.
pub fn beijing(at: DateTime<Utc>) -> DateTime<FixedOffset> {
    let cst =
        FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| unreachable!("+08:00 is a valid offset"));
    at.with_timezone(&cst)
}

/// `yyyyMMddHHmmss` in Beijing time (time_end, time_start).
pub fn compact(at: DateTime<Utc>) -> String {
    beijing(at).format("%Y%m%d%H%M%S").to_string()
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time (refund success_time, bills).
pub fn spaced(at: DateTime<Utc>) -> String {
    beijing(at).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `yyyyMMdd` in Beijing time (bill dates).
pub fn day(at: DateTime<Utc>) -> String {
    beijing(at).format("%Y%m%d").to_string()
}
