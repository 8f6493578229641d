//! `Parsed` → `Decision`: is this delivery a task, and if not, exactly why not. Pure logic, no
//! I/O; every reason a user can see is produced here.

use super::{Change, Parsed};
use crate::config::Filter;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A task, triggered by this label.
    Task {
        label: String,
    },
    Ignore {
        reason: String,
    },
    Pong,
}

pub fn decide(p: &Parsed, filter: &Filter) -> Decision {
    let ignore = |reason: String| Decision::Ignore { reason };
    let is_trigger = |l: &str| filter.labels.iter().any(|t| t == l);
    match &p.change {
        Change::Ping => return Decision::Pong,
        Change::Unhandled(reason) => return ignore(reason.clone()),
        _ => {}
    }
    let Some(item) = &p.item else {
        return ignore(format!("event '{}' carries no issue or merge request", p.event));
    };
    if !filter.repos.is_empty() && !filter.repos.iter().any(|r| r.eq_ignore_ascii_case(&item.repo_full_name)) {
        return ignore(format!("repository '{}' is not in filter.repos", item.repo_full_name));
    }
    match &p.change {
        Change::Labeled(label) if is_trigger(label) => Decision::Task { label: label.clone() },
        Change::Labeled(label) => ignore(format!("label '{label}' is not a trigger label")),
        Change::Opened => match item.labels.iter().find(|l| is_trigger(l)) {
            Some(label) => Decision::Task { label: label.clone() },
            None => ignore(format!("action '{}' without a trigger label", p.action.as_deref().unwrap_or("open"))),
        },
        Change::LabelsChanged { added } => match added.iter().find(|l| is_trigger(l)) {
            Some(label) => Decision::Task { label: label.clone() },
            None => match item.labels.iter().find(|l| is_trigger(l)) {
                Some(label) => ignore(format!("label '{label}' was already present; the update kept it")),
                None if added.is_empty() => ignore("update removed labels only".into()),
                None => ignore(format!("labels added ({}) are not trigger labels", added.join(", "))),
            },
        },
        Change::Unchanged => ignore("update did not change labels".into()),
        Change::Ping | Change::Unhandled(_) => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Item, Kind, Source};

    fn parsed(change: Change, labels: &[&str]) -> Parsed {
        Parsed {
            source: Source::Github,
            event: "issues".into(),
            action: Some("labeled".into()),
            item: Some(Item {
                source: Source::Github,
                kind: Kind::Issue,
                repo_full_name: "octo/hello".into(),
                number: 7,
                project_id: None,
                url: String::new(),
                title: String::new(),
                author: "octo".into(),
                labels: labels.iter().map(|s| s.to_string()).collect(),
            }),
            change,
            sender: None,
        }
    }

    fn reason(d: Decision) -> String {
        match d {
            Decision::Ignore { reason } => reason,
            other => panic!("expected ignore, got {other:?}"),
        }
    }

    #[test]
    fn every_reason() {
        let f = Filter::default();
        let task = |l: &str| Decision::Task { label: l.into() };
        assert_eq!(decide(&parsed(Change::Labeled("coding agent".into()), &[]), &f), task("coding agent"));
        assert_eq!(
            reason(decide(&parsed(Change::Labeled("bug".into()), &[]), &f)),
            "label 'bug' is not a trigger label"
        );
        assert_eq!(decide(&parsed(Change::Opened, &["bug", "coding agent"]), &f), task("coding agent"));
        let mut p = parsed(Change::Opened, &["bug"]);
        p.action = Some("reopened".into());
        assert_eq!(reason(decide(&p, &f)), "action 'reopened' without a trigger label");
        assert_eq!(
            decide(&parsed(Change::LabelsChanged { added: vec!["coding agent".into()] }, &["coding agent"]), &f),
            task("coding agent")
        );
        assert_eq!(
            reason(decide(&parsed(Change::LabelsChanged { added: vec!["x".into()] }, &["coding agent", "x"]), &f)),
            "label 'coding agent' was already present; the update kept it"
        );
        assert_eq!(
            reason(decide(&parsed(Change::LabelsChanged { added: vec!["x".into()] }, &["x"]), &f)),
            "labels added (x) are not trigger labels"
        );
        assert_eq!(
            reason(decide(&parsed(Change::LabelsChanged { added: vec![] }, &[]), &f)),
            "update removed labels only"
        );
        assert_eq!(reason(decide(&parsed(Change::Unchanged, &["coding agent"]), &f)), "update did not change labels");
        assert_eq!(
            reason(decide(&parsed(Change::Unhandled("action 'closed' is not handled".into()), &[]), &f)),
            "action 'closed' is not handled"
        );
        assert_eq!(decide(&parsed(Change::Ping, &[]), &f), Decision::Pong);
        let mut p = parsed(Change::Labeled("coding agent".into()), &[]);
        p.item = None;
        assert_eq!(reason(decide(&p, &f)), "event 'issues' carries no issue or merge request");
    }

    #[test]
    fn repo_allow_list() {
        let f = Filter { repos: vec!["other/repo".into()], ..Filter::default() };
        assert_eq!(
            reason(decide(&parsed(Change::Labeled("coding agent".into()), &[]), &f)),
            "repository 'octo/hello' is not in filter.repos"
        );
        let f = Filter { repos: vec!["Octo/Hello".into()], ..Filter::default() };
        assert!(matches!(decide(&parsed(Change::Labeled("coding agent".into()), &[]), &f), Decision::Task { .. }));
    }

    #[test]
    fn custom_labels() {
        let f = Filter { labels: vec!["ai".into(), "bot".into()], repos: vec![] };
        assert_eq!(decide(&parsed(Change::Opened, &["bot"]), &f), Decision::Task { label: "bot".into() });
    }
}
