//! `wxpay agents`, `wxpay approvals`, `wxpay audit`: the operator's side of
//! the agent API. Adding an agent prints its token once; the store keeps
//! only the token's hash.

use std::collections::BTreeSet;

use clap::{Args, Subcommand};
use serde_json::json;

use super::gateway::{ConfigArgs, print_json, runtime};
use crate::agents::{self, Capability, Grant};
use crate::error::Error;
use crate::gateway::now_ms;
use std::sync::Arc;

use crate::store::{AgentRecord, ApprovalState, Store};

#[derive(Debug, Args)]
pub(super) struct AgentsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    action: AgentsAction,
}

#[derive(Debug, Subcommand)]
enum AgentsAction {
    /// Add an agent and print its token (shown once).
    Add(AddArgs),
    /// List agents with their grants and 24-hour spend.
    List,
    /// Revoke an agent's token at once.
    Revoke {
        /// The agent's id.
        agent_id: String,
    },
}

#[derive(Debug, Args)]
struct AddArgs {
    /// A unique id, e.g. `support-bot`.
    agent_id: String,
    /// A name for people (default: the id).
    #[arg(long)]
    name: Option<String>,
    /// Comma-separated: create, read, close, refund, charge.
    #[arg(long, value_delimiter = ',', default_value = "create,read")]
    capabilities: Vec<String>,
    /// Comma-separated catalog product ids, or `*` for all.
    #[arg(long, value_delimiter = ',', required = true)]
    products: Vec<String>,
    /// The largest single payment, in fen.
    #[arg(long)]
    cap_fen: u64,
    /// The most it may commit in any 24 hours, in fen.
    #[arg(long)]
    daily_budget_fen: u64,
    /// Payments above this many fen wait for `wxpay approvals approve`.
    #[arg(long)]
    approval_threshold_fen: Option<u64>,
    /// Let refunds go out without approval (not advised).
    #[arg(long)]
    refunds_without_approval: bool,
    /// The token stops working after this many days.
    #[arg(long, default_value_t = 90)]
    expires_in_days: u32,
}

fn open_store(config: &ConfigArgs) -> Result<Arc<dyn Store>, Error> {
    Ok(config.load()?.store.location().open()?)
}

/// `wxpay agents ...`.
pub(super) fn agents(args: &AgentsArgs) -> Result<(), Error> {
    let store = open_store(&args.config)?;
    match &args.action {
        AgentsAction::Add(add) => {
            let (record, token) = new_agent(add)?;
            if !store.insert_agent(&record)? {
                return Err(Error::Conflict {
                    what: "agent",
                    id: record.agent_id,
                    reason: "an agent with this id exists".into(),
                });
            }
            audit(
                store.as_ref(),
                "agent.add",
                &record.agent_id,
                json!({"grant": serde_json::from_str::<serde_json::Value>(&record.grant_json).unwrap_or_default()}),
            )?;
            eprintln!("agent {} added; its token is shown once:", record.agent_id);
            outln!("{token}");
            Ok(())
        }
        AgentsAction::List => {
            let since = now_ms() - agents::BUDGET_WINDOW_MS;
            let listed = store
                .agents()?
                .into_iter()
                .map(|a| {
                    let spend = store.agent_spend(&a.agent_id, since)?;
                    Ok(json!({
                        "agent_id": a.agent_id,
                        "name": a.name,
                        "grant": serde_json::from_str::<serde_json::Value>(&a.grant_json).unwrap_or_default(),
                        "spent_24h_fen": spend,
                        "expires_at_ms": a.expires_at_ms,
                        "revoked_at_ms": a.revoked_at_ms,
                    }))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            print_json(&json!(listed))
        }
        AgentsAction::Revoke { agent_id } => {
            let revoked =
                store
                    .revoke_agent(agent_id, now_ms())?
                    .ok_or_else(|| Error::NotFound {
                        what: "agent",
                        id: agent_id.clone(),
                    })?;
            audit(store.as_ref(), "agent.revoke", agent_id, json!({}))?;
            eprintln!("agent {} revoked", revoked.agent_id);
            Ok(())
        }
    }
}

fn new_agent(add: &AddArgs) -> Result<(AgentRecord, String), Error> {
    let capabilities = add
        .capabilities
        .iter()
        .map(|c| {
            Capability::parse(c.trim()).ok_or_else(|| {
                Error::input(
                    "--capabilities",
                    format!("{c:?} is not one of create, read, close, refund, charge"),
                )
            })
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    let grant = Grant {
        capabilities,
        products: add.products.iter().map(|p| p.trim().to_owned()).collect(),
        per_payment_cap_fen: add.cap_fen,
        daily_budget_fen: add.daily_budget_fen,
        approval_threshold_fen: add.approval_threshold_fen,
        refunds_need_approval: !add.refunds_without_approval,
    };
    let name = add.name.as_deref().unwrap_or(&add.agent_id);
    let lifetime = i64::from(add.expires_in_days) * 86_400_000;
    agents::enroll(&add.agent_id, name, &grant, now_ms(), lifetime)
}

fn audit(
    store: &dyn Store,
    action: &str,
    subject: &str,
    detail: serde_json::Value,
) -> Result<(), Error> {
    store.append_audit(&crate::store::AuditEventInput {
        at_ms: now_ms(),
        actor: "operator".into(),
        action: action.into(),
        subject: subject.into(),
        outcome: "ok".into(),
        detail: detail.to_string(),
    })?;
    Ok(())
}

#[derive(Debug, Args)]
pub(super) struct ApprovalsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    action: ApprovalsAction,
}

#[derive(Debug, Subcommand)]
enum ApprovalsAction {
    /// List approvals (pending ones unless --all).
    List {
        /// Also decided ones.
        #[arg(long)]
        all: bool,
    },
    /// Approve: the payment or refund is sent.
    Approve {
        /// The approval's number.
        id: i64,
        /// Who approves (for the audit log).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// Deny: nothing is sent; the agent sees `denied` and the reason.
    Deny {
        /// The approval's number.
        id: i64,
        /// Why, for the agent and the audit log.
        #[arg(long)]
        reason: String,
        /// Who denies.
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
}

/// `wxpay approvals ...`.
pub(super) fn approvals(args: &ApprovalsArgs) -> Result<(), Error> {
    match &args.action {
        ApprovalsAction::List { all } => {
            let config = args.config.load()?;
            let threshold = config.console.passkey_threshold_fen;
            let store = config.store.location().open()?;
            let state = (!all).then_some(ApprovalState::Pending);
            let listed: Vec<_> = store
                .approvals(state, 1000)?
                .into_iter()
                .map(|a| {
                    json!({
                        "id": a.id,
                        "kind": a.kind.as_str(),
                        "subject": a.subject,
                        "agent_id": a.agent_id,
                        "amount_fen": a.amount_fen,
                        "state": a.state.as_str(),
                        "reason": a.reason,
                        "decided_by": a.decided_by,
                        "requested_at_ms": a.requested_at_ms,
                        "needs_passkey": a.amount_fen > threshold,
                    })
                })
                .collect();
            print_json(&json!(listed))
        }
        ApprovalsAction::Approve { id, by } => runtime()?.block_on(async {
            let gateway = args.config.gateway().await?;
            let approval = agents::approve(&gateway, *id, by).await?;
            eprintln!(
                "approval {id} approved: {} {} sent",
                approval.kind.as_str(),
                approval.subject
            );
            Ok(())
        }),
        ApprovalsAction::Deny { id, reason, by } => runtime()?.block_on(async {
            let gateway = args.config.gateway().await?;
            agents::deny(&gateway, *id, by, reason).await?;
            eprintln!("approval {id} denied");
            Ok(())
        }),
    }
}

#[derive(Debug, Args)]
pub(super) struct OperatorsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    action: OperatorsAction,
}

#[derive(Debug, Subcommand)]
enum OperatorsAction {
    /// Print a one-time link that registers a passkey for this operator
    /// (a new one, or another device of an existing one).
    Invite {
        /// The operator's name, recorded on every approval they decide.
        name: String,
    },
    /// List operators and how many passkeys each has.
    List,
    /// Remove an operator with their passkeys and end their sessions.
    Remove {
        /// The operator's name.
        name: String,
    },
}

/// `wxpay operators ...`.
pub(super) fn operators(args: &OperatorsArgs) -> Result<(), Error> {
    runtime()?.block_on(async {
        let gateway = args.config.gateway().await?;
        match &args.action {
            OperatorsAction::Invite { name } => {
                let invite = crate::console::invite(&gateway, name).await?;
                let until = chrono::DateTime::from_timestamp_millis(invite.expires_at_ms)
                    .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_default();
                outln!("{}", invite.url);
                eprintln!("open it in the browser of {name} before {until}; it works once");
            }
            OperatorsAction::Remove { name } => {
                let ended = crate::console::remove_operator(&gateway, name).await?;
                eprintln!("operator {name} removed; {ended} session(s) ended");
            }
            OperatorsAction::List => {
                let listed: Vec<_> = crate::console::operator_names(&gateway)
                    .await?
                    .into_iter()
                    .map(|(name, passkeys)| json!({"name": name, "passkeys": passkeys}))
                    .collect();
                print_json(&json!(listed))?;
            }
        }
        Ok(())
    })
}

#[derive(Debug, Args)]
pub(super) struct AuditArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Events after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: i64,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

/// `wxpay audit`: the append-only log, one event per line.
pub(super) fn audit_log(args: &AuditArgs) -> Result<(), Error> {
    let store = open_store(&args.config)?;
    for e in store.audit(args.after, args.limit)? {
        let at = chrono::DateTime::from_timestamp_millis(e.at_ms)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        outln!(
            "{:>6}  {at}  {:<22} {:<22} {:<34} {:<16} {}",
            e.seq,
            e.actor,
            e.action,
            e.subject,
            e.outcome,
            e.detail
        );
    }
    Ok(())
}
