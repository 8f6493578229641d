//! The handler's stdout protocol: a line `::progress <0-100> [message]` reports progress; every
//! other line is the task's log.

/// `Some((percent, message))` for a progress line.
pub fn parse(line: &str) -> Option<(u8, String)> {
    let rest = line.trim_end().strip_prefix("::progress")?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim_start();
    let (num, message) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let percent: f64 = num.trim_end_matches('%').parse().ok()?;
    if !(0.0..=100.0).contains(&percent) {
        return None;
    }
    Some((percent.round() as u8, message.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn progress_lines() {
        assert_eq!(parse("::progress 40 cloning repo"), Some((40, "cloning repo".into())));
        assert_eq!(parse("::progress 100"), Some((100, String::new())));
        assert_eq!(parse("::progress 12.6% half"), Some((13, "half".into())));
        assert_eq!(parse("::progress 101 too far"), None);
        assert_eq!(parse("::progress x"), None);
        assert_eq!(parse("::progressive 5"), None);
        assert_eq!(parse("building ::progress 5"), None);
    }
}
