//! Signed requests for every v2 endpoint, built from typed fields.
//!
//! Each builder checks its fields (required, conditional, lengths,
//! charsets, integer fen) before signing, adds the common fields (appid,
//! mch_id, sub ids, the host-given nonce, `sign_type` when not MD5, since
//! `sign_type` is itself signed), and returns the body with the path and the
//! algorithm the reply must be verified with.

use alloc::format;
use alloc::string::String;

use crate::error::{Error, Result, Rule};
use crate::fields::{self, put, put_opt};
use crate::merchant::Merchant;
use crate::params::Params;
use crate::sign::SignType;
use crate::xml;

/// A request ready to POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Path on the WeChat Pay host, with `/sandboxnew` for sandbox merchants.
    pub path: String,
    /// The signed `<xml>` body.
    pub body: String,
    /// The algorithm used; verify the reply with it.
    pub sign_type: SignType,
    /// Refund and reverse need the merchant's client certificate.
    pub needs_client_cert: bool,
}

/// The endpoints, with their production paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `pay/unifiedorder`.
    UnifiedOrder,
    /// `pay/orderquery`.
    OrderQuery,
    /// `pay/closeorder`.
    CloseOrder,
    /// `secapi/pay/refund`.
    Refund,
    /// `pay/refundquery`.
    RefundQuery,
    /// `pay/downloadbill`.
    DownloadBill,
    /// `pay/micropay`.
    Micropay,
    /// `secapi/pay/reverse`.
    Reverse,
    /// `sandboxnew/pay/getsignkey`.
    GetSignKey,
}

impl Endpoint {
    /// The production path.
    pub const fn path(self) -> &'static str {
        match self {
            Self::UnifiedOrder => "/pay/unifiedorder",
            Self::OrderQuery => "/pay/orderquery",
            Self::CloseOrder => "/pay/closeorder",
            Self::Refund => "/secapi/pay/refund",
            Self::RefundQuery => "/pay/refundquery",
            Self::DownloadBill => "/pay/downloadbill",
            Self::Micropay => "/pay/micropay",
            Self::Reverse => "/secapi/pay/reverse",
            Self::GetSignKey => "/sandboxnew/pay/getsignkey",
        }
    }

    /// Whether the endpoint needs mutual TLS.
    pub const fn needs_client_cert(self) -> bool {
        matches!(self, Self::Refund | Self::Reverse)
    }
}

/// The `trade_type` values of unifiedorder.
pub const TRADE_TYPES: &[&str] = &["JSAPI", "NATIVE", "APP", "MWEB"];
/// `bill_type` values.
pub const BILL_TYPES: &[&str] = &["ALL", "SUCCESS", "REFUND", "RECHARGE_REFUND"];
/// `refund_account` values.
pub const REFUND_ACCOUNTS: &[&str] = &[
    "REFUND_SOURCE_UNSETTLED_FUNDS",
    "REFUND_SOURCE_RECHARGE_FUNDS",
];

/// `pay/unifiedorder` fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct UnifiedOrder {
    pub body: String,
    pub out_trade_no: String,
    pub total_fee: u64,
    pub spbill_create_ip: String,
    pub notify_url: String,
    pub trade_type: String,
    pub device_info: Option<String>,
    pub detail: Option<String>,
    pub attach: Option<String>,
    pub fee_type: Option<String>,
    pub time_start: Option<String>,
    pub time_expire: Option<String>,
    pub goods_tag: Option<String>,
    pub product_id: Option<String>,
    pub limit_pay: Option<String>,
    pub openid: Option<String>,
    pub sub_openid: Option<String>,
    pub receipt: Option<String>,
    pub scene_info: Option<String>,
    pub profit_sharing: Option<String>,
}

/// How an existing order is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderRef {
    /// WeChat's `transaction_id` (preferred by WeChat).
    TransactionId(String),
    /// The merchant's `out_trade_no`.
    OutTradeNo(String),
}

/// `secapi/pay/refund` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RefundRequest {
    pub order: OrderRef,
    pub out_refund_no: String,
    pub total_fee: u64,
    pub refund_fee: u64,
    pub refund_fee_type: Option<String>,
    pub refund_desc: Option<String>,
    pub refund_account: Option<String>,
    pub notify_url: Option<String>,
}

/// How a refund is named for refundquery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum RefundRef {
    RefundId(String),
    OutRefundNo(String),
    TransactionId(String),
    OutTradeNo(String),
}

/// `pay/downloadbill` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct BillRequest {
    pub bill_date: String,
    pub bill_type: String,
    pub gzip: bool,
}

/// `pay/micropay` fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MicropayRequest {
    pub body: String,
    pub out_trade_no: String,
    pub total_fee: u64,
    pub spbill_create_ip: String,
    pub auth_code: String,
    pub device_info: Option<String>,
    pub attach: Option<String>,
    pub fee_type: Option<String>,
    pub goods_tag: Option<String>,
    pub limit_pay: Option<String>,
    pub time_start: Option<String>,
    pub time_expire: Option<String>,
}

fn body_text(name: &str, v: &str) -> Result<()> {
    fields::text(name, v, 127)
}

fn limit_pay(name: &str, v: &str) -> Result<()> {
    fields::one_of(name, v, &["no_credit"])
}

impl Merchant {
    /// Adds the common fields, signs, and writes the body.
    fn finish(&self, endpoint: Endpoint, params: Params, nonce: &str) -> Result<SignedRequest> {
        let params = self.with_common_fields(params, nonce)?;
        self.seal(
            self.path_for(endpoint.path()),
            endpoint.needs_client_cert(),
            params,
            self.config.sign_type,
        )
    }

    fn with_common_fields(&self, mut params: Params, nonce: &str) -> Result<Params> {
        fields::nonce(nonce)?;
        put(&mut params, "appid", self.config.appid.as_str())?;
        put(&mut params, "mch_id", self.config.mch_id.as_str())?;
        if let Some(v) = &self.config.sub_appid {
            put(&mut params, "sub_appid", v.as_str())?;
        }
        if let Some(v) = &self.config.sub_mch_id {
            put(&mut params, "sub_mch_id", v.as_str())?;
        }
        put(&mut params, "nonce_str", nonce)?;
        if self.config.sign_type != SignType::Md5 {
            put(&mut params, "sign_type", self.config.sign_type.as_str())?;
        }
        Ok(params)
    }

    fn path_for(&self, path: &str) -> String {
        if self.config.sandbox {
            format!("/sandboxnew{path}")
        } else {
            String::from(path)
        }
    }

    fn seal(
        &self,
        path: String,
        needs_client_cert: bool,
        mut params: Params,
        sign_type: SignType,
    ) -> Result<SignedRequest> {
        let sign = self.sign(&params, sign_type);
        put(&mut params, "sign", sign)?;
        Ok(SignedRequest {
            path,
            body: xml::write(&params)?,
            sign_type,
            needs_client_cert,
        })
    }

    /// Signs arbitrary params for an endpoint without a typed builder. The
    /// common fields are added and must not be in `params` already; values
    /// are signed exactly as given.
    pub fn sign_params(&self, params: Params, path: &str, nonce: &str) -> Result<SignedRequest> {
        if params.contains_key("sign") {
            return Err(Error::field(
                "sign",
                Rule::ForbiddenWhen(String::from("the component adds the signature")),
            ));
        }
        let path_byte = |b: u8| b.is_ascii_alphanumeric() || b"/_-".contains(&b);
        fields::token(
            "path",
            path,
            2,
            128,
            path_byte,
            "ASCII letters, digits and `/_-`",
        )?;
        if !path.starts_with('/') {
            return Err(Error::field(
                "path",
                Rule::Format("an absolute path such as /pay/orderquery"),
            ));
        }
        let params = self.with_common_fields(params, nonce)?;
        self.seal(
            self.path_for(path),
            path.starts_with("/secapi/"),
            params,
            self.config.sign_type,
        )
    }

    /// `pay/unifiedorder`.
    pub fn unified_order(&self, order: &UnifiedOrder, nonce: &str) -> Result<SignedRequest> {
        let mut p = Params::new();
        body_text("body", &order.body)?;
        put(&mut p, "body", order.body.as_str())?;
        fields::out_trade_no(&order.out_trade_no)?;
        put(&mut p, "out_trade_no", order.out_trade_no.as_str())?;
        fields::fee("total_fee", order.total_fee, 1)?;
        put(&mut p, "total_fee", order.total_fee.to_string())?;
        fields::ip("spbill_create_ip", &order.spbill_create_ip)?;
        put(&mut p, "spbill_create_ip", order.spbill_create_ip.as_str())?;
        fields::notify_url("notify_url", &order.notify_url)?;
        put(&mut p, "notify_url", order.notify_url.as_str())?;
        fields::one_of("trade_type", &order.trade_type, TRADE_TYPES)?;
        put(&mut p, "trade_type", order.trade_type.as_str())?;
        self.check_trade_type_needs(order)?;

        put_opt(
            &mut p,
            "device_info",
            order.device_info.as_deref(),
            |n, v| fields::id(n, v, 32),
        )?;
        put_opt(&mut p, "detail", order.detail.as_deref(), |n, v| {
            fields::json_object(n, v, 6000)
        })?;
        put_opt(&mut p, "attach", order.attach.as_deref(), body_text)?;
        put_opt(
            &mut p,
            "fee_type",
            order.fee_type.as_deref(),
            fields::currency,
        )?;
        put_opt(
            &mut p,
            "time_start",
            order.time_start.as_deref(),
            fields::datetime14,
        )?;
        put_opt(
            &mut p,
            "time_expire",
            order.time_expire.as_deref(),
            fields::datetime14,
        )?;
        put_opt(&mut p, "goods_tag", order.goods_tag.as_deref(), |n, v| {
            fields::id(n, v, 32)
        })?;
        put_opt(&mut p, "product_id", order.product_id.as_deref(), |n, v| {
            fields::id(n, v, 32)
        })?;
        put_opt(&mut p, "limit_pay", order.limit_pay.as_deref(), limit_pay)?;
        put_opt(&mut p, "openid", order.openid.as_deref(), |n, v| {
            fields::id(n, v, 128)
        })?;
        put_opt(&mut p, "sub_openid", order.sub_openid.as_deref(), |n, v| {
            fields::id(n, v, 128)
        })?;
        put_opt(&mut p, "receipt", order.receipt.as_deref(), |n, v| {
            fields::one_of(n, v, &["Y"])
        })?;
        put_opt(&mut p, "scene_info", order.scene_info.as_deref(), |n, v| {
            fields::json_object(n, v, 256)
        })?;
        put_opt(
            &mut p,
            "profit_sharing",
            order.profit_sharing.as_deref(),
            |n, v| fields::one_of(n, v, &["Y", "N"]),
        )?;
        check_expiry_order(order.time_start.as_deref(), order.time_expire.as_deref())?;
        self.finish(Endpoint::UnifiedOrder, p, nonce)
    }

    fn check_trade_type_needs(&self, order: &UnifiedOrder) -> Result<()> {
        let needs = |field: &str, present: bool| {
            if present {
                Ok(())
            } else {
                Err(Error::field(
                    field,
                    Rule::RequiredWhen(format!("trade_type={}", order.trade_type)),
                ))
            }
        };
        match order.trade_type.as_str() {
            "JSAPI" if self.config.sub_appid.is_some() => needs(
                "openid",
                order.openid.is_some() || order.sub_openid.is_some(),
            ),
            "JSAPI" => needs("openid", order.openid.is_some()),
            "NATIVE" => needs("product_id", order.product_id.is_some()),
            "MWEB" => needs("scene_info", order.scene_info.is_some()),
            _ => Ok(()),
        }
    }

    /// `pay/orderquery`.
    pub fn order_query(&self, order: &OrderRef, nonce: &str) -> Result<SignedRequest> {
        self.finish(Endpoint::OrderQuery, order_ref_params(order)?, nonce)
    }

    /// `pay/closeorder`.
    pub fn close_order(&self, out_trade_no: &str, nonce: &str) -> Result<SignedRequest> {
        fields::out_trade_no(out_trade_no)?;
        let mut p = Params::new();
        put(&mut p, "out_trade_no", out_trade_no)?;
        self.finish(Endpoint::CloseOrder, p, nonce)
    }

    /// `secapi/pay/refund`.
    pub fn refund(&self, refund: &RefundRequest, nonce: &str) -> Result<SignedRequest> {
        let mut p = order_ref_params(&refund.order)?;
        fields::out_refund_no(&refund.out_refund_no)?;
        put(&mut p, "out_refund_no", refund.out_refund_no.as_str())?;
        fields::fee("total_fee", refund.total_fee, 1)?;
        put(&mut p, "total_fee", refund.total_fee.to_string())?;
        if !(1..=refund.total_fee).contains(&refund.refund_fee) {
            return Err(Error::field(
                "refund_fee",
                Rule::OutOfRange {
                    min: 1,
                    max: refund.total_fee,
                },
            ));
        }
        put(&mut p, "refund_fee", refund.refund_fee.to_string())?;
        put_opt(
            &mut p,
            "refund_fee_type",
            refund.refund_fee_type.as_deref(),
            fields::currency,
        )?;
        put_opt(
            &mut p,
            "refund_desc",
            refund.refund_desc.as_deref(),
            |n, v| fields::text(n, v, 80),
        )?;
        put_opt(
            &mut p,
            "refund_account",
            refund.refund_account.as_deref(),
            |n, v| fields::one_of(n, v, REFUND_ACCOUNTS),
        )?;
        put_opt(
            &mut p,
            "notify_url",
            refund.notify_url.as_deref(),
            fields::notify_url,
        )?;
        self.finish(Endpoint::Refund, p, nonce)
    }

    /// `pay/refundquery`; `offset` pages through more than 10 refunds.
    pub fn refund_query(
        &self,
        refund: &RefundRef,
        offset: Option<u32>,
        nonce: &str,
    ) -> Result<SignedRequest> {
        let mut p = Params::new();
        match refund {
            RefundRef::RefundId(v) => {
                fields::wechat_id("refund_id", v)?;
                put(&mut p, "refund_id", v.as_str())?;
            }
            RefundRef::OutRefundNo(v) => {
                fields::out_refund_no(v)?;
                put(&mut p, "out_refund_no", v.as_str())?;
            }
            RefundRef::TransactionId(v) => {
                fields::wechat_id("transaction_id", v)?;
                put(&mut p, "transaction_id", v.as_str())?;
            }
            RefundRef::OutTradeNo(v) => {
                fields::out_trade_no(v)?;
                put(&mut p, "out_trade_no", v.as_str())?;
            }
        }
        if let Some(offset) = offset {
            put(&mut p, "offset", offset.to_string())?;
        }
        self.finish(Endpoint::RefundQuery, p, nonce)
    }

    /// `pay/downloadbill`.
    pub fn download_bill(&self, bill: &BillRequest, nonce: &str) -> Result<SignedRequest> {
        let mut p = Params::new();
        fields::date8("bill_date", &bill.bill_date)?;
        put(&mut p, "bill_date", bill.bill_date.as_str())?;
        fields::one_of("bill_type", &bill.bill_type, BILL_TYPES)?;
        put(&mut p, "bill_type", bill.bill_type.as_str())?;
        if bill.gzip {
            put(&mut p, "tar_type", "GZIP")?;
        }
        self.finish(Endpoint::DownloadBill, p, nonce)
    }

    /// `pay/micropay`.
    pub fn micropay(&self, pay: &MicropayRequest, nonce: &str) -> Result<SignedRequest> {
        let mut p = Params::new();
        body_text("body", &pay.body)?;
        put(&mut p, "body", pay.body.as_str())?;
        fields::out_trade_no(&pay.out_trade_no)?;
        put(&mut p, "out_trade_no", pay.out_trade_no.as_str())?;
        fields::fee("total_fee", pay.total_fee, 1)?;
        put(&mut p, "total_fee", pay.total_fee.to_string())?;
        fields::ip("spbill_create_ip", &pay.spbill_create_ip)?;
        put(&mut p, "spbill_create_ip", pay.spbill_create_ip.as_str())?;
        check_auth_code(&pay.auth_code)?;
        put(&mut p, "auth_code", pay.auth_code.as_str())?;
        put_opt(&mut p, "device_info", pay.device_info.as_deref(), |n, v| {
            fields::id(n, v, 32)
        })?;
        put_opt(&mut p, "attach", pay.attach.as_deref(), body_text)?;
        put_opt(
            &mut p,
            "fee_type",
            pay.fee_type.as_deref(),
            fields::currency,
        )?;
        put_opt(&mut p, "goods_tag", pay.goods_tag.as_deref(), |n, v| {
            fields::id(n, v, 32)
        })?;
        put_opt(&mut p, "limit_pay", pay.limit_pay.as_deref(), limit_pay)?;
        put_opt(
            &mut p,
            "time_start",
            pay.time_start.as_deref(),
            fields::datetime14,
        )?;
        put_opt(
            &mut p,
            "time_expire",
            pay.time_expire.as_deref(),
            fields::datetime14,
        )?;
        check_expiry_order(pay.time_start.as_deref(), pay.time_expire.as_deref())?;
        self.finish(Endpoint::Micropay, p, nonce)
    }

    /// `secapi/pay/reverse`.
    pub fn reverse(&self, order: &OrderRef, nonce: &str) -> Result<SignedRequest> {
        self.finish(Endpoint::Reverse, order_ref_params(order)?, nonce)
    }

    /// `sandboxnew/pay/getsignkey`: `mch_id` and `nonce_str`, MD5 with this
    /// merchant's (production) key, whatever its configured algorithm.
    pub fn get_sign_key(&self, nonce: &str) -> Result<SignedRequest> {
        fields::nonce(nonce)?;
        let mut p = Params::new();
        put(&mut p, "mch_id", self.config.mch_id.as_str())?;
        put(&mut p, "nonce_str", nonce)?;
        self.seal(
            String::from(Endpoint::GetSignKey.path()),
            false,
            p,
            SignType::Md5,
        )
    }
}

fn order_ref_params(order: &OrderRef) -> Result<Params> {
    let mut p = Params::new();
    match order {
        OrderRef::TransactionId(v) => {
            fields::wechat_id("transaction_id", v)?;
            put(&mut p, "transaction_id", v.as_str())?;
        }
        OrderRef::OutTradeNo(v) => {
            fields::out_trade_no(v)?;
            put(&mut p, "out_trade_no", v.as_str())?;
        }
    }
    Ok(p)
}

/// 18 digits starting with 10..=15.
fn check_auth_code(code: &str) -> Result<()> {
    let digits = code.len() == 18 && code.bytes().all(|b| b.is_ascii_digit());
    let prefix_ok = matches!(code.get(..2), Some("10" | "11" | "12" | "13" | "14" | "15"));
    if digits && prefix_ok {
        Ok(())
    } else {
        Err(Error::field(
            "auth_code",
            Rule::Format("18 digits starting with 10 to 15"),
        ))
    }
}

/// `time_expire` must come after `time_start` (both `yyyyMMddHHmmss`, so
/// string order is time order).
fn check_expiry_order(start: Option<&str>, expire: Option<&str>) -> Result<()> {
    match (start, expire) {
        (Some(s), Some(e)) if e <= s => Err(Error::field(
            "time_expire",
            Rule::Format("a time after time_start"),
        )),
        _ => Ok(()),
    }
}
