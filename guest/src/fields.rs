//! Field rules, checked before anything is signed.
//!
//! WeChat answers a bad field with a terse `PARAM_ERROR` or, worse, a
//! signature error when an SDK trimmed or re-encoded the value on one side
//! only. Checking here turns those into errors that name the field and the
//! rule, before a request leaves the machine. Lengths are counted in UTF-8
//! bytes: WeChat's tables give `String(n)` without a unit, and bytes is the
//! stricter reading.

use alloc::string::String;

use crate::error::{Error, Result, Rule};
use crate::params::{self, Params};

/// `[A-Za-z0-9_-]`, the charset of ids (appid, mch_id, openid, nonce, ...).
pub const ID_CHARSET: &str = "ASCII letters, digits, `_` and `-`";
/// `[A-Za-z0-9_-|*]`, the charset of `out_trade_no`.
pub const TRADE_NO_CHARSET: &str = "ASCII letters, digits and `_-|*`";
/// `[A-Za-z0-9_-|*@]`, the charset of `out_refund_no`.
pub const REFUND_NO_CHARSET: &str = "ASCII letters, digits and `_-|*@`";

/// Largest `total_fee` / `refund_fee`: WeChat's `Int` is a signed 32-bit integer.
pub const MAX_FEE: u64 = i32::MAX as u64;

/// A free-text value: non-empty, at most `max` bytes, no control
/// characters, no surrounding whitespace.
pub fn text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::field(field, Rule::Empty));
    }
    if value.len() > max {
        return Err(Error::field(field, Rule::TooLong(max as u32)));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::field(field, Rule::ControlCharacter));
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err(Error::field(field, Rule::SurroundingWhitespace));
    }
    Ok(())
}

/// A token of ASCII characters accepted by `allowed`, `min..=max` long.
pub fn token(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    allowed: fn(u8) -> bool,
    charset: &'static str,
) -> Result<()> {
    if value.is_empty() {
        return Err(Error::field(field, Rule::Empty));
    }
    if value.len() > max {
        return Err(Error::field(field, Rule::TooLong(max as u32)));
    }
    if !value.bytes().all(allowed) {
        return Err(Error::field(field, Rule::Charset(charset)));
    }
    if value.len() < min {
        return Err(Error::field(field, Rule::TooShort(min as u32)));
    }
    Ok(())
}

/// `[A-Za-z0-9_-]`.
pub fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_trade_no_byte(b: u8) -> bool {
    is_id_byte(b) || b == b'|' || b == b'*'
}

fn is_refund_no_byte(b: u8) -> bool {
    is_trade_no_byte(b) || b == b'@'
}

/// An id: 1..=`max` of `[A-Za-z0-9_-]`.
pub fn id(field: &str, value: &str, max: usize) -> Result<()> {
    token(field, value, 1, max, is_id_byte, ID_CHARSET)
}

/// `out_trade_no`: 6..=32 of `[A-Za-z0-9_-|*]`.
pub fn out_trade_no(value: &str) -> Result<()> {
    token(
        "out_trade_no",
        value,
        6,
        32,
        is_trade_no_byte,
        TRADE_NO_CHARSET,
    )
}

/// `out_refund_no`: 1..=64 of `[A-Za-z0-9_-|*@]`.
pub fn out_refund_no(value: &str) -> Result<()> {
    token(
        "out_refund_no",
        value,
        1,
        64,
        is_refund_no_byte,
        REFUND_NO_CHARSET,
    )
}

/// `transaction_id` / `refund_id`: 1..=32 digits and letters.
pub fn wechat_id(field: &str, value: &str) -> Result<()> {
    token(
        field,
        value,
        1,
        32,
        |b| b.is_ascii_alphanumeric(),
        "ASCII letters and digits",
    )
}

/// `nonce_str`: 1..=32 of `[A-Za-z0-9_-]`, given by the host.
pub fn nonce(value: &str) -> Result<()> {
    id("nonce_str", value, 32)
}

/// An amount in fen, `min..=MAX_FEE`.
pub fn fee(field: &str, value: u64, min: u64) -> Result<()> {
    if (min..=MAX_FEE).contains(&value) {
        Ok(())
    } else {
        Err(Error::field(field, Rule::OutOfRange { min, max: MAX_FEE }))
    }
}

/// Parses an amount from the wire: ASCII digits only, no sign, no
/// decimal point, no leading zeros (except `0` itself), fitting in `u64`.
pub fn parse_fee(field: &str, value: &str) -> Result<u64> {
    let canonical = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    if !canonical {
        return Err(Error::field(
            field,
            Rule::Format("an integer amount in fen"),
        ));
    }
    value
        .parse()
        .map_err(|_| Error::field(field, Rule::Overflow))
}

/// One of a fixed set of values.
pub fn one_of(field: &str, value: &str, allowed: &'static [&'static str]) -> Result<()> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(Error::field(field, Rule::OneOf(allowed)))
    }
}

/// `yyyyMMddHHmmss`, a real calendar time.
pub fn datetime14(field: &str, value: &str) -> Result<()> {
    const SHAPE: &str = "yyyyMMddHHmmss";
    let digits = value.len() == 14 && value.bytes().all(|b| b.is_ascii_digit());
    if !digits || !valid_date(&value[..8]) || !valid_clock(&value[8..]) {
        return Err(Error::field(field, Rule::Format(SHAPE)));
    }
    Ok(())
}

/// `yyyyMMdd`, a real calendar date.
pub fn date8(field: &str, value: &str) -> Result<()> {
    let digits = value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit());
    if !digits || !valid_date(value) {
        return Err(Error::field(field, Rule::Format("yyyyMMdd")));
    }
    Ok(())
}

fn number(digits: &str) -> u32 {
    digits.bytes().fold(0, |n, b| n * 10 + u32::from(b - b'0'))
}

fn valid_date(yyyymmdd: &str) -> bool {
    let (year, month, day) = (
        number(&yyyymmdd[..4]),
        number(&yyyymmdd[4..6]),
        number(&yyyymmdd[6..8]),
    );
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1970 && (1..=days).contains(&day)
}

fn valid_clock(hhmmss: &str) -> bool {
    number(&hhmmss[..2]) < 24 && number(&hhmmss[2..4]) < 60 && number(&hhmmss[4..6]) < 60
}

/// An IPv4 or IPv6 address, at most 64 bytes.
pub fn ip(field: &str, value: &str) -> Result<()> {
    if value.len() > 64 {
        return Err(Error::field(field, Rule::TooLong(64)));
    }
    if value.parse::<core::net::IpAddr>().is_err() {
        return Err(Error::field(field, Rule::Format("an IPv4 or IPv6 address")));
    }
    Ok(())
}

/// A notification URL: `https://` (or `http://` to a loopback host, for
/// local development), at most 256 bytes, no query string or fragment, no
/// whitespace or control characters.
pub fn notify_url(field: &str, value: &str) -> Result<()> {
    text(field, value, 256)?;
    if value.contains(['?', '#']) {
        return Err(Error::field(
            field,
            Rule::ForbiddenWhen(String::from(
                "WeChat requires a URL without query string or fragment",
            )),
        ));
    }
    if value.contains(char::is_whitespace) {
        return Err(Error::field(field, Rule::Format("a URL without spaces")));
    }
    let host_ok = |rest: &str| {
        let host = rest.split(['/', ':']).next().unwrap_or_default();
        !host.is_empty()
    };
    if let Some(rest) = value.strip_prefix("https://") {
        if host_ok(rest) {
            return Ok(());
        }
    } else if let Some(rest) = value.strip_prefix("http://") {
        if is_loopback_authority(rest) {
            return Ok(());
        }
        return Err(Error::field(
            field,
            Rule::ForbiddenWhen(String::from(
                "plain http is allowed only for loopback hosts",
            )),
        ));
    }
    Err(Error::field(
        field,
        Rule::Format("an https:// URL with a host"),
    ))
}

fn is_loopback_authority(rest: &str) -> bool {
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host == "localhost"
        || host
            .parse::<core::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A JSON object as a string (`scene_info`, `detail`), at most `max` bytes.
pub fn json_object(field: &str, value: &str, max: usize) -> Result<()> {
    text(field, value, max)?;
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(Error::field(field, Rule::Format("a JSON object"))),
    }
}

/// `fee_type`: three upper-case letters (ISO 4217).
pub fn currency(field: &str, value: &str) -> Result<()> {
    token(
        field,
        value,
        3,
        3,
        |b| b.is_ascii_uppercase(),
        "three upper-case letters (ISO 4217)",
    )
}

/// Inserts a required, already-checked value.
pub(crate) fn put(params: &mut Params, name: &str, value: impl Into<String>) -> Result<()> {
    params::insert_new(params, String::from(name), value.into())
}

/// Inserts an optional value after checking it with `check`.
pub(crate) fn put_opt(
    params: &mut Params,
    name: &str,
    value: Option<&str>,
    check: impl FnOnce(&str, &str) -> Result<()>,
) -> Result<()> {
    match value {
        Some(v) => {
            check(name, v)?;
            put(params, name, v)
        }
        None => Ok(()),
    }
}
