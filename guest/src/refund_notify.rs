//! Refund notifications: unsigned outside, encrypted inside.
//!
//! WeChat does not sign refund notifications. Their authenticity comes from
//! `req_info`: base64 of AES-256-ECB over a `<root>` XML document, keyed by
//! the lower-case hex MD5 of the API key (32 ASCII characters used directly
//! as the 32-byte AES key), with PKCS#7 padding. Only someone who knows the
//! key can produce a `req_info` that decrypts to valid padding and parses;
//! ECB gives no integrity beyond that, so every field is then checked.
//!
//! Everything returned comes from the decrypted document. The outer fields
//! are only checked (return_code, appid, mch_id) and never override it.

use alloc::string::String;
use alloc::vec::Vec;

use aes::Aes256;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use base64::Engine as _;
use md5::{Digest, Md5};
use zeroize::Zeroizing;

use crate::error::{DecryptReason, Error, Result, Rule};
use crate::fields;
use crate::merchant::Merchant;
use crate::params::{Params, non_empty};
use crate::response::check_return_code;
use crate::sign::ApiKey;
use crate::xml::{self, ROOT_REFUND, ReadOptions};

/// What the caller expects a refund notification to be about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ExpectedRefund {
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub refund_fee: u64,
}

/// A decrypted, checked refund notification.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RefundNotice {
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub total_fee: u64,
    pub refund_fee: u64,
    /// `SUCCESS`, `CHANGE` or `REFUNDCLOSE`.
    pub refund_status: String,
    pub success_time: Option<String>,
    pub settlement_refund_fee: Option<u64>,
    /// All decrypted fields.
    pub fields: Params,
}

/// The values of `refund_status`.
pub const REFUND_STATUSES: &[&str] = &["SUCCESS", "CHANGE", "REFUNDCLOSE"];

impl Merchant {
    /// Decrypts and checks a refund notification body.
    pub fn verify_refund_notification(
        &self,
        body: &[u8],
        expected: Option<&ExpectedRefund>,
    ) -> Result<RefundNotice> {
        let outer = xml::parse(body)?;
        check_return_code(&outer)?;
        self.check_identity(&outer)?;
        let req_info =
            non_empty(&outer, "req_info").ok_or(Error::DecryptFailed(DecryptReason::Missing))?;
        let plaintext = decrypt_req_info(req_info, self.key())?;
        let inner = xml::parse_with(
            &plaintext,
            ReadOptions {
                root: ROOT_REFUND,
                ..ReadOptions::default()
            },
        )?;
        let notice = refund_notice_from(inner)?;
        if let Some(expected) = expected {
            check_expected_refund(&notice, expected)?;
        }
        Ok(notice)
    }

    /// Checks a notice decrypted without `expected` against the refund it
    /// names: exactly the check [`Merchant::verify_refund_notification`]
    /// makes with `expected`. Reads no key: decryption already showed the
    /// notice came from someone who has it.
    pub fn check_refund_notice(
        &self,
        notice: &RefundNotice,
        expected: &ExpectedRefund,
    ) -> Result<()> {
        check_expected_refund(notice, expected)
    }
}

impl Merchant {
    /// Encrypts a refund notification's `<root>` document as WeChat does,
    /// giving `req_info`. For the simulator, which plays WeChat's side.
    pub fn encrypt_refund_info(&self, plaintext: &[u8]) -> String {
        encrypt_req_info(plaintext, self.key())
    }
}

/// The AES key: lower-case hex of MD5(api key), as ASCII bytes.
fn refund_aes_key(key: &ApiKey) -> Zeroizing<[u8; 32]> {
    let digest = Md5::digest(key.expose());
    let mut out = Zeroizing::new([0u8; 32]);
    // `hex::encode_to_slice` only fails on a wrong output length, which is fixed here.
    if hex::encode_to_slice(digest, out.as_mut_slice()).is_err() {
        unreachable!("16 bytes encode to 32 hex characters");
    }
    out
}

/// base64 → AES-256-ECB → strict PKCS#7.
pub fn decrypt_req_info(req_info: &str, key: &ApiKey) -> Result<Vec<u8>> {
    let mut data = base64::engine::general_purpose::STANDARD
        .decode(req_info)
        .map_err(|_| Error::DecryptFailed(DecryptReason::Base64))?;
    if data.is_empty() || data.len() % 16 != 0 {
        return Err(Error::DecryptFailed(DecryptReason::BlockLength));
    }
    let aes_key = refund_aes_key(key);
    let Ok(cipher) = Aes256::new_from_slice(aes_key.as_slice()) else {
        unreachable!("the AES-256 key is 32 bytes");
    };
    for chunk in data.chunks_exact_mut(16) {
        let mut block = aes::Block::default();
        block.copy_from_slice(chunk);
        cipher.decrypt_block(&mut block);
        chunk.copy_from_slice(&block);
    }
    strip_pkcs7(&mut data)?;
    if core::str::from_utf8(&data).is_err() {
        return Err(Error::DecryptFailed(DecryptReason::NotUtf8));
    }
    Ok(data)
}

/// The inverse of [`decrypt_req_info`]: PKCS#7, AES-256-ECB, base64. WeChat
/// does this; the simulator and the tests need it too.
pub fn encrypt_req_info(plaintext: &[u8], key: &ApiKey) -> String {
    let pad = 16 - plaintext.len() % 16;
    let mut data = Vec::with_capacity(plaintext.len() + pad);
    data.extend_from_slice(plaintext);
    data.resize(plaintext.len() + pad, pad as u8);
    let aes_key = refund_aes_key(key);
    let Ok(cipher) = Aes256::new_from_slice(aes_key.as_slice()) else {
        unreachable!("the AES-256 key is 32 bytes");
    };
    for chunk in data.chunks_exact_mut(16) {
        let mut block = aes::Block::default();
        block.copy_from_slice(chunk);
        cipher.encrypt_block(&mut block);
        chunk.copy_from_slice(&block);
    }
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Removes PKCS#7 padding: 1..=16 bytes, all equal to the count.
fn strip_pkcs7(data: &mut Vec<u8>) -> Result<()> {
    let pad = usize::from(
        *data
            .last()
            .ok_or(Error::DecryptFailed(DecryptReason::BlockLength))?,
    );
    let valid = (1..=16).contains(&pad)
        && pad <= data.len()
        && data[data.len() - pad..]
            .iter()
            .all(|&b| usize::from(b) == pad);
    if !valid {
        return Err(Error::DecryptFailed(DecryptReason::Padding));
    }
    data.truncate(data.len() - pad);
    Ok(())
}

fn required(params: &Params, field: &str) -> Result<String> {
    non_empty(params, field)
        .map(String::from)
        .ok_or_else(|| Error::field(field, Rule::Required))
}

fn refund_notice_from(params: Params) -> Result<RefundNotice> {
    let refund_status = required(&params, "refund_status")?;
    fields::one_of("refund_status", &refund_status, REFUND_STATUSES)?;
    let total_fee = fields::parse_fee("total_fee", &required(&params, "total_fee")?)?;
    let refund_fee = fields::parse_fee("refund_fee", &required(&params, "refund_fee")?)?;
    if refund_fee > total_fee {
        return Err(Error::field(
            "refund_fee",
            Rule::OutOfRange {
                min: 0,
                max: total_fee,
            },
        ));
    }
    let settlement_refund_fee = non_empty(&params, "settlement_refund_fee")
        .map(|v| fields::parse_fee("settlement_refund_fee", v))
        .transpose()?;
    Ok(RefundNotice {
        out_trade_no: required(&params, "out_trade_no")?,
        transaction_id: required(&params, "transaction_id")?,
        out_refund_no: required(&params, "out_refund_no")?,
        refund_id: required(&params, "refund_id")?,
        total_fee,
        refund_fee,
        refund_status,
        success_time: non_empty(&params, "success_time").map(String::from),
        settlement_refund_fee,
        fields: params,
    })
}

fn check_expected_refund(notice: &RefundNotice, expected: &ExpectedRefund) -> Result<()> {
    if notice.out_trade_no != expected.out_trade_no {
        return Err(Error::OrderMismatch(Error::mismatch(
            "out_trade_no",
            expected.out_trade_no.as_str(),
            notice.out_trade_no.as_str(),
        )));
    }
    if notice.out_refund_no != expected.out_refund_no {
        return Err(Error::OrderMismatch(Error::mismatch(
            "out_refund_no",
            expected.out_refund_no.as_str(),
            notice.out_refund_no.as_str(),
        )));
    }
    if notice.refund_fee != expected.refund_fee {
        return Err(Error::AmountMismatch(Error::mismatch(
            "refund_fee",
            expected.refund_fee.to_string(),
            notice.refund_fee.to_string(),
        )));
    }
    Ok(())
}
