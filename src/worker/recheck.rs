//! The re-check before a run: the item as the forge has it now decides whether a task still
//! runs (an item closed, merged or unlabelled since its delivery is skipped).

use super::Shared;
use crate::config::Config;
use crate::forge::ItemState;
use crate::task::Task;

/// Why a task must not run, given its item as the forge has it now.
pub fn skip_reason(item: &ItemState, task: &Task, config: &Config) -> Option<String> {
    if item.merged {
        return Some(format!("{} was merged", task.item_ref()));
    }
    if !item.open {
        return Some(format!("{} is closed", task.item_ref()));
    }
    let l = &config.labels;
    let mut wanted: Vec<&str> = config.filter.labels.iter().map(String::as_str).collect();
    wanted.push(&task.label);
    wanted.push(&l.processing);
    if task.replay {
        // An operator's replay of a done or failed task: its life-cycle label is enough.
        wanted.extend([l.done.as_str(), l.failed.as_str()]);
    }
    let labelled = item.labels.iter().any(|have| wanted.iter().any(|w| !w.is_empty() && w == have));
    (!labelled).then(|| format!("{} no longer carries the trigger or processing label", task.item_ref()))
}

/// The re-check before a run: Some(reason) when the task is to be skipped.
pub(super) async fn recheck(shared: &Shared, task: &Task) -> Option<String> {
    let forge = shared.forges.get(task.source)?;
    match forge.item_state(task).await {
        Ok(item) => skip_reason(&item, task, &shared.config),
        // Deleted, or moved where this task's address no longer reaches it.
        Err(e) if matches!(e.status(), Some(404 | 410)) => Some(format!("{} no longer exists ({e})", task.item_ref())),
        Err(e) => {
            tracing::warn!("cannot re-check {} before task {} ({e}); running it", task.item_ref(), task.id);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(replay: bool) -> Task {
        let mut t = Task::from_message(
            br#"{"type":"github_issue","owner":"o","repo":"r","number":7,"uuid":"u","label":"coding agent"}"#,
        )
        .unwrap();
        t.replay = replay;
        t
    }

    fn item(open: bool, merged: bool, labels: &[&str]) -> ItemState {
        ItemState { open, merged, labels: labels.iter().map(|l| l.to_string()).collect() }
    }

    #[test]
    fn the_recheck_skips_closed_merged_and_unlabelled_items() {
        let c = Config::default();
        let run = |i: &ItemState, t: &Task| skip_reason(i, t, &c);
        assert_eq!(run(&item(true, false, &["coding agent"]), &task(false)), None);
        assert_eq!(run(&item(true, false, &["bug", "agent processing"]), &task(false)), None);
        assert_eq!(run(&item(false, false, &["coding agent"]), &task(false)).unwrap(), "o/r#7 is closed");
        assert_eq!(run(&item(false, true, &["coding agent"]), &task(false)).unwrap(), "o/r#7 was merged");
        assert_eq!(
            run(&item(true, false, &["bug"]), &task(false)).unwrap(),
            "o/r#7 no longer carries the trigger or processing label"
        );
        // A finished task's label is not a reason to run again, except for an operator's replay.
        assert!(run(&item(true, false, &["agent failed"]), &task(false)).is_some());
        assert_eq!(run(&item(true, false, &["agent failed"]), &task(true)), None);
        assert_eq!(run(&item(true, false, &["agent done"]), &task(true)), None);
        assert!(run(&item(false, false, &["agent done"]), &task(true)).is_some(), "closed wins");
    }
}
