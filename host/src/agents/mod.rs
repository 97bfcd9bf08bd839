//! Agents: who may ask the gateway to move money, and within what limits.
//!
//! Why the limits live here and not in the agent: a limit the model is
//! merely told about is advice, and advice is skipped. Every rule below is
//! enforced by the gateway *before* anything is signed — the agent holds a
//! bearer token and nothing else. A grant names:
//!
//! - **capabilities**: `create`, `read`, `close`, `refund`, `charge`;
//! - **products** the agent may sell (`*` for the whole catalog) — prices
//!   always come from the catalog, never from the agent;
//! - a **per-payment cap** and a rolling 24-hour **budget**, checked in the
//!   same store transaction as the order, so concurrent requests cannot
//!   together overspend;
//! - an **approval threshold**: a payment above it waits for a person
//!   (`wxpay approvals approve|deny`); refunds wait for one unless the grant
//!   says otherwise;
//! - an **expiry**; and an agent can be revoked at once.
//!
//! Tokens are 256 random bits, shown once when the agent is added; the
//! store keeps only their SHA-256.

pub mod api;
pub mod balances;
mod error;
pub mod meters;
pub mod payments;

use std::collections::BTreeSet;

use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use self::error::AgentError;
pub use self::payments::{
    PasskeyProof, PaymentIntent, PaymentView, RefundIntent, RefundView, approve,
    approve_with_passkey, carry_out, deny, qr_svg,
};

use crate::store::{AgentRecord, AgentStatus};

/// What an agent may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Start payments.
    Create,
    /// Read payments and products, wait for a payment.
    Read,
    /// Close unpaid payments.
    Close,
    /// Request refunds.
    Refund,
    /// Debit prepaid balances.
    Charge,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Self; 5] = [
        Self::Create,
        Self::Read,
        Self::Close,
        Self::Refund,
        Self::Charge,
    ];

    /// The spelling in grants and errors.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Read => "read",
            Self::Close => "close",
            Self::Refund => "refund",
            Self::Charge => "charge",
        }
    }

    /// Reads the spelling.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == value)
    }
}

/// The limits an agent works within.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// What it may do.
    pub capabilities: BTreeSet<Capability>,
    /// Catalog products it may sell; `*` for all.
    pub products: Vec<String>,
    /// The largest single payment, in fen.
    pub per_payment_cap_fen: u64,
    /// The most it may commit in any 24 hours, in fen.
    pub daily_budget_fen: u64,
    /// Payments above this many fen wait for a person; `None`: never.
    pub approval_threshold_fen: Option<u64>,
    /// Whether refunds wait for a person (the default, and the advice).
    pub refunds_need_approval: bool,
}

impl Grant {
    /// Whether the grant allows `capability`.
    pub fn allows(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// Whether the grant covers the product.
    pub fn covers(&self, product_id: &str) -> bool {
        self.products.iter().any(|p| p == "*" || p == product_id)
    }
}

/// An authenticated agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its limits.
    pub grant: Grant,
}

/// The length of the rolling budget window.
pub const BUDGET_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// A new bearer token: `wxpa_` and 256 random bits, base64url.
pub fn new_token() -> String {
    random_token("wxpa_")
}

/// `prefix` and 32 random bytes in URL-safe base64: a bearer secret whose
/// prefix says what it opens (agents `wxpa_`, console invites and cookies
/// their own).
pub(crate) fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    zeroize::Zeroize::zeroize(&mut bytes);
    token
}

/// A new agent to store, and its token — shown once, never stored.
pub fn enroll(
    agent_id: &str,
    name: &str,
    grant: &Grant,
    now_ms: i64,
    lifetime_ms: i64,
) -> Result<(AgentRecord, String), crate::Error> {
    let token = new_token();
    let record = AgentRecord {
        agent_id: agent_id.to_owned(),
        name: name.to_owned(),
        token_sha256: token_hash(&token),
        grant_json: serde_json::to_string(grant).map_err(|e| crate::Error::input("grant", e))?,
        created_at_ms: now_ms,
        expires_at_ms: Some(now_ms.saturating_add(lifetime_ms)),
        revoked_at_ms: None,
    };
    Ok((record, token))
}

/// A 32-character id fixed by its parts: `prefix` and the first 30
/// upper-case hex digits of SHA-256 over `domain`, a NUL, and the parts
/// joined by `/`. The same idempotency key always names the same thing.
pub(crate) fn derived_id(prefix: &str, domain: &str, parts: &[&str]) -> String {
    let digest = Sha256::new()
        .chain_update(domain.as_bytes())
        .chain_update(b"\0")
        .chain_update(parts.join("/").as_bytes())
        .finalize();
    format!("{prefix}{}", &hex::encode_upper(digest)[..30])
}

/// The hash the store keeps for a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Checks a stored agent: not revoked, not expired, grant readable.
pub fn admit(record: &AgentRecord, now_ms: i64) -> Result<Agent, AgentError> {
    match record.status(now_ms) {
        AgentStatus::Revoked => {
            return Err(AgentError::unauthorized(
                "token_revoked",
                "this agent's token was revoked; ask the operator for a new one",
            ));
        }
        AgentStatus::Expired => {
            return Err(AgentError::unauthorized(
                "token_expired",
                "this agent's token has expired; ask the operator for a new one",
            ));
        }
        AgentStatus::Active => {}
    }
    let grant: Grant = serde_json::from_str(&record.grant_json)
        .map_err(|e| AgentError::internal(format!("the agent's grant cannot be read: {e}")))?;
    Ok(Agent {
        id: record.agent_id.clone(),
        name: record.name.clone(),
        grant,
    })
}
