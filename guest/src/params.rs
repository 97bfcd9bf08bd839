//! A flat message: field name to value.
//!
//! WeChat Pay v2 messages have no nesting and no repeated fields, so a map
//! is the whole data model. A `BTreeMap` keyed by `String` iterates in
//! byte-wise order, which is exactly the order canonicalization needs, and
//! (unlike `HashMap`) pulls no randomness import into the component.

use alloc::collections::BTreeMap;
use alloc::collections::btree_map::Entry;
use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{Error, Result, Rule};

/// A flat WeChat Pay message.
pub type Params = BTreeMap<String, String>;

/// Longest field name accepted, in bytes.
pub const MAX_FIELD_NAME: usize = 64;

/// Builds params from pairs, refusing duplicate and invalid names.
pub fn from_pairs<I, K, V>(pairs: I) -> Result<Params>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let mut params = Params::new();
    for (name, value) in pairs {
        insert_new(&mut params, name.into(), value.into())?;
    }
    Ok(params)
}

/// Inserts a field that must not be present yet.
pub fn insert_new(params: &mut Params, name: String, value: String) -> Result<()> {
    check_field_name(&name)?;
    insert_unique(params, name, value)
}

/// Inserts a field whose name [`check_field_name`] has already accepted;
/// refuses it if present.
pub(crate) fn insert_unique(params: &mut Params, name: String, value: String) -> Result<()> {
    match params.entry(name) {
        Entry::Vacant(slot) => {
            slot.insert(value);
            Ok(())
        }
        Entry::Occupied(taken) => Err(Error::DuplicateField(taken.key().clone())),
    }
}

/// Field names are ASCII identifiers: a letter or `_`, then letters, digits
/// or `_`, at most 64 bytes. Every WeChat field fits, and such a name is
/// always a valid XML element name.
pub fn check_field_name(name: &str) -> Result<()> {
    let mut bytes = name.bytes();
    let starts_well = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if name.len() > MAX_FIELD_NAME {
        return Err(Error::field(name, Rule::TooLong(MAX_FIELD_NAME as u32)));
    }
    if !starts_well || !rest_ok {
        return Err(Error::field(
            name,
            Rule::Charset("field names: a letter or `_`, then letters, digits or `_`"),
        ));
    }
    Ok(())
}

/// The params as pairs, in byte-wise name order.
pub fn to_pairs(params: &Params) -> Vec<(String, String)> {
    params.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The params as pairs, in byte-wise name order, moving the strings.
pub fn into_pairs(params: Params) -> Vec<(String, String)> {
    params.into_iter().collect()
}

/// The value of a field, treating an empty value as absent (as signing does).
pub fn non_empty<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}
