//! The fake's GitHub routes (below `/github`): one item, labels, the repository, pull requests
//! (one, by head branch, opened: 422 to a second open one from the same head, as GitHub does),
//! and issue comments (listed oldest first with `Link` next/prev/first/last, posted, edited).

use super::{Answer, FakeComment, FakeItem, FakeKind, FakePull, Req, State, not_found};
use serde_json::{Value, json};

pub(super) fn item_json(repo: &str, number: u64, it: &FakeItem, single: bool) -> Value {
    let state = if single && it.closes_before_run {
        "closed"
    } else if it.state == "open" {
        "open"
    } else {
        "closed"
    };
    let mut v = json!({
        "number": number, "title": format!("Item {number}"), "state": state,
        "html_url": format!("https://github.example/{repo}/issues/{number}"),
        "user": {"login": "octocat"}, "updated_at": format!("2026-01-01T00:00:00.{:06}Z", it.updated),
        "labels": it.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
    });
    if it.kind == FakeKind::PullRequest {
        v["pull_request"] = json!({"url": "x", "merged_at": if it.state == "merged" { json!("2026-01-01T00:00:00Z") } else { Value::Null }});
    }
    if single {
        v["body"] = if it.body.is_empty() { Value::Null } else { json!(it.body) };
    }
    v
}

fn repo_json(s: &State, full_name: &str) -> Value {
    json!({"id": State::stable_id(full_name), "full_name": full_name, "default_branch": s.default_branch(full_name)})
}

/// `GET /repos/{repo}/pulls/{n}` of an item that is a pull request.
fn pull_json(s: &State, repo: &str, number: u64, it: &FakeItem) -> Value {
    let mut v = item_json(repo, number, it, true);
    v["html_url"] = json!(format!("https://github.example/{repo}/pull/{number}"));
    v["merged_at"] = v["pull_request"]["merged_at"].clone();
    let base = if it.base_branch.is_empty() { s.default_branch(repo) } else { it.base_branch.clone() };
    let head_repo = match it.fork.as_deref() {
        // A fork deleted since.
        Some("") => Value::Null,
        Some(fork) => json!({"id": State::stable_id(fork), "full_name": fork, "default_branch": "main"}),
        None => repo_json(s, repo),
    };
    v["head"] = json!({"ref": it.head_branch, "repo": head_repo});
    v["base"] = json!({"ref": base, "repo": repo_json(s, repo)});
    v
}

fn comment_json(repo: &str, number: u64, c: &FakeComment) -> Value {
    json!({
        "id": c.id,
        "html_url": format!("https://github.example/{repo}/issues/{number}#issuecomment-{}", c.id),
        "body": c.body(),
        "user": {"login": c.author, "type": if c.bot { "Bot" } else { "User" }},
        "author_association": c.association,
        "created_at": c.created_at(),
        "updated_at": c.created_at(),
    })
}

fn opened_json(p: &FakePull) -> Value {
    json!({
        "number": p.number, "state": "open", "title": p.title, "body": p.body,
        "html_url": format!("https://github.example/{}/pull/{}", p.repo, p.number),
        "head": {"ref": p.head, "label": format!("{}:{}", p.repo.split('/').next().unwrap_or_default(), p.head)},
        "base": {"ref": p.base},
    })
}

/// A GitHub request, or None for "no such route".
pub(super) fn route(s: &mut State, r: &Req, segs: &[&str]) -> Option<Answer> {
    let num = |n: &str| n.parse::<u64>().unwrap_or(0);
    let key = |o: &str, rp: &str, n: &str| ("github".to_string(), format!("{o}/{rp}"), num(n));
    Some(match (r.method, segs) {
        ("GET", ["repos", o, rp]) => (200, repo_json(s, &format!("{o}/{rp}")), vec![]),
        // One item.
        ("GET", ["repos", o, rp, "issues", n]) => {
            let key = key(o, rp, n);
            match s.items.get(&key) {
                Some(it) => (200, item_json(&key.1, key.2, it, true), vec![]),
                None => not_found(true),
            }
        }
        ("GET", ["repos", o, rp, "pulls", n]) => {
            let key = key(o, rp, n);
            match s.items.get(&key).filter(|it| it.kind == FakeKind::PullRequest) {
                Some(it) => (200, pull_json(s, &key.1, key.2, it), vec![]),
                None => not_found(true),
            }
        }
        // Label changes.
        ("DELETE", ["repos", o, rp, "issues", n, "labels", name]) => {
            let key = key(o, rp, n);
            let frozen = s.frozen;
            let clock = s.clock + 1;
            match s.items.get_mut(&key) {
                Some(it) if it.labels.iter().any(|l| l == name) => {
                    if !frozen {
                        it.labels.retain(|l| l != name);
                        it.updated = clock;
                    }
                    s.clock = clock;
                    (200, json!([]), vec![])
                }
                _ => (404, json!({"message": "Label does not exist"}), vec![]),
            }
        }
        ("POST", ["repos", o, rp, "issues", n, "labels"]) => {
            let key = key(o, rp, n);
            let frozen = s.frozen;
            let clock = s.tick();
            match s.items.get_mut(&key) {
                Some(it) => {
                    if !frozen {
                        for l in r.body["labels"].as_array().cloned().unwrap_or_default() {
                            let l = l.as_str().unwrap_or_default().to_string();
                            if !it.labels.contains(&l) {
                                it.labels.push(l);
                            }
                        }
                        it.updated = clock;
                    }
                    (200, json!([]), vec![])
                }
                None => not_found(true),
            }
        }
        // Comments.
        ("GET", ["repos", o, rp, "issues", n, "comments"]) => {
            let key = key(o, rp, n);
            let Some(it) = s.items.get(&key) else { return Some(not_found(true)) };
            let all: Vec<&FakeComment> = it.thread.iter().filter(|c| !c.deleted).collect();
            let (per_page, page) = (r.per_page(30), r.page());
            let pages = all.len().div_ceil(per_page).max(1);
            let chunk: Vec<Value> =
                all.iter().skip((page - 1) * per_page).take(per_page).map(|c| comment_json(&key.1, key.2, c)).collect();
            let mut links = vec![];
            if page < pages {
                links.push(format!("<{}>; rel=\"next\"", r.page_url(page + 1)));
                links.push(format!("<{}>; rel=\"last\"", r.page_url(pages)));
            }
            if page > 1 {
                links.push(format!("<{}>; rel=\"prev\"", r.page_url(page - 1)));
                links.push(format!("<{}>; rel=\"first\"", r.page_url(1)));
            }
            let headers = if links.is_empty() { vec![] } else { vec![("link", links.join(", "))] };
            (200, Value::Array(chunk), headers)
        }
        ("POST", ["repos", o, rp, "issues", n, "comments"]) => {
            let key = key(o, rp, n);
            let user = s.github_user.clone();
            match s.post_comment(&key, &user, r.body["body"].as_str().unwrap_or_default()) {
                Some(c) => (201, comment_json(&key.1, key.2, &c), vec![]),
                None => not_found(true),
            }
        }
        ("PATCH", ["repos", o, rp, "issues", "comments", id]) => {
            let repo = format!("{o}/{rp}");
            let found = s.items.iter_mut().filter(|((f, rpo, _), _)| f == "github" && *rpo == repo).find_map(
                |((_, _, n), it)| it.thread.iter_mut().find(|c| c.id == num(id) && !c.deleted).map(|c| (*n, c)),
            );
            match found {
                Some((n, c)) => {
                    c.history.push(r.body["body"].as_str().unwrap_or_default().to_string());
                    (200, comment_json(&repo, n, c), vec![])
                }
                None => not_found(true),
            }
        }
        // Pull requests opened through the API.
        ("GET", ["repos", o, rp, "pulls"]) => {
            let repo = format!("{o}/{rp}");
            let head = r.q.get("head").cloned().unwrap_or_default();
            let listed: Vec<Value> = s
                .pulls
                .iter()
                .filter(|p| p.forge == "github" && p.repo == repo && format!("{o}:{}", p.head) == head)
                .map(opened_json)
                .collect();
            (200, Value::Array(listed), vec![])
        }
        ("POST", ["repos", o, rp, "pulls"]) => {
            let repo = format!("{o}/{rp}");
            let field = |k: &str| r.body[k].as_str().unwrap_or_default().to_string();
            if s.pulls.iter().any(|p| p.forge == "github" && p.repo == repo && p.head == field("head")) {
                let message = format!("A pull request already exists for {o}:{}.", field("head"));
                return Some((422, json!({"message": "Validation Failed", "errors": [{"message": message}]}), vec![]));
            }
            let taken = s.items.keys().filter(|(f, rpo, _)| f == "github" && *rpo == repo).map(|k| k.2);
            let number =
                taken.chain(s.pulls.iter().filter(|p| p.repo == repo).map(|p| p.number)).max().unwrap_or(0) + 1;
            let pull = FakePull {
                forge: "github".into(),
                repo,
                number,
                head: field("head"),
                base: field("base"),
                title: field("title"),
                body: field("body"),
                fork: None,
            };
            let v = opened_json(&pull);
            s.pulls.push(pull);
            (201, v, vec![])
        }
        _ => return None,
    })
}
