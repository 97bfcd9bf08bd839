//! The gateway: the one place where the component, the WeChat client and
//! the store meet.
//!
//! Why one type: every way money moves — an order placed, a notification
//! received, a query answered, a refund requested — must follow the same
//! rules in the same order: validate and sign in the component, talk to
//! WeChat, believe only what the component verified, write durably with a
//! compare-and-set, then audit. [`Gateway`] is that sequence; the callback
//! server, the reconciliation task and the operator CLI are thin callers.
//!
//! The store is mostly synchronous, so writes (which wait for the disk)
//! run on tokio's blocking pool, as do reads of a store across the
//! network; reads of a local SQLite file and component calls take
//! microseconds and run inline. The callback's write, the hottest, is a
//! future instead ([`Store::apply_paid_notification`](crate::store::Store::apply_paid_notification)):
//! a burst of notifications parks no thread each.

mod notifications;
mod orders;
mod reconcile;
mod sandbox_key;
mod self_check;
pub mod signers;
mod time;

use std::sync::Arc;

use rand::Rng as _;
use rand::distr::Alphanumeric;

pub use self::notifications::NotifyReply;
pub use self::orders::{CreatedOrder, OrderRequest, RefundRequestInput, same_order};
pub use self::reconcile::ReconcileReport;
pub use self::time::{beijing_time, now_ms, parse_beijing_time};

use self::sandbox_key::SandboxKey;
use self::signers::{KeyProvider, Signer, SignerPool};
use crate::config::GatewayConfig;
use crate::error::Error;
use crate::key::ApiKey;
use crate::metrics::Metrics;
use crate::sandbox::Sandbox;
use crate::sandbox::bindings::keyless::{Policy, Product};
use crate::store::{AuditEventInput, Store, StoreResult};
use crate::wechat::{Delivered, WechatClient};

/// An audit event stamped now, for [`Gateway::audit`] or for a store
/// write that appends it atomically with the change it records.
pub(crate) fn audit_event(
    actor: &str,
    action: &str,
    subject: &str,
    outcome: &str,
    detail: serde_json::Value,
) -> AuditEventInput {
    AuditEventInput {
        at_ms: now_ms(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        outcome: outcome.to_owned(),
        detail: detail.to_string(),
    }
}

/// The running gateway.
pub struct Gateway {
    config: GatewayConfig,
    signers: SignerPool,
    client: WechatClient,
    store: Arc<dyn Store>,
    catalog: Vec<Product>,
    policy: Policy,
    sandbox_key: Option<SandboxKey>,
    changes: tokio::sync::Notify,
    /// The component's SUCCESS reply to a notification: the same bytes
    /// every time, so it is asked for once.
    ack: String,
    /// This process among the gateways sharing the store (for leases).
    instance_id: String,
    metrics: Metrics,
}

impl Gateway {
    /// Opens the store named in the config and starts the gateway.
    pub async fn open(config: GatewayConfig, sandbox: Arc<Sandbox>) -> Result<Arc<Self>, Error> {
        let location = config.store.location();
        let store = tokio::task::spawn_blocking(move || location.open())
            .await
            .map_err(|e| Error::input("store", e))??;
        Self::with_store(config, sandbox, store).await
    }

    /// Starts the gateway on a given store.
    pub async fn with_store(
        config: GatewayConfig,
        sandbox: Arc<Sandbox>,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Self>, Error> {
        let settings = config
            .merchant_settings()
            .map_err(|e| Error::input("config", e))?;
        let client_config = config
            .client_config()
            .map_err(|e| Error::input("config", e))?;
        let metrics = Metrics::default();
        let client = WechatClient::new(&client_config)?.observed_by(metrics.clone());
        let source = config.key_source();
        let (key, sandbox_key): (KeyProvider, _) = if settings.sandbox {
            let cache = SandboxKey::fetch(&sandbox, &settings, &source, &client, &config).await?;
            (cache.provider(), Some(cache))
        } else {
            (Arc::new(move || ApiKey::load(&source)), None)
        };
        let size = config.component.instances.unwrap_or(4);
        let signers = SignerPool::new(Arc::clone(&sandbox), settings, key, size)?;
        let defaults = signers.with(|s| s.instance.default_policy())?;
        let ack = signers.with(|s| s.instance.notification_ack())?;
        let policy = config.policy(defaults);
        let catalog = config.catalog();
        Ok(Arc::new(Self {
            config,
            signers,
            client,
            store,
            catalog,
            policy,
            sandbox_key,
            changes: tokio::sync::Notify::new(),
            ack,
            instance_id: format!(
                "gateway-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ),
            metrics,
        }))
    }

    /// The counters and histograms served on `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// This gateway among those sharing the store.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The catalog.
    pub fn catalog(&self) -> &[Product] {
        &self.catalog
    }

    /// The effective policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Runs a synchronous call on a signer instance.
    pub fn sign<R>(&self, f: impl FnOnce(&mut Signer) -> Result<R, Error>) -> Result<R, Error> {
        self.signers.with(f)
    }

    /// Runs a store call on the blocking pool.
    pub async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    ) -> Result<T, Error> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| Error::input("store task", e))?
            .map_err(Error::from)
    }

    /// Runs a read of the store: in place when the store's reads are local
    /// (see [`Store::reads_are_local`]), otherwise like [`Gateway::db`].
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    ) -> Result<T, Error> {
        if self.store.reads_are_local() {
            return f(self.store.as_ref()).map_err(Error::from);
        }
        self.db(f).await
    }

    /// Woken after every audited event — every state change is audited —
    /// so a long-poll can wait for a payment to move. Changes made by
    /// another process are not seen here; waiters also poll.
    pub fn changes(&self) -> &tokio::sync::Notify {
        &self.changes
    }

    /// Appends to the audit log. A failure to audit is an error: an action
    /// that cannot be audited is not reported as done.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        outcome: &str,
        detail: serde_json::Value,
    ) -> Result<(), Error> {
        let event = audit_event(actor, action, subject, outcome, detail);
        let appended = self.db(move |s| s.append_audit(&event)).await.map(|_| ());
        self.changes.notify_waiters();
        appended
    }

    /// Signs with `build`, sends, and returns the verified reply.
    async fn call(
        &self,
        build: impl FnOnce(
            &mut Signer,
            &str,
        )
            -> Result<crate::sandbox::bindings::merchant_api::SignedRequest, Error>,
    ) -> Result<Delivered, Error> {
        self.refresh_sandbox_key().await?;
        let nonce = nonce();
        let request = self.sign(|s| build(s, &nonce))?;
        let sign_type = request.sign_type;
        let verify =
            |body: &[u8]| self.sign(|s| s.instance.verify_response(&s.merchant, body, sign_type));
        self.client
            .call_with(&request, verify)
            .await
            .map_err(|e| Error::Wechat {
                path: request.path.clone(),
                source: Box::new(e),
            })
    }

    /// Fetches a new sandbox key when the cached one has expired.
    async fn refresh_sandbox_key(&self) -> Result<(), Error> {
        let Some(cache) = &self.sandbox_key else {
            return Ok(());
        };
        if !cache.expired() {
            return Ok(());
        }
        let settings = self.signers.settings().clone();
        cache
            .refresh(&settings, &self.config.key_source(), &self.client)
            .await?;
        self.signers.rekey(cache.provider())
    }
}

/// A fresh 32-character nonce.
pub fn nonce() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// WeChat's err_code when a call failed with a verified business error.
pub fn wechat_code(e: &Error) -> Option<&str> {
    use crate::sandbox::bindings::types;
    use crate::wechat::CallError;
    match e {
        Error::Wechat { source, .. } => match source.as_ref() {
            CallError::Refused {
                source: Error::Guest(types::Error::Wechat(w)),
                ..
            } => Some(w.code.as_str()),
            _ => None,
        },
        _ => None,
    }
}
