//! Text that reaches a terminal. Handler output and unauthenticated request bodies may carry
//! escape sequences (cursor moves, colour, title changes, clearing the screen); shown raw they
//! can rewrite what an operator sees. Everything such a source produces goes through
//! [`strip_controls`] before it is drawn or printed.

use std::borrow::Cow;

/// `s` without control characters (C0, DEL, C1), keeping `\n` and `\t`. Borrows when there is
/// nothing to remove.
pub fn strip_controls(s: &str) -> Cow<'_, str> {
    let is_bad = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !s.chars().any(is_bad) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().filter(|c| !is_bad(*c)).collect())
}

#[cfg(test)]
mod tests {
    use super::strip_controls;
    use std::borrow::Cow;

    #[test]
    fn removes_escapes_and_keeps_newlines_and_tabs() {
        assert!(matches!(strip_controls("plain\ttext\n"), Cow::Borrowed("plain\ttext\n")));
        assert_eq!(strip_controls("\x1b[2J\x1b]0;owned\x07red\x1b[31m!\r"), "[2J]0;ownedred[31m!");
        assert_eq!(strip_controls("a\u{9b}31mb\x7fc\0d"), "a31mbcd");
        assert_eq!(strip_controls("héllo ✓"), "héllo ✓");
    }
}
