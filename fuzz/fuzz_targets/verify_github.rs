//! `X-Hub-Signature-256` and `X-Gitlab-Token` checks. Input: secret, header and body separated
//! by NUL bytes. Besides never panicking: the signature agentctl computes for a body verifies,
//! and a header that verifies is that signature (hex case aside); a token verifies only when
//! it is the configured one.
#![no_main]

use agentctl::ingest::verify::{VerifyError, github_signature, verify_github, verify_token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [secret, header, body] = agentctl_fuzz::fields(data, 3)[..] else { unreachable!() };
    let secret = String::from_utf8_lossy(secret);

    let result = verify_github(&secret, Some(header), body);
    let good = github_signature(&secret, body);
    if secret.is_empty() {
        assert_eq!(result, Err(VerifyError::NoSecret));
    } else {
        assert_eq!(verify_github(&secret, Some(good.as_bytes()), body), Ok(()));
        if result.is_ok() {
            let given = std::str::from_utf8(header).expect("a verified header is hex");
            assert!(given.starts_with("sha256=") && given[7..].eq_ignore_ascii_case(&good[7..]), "{given}");
        }
    }
    assert!(verify_github(&secret, None, body).is_err());

    let token = verify_token(&secret, Some(header), "X-Gitlab-Token");
    assert_eq!(token.is_ok(), !secret.is_empty() && header == secret.as_bytes());
});
