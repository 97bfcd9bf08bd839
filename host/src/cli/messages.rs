//! `wxpay sign`, `wxpay verify`, `wxpay explain`: operator access to the
//! component's signing and verification, with the key from a private file
//! or the environment.

use std::io::Read as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::{Map, Value, json};

use super::{ComponentArgs, KeyArgs, SignTypeArg};
use crate::error::{Error, sign_type_name};
use crate::sandbox::SignerInstance;
use crate::sandbox::bindings::merchant_api::{ExpectedOrder, ExpectedRefund};
use crate::sandbox::signer::{MerchantSettings, Pairs, without_sign};

/// The merchant's identity and algorithm.
#[derive(Debug, Args)]
struct MerchantArgs {
    /// The merchant's appid (default: the message's `appid`).
    #[arg(long, env = "WXPAY_APPID")]
    appid: Option<String>,
    /// The merchant number (default: the message's `mch_id`).
    #[arg(long, env = "WXPAY_MCH_ID")]
    mch_id: Option<String>,
    /// The signature algorithm the merchant uses (for `explain`: the one the verifier used).
    #[arg(long, value_enum, default_value = "md5")]
    sign_type: SignTypeArg,
    /// Service-provider mode: the sub-merchant's appid.
    #[arg(long)]
    sub_appid: Option<String>,
    /// Service-provider mode: the sub-merchant number.
    #[arg(long)]
    sub_mch_id: Option<String>,
    /// The key is a sandbox key (`/sandboxnew/`).
    #[arg(long)]
    sandbox: bool,
}

impl MerchantArgs {
    fn settings(&self, params: &Pairs) -> Result<MerchantSettings, Error> {
        let from_params = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let pick = |flag: &Option<String>, name: &str| {
            flag.clone().or_else(|| from_params(name)).ok_or_else(|| {
                Error::input(
                    format!("--{}", name.replace('_', "-")),
                    "required (or put it in the message)",
                )
            })
        };
        Ok(MerchantSettings {
            appid: pick(&self.appid, "appid")?,
            mch_id: pick(&self.mch_id, "mch_id")?,
            sign_type: self.sign_type.into(),
            sub_appid: self.sub_appid.clone(),
            sub_mch_id: self.sub_mch_id.clone(),
            sandbox: self.sandbox,
        })
    }
}

#[derive(Debug, Args)]
pub(super) struct SignArgs {
    #[command(flatten)]
    component: ComponentArgs,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    merchant: MerchantArgs,
    /// Print the whole signed <xml> body instead of the signature alone.
    #[arg(long)]
    xml: bool,
    /// The params: a JSON object of strings, or an <xml> body; `-` for stdin.
    #[arg(default_value = "-")]
    input: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MessageKind {
    /// A synchronous reply to a request.
    Response,
    /// A payment result notification.
    Payment,
    /// A refund notification (encrypted req_info).
    Refund,
}

#[derive(Debug, Args)]
pub(super) struct VerifyArgs {
    #[command(flatten)]
    component: ComponentArgs,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    merchant: MerchantArgs,
    /// What the message is.
    #[arg(long, value_enum, default_value = "payment")]
    kind: MessageKind,
    /// Payment/refund: the order number the message must be about.
    #[arg(long)]
    out_trade_no: Option<String>,
    /// Payment: the amount in fen the message must carry.
    #[arg(long, requires = "out_trade_no")]
    total_fee: Option<u64>,
    /// Refund: the refund number the message must be about.
    #[arg(long, requires_all = ["out_trade_no", "refund_fee"])]
    out_refund_no: Option<String>,
    /// Refund: the refund amount in fen the message must carry.
    #[arg(long, requires = "out_refund_no")]
    refund_fee: Option<u64>,
    /// The XML body; `-` for stdin.
    #[arg(default_value = "-")]
    input: PathBuf,
}

#[derive(Debug, Args)]
pub(super) struct ExplainArgs {
    #[command(flatten)]
    component: ComponentArgs,
    /// Also test hypotheses with the merchant key (from --key-file or --key-env).
    #[arg(long)]
    with_key: bool,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    merchant: MerchantArgs,
    /// The message (JSON object or <xml> body, with its `sign`); `-` for stdin.
    #[arg(default_value = "-")]
    input: PathBuf,
}

pub(super) fn read_input(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Error::input("stdin", e))?;
    } else {
        bytes = std::fs::read(path).map_err(|e| Error::input(path.display().to_string(), e))?;
    }
    Ok(bytes)
}

/// An <xml> body goes through the component's safe parser; anything else
/// must be a JSON object whose values are all strings.
fn read_params(signer: &mut SignerInstance, bytes: &[u8]) -> Result<Pairs, Error> {
    let trimmed = bytes.trim_ascii_start();
    if trimmed.starts_with(b"<") {
        return signer.parse_xml(bytes, None);
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| Error::input("params", e))?;
    let Value::Object(map) = value else {
        return Err(Error::input(
            "params",
            "expected a JSON object or an <xml> body",
        ));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(Error::input(
                format!("params.{k}"),
                format!("must be a string, found {other}"),
            )),
        })
        .collect()
}

fn pairs_json(pairs: &Pairs) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

pub(super) fn sign(args: &SignArgs) -> Result<(), Error> {
    let bytes = read_input(&args.input)?;
    let sandbox = args.component.sandbox()?;
    let mut signer = sandbox.instantiate()?;
    let params = read_params(&mut signer, &bytes)?;
    let settings = args.merchant.settings(&params)?;
    let key = args.key.load()?;
    let merchant = signer.merchant(&settings, &key)?;
    let sign = signer.sign(&merchant, &params, Some(settings.sign_type))?;
    if args.xml {
        let mut signed = without_sign(&params);
        signed.push(("sign".to_owned(), sign));
        outln!("{}", signer.write_xml(&signed)?);
    } else {
        outln!("{sign}");
    }
    signer.drop_merchant(merchant)
}

pub(super) fn verify(args: &VerifyArgs) -> Result<(), Error> {
    let body = read_input(&args.input)?;
    let sandbox = args.component.sandbox()?;
    let mut signer = sandbox.instantiate()?;
    let params = signer.parse_xml(&body, None)?;
    let settings = args.merchant.settings(&params)?;
    let key = args.key.load()?;
    let merchant = signer.merchant(&settings, &key)?;
    let verdict = match args.kind {
        MessageKind::Response => signer
            .verify_response(&merchant, &body, settings.sign_type)
            .map(|fields| json!({ "valid": true, "kind": "response", "fields": pairs_json(&fields) })),
        MessageKind::Payment => {
            let expected = args.out_trade_no.as_ref().zip(args.total_fee).map(|(no, fee)| ExpectedOrder {
                out_trade_no: no.clone(),
                total_fee: fee,
                fee_type: None,
                sign_type: None,
            });
            signer
                .verify_payment_notification(&merchant, &body, expected.as_ref())
                .map(|n| {
                    json!({
                        "valid": true, "kind": "payment", "paid": n.paid,
                        "out_trade_no": n.out_trade_no, "transaction_id": n.transaction_id,
                        "total_fee": n.total_fee, "fee_type": n.fee_type,
                        "sign_type": sign_type_name(settings.sign_type),
                        "fields": pairs_json(&without_sign(&params)),
                    })
                })
        }
        MessageKind::Refund => {
            let expected = match (&args.out_trade_no, &args.out_refund_no, args.refund_fee) {
                (Some(t), Some(r), Some(fee)) => Some(ExpectedRefund {
                    out_trade_no: t.clone(),
                    out_refund_no: r.clone(),
                    refund_fee: fee,
                }),
                _ => None,
            };
            signer
                .verify_refund_notification(&merchant, &body, expected.as_ref())
                .map(|n| {
                    json!({
                        "valid": true, "kind": "refund", "refund_status": n.refund_status,
                        "out_trade_no": n.out_trade_no, "out_refund_no": n.out_refund_no,
                        "refund_fee": n.refund_fee, "total_fee": n.total_fee,
                        "fields": pairs_json(&n.fields),
                    })
                })
        }
    };
    signer.drop_merchant(merchant)?;
    let verdict = verdict?;
    outln!(
        "{}",
        serde_json::to_string_pretty(&verdict).map_err(|e| Error::input("output", e))?
    );
    Ok(())
}

pub(super) fn explain(args: &ExplainArgs) -> Result<(), Error> {
    let bytes = read_input(&args.input)?;
    let sandbox = args.component.sandbox()?;
    let mut signer = sandbox.instantiate()?;
    let params = read_params(&mut signer, &bytes)?;
    let explanation = signer.explain_signature(&params, args.merchant.sign_type.into())?;
    outln!("string to sign: {}", explanation.redacted_string_to_sign);
    if let Some(looks) = explanation.sign_looks_like {
        outln!("the sign looks like: {}", sign_type_name(looks));
    }
    let causes = if args.with_key {
        let settings = args.merchant.settings(&params)?;
        let key = args.key.load()?;
        let merchant = signer.merchant(&settings, &key)?;
        let findings = signer.diagnose_signature(&merchant, &params);
        signer.drop_merchant(merchant)?;
        findings?
    } else {
        explanation.likely_causes
    };
    outln!("likely causes:");
    for cause in causes {
        outln!("  - {cause}");
    }
    Ok(())
}
