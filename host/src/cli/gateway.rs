//! `wxpay serve` and the operator commands that act on its store:
//! `order`, `notifications`, `verify-notification`, `config check`.
//!
//! They all read the same `wxpay.toml`, so an operator's order goes through
//! exactly the gateway code an agent's does — catalog prices, the
//! component's validation, the store's compare-and-set and the audit log —
//! and can run beside a serving gateway (SQLite in WAL mode allows it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use crate::callbacks;
use crate::config::GatewayConfig;
use crate::error::Error;
use crate::gateway::{Gateway, OrderRequest, RefundRequestInput};
use crate::sandbox::{Sandbox, SandboxLimits};
use crate::store::{NotificationKind, Order, Refund};

/// The config file, shared by every gateway command.
#[derive(Debug, Args)]
pub(super) struct ConfigArgs {
    /// The gateway's configuration.
    #[arg(
        long,
        short = 'c',
        env = "WXPAY_CONFIG",
        default_value = "wxpay.toml",
        global = true
    )]
    config: PathBuf,
    /// Use this component file instead of the configured or embedded one.
    #[arg(long, value_name = "FILE", global = true)]
    component: Option<PathBuf>,
}

impl ConfigArgs {
    pub(super) fn load(&self) -> Result<GatewayConfig, Error> {
        GatewayConfig::load(&self.config)
    }

    pub(super) async fn gateway(&self) -> Result<Arc<Gateway>, Error> {
        let config = self.load()?;
        let sandbox = load_sandbox(&config, self.component.as_deref())?;
        Gateway::open(config, Arc::new(sandbox)).await
    }
}

/// Compiles the component, through the on-disk cache when there is one.
fn load_sandbox(config: &GatewayConfig, component: Option<&Path>) -> Result<Sandbox, Error> {
    let path = component.or(config.component.path.as_deref());
    let bytes = match path {
        Some(path) => {
            std::fs::read(path).map_err(|e| Error::input(path.display().to_string(), e))?
        }
        None => crate::sandbox::EMBEDDED_COMPONENT.to_vec(),
    };
    let limits = SandboxLimits::default();
    match config.cache_dir() {
        Some(dir) => Ok(Sandbox::cached(&bytes, limits, &dir)?.0),
        None => Sandbox::from_bytes(&bytes, limits),
    }
}

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Skip the start-up orderquery that checks the key against the environment.
    #[arg(long)]
    no_probe: bool,
    /// Log lines as text for people or as JSON objects for collectors
    /// (one per line; lines about a payment carry its `payment_id`).
    #[arg(long, value_enum, default_value = "text")]
    log_format: super::LogFormat,
}

/// `wxpay serve`.
pub(super) fn serve(args: &ServeArgs) -> Result<(), Error> {
    super::init_logging(args.log_format);
    runtime()?.block_on(async {
        let gateway = args.config.gateway().await?;
        for warning in gateway.self_check(!args.no_probe).await {
            tracing::warn!("self-check: {warning}");
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let reconcile = &gateway.config().reconcile;
        if reconcile.interval_secs > 0 {
            tokio::spawn(Arc::clone(&gateway).run_reconciliation(
                Duration::from_secs(reconcile.interval_secs),
                Duration::from_secs(reconcile.pending_after_secs),
                stopped,
            ));
        }
        let server = gateway.config().server.clone();
        let (listener, bound) = crate::listen::bind(server.listen).await?;
        outln!("wxpay gateway listening on http://{bound}");
        tracing::info!(
            %bound,
            notify_url = %gateway.config().pay_notify_url(),
            store = %gateway.config().store.location(),
            "serving"
        );
        let callbacks = callbacks::router(Arc::clone(&gateway));
        let agents = crate::agents::api::router(Arc::clone(&gateway))
            .merge(crate::metrics::router(Arc::clone(&gateway)))
            .merge(crate::console::router(Arc::clone(&gateway))?);
        outln!(
            "wxpay console at {}/console",
            gateway.config().console_url()
        );
        let (quit, quitting) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = quit.send(true);
        });
        match server.agent_listen {
            None => serve_until(listener, callbacks.merge(agents), quitting).await?,
            Some(addr) => {
                let (agent_listener, agent_bound) = crate::listen::bind(addr).await?;
                outln!("wxpay agent API listening on http://{agent_bound}");
                let public = serve_until(listener, callbacks, quitting.clone());
                let private = serve_until(agent_listener, agents, quitting);
                tokio::try_join!(public, private)?;
            }
        }
        let _ = stop.send(true);
        Ok(())
    })
}

/// Serves until the shutdown signal, finishing requests in flight.
async fn serve_until(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut quitting: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error> {
    axum::serve(crate::listen::no_delay(listener), app)
        .with_graceful_shutdown(async move {
            let _ = quitting.wait_for(|quit| *quit).await;
        })
        .await
        .map_err(|e| Error::input("server", e))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: finishing requests in flight");
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::input("runtime", e))
}

#[derive(Debug, Args)]
pub(super) struct OrderArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    action: OrderAction,
}

#[derive(Debug, Subcommand)]
enum OrderAction {
    /// Place an order for a catalog product (the price comes from the catalog).
    Create {
        /// The catalog product.
        #[arg(long)]
        product: String,
        /// Units.
        #[arg(long, default_value_t = 1)]
        quantity: u32,
        /// NATIVE (a QR code), JSAPI, APP or MWEB.
        #[arg(long, default_value = "NATIVE")]
        trade_type: String,
        /// The payer's openid (JSAPI).
        #[arg(long)]
        openid: Option<String>,
        /// The payer's (APP, MWEB) or this server's (NATIVE, JSAPI) IP.
        #[arg(long, default_value = "127.0.0.1")]
        client_ip: String,
        /// Run the command again with the same key to get the same order.
        #[arg(long)]
        idempotency_key: String,
        /// A note for `attach` (the policy decides whether it is kept).
        #[arg(long)]
        note: Option<String>,
    },
    /// Ask WeChat about an order and apply the answer.
    Query {
        /// The order number.
        out_trade_no: String,
    },
    /// Show an order and its state from the store (no WeChat call).
    Show {
        /// The order number.
        out_trade_no: String,
    },
    /// Close an unpaid order.
    Close {
        /// The order number.
        out_trade_no: String,
    },
    /// Refund part or all of a paid order (needs the client certificate).
    Refund {
        /// The order number.
        out_trade_no: String,
        /// Fen to refund.
        #[arg(long)]
        amount: u64,
        /// The refund's number: use the same one to retry the same refund.
        #[arg(long)]
        out_refund_no: String,
        /// Shown to the payer.
        #[arg(long)]
        reason: Option<String>,
    },
}

const OPERATOR: &str = "operator";

/// `wxpay order ...`.
pub(super) fn order(args: &OrderArgs) -> Result<(), Error> {
    runtime()?.block_on(async {
        let gateway = args.config.gateway().await?;
        let printed = match &args.action {
            OrderAction::Create {
                product,
                quantity,
                trade_type,
                openid,
                client_ip,
                idempotency_key,
                note,
            } => {
                let request = OrderRequest {
                    product_id: product.clone(),
                    quantity: *quantity,
                    trade_type: trade_type.clone(),
                    payer_openid: openid.clone(),
                    client_ip: client_ip.clone(),
                    idempotency_key: idempotency_key.clone(),
                    note: note.clone(),
                    scene_info: None,
                    agent_id: None,
                };
                let created = gateway.create_order(&request, OPERATOR).await?;
                let mut value = order_json(&created.order);
                value["fee_estimate_fen"] = json!(created.fee_estimate_fen);
                if let Some(params) = created.client_params {
                    value["client_params"] = pairs_json(params);
                }
                value
            }
            OrderAction::Query { out_trade_no } => {
                order_json(&gateway.query_order(out_trade_no, OPERATOR).await?)
            }
            OrderAction::Show { out_trade_no } => {
                order_json(&gateway.stored_order(out_trade_no).await?)
            }
            OrderAction::Close { out_trade_no } => {
                order_json(&gateway.close_order(out_trade_no, OPERATOR).await?)
            }
            OrderAction::Refund {
                out_trade_no,
                amount,
                out_refund_no,
                reason,
            } => {
                let input = RefundRequestInput {
                    out_trade_no: out_trade_no.clone(),
                    out_refund_no: out_refund_no.clone(),
                    refund_fee: *amount,
                    reason: reason.clone(),
                };
                refund_json(&gateway.refund(&input, OPERATOR).await?)
            }
        };
        print_json(&printed)
    })
}

fn order_json(o: &Order) -> serde_json::Value {
    json!({
        "out_trade_no": o.out_trade_no,
        "state": o.state.as_str(),
        "product_id": o.product_id,
        "quantity": o.quantity,
        "total_fee": o.total_fee,
        "trade_type": o.trade_type,
        "prepay_id": o.prepay_id,
        "code_url": o.code_url,
        "transaction_id": o.transaction_id,
        "created_at_ms": o.created_at_ms,
        "expires_at_ms": o.expires_at_ms,
        "paid_at_ms": o.paid_at_ms,
        "version": o.version,
    })
}

fn refund_json(r: &Refund) -> serde_json::Value {
    json!({
        "out_refund_no": r.out_refund_no,
        "out_trade_no": r.out_trade_no,
        "refund_fee": r.refund_fee,
        "state": r.state.as_str(),
        "refund_id": r.refund_id,
    })
}

fn pairs_json(pairs: crate::sandbox::signer::Pairs) -> serde_json::Value {
    pairs
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

pub(super) fn print_json(value: &serde_json::Value) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::input("output", e))?;
    super::print_line(&text)
}

#[derive(Debug, Args)]
pub(super) struct NotificationsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    action: NotificationsAction,
}

#[derive(Debug, Subcommand)]
enum NotificationsAction {
    /// List received notifications and the verdict on each, oldest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Skip this many.
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
}

/// `wxpay notifications list`: reads the store only (no key, no WeChat).
pub(super) fn notifications(args: &NotificationsArgs) -> Result<(), Error> {
    let NotificationsAction::List { limit, offset } = args.action;
    let config = args.config.load()?;
    let store = config.store.location().open()?;
    let records = store.notifications(limit, offset)?;
    for n in records {
        outln!(
            "{:>6}  {}  {:<7}  {:<28}  {}",
            n.id,
            chrono::DateTime::from_timestamp_millis(n.received_at_ms)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default(),
            n.kind.as_str(),
            n.out_trade_no.as_deref().unwrap_or("-"),
            n.verdict,
        );
    }
    Ok(())
}

/// Which callback a body was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KindArg {
    /// `/notify/pay`.
    Payment,
    /// `/notify/refund`.
    Refund,
}

#[derive(Debug, Args)]
pub(super) struct VerifyNotificationArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Payment or refund notification.
    #[arg(long, value_enum, default_value = "payment")]
    kind: KindArg,
    /// The body as received (`-` for stdin).
    file: PathBuf,
}

/// `wxpay verify-notification`: the callback's checks, changing nothing.
pub(super) fn verify_notification(args: &VerifyNotificationArgs) -> Result<(), Error> {
    let body = super::messages::read_input(&args.file)?;
    let kind = match args.kind {
        KindArg::Payment => NotificationKind::Payment,
        KindArg::Refund => NotificationKind::Refund,
    };
    runtime()?.block_on(async {
        let gateway = args.config.gateway().await?;
        let fields = gateway.check_notification(kind, &body).await?;
        print_json(&json!({"verified": true, "kind": kind.as_str(), "fields": pairs_json(fields)}))
    })
}

#[derive(Debug, Args)]
pub(super) struct ConfigCommandArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    action: ConfigAction,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Check the file and print the effective config (secrets shown by source only).
    Check {
        /// Also start the gateway and ask WeChat whether the key fits the environment.
        #[arg(long)]
        probe: bool,
    },
}

/// `wxpay config check`.
pub(super) fn config(args: &ConfigCommandArgs) -> Result<(), Error> {
    let ConfigAction::Check { probe } = args.action;
    let config = args.config.load()?;
    outln!("{}", config.redacted_toml().trim_end());
    let key = crate::key::ApiKey::load(&config.key_source())?;
    let mut warnings = key.self_check();
    drop(key);
    if probe {
        runtime()?.block_on(async {
            let gateway = args.config.gateway().await?;
            warnings = gateway.self_check(true).await;
            Ok::<_, Error>(())
        })?;
    }
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    eprintln!("config ok ({} warning(s))", warnings.len());
    Ok(())
}
