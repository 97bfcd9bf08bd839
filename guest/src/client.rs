//! Client-side parameters: the second signature a payer's app or browser
//! needs to open the payment sheet for a `prepay_id`.
//!
//! JSAPI (official accounts, mini-programs) signs exactly `appId`,
//! `timeStamp`, `nonceStr`, `package=prepay_id=…` and `signType` — note the
//! capitals — and `signType` must be the algorithm unifiedorder used. APP
//! signs lower-case `appid`, `partnerid`, `prepayid`, `package=Sign=WXPay`,
//! `noncestr`, `timestamp`. Both take a timestamp in seconds; a millisecond
//! timestamp is a classic cause of "支付验证签名失败", so it is refused.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{Error, Result, Rule};
use crate::fields;
use crate::merchant::Merchant;
use crate::params::Params;

/// Ordered `(name, value)` pairs, as the client SDK takes them.
pub type ClientParams = Vec<(String, String)>;

/// Timestamps accepted: 10-digit seconds (2001-09-09 to 2286-11-20).
const SECONDS_RANGE: (u64, u64) = (1_000_000_000, 9_999_999_999);

fn check_inputs(prepay_id: &str, nonce: &str, timestamp: u64) -> Result<()> {
    fields::id("prepay_id", prepay_id, 64)?;
    fields::nonce(nonce)?;
    if !(SECONDS_RANGE.0..=SECONDS_RANGE.1).contains(&timestamp) {
        return Err(Error::field(
            "timestamp",
            Rule::OutOfRange {
                min: SECONDS_RANGE.0,
                max: SECONDS_RANGE.1,
            },
        ));
    }
    Ok(())
}

impl Merchant {
    /// JSAPI / mini-program parameters, with `paySign`.
    pub fn jsapi_params(
        &self,
        prepay_id: &str,
        nonce: &str,
        timestamp: u64,
    ) -> Result<ClientParams> {
        check_inputs(prepay_id, nonce, timestamp)?;
        let app_id = self
            .config
            .sub_appid
            .as_deref()
            .unwrap_or(&self.config.appid);
        let sign_type = self.config.sign_type;
        let ordered = [
            ("appId", String::from(app_id)),
            ("timeStamp", timestamp.to_string()),
            ("nonceStr", String::from(nonce)),
            ("package", format!("prepay_id={prepay_id}")),
            ("signType", String::from(sign_type.as_str())),
        ];
        let signed: Params = ordered
            .iter()
            .map(|(k, v)| (String::from(*k), v.clone()))
            .collect();
        let pay_sign = self.sign(&signed, sign_type);
        Ok(with_signature(ordered, "paySign", pay_sign))
    }

    /// APP parameters, with `sign`.
    pub fn app_params(&self, prepay_id: &str, nonce: &str, timestamp: u64) -> Result<ClientParams> {
        check_inputs(prepay_id, nonce, timestamp)?;
        let partner_id = self
            .config
            .sub_mch_id
            .as_deref()
            .unwrap_or(&self.config.mch_id);
        let ordered = [
            ("appid", self.config.appid.clone()),
            ("partnerid", String::from(partner_id)),
            ("prepayid", String::from(prepay_id)),
            ("package", String::from("Sign=WXPay")),
            ("noncestr", String::from(nonce)),
            ("timestamp", timestamp.to_string()),
        ];
        let signed: Params = ordered
            .iter()
            .map(|(k, v)| (String::from(*k), v.clone()))
            .collect();
        let sign = self.sign(&signed, self.config.sign_type);
        Ok(with_signature(ordered, "sign", sign))
    }
}

fn with_signature<const N: usize>(
    ordered: [(&str, String); N],
    name: &str,
    sign: String,
) -> ClientParams {
    ordered
        .into_iter()
        .map(|(k, v)| (String::from(k), v))
        .chain(core::iter::once((String::from(name), sign)))
        .collect()
}
