//! The WeChat Pay client: sends what the component signed, believes only
//! what the component verified, and retries only what WeChat says may be
//! retried.
//!
//! Retries are where payment clients go wrong. WeChat's rule for
//! `SYSTEMERROR` and `BIZERR_NEED_RETRY` is "call again with the same
//! parameters": a new nonce or a new `out_refund_no` would create a second
//! order or refund. So a retry here resends the identical signed body, and
//! only for transport failures (timeouts, connection errors, HTTP errors,
//! HTML error pages) and the business codes the component marks retryable;
//! `FREQUENCY_LIMITED` waits longer. Attempts and total time are bounded.
//! Every reply is verified by the component before it is returned.

use std::path::PathBuf;
use std::time::Duration;

use rand::Rng as _;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::sandbox::bindings::merchant_api::SignedRequest;
use crate::sandbox::bindings::types;
use crate::sandbox::signer::Pairs;
use crate::sandbox::{MerchantHandle, SignerInstance};

/// Production host.
pub const PRODUCTION: &str = "https://api.mch.weixin.qq.com";
/// WeChat's disaster-recovery host.
pub const BACKUP: &str = "https://api2.mch.weixin.qq.com";

/// Where requests go. Sandbox paths (`/sandboxnew/...`) come from the
/// component, which knows whether the merchant is a sandbox merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Environment {
    /// `api.mch.weixin.qq.com`.
    Production,
    /// `api2.mch.weixin.qq.com`.
    Backup,
    /// Another base URL, e.g. `wxpay simulate` on loopback.
    Custom(String),
}

impl Environment {
    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        match self {
            Self::Production => PRODUCTION,
            Self::Backup => BACKUP,
            Self::Custom(url) => url.trim_end_matches('/'),
        }
    }
}

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff; each retry doubles it, with jitter.
    pub base_delay: Duration,
    /// The longest single backoff.
    pub max_delay: Duration,
    /// Multiplier for `FREQUENCY_LIMITED` and `INVALID_REQ_TOO_MUCH`.
    pub slow_factor: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            slow_factor: 5,
        }
    }
}

/// The merchant's client certificate for refund and reverse.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientIdentity {
    /// PEM files.
    Pem {
        /// `apiclient_cert.pem`.
        cert: PathBuf,
        /// `apiclient_key.pem`.
        key: PathBuf,
    },
    /// The PKCS#12 file WeChat issues, and its password.
    Pkcs12 {
        /// `apiclient_cert.p12`.
        file: PathBuf,
        /// Its password (WeChat's default is the mch_id).
        password: zeroize::Zeroizing<String>,
    },
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pem { cert, key } => f
                .debug_struct("Pem")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            Self::Pkcs12 { file, .. } => f
                .debug_struct("Pkcs12")
                .field("file", file)
                .finish_non_exhaustive(),
        }
    }
}

impl ClientIdentity {
    /// Reads the files into a reqwest identity.
    fn load(&self) -> Result<reqwest::Identity, Error> {
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map(zeroize::Zeroizing::new)
                .map_err(|e| Error::input(path.display().to_string(), e))
        };
        match self {
            Self::Pem { cert, key } => {
                let mut pem = read(cert)?;
                pem.extend_from_slice(&read(key)?);
                reqwest::Identity::from_pem(&pem).map_err(|e| Error::input("client certificate", e))
            }
            Self::Pkcs12 { file, password } => {
                crate::pkcs12::reqwest_identity_from_pkcs12(&read(file)?, password)
            }
        }
    }
}

/// Everything the client needs besides the component.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Where requests go.
    pub environment: Environment,
    /// Connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Whole-request timeout (default 10 s).
    pub total_timeout: Duration,
    /// Retry rules.
    pub retry: RetryPolicy,
    /// Client certificate for `/secapi/` endpoints.
    pub identity: Option<ClientIdentity>,
    /// An HTTP(S) proxy, for a fixed egress IP.
    pub proxy: Option<String>,
    /// Extra CA certificates (PEM) to trust, e.g. a test simulator's.
    pub extra_roots: Vec<PathBuf>,
}

impl ClientConfig {
    /// Defaults for an environment: 5 s connect, 10 s total, 3 attempts.
    pub fn new(environment: Environment) -> Self {
        Self {
            environment,
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            identity: None,
            proxy: None,
            extra_roots: Vec::new(),
        }
    }
}

/// What one call cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The verified reply fields (minus `sign`).
    pub fields: Pairs,
    /// How many times the request was sent.
    pub attempts: u32,
}

/// A failed call, after the retries the policy allowed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The endpoint needs the client certificate and none is configured.
    #[error("{path} needs the merchant's client certificate (configure its PEM files)")]
    ClientCertificateMissing {
        /// The path.
        path: String,
    },
    /// No usable reply: connection, timeout, HTTP status or an HTML page.
    #[error("no usable reply from WeChat after {attempts} attempt(s): {last}")]
    Transport {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The component refused the reply, or WeChat answered with an error.
    #[error("after {attempts} attempt(s): {source}")]
    Refused {
        /// Attempts made.
        attempts: u32,
        /// The typed error.
        source: Error,
    },
}

/// A reqwest client (two, when a client certificate is configured).
pub struct WechatClient {
    base: String,
    plain: reqwest::Client,
    with_identity: Option<reqwest::Client>,
    retry: RetryPolicy,
    metrics: Metrics,
}

fn builder(config: &ClientConfig) -> Result<reqwest::ClientBuilder, Error> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(config.connect_timeout)
        .timeout(config.total_timeout);
    if let Some(proxy) = &config.proxy {
        builder = builder.proxy(reqwest::Proxy::all(proxy).map_err(|e| Error::input("proxy", e))?);
    }
    for root in &config.extra_roots {
        let pem = std::fs::read(root).map_err(|e| Error::input(root.display().to_string(), e))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| Error::input(root.display().to_string(), e))?;
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

impl WechatClient {
    /// Builds the client; reads the certificate files once.
    pub fn new(config: &ClientConfig) -> Result<Self, Error> {
        let plain = builder(config)?
            .build()
            .map_err(|e| Error::input("HTTP client", e))?;
        let with_identity = match &config.identity {
            None => None,
            Some(identity) => {
                let client = builder(config)?.identity(identity.load()?).build();
                Some(client.map_err(|e| Error::input("HTTP client", e))?)
            }
        };
        Ok(Self {
            base: config.environment.base_url().to_owned(),
            plain,
            with_identity,
            retry: config.retry,
            metrics: Metrics::default(),
        })
    }

    /// Counts calls, answers and retries in `metrics` (by default in a
    /// set of its own that nobody reads).
    pub fn observed_by(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Sends a signed request and returns the verified reply, retrying the
    /// identical body as the policy allows.
    pub async fn call(
        &self,
        signer: &mut SignerInstance,
        merchant: &MerchantHandle,
        request: &SignedRequest,
    ) -> Result<Delivered, CallError> {
        let read = |body: &[u8]| signer.verify_response(merchant, body, request.sign_type);
        self.call_with(request, read).await
    }

    /// Like [`WechatClient::call`], with the reply read by `verify` (which
    /// must verify it in the component): for callers that share instances.
    pub async fn call_with(
        &self,
        request: &SignedRequest,
        verify: impl FnMut(&[u8]) -> Result<Pairs, Error>,
    ) -> Result<Delivered, CallError> {
        let http = self.http_for(request)?;
        let (fields, attempts) = self.with_retries(http, request, verify).await?;
        Ok(Delivered { fields, attempts })
    }

    /// Fetches a bill (`downloadbill`): the text table, or WeChat's refusal.
    pub async fn fetch_bill(
        &self,
        signer: &mut SignerInstance,
        merchant: &MerchantHandle,
        request: &SignedRequest,
    ) -> Result<String, CallError> {
        let read = |body: &[u8]| signer.check_bill(merchant, body);
        Ok(self.with_retries(&self.plain, request, read).await?.0)
    }

    /// Sends the identical body until `read` accepts a reply or the policy
    /// says stop; returns what `read` made of it and the attempts used.
    async fn with_retries<T>(
        &self,
        http: &reqwest::Client,
        request: &SignedRequest,
        mut read: impl FnMut(&[u8]) -> Result<T, Error>,
    ) -> Result<(T, u32), CallError> {
        let url = format!("{}{}", self.base, request.path);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = match send(http, &url, &request.body).await {
                Ok(body) => match read(&body) {
                    Ok(value) => {
                        self.metrics.wechat_call(&request.path, "SUCCESS");
                        return Ok((value, attempt));
                    }
                    Err(e) => Attempt::Refused(e),
                },
                Err(failure) => Attempt::Transport(failure),
            };
            self.metrics.wechat_call(&request.path, outcome.err_code());
            let Some(delay) = self.retry_delay(&outcome, attempt) else {
                log_final(&request.path, attempt, &outcome);
                return Err(outcome.into_error(attempt));
            };
            self.metrics.wechat_retry(&request.path);
            log_retry(&request.path, attempt, &outcome);
            tokio::time::sleep(delay).await;
        }
    }

    fn http_for(&self, request: &SignedRequest) -> Result<&reqwest::Client, CallError> {
        if !request.needs_client_cert {
            return Ok(&self.plain);
        }
        self.with_identity
            .as_ref()
            .ok_or_else(|| CallError::ClientCertificateMissing {
                path: request.path.clone(),
            })
    }

    /// The wait before the next attempt, or `None` when no retry is allowed.
    fn retry_delay(&self, outcome: &Attempt, attempt: u32) -> Option<Duration> {
        if attempt >= self.retry.max_attempts {
            return None;
        }
        let factor = match outcome {
            Attempt::Transport(_) => 1,
            Attempt::Refused(Error::Guest(types::Error::Wechat(w))) if w.retryable => {
                if matches!(
                    w.code.as_str(),
                    "FREQUENCY_LIMITED" | "INVALID_REQ_TOO_MUCH"
                ) {
                    self.retry.slow_factor.max(1)
                } else {
                    1
                }
            }
            Attempt::Refused(_) => return None,
        };
        let exponential = self
            .retry
            .base_delay
            .saturating_mul(1 << (attempt - 1).min(16));
        let capped = exponential.min(self.retry.max_delay).saturating_mul(factor);
        let jitter = rand::rng().random_range(0.5..=1.0);
        Some(capped.mul_f64(jitter))
    }
}

/// One attempt's failure.
enum Attempt {
    Transport(String),
    Refused(Error),
}

impl Attempt {
    /// What WeChat answered, as a metrics label.
    fn err_code(&self) -> &str {
        match self {
            Self::Transport(_) => "transport",
            Self::Refused(Error::Guest(types::Error::Wechat(w))) => &w.code,
            Self::Refused(_) => "invalid_reply",
        }
    }

    fn into_error(self, attempts: u32) -> CallError {
        match self {
            Self::Transport(last) => CallError::Transport { attempts, last },
            Self::Refused(source) => CallError::Refused { attempts, source },
        }
    }
}

fn log_retry(path: &str, attempt: u32, outcome: &Attempt) {
    match outcome {
        Attempt::Transport(why) => {
            tracing::warn!(path, attempt, reason = %why, "WeChat unreachable, retrying")
        }
        Attempt::Refused(Error::Guest(types::Error::Wechat(w))) => {
            tracing::warn!(path, attempt, err_code = %w.code, hint = %w.hint, "WeChat asked for a retry");
        }
        Attempt::Refused(e) => tracing::warn!(path, attempt, error = %e, "retrying"),
    }
}

/// The last word on a failed call, with WeChat's err_code and a hint.
fn log_final(path: &str, attempts: u32, outcome: &Attempt) {
    match outcome {
        Attempt::Transport(why) => {
            tracing::error!(path, attempts, reason = %why, "WeChat unreachable, giving up");
        }
        Attempt::Refused(Error::Guest(types::Error::Wechat(w))) if is_state_answer(&w.code) => {
            tracing::info!(path, attempts, err_code = %w.code, "WeChat answered with the order's state");
        }
        Attempt::Refused(Error::Guest(types::Error::Wechat(w))) => {
            tracing::warn!(path, attempts, err_code = %w.code, description = %w.description, hint = %w.hint, "WeChat refused the request");
        }
        Attempt::Refused(Error::Guest(types::Error::ReturnFailed(msg))) => {
            tracing::warn!(path, attempts, return_msg = %msg, hint = %return_hint(msg), "WeChat refused the request");
        }
        Attempt::Refused(e) => {
            tracing::error!(path, attempts, error = %e, "WeChat's reply was not believed");
        }
    }
}

/// Codes that report where an order or refund is, not a mistake.
fn is_state_answer(code: &str) -> bool {
    matches!(
        code,
        "ORDERNOTEXIST" | "REFUNDNOTEXIST" | "ORDERPAID" | "ORDERCLOSED"
    )
}

/// A one-line hint for the `return_code=FAIL` messages seen most.
fn return_hint(msg: &str) -> &'static str {
    if msg.contains("签名") || msg.to_ascii_lowercase().contains("sign") {
        "check the key (production vs sandbox key), sign_type, and that values are signed exactly as sent"
    } else if msg.contains("XML") || msg.contains("格式") {
        "check the body is UTF-8 XML with every value as sent"
    } else if msg.contains("mch_id") || msg.contains("商户号") {
        "check mch_id, and /sandboxnew/ (not /sandbox/) for the sandbox"
    } else {
        "see the return_msg"
    }
}

/// POSTs the body; anything but HTTP 200 with an XML body is a transport failure.
async fn send(http: &reqwest::Client, url: &str, body: &str) -> Result<Vec<u8>, String> {
    let response = http
        .post(url)
        .header("Content-Type", "text/xml; charset=utf-8")
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("timeout: {e}")
            } else {
                e.to_string()
            }
        })?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).to_ascii_lowercase();
    if head.trim_start().starts_with("<html") || head.trim_start().starts_with("<!doctype html") {
        return Err("an HTML page instead of XML".into());
    }
    Ok(bytes.to_vec())
}
