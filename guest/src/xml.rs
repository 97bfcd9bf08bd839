//! The flat XML of WeChat Pay v2: a safe reader and a writer that cannot be
//! broken by the values it writes.
//!
//! Notification endpoints are public, so the reader treats every body as
//! hostile. In 2018 WeChat's own Java SDK resolved external entities and let
//! anyone read a merchant's files through `notify_url`; this reader never
//! gets that far. It accepts exactly one shape — an optional XML declaration,
//! one root element (`<xml>`, or `<root>` for decrypted refund data), and
//! children holding text or CDATA — and refuses everything else with a
//! reason: DOCTYPE and ENTITY declarations (XXE, billion laughs), unknown
//! entity references, processing instructions, comments, nesting,
//! attributes, duplicate fields, non-UTF-8, and bodies over a size cap.
//!
//! The writer puts values in CDATA, splits any `]]>` across two sections,
//! writes values with a carriage return as escaped text (so XML's line-end
//! normalization cannot change them), and refuses characters XML 1.0 cannot
//! carry. Whatever it writes, the reader gives back unchanged.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};

use crate::canonical::SIGN_FIELD;
use crate::error::{Error, Result, Rule, XmlReason};
use crate::params::{self, Params};
use crate::text::is_forbidden_in_xml;

/// Default cap on a body, in bytes.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

/// The root element of requests, responses and notifications.
pub const ROOT_XML: &str = "xml";

/// The root element of a decrypted refund notification (`req_info`).
pub const ROOT_REFUND: &str = "root";

/// Limits and shape of a body to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions<'a> {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// Name of the root element.
    pub root: &'a str,
}

impl Default for ReadOptions<'_> {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            root: ROOT_XML,
        }
    }
}

/// Reads a flat `<xml>` body with the default cap.
pub fn parse(body: &[u8]) -> Result<Params> {
    parse_with(body, ReadOptions::default())
}

/// Reads a flat body with explicit options.
pub fn parse_with(body: &[u8], options: ReadOptions<'_>) -> Result<Params> {
    let text = precheck(body, options.max_bytes)?;
    FlatReader::new(text, options.root).read()
}

/// One field's value, from a body read exactly as [`parse_with`] reads it
/// (and refused for the same reasons); `None` when absent or empty.
pub fn read_field(body: &[u8], name: &str, options: ReadOptions<'_>) -> Result<Option<String>> {
    let mut fields = parse_with(body, options)?;
    Ok(fields.remove(name).filter(|value| !value.is_empty()))
}

/// Size, encoding and declaration checks that come before any parsing.
fn precheck(body: &[u8], max_bytes: usize) -> Result<&str> {
    if body.len() > max_bytes {
        return Err(Error::xml(
            XmlReason::TooLarge,
            format!("{} bytes, the cap is {max_bytes}", body.len()),
        ));
    }
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::xml(XmlReason::Empty, "the body is empty"));
    }
    let text = core::str::from_utf8(body).map_err(|e| {
        Error::xml(
            XmlReason::NotUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    if may_hold_forbidden(body)
        && let Some(at) = text.find(is_forbidden_in_xml)
    {
        return Err(Error::xml(
            XmlReason::Malformed,
            format!("a character XML 1.0 does not allow, at byte {at}"),
        ));
    }
    let (doctype, entity) = declarations(body);
    if doctype {
        return Err(Error::xml(
            XmlReason::Doctype,
            "document type declarations are not accepted",
        ));
    }
    if entity {
        return Err(Error::xml(
            XmlReason::Entity,
            "entity declarations are not accepted",
        ));
    }
    Ok(text)
}

/// False when no character XML 1.0 forbids can be in `body`: it has no
/// control byte but tab, newline and carriage return, and no 0xEF (the
/// first byte of U+FFFE and U+FFFF). A byte scan, so the exact (and
/// slower) search by character runs only on bodies that need it. Whole
/// chunks are folded without a branch per byte, which the compiler turns
/// into vector compares (SIMD natively, `simd128` in the component).
fn may_hold_forbidden(body: &[u8]) -> bool {
    let (chunks, tail) = body.as_chunks::<32>();
    chunks
        .iter()
        .any(|chunk| chunk.iter().fold(false, |seen, &b| seen | is_suspect(b)))
        || tail.iter().any(|&b| is_suspect(b))
}

fn is_suspect(b: u8) -> bool {
    b == 0xEF || (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
}

/// Whether `body` contains `<!DOCTYPE` and `<!ENTITY`, in any case,
/// anywhere: `memchr` finds each `!`, and only those after a `<` are read.
fn declarations(body: &[u8]) -> (bool, bool) {
    let (mut doctype, mut entity) = (false, false);
    for at in memchr::memchr_iter(b'!', body) {
        if at > 0 && body.get(at - 1) == Some(&b'<') {
            let rest = body.get(at + 1..).unwrap_or_default();
            doctype |= starts_with_ignore_ascii_case(rest, b"DOCTYPE");
            entity |= starts_with_ignore_ascii_case(rest, b"ENTITY");
        }
    }
    (doctype, entity)
}

fn starts_with_ignore_ascii_case(text: &[u8], prefix: &[u8]) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Where the reader is in the one accepted shape.
enum Place {
    BeforeRoot,
    InRoot,
    InField { name: String, value: String },
    AfterRoot,
}

struct FlatReader<'a> {
    reader: Reader<&'a [u8]>,
    root: &'a str,
    place: Place,
    fields: Fields,
    seen_declaration: bool,
}

/// Room for this many fields is made at once: a payment notification has
/// about twenty, and each growth of the list is an allocation and a copy.
const FIELDS_AT_FIRST: usize = 32;

/// The fields read so far. WeChat sends them in name order, so they stay a
/// list while each name sorts after the one before, and become a map at the
/// end or at the first that does not (where a duplicate is refused, as an
/// insert into the map would refuse it). Inserting one at a time into a
/// B-tree compares the name with every key before it in its leaf; in the
/// component each comparison is a call to wasi-libc's byte-wise `memcmp`.
enum Fields {
    InOrder(Vec<(String, String)>),
    Map(Params),
}

impl Fields {
    fn is_empty(&self) -> bool {
        match self {
            Self::InOrder(list) => list.is_empty(),
            Self::Map(map) => map.is_empty(),
        }
    }

    /// Adds a field whose name [`params::check_field_name`] has accepted.
    fn insert(&mut self, name: String, value: String) -> Result<()> {
        match self {
            Self::InOrder(list) if list.last().is_none_or(|(last, _)| *last < name) => {
                list.push((name, value));
                Ok(())
            }
            Self::InOrder(list) => {
                let mut map: Params = core::mem::take(list).into_iter().collect();
                params::insert_unique(&mut map, name, value)?;
                *self = Self::Map(map);
                Ok(())
            }
            Self::Map(map) => params::insert_unique(map, name, value),
        }
    }

    fn into_params(self) -> Params {
        match self {
            Self::InOrder(list) => list.into_iter().collect(),
            Self::Map(map) => map,
        }
    }
}

impl<'a> FlatReader<'a> {
    fn new(text: &'a str, root: &'a str) -> Self {
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        // `close` matches every end tag against the element it must end,
        // so quick-xml need not compare the names a second time.
        config.check_end_names = false;
        config.expand_empty_elements = false;
        config.trim_text(false);
        Self {
            reader,
            root,
            place: Place::BeforeRoot,
            fields: Fields::InOrder(Vec::with_capacity(FIELDS_AT_FIRST)),
            seen_declaration: false,
        }
    }

    fn read(mut self) -> Result<Params> {
        loop {
            let event = self.reader.read_event().map_err(|e| {
                Error::xml(
                    XmlReason::Malformed,
                    format!("{e} at byte {}", self.reader.error_position()),
                )
            })?;
            if matches!(event, Event::Eof) {
                return match self.place {
                    Place::AfterRoot => Ok(self.fields.into_params()),
                    Place::BeforeRoot => Err(Error::xml(XmlReason::Malformed, "no root element")),
                    _ => Err(Error::xml(
                        XmlReason::Malformed,
                        "the body ends inside an element",
                    )),
                };
            }
            self.step(event)?;
        }
    }

    fn step(&mut self, event: Event<'_>) -> Result<()> {
        match event {
            Event::DocType(_) => Err(Error::xml(
                XmlReason::Doctype,
                "document type declarations are not accepted",
            )),
            Event::PI(_) => Err(Error::xml(
                XmlReason::ProcessingInstruction,
                "processing instructions are not accepted",
            )),
            Event::Comment(_) => Err(Error::xml(XmlReason::Comment, "comments are not accepted")),
            Event::Decl(decl) => self.declaration(&decl),
            Event::Start(start) => self.open(&start, false),
            Event::Empty(start) => self.open(&start, true),
            Event::End(end) => self.close(end.name().as_ref()),
            Event::Text(text) => self.text(&text.xml10_content()),
            Event::CData(data) => self.cdata(&data.xml10_content()),
            Event::GeneralRef(reference) => self.reference(&reference),
            Event::Eof => Ok(()),
        }
    }

    fn declaration(&mut self, decl: &quick_xml::events::BytesDecl<'_>) -> Result<()> {
        if self.seen_declaration
            || !matches!(self.place, Place::BeforeRoot)
            || !self.fields.is_empty()
        {
            return Err(Error::xml(
                XmlReason::Malformed,
                "misplaced XML declaration",
            ));
        }
        self.seen_declaration = true;
        match decl.encoding() {
            None => Ok(()),
            Some(Ok(enc)) if enc.eq_ignore_ascii_case("utf-8") => Ok(()),
            Some(_) => Err(Error::xml(XmlReason::Encoding, "only UTF-8 is accepted")),
        }
    }

    fn open(&mut self, start: &BytesStart<'_>, empty: bool) -> Result<()> {
        let name = element_name(start)?;
        if start.attributes().next().is_some() {
            return Err(Error::xml(
                XmlReason::Attribute,
                format!("attributes on <{name}>"),
            ));
        }
        match &self.place {
            Place::BeforeRoot if name == self.root => {
                self.place = if empty {
                    Place::AfterRoot
                } else {
                    Place::InRoot
                };
                Ok(())
            }
            Place::BeforeRoot => Err(Error::xml(
                XmlReason::WrongRoot,
                format!("root is <{name}>, expected <{}>", self.root),
            )),
            Place::InRoot => {
                params::check_field_name(&name)?;
                if empty {
                    self.insert(name, String::new())
                } else {
                    self.place = Place::InField {
                        name,
                        value: String::new(),
                    };
                    Ok(())
                }
            }
            Place::InField { name: field, .. } => Err(Error::xml(
                XmlReason::Nesting,
                format!("<{name}> inside <{field}>"),
            )),
            Place::AfterRoot => Err(Error::xml(XmlReason::OutsideRoot, "a second root element")),
        }
    }

    fn close(&mut self, name: &str) -> Result<()> {
        match core::mem::replace(&mut self.place, Place::AfterRoot) {
            Place::InField { name: field, value } if field == name => {
                self.place = Place::InRoot;
                self.insert(field, value)
            }
            Place::InField { name: field, .. } => Err(self.wrong_end_tag(&field, name)),
            Place::InRoot if name == self.root => Ok(()),
            Place::InRoot => Err(self.wrong_end_tag(self.root, name)),
            Place::BeforeRoot | Place::AfterRoot => Err(Error::xml(
                XmlReason::Malformed,
                format!("</{name}> closes no element"),
            )),
        }
    }

    fn wrong_end_tag(&self, open: &str, found: &str) -> Error {
        Error::xml(
            XmlReason::Malformed,
            format!(
                "</{found}> where </{open}> was due, at byte {}",
                self.reader.buffer_position()
            ),
        )
    }

    /// Inserts a field whose name [`Self::open`] checked.
    fn insert(&mut self, name: String, value: String) -> Result<()> {
        self.fields.insert(name, value)
    }

    fn text(&mut self, text: &str) -> Result<()> {
        match &mut self.place {
            Place::InField { value, .. } => {
                value.push_str(text);
                Ok(())
            }
            _ if text.bytes().all(|b| b.is_ascii_whitespace()) => Ok(()),
            Place::InRoot => Err(Error::xml(
                XmlReason::Malformed,
                "text directly inside the root",
            )),
            _ => Err(Error::xml(
                XmlReason::OutsideRoot,
                "text outside the root element",
            )),
        }
    }

    fn cdata(&mut self, data: &str) -> Result<()> {
        match &mut self.place {
            Place::InField { value, .. } => {
                value.push_str(data);
                Ok(())
            }
            Place::InRoot => Err(Error::xml(
                XmlReason::Malformed,
                "CDATA directly inside the root",
            )),
            _ => Err(Error::xml(
                XmlReason::OutsideRoot,
                "CDATA outside the root element",
            )),
        }
    }

    fn reference(&mut self, reference: &BytesRef<'_>) -> Result<()> {
        let Place::InField { value, .. } = &mut self.place else {
            return Err(Error::xml(
                XmlReason::Malformed,
                "entity reference outside a field",
            ));
        };
        value.push(resolve_reference(reference)?);
        Ok(())
    }
}

fn element_name(start: &BytesStart<'_>) -> Result<String> {
    Ok(String::from(start.name().as_ref()))
}

/// The five predefined entities and character references; nothing else.
fn resolve_reference(reference: &BytesRef<'_>) -> Result<char> {
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(c)) if !is_forbidden_in_xml(c) => Ok(c),
            _ => Err(Error::xml(XmlReason::Entity, "invalid character reference")),
        };
    }
    match &**reference {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        other => Err(Error::xml(
            XmlReason::Entity,
            format!("unknown entity &{other};"),
        )),
    }
}

/// Writes `params` as `<xml>…</xml>`, fields in name order and `sign` last.
pub fn write(params: &Params) -> Result<String> {
    write_root(params, ROOT_XML)
}

/// Writes `params` under the given root element.
pub fn write_root(params: &Params, root: &str) -> Result<String> {
    let mut out = String::with_capacity(
        64 + params
            .iter()
            .map(|(k, v)| 2 * k.len() + v.len() + 16)
            .sum::<usize>(),
    );
    out.push('<');
    out.push_str(root);
    out.push('>');
    let sign = params.get_key_value(SIGN_FIELD);
    for (name, value) in params
        .iter()
        .filter(|(k, _)| k.as_str() != SIGN_FIELD)
        .chain(sign)
    {
        write_field(&mut out, name, value)?;
    }
    out.push_str("</");
    out.push_str(root);
    out.push('>');
    Ok(out)
}

fn write_field(out: &mut String, name: &str, value: &str) -> Result<()> {
    params::check_field_name(name)?;
    if value.chars().any(is_forbidden_in_xml) {
        return Err(Error::field(name, Rule::ControlCharacter));
    }
    out.push('<');
    out.push_str(name);
    out.push('>');
    out.push_str(&encode_value(value));
    out.push_str("</");
    out.push_str(name);
    out.push('>');
    Ok(())
}

/// Digits bare, values with `\r` escaped, everything else in CDATA.
fn encode_value(value: &str) -> Cow<'_, str> {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        Cow::Borrowed(value)
    } else if value.contains('\r') {
        Cow::Owned(escape_text(value))
    } else {
        let mut out = String::with_capacity(value.len() + 12);
        out.push_str("<![CDATA[");
        out.push_str(&value.replace("]]>", "]]]]><![CDATA[>"));
        out.push_str("]]>");
        Cow::Owned(out)
    }
}

fn escape_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 16);
    for c in value.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{declarations, may_hold_forbidden};
    use crate::text::is_forbidden_in_xml;

    fn contains_ignoring_case(haystack: &[u8], needle: &[u8]) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    }

    /// Bodies made of the bytes that matter to the fast checks.
    fn bodies() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "<!", "<", "!", "DOCTYPE", "doctype", "DocType", "ENTITY", "entity", "a", " ", "\t",
            "\n", "\r", "\u{1}", "\u{1f}", "\u{fffe}", "\u{ffff}", "\u{fffd}", "é", "中",
        ]);
        prop::collection::vec(pieces, 0..64).prop_map(|p| p.concat())
    }

    proptest! {
        #[test]
        fn the_byte_scans_agree_with_the_definitions(text in bodies()) {
            let body = text.as_bytes();
            if text.find(is_forbidden_in_xml).is_some() {
                prop_assert!(may_hold_forbidden(body));
            }
            prop_assert_eq!(
                declarations(body),
                (
                    contains_ignoring_case(body, b"<!DOCTYPE"),
                    contains_ignoring_case(body, b"<!ENTITY"),
                )
            );
        }
    }
}
