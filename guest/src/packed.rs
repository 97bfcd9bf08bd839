//! Params packed into one string, for callers that sign at a high rate.
//!
//! Why: across the component boundary, a `params` list of 16 fields is 32
//! strings. The host lowers each one with a call into the guest's
//! allocator, the guest builds a map of them, and frees them all after the
//! call. That per-field traffic, not the hash, is most of what a signature
//! through the component costs beyond the same code run natively. Packed,
//! the fields cross as one string and are signed where they lie: nothing is
//! copied or allocated per field.
//!
//! The format: fields `name=value`, separated by NUL (U+0000), in any
//! order. A name is a field name ([`check_field_name`]), so the first `=`
//! ends it; a value may hold `=` but not NUL. XML 1.0 cannot carry NUL, so
//! every WeChat Pay message packs. The empty string packs no fields.

use alloc::string::String;
use alloc::vec::Vec;

use crate::canonical::is_signed;
use crate::error::{Error, Result, Rule};
use crate::params::check_field_name;
use crate::sign::{ApiKey, SignType, sign_fields};

/// What separates two packed fields.
pub const SEPARATOR: char = '\0';

/// The rule a packed field without `=` breaks.
const SHAPE: Rule = Rule::Format("`name=value` fields separated by NUL");

/// Packs `(name, value)` pairs. Refuses a name that is not a field name and
/// a value holding NUL, so that [`unpack`] gives back exactly these pairs.
pub fn pack<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<String> {
    let mut packed = String::new();
    for (name, value) in pairs {
        check_field_name(name)?;
        if value.contains(SEPARATOR) {
            return Err(Error::field(name, Rule::ControlCharacter));
        }
        if !packed.is_empty() {
            packed.push(SEPARATOR);
        }
        packed.reserve(name.len() + value.len() + 2);
        packed.push_str(name);
        packed.push('=');
        packed.push_str(value);
    }
    Ok(packed)
}

/// The packed fields in byte-wise name order, borrowed from `packed`.
/// Refuses a field without `=`, a bad name, and a name given twice.
pub fn unpack(packed: &str) -> Result<Vec<(&str, &str)>> {
    if packed.is_empty() {
        return Ok(Vec::new());
    }
    let mut fields = Vec::with_capacity(packed.matches(SEPARATOR).count() + 1);
    for field in packed.split(SEPARATOR) {
        let (name, value) = field
            .split_once('=')
            .ok_or_else(|| Error::field("params", SHAPE))?;
        check_field_name(name)?;
        fields.push((name, value));
    }
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let twice = fields.windows(2).find_map(|pair| match pair {
        [(first, _), (second, _)] if first == second => Some(*first),
        _ => None,
    });
    if let Some(name) = twice {
        return Err(Error::DuplicateField(name.into()));
    }
    Ok(fields)
}

/// Signs packed fields as given (a `sign` field is ignored): the same
/// signature [`crate::sign::sign`] gives for the same fields.
pub fn sign_packed(packed: &str, sign_type: SignType, key: &ApiKey) -> Result<String> {
    let fields = unpack(packed)?;
    let signed = fields
        .into_iter()
        .filter(|&(name, value)| is_signed(name, value));
    Ok(sign_fields(signed, sign_type, key))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloc::string::ToString;
    use alloc::vec;

    use proptest::prelude::*;

    use super::{pack, sign_packed, unpack};
    use crate::error::{Error, Rule};
    use crate::params::from_pairs;
    use crate::sign::{ApiKey, SignType, sign};

    fn key() -> ApiKey {
        ApiKey::new("192006250b4c09247ec02edce69f6a2d".into()).unwrap()
    }

    fn invalid(field: &str, rule: Rule) -> Error {
        Error::field(field, rule)
    }

    #[test]
    fn unpacks_in_name_order_keeping_equals_signs_in_values() {
        let fields = unpack("mch_id=10000100\0attach=a=b\0body=").unwrap();
        assert_eq!(
            fields,
            vec![("attach", "a=b"), ("body", ""), ("mch_id", "10000100")]
        );
        assert_eq!(unpack("").unwrap(), vec![]);
    }

    #[test]
    fn refuses_what_it_cannot_read_without_repairing_it() {
        let shape = invalid("params", super::SHAPE);
        assert_eq!(unpack("appid"), Err(shape.clone()));
        assert_eq!(unpack("a=1\0"), Err(shape.clone()), "a trailing separator");
        assert_eq!(unpack("\0a=1"), Err(shape));
        assert_eq!(
            unpack("a=1\0a=2"),
            Err(Error::DuplicateField("a".to_string()))
        );
        assert!(matches!(
            unpack("1a=x"),
            Err(Error::InvalidField(e)) if e.field == "1a" && matches!(e.rule, Rule::Charset(_))
        ));
    }

    #[test]
    fn packs_only_what_unpacks_to_the_same_fields() {
        assert_eq!(pack([("b", "2"), ("a", "x=y")]).unwrap(), "b=2\0a=x=y");
        assert_eq!(pack([]).unwrap(), "");
        assert_eq!(
            pack([("attach", "a\0b")]),
            Err(invalid("attach", Rule::ControlCharacter))
        );
        assert!(matches!(
            pack([("a=b", "c")]),
            Err(Error::InvalidField(e)) if e.field == "a=b"
        ));
    }

    #[test]
    fn signs_like_sign_skipping_sign_and_empty_values() {
        let pairs = [
            ("mch_id", "10000100"),
            ("appid", "wxd930ea5d5a258f4f"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
            ("device_info", "1000"),
            ("body", "test"),
            ("detail", ""),
            ("sign", "IGNORED"),
        ];
        let packed = pack(pairs).unwrap();
        let expected = "9A0A8659F005D6984697E2CA0A9CF3B7";
        assert_eq!(
            sign_packed(&packed, SignType::Md5, &key()).unwrap(),
            expected
        );
        let params = from_pairs(pairs).unwrap();
        assert_eq!(sign(&params, SignType::Md5, &key()), expected);
    }

    fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
        let name = "[a-z_][a-z0-9_]{0,12}";
        let value = prop_oneof![Just(String::new()), "[^\0]{0,24}"];
        prop::collection::btree_map(name, value, 0..20)
            .prop_map(|map| map.into_iter().rev().collect())
    }

    proptest! {
        #[test]
        fn signs_every_packable_message_as_sign_does(pairs in pairs()) {
            let borrowed = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            let packed = pack(borrowed).unwrap();
            let params = from_pairs(pairs.clone()).unwrap();
            for sign_type in [SignType::Md5, SignType::HmacSha256] {
                prop_assert_eq!(
                    sign_packed(&packed, sign_type, &key()).unwrap(),
                    sign(&params, sign_type, &key())
                );
            }
            let unpacked = unpack(&packed).unwrap();
            prop_assert!(unpacked.iter().copied().eq(
                params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
            ));
        }
    }
}
