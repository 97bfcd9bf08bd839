//! Operators, invites and sessions, kept as console records in the
//! gateway's store (so gateways sharing a Redis store share them).
//!
//! Secrets a browser holds — the invite token, the session cookie — are
//! stored only as their SHA-256, like agent tokens: a copy of the store
//! opens nothing.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use webauthn_rs::prelude::{Passkey, Uuid};

use crate::agents::{random_token, token_hash};
use crate::error::Error;
use crate::gateway::{Gateway, now_ms};
use crate::store::{ConsoleKind, ConsoleRecord, Store, StoreError, StoreResult};

/// How long a WebAuthn ceremony may take, start to finish.
pub(super) const CEREMONY_MS: i64 = 5 * 60 * 1000;

/// A registration link made by `wxpay operators invite`.
#[derive(Debug)]
pub struct Invite {
    /// The page to open; the token is in its fragment, so it never
    /// reaches a server log or a `Referer`.
    pub url: String,
    /// When it stops working (ms since the epoch).
    pub expires_at_ms: i64,
}

/// What an invite grants: registering a passkey as this operator.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct InviteRecord {
    pub(super) operator: String,
}

/// An operator and their passkeys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OperatorRecord {
    pub(super) name: String,
    /// The WebAuthn user handle: random, never the name.
    pub(super) user_id: Uuid,
    pub(super) passkeys: Vec<Passkey>,
    pub(super) created_at_ms: i64,
}

/// A signed-in browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SessionRecord {
    pub(super) operator: String,
    /// Must accompany every state-changing request.
    pub(super) csrf: String,
    pub(super) created_at_ms: i64,
}

/// Makes a one-time link that registers a passkey for `name` (a new
/// operator, or another device of an existing one), valid for
/// `console.invite_minutes`.
pub async fn invite(gateway: &Gateway, name: &str) -> Result<Invite, Error> {
    check_operator_name(name)?;
    let token = random_token("wxpi_");
    let expires_at_ms =
        now_ms().saturating_add(minutes_ms(gateway.config().console.invite_minutes));
    let invited = InviteRecord {
        operator: name.to_owned(),
    };
    let record = console_record(
        ConsoleKind::Invite,
        token_hash(&token),
        &invited,
        Some(expires_at_ms),
    )?;
    gateway
        .db(move |s| s.put_console_record(&record, now_ms()))
        .await?;
    gateway
        .audit(
            "operator:cli",
            "operator.invite",
            name,
            "invited",
            json!({"expires_at_ms": expires_at_ms}),
        )
        .await?;
    Ok(Invite {
        url: format!(
            "{}/console/register#{token}",
            gateway.config().console_url()
        ),
        expires_at_ms,
    })
}

/// The operators and how many passkeys each has.
pub async fn operator_names(gateway: &Gateway) -> Result<Vec<(String, usize)>, Error> {
    let records = gateway
        .read(|s| s.console_records(ConsoleKind::Operator, now_ms()))
        .await?;
    records
        .iter()
        .map(|(name, value)| {
            let operator: OperatorRecord = from_json(value)?;
            Ok((name.clone(), operator.passkeys.len()))
        })
        .collect()
}

/// Removes the operator with their passkeys and ends every session they
/// have open (a lost device, someone who left); returns how many sessions
/// ended. An invite already sent for the name still works until it expires.
pub async fn remove_operator(gateway: &Gateway, name: &str) -> Result<usize, Error> {
    let operator = name.to_owned();
    let ended = gateway
        .db(move |s| {
            let now = now_ms();
            if s.take_console_record(ConsoleKind::Operator, &operator, now)?
                .is_none()
            {
                return Ok(None);
            }
            let mut ended = 0;
            for (key, value) in s.console_records(ConsoleKind::Session, now)? {
                let session: SessionRecord = from_json(&value)?;
                if session.operator == operator {
                    s.take_console_record(ConsoleKind::Session, &key, now)?;
                    ended += 1;
                }
            }
            Ok(Some(ended))
        })
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "operator",
            id: name.to_owned(),
        })?;
    gateway
        .audit(
            "operator:cli",
            "operator.remove",
            name,
            "removed",
            json!({"sessions_ended": ended}),
        )
        .await?;
    Ok(ended)
}

/// Operator names are what approvals record as `decided_by`.
fn check_operator_name(name: &str) -> Result<(), Error> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(Error::input(
            "operator name",
            "1 to 64 characters of letters, digits, '.', '_', '-' or '@'",
        ));
    }
    Ok(())
}

pub(super) fn minutes_ms(minutes: u64) -> i64 {
    i64::try_from(minutes.saturating_mul(60_000)).unwrap_or(i64::MAX)
}

/// A console record holding `value` as JSON.
pub(super) fn console_record(
    kind: ConsoleKind,
    key: String,
    value: &impl Serialize,
    expires_at_ms: Option<i64>,
) -> StoreResult<ConsoleRecord> {
    let value = serde_json::to_string(value)
        .map_err(|e| StoreError::corrupt("console record", e.to_string()))?;
    Ok(ConsoleRecord {
        kind,
        key,
        value,
        expires_at_ms,
    })
}

pub(super) fn from_json<T: DeserializeOwned>(value: &str) -> StoreResult<T> {
    serde_json::from_str(value).map_err(|e| StoreError::corrupt("console record", e.to_string()))
}

/// A found record's document, decoded.
pub(super) fn decoded<T: DeserializeOwned>(found: Option<String>) -> StoreResult<Option<T>> {
    found.map(|v| from_json(&v)).transpose()
}

/// The operator, if registered.
pub(super) fn operator(store: &dyn Store, name: &str) -> StoreResult<Option<OperatorRecord>> {
    decoded(store.console_record(ConsoleKind::Operator, name, now_ms())?)
}

/// Stores the operator (new, or with a changed passkey list or counter).
pub(super) fn save_operator(store: &dyn Store, operator: &OperatorRecord) -> StoreResult<()> {
    let record = console_record(ConsoleKind::Operator, operator.name.clone(), operator, None)?;
    store.put_console_record(&record, now_ms())
}

/// Takes the invite whose token hashes to `key`: it works once.
pub(super) fn take_invite(store: &dyn Store, key: &str) -> StoreResult<Option<InviteRecord>> {
    decoded(store.take_console_record(ConsoleKind::Invite, key, now_ms())?)
}

/// Reads the invite whose token hashes to `key` without using it up.
pub(super) fn peek_invite(store: &dyn Store, key: &str) -> StoreResult<Option<InviteRecord>> {
    decoded(store.console_record(ConsoleKind::Invite, key, now_ms())?)
}

/// Starts a session for the operator; returns the cookie's secret value.
pub(super) fn open_session(
    store: &dyn Store,
    operator: &str,
    lifetime_ms: i64,
) -> StoreResult<String> {
    let cookie = random_token("wxps_");
    let now = now_ms();
    let record = SessionRecord {
        operator: operator.to_owned(),
        csrf: random_token(""),
        created_at_ms: now,
    };
    let stored = console_record(
        ConsoleKind::Session,
        token_hash(&cookie),
        &record,
        Some(now.saturating_add(lifetime_ms)),
    )?;
    store.put_console_record(&stored, now)?;
    Ok(cookie)
}

/// The session behind a cookie value, if it is live.
pub(super) fn session(store: &dyn Store, cookie: &str) -> StoreResult<Option<SessionRecord>> {
    decoded(store.console_record(ConsoleKind::Session, &token_hash(cookie), now_ms())?)
}

/// Ends the session behind a cookie value.
pub(super) fn close_session(store: &dyn Store, cookie: &str) -> StoreResult<()> {
    store
        .take_console_record(ConsoleKind::Session, &token_hash(cookie), now_ms())
        .map(drop)
}
