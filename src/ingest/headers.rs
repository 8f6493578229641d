//! What the journal keeps of a request's headers, and the ids read from them.

use super::Route;
use hyper::HeaderMap;

/// Headers that carry secrets; they are never stored or shown.
const SECRET_HEADERS: &[&str] = &["x-gitlab-token", "authorization", "proxy-authorization", "cookie"];

pub fn is_secret(name: &str) -> bool {
    SECRET_HEADERS.iter().any(|s| name.eq_ignore_ascii_case(s))
}

/// The headers as `[name, value]` pairs, without secret-bearing ones.
pub fn to_json(headers: &HeaderMap) -> String {
    let pairs: Vec<(&str, String)> = headers
        .iter()
        .filter(|(name, _)| !is_secret(name.as_str()))
        .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    serde_json::to_string(&pairs).expect("strings serialize")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_dropped_and_ids_found() {
        let mut h = HeaderMap::new();
        h.insert("x-gitlab-token", "tok".parse().unwrap());
        h.insert("x-gitlab-event-uuid", "uuid-1".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        let json = to_json(&h);
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
}
