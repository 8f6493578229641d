//! Text from outside (unauthenticated webhook bodies and headers, handler output) made safe to
//! print on a terminal. An ESC or another control character in such text would be read by the
//! terminal as a command: it can move the cursor, rewrite what was printed before, change the
//! window title or, on some terminals, answer back into the input. Everything that prints such
//! text goes through these two functions.

use std::borrow::Cow;

/// Whether `c` could make a terminal do something other than show a character: C0 controls
/// (ESC, CR, BEL, …), DEL, C1 controls (U+0080–U+009F; U+009B is a one-character CSI), and the
/// bidirectional overrides and isolates that make text read differently from how it is stored.
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn strip(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().filter(|&c| !is_unsafe(c) || keep(c)).collect())
}

/// For multi-line output (a payload, a log tail): control characters are removed, except line
/// feeds and tabs.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    strip(s, |c| c == '\n' || c == '\t')
}

/// For one line of output (a table cell, a header value): every control character is removed,
/// line feeds and tabs too.
pub fn for_terminal_line(s: &str) -> Cow<'_, str> {
    strip(s, |_| false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_go_newlines_stay_where_asked() {
        let hostile = "title\x1b]0;owned\x07 \x1b[2J\rred\u{9b}31m\x7f\u{202e}txt.exe\nnext\tcol";
        assert_eq!(for_terminal(hostile), "title]0;owned [2Jred31mtxt.exe\nnext\tcol");
        assert_eq!(for_terminal_line(hostile), "title]0;owned [2Jred31mtxt.exenextcol");
        assert!(matches!(for_terminal("plain ünïcode ✓\n"), Cow::Borrowed(_)), "clean text is not copied");
    }
}
