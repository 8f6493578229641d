//! How hard the forge clients try one request, and when an answer is worth asking again: the
//! backoff, `Retry-After` and both forges' rate-limit headers. Kept apart from the HTTP layer
//! (`client`) so the policy can be read, and unit-tested, without a socket.

use reqwest::header::HeaderMap;
use std::time::Duration;

/// How hard to try one request.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The first backoff; it doubles with each retry.
    pub base: Duration,
    /// The longest wait between tries: a `Retry-After` or rate-limit reset further out than
    /// this fails the request instead (the poller tries again next cycle, label operations
    /// later).
    pub max_wait: Duration,
    /// Per request, connection included.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Whether a request may be sent again after an answer that leaves unknown whether the forge
/// acted on it (a 5xx, a timeout, a connection lost mid-answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Asking twice does no harm: reads, edits that set a value, label changes, and creations
    /// whose duplicate the forge refuses and the caller resolves (a second pull request for one
    /// branch is answered 422/409, and the first one is looked up).
    Always,
    /// A creation the forge would make twice (a comment): sent again only when the forge
    /// certainly did not act on it: no connection was made, or it answered 429 or a rate-limit
    /// 403, which are refusals before any work. Never after a 5xx or a timeout.
    OnlyUnsent,
}

impl Replay {
    /// Whether a failed try may be repeated at all (`retry_delay` then says when). `status` None
    /// is a transport error; `connected` says whether it happened after the connection was made.
    pub fn allows(self, status: Option<u16>, connected: bool) -> bool {
        match self {
            Replay::Always => true,
            Replay::OnlyUnsent => match status {
                None => !connected,
                Some(status) => matches!(status, 429 | 403),
            },
        }
    }
}

/// The reset time when a response says the rate limit is used up (GitHub `x-ratelimit-*`,
/// GitLab `RateLimit-*`; both give the reset as Unix seconds).
pub(super) fn exhausted_until(headers: &HeaderMap) -> Option<u64> {
    let num = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
    let remaining = num("x-ratelimit-remaining").or_else(|| num("ratelimit-remaining"))?;
    if remaining > 0 {
        return None;
    }
    num("x-ratelimit-reset").or_else(|| num("ratelimit-reset"))
}

/// How long to wait before trying again, or None when the answer is final. `status` None is a
/// transport error (no answer, timeout). `attempt` counts from 1.
pub fn retry_delay(
    status: Option<u16>,
    headers: Option<&HeaderMap>,
    attempt: u32,
    policy: &RetryPolicy,
    now_unix: u64,
) -> Option<Duration> {
    let retry_after = headers
        .and_then(|h| h.get(reqwest::header::RETRY_AFTER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let reset = headers.and_then(exhausted_until).map(|r| Duration::from_secs(r.saturating_sub(now_unix) + 1));
    let retryable = match status {
        None => true,
        Some(429 | 500 | 502 | 503 | 504) => true,
        // GitHub answers 403 to an exhausted or secondary rate limit, with these headers.
        Some(403) => retry_after.is_some() || reset.is_some(),
        Some(_) => false,
    };
    if !retryable {
        return None;
    }
    let backoff = policy.base.saturating_mul(1 << (attempt.saturating_sub(1)).min(16));
    let wait = retry_after.or(reset).unwrap_or(backoff.min(policy.max_wait));
    (wait <= policy.max_wait).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn backoff_doubles_and_honours_the_headers() {
        let p = RetryPolicy { attempts: 5, base: Duration::from_millis(100), ..RetryPolicy::default() };
        let s = |ms| Some(Duration::from_millis(ms));
        assert_eq!(retry_delay(None, None, 1, &p, 0), s(100));
        assert_eq!(retry_delay(Some(502), None, 2, &p, 0), s(200));
        assert_eq!(retry_delay(Some(503), None, 4, &p, 0), s(800));
        assert_eq!(retry_delay(Some(404), None, 1, &p, 0), None, "a 404 is final");
        assert_eq!(retry_delay(Some(422), None, 1, &p, 0), None);
        assert_eq!(retry_delay(Some(403), None, 1, &p, 0), None, "a plain 403 is final");
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(retry_delay(Some(429), Some(&h), 1, &p, 0), s(7000));
        // GitHub's exhausted primary limit: 403 with remaining 0 and the reset time.
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1010")]);
        assert_eq!(retry_delay(Some(403), Some(&h), 1, &p, 1000), s(11_000));
        // GitLab's names.
        let h = headers(&[("RateLimit-Remaining", "0"), ("RateLimit-Reset", "1003")]);
        assert_eq!(retry_delay(Some(429), Some(&h), 1, &p, 1000), s(4000));
        // A wait longer than max_wait fails now rather than holding the caller.
        let h = headers(&[("retry-after", "3600")]);
        assert_eq!(retry_delay(Some(429), Some(&h), 1, &p, 0), None);
        // Backoff never exceeds max_wait.
        assert_eq!(retry_delay(Some(500), None, 30, &p, 0), Some(p.max_wait));
    }

    #[test]
    fn a_creation_is_repeated_only_when_it_was_certainly_not_acted_on() {
        for status in [None, Some(500), Some(502), Some(503), Some(429), Some(403)] {
            assert!(Replay::Always.allows(status, true), "{status:?}");
        }
        assert!(Replay::OnlyUnsent.allows(None, false), "the connection was never made");
        assert!(!Replay::OnlyUnsent.allows(None, true), "a timeout: it may have been posted");
        assert!(!Replay::OnlyUnsent.allows(Some(502), true), "a 5xx: it may have been posted");
        assert!(Replay::OnlyUnsent.allows(Some(429), true), "refused by the rate limit");
        // A 403 is only retried with rate-limit headers; retry_delay still says so.
        assert!(Replay::OnlyUnsent.allows(Some(403), true));
    }

    #[test]
    fn remaining_above_zero_is_not_a_pause() {
        let h = headers(&[("x-ratelimit-remaining", "12"), ("x-ratelimit-reset", "99")]);
        assert_eq!(exhausted_until(&h), None);
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "99")]);
        assert_eq!(exhausted_until(&h), Some(99));
    }
}
