//! `wxpay bench`: measurements taken on this machine, against the
//! simulator, with nothing to configure.
//!
//! Machines here are small and noisy, so every report starts with a
//! description of the machine it ran on, and figures are read as that
//! machine's, never as absolute promises.

mod deliver;
pub mod load;
pub mod micro;
pub mod redis_server;
pub mod suite;

use wxpay_guest::packed;

use crate::error::Error;
use crate::sandbox::SignerInstance;
use crate::sandbox::bindings::types::SignType;
use crate::sandbox::signer::{MerchantHandle, Pairs};

/// A payment notification as WeChat sends one for a paid order, signed
/// (HMAC-SHA256) in the component by `merchant`: for load runs and tests
/// that play WeChat's side without the simulator's scheduling.
pub fn payment_notification(
    signer: &mut SignerInstance,
    merchant: &MerchantHandle,
    out_trade_no: &str,
    total_fee: u64,
    transaction_id: &str,
) -> Result<Vec<u8>, Error> {
    let (appid, mch_id) = signer.identity(merchant)?;
    let fee = total_fee.to_string();
    let nonce = format!(
        "n{}",
        transaction_id
            .get(transaction_id.len().saturating_sub(16)..)
            .unwrap_or("")
    );
    let fields = [
        ("appid", appid.as_str()),
        ("mch_id", mch_id.as_str()),
        ("nonce_str", nonce.as_str()),
        ("result_code", "SUCCESS"),
        ("return_code", "SUCCESS"),
        ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
        ("trade_type", "NATIVE"),
        ("bank_type", "CMC"),
        ("fee_type", "CNY"),
        ("cash_fee", fee.as_str()),
        ("total_fee", fee.as_str()),
        ("transaction_id", transaction_id),
        ("out_trade_no", out_trade_no),
        ("time_end", "20260101120000"),
        ("sign_type", "HMAC-SHA256"),
        ("is_subscribe", "N"),
    ];
    // Seeding signs tens of thousands of these: one string across the boundary per signature.
    let packed = packed::pack(fields).map_err(|e| Error::input("bench: notification fields", e))?;
    let sign = signer.sign_packed(merchant, &packed, Some(SignType::HmacSha256))?;
    let mut params: Pairs = fields
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    params.push(("sign".to_owned(), sign));
    Ok(signer.write_xml(&params)?.into_bytes())
}

/// The machine, in one line: CPU model, cores available, memory.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kb: u64 = info
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!(", {:.0} GiB", kb as f64 / 1_048_576.0))
        })
        .unwrap_or_default();
    format!("{cpu}, {cores} cores{memory}, {}", std::env::consts::OS)
}
