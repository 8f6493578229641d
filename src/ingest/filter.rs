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

/// The reason given for an event agentctl caused itself (loop protection).
pub const SELF_EVENT: &str = "self-event";

pub fn decide(p: &Parsed, filter: &Filter) -> Decision {
    decide_as(p, filter, None)
}

/// [`decide`], knowing the forge user whose token agentctl uses: events that user caused (the
/// label life-cycle's own label changes and comments) are ignored as `self-event`, so agentctl
/// never triggers itself.
pub fn decide_as(p: &Parsed, filter: &Filter, self_user: Option<&str>) -> Decision {
    let ignore = |reason: String| Decision::Ignore { reason };
    let is_trigger = |l: &str| filter.labels.iter().any(|t| t == l);
    match &p.change {
        Change::Ping => return Decision::Pong,
        Change::Unhandled(reason) => return ignore(reason.clone()),
        _ => {}
    }
    if let (Some(me), Some(sender)) = (self_user, p.sender.as_deref())
        && me.eq_ignore_ascii_case(sender)
    {
        return ignore(SELF_EVENT.into());
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
    fn self_events_on_the_real_payloads() {
        use crate::ingest::testdata::payload;
        use crate::ingest::{github, gitlab};
        let f = Filter::default();
        let cases = [
            (github::parse("issues", None, &payload("github/issues.labeled.json")).unwrap(), "Codertocat"),
            (github::parse("pull_request", None, &payload("github/pull_request.opened.json")).unwrap(), "Codertocat"),
            (gitlab::parse(&payload("gitlab/issue.json"), false).unwrap(), "root"),
            (gitlab::parse(&payload("gitlab/merge_request.json"), false).unwrap(), "user1"),
            (gitlab::parse(&payload("gitlab/system.merge_request.json"), true).unwrap(), "root"),
        ];
        for (mut p, sender) in cases {
            // Make each one a task first, so only the sender decides.
            if let Some(item) = &mut p.item {
                item.labels = vec!["coding agent".into()];
            }
            p.change = Change::Opened;
            assert_eq!(p.sender.as_deref(), Some(sender), "{}", p.event);
            assert!(matches!(decide_as(&p, &f, Some("someone-else")), Decision::Task { .. }), "{}", p.event);
            assert!(matches!(decide_as(&p, &f, None), Decision::Task { .. }));
            assert_eq!(reason(decide_as(&p, &f, Some(sender))), SELF_EVENT, "{}", p.event);
            assert_eq!(reason(decide_as(&p, &f, Some(&sender.to_uppercase()))), SELF_EVENT, "logins ignore case");
        }
        // A ping is answered whoever sent it.
        let ping = github::parse("ping", None, &payload("github/ping.json")).unwrap();
        assert_eq!(decide_as(&ping, &f, Some("Codertocat")), Decision::Pong);
    }

    #[test]
    fn custom_labels() {
        let f = Filter { labels: vec!["ai".into(), "bot".into()], repos: vec![] };
        assert_eq!(decide(&parsed(Change::Opened, &["bot"]), &f), Decision::Task { label: "bot".into() });
    }
}
