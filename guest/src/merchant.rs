//! The merchant: configuration plus the key, the only holder of a secret.
//!
//! Every operation that needs the key is a method here; the key itself is
//! private to [`crate::sign`] and no method returns it. Dropping a
//! `Merchant` wipes the key.

use alloc::string::String;

use crate::error::{Error, Mismatch, Result, Rule};
use crate::fields;
use crate::packed;
use crate::params::{Params, non_empty};
use crate::sign::{self, ApiKey, SignType};

/// What a merchant is built from.
#[derive(Debug)]
pub struct MerchantConfig {
    /// `appid`.
    pub appid: String,
    /// `mch_id`.
    pub mch_id: String,
    /// The APIv2 key (or the sandbox key).
    pub api_key: ApiKey,
    /// The algorithm for requests, expected on replies and notifications.
    pub sign_type: SignType,
    /// Service-provider mode: `sub_appid`.
    pub sub_appid: Option<String>,
    /// Service-provider mode: `sub_mch_id`.
    pub sub_mch_id: Option<String>,
    /// Sandbox (`/sandboxnew/`), MD5 only.
    pub sandbox: bool,
}

/// A configured merchant.
#[derive(Debug)]
pub struct Merchant {
    pub(crate) config: MerchantConfig,
}

impl Merchant {
    /// Checks the configuration and takes the key.
    pub fn new(config: MerchantConfig) -> Result<Self> {
        fields::id("appid", &config.appid, 32)?;
        fields::id("mch_id", &config.mch_id, 32)?;
        if let Some(v) = &config.sub_appid {
            fields::id("sub_appid", v, 32)?;
        }
        if let Some(v) = &config.sub_mch_id {
            fields::id("sub_mch_id", v, 32)?;
        }
        if config.sandbox && config.sign_type != SignType::Md5 {
            return Err(Error::field(
                "sign_type",
                Rule::ForbiddenWhen(String::from("sandbox merchants sign with MD5 only")),
            ));
        }
        Ok(Self { config })
    }

    /// `appid`.
    pub fn appid(&self) -> &str {
        &self.config.appid
    }

    /// `mch_id`.
    pub fn mch_id(&self) -> &str {
        &self.config.mch_id
    }

    /// The configured algorithm.
    pub fn sign_type(&self) -> SignType {
        self.config.sign_type
    }

    /// Whether this is a sandbox merchant.
    pub fn is_sandbox(&self) -> bool {
        self.config.sandbox
    }

    /// Signs `params` as given (its `sign` field is ignored).
    pub fn sign(&self, params: &Params, sign_type: SignType) -> String {
        sign::sign(params, sign_type, &self.config.api_key)
    }

    /// Signs packed fields as given (see [`crate::packed`]).
    pub fn sign_packed(&self, packed: &str, sign_type: SignType) -> Result<String> {
        packed::sign_packed(packed, sign_type, &self.config.api_key)
    }

    /// Verifies the `sign` field of `params` with `sign_type`.
    pub fn verify(&self, params: &Params, sign_type: SignType) -> Result<()> {
        sign::verify(params, sign_type, &self.config.api_key)
    }

    pub(crate) fn key(&self) -> &ApiKey {
        &self.config.api_key
    }

    /// Checks the ids of a notification: `appid`, `mch_id` and, when
    /// configured, `sub_mch_id` must be present and this merchant's;
    /// `sub_appid` must match when present (WeChat echoes it only when it
    /// was sent).
    pub fn check_identity(&self, params: &Params) -> Result<()> {
        self.check_ids(params, &["appid", "mch_id", "sub_mch_id"])
    }

    /// Checks each id the message carries against this merchant; the ids in
    /// `required` must be present (when this merchant has them at all).
    pub(crate) fn check_ids(&self, params: &Params, required: &[&str]) -> Result<()> {
        let c = &self.config;
        let ids = [
            ("appid", Some(c.appid.as_str())),
            ("mch_id", Some(c.mch_id.as_str())),
            ("sub_appid", c.sub_appid.as_deref()),
            ("sub_mch_id", c.sub_mch_id.as_deref()),
        ];
        for (field, expected) in ids {
            let Some(expected) = expected else { continue };
            match non_empty(params, field) {
                Some(found) if found == expected => {}
                None if !required.contains(&field) => {}
                found => {
                    return Err(Error::WrongMerchant(Mismatch {
                        field: field.into(),
                        expected: expected.into(),
                        found: found.unwrap_or_default().into(),
                    }));
                }
            }
        }
        Ok(())
    }
}
