//! The console's pages and its two form posts (approve, deny).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Console;
use super::error::ConsoleError;
use super::html::{Viewer, esc, filters, page, signed_yuan, table, time, yuan};
use super::session::SignedIn;
use super::views::{self, MAX_ROWS, WINDOW};
use crate::agents::{self, Grant};
use crate::gateway::now_ms;
use crate::store::{Approval, ApprovalKind, ApprovalState, AuditEvent, OrderState, RefundState};

/// A form that carries only the CSRF token.
#[derive(Deserialize)]
pub(super) struct CsrfForm {
    pub(super) csrf: String,
}

/// The deny form.
#[derive(Deserialize)]
pub(super) struct DenyForm {
    csrf: String,
    reason: String,
}

/// List filters from the query string.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Filter {
    q: String,
    state: String,
    actor: String,
    action: String,
    before: Option<i64>,
    done: String,
}

/// A page for the signed-in operator, `current` marked in the navigation.
fn signed_in_page(title: &str, current: &str, signed_in: &SignedIn, body: &str) -> Html<String> {
    let viewer = Viewer {
        operator: signed_in.operator(),
        csrf: &signed_in.session.csrf,
    };
    Html(page(title, current, Some(&viewer), body))
}

fn matches(q: &str, fields: &[&str]) -> bool {
    let q = q.trim().to_lowercase();
    q.is_empty() || fields.iter().any(|f| f.to_lowercase().contains(&q))
}

/// `GET /console`.
pub(super) async fn home() -> Redirect {
    Redirect::to("/console/approvals")
}

/// `GET /console/sign-in`.
pub(super) async fn sign_in() -> Html<String> {
    let body = "<p>Sign in with the passkey you registered from your invite link.</p>\
        <form id=\"sign-in\" class=\"ceremony\">\
        <label>Operator name <input name=\"operator\" autocomplete=\"username webauthn\" required></label>\
        <button type=\"submit\">Sign in with a passkey</button></form>\
        <p id=\"ceremony-error\" class=\"error\" role=\"alert\"></p>\
        <noscript><p>Passkeys need JavaScript in this page.</p></noscript>";
    Html(page("Sign in", "", None, body))
}

/// `GET /console/register#<invite>`.
pub(super) async fn register() -> Html<String> {
    let body = "<p>This one-time link registers a passkey for you as an operator. \
        Your device will ask you to create it (with your fingerprint, face or PIN).</p>\
        <form id=\"register\" class=\"ceremony\"><button type=\"submit\">Create my passkey</button></form>\
        <p id=\"ceremony-error\" class=\"error\" role=\"alert\"></p>\
        <noscript><p>Passkeys need JavaScript in this page.</p></noscript>";
    Html(page("Register a passkey", "", None, body))
}

/// `GET /console/approvals`: what waits for a person.
pub(super) async fn approvals(
    State(console): State<Arc<Console>>,
    signed_in: SignedIn,
    Query(filter): Query<Filter>,
) -> Result<Html<String>, ConsoleError> {
    let threshold = console.gateway.config().console.passkey_threshold_fen;
    let pending = console
        .read(|s| s.approvals(Some(ApprovalState::Pending), MAX_ROWS as u32))
        .await?;
    let decided: Vec<Approval> = console
        .read(|s| s.approvals(None, 50))
        .await?
        .into_iter()
        .filter(|a| a.state != ApprovalState::Pending)
        .collect();
    let csrf = esc(&signed_in.session.csrf);
    let pending_rows: Vec<Vec<String>> = pending
        .iter()
        .map(|a| approval_row(a, threshold, &csrf))
        .collect();
    let mut body = String::new();
    if !filter.done.is_empty() {
        let _ = write!(
            body,
            "<p class=\"notice\" role=\"status\">{}</p>",
            esc(&filter.done)
        );
    }
    let _ = write!(
        body,
        "<p>Approving more than {} needs your passkey; smaller amounts need only this signed-in session.</p>",
        yuan(threshold)
    );
    body.push_str("<p id=\"ceremony-error\" class=\"error\" role=\"alert\"></p>");
    body.push_str(&table(
        "Pending approvals",
        &[
            "#",
            "Kind",
            "Payment or refund",
            "Agent",
            "Amount",
            "Asked",
            "Decision",
        ],
        &pending_rows,
    ));
    let decided_rows: Vec<Vec<String>> = decided
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.kind.as_str().to_owned(),
                subject_link(a),
                esc(&a.agent_id),
                yuan(a.amount_fen),
                esc(a.state.as_str()),
                esc(a.decided_by.as_deref().unwrap_or("")),
                esc(a.reason.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    body.push_str(&table(
        "Recently decided",
        &[
            "#",
            "Kind",
            "Payment or refund",
            "Agent",
            "Amount",
            "Decision",
            "By",
            "Reason",
        ],
        &decided_rows,
    ));
    Ok(signed_in_page(
        "Approvals",
        "/console/approvals",
        &signed_in,
        &body,
    ))
}

fn subject_link(a: &Approval) -> String {
    match a.kind {
        ApprovalKind::Payment => payment_link(&a.subject),
        ApprovalKind::Refund => esc(&a.subject),
    }
}

fn payment_link(id: &str) -> String {
    format!("<a href=\"/console/payments/{}\">{}</a>", esc(id), esc(id))
}

fn approval_row(a: &Approval, threshold: u64, csrf: &str) -> Vec<String> {
    let approve = if a.amount_fen > threshold {
        format!(
            "<button type=\"button\" class=\"approve-passkey\" data-approval=\"{}\">Approve {} with passkey</button>",
            a.id,
            yuan(a.amount_fen)
        )
    } else {
        format!(
            "<form method=\"post\" action=\"/console/approvals/{}/approve\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\">Approve {}</button></form>",
            a.id,
            yuan(a.amount_fen)
        )
    };
    let deny = format!(
        "<form method=\"post\" action=\"/console/approvals/{id}/deny\" class=\"deny\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>Reason <input name=\"reason\" required maxlength=\"200\"></label>\
         <button type=\"submit\">Deny #{id}</button></form>",
        id = a.id
    );
    vec![
        a.id.to_string(),
        a.kind.as_str().to_owned(),
        subject_link(a),
        esc(&a.agent_id),
        yuan(a.amount_fen),
        time(a.requested_at_ms),
        format!("<div class=\"decision\">{approve}{deny}</div>"),
    ]
}

/// `POST /console/approvals/{id}/approve`: up to the passkey threshold.
pub(super) async fn approve(
    State(console): State<Arc<Console>>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    signed_in.check_csrf(Some(&form.csrf))?;
    let approved = agents::approve(&console.gateway, id, signed_in.operator()).await?;
    Ok(done(&format!(
        "Approval {id} approved: {} {} sent.",
        approved.kind.as_str(),
        approved.subject
    )))
}

/// `POST /console/approvals/{id}/deny`.
pub(super) async fn deny(
    State(console): State<Arc<Console>>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    Form(form): Form<DenyForm>,
) -> Result<Response, ConsoleError> {
    signed_in.check_csrf(Some(&form.csrf))?;
    let reason = form.reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(ConsoleError::BadRequest(
            "reason: say why, in 1 to 200 characters".to_owned(),
        ));
    }
    agents::deny(&console.gateway, id, signed_in.operator(), reason).await?;
    Ok(done(&format!("Approval {id} denied.")))
}

fn done(message: &str) -> Response {
    let mut url = String::from("/console/approvals?done=");
    for byte in message.bytes() {
        if byte.is_ascii_alphanumeric() {
            url.push(char::from(byte));
        } else {
            let _ = write!(url, "%{byte:02X}");
        }
    }
    Redirect::to(&url).into_response()
}

/// `GET /console/payments`.
pub(super) async fn payments(
    State(console): State<Arc<Console>>,
    signed_in: SignedIn,
    Query(filter): Query<Filter>,
) -> Result<Html<String>, ConsoleError> {
    let (orders, waiting) = console.read(views::recent_orders).await?;
    let states: Vec<&str> = OrderState::ALL.iter().map(|s| s.as_str()).collect();
    let mut body = filters(
        "/console/payments",
        &filter.q,
        &[("state", "State", &states, &filter.state)],
    );
    let rows: Vec<Vec<String>> = orders
        .iter()
        .filter(|o| filter.state.is_empty() || o.state.as_str() == filter.state)
        .filter(|o| {
            matches(
                &filter.q,
                &[
                    &o.out_trade_no,
                    o.product_id.as_deref().unwrap_or(""),
                    o.agent_id.as_deref().unwrap_or(""),
                    o.transaction_id.as_deref().unwrap_or(""),
                ],
            )
        })
        .map(|o| {
            vec![
                payment_link(&o.out_trade_no),
                esc(o.product_id.as_deref().unwrap_or("")),
                yuan(o.total_fee),
                format!("<span class=\"state\">{}</span>", esc(o.state.as_str())),
                esc(o.agent_id.as_deref().unwrap_or("")),
                time(o.updated_at_ms),
            ]
        })
        .collect();
    body.push_str(&table(
        "Payments",
        &[
            "Payment",
            "Product",
            "Amount",
            "State",
            "Agent",
            "Last change",
        ],
        &rows,
    ));
    let waiting_rows: Vec<Vec<String>> = waiting
        .iter()
        .filter(|a| matches(&filter.q, &[&a.subject, &a.agent_id]))
        .map(|a| {
            vec![
                payment_link(&a.subject),
                yuan(a.amount_fen),
                esc(a.state.as_str()),
                esc(&a.agent_id),
            ]
        })
        .collect();
    body.push_str(&table(
        "Payments not placed (awaiting approval or denied)",
        &["Payment", "Amount", "Approval", "Agent"],
        &waiting_rows,
    ));
    Ok(signed_in_page(
        "Payments",
        "/console/payments",
        &signed_in,
        &body,
    ))
}

/// `GET /console/payments/{id}`: the order, its history and callbacks,
/// its refunds.
pub(super) async fn payment(
    State(console): State<Arc<Console>>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let detail = {
        let id = id.clone();
        console.read(move |s| views::payment_detail(s, &id)).await?
    };
    if detail.order.is_none() && detail.approval.is_none() {
        return Err(ConsoleError::NotFound(format!("payment {id}")));
    }
    let mut body = String::from("<dl class=\"facts\">");
    if let Some(o) = &detail.order {
        let facts = [
            (
                "State",
                format!("<span class=\"state\">{}</span>", esc(o.state.as_str())),
            ),
            ("Amount", yuan(o.total_fee)),
            ("Product", esc(o.product_id.as_deref().unwrap_or(""))),
            ("Quantity", o.quantity.to_string()),
            ("Trade type", esc(&o.trade_type)),
            ("Agent", esc(o.agent_id.as_deref().unwrap_or(""))),
            (
                "WeChat transaction",
                esc(o.transaction_id.as_deref().unwrap_or("—")),
            ),
            ("Created", time(o.created_at_ms)),
            ("Last change", time(o.updated_at_ms)),
        ];
        for (name, value) in facts {
            let _ = write!(body, "<dt>{name}</dt><dd>{value}</dd>");
        }
    }
    if let Some(a) = &detail.approval {
        let _ = write!(
            body,
            "<dt>Approval</dt><dd>#{} {} {}{}</dd>",
            a.id,
            esc(a.state.as_str()),
            esc(a
                .decided_by
                .as_deref()
                .map(|b| format!("by {b}"))
                .as_deref()
                .unwrap_or("")),
            esc(a
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .as_deref()
                .unwrap_or(""))
        );
    }
    body.push_str("</dl>");
    let history: Vec<Vec<String>> = detail.history.iter().map(event_row).collect();
    body.push_str(&table(
        "State history",
        &["#", "When", "Who", "What", "Outcome", "Detail"],
        &history,
    ));
    let callbacks: Vec<Vec<String>> = detail
        .history
        .iter()
        .filter(|e| e.action == "notification.payment")
        .map(event_row)
        .collect();
    body.push_str(&table(
        "Callbacks from WeChat Pay",
        &["#", "When", "Who", "What", "Outcome", "Detail"],
        &callbacks,
    ));
    let refunds: Vec<Vec<String>> = detail
        .refunds
        .iter()
        .map(|r| {
            vec![
                esc(&r.out_refund_no),
                yuan(r.refund_fee),
                esc(r.state.as_str()),
                time(r.updated_at_ms),
            ]
        })
        .collect();
    body.push_str(&table(
        "Refunds",
        &["Refund", "Amount", "State", "Last change"],
        &refunds,
    ));
    Ok(signed_in_page(
        &format!("Payment {id}"),
        "/console/payments",
        &signed_in,
        &body,
    ))
}

fn event_row(e: &AuditEvent) -> Vec<String> {
    vec![
        e.seq.to_string(),
        time(e.at_ms),
        esc(&e.actor),
        esc(&e.action),
        esc(&e.outcome),
        format!("<code>{}</code>", esc(&e.detail)),
    ]
}

/// `GET /console/refunds`.
pub(super) async fn refunds(
    State(console): State<Arc<Console>>,
    signed_in: SignedIn,
    Query(filter): Query<Filter>,
) -> Result<Html<String>, ConsoleError> {
    let refunds = console.read(views::recent_refunds).await?;
    let states: Vec<&str> = RefundState::ALL.iter().map(|s| s.as_str()).collect();
    let mut body = filters(
        "/console/refunds",
        &filter.q,
        &[("state", "State", &states, &filter.state)],
    );
    let rows: Vec<Vec<String>> = refunds
        .iter()
        .filter(|r| filter.state.is_empty() || r.state.as_str() == filter.state)
        .filter(|r| matches(&filter.q, &[&r.out_refund_no, &r.out_trade_no]))
        .map(|r| {
            vec![
                esc(&r.out_refund_no),
                payment_link(&r.out_trade_no),
                yuan(r.refund_fee),
                esc(r.state.as_str()),
                esc(r.refund_id.as_deref().unwrap_or("")),
                time(r.updated_at_ms),
            ]
        })
        .collect();
    body.push_str(&table(
        "Refunds",
        &[
            "Refund",
            "Payment",
            "Amount",
            "State",
            "WeChat refund",
            "Last change",
        ],
        &rows,
    ));
    Ok(signed_in_page(
        "Refunds",
        "/console/refunds",
        &signed_in,
        &body,
    ))
}

/// `GET /console/balances`: payers' balances and ledger entries.
pub(super) async fn balances(
    State(console): State<Arc<Console>>,
    signed_in: SignedIn,
    Query(filter): Query<Filter>,
) -> Result<Html<String>, ConsoleError> {
    let q = filter.q.trim().to_owned();
    let also = (!q.is_empty()).then(|| q.clone());
    let payers = console
        .read(move |s| views::payers(s, also.as_deref()))
        .await?;
    let mut body = filters("/console/balances", &filter.q, &[]);
    let shown: Vec<_> = payers
        .iter()
        .filter(|p| matches(&q, &[&p.payer_id]))
        .collect();
    if shown.is_empty() {
        body.push_str("<p class=\"empty\">Balances: none.</p>");
    }
    for payer in shown {
        let rows: Vec<Vec<String>> = payer
            .entries
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    time(e.at_ms),
                    esc(&e.kind),
                    signed_yuan(e.amount_fen),
                    esc(&e.reference),
                    esc(e.agent_id.as_deref().unwrap_or("")),
                    esc(e.note.as_deref().unwrap_or("")),
                ]
            })
            .collect();
        let _ = write!(
            body,
            "<section><h2>{} — balance {}</h2>{}</section>",
            esc(&payer.payer_id),
            yuan(payer.balance_fen),
            table(
                "Ledger entries, newest first",
                &["#", "When", "Kind", "Amount", "Reference", "Agent", "Note"],
                &rows
            )
        );
    }
    Ok(signed_in_page(
        "Balances",
        "/console/balances",
        &signed_in,
        &body,
    ))
}

/// `GET /console/agents`: agents, their grants and their spend.
pub(super) async fn agents(
    State(console): State<Arc<Console>>,
    signed_in: SignedIn,
) -> Result<Html<String>, ConsoleError> {
    let now = now_ms();
    let window_start = now.saturating_sub(agents::BUDGET_WINDOW_MS);
    let agents = console
        .read(move |s| {
            s.agents()?
                .into_iter()
                .map(|a| {
                    let spend = s.agent_spend(&a.agent_id, window_start)?;
                    Ok((a, spend))
                })
                .collect::<crate::store::StoreResult<Vec<_>>>()
        })
        .await?;
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|(a, spend)| {
            let status = a.status(now).as_str();
            let grant = serde_json::from_str::<Grant>(&a.grant_json).ok();
            let capabilities = grant.as_ref().map_or_else(String::new, |g| {
                g.capabilities
                    .iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            let (cap, budget, threshold) = grant.as_ref().map_or_else(
                || (String::new(), String::new(), String::new()),
                |g| {
                    (
                        yuan(g.per_payment_cap_fen),
                        yuan(g.daily_budget_fen),
                        g.approval_threshold_fen
                            .map_or_else(|| "never".to_owned(), yuan),
                    )
                },
            );
            vec![
                esc(&a.agent_id),
                esc(&a.name),
                status.to_owned(),
                esc(&capabilities),
                cap,
                format!("{} of {budget}", yuan(*spend)),
                threshold,
                a.expires_at_ms.map_or_else(|| "never".to_owned(), time),
            ]
        })
        .collect();
    let body = table(
        "Agents",
        &[
            "Agent",
            "Name",
            "Status",
            "May",
            "Per payment",
            "Spent in 24 h",
            "Approval above",
            "Expires",
        ],
        &rows,
    );
    Ok(signed_in_page(
        "Agents",
        "/console/agents",
        &signed_in,
        &body,
    ))
}

/// `GET /console/audit`: the audit log, newest first, with filters.
pub(super) async fn audit(
    State(console): State<Arc<Console>>,
    signed_in: SignedIn,
    Query(filter): Query<Filter>,
) -> Result<Html<String>, ConsoleError> {
    let before = filter.before;
    let events = console
        .read(move |s| views::newest_events(s, before, WINDOW))
        .await?;
    let actions: BTreeSet<&str> = events.iter().map(|e| e.action.as_str()).collect();
    let actions: Vec<&str> = actions.into_iter().collect();
    let mut body = filters(
        "/console/audit",
        &filter.q,
        &[
            ("action", "Action", &actions, &filter.action),
            ("actor", "Actor", ACTORS, &filter.actor),
        ],
    );
    let shown: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| filter.action.is_empty() || e.action == filter.action)
        .filter(|e| filter.actor.is_empty() || e.actor.starts_with(&filter.actor))
        .filter(|e| {
            matches(
                &filter.q,
                &[&e.subject, &e.actor, &e.action, &e.outcome, &e.detail],
            )
        })
        .take(MAX_ROWS)
        .collect();
    let rows: Vec<Vec<String>> = shown.iter().map(|e| event_row(e)).collect();
    body.push_str(&table(
        "Audit events, newest first",
        &["#", "When", "Who", "What", "Outcome", "Detail"],
        &rows,
    ));
    if let Some(oldest) = events.last().filter(|e| e.seq > 1) {
        let _ = write!(
            body,
            "<p><a href=\"/console/audit?before={}\">Older events</a></p>",
            oldest.seq
        );
    }
    Ok(signed_in_page(
        "Audit log",
        "/console/audit",
        &signed_in,
        &body,
    ))
}

/// Who acts, by the prefix of the audit log's `actor`.
const ACTORS: &[&str] = &["agent:", "operator:", "wechat", "reconciliation"];
