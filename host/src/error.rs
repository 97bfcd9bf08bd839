//! The host's one error type.

use std::fmt;
use std::path::PathBuf;

use crate::sandbox::bindings::types;

/// Every failure of the host.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The component could not be compiled, linked or instantiated.
    #[error("the signing component could not be loaded: {0}")]
    Component(String),
    /// The component imports an interface outside the allowed WASI subset.
    #[error(
        "the component imports `{name}`, which is not allowed: only wasi:io and wasi:cli may be imported"
    )]
    ForbiddenImport {
        /// The import's full name.
        name: String,
    },
    /// The component trapped: its time budget (or fuel) or memory exhausted, or a bug.
    #[error("the signing component stopped: {0}")]
    Trap(String),
    /// The component refused the input with a typed error.
    #[error("{}", describe(.0))]
    Guest(types::Error),
    /// The key file could not be used.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why (never the key).
        reason: String,
    },
    /// The key file may be read by group or others.
    #[error("key file {path} has mode {mode:o}; it must be readable by its owner only (chmod 600)")]
    KeyPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key environment variable is unset or empty.
    #[error("environment variable {var} must hold the API key")]
    KeyEnv {
        /// The variable.
        var: String,
    },
    /// Operator input that cannot be used.
    #[error("{what}: {reason}")]
    Input {
        /// Which input.
        what: String,
        /// Why.
        reason: String,
    },
    /// The durable store failed; nothing was written by the failed step.
    #[cfg(feature = "gateway")]
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A call to WeChat Pay failed after the retries the policy allowed.
    #[cfg(feature = "gateway")]
    #[error("WeChat Pay {path}: {source}")]
    Wechat {
        /// The endpoint's path.
        path: String,
        /// What went wrong.
        source: Box<crate::wechat::CallError>,
    },
    /// No such order or refund is stored.
    #[error("no {what} {id} is stored")]
    NotFound {
        /// `order` or `refund`.
        what: &'static str,
        /// Its number.
        id: String,
    },
    /// The request contradicts what is stored: an idempotency key reused
    /// for a different order, or an order in a state that forbids the step.
    #[error("{what} {id}: {reason}")]
    Conflict {
        /// `order` or `refund`.
        what: &'static str,
        /// Its number.
        id: String,
        /// The rule it breaks.
        reason: String,
    },
    /// An approval above `console.passkey_threshold_fen` was asked for
    /// without a passkey assertion bound to it (the CLI, or a console
    /// session alone).
    #[error(
        "approval {id} is for {amount_fen} fen, above the passkey threshold of {threshold_fen} fen: approve it in the console with a passkey"
    )]
    PasskeyRequired {
        /// The approval's number.
        id: i64,
        /// Its amount.
        amount_fen: u64,
        /// `console.passkey_threshold_fen`.
        threshold_fen: u64,
    },
}

impl Error {
    pub(crate) fn component(e: impl Into<wasmtime::Error>) -> Self {
        Self::Component(format!("{:#}", e.into()))
    }

    pub(crate) fn trap(e: &wasmtime::Error) -> Self {
        Self::Trap(format!("{e:#}"))
    }

    #[cfg(feature = "gateway")]
    pub(crate) fn input(what: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self::Input {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// The guest's typed error, when this is one.
    pub fn guest(&self) -> Option<&types::Error> {
        match self {
            Self::Guest(e) => Some(e),
            _ => None,
        }
    }
}

/// A sentence for a guest error: the field and the rule, never the key.
pub fn describe(e: &types::Error) -> String {
    GuestDisplay(e).to_string()
}

struct GuestDisplay<'a>(&'a types::Error);

impl fmt::Display for GuestDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use types::Error as E;
        match self.0 {
            E::InvalidField(e) => write!(f, "field `{}` {}", e.field, e.rule),
            E::DuplicateField(name) => write!(f, "field `{name}` appears more than once"),
            E::XmlRejected(x) => write!(f, "XML rejected ({:?}): {}", x.reason, x.detail),
            E::SignatureMissing => f.write_str("the message has no `sign` field"),
            E::SignatureMismatch(t) => {
                write!(f, "signature does not match ({})", sign_type_name(*t))
            }
            E::SignTypeMismatch(m) => write!(
                f,
                "sign_type: expected {}, message says {}",
                m.expected, m.found
            ),
            E::WrongMerchant(m) => write!(
                f,
                "`{}` is {:?}, this merchant's is {:?}",
                m.field, m.found, m.expected
            ),
            E::OrderMismatch(m) | E::AmountMismatch(m) => {
                write!(
                    f,
                    "`{}` is {:?}, expected {:?}",
                    m.field, m.found, m.expected
                )
            }
            E::ReturnFailed(msg) => write!(f, "WeChat refused the request: {msg}"),
            E::Wechat(w) => write!(
                f,
                "WeChat error {}: {} ({}{})",
                w.code,
                w.description,
                w.hint,
                if w.retryable { "; retryable" } else { "" }
            ),
            E::DecryptFailed(r) => write!(f, "refund notification could not be decrypted: {r:?}"),
        }
    }
}

impl fmt::Display for types::Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Required => f.write_str("is required"),
            Self::RequiredWhen(c) => write!(f, "is required when {c}"),
            Self::ForbiddenWhen(c) => write!(f, "is not allowed: {c}"),
            Self::Empty => f.write_str("must not be empty"),
            Self::TooLong(n) => write!(f, "must be at most {n} bytes"),
            Self::TooShort(n) => write!(f, "must be at least {n} characters"),
            Self::Charset(set) => write!(f, "may contain only {set}"),
            Self::Format(shape) => write!(f, "must be {shape}"),
            Self::OutOfRange(r) => write!(f, "must be between {} and {}", r.min, r.max),
            Self::OneOf(values) => write!(f, "must be one of {}", values.join(", ")),
            Self::ControlCharacter => f.write_str("must not contain control characters"),
            Self::SurroundingWhitespace => f.write_str("must not start or end with whitespace"),
            Self::Unknown => f.write_str("is unknown"),
            Self::Duplicate => f.write_str("is listed twice"),
            Self::Overflow => f.write_str("overflows"),
        }
    }
}

/// The wire spelling of a sign type.
pub fn sign_type_name(t: types::SignType) -> &'static str {
    match t {
        types::SignType::Md5 => "MD5",
        types::SignType::HmacSha256 => "HMAC-SHA256",
    }
}
