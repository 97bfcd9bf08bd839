//! The simulator's configuration file (`--merchant-config`, TOML).
//!
//! ```toml
//! [[merchants]]
//! appid = "wxd930ea5d5a258f4f"
//! mch_id = "10000100"
//! api_key = "192006250b4c09247ec02edce69f6a2d"
//! sandbox_key = "0123456789abcdef0123456789abcdef"   # optional
//!
//! [settings]            # all optional
//! clock_scale = 60.0    # simulated seconds per real second
//! close_after_secs = 300
//! ```
//!
//! The simulator plays WeChat, so it holds each merchant's key, as WeChat
//! does. Use test keys here, never a production key.

use std::path::Path;

use serde::Deserialize;

use crate::error::Error;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// The merchants WeChat knows.
    pub merchants: Vec<MerchantEntry>,
    /// Timing and behaviour.
    #[serde(default)]
    pub settings: Settings,
}

/// One merchant, as WeChat's side knows it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantEntry {
    /// `appid`.
    pub appid: String,
    /// `mch_id`.
    pub mch_id: String,
    /// The APIv2 key.
    pub api_key: String,
    /// The key `getsignkey` hands out; derived from the API key when absent.
    #[serde(default)]
    pub sandbox_key: Option<String>,
}

impl std::fmt::Debug for MerchantEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantEntry")
            .field("appid", &self.appid)
            .field("mch_id", &self.mch_id)
            .finish_non_exhaustive()
    }
}

/// Timing and behaviour of the simulated WeChat.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Simulated seconds per real second: 1 is real time; 3600 runs the
    /// 24-hour notification schedule in 24 seconds.
    pub clock_scale: f64,
    /// An order may be closed only this long after it was placed (WeChat: 5 min).
    pub close_after_secs: u64,
    /// A refund stays PROCESSING this long before it succeeds.
    pub refund_settle_secs: u64,
    /// A micropay in USERPAYING completes after this long.
    pub userpaying_secs: u64,
    /// The `timeout` scenario holds the reply this long (real milliseconds).
    pub timeout_delay_ms: u64,
    /// How long the simulator waits for a merchant's notification reply (real).
    pub notify_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            clock_scale: 1.0,
            close_after_secs: 300,
            refund_settle_secs: 60,
            userpaying_secs: 30,
            timeout_delay_ms: 11_000,
            notify_timeout_ms: 5_000,
        }
    }
}

impl SimulatorConfig {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::input(path.display().to_string(), e))?;
        Self::parse(&text).map_err(|reason| Error::input(path.display().to_string(), reason))
    }

    /// Parses and checks the TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.merchants.is_empty() {
            return Err("at least one [[merchants]] entry is needed".into());
        }
        if !(config.settings.clock_scale.is_finite() && config.settings.clock_scale > 0.0) {
            return Err("settings.clock_scale must be a positive number".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &config.merchants {
            if !seen.insert(m.mch_id.as_str()) {
                return Err(format!("mch_id {} is listed twice", m.mch_id));
            }
        }
        Ok(config)
    }
}
