//! `wxpay simulate`: an offline, stateful WeChat Pay v2 server.
//!
//! Every later layer is tested against this counterpart instead of mocks,
//! and merchants can develop without WeChat's sandbox (which is flaky,
//! short-lived and MD5-only). It speaks the real wire protocol at the real
//! paths — also under `/sandboxnew/` — and checks requests in WeChat's
//! order: method, empty body, UTF-8, XML, signature, then business rules
//! with WeChat's own err_codes. It keeps orders and refunds, sends signed
//! payment notifications and encrypted refund notifications on WeChat's
//! 15-step retry schedule, and misbehaves on purpose in the ways listed in
//! [`scenario`], chosen by amount or through the admin API.
//!
//! The simulator plays WeChat's side, so it runs the protocol core
//! natively with the merchants' keys from its own configuration.

mod admin;
pub mod bill;
pub mod clock;
pub mod config;
mod endpoints;
mod notify;
pub mod pki;
mod protocol;
pub mod scenario;
pub mod state;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Mutex;
use wxpay_guest::{ApiKey, Merchant, MerchantConfig, SignType};

use self::clock::SimClock;
use self::config::{MerchantEntry, Settings, SimulatorConfig};
use self::state::{Book, Env};
use crate::error::Error;

pub use self::notify::RETRY_SCHEDULE_SECS;

/// A merchant as WeChat knows it: both keys, ready to sign and verify.
struct KnownMerchant {
    appid: String,
    /// What getsignkey hands out. Never logged.
    sandbox_key: String,
    production: Merchant,
    sandbox: Merchant,
}

impl KnownMerchant {
    fn new(entry: &MerchantEntry) -> Result<Self, Error> {
        let sandbox_key = entry
            .sandbox_key
            .clone()
            .unwrap_or_else(|| derived_sandbox_key(&entry.api_key));
        Ok(Self {
            appid: entry.appid.clone(),
            sandbox_key: sandbox_key.clone(),
            production: core_merchant(entry, &entry.api_key, false)?,
            sandbox: core_merchant(entry, &sandbox_key, true)?,
        })
    }

    fn in_env(&self, env: Env) -> &Merchant {
        match env {
            Env::Production => &self.production,
            Env::Sandbox => &self.sandbox,
        }
    }
}

fn core_merchant(entry: &MerchantEntry, key: &str, sandbox: bool) -> Result<Merchant, Error> {
    let bad = |e: wxpay_guest::Error| Error::input(format!("merchant {}", entry.mch_id), e);
    Merchant::new(MerchantConfig {
        appid: entry.appid.clone(),
        mch_id: entry.mch_id.clone(),
        api_key: ApiKey::new(key.to_owned()).map_err(bad)?,
        sign_type: SignType::Md5,
        sub_appid: None,
        sub_mch_id: None,
        sandbox,
    })
    .map_err(bad)
}

/// A sandbox key for merchants whose configuration gives none: stable, 32
/// hex characters, and different from the API key.
fn derived_sandbox_key(api_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("wxpay-simulator-sandbox:{api_key}").as_bytes());
    hex::encode(&digest[..16])
}

/// The shared state of a running simulator.
struct Shared {
    merchants: BTreeMap<String, KnownMerchant>,
    settings: Settings,
    clock: SimClock,
    book: Mutex<Book>,
    http: reqwest::Client,
}

/// A configured simulator, ready to serve.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl Simulator {
    /// Builds the simulator from its configuration.
    pub fn new(config: &SimulatorConfig) -> Result<Self, Error> {
        let merchants = config
            .merchants
            .iter()
            .map(|m| Ok((m.mch_id.clone(), KnownMerchant::new(m)?)))
            .collect::<Result<_, Error>>()?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(
                config.settings.notify_timeout_ms,
            ))
            .build()
            .map_err(|e| Error::input("notification client", e))?;
        Ok(Self {
            shared: Arc::new(Shared {
                merchants,
                settings: config.settings,
                clock: SimClock::new(config.settings.clock_scale),
                book: Mutex::new(Book::default()),
                http,
            }),
        })
    }

    /// The HTTP application: WeChat's paths plus `/admin/...`.
    pub fn router(&self) -> axum::Router {
        admin::routes()
            .fallback(protocol::handle)
            .with_state(self.clone())
    }

    /// Serves on `listener` until the process ends.
    pub async fn serve(self, listener: TcpListener) -> Result<(), Error> {
        axum::serve(crate::listen::no_delay(listener), self.router())
            .await
            .map_err(|e| Error::input("simulator", e))
    }

    /// Binds `addr` and serves in the background; returns the bound address.
    pub async fn spawn(self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        let (listener, bound) = bind(addr).await?;
        detach(self.serve(listener));
        Ok(bound)
    }

    /// The sandbox key `getsignkey` hands out for a merchant.
    pub fn sandbox_key(config: &MerchantEntry) -> String {
        config
            .sandbox_key
            .clone()
            .unwrap_or_else(|| derived_sandbox_key(&config.api_key))
    }
}

pub(crate) use crate::listen::bind;

/// Runs a server in the background, reporting why it stopped if it does.
pub(crate) fn detach(server: impl Future<Output = Result<(), Error>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = server.await {
            eprintln!("simulator stopped: {e}");
        }
    });
}
