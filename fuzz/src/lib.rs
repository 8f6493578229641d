//! Helpers shared by the fuzz targets: how a target's input is framed, and the checks that run
//! on every parse result (the filter must decide every delivery a parser accepts, without
//! panicking).

use agentctl::config::Filter;
use agentctl::ingest::Parsed;
use agentctl::ingest::filter::{Decision, decide, decide_as};

/// Splits `data` into at most `n` fields at NUL bytes; the last field keeps the rest (so it may
/// hold NULs itself). Missing fields are empty.
pub fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |&b| b == 0).collect();
    out.resize(n, &[]);
    out
}

/// Runs the filter over a parsed delivery with the filters a user is likely to configure, and
/// checks what holds for every decision.
pub fn decide_every_way(p: &Parsed) {
    if let Some(item) = &p.item {
        assert_eq!(item.source, p.source, "an item comes from the forge that sent it");
    }
    let filters = [
        Filter::default(),
        Filter { labels: vec!["bug".into(), "coding agent".into()], repos: vec!["Codertocat/Hello-World".into()] },
        Filter { labels: vec![String::new()], repos: vec!["gitlabhq/gitlab-test".into(), String::new()] },
    ];
    for f in &filters {
        for d in [decide(p, f), decide_as(p, f, Some("Codertocat")), decide_as(p, f, p.sender.as_deref())] {
            if let Decision::Task { label } = &d {
                assert!(f.labels.contains(label), "a task is triggered only by a configured label: {label:?}");
                assert!(p.item.is_some(), "a task needs an item");
            }
        }
    }
}
