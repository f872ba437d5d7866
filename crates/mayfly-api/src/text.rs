//! Text from outside (archive entry names, error texts of decoders, anything an image says)
//! made safe to print: no control character reaches a terminal, where an escape sequence could
//! rewrite the screen, set the window title or worse.
//!
//! Control characters become escapes (`\x1b`, `\u{9b}`), bytes that are not UTF-8 `\xNN`;
//! [`printable`] keeps newlines and tabs, which messages use for layout.

use std::borrow::Cow;
use std::fmt::Write as _;

fn escape(c: char, out: &mut String) {
    if (c as u32) < 0x80 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

/// `text` with every control character but newline and tab escaped; borrowed when there is
/// none.
pub fn printable(text: &str) -> Cow<'_, str> {
    let needs = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs(c) {
            escape(c, &mut out);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A name given as bytes (an archive entry's, a link target) as messages show it: UTF-8 as
/// is, every byte that is not UTF-8 as `\xNN`, every control character (newlines and tabs
/// included: a name is one line) escaped.
pub fn show_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                escape(c, &mut out);
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bad_bytes_are_escaped() {
        assert!(matches!(printable("plain\n\ttext é"), Cow::Borrowed(_)));
        assert_eq!(
            printable("a\x1b[2Jb\rc\0d\u{9b}e\x7f\nf"),
            "a\\x1b[2Jb\\x0dc\\x00d\\u{9b}e\\x7f\nf"
        );
        assert_eq!(
            show_bytes(b"etc/\xff\xfe\x1b]0;owned\x07/ok\n\xc3\xa9"),
            "etc/\\xff\\xfe\\x1b]0;owned\\x07/ok\\x0aé"
        );
    }
}
