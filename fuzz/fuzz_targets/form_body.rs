//! GitHub's `application/x-www-form-urlencoded` bodies (`payload=<json>`). The input is used
//! twice: as a form body (decoding must never panic), and, when it is text, as a JSON body that
//! must parse exactly as its form-encoded twin does.
#![no_main]

use agentctl::ingest::github;
use libfuzzer_sys::fuzz_target;

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

fuzz_target!(|data: &[u8]| {
    if let Ok(json) = github::json_body(FORM, data) {
        let _ = github::parse("issues", Some("application/json"), &json);
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let form = format!("zen=1&{}", form_urlencoded_pair("payload", text));
    assert_eq!(github::json_body(FORM, form.as_bytes()).as_deref(), Ok(data));
    for event in ["issues", "pull_request", "ping"] {
        let plain = github::parse(event, Some("application/json"), data);
        let encoded = github::parse(event, FORM, form.as_bytes());
        assert_eq!(format!("{plain:?}"), format!("{encoded:?}"), "a form body parses like its JSON");
    }
});

/// `name=value`, percent-encoded as GitHub does (spaces as `+`).
fn form_urlencoded_pair(name: &str, value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3 + name.len() + 1);
    for (i, part) in [name, value].into_iter().enumerate() {
        if i == 1 {
            out.push('=');
        }
        for b in part.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    out
}
