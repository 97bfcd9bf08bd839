//! A typed, bounded handle on one component instance.
//!
//! Every call grants the store its budget first (a fresh deadline or
//! fuel), so each call — not each instance — gets the whole budget. A
//! trap (budget or memory exhausted) poisons the
//! instance: it answers [`Error::Trap`] from then on, and the caller makes
//! a new one.

// The generated bindings take `&Vec` for WIT lists of tuples.
#![allow(clippy::ptr_arg)]

use wasmtime::Store;
use wasmtime::component::ResourceAny;
use zeroize::Zeroize;

use super::bindings::keyless::{
    FeeEstimate, OrderIntent, Policy, Product, SignatureExplanation, ValidatedOrder,
};
use super::bindings::merchant_api::{
    BillRequest, ExpectedOrder, ExpectedRefund, MicropayRequest, OrderRef, PaymentNotice,
    RefundNotice, RefundRef, RefundRequest, SignedRequest, UnifiedOrder,
};
use super::bindings::types::{MerchantConfig, SignType};
use super::bindings::{Signer, types};
use super::engine::{CallBudget, StoreState};
use crate::error::Error;
use crate::key::ApiKey;

/// Flat params, as the WIT `params` type.
pub type Pairs = Vec<(String, String)>;

/// The fields a signature covers: every one but `sign`.
pub fn without_sign(pairs: &Pairs) -> Pairs {
    pairs
        .iter()
        .filter(|(name, _)| name != wxpay_guest::canonical::SIGN_FIELD)
        .cloned()
        .collect()
}

/// One component instance.
pub struct SignerInstance {
    store: Store<StoreState>,
    bindings: Signer,
    budget: CallBudget,
    poisoned: bool,
}

/// A merchant living inside a [`SignerInstance`]; it holds the key there.
/// Release it with [`SignerInstance::drop_merchant`], which zeroizes the key.
#[derive(Debug)]
pub struct MerchantHandle(ResourceAny);

/// What the host knows of a merchant besides the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantSettings {
    /// `appid`.
    pub appid: String,
    /// `mch_id`.
    pub mch_id: String,
    /// Algorithm for requests and expected on replies.
    pub sign_type: SignType,
    /// Service-provider `sub_appid`.
    pub sub_appid: Option<String>,
    /// Service-provider `sub_mch_id`.
    pub sub_mch_id: Option<String>,
    /// Sandbox merchant (`/sandboxnew/`).
    pub sandbox: bool,
}

type Call<R> = wasmtime::Result<Result<R, types::Error>>;

impl SignerInstance {
    pub(crate) fn new(store: Store<StoreState>, bindings: Signer, budget: CallBudget) -> Self {
        Self {
            store,
            bindings,
            budget,
            poisoned: false,
        }
    }

    /// Runs one guest call with a fresh budget, mapping traps and
    /// guest errors into [`Error`].
    fn call<R>(
        &mut self,
        f: impl FnOnce(&Signer, &mut Store<StoreState>) -> Call<R>,
    ) -> Result<R, Error> {
        self.plain(f)?.map_err(Error::Guest)
    }

    /// Like [`Self::call`] for functions that cannot fail in the guest.
    fn plain<R>(
        &mut self,
        f: impl FnOnce(&Signer, &mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R, Error> {
        if self.poisoned {
            return Err(Error::Trap(
                "this instance trapped earlier; create a new one".into(),
            ));
        }
        self.budget.grant(&mut self.store)?;
        f(&self.bindings, &mut self.store).map_err(|e| {
            self.poisoned = true;
            Error::trap(&e)
        })
    }

    /// `keyless.canonicalize`.
    pub fn canonicalize(&mut self, params: &Pairs) -> Result<String, Error> {
        self.call(|b, s| b.wxpay_signer_keyless().call_canonicalize(s, params))
    }

    /// `keyless.parse-xml`.
    pub fn parse_xml(&mut self, body: &[u8], max_bytes: Option<u32>) -> Result<Pairs, Error> {
        self.call(|b, s| b.wxpay_signer_keyless().call_parse_xml(s, body, max_bytes))
    }

    /// `keyless.read-field`.
    pub fn read_field(
        &mut self,
        body: &[u8],
        name: &str,
        max_bytes: Option<u32>,
    ) -> Result<Option<String>, Error> {
        self.call(|b, s| {
            b.wxpay_signer_keyless()
                .call_read_field(s, body, name, max_bytes)
        })
    }

    /// `keyless.write-xml`.
    pub fn write_xml(&mut self, params: &Pairs) -> Result<String, Error> {
        self.call(|b, s| b.wxpay_signer_keyless().call_write_xml(s, params))
    }

    /// `keyless.default-policy`.
    pub fn default_policy(&mut self) -> Result<Policy, Error> {
        self.plain(|b, s| b.wxpay_signer_keyless().call_default_policy(s))
    }

    /// `keyless.validate-order`.
    pub fn validate_order(
        &mut self,
        intent: &OrderIntent,
        catalog: &[Product],
        policy: Policy,
    ) -> Result<ValidatedOrder, Error> {
        self.call(|b, s| {
            b.wxpay_signer_keyless()
                .call_validate_order(s, intent, catalog, policy)
        })
    }

    /// `keyless.estimate-fee`.
    pub fn estimate_fee(&mut self, amount_fen: u64, rate_bps: u32) -> Result<FeeEstimate, Error> {
        self.call(|b, s| {
            b.wxpay_signer_keyless()
                .call_estimate_fee(s, amount_fen, rate_bps)
        })
    }

    /// `keyless.explain-signature`.
    pub fn explain_signature(
        &mut self,
        params: &Pairs,
        expected: SignType,
    ) -> Result<SignatureExplanation, Error> {
        self.call(|b, s| {
            b.wxpay_signer_keyless()
                .call_explain_signature(s, params, expected)
        })
    }

    /// `keyless.notification-ack`.
    pub fn notification_ack(&mut self) -> Result<String, Error> {
        self.plain(|b, s| b.wxpay_signer_keyless().call_notification_ack(s))
    }

    /// `keyless.notification-nack`.
    pub fn notification_nack(&mut self, reason: &str) -> Result<String, Error> {
        self.plain(|b, s| b.wxpay_signer_keyless().call_notification_nack(s, reason))
    }

    /// Hands the key to the component and returns the merchant. The host's
    /// copy of the key inside the call's argument is zeroized right after.
    pub fn merchant(
        &mut self,
        settings: &MerchantSettings,
        key: &ApiKey,
    ) -> Result<MerchantHandle, Error> {
        let mut config = MerchantConfig {
            appid: settings.appid.clone(),
            mch_id: settings.mch_id.clone(),
            api_key: key.expose().to_owned(),
            sign_type: settings.sign_type,
            sub_appid: settings.sub_appid.clone(),
            sub_mch_id: settings.sub_mch_id.clone(),
            sandbox: settings.sandbox,
        };
        let created = self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_create(s, &config)
        });
        config.api_key.zeroize();
        created.map(MerchantHandle)
    }

    /// Releases a merchant; the component zeroizes its key.
    pub fn drop_merchant(&mut self, merchant: MerchantHandle) -> Result<(), Error> {
        merchant
            .0
            .resource_drop(&mut self.store)
            .map_err(|e| Error::trap(&e))
    }

    /// `merchant.identity`.
    pub fn identity(&mut self, m: &MerchantHandle) -> Result<(String, String), Error> {
        self.plain(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_identity(s, m.0)
        })
    }

    /// `merchant.sign`.
    pub fn sign(
        &mut self,
        m: &MerchantHandle,
        params: &Pairs,
        sign_type: Option<SignType>,
    ) -> Result<String, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_sign(s, m.0, params, sign_type)
        })
    }

    /// `merchant.sign-packed`: `fields` as [`wxpay_guest::packed::pack`] makes them.
    pub fn sign_packed(
        &mut self,
        m: &MerchantHandle,
        fields: &str,
        sign_type: Option<SignType>,
    ) -> Result<String, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_sign_packed(s, m.0, fields, sign_type)
        })
    }

    /// `merchant.sign-params`.
    pub fn sign_params(
        &mut self,
        m: &MerchantHandle,
        params: &Pairs,
        path: &str,
        nonce: &str,
    ) -> Result<SignedRequest, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_sign_params(s, m.0, params, path, nonce)
        })
    }

    /// `merchant.unified-order`.
    pub fn unified_order(
        &mut self,
        m: &MerchantHandle,
        order: &UnifiedOrder,
        nonce: &str,
    ) -> Result<SignedRequest, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_unified_order(s, m.0, order, nonce)
        })
    }

    /// `merchant.order-query`.
    pub fn order_query(
        &mut self,
        m: &MerchantHandle,
        order: &OrderRef,
        nonce: &str,
    ) -> Result<SignedRequest, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_order_query(s, m.0, order, nonce)
        })
    }

    /// `merchant.close-order`.
    pub fn close_order(
        &mut self,
        m: &MerchantHandle,
        out_trade_no: &str,
        nonce: &str,
    ) -> Result<SignedRequest, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_close_order(s, m.0, out_trade_no, nonce)
        })
    }

    /// `merchant.refund`.
    pub fn refund(
        &mut self,
        m: &MerchantHandle,
        refund: &RefundRequest,
        nonce: &str,
    ) -> Result<SignedRequest, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_refund(s, m.0, refund, nonce)
        })
    }

    /// `merchant.refund-query`.
    pub fn refund_query(
        &mut self,
        m: &MerchantHandle,
        refund: &RefundRef,
        offset: Option<u32>,
        nonce: &str,
    ) -> Result<SignedRequest, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_refund_query(s, m.0, refund, offset, nonce)
        })
    }

    /// `merchant.download-bill`.
    pub fn download_bill(
        &mut self,
        m: &MerchantHandle,
        bill: &BillRequest,
        nonce: &str,
    ) -> Result<SignedRequest, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_download_bill(s, m.0, bill, nonce)
        })
    }

    /// `merchant.micropay`.
    pub fn micropay(
        &mut self,
        m: &MerchantHandle,
        pay: &MicropayRequest,
        nonce: &str,
    ) -> Result<SignedRequest, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_micropay(s, m.0, pay, nonce)
        })
    }

    /// `merchant.reverse`.
    pub fn reverse(
        &mut self,
        m: &MerchantHandle,
        order: &OrderRef,
        nonce: &str,
    ) -> Result<SignedRequest, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_reverse(s, m.0, order, nonce)
        })
    }

    /// `merchant.get-sign-key`.
    pub fn get_sign_key(
        &mut self,
        m: &MerchantHandle,
        nonce: &str,
    ) -> Result<SignedRequest, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_get_sign_key(s, m.0, nonce)
        })
    }

    /// `merchant.verify-response`.
    pub fn verify_response(
        &mut self,
        m: &MerchantHandle,
        body: &[u8],
        request_sign_type: SignType,
    ) -> Result<Pairs, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_verify_response(s, m.0, body, request_sign_type)
        })
    }

    /// `merchant.check-bill`.
    pub fn check_bill(&mut self, m: &MerchantHandle, body: &[u8]) -> Result<String, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_check_bill(s, m.0, body)
        })
    }

    /// `merchant.verify-payment-notification`.
    pub fn verify_payment_notification(
        &mut self,
        m: &MerchantHandle,
        body: &[u8],
        expected: Option<&ExpectedOrder>,
    ) -> Result<PaymentNotice, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_verify_payment_notification(s, m.0, body, expected)
        })
    }

    /// `merchant.check-payment-notice`.
    pub fn check_payment_notice(
        &mut self,
        m: &MerchantHandle,
        notice: &PaymentNotice,
        expected: &ExpectedOrder,
    ) -> Result<(), Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_check_payment_notice(s, m.0, notice, expected)
        })
    }

    /// `merchant.verify-refund-notification`.
    pub fn verify_refund_notification(
        &mut self,
        m: &MerchantHandle,
        body: &[u8],
        expected: Option<&ExpectedRefund>,
    ) -> Result<RefundNotice, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_verify_refund_notification(s, m.0, body, expected)
        })
    }

    /// `merchant.check-refund-notice`.
    pub fn check_refund_notice(
        &mut self,
        m: &MerchantHandle,
        notice: &RefundNotice,
        expected: &ExpectedRefund,
    ) -> Result<(), Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_check_refund_notice(s, m.0, notice, expected)
        })
    }

    /// `merchant.jsapi-params`.
    pub fn jsapi_params(
        &mut self,
        m: &MerchantHandle,
        prepay_id: &str,
        nonce: &str,
        timestamp: u64,
    ) -> Result<Pairs, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_jsapi_params(s, m.0, prepay_id, nonce, timestamp)
        })
    }

    /// `merchant.app-params`.
    pub fn app_params(
        &mut self,
        m: &MerchantHandle,
        prepay_id: &str,
        nonce: &str,
        timestamp: u64,
    ) -> Result<Pairs, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_app_params(s, m.0, prepay_id, nonce, timestamp)
        })
    }

    /// `merchant.explain-signature`.
    pub fn diagnose_signature(
        &mut self,
        m: &MerchantHandle,
        params: &Pairs,
    ) -> Result<Vec<String>, Error> {
        self.call(|b, s| {
            b.wxpay_signer_merchant_api()
                .merchant()
                .call_explain_signature(s, m.0, params)
        })
    }
}
