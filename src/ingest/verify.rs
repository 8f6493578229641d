//! Signature and token checks, all in constant time and all before a body is parsed.
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
//! - GitLab: `X-Gitlab-Token` equal to the configured token; optionally also the Standard
//!   Webhooks signature (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`),
//!   HMAC-SHA256 over `id.timestamp.body` with the base64 key after `whsec_`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How far a Standard Webhooks timestamp may be from now.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

/// Why a delivery failed verification. The text is safe to show: it never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no secret is configured for this route, so every delivery is refused")]
    NoSecret,
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("{0} header is malformed: {1}")]
    Malformed(&'static str, &'static str),
    #[error("signature does not match the configured secret")]
    BadSignature,
    #[error("token does not match the configured token")]
    BadToken,
    #[error("webhook-timestamp is more than 5 minutes from now")]
    StaleTimestamp,
}

impl VerifyError {
    /// A short code for the journal's `verification` column.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::NoSecret => "no_secret",
            VerifyError::Missing(_) => "missing",
            VerifyError::Malformed(..) => "malformed_signature",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::BadToken => "bad_token",
            VerifyError::StaleTimestamp => "stale_timestamp",
        }
    }
}

/// The value of `X-Hub-Signature-256` for `body`.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn verify_github(secret: &str, header: Option<&[u8]>, body: &[u8]) -> Result<(), VerifyError> {
    const H: &str = "X-Hub-Signature-256";
    if secret.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let header = header.ok_or(VerifyError::Missing(H))?;
    let hex_sig = header.strip_prefix(b"sha256=").ok_or(VerifyError::Malformed(H, "expected the prefix sha256="))?;
    let given = hex::decode(hex_sig).map_err(|_| VerifyError::Malformed(H, "not hex"))?;
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&given).map_err(|_| VerifyError::BadSignature)
}

pub fn verify_token(expected: &str, header: Option<&[u8]>, name: &'static str) -> Result<(), VerifyError> {
    if expected.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let given = header.ok_or(VerifyError::Missing(name))?;
    // Compare digests so the comparison time depends on neither value's length.
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given);
    if bool::from(a.ct_eq(&b)) { Ok(()) } else { Err(VerifyError::BadToken) }
}

/// Standard Webhooks headers of one delivery.
pub struct StandardHeaders<'a> {
    pub id: Option<&'a [u8]>,
    pub timestamp: Option<&'a [u8]>,
    pub signature: Option<&'a [u8]>,
}

fn signing_key(token: &str) -> Vec<u8> {
    let raw = token.strip_prefix("whsec_").unwrap_or(token);
    B64.decode(raw).unwrap_or_else(|_| raw.as_bytes().to_vec())
}

/// The `v1,<base64>` signature for a Standard Webhooks delivery.
pub fn standard_signature(token: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(&signing_key(token)).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Checks a Standard Webhooks signature. `now` is `None` for a replay from the journal, where
/// the timestamp window (an anti-replay guard for the network) does not apply.
pub fn verify_standard(token: &str, h: &StandardHeaders<'_>, body: &[u8], now: Option<i64>) -> Result<(), VerifyError> {
    let id = h.id.ok_or(VerifyError::Missing("webhook-id"))?;
    let ts = h.timestamp.ok_or(VerifyError::Missing("webhook-timestamp"))?;
    let sigs = h.signature.ok_or(VerifyError::Missing("webhook-signature"))?;
    let ts: i64 = std::str::from_utf8(ts)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(VerifyError::Malformed("webhook-timestamp", "not a unix time"))?;
    // abs_diff: a difference of two arbitrary i64 overflows an i64 (found by fuzzing).
    if let Some(now) = now
        && now.abs_diff(ts) > TIMESTAMP_TOLERANCE_SECS.unsigned_abs()
    {
        return Err(VerifyError::StaleTimestamp);
    }
    let mut mac = HmacSha256::new_from_slice(&signing_key(token)).expect("HMAC takes any key length");
    mac.update(id);
    mac.update(format!(".{ts}.").as_bytes());
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    let sigs = std::str::from_utf8(sigs).map_err(|_| VerifyError::Malformed("webhook-signature", "not text"))?;
    // Several space-separated signatures may be sent during key rotation; one match is enough.
    let mut any_v1 = false;
    for sig in sigs.split_whitespace() {
        let Some(b64) = sig.strip_prefix("v1,") else { continue };
        any_v1 = true;
        if let Ok(given) = B64.decode(b64)
            && bool::from(given.as_slice().ct_eq(expected.as_slice()))
        {
            return Ok(());
        }
    }
    if any_v1 {
        Err(VerifyError::BadSignature)
    } else {
        Err(VerifyError::Malformed("webhook-signature", "expected v1,<base64>"))
    }
}

/// A salted digest of a presented token, kept in the journal instead of the token so that a
/// replay can re-check it against today's configured token.
pub fn token_fingerprint(salt: &[u8], token: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(token);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"zen":"Keep it logically awesome."}"#;

    #[test]
    fn github_good_bad_missing_prefix_other_secret() {
        let sig = github_signature("s3cret", BODY);
        assert!(verify_github("s3cret", Some(sig.as_bytes()), BODY).is_ok());
        assert_eq!(verify_github("s3cret", None, BODY), Err(VerifyError::Missing("X-Hub-Signature-256")));
        let no_prefix = sig.trim_start_matches("sha256=");
        assert!(matches!(verify_github("s3cret", Some(no_prefix.as_bytes()), BODY), Err(VerifyError::Malformed(..))));
        let sha1 = format!("sha1={}", no_prefix);
        assert!(matches!(verify_github("s3cret", Some(sha1.as_bytes()), BODY), Err(VerifyError::Malformed(..))));
        assert_eq!(verify_github("other", Some(sig.as_bytes()), BODY), Err(VerifyError::BadSignature));
        assert_eq!(verify_github("s3cret", Some(sig.as_bytes()), b"{}"), Err(VerifyError::BadSignature));
        assert_eq!(verify_github("", Some(sig.as_bytes()), BODY), Err(VerifyError::NoSecret));
        assert!(matches!(verify_github("s3cret", Some(b"sha256=zz"), BODY), Err(VerifyError::Malformed(..))));
    }

    #[test]
    fn github_known_vector() {
        // The example from GitHub's "Validating webhook deliveries" documentation.
        assert_eq!(
            github_signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn gitlab_token() {
        assert!(verify_token("tok", Some(b"tok"), "X-Gitlab-Token").is_ok());
        assert_eq!(verify_token("tok", Some(b"tok2"), "X-Gitlab-Token"), Err(VerifyError::BadToken));
        assert_eq!(verify_token("tok", None, "X-Gitlab-Token"), Err(VerifyError::Missing("X-Gitlab-Token")));
        assert_eq!(verify_token("", Some(b""), "X-Gitlab-Token"), Err(VerifyError::NoSecret));
    }

    #[test]
    fn standard_webhooks() {
        let token = format!("whsec_{}", B64.encode(b"signing key bytes"));
        let now = 1_700_000_000;
        let sig = standard_signature(&token, "msg_1", now, BODY);
        let h = |sig: &str| (sig.to_string(), now.to_string());
        let (s, t) = h(&sig);
        let headers =
            StandardHeaders { id: Some(b"msg_1"), timestamp: Some(t.as_bytes()), signature: Some(s.as_bytes()) };
        assert!(verify_standard(&token, &headers, BODY, Some(now + 10)).is_ok());
        assert_eq!(verify_standard(&token, &headers, BODY, Some(now + 301)), Err(VerifyError::StaleTimestamp));
        assert_eq!(verify_standard(&token, &headers, BODY, Some(now - 301)), Err(VerifyError::StaleTimestamp));
        assert!(verify_standard(&token, &headers, BODY, None).is_ok(), "replays skip the window");
        assert_eq!(verify_standard(&token, &headers, b"x", Some(now)), Err(VerifyError::BadSignature));
        let other = format!("whsec_{}", B64.encode(b"another key"));
        assert_eq!(verify_standard(&other, &headers, BODY, Some(now)), Err(VerifyError::BadSignature));
        let rotated = format!("v1,AAAA {s}");
        let headers2 = StandardHeaders { signature: Some(rotated.as_bytes()), ..headers };
        assert!(verify_standard(&token, &headers2, BODY, Some(now)).is_ok());
        let missing = StandardHeaders { id: None, timestamp: Some(t.as_bytes()), signature: Some(s.as_bytes()) };
        assert_eq!(verify_standard(&token, &missing, BODY, Some(now)), Err(VerifyError::Missing("webhook-id")));
    }
}
