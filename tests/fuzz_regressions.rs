//! Inputs the fuzz targets (fuzz/) and the property tests (tests/properties.rs) found to break a
//! parser, each kept as a plain test so the fix stays fixed.

use agentctl::ingest::verify::{StandardHeaders, VerifyError, standard_signature, verify_standard};

/// verify_standard computed `(now - ts).abs()`, which overflows (a panic in a debug build, a
/// wrapped and so wrong window in release) for a timestamp far from now: here a sender's
/// `webhook-timestamp: -1` against a clock at `i64::MAX`, and `i64::MIN` against a real clock.
/// Found by the property test and, independently, by the `verify_standard` fuzz target (its
/// input is kept as `fuzz/corpus/verify_standard/overflow-i64-min.bin`).
#[test]
fn an_extreme_standard_webhooks_timestamp_is_stale_not_a_panic() {
    let token = "whsec_c2lnbmluZyBrZXkgYnl0ZXM=";
    for (ts, now) in [(-1, i64::MAX), (i64::MIN, 1_700_000_000), (i64::MAX, -1), (i64::MIN, i64::MAX)] {
        let sig = standard_signature(token, "msg_1", ts, b"{}");
        let ts_text = ts.to_string();
        let h = StandardHeaders {
            id: Some(b"msg_1"),
            timestamp: Some(ts_text.as_bytes()),
            signature: Some(sig.as_bytes()),
        };
        assert_eq!(verify_standard(token, &h, b"{}", Some(now)), Err(VerifyError::StaleTimestamp), "{ts} at {now}");
        assert_eq!(verify_standard(token, &h, b"{}", None), Ok(()), "a replay skips the window");
    }
}
