//! The operator command line.
//!
//! Key material is accepted only through `--key-file` (owner-only
//! permissions) or `--key-env` (default `WXPAY_API_KEY`), never as an
//! argument value. Exit status: 0 success, 1 the component refused the
//! input (bad signature, bad field), 2 anything else (usage, files).

/// `println!` for commands: a line to stdout, where a closed pipe
/// (`wxpay … | head`) ends the output quietly instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::print_line(&format!($($arg)*))?
    };
}

mod agents;
mod bench;
mod gateway;
mod inspect;
mod messages;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::key::{ApiKey, DEFAULT_KEY_ENV, KeySource};
use crate::sandbox::bindings::types::SignType;
use crate::sandbox::{Sandbox, SandboxLimits};

/// wxpay: WeChat Pay v2 for AI agents, with the merchant key kept in a sandboxed component.
#[derive(Debug, Parser)]
#[command(name = "wxpay", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole flow on one machine: simulator, gateway, a scripted agent, no config.
    Demo(ComponentArgs),
    /// Show the signing component: size, sha256, imports and exports.
    Inspect(inspect::InspectArgs),
    /// Sign params (a JSON object of strings, or an <xml> body) with the merchant key.
    Sign(messages::SignArgs),
    /// Verify a WeChat reply, payment notification or refund notification.
    Verify(messages::VerifyArgs),
    /// Explain why a message's signature may fail (the key is shown as ***).
    #[command(alias = "explain-signature")]
    Explain(messages::ExplainArgs),
    /// Run the offline WeChat Pay v2 simulator, or `simulate pay <out_trade_no>` as the payer.
    Simulate(simulate::SimulateArgs),
    /// Run the gateway: notification callbacks, reconciliation, self-check.
    Serve(gateway::ServeArgs),
    /// Place, query, close or refund orders through the gateway.
    Order(gateway::OrderArgs),
    /// Inspect received notifications.
    Notifications(gateway::NotificationsArgs),
    /// Verify a notification body against the stored order, changing nothing.
    VerifyNotification(gateway::VerifyNotificationArgs),
    /// Check the gateway configuration and print it with secrets redacted.
    Config(gateway::ConfigCommandArgs),
    /// Add, list or revoke agents and their grants.
    Agents(agents::AgentsArgs),
    /// List, approve or deny payments and refunds waiting for a person.
    Approvals(agents::ApprovalsArgs),
    /// Print the append-only audit log.
    Audit(agents::AuditArgs),
    /// Invite or list the operators who sign in to the console with passkeys.
    Operators(agents::OperatorsArgs),
    /// The MCP server for an agent (stdio, or streamable HTTP with --http); token from WXPAY_AGENT_TOKEN.
    Mcp(McpArgs),
    /// Print the agent tools for function-calling frameworks.
    Tools(ToolsArgs),
    /// Measure on this machine: `bench load` drives intents and notifications through a gateway.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Args)]
struct McpArgs {
    /// Serve MCP over streamable HTTP at ADDR (path /mcp) instead of stdio.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ToolsFormat {
    /// OpenAI function-calling tools.
    Openai,
    /// Name, description, JSON Schema of the input, and MCP annotations.
    JsonSchema,
}

#[derive(Debug, Args)]
struct ToolsArgs {
    /// The shape to print.
    #[arg(long, value_enum, default_value = "json-schema")]
    format: ToolsFormat,
}

/// Options shared by commands that run the component.
#[derive(Debug, Args)]
struct ComponentArgs {
    /// Use this component file instead of the embedded one (same import policy).
    #[arg(long, value_name = "FILE")]
    component: Option<PathBuf>,
    /// Compile the component now, without reading or writing the cache of
    /// compiled components.
    #[arg(long)]
    no_cache: bool,
}

impl ComponentArgs {
    /// Compiles the component, through the on-disk cache when there is a
    /// cache directory (`$XDG_CACHE_HOME/wxpay`) and `--no-cache` is not given.
    fn sandbox(&self) -> Result<Sandbox, Error> {
        let bytes = self.bytes()?;
        match crate::config::default_cache_dir().filter(|_| !self.no_cache) {
            Some(dir) => Ok(Sandbox::cached(&bytes, SandboxLimits::default(), &dir)?.0),
            None => Sandbox::from_bytes(&bytes, SandboxLimits::default()),
        }
    }

    /// The component's bytes: the embedded build or `--component FILE`.
    fn bytes(&self) -> Result<Vec<u8>, Error> {
        match &self.component {
            None => Ok(crate::sandbox::EMBEDDED_COMPONENT.to_vec()),
            Some(path) => {
                std::fs::read(path).map_err(|e| Error::input(path.display().to_string(), e))
            }
        }
    }

    fn label(&self) -> String {
        self.component
            .as_ref()
            .map_or_else(|| "embedded".to_owned(), |p| p.display().to_string())
    }
}

/// Where the key comes from: a private file or an environment variable.
#[derive(Debug, Args)]
struct KeyArgs {
    /// Read the API key from this file (must be mode 0600 or stricter).
    #[arg(long, value_name = "FILE", conflicts_with = "key_env")]
    key_file: Option<PathBuf>,
    /// Read the API key from this environment variable.
    #[arg(long, value_name = "VAR", default_value = DEFAULT_KEY_ENV)]
    key_env: String,
}

impl KeyArgs {
    fn load(&self) -> Result<ApiKey, Error> {
        let source = match &self.key_file {
            Some(path) => KeySource::File(path.clone()),
            None => KeySource::Env(self.key_env.clone()),
        };
        let key = ApiKey::load(&source)?;
        for warning in key.self_check() {
            eprintln!("warning: {warning}");
        }
        Ok(key)
    }
}

/// The two v2 algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SignTypeArg {
    /// MD5 (WeChat's default).
    Md5,
    /// HMAC-SHA256.
    HmacSha256,
}

impl From<SignTypeArg> for SignType {
    fn from(arg: SignTypeArg) -> Self {
        match arg {
            SignTypeArg::Md5 => Self::Md5,
            SignTypeArg::HmacSha256 => Self::HmacSha256,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line: the event's fields at the top level,
    /// the enclosing span's (such as `payment_id`) under `span`.
    Json,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). No log line
/// carries the key: nothing that holds it implements `Display`, and its
/// `Debug` prints `<redacted>`.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// `wxpay mcp`.
fn mcp(args: &McpArgs) -> Result<(), Error> {
    use rmcp::ServiceExt as _;
    let server = crate::mcp::WxpayMcp::new(crate::mcp::AgentClient::from_env()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::input("runtime", e))?;
    runtime.block_on(async move {
        match args.http {
            None => {
                let running = server
                    .serve(rmcp::transport::stdio())
                    .await
                    .map_err(|e| Error::input("mcp", e))?;
                running
                    .waiting()
                    .await
                    .map_err(|e| Error::input("mcp", e))?;
                Ok(())
            }
            Some(addr) => {
                use rmcp::transport::streamable_http_server::{
                    StreamableHttpServerConfig, StreamableHttpService,
                    session::local::LocalSessionManager,
                };
                let service = StreamableHttpService::new(
                    move || Ok(server.clone()),
                    std::sync::Arc::new(LocalSessionManager::default()),
                    StreamableHttpServerConfig::default(),
                );
                let app = axum::Router::new().nest_service("/mcp", service);
                let (listener, bound) = crate::listen::bind(addr).await?;
                outln!("wxpay MCP server on http://{bound}/mcp");
                axum::serve(crate::listen::no_delay(listener), app)
                    .await
                    .map_err(|e| Error::input("mcp", e))
            }
        }
    })
}

/// `wxpay tools`.
fn tools(args: &ToolsArgs) -> Result<(), Error> {
    let format = match args.format {
        ToolsFormat::Openai => "openai",
        ToolsFormat::JsonSchema => "json-schema",
    };
    let value = crate::mcp::tools_json(format)?;
    let text = serde_json::to_string_pretty(&value).map_err(|e| Error::input("output", e))?;
    print_line(&text)
}

/// Writes a line to stdout; a closed pipe (`| head`) is not an error.
pub(crate) fn print_line(text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::input("stdout", e)),
        _ => Ok(()),
    }
}

/// `wxpay demo`.
fn demo(args: &ComponentArgs) -> Result<(), Error> {
    let sandbox = std::sync::Arc::new(args.sandbox()?);
    block_on(async {
        let mut out = std::io::stdout();
        crate::demo::run(sandbox, &mut out)
            .await
            .map_err(|failed| Error::input("demo", failed))
    })
}

/// Runs a command's async body on a multi-threaded runtime.
fn block_on<T>(body: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::input("runtime", e))?
        .block_on(body)
}

/// Parses the command line and runs it.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Demo(args) => demo(args),
        Command::Bench(args) => bench::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Sign(args) => messages::sign(args),
        Command::Verify(args) => messages::verify(args),
        Command::Explain(args) => messages::explain(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Serve(args) => gateway::serve(args),
        Command::Order(args) => gateway::order(args),
        Command::Notifications(args) => gateway::notifications(args),
        Command::VerifyNotification(args) => gateway::verify_notification(args),
        Command::Config(args) => gateway::config(args),
        Command::Agents(args) => agents::agents(args),
        Command::Approvals(args) => agents::approvals(args),
        Command::Audit(args) => agents::audit_log(args),
        Command::Operators(args) => agents::operators(args),
        Command::Mcp(args) => mcp(args),
        Command::Tools(args) => tools(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Error::Guest(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
