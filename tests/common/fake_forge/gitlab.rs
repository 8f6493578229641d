//! The fake's GitLab routes (below `/gitlab`): one issue or merge request, label changes, the
//! project, project members with their access levels (`members/all/:user_id`), notes (listed
//! with `sort`, system notes included as GitLab does, `x-next-page`; posted; edited with PUT),
//! and merge requests opened through the API (by source branch; 409 to a second open one from
//! the same branch, as GitLab does).

use super::{Answer, FakeComment, FakeItem, FakeKind, FakePull, Req, State, not_found};
use serde_json::{Value, json};

pub(super) fn item_json(repo: &str, project_id: u64, number: u64, it: &FakeItem, single: bool) -> Value {
    let state = if single && it.closes_before_run {
        "closed"
    } else {
        match it.state.as_str() {
            "open" => "opened",
            other => other,
        }
    };
    let mut v = json!({
        "iid": number, "project_id": project_id, "title": format!("Item {number}"), "state": state,
        "web_url": format!("https://gitlab.example/{repo}/-/issues/{number}"),
        "author": {"username": "someone"}, "updated_at": format!("2026-01-01T00:00:00.{:06}Z", it.updated),
        "labels": it.labels,
    });
    if single {
        v["description"] = if it.body.is_empty() { Value::Null } else { json!(it.body) };
    }
    v
}

/// A merge request's single fetch: the item with its branches and source project.
fn merge_request_json(s: &State, r: &Req, repo: &str, number: u64, it: &FakeItem) -> Value {
    let mut v = item_json(repo, r.ids[repo], number, it, true);
    let source = it.fork.as_ref().map_or(r.ids[repo], |fork| r.ids[fork]);
    let target = if it.base_branch.is_empty() { s.default_branch(repo) } else { it.base_branch.clone() };
    v["web_url"] = json!(format!("https://gitlab.example/{repo}/-/merge_requests/{number}"));
    v["source_branch"] = json!(it.head_branch);
    v["target_branch"] = json!(target);
    v["source_project_id"] = json!(source);
    v["target_project_id"] = json!(r.ids[repo]);
    v
}

fn note_json(c: &FakeComment) -> Value {
    let mut author = json!({"id": State::stable_id(&c.author), "username": c.author, "state": "active"});
    if c.bot {
        author["bot"] = json!(true);
    }
    json!({
        "id": c.id, "body": c.body(), "author": author, "system": c.system,
        "created_at": c.created_at(), "updated_at": c.created_at(), "internal": false,
    })
}

fn opened_json(r: &Req, p: &FakePull) -> Value {
    let id = r.ids.get(&p.repo).copied().unwrap_or_default();
    json!({
        "iid": p.number, "project_id": id, "source_project_id": p.fork.as_ref().map_or(id, |f| r.ids[f]),
        "title": p.title, "description": p.body, "state": "opened",
        "source_branch": p.head, "target_branch": p.base,
        "web_url": format!("https://gitlab.example/{}/-/merge_requests/{}", p.repo, p.number),
    })
}

/// `GET /projects/:id/merge_requests?source_branch=…&state=opened`.
pub(super) fn find_merge_requests(s: &State, r: &Req, p: &str) -> Answer {
    let Some(repo) = r.project(p) else { return not_found(false) };
    let branch = r.q.get("source_branch").cloned().unwrap_or_default();
    let listed: Vec<Value> = s
        .pulls
        .iter()
        .filter(|pull| pull.forge == "gitlab" && pull.repo == repo && pull.head == branch)
        .map(|pull| opened_json(r, pull))
        .collect();
    (200, Value::Array(listed), vec![])
}

/// A GitLab request, or None for "no such route".
pub(super) fn route(s: &mut State, r: &Req, segs: &[&str]) -> Option<Answer> {
    let num = |n: &str| n.parse::<u64>().unwrap_or(0);
    let key = |p: &str, n: &str| ("gitlab".to_string(), r.project(p).unwrap_or_default(), num(n));
    // Notes must be asked for where the item is: issues apart from merge requests.
    let kind_is = |it: &FakeItem, what: &str| (it.kind == FakeKind::MergeRequest) == (what == "merge_requests");
    Some(match (r.method, segs) {
        ("GET", ["projects", p]) => match r.project(p) {
            Some(repo) => {
                let v =
                    json!({"id": r.ids[&repo], "path_with_namespace": repo, "default_branch": s.default_branch(&repo)});
                (200, v, vec![])
            }
            None => not_found(false),
        },
        ("GET", ["projects", p, "members", "all", user]) => {
            let repo = r.project(p).unwrap_or_default();
            let member = s.members.iter().find(|((rp, name), _)| *rp == repo && State::stable_id(name) == num(user));
            match member {
                Some(((_, name), level)) => {
                    (200, json!({"id": num(user), "username": name, "access_level": level}), vec![])
                }
                None => (404, json!({"message": "404 Not found"}), vec![]),
            }
        }
        // One item.
        ("GET", ["projects", p, what @ ("issues" | "merge_requests"), n]) => {
            let key = key(p, n);
            match s.items.get(&key) {
                Some(it) if *what == "merge_requests" && it.kind == FakeKind::MergeRequest => {
                    (200, merge_request_json(s, r, &key.1, key.2, it), vec![])
                }
                Some(it) => (200, item_json(&key.1, r.ids[&key.1], key.2, it, true), vec![]),
                None => not_found(false),
            }
        }
        // Label changes.
        ("PUT", ["projects", p, "issues" | "merge_requests", n]) => {
            let key = key(p, n);
            let frozen = s.frozen;
            let clock = s.tick();
            match s.items.get_mut(&key) {
                Some(it) => {
                    if !frozen {
                        let split = |k: &str| -> Vec<String> {
                            r.body[k]
                                .as_str()
                                .unwrap_or_default()
                                .split(',')
                                .filter(|x| !x.is_empty())
                                .map(str::to_string)
                                .collect()
                        };
                        let (remove, add) = (split("remove_labels"), split("add_labels"));
                        it.labels.retain(|l| !remove.contains(l));
                        for l in add {
                            if !it.labels.contains(&l) {
                                it.labels.push(l);
                            }
                        }
                        it.updated = clock;
                    }
                    (200, item_json(&key.1, r.ids[&key.1], key.2, it, true), vec![])
                }
                None => not_found(false),
            }
        }
        // Notes.
        ("GET", ["projects", p, what @ ("issues" | "merge_requests"), n, "notes"]) => {
            let Some(it) = s.items.get(&key(p, n)).filter(|it| kind_is(it, what)) else {
                return Some(not_found(false));
            };
            let mut all: Vec<&FakeComment> = it.thread.iter().filter(|c| !c.deleted).collect();
            if r.q.get("sort").is_none_or(|s| s == "desc") {
                all.reverse();
            }
            let (per_page, page) = (r.per_page(20), r.page());
            let pages = all.len().div_ceil(per_page).max(1);
            let chunk: Vec<Value> =
                all.iter().skip((page - 1) * per_page).take(per_page).map(|c| note_json(c)).collect();
            let next = if page < pages { (page + 1).to_string() } else { String::new() };
            (200, Value::Array(chunk), vec![("x-next-page", next), ("x-total-pages", pages.to_string())])
        }
        ("POST", ["projects", p, "issues" | "merge_requests", n, "notes"]) => {
            let user = s.gitlab_user.clone();
            match s.post_comment(&key(p, n), &user, r.body["body"].as_str().unwrap_or_default()) {
                Some(c) => (201, note_json(&c), vec![]),
                None => not_found(false),
            }
        }
        ("PUT", ["projects", p, what @ ("issues" | "merge_requests"), n, "notes", id]) => {
            let note = s
                .items
                .get_mut(&key(p, n))
                .filter(|it| kind_is(it, what))
                .and_then(|it| it.thread.iter_mut().find(|c| c.id == num(id) && !c.deleted));
            match note {
                Some(c) => {
                    c.history.push(r.body["body"].as_str().unwrap_or_default().to_string());
                    (200, note_json(c), vec![])
                }
                None => not_found(false),
            }
        }
        // Merge requests opened through the API.
        ("POST", ["projects", p, "merge_requests"]) => {
            let Some(repo) = r.project(p) else { return Some(not_found(false)) };
            let field = |k: &str| r.body[k].as_str().unwrap_or_default().to_string();
            if s.pulls
                .iter()
                .any(|pull| pull.forge == "gitlab" && pull.repo == repo && pull.head == field("source_branch"))
            {
                let message = "Another open merge request already exists for this source branch";
                return Some((409, json!({"message": [message]}), vec![]));
            }
            let taken = s
                .items
                .iter()
                .filter(|((f, rp, _), it)| f == "gitlab" && *rp == repo && it.kind == FakeKind::MergeRequest);
            let number =
                taken.map(|(k, _)| k.2).chain(s.pulls.iter().filter(|p| p.repo == repo).map(|p| p.number)).max();
            let pull = FakePull {
                forge: "gitlab".into(),
                number: number.unwrap_or(0) + 1,
                repo,
                head: field("source_branch"),
                base: field("target_branch"),
                title: field("title"),
                body: field("description"),
                fork: None,
            };
            let v = opened_json(r, &pull);
            s.pulls.push(pull);
            (201, v, vec![])
        }
        _ => return None,
    })
}
