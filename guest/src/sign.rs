//! Signing and verification: MD5 and HMAC-SHA256 over the canonical string.
//!
//! Both algorithms sign `canonical + "&key=" + key`; HMAC-SHA256 also uses
//! the key (as UTF-8 bytes) as the MAC key. The key is fed to the hash in
//! pieces so that no string holding it is ever built, and it lives in a
//! [`Zeroizing`] buffer that is wiped on drop.
//!
//! Which algorithm verifies a message is the caller's decision (the
//! merchant's configuration, or the sign type the order was placed with),
//! never the message's: a message cannot downgrade itself to MD5.

use alloc::string::String;
use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::canonical::{SIGN_FIELD, signed_fields};
use crate::error::{Error, Result, Rule};
use crate::params::{Params, non_empty};

/// The signature algorithm, `sign_type` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignType {
    /// `MD5`, WeChat's default.
    Md5,
    /// `HMAC-SHA256`.
    HmacSha256,
}

impl SignType {
    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::HmacSha256 => "HMAC-SHA256",
        }
    }

    /// Parses the wire spelling, exactly (`MD5` or `HMAC-SHA256`).
    pub fn from_wire(value: &str) -> Option<Self> {
        match value {
            "MD5" => Some(Self::Md5),
            "HMAC-SHA256" => Some(Self::HmacSha256),
            _ => None,
        }
    }

    /// Length of a signature in hex characters.
    pub const fn hex_len(self) -> usize {
        match self {
            Self::Md5 => 32,
            Self::HmacSha256 => 64,
        }
    }

    /// The algorithm a signature's length suggests, if any.
    pub fn guess_from_sign(sign: &str) -> Option<Self> {
        let hex = sign.bytes().all(|b| b.is_ascii_hexdigit());
        match sign.len() {
            32 if hex => Some(Self::Md5),
            64 if hex => Some(Self::HmacSha256),
            _ => None,
        }
    }

    /// The other algorithm.
    pub const fn other(self) -> Self {
        match self {
            Self::Md5 => Self::HmacSha256,
            Self::HmacSha256 => Self::Md5,
        }
    }
}

impl fmt::Display for SignType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The values `sign_type` may take.
pub const SIGN_TYPES: &[&str] = &["MD5", "HMAC-SHA256"];

/// The merchant's APIv2 key. Never printed, wiped on drop.
///
/// The HMAC key schedule (the padded inner and outer blocks) is computed
/// once, when the key is taken, and cloned for every signature instead of
/// being derived again: it is half the work of signing a short message.
/// `hmac`'s `zeroize` feature wipes it, and every clone, on drop.
pub struct ApiKey {
    text: Zeroizing<String>,
    hmac: Hmac<Sha256>,
}

/// Longest key accepted. Real keys are 32 characters.
pub const MAX_KEY_LEN: usize = 128;

impl ApiKey {
    /// Takes a key: 1..=128 printable ASCII characters without spaces. The
    /// error names the field (`api_key`) and the rule, never the value.
    pub fn new(key: String) -> Result<Self> {
        let text = Zeroizing::new(key);
        if text.is_empty() {
            return Err(Error::field("api_key", Rule::Empty));
        }
        if text.len() > MAX_KEY_LEN {
            return Err(Error::field("api_key", Rule::TooLong(MAX_KEY_LEN as u32)));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::field(
                "api_key",
                Rule::Charset("printable ASCII without spaces"),
            ));
        }
        let Ok(hmac) = Hmac::<Sha256>::new_from_slice(text.as_bytes()) else {
            unreachable!("HMAC accepts keys of any length")
        };
        Ok(Self { text, hmac })
    }

    /// Length in bytes (the self-check warns when it is not 32).
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Never true: an empty key is refused by [`ApiKey::new`].
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    pub(crate) fn expose(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Signs `params` (its `sign` field, if any, is ignored).
pub fn sign(params: &Params, sign_type: SignType, key: &ApiKey) -> String {
    sign_fields(signed_fields(params), sign_type, key)
}

/// Signs an explicit sequence of `(name, value)` pairs, already in
/// canonical order and without empty values.
pub fn sign_fields<'a>(
    fields: impl Iterator<Item = (&'a str, &'a str)>,
    sign_type: SignType,
    key: &ApiKey,
) -> String {
    match sign_type {
        SignType::Md5 => {
            let mut md5 = Md5::new();
            feed(&mut |bytes| md5.update(bytes), fields, key);
            upper_hex(&md5.finalize())
        }
        SignType::HmacSha256 => {
            let mut mac = key.hmac.clone();
            feed(&mut |bytes| mac.update(bytes), fields, key);
            upper_hex(&mac.finalize().into_bytes())
        }
    }
}

/// A digest (at most 32 bytes) as upper-case hex, encoded in one buffer
/// rather than a character at a time.
fn upper_hex(digest: &[u8]) -> String {
    let mut buffer = [0u8; 64];
    let Some(out) = buffer.get_mut(..digest.len() * 2) else {
        unreachable!("digests here are at most 32 bytes")
    };
    // `hex::encode_to_slice` only fails on a wrong output length, which is right here.
    if hex::encode_to_slice(digest, out).is_err() {
        unreachable!("n bytes encode to 2n hex characters");
    }
    out.make_ascii_uppercase();
    match core::str::from_utf8(out) {
        Ok(hex) => hex.into(),
        Err(_) => unreachable!("hex digits are ASCII"),
    }
}

/// Feeds `k=v&k=v&key=KEY` to a hash without building the string.
fn feed<'a>(
    update: &mut dyn FnMut(&[u8]),
    fields: impl Iterator<Item = (&'a str, &'a str)>,
    key: &ApiKey,
) {
    let mut first = true;
    for (name, value) in fields {
        if !first {
            update(b"&");
        }
        first = false;
        update(name.as_bytes());
        update(b"=");
        update(value.as_bytes());
    }
    update(if first { b"key=" } else { b"&key=" });
    update(key.expose());
}

/// Checks the `sign` field of `params` with `sign_type`, in constant time.
pub fn verify(params: &Params, sign_type: SignType, key: &ApiKey) -> Result<()> {
    let received = non_empty(params, SIGN_FIELD).ok_or(Error::SignatureMissing)?;
    if signatures_equal(&sign(params, sign_type, key), received) {
        Ok(())
    } else {
        Err(Error::SignatureMismatch(sign_type))
    }
}

/// Constant-time equality of two signatures (time depends only on length).
pub fn signatures_equal(expected: &str, received: &str) -> bool {
    expected.as_bytes().ct_eq(received.as_bytes()).into()
}
