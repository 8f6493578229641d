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
    /// A trigger or processing label was removed by someone other than agentctl: the item's
    /// live run is cancelled and its waiting tasks dropped.
    Cancel {
        label: String,
        by: Option<String>,
    },
}

/// The reason given for an event agentctl caused itself (loop protection).
pub const SELF_EVENT: &str = "self-event";

pub fn decide(p: &Parsed, filter: &Filter) -> Decision {
    decide_as(p, filter, None, None)
}

/// [`decide`], knowing the forge user whose token agentctl uses: events that user caused (the
/// label life-cycle's own label changes and comments) are ignored as `self-event`, so agentctl
/// never triggers itself.
///
/// `processing` is `labels.processing` when a label's removal may cancel a run: removing it or a
/// trigger label cancels. `None` when agentctl cannot tell its own removals (the life-cycle's
/// trigger → processing swap) from a person's yet — its forge user is not known — so none cancels.
pub fn decide_as(p: &Parsed, filter: &Filter, self_user: Option<&str>, processing: Option<&str>) -> Decision {
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
    let cancels = |l: &str| is_trigger(l) || processing.is_some_and(|p| !p.is_empty() && p == l);
    let cancel = |label: &str| match processing {
        Some(_) => Decision::Cancel { label: label.to_string(), by: p.sender.clone() },
        None => ignore(format!(
            "label '{label}' removed; agentctl's own forge user is not known yet, so this cannot be told \
             from its own label change: nothing cancelled"
        )),
    };
    match &p.change {
        Change::Unlabeled(label) if cancels(label) => cancel(label),
        Change::Unlabeled(label) => ignore(format!("label '{label}' removed is not a trigger or processing label")),
        Change::LabelsChanged { added, removed }
            if !added.iter().any(|l| is_trigger(l)) && removed.iter().any(|l| cancels(l)) =>
        {
            cancel(removed.iter().find(|l| cancels(l)).expect("checked"))
        }
        Change::Labeled(label) if is_trigger(label) => Decision::Task { label: label.clone() },
        Change::Labeled(label) => ignore(format!("label '{label}' is not a trigger label")),
        Change::Opened => match item.labels.iter().find(|l| is_trigger(l)) {
            Some(label) => Decision::Task { label: label.clone() },
            None => ignore(format!("action '{}' without a trigger label", p.action.as_deref().unwrap_or("open"))),
        },
        Change::LabelsChanged { added, .. } => match added.iter().find(|l| is_trigger(l)) {
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
            decide(
                &parsed(
                    Change::LabelsChanged { removed: vec![], added: vec!["coding agent".into()] },
                    &["coding agent"]
                ),
                &f
            ),
            task("coding agent")
        );
        assert_eq!(
            reason(decide(
                &parsed(Change::LabelsChanged { removed: vec![], added: vec!["x".into()] }, &["coding agent", "x"]),
                &f
            )),
            "label 'coding agent' was already present; the update kept it"
        );
        assert_eq!(
            reason(decide(&parsed(Change::LabelsChanged { removed: vec![], added: vec!["x".into()] }, &["x"]), &f)),
            "labels added (x) are not trigger labels"
        );
        assert_eq!(
            reason(decide(&parsed(Change::LabelsChanged { removed: vec![], added: vec![] }, &[]), &f)),
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
            assert!(matches!(decide_as(&p, &f, Some("someone-else"), None), Decision::Task { .. }), "{}", p.event);
            assert!(matches!(decide_as(&p, &f, None, None), Decision::Task { .. }));
            assert_eq!(reason(decide_as(&p, &f, Some(sender), None)), SELF_EVENT, "{}", p.event);
            assert_eq!(reason(decide_as(&p, &f, Some(&sender.to_uppercase()), None)), SELF_EVENT, "logins ignore case");
        }
        // A ping is answered whoever sent it.
        let ping = github::parse("ping", None, &payload("github/ping.json")).unwrap();
        assert_eq!(decide_as(&ping, &f, Some("Codertocat"), None), Decision::Pong);
    }

    #[test]
    fn removing_a_trigger_or_processing_label_cancels_unless_agentctl_did_it() {
        let f = Filter::default();
        let mut p = parsed(Change::Unlabeled("coding agent".into()), &[]);
        p.sender = Some("alice".into());
        let cancel = |label: &str| Decision::Cancel { label: label.into(), by: Some("alice".into()) };
        assert_eq!(decide_as(&p, &f, Some("bot"), Some("agent processing")), cancel("coding agent"));
        p.change = Change::Unlabeled("agent processing".into());
        assert_eq!(decide_as(&p, &f, Some("bot"), Some("agent processing")), cancel("agent processing"));
        p.change = Change::Unlabeled("bug".into());
        assert_eq!(
            reason(decide_as(&p, &f, Some("bot"), Some("agent processing"))),
            "label 'bug' removed is not a trigger or processing label"
        );
        // The life-cycle's own trigger → processing swap.
        p.change = Change::Unlabeled("coding agent".into());
        assert_eq!(reason(decide_as(&p, &f, Some("ALICE"), Some("agent processing"))), SELF_EVENT);
        // Its own user not known yet: a removal cannot be told from its own.
        assert!(reason(decide_as(&p, &f, None, None)).contains("nothing cancelled"));
        // GitLab: an update that removes the trigger label and adds none.
        p.change = Change::LabelsChanged { added: vec!["x".into()], removed: vec!["coding agent".into()] };
        assert_eq!(decide_as(&p, &f, Some("bot"), Some("agent processing")), cancel("coding agent"));
        // ... but one that swaps to another trigger label is a new task.
        let f2 = Filter { labels: vec!["coding agent".into(), "ai".into()], repos: vec![] };
        p.change = Change::LabelsChanged { added: vec!["ai".into()], removed: vec!["coding agent".into()] };
        assert_eq!(decide_as(&p, &f2, Some("bot"), Some("agent processing")), Decision::Task { label: "ai".into() });
    }

    #[test]
    fn custom_labels() {
        let f = Filter { labels: vec!["ai".into(), "bot".into()], repos: vec![] };
        assert_eq!(decide(&parsed(Change::Opened, &["bot"]), &f), Decision::Task { label: "bot".into() });
    }
}
