//! Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) as GitLab sends
//! them. Input: 8 bytes of "now" (little-endian i64), a flags byte (which headers are present,
//! whether the check is live or a replay), then token, id, timestamp, signature and body
//! separated by NUL bytes. Besides never panicking: a live delivery passes only inside the
//! timestamp window, and a signature agentctl computes verifies.
#![no_main]

use agentctl::ingest::verify::{StandardHeaders, TIMESTAMP_TOLERANCE_SECS, standard_signature, verify_standard};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let now = i64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let flags = data[8];
    let [token, id, ts, sig, body] = agentctl_fuzz::fields(&data[9..], 5)[..] else { unreachable!() };
    let token = String::from_utf8_lossy(token);
    let h = StandardHeaders {
        id: (flags & 1 == 0).then_some(id),
        timestamp: (flags & 2 == 0).then_some(ts),
        signature: (flags & 4 == 0).then_some(sig),
    };
    let live = (flags & 8 == 0).then_some(now);
    let result = verify_standard(&token, &h, body, live);

    let parsed_ts = std::str::from_utf8(ts).ok().and_then(|s| s.trim().parse::<i64>().ok());
    if result.is_ok() {
        let ts = parsed_ts.expect("a verified delivery has a unix timestamp");
        if let Some(now) = live {
            assert!((now as i128 - ts as i128).abs() <= TIMESTAMP_TOLERANCE_SECS as i128, "now {now}, ts {ts}");
        }
    }
    // What agentctl would sign, it accepts (as a replay, where the window does not apply).
    if let (Ok(id), Some(ts)) = (std::str::from_utf8(id), parsed_ts) {
        let good = standard_signature(&token, id, ts, body);
        let ts_text = ts.to_string();
        let h = StandardHeaders {
            id: Some(id.as_bytes()),
            timestamp: Some(ts_text.as_bytes()),
            signature: Some(good.as_bytes()),
        };
        assert_eq!(verify_standard(&token, &h, body, None), Ok(()));
    }
});
