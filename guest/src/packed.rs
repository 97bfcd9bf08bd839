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
use core::cmp::Ordering;

use crate::canonical::is_signed;
use crate::error::{Error, Result, Rule};
use crate::params::{MAX_FIELD_NAME, check_field_name};
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
/// Refuses a field without `=`, a bad name, and a name given twice; when
/// several fields are bad, the first one's error.
pub fn unpack(packed: &str) -> Result<Vec<(&str, &str)>> {
    let fields = read_fields(packed)?;
    Ok(fields.iter().map(|f| (f.name, f.value)).collect())
}

/// Signs packed fields as given (a `sign` field is ignored): the same
/// signature [`crate::sign::sign`] gives for the same fields.
pub fn sign_packed(packed: &str, sign_type: SignType, key: &ApiKey) -> Result<String> {
    let fields = read_fields(packed)?;
    let signed = fields
        .iter()
        .map(|f| (f.name, f.value))
        .filter(|&(name, value)| is_signed(name, value));
    Ok(sign_fields(signed, sign_type, key))
}

/// One packed field, with the key it sorts by.
struct Field<'a> {
    key: u64,
    name: &'a str,
    value: &'a str,
}

/// Room for the fields of any WeChat Pay request without growing.
const FIELDS_HINT: usize = 32;

/// [`unpack`]'s work, keeping each field's sort key.
fn read_fields(packed: &str) -> Result<Vec<Field<'_>>> {
    let mut fields = Vec::with_capacity(FIELDS_HINT);
    let mut rest = (!packed.is_empty()).then_some(packed);
    while let Some(text) = rest {
        let (field, after) = next_field(text)?;
        fields.push(field);
        rest = after;
    }
    sort_by_name(&mut fields);
    let twice = fields.windows(2).find_map(|pair| match pair {
        [first, second] if first.name == second.name => Some(first.name),
        _ => None,
    });
    if let Some(name) = twice {
        return Err(Error::DuplicateField(name.into()));
    }
    Ok(fields)
}

/// The field `text` starts with, and the text after its separator if
/// another field follows.
///
/// Why not `str::split`: a packed request is three dozen short pieces, and
/// each search is a call that reads a word at a time before it finds one.
/// Here a name is read byte by byte while it is checked (it is a few bytes
/// long) and a value 16 bytes at a time (see [`nul_offset`]).
fn next_field(text: &str) -> Result<(Field<'_>, Option<&str>)> {
    let bytes = text.as_bytes();
    let name_len = bytes
        .iter()
        .position(|&b| !is_name_byte(b))
        .unwrap_or(bytes.len());
    let (Some(name), Some(b'=')) = (text.get(..name_len), bytes.get(name_len)) else {
        return Err(refusal(text));
    };
    if !well_formed_name(name) {
        check_field_name(name)?;
    }
    let tail = text.get(name_len + 1..).unwrap_or_default();
    let value_len = nul_offset(tail.as_bytes());
    let value = tail.get(..value_len).unwrap_or_default();
    let after = tail.get(value_len + 1..);
    let field = Field {
        key: sort_key(name),
        name,
        value,
    };
    Ok((field, after))
}

/// Why the field `text` starts with cannot be read, as `str::split` and
/// [`check_field_name`] would say: no `=` in it, or a bad name before it.
fn refusal(text: &str) -> Error {
    let field = text.split(SEPARATOR).next().unwrap_or_default();
    let shape = || Error::field("params", SHAPE);
    match field.split_once('=') {
        None => shape(),
        Some((name, _)) => check_field_name(name).err().unwrap_or_else(shape),
    }
}

/// What [`check_field_name`] checks besides the bytes [`is_name_byte`]
/// allows: a name is not empty, not too long, and starts with no digit.
fn well_formed_name(name: &str) -> bool {
    name.len() <= MAX_FIELD_NAME && name.bytes().next().is_some_and(|b| !b.is_ascii_digit())
}

/// Letters, digits and `_`, looked up rather than compared: this runs for
/// every byte of every name.
fn is_name_byte(b: u8) -> bool {
    NAME_BYTES[usize::from(b)]
}

const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric() || byte == b'_';
        b += 1;
    }
    table
};

/// The offset of the first NUL in `bytes`, or its length. Blocks of 16
/// bytes are tested whole first: the fold has no branch per byte, so it
/// compiles to vector compares natively and to `simd128` in the component.
fn nul_offset(bytes: &[u8]) -> usize {
    let (blocks, _) = bytes.as_chunks::<16>();
    let clear = blocks
        .iter()
        .take_while(|block| !block.iter().fold(false, |seen, &b| seen | (b == 0)))
        .count()
        * 16;
    let rest = bytes.get(clear..).unwrap_or_default();
    clear + rest.iter().position(|&b| b == 0).unwrap_or(rest.len())
}

/// A name's first eight bytes as one integer, padded with NUL. A name holds
/// no NUL, so ordering these keys orders the names wherever they differ.
fn sort_key(name: &str) -> u64 {
    let mut prefix = [0u8; 8];
    for (to, &from) in prefix.iter_mut().zip(name.as_bytes()) {
        *to = from;
    }
    u64::from_be_bytes(prefix)
}

/// Byte-wise name order. Most pairs are decided on their keys, so the
/// names themselves are compared (`memcmp`, a byte loop in the component)
/// only when they share their first eight bytes.
fn by_name(a: &Field<'_>, b: &Field<'_>) -> Ordering {
    a.key.cmp(&b.key).then_with(|| a.name.cmp(b.name))
}

/// Largest field count sorted by [`insertion_sort`].
const SMALL: usize = 32;

fn sort_by_name(fields: &mut [Field<'_>]) {
    if fields.len() <= SMALL {
        insertion_sort(fields);
    } else {
        fields.sort_unstable_by(by_name);
    }
}

/// Sorts by swapping neighbours. Why not `sort_unstable_by`: for a short
/// slice it shifts each element into place with `memmove`, and in the
/// component every `memory.copy` is a call out to the runtime.
fn insertion_sort(fields: &mut [Field<'_>]) {
    for end in 1..fields.len() {
        let mut at = end;
        while at > 0 {
            let (Some(before), Some(this)) = (fields.get(at - 1), fields.get(at)) else {
                break;
            };
            if by_name(before, this) != Ordering::Greater {
                break;
            }
            fields.swap(at - 1, at);
            at -= 1;
        }
    }
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

    /// The reading `unpack` replaced, kept as its reference: `str::split`
    /// on NUL, then on the first `=`, each name checked as it is read, then
    /// sorted by `str`'s order. `unpack` must agree with it on every input,
    /// refusals included.
    fn unpack_by_splitting(packed: &str) -> Result<Vec<(&str, &str)>, Error> {
        if packed.is_empty() {
            return Ok(vec![]);
        }
        let mut fields = vec![];
        for field in packed.split('\0') {
            let (name, value) = field
                .split_once('=')
                .ok_or_else(|| invalid("params", super::SHAPE))?;
            crate::params::check_field_name(name)?;
            fields.push((name, value));
        }
        fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if let Some(pair) = fields.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(Error::DuplicateField(pair[0].0.to_string()));
        }
        Ok(fields)
    }

    #[test]
    fn finds_separators_on_both_sides_of_a_block_edge() {
        for len in 1..=40 {
            let value = "v".repeat(len);
            let packed = format!("a={value}\0b=={value}=\0c={value}");
            let fields = unpack(&packed).unwrap();
            let expected_b = format!("={value}=");
            assert_eq!(
                fields,
                vec![
                    ("a", value.as_str()),
                    ("b", expected_b.as_str()),
                    ("c", value.as_str())
                ],
                "value length {len}"
            );
        }
    }

    proptest! {
        #[test]
        fn reads_every_string_as_splitting_it_does(
            packed in "[ab_1=\0\u{e9}-]{0,70}",
        ) {
            prop_assert_eq!(unpack(&packed), unpack_by_splitting(&packed));
        }

        /// Many distinct fields, some sharing their first eight bytes, so
        /// that both sorts and the tie-break on whole names run.
        #[test]
        fn sorts_long_lists_as_str_does(
            names in prop::collection::btree_set("(abcdefgh)?[a-c_]{1,3}", 0..80),
        ) {
            let pairs: Vec<(&str, &str)> = names.iter().rev().map(|n| (n.as_str(), "v")).collect();
            let packed = pack(pairs).unwrap();
            prop_assert_eq!(unpack(&packed), unpack_by_splitting(&packed));
        }

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
