//! The gateway's configuration file, `wxpay.toml`.
//!
//! Why secrets are not in it: a config file gets copied, diffed, pasted
//! into tickets and checked in. So the file names *where* secrets are — a
//! key file that only its owner may read, or an environment variable — and
//! never holds them. `wxpay config check` prints the effective config with
//! every secret source shown and no secret value.
//!
//! `examples/wxpay.toml` documents every setting; everything but the
//! merchant ids and `server.public_url` has a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::key::{DEFAULT_KEY_ENV, KeySource};
use crate::sandbox::bindings::keyless::{Policy, Product};
use crate::sandbox::bindings::types::SignType;
use crate::sandbox::signer::MerchantSettings;
use crate::store::StoreLocation;
use crate::store::redis_store::redact_url;
use crate::wechat::{ClientConfig, ClientIdentity, Environment, RetryPolicy};

/// The environment variable that may hold the PKCS#12 password.
pub const PKCS12_PASSWORD_ENV: &str = "WXPAY_PKCS12_PASSWORD";

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Who we are at WeChat Pay.
    pub merchant: MerchantSection,
    /// How to reach WeChat Pay.
    #[serde(default)]
    pub wechat: WechatSection,
    /// Where WeChat's notifications arrive.
    pub server: ServerSection,
    /// Durable state.
    #[serde(default)]
    pub store: StoreSection,
    /// The background task that asks WeChat about orders that stay pending.
    #[serde(default)]
    pub reconcile: ReconcileSection,
    /// The component and its compilation cache.
    #[serde(default)]
    pub component: ComponentSection,
    /// Order limits; absent fields keep the component's defaults.
    #[serde(default)]
    pub policy: PolicySection,
    /// Prepaid balances.
    #[serde(default)]
    pub ledger: LedgerSection,
    /// The operators' web console and its passkeys.
    #[serde(default)]
    pub console: ConsoleSection,
    /// What may be sold, at what price.
    #[serde(default)]
    pub products: Vec<ProductEntry>,
}

/// `[ledger]`: prepaid balances that agents charge per prompt or token.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSection {
    /// The catalog product a top-up buys (its unit price is the top-up
    /// step); top-ups are off when absent.
    pub topup_product: Option<String>,
    /// The smallest top-up, in fen.
    pub min_topup_fen: u64,
    /// The largest top-up, in fen.
    pub max_topup_fen: u64,
    /// The catalog product a metering session settles as (priced 1 fen,
    /// the quantity is the total); metering is off when absent.
    pub meter_product: Option<String>,
}

impl Default for LedgerSection {
    fn default() -> Self {
        Self {
            topup_product: None,
            min_topup_fen: 1_000,
            max_topup_fen: 200_000,
            meter_product: None,
        }
    }
}

/// `[console]`: the operators' web console at `/console`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// The address operators' browsers open, e.g. `https://pay-admin.example.com`
    /// or `http://localhost:8081`. Passkeys are bound to its host name and
    /// every ceremony's origin must equal it. Default: `http://localhost:`
    /// and the port of the listener that serves the console.
    pub url: Option<String>,
    /// Approving a payment or refund of more than this many fen needs a
    /// fresh passkey assertion in the console, bound to that approval;
    /// `wxpay approvals approve` refuses it.
    pub passkey_threshold_fen: u64,
    /// How long a sign-in lasts.
    pub session_minutes: u64,
    /// How long an invite link from `wxpay operators invite` stays valid.
    pub invite_minutes: u64,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            url: None,
            passkey_threshold_fen: 100_000,
            session_minutes: 8 * 60,
            invite_minutes: 24 * 60,
        }
    }
}

/// `[merchant]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantSection {
    /// `appid`.
    pub appid: String,
    /// `mch_id`.
    pub mch_id: String,
    /// `MD5` or `HMAC-SHA256` (default). Sandbox merchants use `MD5`.
    #[serde(default = "default_sign_type")]
    pub sign_type: String,
    /// The APIv2 key file (mode 0600). When absent, `key_env` is read.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The environment variable holding the key (default `WXPAY_API_KEY`).
    #[serde(default)]
    pub key_env: Option<String>,
    /// Service-provider mode: the sub-merchant's app id.
    #[serde(default)]
    pub sub_appid: Option<String>,
    /// Service-provider mode: the sub-merchant number.
    #[serde(default)]
    pub sub_mch_id: Option<String>,
}

/// `[wechat]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WechatSection {
    /// `production`, `backup` (api2), or `custom` (with `base_url`).
    pub environment: String,
    /// The base URL for `custom`, e.g. `wxpay simulate` on loopback.
    pub base_url: Option<String>,
    /// Use WeChat's sandbox (`/sandboxnew/`, key from getsignkey, MD5).
    pub sandbox: bool,
    /// How long a sandbox key from getsignkey is trusted before it is fetched again.
    pub sandbox_key_ttl_secs: u64,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout.
    pub total_timeout_ms: u64,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// First retry backoff; doubled per retry, with jitter.
    pub retry_base_ms: u64,
    /// An HTTP(S) proxy for a fixed egress IP.
    pub proxy: Option<String>,
    /// Client certificate for refund and reverse: PEM certificate…
    pub client_cert: Option<PathBuf>,
    /// …and PEM private key.
    pub client_key: Option<PathBuf>,
    /// Or the PKCS#12 file WeChat issues (`apiclient_cert.p12`). Its
    /// password comes from `WXPAY_PKCS12_PASSWORD`, else it is the mch_id
    /// (WeChat's default).
    pub client_pkcs12: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust.
    pub extra_roots: Vec<PathBuf>,
}

impl Default for WechatSection {
    fn default() -> Self {
        Self {
            environment: "production".into(),
            base_url: None,
            sandbox: false,
            sandbox_key_ttl_secs: 12 * 3600,
            connect_timeout_ms: 5_000,
            total_timeout_ms: 10_000,
            max_attempts: 3,
            retry_base_ms: 200,
            proxy: None,
            client_cert: None,
            client_key: None,
            client_pkcs12: None,
            extra_roots: Vec::new(),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Where to listen (default `127.0.0.1:8080`; put a TLS proxy in front).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The public base URL WeChat reaches us at: notify URLs are this plus
    /// `/notify/pay` and `/notify/refund`. `https://`, or `http://` to loopback.
    pub public_url: String,
    /// Largest notification body accepted, in bytes.
    #[serde(default = "default_body_limit")]
    pub max_body_bytes: usize,
    /// Serve the agent API (`/v1`) here instead of on `listen`, so it can
    /// stay on a private interface while WeChat reaches the callbacks.
    #[serde(default)]
    pub agent_listen: Option<SocketAddr>,
}

/// `[store]`, or in short `store = "redis://host:6379/0"` or
/// `store = "wxpay.db"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(try_from = "StoreSpec")]
pub struct StoreSection {
    /// The SQLite file (created if missing), used unless `redis` is set.
    pub sqlite: PathBuf,
    /// A Redis server shared by several gateways,
    /// `redis://[user:password@]host[:port][/db]`; it must run with
    /// `appendonly yes` and `appendfsync always`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_redacted_url"
    )]
    pub redis: Option<String>,
    /// Prepended to every Redis key, so deployments can share a server.
    pub key_prefix: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            sqlite: PathBuf::from("wxpay.db"),
            redis: None,
            key_prefix: "wxpay:".to_owned(),
        }
    }
}

impl StoreSection {
    /// Where the store is.
    pub fn location(&self) -> StoreLocation {
        match &self.redis {
            Some(url) => StoreLocation::Redis {
                url: url.clone(),
                key_prefix: self.key_prefix.clone(),
            },
            None => StoreLocation::Sqlite(self.sqlite.clone()),
        }
    }
}

/// The two spellings of the store setting.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoreSpec {
    Short(String),
    Table(StoreTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreTable {
    sqlite: Option<PathBuf>,
    redis: Option<String>,
    key_prefix: Option<String>,
}

impl TryFrom<StoreSpec> for StoreSection {
    type Error = String;

    fn try_from(spec: StoreSpec) -> Result<Self, String> {
        let defaults = Self::default();
        let section = match spec {
            StoreSpec::Short(text) if text.contains("://") => Self {
                redis: Some(text),
                ..defaults
            },
            StoreSpec::Short(path) => Self {
                sqlite: PathBuf::from(path),
                ..defaults
            },
            StoreSpec::Table(t) => Self {
                sqlite: t.sqlite.unwrap_or(defaults.sqlite),
                redis: t.redis,
                key_prefix: t.key_prefix.unwrap_or(defaults.key_prefix),
            },
        };
        if let Some(url) = &section.redis
            && !(url.starts_with("redis://") || url.starts_with("redis+unix://"))
        {
            return Err(format!(
                "store: {} is not a redis:// or redis+unix:// URL",
                redact_url(url)
            ));
        }
        Ok(section)
    }
}

fn serialize_redacted_url<S: serde::Serializer>(
    url: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_some(&redact_url(url)),
        None => serializer.serialize_none(),
    }
}

/// `[reconcile]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSection {
    /// Seconds between passes; 0 turns the task off.
    pub interval_secs: u64,
    /// An order or refund unchanged this long is asked about.
    pub pending_after_secs: u64,
    /// Most records asked about per pass.
    pub batch: u32,
}

impl Default for ReconcileSection {
    fn default() -> Self {
        Self {
            interval_secs: 60,
            pending_after_secs: 120,
            batch: 100,
        }
    }
}

/// `[component]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComponentSection {
    /// Another build of the component (same import policy).
    pub path: Option<PathBuf>,
    /// The compilation cache directory (default `$XDG_CACHE_HOME/wxpay`).
    pub cache_dir: Option<PathBuf>,
    /// Signer instances kept ready.
    pub instances: Option<usize>,
}

/// `[policy]`: each absent field keeps the component's default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// Smallest order in fen.
    pub min_order_fen: Option<u64>,
    /// Largest order in fen.
    pub max_order_fen: Option<u64>,
    /// Refund window in days.
    pub refund_window_days: Option<u32>,
    /// Fee rate in basis points.
    pub fee_rate_bps: Option<u32>,
    /// Order expiry in minutes.
    pub order_expiry_minutes: Option<u32>,
    /// Largest agent note, in bytes.
    pub max_note_bytes: Option<u32>,
}

/// `[[products]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProductEntry {
    /// Catalog id.
    pub id: String,
    /// Display name (becomes `body`).
    pub name: String,
    /// Unit price in fen.
    pub unit_price_fen: u64,
    /// Largest quantity per order.
    #[serde(default = "default_max_quantity")]
    pub max_quantity: u32,
}

fn default_sign_type() -> String {
    "HMAC-SHA256".into()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

const fn default_body_limit() -> usize {
    64 * 1024
}

const fn default_max_quantity() -> u32 {
    1
}

impl GatewayConfig {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::input(path.display().to_string(), e))?;
        Self::parse(&text).map_err(|reason| Error::input(path.display().to_string(), reason))
    }

    /// Parses and checks TOML text; the error names the setting and the rule.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        self.sign_type()?;
        self.environment()?;
        if self.wechat.sandbox && self.sign_type()? != SignType::Md5 {
            return Err("merchant.sign_type must be MD5 when wechat.sandbox = true".into());
        }
        if self.wechat.client_pkcs12.is_some()
            && (self.wechat.client_cert.is_some() || self.wechat.client_key.is_some())
        {
            return Err("wechat: give client_pkcs12 or client_cert + client_key, not both".into());
        }
        if self.wechat.client_cert.is_some() != self.wechat.client_key.is_some() {
            return Err("wechat: client_cert and client_key go together".into());
        }
        if self.wechat.max_attempts == 0 {
            return Err("wechat.max_attempts must be at least 1".into());
        }
        if self.server.max_body_bytes < 1024 {
            return Err("server.max_body_bytes must be at least 1024".into());
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in &self.products {
            if !ids.insert(p.id.as_str()) {
                return Err(format!("products: id {:?} is listed twice", p.id));
            }
        }
        if let Some(product) = &self.ledger.topup_product
            && !ids.contains(product.as_str())
        {
            return Err(format!(
                "ledger.topup_product {product:?} is not in [[products]]"
            ));
        }
        if let Some(product) = &self.ledger.meter_product {
            let unit = self
                .products
                .iter()
                .find(|p| &p.id == product)
                .map(|p| p.unit_price_fen);
            if unit != Some(1) {
                return Err(format!(
                    "ledger.meter_product {product:?} must be a [[products]] entry priced 1 fen"
                ));
            }
        }
        if self.ledger.min_topup_fen == 0 || self.ledger.min_topup_fen > self.ledger.max_topup_fen {
            return Err("ledger: 1 <= min_topup_fen <= max_topup_fen is required".into());
        }
        self.check_console()
    }

    fn check_console(&self) -> Result<(), String> {
        if let Some(url) = &self.console.url {
            let loopback_http = url.starts_with("http://localhost")
                || url.starts_with("http://127.0.0.1")
                || url.starts_with("http://[::1]");
            if !(url.starts_with("https://") || loopback_http) {
                return Err(format!(
                    "console.url must be https://, or http:// to localhost, not {url:?}: browsers allow passkeys only there"
                ));
            }
        }
        if self.console.session_minutes == 0 || self.console.invite_minutes == 0 {
            return Err("console: session_minutes and invite_minutes must be at least 1".into());
        }
        Ok(())
    }

    /// The merchant's algorithm.
    pub fn sign_type(&self) -> Result<SignType, String> {
        match self.merchant.sign_type.as_str() {
            "MD5" => Ok(SignType::Md5),
            "HMAC-SHA256" => Ok(SignType::HmacSha256),
            other => Err(format!(
                "merchant.sign_type must be MD5 or HMAC-SHA256, not {other:?}"
            )),
        }
    }

    /// Where requests go.
    pub fn environment(&self) -> Result<Environment, String> {
        match (self.wechat.environment.as_str(), &self.wechat.base_url) {
            ("production", None) => Ok(Environment::Production),
            ("backup", None) => Ok(Environment::Backup),
            ("custom", Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
                Ok(Environment::Custom(url.clone()))
            }
            ("custom", Some(_)) => {
                Err("wechat.base_url must start with http:// or https://".into())
            }
            ("custom", None) => {
                Err("wechat.base_url is required when environment = \"custom\"".into())
            }
            ("production" | "backup", Some(_)) => {
                Err("wechat.base_url is only for environment = \"custom\"".into())
            }
            (other, _) => Err(format!(
                "wechat.environment must be production, backup or custom, not {other:?}"
            )),
        }
    }

    /// Where the key comes from.
    pub fn key_source(&self) -> KeySource {
        match (&self.merchant.key_file, &self.merchant.key_env) {
            (Some(path), _) => KeySource::File(path.clone()),
            (None, Some(var)) => KeySource::Env(var.clone()),
            (None, None) => KeySource::Env(DEFAULT_KEY_ENV.into()),
        }
    }

    /// The merchant as the component sees it (`sandbox` as configured).
    pub fn merchant_settings(&self) -> Result<MerchantSettings, String> {
        Ok(MerchantSettings {
            appid: self.merchant.appid.clone(),
            mch_id: self.merchant.mch_id.clone(),
            sign_type: self.sign_type()?,
            sub_appid: self.merchant.sub_appid.clone(),
            sub_mch_id: self.merchant.sub_mch_id.clone(),
            sandbox: self.wechat.sandbox,
        })
    }

    /// The HTTP client's settings.
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        let w = &self.wechat;
        let mut config = ClientConfig::new(self.environment()?);
        config.connect_timeout = Duration::from_millis(w.connect_timeout_ms);
        config.total_timeout = Duration::from_millis(w.total_timeout_ms);
        config.retry = RetryPolicy {
            max_attempts: w.max_attempts,
            base_delay: Duration::from_millis(w.retry_base_ms),
            ..RetryPolicy::default()
        };
        config.proxy.clone_from(&w.proxy);
        config.extra_roots.clone_from(&w.extra_roots);
        config.identity = match (&w.client_cert, &w.client_key, &w.client_pkcs12) {
            (Some(cert), Some(key), None) => Some(ClientIdentity::Pem {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None, Some(file)) => Some(ClientIdentity::Pkcs12 {
                file: file.clone(),
                password: std::env::var(PKCS12_PASSWORD_ENV)
                    .unwrap_or_else(|_| self.merchant.mch_id.clone())
                    .into(),
            }),
            _ => None,
        };
        Ok(config)
    }

    /// The notify URL for payments.
    pub fn pay_notify_url(&self) -> String {
        format!(
            "{}/notify/pay",
            self.server.public_url.trim_end_matches('/')
        )
    }

    /// The notify URL for refunds.
    pub fn refund_notify_url(&self) -> String {
        format!(
            "{}/notify/refund",
            self.server.public_url.trim_end_matches('/')
        )
    }

    /// The catalog, as the component takes it.
    pub fn catalog(&self) -> Vec<Product> {
        self.products
            .iter()
            .map(|p| Product {
                product_id: p.id.clone(),
                name: p.name.clone(),
                unit_price_fen: p.unit_price_fen,
                max_quantity: p.max_quantity,
            })
            .collect()
    }

    /// The policy: the component's defaults with this file's overrides.
    pub fn policy(&self, defaults: Policy) -> Policy {
        let p = &self.policy;
        Policy {
            min_order_fen: p.min_order_fen.unwrap_or(defaults.min_order_fen),
            max_order_fen: p.max_order_fen.unwrap_or(defaults.max_order_fen),
            refund_window_days: p.refund_window_days.unwrap_or(defaults.refund_window_days),
            fee_rate_bps: p.fee_rate_bps.unwrap_or(defaults.fee_rate_bps),
            order_expiry_minutes: p
                .order_expiry_minutes
                .unwrap_or(defaults.order_expiry_minutes),
            max_note_bytes: p.max_note_bytes.unwrap_or(defaults.max_note_bytes),
        }
    }

    /// The console's address as browsers see it: `console.url`, else
    /// `http://localhost:<port>` of the listener that serves it.
    pub fn console_url(&self) -> String {
        match &self.console.url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let port = self
                    .server
                    .agent_listen
                    .unwrap_or(self.server.listen)
                    .port();
                format!("http://localhost:{port}")
            }
        }
    }

    /// The compilation cache directory.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        self.component.cache_dir.clone().or_else(default_cache_dir)
    }

    /// The effective config as TOML, secrets shown only by their source.
    pub fn redacted_toml(&self) -> String {
        let mut text = toml::to_string_pretty(self).unwrap_or_else(|e| format!("# {e}\n"));
        let source = match self.key_source() {
            KeySource::File(path) => format!("file {}", path.display()),
            KeySource::Env(var) => format!("environment variable {var}"),
        };
        text.push_str(&format!(
            "\n# api key: read from {source} (value not shown)\n"
        ));
        if self.wechat.client_pkcs12.is_some() {
            let from = if std::env::var_os(PKCS12_PASSWORD_ENV).is_some() {
                PKCS12_PASSWORD_ENV
            } else {
                "the default (mch_id)"
            };
            text.push_str(&format!(
                "# PKCS#12 password: from {from} (value not shown)\n"
            ));
        }
        text
    }
}

/// `$XDG_CACHE_HOME/wxpay`, else `$HOME/.cache/wxpay`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|base| base.join("wxpay"))
}
