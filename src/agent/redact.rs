//! Redaction of text that leaves agentctl for a public place — the progress comment on the
//! item (issues can be public), the log lines quoted in it. Agent output may echo anything it
//! read: environment variables, a remote URL with credentials, a token pasted into a config.
//! Known secret values are masked wherever they appear; so are the shapes of the common forge
//! and API tokens and the password in a URL's user info, whoever's they are.

use regex::Regex;
use std::sync::LazyLock;

/// What a masked secret is replaced with.
pub const MASK: &str = "[redacted]";

/// Token shapes; each is replaced by `$1` (the part kept, e.g. the key of `key=value`) and the
/// mask.
static PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // GitHub: classic, fine-grained, OAuth, app, refresh tokens.
        r"()\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",
        // GitLab personal, project, group, deploy, runner tokens.
        r"()\bgl(?:pat|dt|rt|ptt|cbt|soat|ft|imt|agent)-[A-Za-z0-9_\-]{16,}",
        // OpenAI / Anthropic style API keys.
        r"()\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}",
        // Slack tokens; AWS access key ids.
        r"()\bxox[abposr]-[A-Za-z0-9\-]{10,}",
        r"()\bAKIA[0-9A-Z]{16}\b",
        // Authorization headers and `token=`-style assignments.
        r"(?i)(\b(?:bearer|token|basic)\s+)[A-Za-z0-9_\-\.=:/+]{12,}",
        // `KEY=value`, `"token": "value"`: the key stays. Not `x-access-token:` (a URL's user).
        r#"(?i)((?:^|[\s"'{,;(_])(?:password|passwd|secret|token|api[_-]?key)["']?\s*[=:]\s*["']?)[^\s"'&@]{6,}"#,
        // Webhook secrets of the Standard Webhooks form.
        r"()\bwhsec_[A-Za-z0-9+/=]{16,}",
    ]
    .iter()
    .map(|p| Regex::new(p).expect("the patterns compile"))
    .collect()
});

static URL_USERINFO: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([a-zA-Z][a-zA-Z0-9+.\-]*://)([^/@\s:]+):([^/@\s]+)@").expect("compiles"));

/// Masks secrets in `text`: the `known` values (agentctl's own tokens and secrets; empty ones are
/// skipped), token-shaped words, and URL passwords.
pub fn redact(text: &str, known: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in known.iter().filter(|s| s.len() >= 4) {
        if out.contains(secret) {
            out = out.replace(secret, MASK);
        }
    }
    out = URL_USERINFO.replace_all(&out, format!("${{1}}${{2}}:{MASK}@")).into_owned();
    for re in PATTERNS.iter() {
        if re.is_match(&out) {
            out = re.replace_all(&out, format!("${{1}}{MASK}")).into_owned();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_known_values_token_shapes_and_url_passwords() {
        let text = "push to https://x-access-token:s3cr3tvalue@github.com/o/r.git failed\n\
                    GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789\n\
                    using glpat-ABCDEFGHIJKLMNOPQRST and sk-ant-api03-abcdefghijklmnopqrstuvwx\n\
                    Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig\n\
                    my webhook secret is hunter2-but-longer";
        let out = redact(text, &["hunter2-but-longer", ""]);
        for leaked in ["s3cr3tvalue", "ghp_abc", "glpat-ABC", "sk-ant-api03", "eyJhbGciOi", "hunter2"] {
            assert!(!out.contains(leaked), "{leaked} leaked: {out}");
        }
        assert!(out.contains("https://x-access-token:[redacted]@github.com/o/r.git"), "{out}");
        assert!(out.contains("failed"), "ordinary words stay: {out}");
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let text = "test result: ok. 42 passed; the token bucket has 5 tokens left; see https://example.com/a@b";
        assert_eq!(redact(text, &[]), text);
    }
}
