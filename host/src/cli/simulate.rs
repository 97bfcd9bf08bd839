//! `wxpay simulate`: run the offline WeChat Pay v2 simulator, or act as
//! the payer against a running one.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::error::Error;
use crate::simulator::Simulator;
use crate::simulator::config::SimulatorConfig;
use crate::simulator::tls;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(super) struct SimulateArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// Address to serve on (loopback unless you mean it).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The merchants WeChat knows (TOML; see the README).
    #[arg(long, value_name = "FILE")]
    merchant_config: Option<PathBuf>,
    /// Simulated seconds per real second (overrides the file's settings.clock_scale).
    #[arg(long)]
    clock_scale: Option<f64>,
    /// Serve HTTPS with this certificate chain (PEM); refund and reverse then need a client certificate.
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "client_ca"])]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA that signs merchants' client certificates (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Pay an order as the payer would (scan the QR code and confirm).
    Pay {
        /// The merchant's order number.
        out_trade_no: String,
        /// The simulator's address.
        #[arg(long, default_value = "http://127.0.0.1:8090")]
        url: String,
        /// The merchant, when the simulator knows several.
        #[arg(long)]
        mch_id: Option<String>,
        /// The order was placed through /sandboxnew/.
        #[arg(long)]
        sandbox: bool,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::input("tokio runtime", e))
}

pub(super) fn run(args: &SimulateArgs) -> Result<(), Error> {
    match &args.action {
        Some(Action::Pay {
            out_trade_no,
            url,
            mch_id,
            sandbox,
        }) => pay(url, out_trade_no, mch_id.as_deref(), *sandbox),
        None => serve(args),
    }
}

fn serve(args: &SimulateArgs) -> Result<(), Error> {
    let path = args
        .merchant_config
        .as_ref()
        .ok_or_else(|| Error::input("--merchant-config", "required to serve"))?;
    let mut config = SimulatorConfig::load(path)?;
    if let Some(scale) = args.clock_scale {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::input("--clock-scale", "must be a positive number"));
        }
        config.settings.clock_scale = scale;
    }
    let simulator = Simulator::new(&config)?;
    let tls = match (&args.tls_cert, &args.tls_key, &args.client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Some(tls::server_config(&tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: client_ca.clone(),
        })?),
        _ => None,
    };
    runtime()?.block_on(async move {
        let (listener, bound) = crate::simulator::bind(args.listen).await?;
        if let Some(tls) = tls {
            outln!(
                "wxpay simulator listening on https://{bound} (client certificates for /secapi/)"
            );
            return tls::serve(simulator, listener, tls).await;
        }
        outln!(
            "wxpay simulator listening on http://{bound} ({} merchant(s), clock x{})",
            config.merchants.len(),
            config.settings.clock_scale
        );
        simulator.serve(listener).await
    })
}

fn pay(url: &str, out_trade_no: &str, mch_id: Option<&str>, sandbox: bool) -> Result<(), Error> {
    let mut body = serde_json::json!({ "out_trade_no": out_trade_no, "sandbox": sandbox });
    if let Some(id) = mch_id {
        body["mch_id"] = id.into();
    }
    let endpoint = format!("{}/admin/pay", url.trim_end_matches('/'));
    runtime()?.block_on(async move {
        let response = reqwest::Client::new()
            .post(&endpoint)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| Error::input(endpoint.clone(), e))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| Error::input(endpoint.clone(), e))?;
        if status.is_success() {
            outln!("{text}");
            Ok(())
        } else {
            Err(Error::input(format!("paying {out_trade_no}"), text))
        }
    })
}
