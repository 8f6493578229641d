//! GitHub deliveries: the body (JSON, or form-encoded `payload=`) parsed into a [`Parsed`].
//! Only the fields the filter and the task need are read; the rest of the payload stays in the
//! journal as received.

use super::{Change, ParseError, Parsed};
use crate::task::{Item, Kind, Source};
use serde::Deserialize;

#[derive(Deserialize)]
struct Payload {
    action: Option<String>,
    issue: Option<Issue>,
    pull_request: Option<Issue>,
    label: Option<Label>,
    repository: Option<Repository>,
    sender: Option<User>,
}

#[derive(Deserialize)]
struct Issue {
    number: u64,
    #[serde(default)]
    title: String,
    #[serde(default)]
    html_url: String,
    user: Option<User>,
    labels: Option<Vec<Label>>,
}

#[derive(Deserialize)]
struct Label {
    name: String,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

/// The JSON document of a delivery: the body itself (borrowed, not copied), or the `payload`
/// field of a form body.
pub fn json_body<'a>(content_type: Option<&str>, body: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, ParseError> {
    let is_form = content_type
        .map(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
        .unwrap_or(false);
    if !is_form {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| std::borrow::Cow::Owned(v.into_owned().into_bytes()))
        .ok_or_else(|| ParseError("form-encoded body has no payload= field".into()))
}

pub fn parse(event: &str, content_type: Option<&str>, body: &[u8]) -> Result<Parsed, ParseError> {
    let json = json_body(content_type, body)?;
    let p: Payload =
        serde_json::from_slice(&json).map_err(|e| ParseError(format!("body is not a GitHub {event} payload: {e}")))?;
    let mut parsed = Parsed {
        source: Source::Github,
        event: event.to_string(),
        action: p.action.clone(),
        item: None,
        change: Change::Unhandled(String::new()),
        sender: p.sender.map(|s| s.login),
    };
    if event == "ping" {
        parsed.change = Change::Ping;
        return Ok(parsed);
    }
    let (kind, issue) = match event {
        "issues" => (Kind::Issue, p.issue),
        "pull_request" => (Kind::PullRequest, p.pull_request),
        other => {
            parsed.change = Change::Unhandled(format!("event '{other}' is not handled"));
            return Ok(parsed);
        }
    };
    let issue = issue.ok_or_else(|| ParseError(format!("{event} payload has no {} object", kind.as_str())))?;
    let repo = p.repository.ok_or_else(|| ParseError(format!("{event} payload has no repository")))?;
    parsed.item = Some(Item {
        source: Source::Github,
        kind,
        repo_full_name: repo.full_name,
        number: issue.number,
        project_id: None,
        url: issue.html_url,
        title: issue.title,
        author: issue.user.map(|u| u.login).unwrap_or_default(),
        labels: issue.labels.unwrap_or_default().into_iter().map(|l| l.name).collect(),
    });
    parsed.change = match p.action.as_deref() {
        Some("labeled") => match p.label {
            Some(l) => Change::Labeled(l.name),
            None => return Err(ParseError("labeled payload has no label".into())),
        },
        Some("unlabeled") => match p.label {
            Some(l) => Change::Unlabeled(l.name),
            None => return Err(ParseError("unlabeled payload has no label".into())),
        },
        Some("opened") | Some("reopened") => Change::Opened,
        Some(other) => Change::Unhandled(format!("action '{other}' is not handled")),
        None => return Err(ParseError(format!("{event} payload has no action"))),
    };
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::testdata::payload;

    #[test]
    fn issue_labeled() {
        let p = parse("issues", Some("application/json"), &payload("github/issues.labeled.json")).unwrap();
        assert_eq!(p.action.as_deref(), Some("labeled"));
        assert_eq!(p.change, Change::Labeled("bug".into()));
        let item = p.item.unwrap();
        assert_eq!(item.kind, Kind::Issue);
        assert_eq!(item.repo_full_name, "Codertocat/Hello-World");
        assert_eq!(item.number, 1);
        assert_eq!(item.url, "https://github.com/Codertocat/Hello-World/issues/1");
        assert_eq!(item.title, "Spelling error in the README file");
        assert_eq!(item.author, "Codertocat");
        assert_eq!(item.labels, vec!["bug"]);
        assert_eq!(p.sender.as_deref(), Some("Codertocat"));
    }

    #[test]
    fn pull_request_labeled() {
        let p = parse("pull_request", None, &payload("github/pull_request.labeled.json")).unwrap();
        let item = p.item.unwrap();
        assert_eq!(item.kind, Kind::PullRequest);
        assert_eq!(item.number, 2);
        assert_eq!(item.url, "https://github.com/Codertocat/Hello-World/pull/2");
    }

    #[test]
    fn form_encoded_body() {
        let json = payload("github/issues.labeled.json");
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", std::str::from_utf8(&json).unwrap())
            .finish();
        let p = parse("issues", Some("application/x-www-form-urlencoded"), form.as_bytes()).unwrap();
        assert_eq!(p.item.unwrap().number, 1);
        let err = parse("issues", Some("application/x-www-form-urlencoded"), b"other=1").unwrap_err();
        assert!(err.0.contains("payload="));
    }

    #[test]
    fn ping_push_and_garbage() {
        let p = parse("ping", None, &payload("github/ping.json")).unwrap();
        assert_eq!(p.change, Change::Ping);
        let p = parse("push", None, &payload("github/push.json")).unwrap();
        assert_eq!(p.change, Change::Unhandled("event 'push' is not handled".into()));
        assert!(parse("issues", None, b"{not json").is_err());
        assert!(parse("issues", None, b"{\"action\":\"labeled\"}").is_err());
    }

    #[test]
    fn opened_and_closed() {
        let p = parse("issues", None, &payload("github/issues.opened.json")).unwrap();
        assert_eq!(p.change, Change::Opened);
        let p = parse("pull_request", None, &payload("github/pull_request.closed.json")).unwrap();
        assert_eq!(p.change, Change::Unhandled("action 'closed' is not handled".into()));
    }
}
