//! The component glue: `wit/signer.wit` on one side, the pure modules on
//! the other. Nothing here decides anything; it only converts types.

use alloc::string::String;
use alloc::vec::Vec;

use crate::error as core_err;
use crate::{explain, merchant, notify, order, params, refund_notify, request, sign, xml};

wit_bindgen::generate!({
    world: "signer",
    path: "../wit",
});

use exports::wxpay::signer::keyless as k;
use exports::wxpay::signer::merchant_api as m;
use exports::wxpay::signer::types as t;

struct Component;

type Pairs = Vec<(String, String)>;

fn to_params(pairs: Pairs) -> Result<params::Params, t::Error> {
    params::from_pairs(pairs).map_err(Into::into)
}

impl From<core_err::Error> for t::Error {
    fn from(e: core_err::Error) -> Self {
        use core_err::Error as E;
        match e {
            E::InvalidField(f) => Self::InvalidField(t::FieldError {
                field: f.field,
                rule: f.rule.into(),
            }),
            E::DuplicateField(name) => Self::DuplicateField(name),
            E::XmlRejected(x) => Self::XmlRejected(t::XmlError {
                reason: x.reason.into(),
                detail: x.detail,
            }),
            E::SignatureMissing => Self::SignatureMissing,
            E::SignatureMismatch(st) => Self::SignatureMismatch(st.into()),
            E::SignTypeMismatch(m) => Self::SignTypeMismatch(m.into()),
            E::WrongMerchant(m) => Self::WrongMerchant(m.into()),
            E::OrderMismatch(m) => Self::OrderMismatch(m.into()),
            E::AmountMismatch(m) => Self::AmountMismatch(m.into()),
            E::ReturnFailed(msg) => Self::ReturnFailed(msg),
            E::Wechat(w) => Self::Wechat(t::WechatError {
                code: w.code,
                description: w.description,
                retryable: w.retryable,
                hint: w.hint,
            }),
            E::DecryptFailed(r) => Self::DecryptFailed(r.into()),
        }
    }
}

impl From<core_err::Rule> for t::Rule {
    fn from(rule: core_err::Rule) -> Self {
        use core_err::Rule as R;
        match rule {
            R::Required => Self::Required,
            R::RequiredWhen(c) => Self::RequiredWhen(c),
            R::ForbiddenWhen(c) => Self::ForbiddenWhen(c),
            R::Empty => Self::Empty,
            R::TooLong(n) => Self::TooLong(n),
            R::TooShort(n) => Self::TooShort(n),
            R::Charset(s) => Self::Charset(s.into()),
            R::Format(s) => Self::Format(s.into()),
            R::OutOfRange { min, max } => Self::OutOfRange(t::Range { min, max }),
            R::OneOf(values) => Self::OneOf(core_err::Rule::one_of_values(values)),
            R::ControlCharacter => Self::ControlCharacter,
            R::SurroundingWhitespace => Self::SurroundingWhitespace,
            R::Unknown => Self::Unknown,
            R::Duplicate => Self::Duplicate,
            R::Overflow => Self::Overflow,
        }
    }
}

impl From<core_err::XmlReason> for t::XmlReason {
    fn from(r: core_err::XmlReason) -> Self {
        use core_err::XmlReason as X;
        match r {
            X::TooLarge => Self::TooLarge,
            X::Empty => Self::Empty,
            X::NotUtf8 => Self::NotUtf8,
            X::Doctype => Self::Doctype,
            X::Entity => Self::Entity,
            X::ProcessingInstruction => Self::ProcessingInstruction,
            X::Comment => Self::Comment,
            X::Nesting => Self::Nesting,
            X::WrongRoot => Self::WrongRoot,
            X::OutsideRoot => Self::OutsideRoot,
            X::Malformed => Self::Malformed,
            X::Attribute => Self::Attribute,
            X::Encoding => Self::Encoding,
        }
    }
}

impl From<core_err::DecryptReason> for t::DecryptReason {
    fn from(r: core_err::DecryptReason) -> Self {
        use core_err::DecryptReason as D;
        match r {
            D::Missing => Self::Missing,
            D::Base64 => Self::Base64,
            D::BlockLength => Self::BlockLength,
            D::Padding => Self::Padding,
            D::NotUtf8 => Self::NotUtf8,
        }
    }
}

impl From<core_err::Mismatch> for t::Mismatch {
    fn from(m: core_err::Mismatch) -> Self {
        Self {
            field: m.field,
            expected: m.expected,
            found: m.found,
        }
    }
}

impl From<sign::SignType> for t::SignType {
    fn from(s: sign::SignType) -> Self {
        match s {
            sign::SignType::Md5 => Self::Md5,
            sign::SignType::HmacSha256 => Self::HmacSha256,
        }
    }
}

impl From<t::SignType> for sign::SignType {
    fn from(s: t::SignType) -> Self {
        match s {
            t::SignType::Md5 => Self::Md5,
            t::SignType::HmacSha256 => Self::HmacSha256,
        }
    }
}

impl k::Guest for Component {
    fn canonicalize(params: Pairs) -> Result<String, t::Error> {
        Ok(crate::canonical::canonicalize(&to_params(params)?))
    }

    fn parse_xml(body: Vec<u8>, max_bytes: Option<u32>) -> Result<Pairs, t::Error> {
        Ok(params::into_pairs(xml::parse_with(
            &body,
            read_options(max_bytes),
        )?))
    }

    fn read_field(
        body: Vec<u8>,
        name: String,
        max_bytes: Option<u32>,
    ) -> Result<Option<String>, t::Error> {
        Ok(xml::read_field(&body, &name, read_options(max_bytes))?)
    }

    fn write_xml(params: Pairs) -> Result<String, t::Error> {
        Ok(xml::write(&to_params(params)?)?)
    }

    fn default_policy() -> k::Policy {
        policy_to_wit(order::Policy::default())
    }

    fn validate_order(
        intent: k::OrderIntent,
        catalog: Vec<k::Product>,
        policy: k::Policy,
    ) -> Result<k::ValidatedOrder, t::Error> {
        let intent = order::OrderIntent {
            product_id: intent.product_id,
            quantity: intent.quantity,
            trade_type: intent.trade_type,
            payer_openid: intent.payer_openid,
            client_ip: intent.client_ip,
            idempotency_key: intent.idempotency_key,
            note: intent.note,
            scene_info: intent.scene_info,
        };
        let catalog: Vec<order::Product> = catalog
            .into_iter()
            .map(|p| order::Product {
                product_id: p.product_id,
                name: p.name,
                unit_price_fen: p.unit_price_fen,
                max_quantity: p.max_quantity,
            })
            .collect();
        let policy = order::Policy {
            min_order_fen: policy.min_order_fen,
            max_order_fen: policy.max_order_fen,
            refund_window_days: policy.refund_window_days,
            fee_rate_bps: policy.fee_rate_bps,
            order_expiry_minutes: policy.order_expiry_minutes,
            max_note_bytes: policy.max_note_bytes,
        };
        let o = order::validate(&intent, &catalog, &policy)?;
        Ok(k::ValidatedOrder {
            out_trade_no: o.out_trade_no,
            body: o.body,
            total_fee: o.total_fee,
            trade_type: o.trade_type,
            product_id: o.product_id,
            quantity: o.quantity,
            openid: o.openid,
            spbill_create_ip: o.spbill_create_ip,
            attach: o.attach,
            scene_info: o.scene_info,
            fee_estimate_fen: o.fee_estimate_fen,
            expiry_minutes: o.expiry_minutes,
            refund_window_days: o.refund_window_days,
        })
    }

    fn estimate_fee(amount_fen: u64, rate_bps: u32) -> Result<k::FeeEstimate, t::Error> {
        let e = order::estimate_fee(amount_fen, rate_bps)?;
        Ok(k::FeeEstimate {
            fee_fen: e.fee_fen,
            net_fen: e.net_fen,
        })
    }

    fn explain_signature(
        params: Pairs,
        expected: t::SignType,
    ) -> Result<k::SignatureExplanation, t::Error> {
        let e = explain::explain(&to_params(params)?, expected.into());
        Ok(k::SignatureExplanation {
            redacted_string_to_sign: e.redacted_string_to_sign,
            sign_looks_like: e.sign_looks_like.map(Into::into),
            likely_causes: e.likely_causes,
        })
    }

    fn notification_ack() -> String {
        String::from(notify::ACK)
    }

    fn notification_nack(reason: String) -> String {
        notify::nack(&reason)
    }
}

fn policy_to_wit(p: order::Policy) -> k::Policy {
    k::Policy {
        min_order_fen: p.min_order_fen,
        max_order_fen: p.max_order_fen,
        refund_window_days: p.refund_window_days,
        fee_rate_bps: p.fee_rate_bps,
        order_expiry_minutes: p.order_expiry_minutes,
        max_note_bytes: p.max_note_bytes,
    }
}

/// The resource behind `merchant`.
struct MerchantResource(merchant::Merchant);

impl m::Guest for Component {
    type Merchant = MerchantResource;
}

/// How `parse-xml` and `read-field` read: the default root, and the
/// caller's cap or the default one.
fn read_options(max_bytes: Option<u32>) -> xml::ReadOptions<'static> {
    xml::ReadOptions {
        max_bytes: max_bytes.map_or(xml::DEFAULT_MAX_BYTES, |n| n as usize),
        ..Default::default()
    }
}

fn core_expected(e: m::ExpectedOrder) -> notify::ExpectedOrder {
    notify::ExpectedOrder {
        out_trade_no: e.out_trade_no,
        total_fee: e.total_fee,
        fee_type: e.fee_type,
        sign_type: e.sign_type.map(Into::into),
    }
}

/// A notice handed back by the caller; `fields` is not part of the WIT
/// notice, and nothing that checks a notice reads it.
fn core_notice(n: m::PaymentNotice) -> notify::PaymentNotice {
    notify::PaymentNotice {
        out_trade_no: n.out_trade_no,
        transaction_id: n.transaction_id,
        total_fee: n.total_fee,
        fee_type: n.fee_type,
        paid: n.paid,
        err_code: n.err_code,
        openid: n.openid,
        trade_type: n.trade_type,
        bank_type: n.bank_type,
        time_end: n.time_end,
        attach: n.attach,
        cash_fee: n.cash_fee,
        fields: params::Params::new(),
    }
}

fn core_expected_refund(e: m::ExpectedRefund) -> refund_notify::ExpectedRefund {
    refund_notify::ExpectedRefund {
        out_trade_no: e.out_trade_no,
        out_refund_no: e.out_refund_no,
        refund_fee: e.refund_fee,
    }
}

/// A refund notice handed back by the caller; like [`core_notice`], its
/// `fields` are left out, since nothing that checks a notice reads them.
fn core_refund_notice(n: m::RefundNotice) -> refund_notify::RefundNotice {
    refund_notify::RefundNotice {
        out_trade_no: n.out_trade_no,
        transaction_id: n.transaction_id,
        out_refund_no: n.out_refund_no,
        refund_id: n.refund_id,
        total_fee: n.total_fee,
        refund_fee: n.refund_fee,
        refund_status: n.refund_status,
        success_time: n.success_time,
        settlement_refund_fee: n.settlement_refund_fee,
        fields: params::Params::new(),
    }
}

fn signed(r: request::SignedRequest) -> m::SignedRequest {
    m::SignedRequest {
        path: r.path,
        body: r.body,
        sign_type: r.sign_type.into(),
        needs_client_cert: r.needs_client_cert,
    }
}

fn order_ref(r: m::OrderRef) -> request::OrderRef {
    match r {
        m::OrderRef::TransactionId(v) => request::OrderRef::TransactionId(v),
        m::OrderRef::OutTradeNo(v) => request::OrderRef::OutTradeNo(v),
    }
}

impl m::GuestMerchant for MerchantResource {
    fn create(config: t::MerchantConfig) -> Result<m::Merchant, t::Error> {
        let api_key = sign::ApiKey::new(config.api_key)?;
        let inner = merchant::Merchant::new(merchant::MerchantConfig {
            appid: config.appid,
            mch_id: config.mch_id,
            api_key,
            sign_type: config.sign_type.into(),
            sub_appid: config.sub_appid,
            sub_mch_id: config.sub_mch_id,
            sandbox: config.sandbox,
        })?;
        Ok(m::Merchant::new(Self(inner)))
    }

    fn identity(&self) -> (String, String) {
        (String::from(self.0.appid()), String::from(self.0.mch_id()))
    }

    fn sign_params(
        &self,
        params: Pairs,
        path: String,
        nonce: String,
    ) -> Result<m::SignedRequest, t::Error> {
        Ok(signed(self.0.sign_params(
            to_params(params)?,
            &path,
            &nonce,
        )?))
    }

    fn sign(&self, params: Pairs, sign_type: Option<t::SignType>) -> Result<String, t::Error> {
        let sign_type = sign_type.map_or(self.0.sign_type(), Into::into);
        Ok(self.0.sign(&to_params(params)?, sign_type))
    }

    fn sign_packed(
        &self,
        fields: String,
        sign_type: Option<t::SignType>,
    ) -> Result<String, t::Error> {
        let sign_type = sign_type.map_or(self.0.sign_type(), Into::into);
        Ok(self.0.sign_packed(&fields, sign_type)?)
    }

    fn unified_order(
        &self,
        o: m::UnifiedOrder,
        nonce: String,
    ) -> Result<m::SignedRequest, t::Error> {
        let order = request::UnifiedOrder {
            body: o.body,
            out_trade_no: o.out_trade_no,
            total_fee: o.total_fee,
            spbill_create_ip: o.spbill_create_ip,
            notify_url: o.notify_url,
            trade_type: o.trade_type,
            device_info: o.device_info,
            detail: o.detail,
            attach: o.attach,
            fee_type: o.fee_type,
            time_start: o.time_start,
            time_expire: o.time_expire,
            goods_tag: o.goods_tag,
            product_id: o.product_id,
            limit_pay: o.limit_pay,
            openid: o.openid,
            sub_openid: o.sub_openid,
            receipt: o.receipt,
            scene_info: o.scene_info,
            profit_sharing: o.profit_sharing,
        };
        Ok(signed(self.0.unified_order(&order, &nonce)?))
    }

    fn order_query(&self, order: m::OrderRef, nonce: String) -> Result<m::SignedRequest, t::Error> {
        Ok(signed(self.0.order_query(&order_ref(order), &nonce)?))
    }

    fn close_order(
        &self,
        out_trade_no: String,
        nonce: String,
    ) -> Result<m::SignedRequest, t::Error> {
        Ok(signed(self.0.close_order(&out_trade_no, &nonce)?))
    }

    fn refund(&self, r: m::RefundRequest, nonce: String) -> Result<m::SignedRequest, t::Error> {
        let refund = request::RefundRequest {
            order: order_ref(r.order),
            out_refund_no: r.out_refund_no,
            total_fee: r.total_fee,
            refund_fee: r.refund_fee,
            refund_fee_type: r.refund_fee_type,
            refund_desc: r.refund_desc,
            refund_account: r.refund_account,
            notify_url: r.notify_url,
        };
        Ok(signed(self.0.refund(&refund, &nonce)?))
    }

    fn refund_query(
        &self,
        r: m::RefundRef,
        offset: Option<u32>,
        nonce: String,
    ) -> Result<m::SignedRequest, t::Error> {
        let refund = match r {
            m::RefundRef::RefundId(v) => request::RefundRef::RefundId(v),
            m::RefundRef::OutRefundNo(v) => request::RefundRef::OutRefundNo(v),
            m::RefundRef::TransactionId(v) => request::RefundRef::TransactionId(v),
            m::RefundRef::OutTradeNo(v) => request::RefundRef::OutTradeNo(v),
        };
        Ok(signed(self.0.refund_query(&refund, offset, &nonce)?))
    }

    fn download_bill(
        &self,
        b: m::BillRequest,
        nonce: String,
    ) -> Result<m::SignedRequest, t::Error> {
        let bill = request::BillRequest {
            bill_date: b.bill_date,
            bill_type: b.bill_type,
            gzip: b.gzip,
        };
        Ok(signed(self.0.download_bill(&bill, &nonce)?))
    }

    fn micropay(&self, p: m::MicropayRequest, nonce: String) -> Result<m::SignedRequest, t::Error> {
        let pay = request::MicropayRequest {
            body: p.body,
            out_trade_no: p.out_trade_no,
            total_fee: p.total_fee,
            spbill_create_ip: p.spbill_create_ip,
            auth_code: p.auth_code,
            device_info: p.device_info,
            attach: p.attach,
            fee_type: p.fee_type,
            goods_tag: p.goods_tag,
            limit_pay: p.limit_pay,
            time_start: p.time_start,
            time_expire: p.time_expire,
        };
        Ok(signed(self.0.micropay(&pay, &nonce)?))
    }

    fn reverse(&self, order: m::OrderRef, nonce: String) -> Result<m::SignedRequest, t::Error> {
        Ok(signed(self.0.reverse(&order_ref(order), &nonce)?))
    }

    fn get_sign_key(&self, nonce: String) -> Result<m::SignedRequest, t::Error> {
        Ok(signed(self.0.get_sign_key(&nonce)?))
    }

    fn verify_response(
        &self,
        body: Vec<u8>,
        request_sign_type: t::SignType,
    ) -> Result<Pairs, t::Error> {
        Ok(params::into_pairs(
            self.0.verify_response(&body, request_sign_type.into())?,
        ))
    }

    fn check_bill(&self, body: Vec<u8>) -> Result<String, t::Error> {
        Ok(self.0.check_bill(&body)?)
    }

    fn verify_payment_notification(
        &self,
        body: Vec<u8>,
        expected: Option<m::ExpectedOrder>,
    ) -> Result<m::PaymentNotice, t::Error> {
        let expected = expected.map(core_expected);
        let n = self
            .0
            .verify_payment_notification(&body, expected.as_ref())?;
        Ok(m::PaymentNotice {
            out_trade_no: n.out_trade_no,
            transaction_id: n.transaction_id,
            total_fee: n.total_fee,
            fee_type: n.fee_type,
            paid: n.paid,
            err_code: n.err_code,
            openid: n.openid,
            trade_type: n.trade_type,
            bank_type: n.bank_type,
            time_end: n.time_end,
            attach: n.attach,
            cash_fee: n.cash_fee,
        })
    }

    fn check_payment_notice(
        &self,
        notice: m::PaymentNotice,
        expected: m::ExpectedOrder,
    ) -> Result<(), t::Error> {
        Ok(self
            .0
            .check_payment_notice(&core_notice(notice), &core_expected(expected))?)
    }

    fn verify_refund_notification(
        &self,
        body: Vec<u8>,
        expected: Option<m::ExpectedRefund>,
    ) -> Result<m::RefundNotice, t::Error> {
        let expected = expected.map(core_expected_refund);
        let n = self
            .0
            .verify_refund_notification(&body, expected.as_ref())?;
        Ok(m::RefundNotice {
            out_trade_no: n.out_trade_no,
            transaction_id: n.transaction_id,
            out_refund_no: n.out_refund_no,
            refund_id: n.refund_id,
            total_fee: n.total_fee,
            refund_fee: n.refund_fee,
            refund_status: n.refund_status,
            success_time: n.success_time,
            settlement_refund_fee: n.settlement_refund_fee,
            fields: params::into_pairs(n.fields),
        })
    }

    fn check_refund_notice(
        &self,
        notice: m::RefundNotice,
        expected: m::ExpectedRefund,
    ) -> Result<(), t::Error> {
        Ok(self
            .0
            .check_refund_notice(&core_refund_notice(notice), &core_expected_refund(expected))?)
    }

    fn jsapi_params(
        &self,
        prepay_id: String,
        nonce: String,
        timestamp: u64,
    ) -> Result<Pairs, t::Error> {
        Ok(self.0.jsapi_params(&prepay_id, &nonce, timestamp)?)
    }

    fn app_params(
        &self,
        prepay_id: String,
        nonce: String,
        timestamp: u64,
    ) -> Result<Pairs, t::Error> {
        Ok(self.0.app_params(&prepay_id, &nonce, timestamp)?)
    }

    fn explain_signature(&self, params: Pairs) -> Result<Vec<String>, t::Error> {
        Ok(self.0.diagnose_signature(&to_params(params)?)?)
    }
}

export!(Component);
