//! The sandbox key: fetched with getsignkey, cached, fetched again on expiry.
//!
//! WeChat's sandbox signs with its own key, handed out by
//! `/sandboxnew/pay/getsignkey` to a request signed (MD5) with the
//! production key. The production key is used for nothing else here: a
//! short-lived instance signs the one request, verifies the reply and is
//! dropped. The sandbox key moves no money; it is kept, zeroizing, for
//! re-keying instances until it expires.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::signers::KeyProvider;
use crate::config::GatewayConfig;
use crate::error::Error;
use crate::key::{ApiKey, KeySource};
use crate::sandbox::Sandbox;
use crate::sandbox::bindings::types::SignType;
use crate::sandbox::signer::MerchantSettings;
use crate::wechat::WechatClient;

struct Cached {
    key: Zeroizing<String>,
    fetched: Instant,
}

/// The cached sandbox key.
pub(super) struct SandboxKey {
    sandbox: Arc<Sandbox>,
    ttl: Duration,
    cached: Arc<Mutex<Cached>>,
}

impl SandboxKey {
    /// Fetches the first key.
    pub(super) async fn fetch(
        sandbox: &Arc<Sandbox>,
        settings: &MerchantSettings,
        source: &KeySource,
        client: &WechatClient,
        config: &GatewayConfig,
    ) -> Result<Self, Error> {
        let key = get_sign_key(sandbox, settings, source, client).await?;
        Ok(Self {
            sandbox: Arc::clone(sandbox),
            ttl: Duration::from_secs(config.wechat.sandbox_key_ttl_secs),
            cached: Arc::new(Mutex::new(Cached {
                key,
                fetched: Instant::now(),
            })),
        })
    }

    /// Whether the key is older than its time to live.
    pub(super) fn expired(&self) -> bool {
        self.lock().fetched.elapsed() >= self.ttl
    }

    /// Fetches a new key into the cache.
    pub(super) async fn refresh(
        &self,
        settings: &MerchantSettings,
        source: &KeySource,
        client: &WechatClient,
    ) -> Result<(), Error> {
        let key = get_sign_key(&self.sandbox, settings, source, client).await?;
        *self.lock() = Cached {
            key,
            fetched: Instant::now(),
        };
        tracing::info!("sandbox key fetched again with getsignkey");
        Ok(())
    }

    /// Keys new instances from the cache.
    pub(super) fn provider(&self) -> KeyProvider {
        let cached = Arc::clone(&self.cached);
        Arc::new(move || {
            let key = cached
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .key
                .clone();
            ApiKey::from_secret(key)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Calls getsignkey with the production key and returns the sandbox key.
async fn get_sign_key(
    sandbox: &Sandbox,
    settings: &MerchantSettings,
    source: &KeySource,
    client: &WechatClient,
) -> Result<Zeroizing<String>, Error> {
    let production = MerchantSettings {
        sandbox: false,
        sign_type: SignType::Md5,
        ..settings.clone()
    };
    let mut instance = sandbox.instantiate()?;
    let merchant = instance.merchant(&production, &ApiKey::load(source)?)?;
    let request = instance.get_sign_key(&merchant, &super::nonce())?;
    let verify = |body: &[u8]| instance.verify_response(&merchant, body, SignType::Md5);
    let reply = client.call_with(&request, verify).await;
    instance.drop_merchant(merchant)?;
    let mut fields = reply
        .map_err(|e| {
            tracing::error!(
                "getsignkey failed: the sandbox needs the merchant's production APIv2 key to fetch its sandbox key; a sandbox key or another merchant's key is refused"
            );
            Error::Wechat {
                path: request.path.clone(),
                source: Box::new(e),
            }
        })?
        .fields;
    let key = fields
        .iter_mut()
        .find(|(name, _)| name == "sandbox_signkey")
        .map(|(_, value)| Zeroizing::new(std::mem::take(value)));
    for (_, value) in &mut fields {
        zeroize::Zeroize::zeroize(value);
    }
    key.ok_or_else(|| Error::input("getsignkey", "the reply has no sandbox_signkey"))
}
