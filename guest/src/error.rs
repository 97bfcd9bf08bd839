//! The one error type of the protocol core.
//!
//! Every failure is structured: a caller (or an LLM agent reading the
//! rendered message) can tell which field broke which rule without parsing
//! prose. No variant ever carries the merchant key; values echoed back are
//! values that came from the caller or from the wire.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::sign::SignType;

/// Every failure of the protocol core.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A field broke a rule; raised before anything is signed.
    InvalidField(FieldError),
    /// A field name appeared twice in a parameter list or an XML body.
    DuplicateField(String),
    /// An XML body was refused by the safe parser.
    XmlRejected(XmlError),
    /// A message that must be signed has no `sign` field.
    SignatureMissing,
    /// The recomputed signature differs from the received `sign`.
    SignatureMismatch(SignType),
    /// The message's `sign_type` differs from the algorithm the merchant
    /// configured or the order recorded.
    SignTypeMismatch(Mismatch),
    /// `appid`, `mch_id`, `sub_appid` or `sub_mch_id` is not this merchant's.
    WrongMerchant(Mismatch),
    /// `out_trade_no`, `fee_type` or `out_refund_no` differs from the expected order.
    OrderMismatch(Mismatch),
    /// `total_fee` or `refund_fee` differs from the expected amount.
    AmountMismatch(Mismatch),
    /// WeChat answered `return_code=FAIL`; the payload is `return_msg`.
    ReturnFailed(String),
    /// WeChat answered `result_code=FAIL` in a verified reply.
    Wechat(WechatError),
    /// A refund notification's `req_info` could not be decrypted.
    DecryptFailed(DecryptReason),
}

/// A refused field and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Wire name (`total_fee`) or intent/catalog/policy field name (`quantity`).
    pub field: String,
    /// The rule that was broken.
    pub rule: Rule,
}

/// The rules a field can break.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Required and absent.
    Required,
    /// Required because of the named condition, e.g. `trade_type=JSAPI`.
    RequiredWhen(String),
    /// Must be absent under the named condition.
    ForbiddenWhen(String),
    /// Empty but must not be.
    Empty,
    /// Longer than this many UTF-8 bytes.
    TooLong(u32),
    /// Shorter than this many characters.
    TooShort(u32),
    /// Holds a character outside the described set.
    Charset(&'static str),
    /// Does not have the described shape.
    Format(&'static str),
    /// A number outside the inclusive range.
    OutOfRange {
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// Not one of the listed values.
    OneOf(&'static [&'static str]),
    /// Holds a control character that XML 1.0 cannot carry.
    ControlCharacter,
    /// Starts or ends with whitespace.
    SurroundingWhitespace,
    /// Names something unknown (e.g. a product not in the catalog).
    Unknown,
    /// Used twice where it must be unique.
    Duplicate,
    /// Checked arithmetic overflowed.
    Overflow,
}

/// A refused XML body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// Which rule of the safe parser refused it.
    pub reason: XmlReason,
    /// A short description (≤ 200 bytes) for logs.
    pub detail: String,
}

/// Why the safe parser refused a body.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlReason {
    /// Larger than the cap.
    TooLarge,
    /// Empty.
    Empty,
    /// Not UTF-8.
    NotUtf8,
    /// Has a document type declaration.
    Doctype,
    /// Has an entity reference other than the predefined ones.
    Entity,
    /// Has a processing instruction.
    ProcessingInstruction,
    /// Has a comment.
    Comment,
    /// Has an element inside a field.
    Nesting,
    /// The root element is not the expected one.
    WrongRoot,
    /// Has content outside the root element.
    OutsideRoot,
    /// Is not well-formed.
    Malformed,
    /// Has attributes.
    Attribute,
    /// Declares an encoding other than UTF-8.
    Encoding,
}

/// Two values that should be equal and are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Wire name of the field.
    pub field: String,
    /// What it must be.
    pub expected: String,
    /// What it is.
    pub found: String,
}

/// A verified business error from WeChat Pay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WechatError {
    /// `err_code`.
    pub code: String,
    /// `err_code_des`.
    pub description: String,
    /// Whether the identical signed request may be sent again.
    pub retryable: bool,
    /// What the operator should do, one line.
    pub hint: String,
}

/// Why `req_info` could not be decrypted.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecryptReason {
    /// `req_info` is absent.
    Missing,
    /// Not standard padded base64.
    Base64,
    /// Empty, or not a whole number of 16-byte blocks.
    BlockLength,
    /// Bad PKCS#7 padding: wrong key or tampered data.
    Padding,
    /// The plaintext is not UTF-8.
    NotUtf8,
}

impl Error {
    /// Shorthand for [`Error::InvalidField`].
    pub fn field(field: impl Into<String>, rule: Rule) -> Self {
        Self::InvalidField(FieldError {
            field: field.into(),
            rule,
        })
    }

    pub(crate) fn xml(reason: XmlReason, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        crate::text::truncate_on_char_boundary(&mut detail, 200);
        Self::XmlRejected(XmlError { reason, detail })
    }

    pub(crate) fn mismatch(
        field: &str,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Mismatch {
        Mismatch {
            field: field.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidField(e) => write!(f, "field `{}`: {}", e.field, e.rule),
            Self::DuplicateField(name) => write!(f, "field `{name}` appears more than once"),
            Self::XmlRejected(e) => write!(f, "XML rejected ({:?}): {}", e.reason, e.detail),
            Self::SignatureMissing => f.write_str("the message has no `sign` field"),
            Self::SignatureMismatch(t) => write!(f, "signature does not match ({t})"),
            Self::SignTypeMismatch(m) => write!(
                f,
                "sign_type: expected {}, message says {}",
                m.expected, m.found
            ),
            Self::WrongMerchant(m) => write!(
                f,
                "`{}` is {:?}, this merchant's is {:?}",
                m.field, m.found, m.expected
            ),
            Self::OrderMismatch(m) | Self::AmountMismatch(m) => {
                write!(
                    f,
                    "`{}` is {:?}, expected {:?}",
                    m.field, m.found, m.expected
                )
            }
            Self::ReturnFailed(msg) => write!(f, "WeChat refused the request: {msg}"),
            Self::Wechat(e) => write!(f, "WeChat error {}: {} ({})", e.code, e.description, e.hint),
            Self::DecryptFailed(r) => {
                write!(f, "refund notification could not be decrypted: {r:?}")
            }
        }
    }
}

impl fmt::Display for Rule {
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
            Self::OutOfRange { min, max } => write!(f, "must be between {min} and {max}"),
            Self::OneOf(values) => write!(f, "must be one of {}", values.join(", ")),
            Self::ControlCharacter => f.write_str("must not contain control characters"),
            Self::SurroundingWhitespace => f.write_str("must not start or end with whitespace"),
            Self::Unknown => f.write_str("is unknown"),
            Self::Duplicate => f.write_str("is listed twice"),
            Self::Overflow => f.write_str("overflows"),
        }
    }
}

impl Rule {
    /// The listed values of a [`Rule::OneOf`], owned.
    pub fn one_of_values(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| String::from(*v)).collect()
    }
}

impl core::error::Error for Error {}

/// The core's result type.
pub type Result<T, E = Error> = core::result::Result<T, E>;
