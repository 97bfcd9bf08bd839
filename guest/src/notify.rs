//! Payment notifications: the message that says money moved.
//!
//! `notify_url` is public, so anyone can POST to it. A notification is
//! believed only after every check WeChat asks for and the ones SDKs forget:
//! safe parsing, `return_code=SUCCESS`, a present `sign`, a `sign_type` (if
//! sent) equal to the algorithm the merchant configured or the order was
//! placed with, the signature itself over every field received, appid and
//! mch_id, and — when the caller knows the order — out_trade_no, total_fee
//! and fee_type. HMAC notifications may arrive without `sign_type`; that is
//! fine, because the algorithm never comes from the message.

use alloc::string::String;

use crate::error::{Error, Mismatch, Result, Rule};
use crate::fields;
use crate::merchant::Merchant;
use crate::params::{Params, non_empty};
use crate::response::check_return_code;
use crate::sign::SignType;
use crate::xml;

/// What the caller expects a notification to be about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedOrder {
    /// The merchant's order number.
    pub out_trade_no: String,
    /// The amount the merchant recorded, in fen.
    pub total_fee: u64,
    /// `CNY` when `None`.
    pub fee_type: Option<String>,
    /// The algorithm the order was placed with; the merchant's when `None`.
    pub sign_type: Option<SignType>,
}

/// A verified payment notification.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PaymentNotice {
    pub out_trade_no: String,
    pub transaction_id: String,
    pub total_fee: u64,
    pub fee_type: String,
    /// `result_code=SUCCESS`: the payer paid.
    pub paid: bool,
    pub err_code: Option<String>,
    pub openid: Option<String>,
    pub trade_type: Option<String>,
    pub bank_type: Option<String>,
    pub time_end: Option<String>,
    pub attach: Option<String>,
    pub cash_fee: Option<u64>,
    /// Every field received except `sign`.
    pub fields: Params,
}

/// The exact acknowledgement WeChat expects; anything else means "retry".
pub const ACK: &str = "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";

/// A refusal that makes WeChat send the notification again.
pub fn nack(reason: &str) -> String {
    let mut msg: String = reason
        .chars()
        .map(|c| {
            if crate::text::is_control_or_bidi(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    crate::text::truncate_on_char_boundary(&mut msg, 128);
    if msg.is_empty() {
        msg.push_str("FAIL");
    }
    let mut params = Params::new();
    params.insert("return_code".into(), "FAIL".into());
    params.insert("return_msg".into(), msg);
    match xml::write(&params) {
        Ok(body) => body,
        Err(_) => String::from("<xml><return_code><![CDATA[FAIL]]></return_code></xml>"),
    }
}

impl Merchant {
    /// Verifies a payment notification body.
    pub fn verify_payment_notification(
        &self,
        body: &[u8],
        expected: Option<&ExpectedOrder>,
    ) -> Result<PaymentNotice> {
        let mut params = xml::parse(body)?;
        check_return_code(&params)?;
        let sign_type = expected
            .and_then(|e| e.sign_type)
            .unwrap_or(self.config.sign_type);
        check_declared_sign_type(&params, sign_type)?;
        self.verify(&params, sign_type)?;
        params.remove("sign");
        self.check_identity(&params)?;
        let notice = notice_from(params)?;
        if let Some(expected) = expected {
            check_expected(&notice, expected)?;
        }
        Ok(notice)
    }

    /// Checks a notice verified without `expected`, so with this
    /// merchant's algorithm, against the order it names: refused when the
    /// order was placed with the other algorithm (the notice must then be
    /// verified again with it), then exactly the check
    /// [`Merchant::verify_payment_notification`] makes with `expected`.
    pub fn check_payment_notice(
        &self,
        notice: &PaymentNotice,
        expected: &ExpectedOrder,
    ) -> Result<()> {
        let verified_with = self.config.sign_type;
        let order_signs_with = expected.sign_type.unwrap_or(verified_with);
        if order_signs_with != verified_with {
            return Err(Error::SignTypeMismatch(Mismatch {
                field: "sign_type".into(),
                expected: order_signs_with.as_str().into(),
                found: verified_with.as_str().into(),
            }));
        }
        check_expected(notice, expected)
    }
}

/// A `sign_type` in the message must name the algorithm we verify with.
pub(crate) fn check_declared_sign_type(params: &Params, expected: SignType) -> Result<()> {
    match non_empty(params, "sign_type") {
        None => Ok(()),
        Some(declared) if declared == expected.as_str() => Ok(()),
        Some(declared) => Err(Error::SignTypeMismatch(Mismatch {
            field: "sign_type".into(),
            expected: expected.as_str().into(),
            found: declared.into(),
        })),
    }
}

fn required<'a>(params: &'a Params, field: &str) -> Result<&'a str> {
    non_empty(params, field).ok_or_else(|| Error::field(field, Rule::Required))
}

fn optional(params: &Params, field: &str) -> Option<String> {
    non_empty(params, field).map(String::from)
}

fn notice_from(params: Params) -> Result<PaymentNotice> {
    let paid = match required(&params, "result_code")? {
        "SUCCESS" => true,
        "FAIL" => false,
        _ => {
            return Err(Error::field(
                "result_code",
                Rule::OneOf(&["SUCCESS", "FAIL"]),
            ));
        }
    };
    let total_fee = fields::parse_fee("total_fee", required(&params, "total_fee")?)?;
    let cash_fee = non_empty(&params, "cash_fee")
        .map(|v| fields::parse_fee("cash_fee", v))
        .transpose()?;
    let transaction_id = if paid {
        String::from(required(&params, "transaction_id")?)
    } else {
        optional(&params, "transaction_id").unwrap_or_default()
    };
    Ok(PaymentNotice {
        out_trade_no: String::from(required(&params, "out_trade_no")?),
        transaction_id,
        total_fee,
        fee_type: optional(&params, "fee_type").unwrap_or_else(|| String::from("CNY")),
        paid,
        err_code: optional(&params, "err_code"),
        openid: optional(&params, "openid"),
        trade_type: optional(&params, "trade_type"),
        bank_type: optional(&params, "bank_type"),
        time_end: optional(&params, "time_end"),
        attach: optional(&params, "attach"),
        cash_fee,
        fields: params,
    })
}

fn check_expected(notice: &PaymentNotice, expected: &ExpectedOrder) -> Result<()> {
    if notice.out_trade_no != expected.out_trade_no {
        return Err(Error::OrderMismatch(Error::mismatch(
            "out_trade_no",
            expected.out_trade_no.as_str(),
            notice.out_trade_no.as_str(),
        )));
    }
    if notice.total_fee != expected.total_fee {
        return Err(Error::AmountMismatch(Error::mismatch(
            "total_fee",
            expected.total_fee.to_string(),
            notice.total_fee.to_string(),
        )));
    }
    let fee_type = expected.fee_type.as_deref().unwrap_or("CNY");
    if notice.fee_type != fee_type {
        return Err(Error::OrderMismatch(Error::mismatch(
            "fee_type",
            fee_type,
            notice.fee_type.as_str(),
        )));
    }
    Ok(())
}
