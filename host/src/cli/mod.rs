//! The operator command line.
//!
//! Key material is accepted only through `--key-file` (owner-only
//! permissions) or `--key-env` (default `WXPAY_API_KEY`), never as an
//! argument value. Exit status: 0 success, 1 the component refused the
//! input (bad signature, bad field), 2 anything else (usage, files).

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
    /// Show the signing component: size, sha256, imports and exports.
    Inspect(inspect::InspectArgs),
    /// Sign params (a JSON object of strings, or an <xml> body) with the merchant key.
    Sign(messages::SignArgs),
    /// Verify a WeChat reply, payment notification or refund notification.
    Verify(messages::VerifyArgs),
    /// Explain why a message's signature may fail (the key is shown as ***).
    Explain(messages::ExplainArgs),
    /// Run the offline WeChat Pay v2 simulator, or `simulate pay <out_trade_no>` as the payer.
    Simulate(simulate::SimulateArgs),
}

/// Options shared by commands that run the component.
#[derive(Debug, Args)]
struct ComponentArgs {
    /// Use this component file instead of the embedded one (same import policy).
    #[arg(long, value_name = "FILE")]
    component: Option<PathBuf>,
}

impl ComponentArgs {
    fn sandbox(&self) -> Result<Sandbox, Error> {
        match &self.component {
            None => Sandbox::embedded(),
            Some(path) => {
                let bytes =
                    std::fs::read(path).map_err(|e| Error::input(path.display().to_string(), e))?;
                Sandbox::from_bytes(&bytes, SandboxLimits::default())
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

/// Parses the command line and runs it.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Sign(args) => messages::sign(args),
        Command::Verify(args) => messages::verify(args),
        Command::Explain(args) => messages::explain(args),
        Command::Simulate(args) => simulate::run(args),
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
