//! Small text rules shared by the parser, the writer and the field checks.

use alloc::string::String;

/// Cuts `s` to at most `max` bytes without splitting a character.
pub(crate) fn truncate_on_char_boundary(s: &mut String, max: usize) {
    if s.len() > max {
        let cut = floor_char_boundary(s, max);
        s.truncate(cut);
    }
}

/// The largest index ≤ `max` that is a character boundary of `s`.
pub(crate) fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// True for characters XML 1.0 cannot carry, even escaped: C0 controls other
/// than tab, newline and carriage return, and the non-characters U+FFFE/U+FFFF.
pub(crate) fn is_forbidden_in_xml(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

/// True for any control character, including tab and newline, and for the
/// bidirectional overrides that can make text display differently from
/// what it is.
pub(crate) fn is_control_or_bidi(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}
