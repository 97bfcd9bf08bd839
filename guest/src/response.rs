//! Reading WeChat's replies, in the order the protocol layers them:
//! `return_code` (communication), then the signature, then the merchant's
//! identity, then `result_code` (business).
//!
//! A reply is verified with the algorithm the *request* used: replies carry
//! no `sign_type`, and guessing one from the message would let a forger pick
//! the weaker algorithm.

use alloc::string::String;

use crate::error::{Error, Result, WechatError};
use crate::merchant::Merchant;
use crate::params::{Params, non_empty};
use crate::sign::SignType;
use crate::xml;

impl Merchant {
    /// Verifies a synchronous reply and returns its fields, minus `sign`.
    pub fn verify_response(&self, body: &[u8], request_sign_type: SignType) -> Result<Params> {
        let mut params = xml::parse(body)?;
        check_return_code(&params)?;
        self.verify(&params, request_sign_type)?;
        params.remove("sign");
        // Replies echo the ids they have: `mch_id` always, `appid` and the sub
        // ids on most endpoints (getsignkey has only `mch_id`).
        self.check_ids(&params, &["mch_id"])?;
        check_result_code(&params)?;
        Ok(params)
    }

    /// A downloadbill reply: the text table on success, or the unsigned
    /// XML failure as [`Error::ReturnFailed`].
    pub fn check_bill(&self, body: &[u8]) -> Result<String> {
        let text = core::str::from_utf8(body).map_err(|e| {
            Error::xml(
                crate::error::XmlReason::NotUtf8,
                alloc::format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        if text.trim_start().starts_with('<') {
            let params = xml::parse(body)?;
            let code = non_empty(&params, "error_code").unwrap_or_default();
            let msg = non_empty(&params, "return_msg").unwrap_or("downloadbill failed");
            return Err(Error::ReturnFailed(if code.is_empty() {
                String::from(msg)
            } else {
                alloc::format!("{msg} (error_code {code})")
            }));
        }
        Ok(String::from(text))
    }
}

/// `return_code` must be `SUCCESS`; a `FAIL` reply is unsigned and carries
/// only `return_msg` (or, from one sandbox, `retmsg`).
pub fn check_return_code(params: &Params) -> Result<()> {
    let code = non_empty(params, "return_code").or_else(|| non_empty(params, "retcode"));
    match code {
        Some("SUCCESS") => Ok(()),
        _ => {
            let msg = non_empty(params, "return_msg")
                .or_else(|| non_empty(params, "retmsg"))
                .unwrap_or("return_code is not SUCCESS");
            let mut msg = String::from(msg);
            crate::text::truncate_on_char_boundary(&mut msg, 256);
            Err(Error::ReturnFailed(msg))
        }
    }
}

/// `result_code=FAIL` becomes [`Error::Wechat`] with retry advice.
pub fn check_result_code(params: &Params) -> Result<()> {
    match non_empty(params, "result_code") {
        Some("FAIL") => {
            let code = non_empty(params, "err_code").unwrap_or("UNKNOWN");
            let description = non_empty(params, "err_code_des").unwrap_or_default();
            Err(Error::Wechat(wechat_error(code, description)))
        }
        _ => Ok(()),
    }
}

/// Builds the typed error for an `err_code`, with its retry rule and hint.
pub fn wechat_error(code: &str, description: &str) -> WechatError {
    let (retryable, hint) = advice(code);
    WechatError {
        code: String::from(code),
        description: String::from(description),
        retryable,
        hint: String::from(hint),
    }
}

/// Whether the identical request may be retried, and what to do.
pub fn advice(code: &str) -> (bool, &'static str) {
    match code {
        "SYSTEMERROR" => (
            true,
            "WeChat timed out: retry the identical request, or query the order first",
        ),
        "BIZERR_NEED_RETRY" => (
            true,
            "concurrent refund rejected: retry with the same out_refund_no",
        ),
        "FREQUENCY_LIMITED" => (true, "rate limited: retry the same request more slowly"),
        "INVALID_REQ_TOO_MUCH" => (
            true,
            "too many invalid requests: fix them, then retry after a minute",
        ),
        "USERPAYING" => (
            true,
            "the payer is entering a password: query the order every 10 s",
        ),
        "ORDERPAID" => (
            false,
            "the order is already paid: treat it as paid, do not order again",
        ),
        "ORDERCLOSED" => (
            false,
            "the order is closed: place a new order with a new out_trade_no",
        ),
        "ORDERNOTEXIST" => (
            false,
            "no such order: check out_trade_no/transaction_id and the merchant",
        ),
        "REFUNDNOTEXIST" => (
            false,
            "no such refund: check the refund number, or the order has no refund",
        ),
        "INVALID_REQUEST" => (
            false,
            "re-entry with different parameters (201 商户订单号重复): resend identical fields or use a new out_trade_no",
        ),
        "OUT_TRADE_NO_USED" => (false, "out_trade_no already used: use a new one"),
        "NOTENOUGH" => (
            false,
            "insufficient balance: the payer changes card, or the merchant tops up for refunds",
        ),
        "NOAUTH" => (
            false,
            "the merchant lacks this permission: apply for it in the merchant platform",
        ),
        "APPID_NOT_EXIST" | "MCHID_NOT_EXIST" | "APPID_MCHID_NOT_MATCH" => (
            false,
            "appid and mch_id do not belong together: check the configuration",
        ),
        "LACK_PARAMS" => (false, "a required field is missing"),
        "SIGNERROR" => (
            false,
            "signature rejected: check the key (APIv2, not AppSecret/APIv3), sign_type, and UTF-8 values",
        ),
        "PARAM_ERROR" => (
            false,
            "a field was refused: check UTF-8 body, openid for this appid, nonce length, amounts in integer fen",
        ),
        "XML_FORMAT_ERROR" | "NOT_UTF8" | "POST_DATA_EMPTY" | "REQUIRE_POST_METHOD" => {
            (false, "the request body was malformed: POST UTF-8 XML")
        }
        "TRADE_OVERDUE" => (
            false,
            "the payment is more than a year old and cannot be refunded",
        ),
        "USER_ACCOUNT_ABNORMAL" => (false, "the payer's account is closed: refund offline"),
        "INVALID_TRANSACTIONID" => (false, "transaction_id is wrong"),
        "TRADE_STATE_ERROR" => (false, "the order's state does not allow this operation"),
        "AUTH_CODE_INVALID" => (
            false,
            "the payment code expired: ask the payer to refresh it",
        ),
        "ORDERREVERSED" => (false, "the order was reversed: place a new order"),
        _ => (false, "see WeChat's err_code_des"),
    }
}
