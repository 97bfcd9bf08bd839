//! The three WebAuthn ceremonies: registering a passkey with an invite,
//! signing in, and approving one payment or refund.
//!
//! Each ceremony is two requests. `start` stores webauthn-rs's state under
//! a random ceremony id (for five minutes) and returns the browser's
//! options; `finish` *takes* that state — so a ceremony completes at most
//! once, and a replayed assertion finds nothing — and verifies the
//! browser's answer against it. An approval ceremony also records which
//! approval, which amount and which session it was started for, and its
//! finish refuses anything else.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use webauthn_rs::prelude::{
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    Url, Uuid,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use super::Console;
use super::error::{ConsoleError, JsonError};
use super::operators::{self, CEREMONY_MS, OperatorRecord, console_record, decoded, minutes_ms};
use super::session::{SignedIn, session_cookie};
use crate::agents::{PasskeyProof, approve_with_passkey, random_token, token_hash};
use crate::error::Error;
use crate::gateway::now_ms;
use crate::store::{ApprovalState, ConsoleKind};

/// The relying party: passkeys are bound to the console's host name, and
/// every ceremony's origin must be the console's.
pub(super) struct Passkeys {
    webauthn: Webauthn,
}

impl Passkeys {
    pub(super) fn new(origin: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::input("console.url", reason);
        let url = Url::parse(origin).map_err(|e| bad(e.to_string()))?;
        let rp_id = url
            .host_str()
            .ok_or_else(|| bad("it has no host name".to_owned()))?
            .to_owned();
        let webauthn = WebauthnBuilder::new(&rp_id, &url)
            .and_then(|b| b.rp_name("wxpay console").build())
            .map_err(|e| bad(format!("not usable for passkeys: {e}")))?;
        Ok(Self { webauthn })
    }
}

/// A ceremony between its two requests.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Ceremony {
    Register {
        /// The invite's key; taken (used up) when the ceremony finishes.
        invite_key: String,
        operator: String,
        user_id: Uuid,
        state: PasskeyRegistration,
    },
    SignIn {
        operator: String,
        state: PasskeyAuthentication,
    },
    Approve {
        approval_id: i64,
        amount_fen: u64,
        subject: String,
        operator: String,
        /// The CSRF token of the session that started it: another
        /// session, even the same operator's, cannot finish it.
        session_csrf: String,
        state: PasskeyAuthentication,
    },
}

async fn store_ceremony(console: &Console, ceremony: &Ceremony) -> Result<String, ConsoleError> {
    let id = random_token("wxpc_");
    let record = console_record(
        ConsoleKind::Ceremony,
        token_hash(&id),
        ceremony,
        Some(now_ms().saturating_add(CEREMONY_MS)),
    )?;
    console
        .write(move |s| s.put_console_record(&record, now_ms()))
        .await?;
    Ok(id)
}

/// Takes the ceremony: a second finish with the same id finds nothing.
async fn take_ceremony(console: &Console, id: &str) -> Result<Ceremony, ConsoleError> {
    let key = token_hash(id);
    let found = console
        .write(move |s| s.take_console_record(ConsoleKind::Ceremony, &key, now_ms()))
        .await?;
    decoded(found)?.ok_or_else(|| {
        ConsoleError::Passkey("this ceremony is unknown, expired or already used".to_owned())
    })
}

fn webauthn_failed(e: impl std::fmt::Display) -> ConsoleError {
    ConsoleError::Passkey(e.to_string())
}

#[derive(Deserialize)]
pub(super) struct RegisterStart {
    invite: String,
}

/// `POST /console/api/register/start`: `{invite}` → `{ceremony, options}`.
pub(super) async fn register_start(
    State(console): State<Arc<Console>>,
    Json(body): Json<RegisterStart>,
) -> Result<Json<Value>, JsonError> {
    let invite_key = token_hash(&body.invite);
    let key = invite_key.clone();
    let (invite, existing) = console
        .read(move |s| {
            let Some(invite) = operators::peek_invite(s, &key)? else {
                return Ok(None);
            };
            let existing = operators::operator(s, &invite.operator)?;
            Ok(Some((invite, existing)))
        })
        .await?
        .ok_or_else(|| {
            ConsoleError::Passkey("this invite is unknown, expired or already used".to_owned())
        })?;
    let user_id = existing.as_ref().map_or_else(Uuid::new_v4, |o| o.user_id);
    let exclude = existing.map(|o| o.passkeys.iter().map(|p| p.cred_id().clone()).collect());
    let (options, state) = console
        .passkeys
        .webauthn
        .start_passkey_registration(user_id, &invite.operator, &invite.operator, exclude)
        .map_err(webauthn_failed)?;
    let ceremony = store_ceremony(
        &console,
        &Ceremony::Register {
            invite_key,
            operator: invite.operator.clone(),
            user_id,
            state,
        },
    )
    .await?;
    Ok(Json(
        json!({"ceremony": ceremony, "operator": invite.operator, "options": options}),
    ))
}

#[derive(Deserialize)]
pub(super) struct RegisterFinish {
    ceremony: String,
    credential: RegisterPublicKeyCredential,
}

/// `POST /console/api/register/finish`: stores the passkey, uses up the
/// invite and signs the browser in.
pub(super) async fn register_finish(
    State(console): State<Arc<Console>>,
    Json(body): Json<RegisterFinish>,
) -> Result<Response, JsonError> {
    let Ceremony::Register {
        invite_key,
        operator,
        user_id,
        state,
    } = take_ceremony(&console, &body.ceremony).await?
    else {
        return Err(ConsoleError::Passkey("not a registration ceremony".to_owned()).into());
    };
    let passkey = console
        .passkeys
        .webauthn
        .finish_passkey_registration(&body.credential, &state)
        .map_err(webauthn_failed)?;
    let invite = console
        .write(move |s| operators::take_invite(s, &invite_key))
        .await?;
    if invite.is_none_or(|i| i.operator != operator) {
        return Err(
            ConsoleError::Passkey("this invite was used or expired meanwhile".to_owned()).into(),
        );
    }
    let name = operator.clone();
    console
        .write(move |s| {
            let mut record = operators::operator(s, &name)?.unwrap_or(OperatorRecord {
                name: name.clone(),
                user_id,
                passkeys: Vec::new(),
                created_at_ms: now_ms(),
            });
            record.passkeys.push(passkey);
            operators::save_operator(s, &record)
        })
        .await?;
    audit(
        &console,
        &operator,
        "operator.register",
        "passkey registered",
    )
    .await?;
    signed_in_response(&console, &operator).await
}

#[derive(Deserialize)]
pub(super) struct SignInStart {
    operator: String,
}

/// `POST /console/api/sign-in/start`: `{operator}` → `{ceremony, options}`.
pub(super) async fn sign_in_start(
    State(console): State<Arc<Console>>,
    Json(body): Json<SignInStart>,
) -> Result<Json<Value>, JsonError> {
    let name = body.operator.clone();
    let record = console
        .read(move |s| operators::operator(s, &name))
        .await?
        .filter(|o| !o.passkeys.is_empty())
        .ok_or_else(|| ConsoleError::Passkey("no such operator has a passkey".to_owned()))?;
    let (options, state) = console
        .passkeys
        .webauthn
        .start_passkey_authentication(&record.passkeys)
        .map_err(webauthn_failed)?;
    let ceremony = store_ceremony(
        &console,
        &Ceremony::SignIn {
            operator: record.name,
            state,
        },
    )
    .await?;
    Ok(Json(json!({"ceremony": ceremony, "options": options})))
}

#[derive(Deserialize)]
pub(super) struct Assertion {
    ceremony: String,
    credential: PublicKeyCredential,
}

/// `POST /console/api/sign-in/finish`: verifies the assertion and sets
/// the session cookie.
pub(super) async fn sign_in_finish(
    State(console): State<Arc<Console>>,
    Json(body): Json<Assertion>,
) -> Result<Response, JsonError> {
    let Ceremony::SignIn { operator, state } = take_ceremony(&console, &body.ceremony).await?
    else {
        return Err(ConsoleError::Passkey("not a sign-in ceremony".to_owned()).into());
    };
    verify_assertion(&console, &operator, &body.credential, &state).await?;
    audit(&console, &operator, "console.sign_in", "signed in").await?;
    signed_in_response(&console, &operator).await
}

/// `POST /console/api/approvals/{id}/passkey/start` (CSRF header):
/// a ceremony for exactly this approval, its amount and this session,
/// with what the operator is about to approve.
pub(super) async fn approval_start(
    State(console): State<Arc<Console>>,
    signed_in: SignedIn,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, JsonError> {
    signed_in.check_csrf_header(&headers)?;
    let name = signed_in.operator().to_owned();
    let (approval, record) = console
        .read(move |s| Ok((s.approval_by_id(id)?, operators::operator(s, &name)?)))
        .await?;
    let approval = approval.ok_or_else(|| ConsoleError::NotFound(format!("approval {id}")))?;
    if approval.state != ApprovalState::Pending {
        return Err(ConsoleError::BadRequest(format!(
            "approval {id} is already {}",
            approval.state
        ))
        .into());
    }
    let record = record.ok_or(ConsoleError::SignedOut)?;
    let (options, state) = console
        .passkeys
        .webauthn
        .start_passkey_authentication(&record.passkeys)
        .map_err(webauthn_failed)?;
    let ceremony = store_ceremony(
        &console,
        &Ceremony::Approve {
            approval_id: id,
            amount_fen: approval.amount_fen,
            subject: approval.subject.clone(),
            operator: record.name,
            session_csrf: signed_in.session.csrf.clone(),
            state,
        },
    )
    .await?;
    Ok(Json(json!({
        "ceremony": ceremony,
        "options": options,
        "context": {
            "approval_id": id,
            "kind": approval.kind.as_str(),
            "subject": approval.subject,
            "amount_fen": approval.amount_fen,
            "amount": super::html::yuan(approval.amount_fen),
            "agent_id": approval.agent_id,
        },
    })))
}

/// `POST /console/api/approvals/{id}/passkey/finish` (CSRF header):
/// verifies the assertion for this approval and approves it.
pub(super) async fn approval_finish(
    State(console): State<Arc<Console>>,
    signed_in: SignedIn,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(body): Json<Assertion>,
) -> Result<Json<Value>, JsonError> {
    signed_in.check_csrf_header(&headers)?;
    let Ceremony::Approve {
        approval_id,
        amount_fen,
        subject,
        operator,
        session_csrf,
        state,
    } = take_ceremony(&console, &body.ceremony).await?
    else {
        return Err(ConsoleError::Passkey("not an approval ceremony".to_owned()).into());
    };
    let bound = approval_id == id
        && operator == signed_in.operator()
        && session_csrf == signed_in.session.csrf;
    if !bound {
        return Err(ConsoleError::Passkey(
            "this ceremony was started for another approval or session".to_owned(),
        )
        .into());
    }
    let current = console
        .read(move |s| s.approval_by_id(id))
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("approval {id}")))?;
    if current.amount_fen != amount_fen || current.subject != subject {
        return Err(
            ConsoleError::Passkey("the approval changed during the ceremony".to_owned()).into(),
        );
    }
    verify_assertion(&console, &operator, &body.credential, &state).await?;
    let approved =
        approve_with_passkey(&console.gateway, &operator, &PasskeyProof::verified_for(id)).await?;
    Ok(Json(json!({
        "approval_id": approved.id,
        "state": approved.state.as_str(),
        "subject": approved.subject,
    })))
}

/// Verifies an assertion against the ceremony's state and the operator's
/// passkeys, and stores the passkey's new signature counter.
async fn verify_assertion(
    console: &Console,
    operator: &str,
    credential: &PublicKeyCredential,
    state: &PasskeyAuthentication,
) -> Result<(), ConsoleError> {
    let result = console
        .passkeys
        .webauthn
        .finish_passkey_authentication(credential, state)
        .map_err(webauthn_failed)?;
    let name = operator.to_owned();
    let updated = console
        .write(move |s| {
            let Some(mut record) = operators::operator(s, &name)? else {
                return Ok(false);
            };
            let mut known = false;
            for passkey in &mut record.passkeys {
                known |= passkey.update_credential(&result).is_some();
            }
            if known {
                operators::save_operator(s, &record)?;
            }
            Ok(known)
        })
        .await?;
    if updated {
        Ok(())
    } else {
        Err(ConsoleError::Passkey(
            "the passkey is not this operator's".to_owned(),
        ))
    }
}

async fn signed_in_response(console: &Console, operator: &str) -> Result<Response, JsonError> {
    let lifetime_ms = minutes_ms(console.gateway.config().console.session_minutes);
    let name = operator.to_owned();
    let cookie = console
        .write(move |s| operators::open_session(s, &name, lifetime_ms))
        .await?;
    let set_cookie = session_cookie(console, &cookie, lifetime_ms / 1000);
    Ok((
        [(header::SET_COOKIE, set_cookie)],
        Json(json!({"operator": operator, "next": "/console/approvals"})),
    )
        .into_response())
}

async fn audit(
    console: &Console,
    operator: &str,
    action: &str,
    outcome: &str,
) -> Result<(), ConsoleError> {
    console
        .gateway
        .audit(
            &format!("operator:{operator}"),
            action,
            operator,
            outcome,
            json!({}),
        )
        .await?;
    Ok(())
}
