//! The MCP server: wxpay's agent API as Model Context Protocol tools.
//!
//! Why a proxy: the MCP process runs where the agent runs, next to
//! untrusted code. So it holds nothing but the agent's bearer token (from
//! `WXPAY_AGENT_TOKEN`) and calls the gateway's `/v1` API, where every
//! guardrail is enforced. It never sees the merchant key, and a
//! compromised MCP process can do no more than the agent's grant allows.
//!
//! Tool annotations are honest: reads are `read_only`; `request_refund`
//! and `charge` are `destructive`; a tool is `idempotent` only when the
//! call carries an idempotency key that makes a repeat harmless.

use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig, Tool};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::error::Error;

/// The environment variable holding the agent's token.
pub const TOKEN_ENV: &str = "WXPAY_AGENT_TOKEN";
/// The environment variable naming the gateway (default `http://127.0.0.1:8080`).
pub const GATEWAY_ENV: &str = "WXPAY_GATEWAY_URL";

/// `create_payment` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreatePayment {
    /// A product id from list_products. The price comes from the catalog.
    pub product_id: String,
    /// How many units (default 1).
    #[serde(default)]
    pub quantity: Option<u32>,
    /// NATIVE (a QR code to show the payer; default), JSAPI (needs payer_openid), APP or MWEB.
    #[serde(default)]
    pub trade_type: Option<String>,
    /// The payer's openid, required for JSAPI.
    #[serde(default)]
    pub payer_openid: Option<String>,
    /// A key you choose; calling again with the same key returns the same payment, never a second one.
    pub idempotency_key: String,
    /// A short note for the merchant (kept only if short and plain).
    #[serde(default)]
    pub note: Option<String>,
}

/// Arguments naming a payment.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PaymentRef {
    /// The payment_id returned by create_payment.
    pub payment_id: String,
}

/// `wait_for_payment` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct WaitForPayment {
    /// The payment_id returned by create_payment.
    pub payment_id: String,
    /// Seconds to wait for the status to change (default 30, at most 120).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// `request_refund` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct RequestRefund {
    /// The paid payment to refund.
    pub payment_id: String,
    /// A key you choose; the same key is the same refund.
    pub idempotency_key: String,
    /// Fen to refund (default: what is left of the payment).
    #[serde(default)]
    pub amount_fen: Option<u64>,
    /// Why, shown to the payer.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `get_balance` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct BalanceRef {
    /// The payer whose prepaid balance to read.
    pub payer_id: String,
}

/// `top_up` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct TopUp {
    /// The payer whose balance to top up.
    pub payer_id: String,
    /// Fen to add (see the minimum in the error if too small).
    pub amount_fen: u64,
    /// A key you choose; the same key is the same top-up.
    pub idempotency_key: String,
}

/// `charge` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ChargeBalance {
    /// The payer whose prepaid balance to debit.
    pub payer_id: String,
    /// Fen to debit.
    pub amount_fen: u64,
    /// A key you choose; the same key is the same charge.
    pub idempotency_key: String,
    /// What it is for, e.g. "prompt 12: 1830 tokens".
    #[serde(default)]
    pub note: Option<String>,
}

/// The gateway's `/v1` API, as this agent.
#[derive(Clone)]
pub struct AgentClient {
    base: String,
    token: std::sync::Arc<Zeroizing<String>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// A client for `base` with `token`.
    pub fn new(base: &str, token: Zeroizing<String>) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(150))
            .build()
            .map_err(|e| Error::input("HTTP client", e))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token: std::sync::Arc::new(token),
            http,
        })
    }

    /// From `WXPAY_AGENT_TOKEN` and `WXPAY_GATEWAY_URL`.
    pub fn from_env() -> Result<Self, Error> {
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::input(TOKEN_ENV, "must hold the agent's token (wxpay agents add)")
            })?;
        let base = std::env::var(GATEWAY_ENV).unwrap_or_else(|_| "http://127.0.0.1:8080".into());
        Self::new(&base, Zeroizing::new(token))
    }

    /// Calls the API; the JSON reply on success, the JSON error otherwise.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<String, String> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.as_str());
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| {
            json!({"error": {"code": "gateway_unreachable", "message": e.to_string()}}).to_string()
        })?;
        let ok = response.status().is_success();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if ok { Ok(text) } else { Err(text) }
    }
}

fn segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_-.@".contains(*c))
        .collect()
}

/// The MCP server.
#[derive(Debug, Clone)]
pub struct WxpayMcp {
    api: AgentClient,
    tool_router: ToolRouter<Self>,
}

#[tool_router(router = tool_router)]
impl WxpayMcp {
    /// A server calling the gateway as the agent behind `api`.
    pub fn new(api: AgentClient) -> Self {
        Self {
            api,
            tool_router: Self::tool_router(),
        }
    }

    /// The tools, as MCP lists them.
    pub fn tools() -> Vec<Tool> {
        Self::tool_router().list_all()
    }

    /// List the products this agent may sell, with their fixed prices in fen, and its per-payment cap.
    #[tool(annotations(
        title = "List products",
        read_only_hint = true,
        open_world_hint = false
    ))]
    async fn list_products(&self) -> Result<String, String> {
        self.api
            .call(reqwest::Method::GET, "/v1/products", None)
            .await
    }

    /// Start a WeChat Pay payment for a catalog product. Returns payment_pending with a code_url/QR code to show the payer (NATIVE) or client parameters (JSAPI/APP), or pending_approval when a person must approve it first. Prices come from the catalog; you cannot set one.
    #[tool(annotations(
        title = "Create payment",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = true
    ))]
    async fn create_payment(
        &self,
        Parameters(p): Parameters<CreatePayment>,
    ) -> Result<String, String> {
        let mut body = json!({"product_id": p.product_id, "idempotency_key": p.idempotency_key});
        if let Some(q) = p.quantity {
            body["quantity"] = json!(q);
        }
        if let Some(t) = p.trade_type {
            body["trade_type"] = json!(t);
        }
        if let Some(o) = p.payer_openid {
            body["payer_openid"] = json!(o);
        }
        if let Some(n) = p.note {
            body["note"] = json!(n);
        }
        self.api
            .call(reqwest::Method::POST, "/v1/payments", Some(body))
            .await
    }

    /// Read a payment's current status.
    #[tool(annotations(title = "Get payment", read_only_hint = true, open_world_hint = false))]
    async fn get_payment(&self, Parameters(p): Parameters<PaymentRef>) -> Result<String, String> {
        let path = format!("/v1/payments/{}", segment(&p.payment_id));
        self.api.call(reqwest::Method::GET, &path, None).await
    }

    /// Wait until a payment's status changes (e.g. payment_pending -> paid, when the payer has paid) or the timeout passes; pause your workflow here instead of polling.
    #[tool(annotations(
        title = "Wait for payment",
        read_only_hint = true,
        open_world_hint = false
    ))]
    async fn wait_for_payment(
        &self,
        Parameters(p): Parameters<WaitForPayment>,
    ) -> Result<String, String> {
        let timeout = p.timeout_s.unwrap_or(30).min(120);
        let path = format!(
            "/v1/payments/{}/wait?timeout_s={timeout}",
            segment(&p.payment_id)
        );
        self.api.call(reqwest::Method::GET, &path, None).await
    }

    /// Refund part or all of a paid payment. Money leaves the merchant: usually a person must approve it first (status pending_approval).
    #[tool(annotations(
        title = "Request refund",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = true
    ))]
    async fn request_refund(
        &self,
        Parameters(p): Parameters<RequestRefund>,
    ) -> Result<String, String> {
        let path = format!("/v1/payments/{}/refunds", segment(&p.payment_id));
        let mut body = json!({"idempotency_key": p.idempotency_key});
        if let Some(a) = p.amount_fen {
            body["amount_fen"] = json!(a);
        }
        if let Some(r) = p.reason {
            body["reason"] = json!(r);
        }
        self.api
            .call(reqwest::Method::POST, &path, Some(body))
            .await
    }

    /// Read a payer's prepaid balance (fen) and latest ledger entries.
    #[tool(annotations(title = "Get balance", read_only_hint = true, open_world_hint = false))]
    async fn get_balance(&self, Parameters(p): Parameters<BalanceRef>) -> Result<String, String> {
        let path = format!("/v1/balances/{}", segment(&p.payer_id));
        self.api.call(reqwest::Method::GET, &path, None).await
    }

    /// Start a top-up of a payer's prepaid balance: a payment like create_payment, credited only when WeChat confirms it.
    #[tool(annotations(
        title = "Top up balance",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = true
    ))]
    async fn top_up(&self, Parameters(p): Parameters<TopUp>) -> Result<String, String> {
        let path = format!("/v1/balances/{}/topups", segment(&p.payer_id));
        let body = json!({"amount_fen": p.amount_fen, "idempotency_key": p.idempotency_key});
        self.api
            .call(reqwest::Method::POST, &path, Some(body))
            .await
    }

    /// Debit a payer's prepaid balance, e.g. per prompt or per token. Never overdraws: when funds are short the error says how much to top up.
    #[tool(annotations(
        title = "Charge balance",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn charge(&self, Parameters(p): Parameters<ChargeBalance>) -> Result<String, String> {
        let mut body = json!({"payer_id": p.payer_id, "amount_fen": p.amount_fen, "idempotency_key": p.idempotency_key});
        if let Some(n) = p.note {
            body["note"] = json!(n);
        }
        self.api
            .call(reqwest::Method::POST, "/v1/charges", Some(body))
            .await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for WxpayMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("wxpay", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "WeChat Pay for agents. list_products, then create_payment with an idempotency_key; \
                 show the payer the QR code; wait_for_payment until paid. Amounts are in fen (1/100 yuan). \
                 Refunds and large payments may wait for a person (pending_approval).",
            )
    }
}

/// The tools for function-calling frameworks: `openai` (`[{type:
/// "function", function: {name, description, parameters}}]`) or
/// `json-schema` (`[{name, description, input_schema, annotations}]`).
pub fn tools_json(format: &str) -> Result<Value, Error> {
    let tools = WxpayMcp::tools();
    let listed: Vec<Value> = match format {
        "openai" => tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": *t.input_schema,
                }})
            })
            .collect(),
        "json-schema" => tools
            .iter()
            .map(|t| {
                json!({"name": t.name, "description": t.description,
                       "input_schema": *t.input_schema, "annotations": t.annotations})
            })
            .collect(),
        other => {
            return Err(Error::input(
                "--format",
                format!("{other:?} is not openai or json-schema"),
            ));
        }
    };
    Ok(Value::Array(listed))
}
