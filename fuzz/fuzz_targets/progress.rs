//! The handler's `::progress <0-100> [message]` lines (the handler runs code steered by issue
//! text, so its output is hostile too). Besides never panicking: a progress line is a
//! percentage of at most 100 and a trimmed message.
#![no_main]

use agentctl::worker::progress;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Some((percent, message)) = progress::parse(&line) {
        assert!(percent <= 100, "{percent}");
        assert_eq!(message.trim(), message);
        assert!(line.starts_with("::progress"));
    }
});
