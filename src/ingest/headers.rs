//! What the journal keeps of a request's headers, and the ids read from them.

use super::Route;
use hyper::HeaderMap;

/// Headers that carry secrets; they are never stored or shown.
const SECRET_HEADERS: &[&str] = &["x-gitlab-token", "authorization", "proxy-authorization", "cookie"];

pub fn is_secret(name: &str) -> bool {
    SECRET_HEADERS.iter().any(|s| name.eq_ignore_ascii_case(s))
}

/// Headers worth keeping first when a rejected delivery's headers are cut: the ones that say
/// which forge sent what.
fn keep_first(name: &str) -> bool {
    ["x-github-", "x-gitlab-", "x-hub-signature", "webhook-", "idempotency-key", "content-type", "user-agent"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// A header value as text. hyper lets through bytes that are not UTF-8 (obs-text); each invalid
/// sequence becomes one `?` rather than a 3-byte U+FFFD, so the stored text is never larger than
/// the bytes received.
pub fn value_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push('?');
        }
    }
    out
}

/// The headers as a JSON array of `[name, value]` pairs, without secret-bearing ones. With a
/// `limit` (rejected deliveries), the JSON is at most that many bytes: the forge's own headers
/// come first, and the pair that does not fit is cut, the rest left out.
pub fn to_json(headers: &HeaderMap, limit: Option<usize>) -> String {
    let mut pairs: Vec<(&str, String)> = headers
        .iter()
        .filter(|(name, _)| !is_secret(name.as_str()))
        .map(|(name, value)| (name.as_str(), value_text(value.as_bytes())))
        .collect();
    let Some(limit) = limit else { return serde_json::to_string(&pairs).expect("strings serialize") };
    pairs.sort_by_key(|(name, _)| !keep_first(name));
    let mut out = String::from("[");
    for (name, mut value) in pairs {
        let room = limit.saturating_sub(out.len() + 2); // a comma, and the closing bracket
        let whole = value.len();
        let mut pair = serde_json::to_string(&(name, &value)).expect("strings serialize");
        while pair.len() > room && !value.is_empty() {
            // JSON escapes make the pair longer than its parts: cut by the excess and look again.
            let mut cut = value.len().saturating_sub(pair.len() - room);
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
            pair = serde_json::to_string(&(name, &value)).expect("strings serialize");
        }
        if pair.len() > room {
            break;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&pair);
        if value.len() < whole {
            break;
        }
    }
    out.push(']');
    out
}

/// A header map rebuilt from stored pairs (for replays).
pub fn from_pairs(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) =
            (hyper::header::HeaderName::from_bytes(name.as_bytes()), hyper::header::HeaderValue::from_str(value))
        {
            map.append(n, v);
        }
    }
    map
}

pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get(name).map(|v| v.as_bytes())
}

pub fn get_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty())
}

/// The forge's id for this delivery, used for dedupe: GitHub `X-GitHub-Delivery`; GitLab the
/// Standard Webhooks `webhook-id` when `signed_webhook_id` (the signature, which covers it, is
/// checked on this route), else `Idempotency-Key`, else `X-Gitlab-Event-UUID`. An id the
/// signature covers comes first: a captured signed delivery sent again with a new unsigned
/// `X-Gitlab-Event-UUID` is still the same delivery.
pub fn delivery_id(route: Route, headers: &HeaderMap, signed_webhook_id: bool) -> Option<String> {
    let id = match route {
        Route::Github => get_str(headers, "x-github-delivery"),
        Route::Gitlab | Route::GitlabSystem => signed_webhook_id
            .then(|| get_str(headers, "webhook-id"))
            .flatten()
            .or_else(|| get_str(headers, "idempotency-key"))
            .or_else(|| get_str(headers, "x-gitlab-event-uuid")),
    };
    id.map(|s| s.chars().take(200).collect())
}

/// The event a delivery's header names (`X-GitHub-Event`, `X-Gitlab-Event`), cut to 64
/// characters: all a rejected delivery can say of itself.
pub fn event(route: Route, headers: &HeaderMap) -> Option<String> {
    let name = match route {
        Route::Github => "x-github-event",
        Route::Gitlab | Route::GitlabSystem => "x-gitlab-event",
    };
    get_str(headers, name).map(|s| s.chars().take(64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_dropped_and_ids_found() {
        let mut h = HeaderMap::new();
        h.insert("x-gitlab-token", "tok".parse().unwrap());
        h.insert("x-gitlab-event-uuid", "uuid-1".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        let json = to_json(&h, None);
        assert!(!json.contains("tok\""), "{json}");
        assert!(json.contains("uuid-1"));
        assert_eq!(delivery_id(Route::Gitlab, &h, false).as_deref(), Some("uuid-1"));
        h.insert("idempotency-key", "idem".parse().unwrap());
        assert_eq!(delivery_id(Route::GitlabSystem, &h, false).as_deref(), Some("idem"));
        assert_eq!(delivery_id(Route::Github, &h, false), None);
        // The signed webhook-id wins, but only where the signature is checked.
        h.insert("webhook-id", "msg_1".parse().unwrap());
        assert_eq!(delivery_id(Route::Gitlab, &h, true).as_deref(), Some("msg_1"));
        assert_eq!(delivery_id(Route::Gitlab, &h, false).as_deref(), Some("idem"));
        let pairs: Vec<(String, String)> = serde_json::from_str(&json).unwrap();
        assert_eq!(from_pairs(&pairs).len(), 2);
    }

    /// A rejected delivery's headers are cut to the limit however they are made: many of them,
    /// long ones, ones full of bytes that are not UTF-8 or that JSON escapes.
    #[test]
    fn capped_headers_stay_under_the_limit() {
        let mut h = HeaderMap::new();
        for i in 0..50 {
            let junk = hyper::header::HeaderValue::from_bytes(&[0xff; 1000]).unwrap();
            h.append(hyper::header::HeaderName::from_bytes(format!("x-junk-{i}").as_bytes()).unwrap(), junk);
        }
        h.insert("x-quoted", "\"\\".repeat(2000).parse().unwrap());
        h.insert("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958".parse().unwrap());
        let full = to_json(&h, None);
        assert!(full.len() <= 50 * 1000 + 8000 + 2000, "invalid bytes are not inflated: {}", full.len());
        for limit in [0, 10, 100, 1000, 4096, 16 * 1024] {
            let json = to_json(&h, Some(limit));
            assert!(json.len() <= limit.max(2), "{limit}: {}", json.len());
            let pairs: Vec<(String, String)> = serde_json::from_str(&json).unwrap();
            if limit >= 100 {
                assert_eq!(pairs[0].0, "x-github-delivery", "the forge's headers are kept first");
            }
        }
        assert_eq!(value_text(b"ok \xff\xfe\xc3"), "ok ???");
    }
}
