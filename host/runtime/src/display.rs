//! Text from others made safe to show: every table cell and line `zu` prints
//! (and every line of a plugin process's stderr it forwards)
//! from plugin, MCP server, model or log data goes through [`escape`] (or
//! [`escape_lines`]), so nothing it says can move the cursor, retitle or clear
//! the terminal, overwrite or hide text, or reorder what is shown.
//!
//! Escaped are the C0 controls (U+0000..U+001F), DEL (U+007F), the C1
//! controls (U+0080..U+009F, among them U+009B, a one-character CSI) and the
//! bidi embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069).
//! The style, one for all: `\n`, `\r` and `\t` by name, any other C0 control
//! and DEL as `\xNN` (`\x1b`), everything else as `\u{N}` (`\u{9b}`,
//! `\u{202e}`). Nothing is dropped; a backslash is left as it is, so the
//! escaping is for eyes, not to be undone. Text that needs none is borrowed.
//!
//! JSON output goes through [`json`] instead: serde_json escapes C0 controls
//! but writes DEL, C1 and bidi characters raw, so those become `\u009b` and
//! the like — the same JSON value, spelled so a terminal shows it inert.

use std::borrow::Cow;

/// A character that must not reach a terminal as it is.
fn hostile(c: char) -> bool {
    matches!(c, '\0'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escaped(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    let must = |c: char| hostile(c) && !keep(c);
    let Some(first) = s.find(must) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        match c {
            c if !must(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0'..='\x1f' | '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// `s` fit for one table cell or one line: every character above escaped,
/// `\n` and `\t` too, so it cannot break a line or a column.
pub fn escape(s: &str) -> Cow<'_, str> {
    escaped(s, |_| false)
}

/// `s` fit for a message that may span lines (a parse error with its
/// snippet, say): as [`escape`], but `\n` and `\t` are kept.
pub fn escape_lines(s: &str) -> Cow<'_, str> {
    escaped(s, |c| c == '\n' || c == '\t')
}

/// JSON text (from serde_json) with DEL, the C1 controls and the bidi
/// characters spelled as JSON escapes (`\u009b`): the same value, inert on a
/// terminal. Such characters can only stand inside JSON strings, where the
/// escape means the same; serde_json already escapes C0 controls there, and
/// the newlines of pretty-printed JSON are kept.
pub fn json(text: &str) -> Cow<'_, str> {
    let Some(first) = text.find(|c: char| hostile(c) && c >= '\x7f') else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        if hostile(c) && c >= '\x7f' {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(c: Cow<'_, str>) -> bool {
        matches!(c, Cow::Owned(_))
    }

    #[test]
    fn plain_and_multibyte_text_is_borrowed_unchanged() {
        for s in [
            "",
            "file_read",
            "harness.tool.invoked",
            r"C:\logs\zu.jsonl",
            "{\"a\":\"\\u001b\"}",
            "naïve café — 日本語 🦀",
            "\u{a0}\u{ff}\u{100}\u{2029}\u{2065}\u{206a}\u{202f}",
        ] {
            let e = escape(s);
            assert!(!owned(e.clone()), "{s:?}");
            assert_eq!(e, s);
            assert_eq!(escape_lines(s), s);
        }
    }

    #[test]
    fn c0_controls_are_escaped_named_or_as_hex() {
        assert_eq!(escape("a\nb\tc\rd"), r"a\nb\tc\rd");
        assert_eq!(escape("\x1b]0;pwned\x07\x1b[2J"), r"\x1b]0;pwned\x07\x1b[2J");
        assert_eq!(escape("\0\x01\x08\x0b\x0c\x0e\x1f"), r"\x00\x01\x08\x0b\x0c\x0e\x1f");
        for b in 0u8..0x20 {
            let e = escape(std::str::from_utf8(&[b]).unwrap()).into_owned();
            assert!(
                e.starts_with('\\') && e.chars().all(|c| c.is_ascii_graphic()),
                "{b:#x}: {e}"
            );
        }
    }

    #[test]
    fn del_c1_and_bidi_controls_are_escaped() {
        assert_eq!(escape("x\x7fy"), r"x\x7fy");
        assert_eq!(escape("\u{9b}31m"), r"\u{9b}31m");
        assert_eq!(escape("\u{80}\u{85}\u{9f}"), r"\u{80}\u{85}\u{9f}");
        assert_eq!(
            escape("\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}"),
            r"\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}"
        );
        assert_eq!(
            escape("\u{2066}\u{2067}\u{2068}\u{2069}"),
            r"\u{2066}\u{2067}\u{2068}\u{2069}"
        );
        assert_eq!(escape("é\u{202e}txt.exe日"), r"é\u{202e}txt.exe日");
    }

    #[test]
    fn escape_lines_keeps_newlines_and_tabs_only() {
        assert_eq!(escape_lines("line 1\n\tline 2"), "line 1\n\tline 2");
        assert_eq!(
            escape_lines("a\r\n\x1b[2J\u{9b}1m\u{202e}"),
            "a\\r\n\\x1b[2J\\u{9b}1m\\u{202e}"
        );
    }

    #[test]
    fn json_output_stays_the_same_json_with_every_hostile_character_escaped() {
        let value = serde_json::json!({
            "name": "\x1b]0;pwned\x07\x1b[2J\u{9b}31m\u{202e}\u{2066}x\r\n\x7f",
            "plain": "naïve 日本語 🦀 \\ \"q\"",
            "\u{85}key": [1, "\u{2069}"],
        });
        for text in [value.to_string(), serde_json::to_string_pretty(&value).unwrap()] {
            let safe = json(&text);
            assert!(!safe.chars().any(|c| hostile(c) && c != '\n'), "{safe}");
            assert!(safe.contains(r"\u009b31m\u202e\u2066x\r\n\u007f"), "{safe}");
            assert_eq!(serde_json::from_str::<serde_json::Value>(&safe).unwrap(), value);
        }
        let plain = serde_json::json!({"a": "naïve 日本語", "b": [1, 2]}).to_string();
        assert!(matches!(json(&plain), Cow::Borrowed(_)));
    }

    #[test]
    fn nothing_hostile_survives_in_any_character() {
        for c in (0..0x3000).filter_map(char::from_u32) {
            let s = format!("a{c}b");
            let e = escape(&s);
            assert!(!e.chars().any(hostile), "{c:?}: {e}");
            assert_eq!(owned(e), hostile(c), "{c:?}");
        }
    }
}
