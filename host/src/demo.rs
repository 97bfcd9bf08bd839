//! `wxpay demo`: the whole flow on one machine, with nothing to configure.
//!
//! It starts the simulator (WeChat's side) and the gateway on loopback with
//! a temporary SQLite file, a demo catalog and a demo agent, then plays an
//! agent that holds nothing but its token, through the same HTTP API any
//! agent uses: a payment intent, the QR code, the payer's scan, the
//! verified callback waking the agent, and a refund that waits for a
//! person's approval and settles by an encrypted refund notification.
//! Every step is printed; a failing step ends the demo with its name.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::agents::{self, Capability, Grant};
use crate::callbacks;
use crate::config::GatewayConfig;
use crate::error::Error;
use crate::gateway::{Gateway, now_ms};
use crate::sandbox::Sandbox;
use crate::simulator::Simulator;
use crate::simulator::config::SimulatorConfig;
use crate::store::ApprovalState;

/// The demo merchant's test key (the official documentation's example key).
const DEMO_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const APPID: &str = "wxd930ea5d5a258f4f";
const MCH_ID: &str = "10000100";

/// A failed step.
#[derive(Debug, thiserror::Error)]
#[error("step {step} ({name}) failed: {reason}")]
pub struct StepFailed {
    /// The step's number.
    pub step: usize,
    /// What it was doing.
    pub name: &'static str,
    /// Why it failed.
    pub reason: String,
}

/// Runs the demo, printing to `out`. `sandbox` is the compiled component.
pub async fn run(sandbox: Arc<Sandbox>, out: &mut (dyn Write + Send)) -> Result<(), StepFailed> {
    let mut demo = Demo::start(sandbox, out).await?;
    demo.script().await
}

struct Demo<'a> {
    out: &'a mut (dyn Write + Send),
    step: usize,
    simulator: String,
    api: String,
    token: String,
    gateway: Arc<Gateway>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

const STEPS: usize = 11;

fn setup_failed(reason: impl std::fmt::Display) -> StepFailed {
    StepFailed {
        step: 0,
        name: "start the simulator and the gateway",
        reason: reason.to_string(),
    }
}

/// The simulator (over TLS, with a throwaway CA and a PKCS#12 merchant
/// certificate) and a gateway serving callbacks and the agent API on
/// loopback, with a temporary store: what the demo and `wxpay bench` run on.
pub(crate) struct Stage {
    /// The temporary directory holding the key file, PKI and SQLite file.
    pub(crate) dir: tempfile::TempDir,
    /// The simulator's base URL.
    pub(crate) simulator: String,
    /// The gateway's base URL.
    pub(crate) api: String,
    /// The gateway.
    pub(crate) gateway: Arc<Gateway>,
    /// A client that trusts the simulator's CA.
    pub(crate) http: reqwest::Client,
}

impl Stage {
    /// Starts both; `redis` (a URL) puts the gateway's state in Redis
    /// under a fresh prefix instead of SQLite.
    pub(crate) async fn start(sandbox: Arc<Sandbox>, redis: Option<&str>) -> Result<Self, Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::input("temp dir", e))?;
        let pki = crate::simulator::pki::generate(dir.path(), MCH_ID)?;
        let simulator = start_simulator(&pki).await?;
        let (listener, addr) = crate::listen::bind(([127, 0, 0, 1], 0).into()).await?;
        let mut config = demo_config(dir.path(), &simulator, addr, &pki)?;
        if let Some(url) = redis {
            config.store.redis = Some(url.to_owned());
            config.store.key_prefix = format!("wxpay-stage:{}:{}:", std::process::id(), now_ms());
        }
        let gateway = Gateway::open(config, sandbox).await?;
        let app = callbacks::router(Arc::clone(&gateway))
            .merge(agents::api::router(Arc::clone(&gateway)));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(crate::listen::no_delay(listener), app).await {
                tracing::error!(error = %e, "stage gateway stopped");
            }
        });
        let root = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes())
            .map_err(|e| Error::input("simulator CA", e))?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(root)
            .build()
            .map_err(|e| Error::input("http client", e))?;
        Ok(Self {
            dir,
            simulator,
            api: format!("http://{addr}"),
            gateway,
            http,
        })
    }

    /// Enrolls an agent with `grant`; returns its token.
    pub(crate) async fn agent(&self, id: &str, grant: &Grant) -> Result<String, Error> {
        let (record, token) = agents::enroll(id, id, grant, now_ms(), 3_600_000)?;
        self.gateway.db(move |s| s.insert_agent(&record)).await?;
        Ok(token)
    }
}

impl<'a> Demo<'a> {
    async fn start(
        sandbox: Arc<Sandbox>,
        out: &'a mut (dyn Write + Send),
    ) -> Result<Self, StepFailed> {
        let stage = Stage::start(sandbox, None).await.map_err(setup_failed)?;
        let token = stage
            .agent("demo-agent", &demo_grant())
            .await
            .map_err(setup_failed)?;
        let _ = writeln!(
            out,
            "wxpay demo — simulator (WeChat's side) at {}, gateway at {}, store {}\n",
            stage.simulator,
            stage.api,
            stage.dir.path().join("wxpay.db").display()
        );
        Ok(Self {
            out,
            step: 0,
            simulator: stage.simulator,
            api: stage.api,
            token,
            gateway: stage.gateway,
            http: stage.http,
            _dir: stage.dir,
        })
    }

    fn say(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    fn begin(&mut self, name: &'static str) -> &'static str {
        self.step += 1;
        let line = format!("[{}/{STEPS}] {name}", self.step);
        self.say(&line);
        name
    }

    fn fail(&self, name: &'static str, reason: impl std::fmt::Display) -> StepFailed {
        StepFailed {
            step: self.step,
            name,
            reason: reason.to_string(),
        }
    }

    async fn script(&mut self) -> Result<(), StepFailed> {
        let name = self.begin("the agent lists what it may sell");
        let products = self.agent_get(name, "/v1/products").await?;
        for p in products["products"].as_array().into_iter().flatten() {
            let line = format!(
                "      {:<12} {:<24} {:>6} fen",
                p["product_id"].as_str().unwrap_or_default(),
                p["name"].as_str().unwrap_or_default(),
                p["unit_price_fen"]
            );
            self.say(&line);
        }

        let name = self.begin("the agent states an intent: 2 × tea, idempotency key demo-order-1");
        let intent = json!({"product_id": "tea", "quantity": 2, "idempotency_key": "demo-order-1", "note": "table 7"});
        let payment = self.agent_post(name, "/v1/payments", intent).await?;
        self.expect(name, &payment, "status", "payment_pending")?;
        let id = payment["payment_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let code_url = payment["code_url"].as_str().unwrap_or_default().to_owned();
        let line = format!(
            "      payment {id}: {} fen (fee estimate {} fen), status payment_pending, expires {}",
            payment["amount_fen"],
            payment["fee_estimate_fen"],
            payment["expires_at"].as_str().unwrap_or("?")
        );
        self.say(&line);
        let qr = terminal_qr(&code_url)
            .ok_or_else(|| self.fail(name, "the code_url cannot be drawn"))?;
        self.say(&format!("      scan to pay ({code_url}):\n{qr}"));

        let name = self.begin("the agent pauses, waiting for the payment (long-poll)");
        let wait_path = format!("/v1/payments/{id}/wait?timeout_s=30");
        let waiter = self.spawn_wait(wait_path);
        tokio::time::sleep(Duration::from_millis(400)).await;
        self.say("      … the payer scans the code and confirms (simulated)");
        self.simulator_post(name, "/admin/pay", json!({"out_trade_no": id}))
            .await?;
        let resumed = self.progress(name, waiter).await?;
        self.expect(name, &resumed, "status", "paid")?;
        let line = format!(
            "      verified callback landed; the agent resumes: status paid, transaction {}",
            resumed["transaction_id"].as_str().unwrap_or("?")
        );
        self.say(&line);

        let name = self.begin("the same intent again returns the same payment, not a second one");
        let again = self
            .agent_post(name, "/v1/payments", json!({"product_id": "tea", "quantity": 2, "idempotency_key": "demo-order-1", "note": "table 7"}))
            .await?;
        self.expect(name, &again, "payment_id", &id)?;
        self.say("      same payment_id; nothing was sent to WeChat twice");

        let name = self.begin(
            "the payer tops up 10 yuan of credits: an ordinary payment, credited when verified",
        );
        let topup = self
            .agent_post(
                name,
                "/v1/balances/demo-user/topups",
                json!({"amount_fen": 1000, "idempotency_key": "demo-topup-1"}),
            )
            .await?;
        let topup_id = topup["payment_id"].as_str().unwrap_or_default().to_owned();
        self.simulator_post(name, "/admin/pay", json!({"out_trade_no": topup_id}))
            .await?;
        self.until(
            name,
            "/v1/balances/demo-user",
            |v: &Value| v["balance_fen"].as_u64() == Some(1000),
            "a balance of 1000 fen",
        )
        .await?;
        self.say("      balance of demo-user: 1000 fen (one ledger entry, credited by the verified notification)");

        let name =
            self.begin("the agent meters three prompts against the balance, then one too many");
        for (i, (fen, tokens)) in [(120u64, 1_830u32), (85, 1_290), (230, 3_510)]
            .into_iter()
            .enumerate()
        {
            let note = format!("prompt {}: {tokens} tokens", i + 1);
            let charged = self
                .agent_post(name, "/v1/charges", json!({"payer_id": "demo-user", "amount_fen": fen, "idempotency_key": format!("demo-prompt-{i}"), "note": note}))
                .await?;
            let line = format!(
                "      {note}: -{fen} fen, balance {} fen",
                charged["balance_fen"]
            );
            self.say(&line);
        }
        let (status, short) = self
            .agent_call(reqwest::Method::POST, "/v1/charges", Some(json!({"payer_id": "demo-user", "amount_fen": 900, "idempotency_key": "demo-prompt-big"})))
            .await
            .map_err(|e| self.fail(name, e))?;
        if status != 402 || short["error"]["code"] != "insufficient_funds" {
            return Err(self.fail(
                name,
                format!("expected 402 insufficient_funds, got {status} {short}"),
            ));
        }
        let line = format!(
            "      402 insufficient_funds: {}",
            short["error"]["message"].as_str().unwrap_or_default()
        );
        self.say(&line);

        let name = self.begin("a guardrail refuses a payment over the agent's cap, before signing");
        let (status, refused) = self
            .agent_call(
                reqwest::Method::POST,
                "/v1/payments",
                Some(
                    json!({"product_id": "tea", "quantity": 9, "idempotency_key": "demo-too-big"}),
                ),
            )
            .await
            .map_err(|e| self.fail(name, e))?;
        if status != 403 || refused["error"]["code"] != "over_cap" {
            return Err(self.fail(
                name,
                format!("expected 403 over_cap, got {status} {refused}"),
            ));
        }
        let line = format!(
            "      403 over_cap: {}",
            refused["error"]["message"].as_str().unwrap_or_default()
        );
        self.say(&line);

        let name = self.begin("the agent asks for a refund of 600 fen: it waits for a person");
        let refund = self
            .agent_post(name, &format!("/v1/payments/{id}/refunds"), json!({"idempotency_key": "demo-refund-1", "amount_fen": 600, "reason": "one tea was cold"}))
            .await?;
        self.expect(name, &refund, "status", "pending_approval")?;
        let refund_id = refund["refund_id"].as_str().unwrap_or_default().to_owned();
        let approval_id = refund["approval"]["id"].as_i64().unwrap_or_default();
        self.say(&format!(
            "      refund {refund_id}: pending_approval (approval #{approval_id})"
        ));

        let name = self.begin("the operator approves it (wxpay approvals approve)");
        let approved = agents::approve(&self.gateway, approval_id, "demo-operator")
            .await
            .map_err(|e| self.fail(name, e))?;
        if approved.state != ApprovalState::Approved {
            return Err(self.fail(name, format!("approval is {}", approved.state)));
        }
        self.say("      approved; the refund went to /secapi/pay/refund over TLS with the merchant's PKCS#12 client certificate");

        let name = self.begin("the encrypted refund notification settles the refund");
        let refund_path = format!("/v1/payments/{id}/refunds/{refund_id}");
        let settled = self
            .until(
                name,
                &refund_path,
                |v: &Value| v["status"] == "succeeded",
                "status succeeded",
            )
            .await?;
        let line = format!(
            "      refund {}: succeeded ({} fen back to the payer)",
            settled["refund_id"].as_str().unwrap_or("?"),
            settled["amount_fen"]
        );
        self.say(&line);

        let name = self.begin("everything above is in the append-only audit log");
        let events = self
            .gateway
            .db(|s| s.audit(0, 1000))
            .await
            .map_err(|e| self.fail(name, e))?;
        for e in &events {
            let line = format!(
                "      #{:<3} {:<20} {:<20} {:<18}",
                e.seq, e.actor, e.action, e.outcome
            );
            self.say(&line);
        }
        if events.is_empty() {
            return Err(self.fail(name, "the audit log is empty"));
        }
        self.say("\ndemo complete: every step passed");
        Ok(())
    }

    fn expect(
        &self,
        name: &'static str,
        value: &Value,
        field: &str,
        wanted: &str,
    ) -> Result<(), StepFailed> {
        if value[field].as_str() == Some(wanted) {
            Ok(())
        } else {
            Err(self.fail(name, format!("expected {field} = {wanted:?}, got {value}")))
        }
    }

    async fn agent_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| e.to_string())?;
        let value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        Ok((status, value))
    }

    async fn agent_get(&self, name: &'static str, path: &str) -> Result<Value, StepFailed> {
        self.ok(
            name,
            self.agent_call(reqwest::Method::GET, path, None).await,
        )
    }

    async fn agent_post(
        &self,
        name: &'static str,
        path: &str,
        body: Value,
    ) -> Result<Value, StepFailed> {
        self.ok(
            name,
            self.agent_call(reqwest::Method::POST, path, Some(body))
                .await,
        )
    }

    fn ok(
        &self,
        name: &'static str,
        reply: Result<(u16, Value), String>,
    ) -> Result<Value, StepFailed> {
        match reply {
            Ok((200, value)) => Ok(value),
            Ok((status, value)) => Err(self.fail(name, format!("HTTP {status}: {value}"))),
            Err(e) => Err(self.fail(name, e)),
        }
    }

    async fn simulator_post(
        &self,
        name: &'static str,
        path: &str,
        body: Value,
    ) -> Result<(), StepFailed> {
        let response = self
            .http
            .post(format!("{}{path}", self.simulator))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| self.fail(name, e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.fail(name, format!("simulator answered {}", response.status())))
        }
    }

    fn spawn_wait(&self, path: String) -> tokio::task::JoinHandle<Result<(u16, Value), String>> {
        let (http, url, token) = (
            self.http.clone(),
            format!("{}{path}", self.api),
            self.token.clone(),
        );
        tokio::spawn(async move {
            let response = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let text = response.text().await.map_err(|e| e.to_string())?;
            Ok((
                status,
                serde_json::from_str(&text).map_err(|e| e.to_string())?,
            ))
        })
    }

    /// Prints a dot every quarter second until the waiter returns.
    async fn progress(
        &mut self,
        name: &'static str,
        mut waiter: tokio::task::JoinHandle<Result<(u16, Value), String>>,
    ) -> Result<Value, StepFailed> {
        let _ = write!(self.out, "      waiting");
        let reply = loop {
            tokio::select! {
                joined = &mut waiter => break joined,
                () = tokio::time::sleep(Duration::from_millis(250)) => {
                    let _ = write!(self.out, ".");
                    let _ = self.out.flush();
                }
            }
        };
        let _ = writeln!(self.out);
        let reply = reply.map_err(|e| self.fail(name, e))?;
        self.ok(name, reply)
    }

    /// Polls `path` until `done` holds (at most 30 s).
    async fn until(
        &mut self,
        name: &'static str,
        path: &str,
        done: impl Fn(&Value) -> bool,
        what: &str,
    ) -> Result<Value, StepFailed> {
        let _ = write!(self.out, "      waiting");
        for _ in 0..120 {
            let value = self.agent_get(name, path).await?;
            if done(&value) {
                let _ = writeln!(self.out);
                return Ok(value);
            }
            let _ = write!(self.out, ".");
            let _ = self.out.flush();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let _ = writeln!(self.out);
        Err(self.fail(name, format!("never reached {what}")))
    }
}

/// The QR code as text for a terminal.
pub fn terminal_qr(code_url: &str) -> Option<String> {
    let code = qrcode::QrCode::new(code_url.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build(),
    )
}

async fn start_simulator(pki: &crate::simulator::pki::Pki) -> Result<String, Error> {
    let mut config = SimulatorConfig::parse(&format!(
        "[[merchants]]\nappid = \"{APPID}\"\nmch_id = \"{MCH_ID}\"\napi_key = \"{DEMO_KEY}\"\n"
    ))
    .map_err(|e| Error::input("demo simulator", e))?;
    // A minute of simulated time per second: the refund settles in a second.
    config.settings.clock_scale = 60.0;
    let addr = Simulator::new(&config)?
        .spawn_tls(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), &pki.files)
        .await?;
    Ok(format!("https://{addr}"))
}

fn demo_config(
    dir: &std::path::Path,
    simulator: &str,
    addr: std::net::SocketAddr,
    pki: &crate::simulator::pki::Pki,
) -> Result<GatewayConfig, Error> {
    let key = dir.join("api_key");
    write_private(&key, DEMO_KEY)?;
    let text = format!(
        r#"
[merchant]
appid = "{APPID}"
mch_id = "{MCH_ID}"
sign_type = "HMAC-SHA256"
key_file = {key:?}

[wechat]
environment = "custom"
base_url = "{simulator}"
extra_roots = [{ca:?}]
client_pkcs12 = {p12:?}

[server]
listen = "{addr}"
public_url = "http://{addr}"

[store]
sqlite = {db:?}

[reconcile]
interval_secs = 0

[[products]]
id = "tea"
name = "Green tea, 250 g"
unit_price_fen = 1200
max_quantity = 10

[[products]]
id = "credits"
name = "Assistant credits top-up"
unit_price_fen = 100
max_quantity = 500

[ledger]
topup_product = "credits"
min_topup_fen = 500
"#,
        key = key.display().to_string(),
        db = dir.join("wxpay.db").display().to_string(),
        ca = pki.ca.display().to_string(),
        p12 = pki.client_p12.display().to_string(),
    );
    GatewayConfig::parse(&text).map_err(|e| Error::input("demo config", e))
}

fn write_private(path: &std::path::Path, text: &str) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| Error::input(path.display().to_string(), e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| Error::input(path.display().to_string(), e))
}

fn demo_grant() -> Grant {
    Grant {
        capabilities: [
            Capability::Create,
            Capability::Read,
            Capability::Refund,
            Capability::Charge,
        ]
        .into_iter()
        .collect(),
        products: vec!["*".into()],
        per_payment_cap_fen: 10_000,
        daily_budget_fen: 50_000,
        approval_threshold_fen: Some(20_000),
        refunds_need_approval: true,
    }
}
