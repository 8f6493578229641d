//! GitHub deliveries: event header, content type and body are all the sender's choice.
//! Input: byte 0 picks the `X-GitHub-Event`, byte 1 the `Content-Type`, the rest is the body.
#![no_main]

use agentctl::ingest::github;
use libfuzzer_sys::fuzz_target;

const EVENTS: &[&str] = &["issues", "pull_request", "ping", "push", "issue_comment", ""];
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("  Application/X-WWW-Form-Urlencoded; charset=utf-8"),
];

fuzz_target!(|data: &[u8]| {
    let [e, c, body @ ..] = data else { return };
    let event = EVENTS[*e as usize % EVENTS.len()];
    let content_type = CONTENT_TYPES[*c as usize % CONTENT_TYPES.len()];
    if let Ok(p) = github::parse(event, content_type, body) {
        assert_eq!(p.event, event);
        agentctl_fuzz::decide_every_way(&p);
    }
});
