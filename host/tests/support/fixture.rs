//! A gateway on loopback against an in-process simulator, for the
//! gateway's and the agent API's end-to-end tests.

#![allow(dead_code, unreachable_pub, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wxpay::config::GatewayConfig;
use wxpay::gateway::{Gateway, OrderRequest};
use wxpay::sandbox::bindings::types::SignType;
use wxpay::sandbox::signer::MerchantSettings;
use wxpay::sandbox::{MerchantHandle, Sandbox, SignerInstance};
use wxpay::simulator::Simulator;
use wxpay::simulator::config::SimulatorConfig;
use wxpay::store::OrderState;

use crate::support;

pub const APPID: &str = "wxd930ea5d5a258f4f";
pub const MCH_ID: &str = "10000100";
pub const KEY: &str = "192006250b4c09247ec02edce69f6a2d";
pub const SANDBOX_KEY: &str = "5a1b0c9d8e7f60514233241506f7e8d9";

pub fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    Arc::clone(SANDBOX.get_or_init(|| Arc::new(Sandbox::embedded().expect("component"))))
}

/// Log lines written by every test in this binary, to search for the key.
pub fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        buffer
    })
}

pub struct LogWriter(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct Options {
    pub key: &'static str,
    pub sign_type: &'static str,
    pub sandbox: bool,
    pub tls: bool,
    pub client_cert: bool,
    pub pkcs12: bool,
    pub sandbox_key_ttl_secs: u64,
    pub max_body_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            key: KEY,
            sign_type: "HMAC-SHA256",
            sandbox: false,
            tls: false,
            client_cert: true,
            pkcs12: false,
            sandbox_key_ttl_secs: 3600,
            max_body_bytes: 65536,
        }
    }
}

pub struct Fixture {
    pub sim: String,
    pub gateway: Arc<Gateway>,
    pub notify: SocketAddr,
    pub http: reqwest::Client,
    pub replies: Arc<Mutex<Vec<String>>>,
    pub db: std::path::PathBuf,
    pub _pki: Option<support::pki::Pki>,
    pub _key: tempfile::NamedTempFile,
    pub _dir: tempfile::TempDir,
}

pub fn simulator_config() -> SimulatorConfig {
    let mut config = SimulatorConfig::parse(&format!(
        "[[merchants]]\nappid = \"{APPID}\"\nmch_id = \"{MCH_ID}\"\napi_key = \"{KEY}\"\nsandbox_key = \"{SANDBOX_KEY}\"\n"
    ))
    .expect("simulator config");
    config.settings.clock_scale = 60.0;
    config.settings.timeout_delay_ms = 1_500;
    config.settings.notify_timeout_ms = 3_000;
    config
}

/// Products priced to pick the simulator's scenarios (see its README table).
pub const PRODUCTS: &str = r#"
[[products]]
id = "tea"
name = "Green tea"
unit_price_fen = 1200
max_quantity = 10
[[products]]
id = "normal"
name = "Scenario 101"
unit_price_fen = 101
[[products]]
id = "duplicate"
name = "Scenario 102"
unit_price_fen = 102
[[products]]
id = "concurrent"
name = "Scenario 103"
unit_price_fen = 103
[[products]]
id = "silent"
name = "Scenario 105"
unit_price_fen = 105
[[products]]
id = "forged"
name = "Scenario 106"
unit_price_fen = 106
[[products]]
id = "unsigned"
name = "Scenario 107"
unit_price_fen = 107
[[products]]
id = "tampered"
name = "Scenario 108"
unit_price_fen = 108
[[products]]
id = "other-app"
name = "Scenario 109"
unit_price_fen = 109
[[products]]
id = "systemerror"
name = "Scenario 110"
unit_price_fen = 110
[[products]]
id = "slow"
name = "Scenario 111"
unit_price_fen = 111
[[products]]
id = "credits"
name = "Prepaid credits"
unit_price_fen = 1
max_quantity = 200000
[[products]]
id = "usage"
name = "Metered usage"
unit_price_fen = 1
max_quantity = 1000000

[ledger]
topup_product = "credits"
min_topup_fen = 100
meter_product = "usage"
"#;

impl Fixture {
    pub async fn start(options: Options) -> Self {
        Self::try_start(options).await.expect("gateway")
    }

    pub async fn try_start(options: Options) -> Result<Self, wxpay::Error> {
        captured_logs();
        let sim = Simulator::new(&simulator_config()).expect("simulator");
        let pki = options.tls.then(support::pki::pki);
        let sim_base = match &pki {
            Some(pki) => {
                let addr = sim
                    .spawn_tls("127.0.0.1:0".parse().expect("addr"), &pki.files)
                    .await
                    .expect("https simulator");
                format!("https://127.0.0.1:{}", addr.port())
            }
            None => {
                let addr = sim
                    .spawn("127.0.0.1:0".parse().expect("addr"))
                    .await
                    .expect("simulator");
                format!("http://127.0.0.1:{}", addr.port())
            }
        };
        let dir = tempfile::tempdir().expect("dir");
        let key = support::key_file(options.key, 0o600);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let notify = listener.local_addr().expect("addr");
        let mut tls = String::new();
        if let Some(pki) = &pki {
            let ca = dir.path().join("ca.pem");
            std::fs::write(&ca, &pki.ca_pem).expect("ca");
            tls = format!("extra_roots = [{:?}]\n", ca.display().to_string());
            if options.client_cert && options.pkcs12 {
                tls.push_str(&format!(
                    "client_pkcs12 = {:?}\n",
                    pki.client_p12.display().to_string()
                ));
            } else if options.client_cert {
                tls.push_str(&format!(
                    "client_cert = {:?}\nclient_key = {:?}\n",
                    pki.client_cert.display().to_string(),
                    pki.client_key.display().to_string()
                ));
            }
        }
        let db = dir.path().join("wxpay.db");
        let text = format!(
            r#"
[merchant]
appid = "{APPID}"
mch_id = "{MCH_ID}"
sign_type = "{sign_type}"
key_file = {key:?}

[wechat]
environment = "custom"
base_url = "{sim_base}"
sandbox = {sandbox}
sandbox_key_ttl_secs = {ttl}
total_timeout_ms = 700
retry_base_ms = 10
{tls}
[server]
listen = "{notify}"
public_url = "http://{notify}"
max_body_bytes = {max_body}

[store]
sqlite = {db:?}

[reconcile]
interval_secs = 0

[component]
cache_dir = {cache:?}
{PRODUCTS}"#,
            sign_type = options.sign_type,
            sandbox = options.sandbox,
            ttl = options.sandbox_key_ttl_secs,
            max_body = options.max_body_bytes,
            key = key.path().display().to_string(),
            db = db.display().to_string(),
            cache = dir.path().join("cache").display().to_string(),
        );
        let config = GatewayConfig::parse(&text).expect("gateway config");
        let gateway = Gateway::open(config, sandbox()).await?;
        let replies = Arc::new(Mutex::new(Vec::new()));
        let router = wxpay::callbacks::router(Arc::clone(&gateway))
            .merge(wxpay::agents::api::router(Arc::clone(&gateway)))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&replies),
                record_reply,
            ));
        tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("callback server");
        });
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        Ok(Self {
            sim: sim_base,
            gateway,
            notify,
            http,
            replies,
            db,
            _pki: pki,
            _key: key,
            _dir: dir,
        })
    }

    pub fn request(&self, product: &str, key: &str) -> OrderRequest {
        OrderRequest {
            product_id: product.into(),
            quantity: 1,
            trade_type: "NATIVE".into(),
            client_ip: "127.0.0.1".into(),
            idempotency_key: key.into(),
            ..OrderRequest::default()
        }
    }

    pub async fn create(&self, product: &str, key: &str) -> String {
        let created = self
            .gateway
            .create_order(&self.request(product, key), "test")
            .await
            .unwrap_or_else(|e| panic!("create {product}: {e}"));
        assert_eq!(created.order.state, OrderState::Pending);
        assert!(created.order.code_url.is_some(), "NATIVE gives a code_url");
        created.order.out_trade_no
    }

    pub async fn admin(&self, path: &str, body: serde_json::Value) {
        let response = self
            .http
            .post(format!("{}/admin/{path}", self.sim))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("admin");
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    }

    pub async fn pay(&self, out_trade_no: &str) {
        self.admin(
            "pay",
            serde_json::json!({"out_trade_no": out_trade_no, "sandbox": self.gateway.config().wechat.sandbox}),
        )
        .await;
    }

    pub async fn order(&self, no: &str) -> wxpay::store::Order {
        let no = no.to_owned();
        self.gateway
            .db(move |s| s.order(&no))
            .await
            .expect("store")
            .expect("stored")
    }

    pub async fn wait_for(&self, no: &str, state: OrderState) -> wxpay::store::Order {
        for _ in 0..300 {
            let order = self.order(no).await;
            if order.state == state {
                return order;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "order {no} never reached {state}: {:?}",
            self.order(no).await
        );
    }

    pub async fn notifications(&self) -> Vec<wxpay::store::NotificationRecord> {
        self.gateway
            .db(|s| s.notifications(1000, 0))
            .await
            .expect("notifications")
    }

    /// The notifications stored for order `no`, once `done` holds for them
    /// (polled for up to 15 s, then whatever is stored).
    pub async fn wait_for_notifications(
        &self,
        no: &str,
        done: impl Fn(&[wxpay::store::NotificationRecord]) -> bool,
    ) -> Vec<wxpay::store::NotificationRecord> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let notes: Vec<_> = self
                .notifications()
                .await
                .into_iter()
                .filter(|n| n.out_trade_no.as_deref() == Some(no))
                .collect();
            if done(&notes) || tokio::time::Instant::now() >= deadline {
                return notes;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn audit(&self) -> Vec<wxpay::store::AuditEvent> {
        self.gateway
            .db(|s| s.audit(0, 10_000))
            .await
            .expect("audit")
    }

    pub async fn post_notification(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        let response = self
            .http
            .post(format!("http://{}{path}", self.notify))
            .body(body)
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        (status, response.text().await.expect("text"))
    }

    /// A genuine payment notification for `no`, signed with the key.
    pub fn notification(&self, no: &str, total_fee: u64, transaction_id: &str) -> Vec<u8> {
        payment_notification(no, total_fee, transaction_id)
    }
}

/// An instance holding the test merchant, signing with `algorithm`.
fn merchant_signing_with(algorithm: SignType) -> (SignerInstance, MerchantHandle) {
    let mut signer = sandbox().instantiate().expect("instance");
    let settings = MerchantSettings {
        appid: APPID.into(),
        mch_id: MCH_ID.into(),
        sign_type: algorithm,
        sub_appid: None,
        sub_mch_id: None,
        sandbox: false,
    };
    let merchant = signer
        .merchant(&settings, &support::key(KEY))
        .expect("merchant");
    (signer, merchant)
}

/// A genuine payment notification for `no`, signed with the key by
/// `algorithm`, without a `sign_type` field (WeChat may leave it out);
/// an empty `attach` is left out of the signature, as WeChat does.
pub fn payment_notification_signed_with(
    algorithm: SignType,
    no: &str,
    total_fee: u64,
    transaction_id: &str,
    attach: &str,
) -> Vec<u8> {
    let (mut signer, merchant) = merchant_signing_with(algorithm);
    let fee = total_fee.to_string();
    let mut fields: Vec<(String, String)> = [
        ("appid", APPID),
        ("mch_id", MCH_ID),
        ("nonce_str", "n0123456789"),
        ("result_code", "SUCCESS"),
        ("return_code", "SUCCESS"),
        ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
        ("trade_type", "NATIVE"),
        ("fee_type", "CNY"),
        ("total_fee", fee.as_str()),
        ("transaction_id", transaction_id),
        ("out_trade_no", no),
        ("time_end", "20260101120000"),
        ("attach", attach),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let sign = signer
        .sign(&merchant, &fields, Some(algorithm))
        .expect("sign");
    fields.push(("sign".to_owned(), sign));
    signer.write_xml(&fields).expect("xml").into_bytes()
}

/// A genuine payment notification for `no`, signed with the key.
pub fn payment_notification(no: &str, total_fee: u64, transaction_id: &str) -> Vec<u8> {
    let (mut signer, merchant) = merchant_signing_with(SignType::HmacSha256);
    wxpay::bench::payment_notification(&mut signer, &merchant, no, total_fee, transaction_id)
        .expect("notification")
}

/// Keeps every reply body the callback server sends, to search for the key.
pub async fn record_reply(
    axum::extract::State(replies): axum::extract::State<Arc<Mutex<Vec<String>>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("reply body");
    replies
        .lock()
        .expect("replies")
        .push(String::from_utf8_lossy(&bytes).into_owned());
    axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
}

pub const ACK: &str = "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";

impl Fixture {
    /// Adds an agent with this grant and returns its token.
    pub async fn agent(
        &self,
        id: &str,
        grant: &wxpay::agents::Grant,
        expires_at_ms: Option<i64>,
    ) -> String {
        let token = wxpay::agents::new_token();
        let record = wxpay::store::AgentRecord {
            agent_id: id.into(),
            name: id.into(),
            token_sha256: wxpay::agents::token_hash(&token),
            grant_json: serde_json::to_string(grant).expect("grant"),
            created_at_ms: wxpay::gateway::now_ms(),
            expires_at_ms,
            revoked_at_ms: None,
        };
        let inserted = self
            .gateway
            .db(move |s| s.insert_agent(&record))
            .await
            .expect("store");
        assert!(inserted, "agent {id} is new");
        token
    }

    /// An agent API call: (status, JSON body).
    pub async fn api(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.notify))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("agent API");
        let status = response.status().as_u16();
        let text = response.text().await.expect("text");
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, value)
    }
}
