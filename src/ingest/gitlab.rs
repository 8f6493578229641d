//! GitLab deliveries (project/group webhooks and system hooks) parsed into a [`Parsed`].
//! Dispatch is on the body's `object_kind`, because system hooks all arrive as
//! `X-Gitlab-Event: System Hook`. Label changes are read from `changes.labels`.

use super::{Change, ParseError, Parsed};
use crate::task::{Item, Kind, Source};
use serde::Deserialize;

#[derive(Deserialize)]
struct Payload {
    object_kind: Option<String>,
    event_name: Option<String>,
    user: Option<User>,
    project: Option<Project>,
    object_attributes: Option<Attributes>,
    labels: Option<Vec<Label>>,
    changes: Option<Changes>,
}

#[derive(Deserialize)]
struct User {
    username: Option<String>,
}

#[derive(Deserialize)]
struct Project {
    id: Option<u64>,
    path_with_namespace: String,
    web_url: Option<String>,
}

#[derive(Deserialize)]
struct Attributes {
    iid: u64,
    #[serde(default)]
    title: String,
    #[serde(default)]
    url: String,
    action: Option<String>,
    author_id: Option<u64>,
    target_project_id: Option<u64>,
}

#[derive(Deserialize)]
struct Label {
    title: String,
}

#[derive(Deserialize)]
struct Changes {
    labels: Option<LabelChange>,
}

#[derive(Deserialize)]
struct LabelChange {
    previous: Option<Vec<Label>>,
    current: Option<Vec<Label>>,
}

/// `system` is true for `/webhook/gitlab/system`, where only merge requests are tasks.
pub fn parse(body: &[u8], system: bool) -> Result<Parsed, ParseError> {
    let p: Payload =
        serde_json::from_slice(body).map_err(|e| ParseError(format!("body is not a GitLab payload: {e}")))?;
    let kind_name = p
        .object_kind
        .clone()
        .or(p.event_name.clone())
        .ok_or_else(|| ParseError("GitLab payload has no object_kind".into()))?;
    let action = p.object_attributes.as_ref().and_then(|a| a.action.clone());
    let mut parsed = Parsed {
        source: Source::Gitlab,
        event: kind_name.clone(),
        action: action.clone(),
        item: None,
        change: Change::Unhandled(String::new()),
        sender: p.user.as_ref().and_then(|u| u.username.clone()),
    };
    let kind = match (kind_name.as_str(), system) {
        ("merge_request", _) => Kind::MergeRequest,
        ("issue", false) => Kind::Issue,
        (other, true) => {
            parsed.change = Change::Unhandled(format!("system hook '{other}' is not handled"));
            return Ok(parsed);
        }
        (other, false) => {
            parsed.change = Change::Unhandled(format!("event '{other}' is not handled"));
            return Ok(parsed);
        }
    };
    let attrs =
        p.object_attributes.ok_or_else(|| ParseError(format!("{kind_name} payload has no object_attributes")))?;
    let project = p.project.ok_or_else(|| ParseError(format!("{kind_name} payload has no project")))?;
    let author =
        p.user.and_then(|u| u.username).or_else(|| attrs.author_id.map(|id| id.to_string())).unwrap_or_default();
    // System hooks carry neither project.id nor the item's url; derive them.
    let url = match (attrs.url.is_empty(), &project.web_url) {
        (true, Some(web)) => match kind {
            Kind::MergeRequest => format!("{web}/-/merge_requests/{}", attrs.iid),
            _ => format!("{web}/-/issues/{}", attrs.iid),
        },
        _ => attrs.url,
    };
    parsed.item = Some(Item {
        source: Source::Gitlab,
        kind,
        repo_full_name: project.path_with_namespace,
        number: attrs.iid,
        project_id: project.id.or(attrs.target_project_id),
        url,
        title: attrs.title,
        author,
        labels: p.labels.unwrap_or_default().into_iter().map(|l| l.title).collect(),
    });
    parsed.change = match action.as_deref() {
        Some("open") | Some("reopen") => Change::Opened,
        Some("update") => match p.changes.and_then(|c| c.labels) {
            Some(ch) => {
                let before: Vec<String> = ch.previous.unwrap_or_default().into_iter().map(|l| l.title).collect();
                let after: Vec<String> = ch.current.unwrap_or_default().into_iter().map(|l| l.title).collect();
                let added = after.iter().filter(|t| !before.contains(t)).cloned().collect();
                let removed = before.into_iter().filter(|t| !after.contains(t)).collect();
                Change::LabelsChanged { added, removed }
            }
            None => Change::Unchanged,
        },
        Some(other) => Change::Unhandled(format!("action '{other}' is not handled")),
        None => Change::Unhandled(format!("{kind_name} event has no action")),
    };
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::testdata::payload;

    #[test]
    fn issue_hook() {
        let p = parse(&payload("gitlab/issue.json"), false).unwrap();
        assert_eq!(p.event, "issue");
        assert_eq!(p.action.as_deref(), Some("open"));
        assert_eq!(p.change, Change::Opened);
        let item = p.item.unwrap();
        assert_eq!(item.kind, Kind::Issue);
        assert_eq!(item.repo_full_name, "gitlabhq/gitlab-test");
        assert_eq!(item.number, 23);
        assert_eq!(item.project_id, Some(1));
        assert_eq!(item.url, "http://example.com/diaspora/issues/23");
        assert_eq!(item.title, "New API: create/update/delete file");
        assert_eq!(item.author, "root");
        assert_eq!(item.labels, vec!["API"]);
    }

    #[test]
    fn merge_request_update_diffs_labels() {
        let mut v: serde_json::Value = serde_json::from_slice(&payload("gitlab/merge_request.json")).unwrap();
        v["object_attributes"]["action"] = "update".into();
        let p = parse(&serde_json::to_vec(&v).unwrap(), false).unwrap();
        assert!(matches!(&p.change, Change::LabelsChanged { added, .. } if added == &["Platform".to_string()]));
        let item = p.item.unwrap();
        assert_eq!(item.kind, Kind::MergeRequest);
        assert_eq!(item.number, 1);

        v.as_object_mut().unwrap().remove("changes");
        let p = parse(&serde_json::to_vec(&v).unwrap(), false).unwrap();
        assert_eq!(p.change, Change::Unchanged);
    }

    #[test]
    fn system_hooks_dispatch_on_object_kind() {
        let p = parse(&payload("gitlab/system.merge_request.json"), true).unwrap();
        assert_eq!(p.item.unwrap().kind, Kind::MergeRequest);
        let p = parse(&payload("gitlab/system.project_create.json"), true).unwrap();
        assert_eq!(p.change, Change::Unhandled("system hook 'project_create' is not handled".into()));
        let p = parse(&payload("gitlab/issue.json"), true).unwrap();
        assert_eq!(p.change, Change::Unhandled("system hook 'issue' is not handled".into()));
        let p = parse(&payload("gitlab/push.json"), false).unwrap();
        assert_eq!(p.change, Change::Unhandled("event 'push' is not handled".into()));
        assert!(parse(b"[]", false).is_err());
        assert!(parse(b"{}", false).is_err());
    }
}
