//! The start-up self-check: catch the configuration mistakes that cost
//! merchants days, before the first real payment.
//!
//! The classic one is the wrong key for the environment: a sandbox key
//! (from getsignkey) against production URLs, or the production key against
//! `/sandboxnew/`. Neither can be seen in the key itself, so the check asks
//! WeChat: an orderquery for an order number that cannot exist is harmless,
//! and WeChat answers it with a *signed* ORDERNOTEXIST only if the key is
//! right. (In sandbox mode getsignkey already proved the production key.)

use super::{Gateway, nonce, wechat_code};
use crate::error::Error;
use crate::key::ApiKey;
use crate::sandbox::bindings::merchant_api::OrderRef;
use crate::sandbox::bindings::types;
use crate::wechat::CallError;

impl Gateway {
    /// Warnings about the configuration, each one sentence. With `probe`,
    /// one harmless orderquery checks the key against the environment.
    pub async fn self_check(&self, probe: bool) -> Vec<String> {
        let mut warnings = Vec::new();
        match ApiKey::load(&self.config.key_source()) {
            Ok(key) => warnings.extend(key.self_check()),
            Err(e) => warnings.push(format!("the key cannot be read again: {e}")),
        }
        warnings.extend(self.url_warnings());
        if probe && !self.config.wechat.sandbox {
            warnings.extend(self.probe_key().await);
        }
        warnings
    }

    fn url_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let base = self.config.wechat.base_url.as_deref().unwrap_or_default();
        if !self.config.wechat.sandbox && base.contains("sandbox") {
            warnings.push(format!(
                "wechat.base_url {base} looks like a sandbox URL but wechat.sandbox is false: a production key will be refused there"
            ));
        }
        let public = &self.config.server.public_url;
        let loopback = ["http://127.", "http://localhost", "http://[::1]"];
        if public.starts_with("http://") && !loopback.iter().any(|p| public.starts_with(p)) {
            warnings.push(format!(
                "server.public_url {public} is plain HTTP: WeChat Pay requires an https:// notify URL"
            ));
        }
        if self.catalog.is_empty() {
            warnings.push("no [[products]] are configured: orders cannot be placed".into());
        }
        warnings
    }

    async fn probe_key(&self) -> Vec<String> {
        let probe = format!("WXCHECK{}", &nonce()[..20]);
        let by = OrderRef::OutTradeNo(probe);
        let reply = self
            .call(|s, n| s.instance.order_query(&s.merchant, &by, n))
            .await;
        match reply {
            Ok(_) => Vec::new(),
            Err(e) if wechat_code(&e) == Some("ORDERNOTEXIST") => Vec::new(),
            Err(Error::Wechat { source, .. }) => match *source {
                CallError::Refused {
                    source: Error::Guest(types::Error::ReturnFailed(msg)),
                    ..
                } if msg.contains("签名") || msg.to_ascii_lowercase().contains("sign") => vec![format!(
                    "WeChat refused this key ({msg}): a sandbox key from getsignkey does not work against production URLs, and the production key does not work under /sandboxnew/ — check wechat.sandbox and the key file"
                )],
                CallError::Refused {
                    source: Error::Guest(types::Error::SignatureMismatch(_)),
                    ..
                } => vec![
                    "WeChat's reply did not verify with this key: is it the key of this mch_id, and sign_type right?".to_owned(),
                ],
                other => vec![format!("the key could not be checked with WeChat: {other}")],
            },
            Err(e) => vec![format!("the key could not be checked with WeChat: {e}")],
        }
    }
}
