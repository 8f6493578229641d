//! Names that end up in paths, URLs and refs, checked before they reach git or the file system:
//! the repository in a `git_url` template, the task id (a directory name), and branch names
//! (`git check-ref-format` rules, without running git).

use super::WorkspaceError;

/// The agent's branch when the item has none of its own.
pub const DEFAULT_BRANCH_TEMPLATE: &str = "agent/{number}-{short_id}";

/// Fills a `git_url` template's `{repo}` (`https://github.com/{repo}.git`) with `owner/name` or
/// GitLab's `group/sub/project`.
pub fn git_url(template: &str, repo: &str) -> Result<String, WorkspaceError> {
    if !template.contains("{repo}") {
        return Err(WorkspaceError::InvalidName {
            what: "git_url template",
            value: template.to_string(),
            reason: "it has no {repo} placeholder".into(),
        });
    }
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && !s.starts_with('-')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if !repo.split('/').all(plain) {
        return Err(WorkspaceError::InvalidName {
            what: "repository",
            value: repo.to_string(),
            reason: "expected owner/name (letters, digits, '.', '_', '-')".into(),
        });
    }
    Ok(template.replace("{repo}", repo))
}

/// The last 8 letters or digits of the task id: a task id is a UUIDv7, whose leading digits are
/// a timestamp shared by tasks created close together; the trailing ones are random.
pub fn short_task_id(task_id: &str) -> String {
    let alnum: Vec<char> = task_id.chars().filter(char::is_ascii_alphanumeric).collect();
    alnum[alnum.len().saturating_sub(8)..].iter().collect()
}

/// A branch from a template with `{number}`, `{short_id}` and `{task_id}`.
pub fn branch_name(template: &str, number: u64, task_id: &str) -> Result<String, WorkspaceError> {
    let name = template
        .replace("{number}", &number.to_string())
        .replace("{short_id}", &short_task_id(task_id))
        .replace("{task_id}", task_id);
    check_branch(&name)?;
    Ok(name)
}

/// git's rules for a branch name (`git check-ref-format --branch`), plus no leading `-`.
pub fn check_branch(name: &str) -> Result<(), WorkspaceError> {
    let reason = if name.is_empty() || name == "@" {
        Some("empty or '@'")
    } else if name.starts_with('-') || name.starts_with('/') || name.ends_with('/') || name.ends_with('.') {
        Some("starts with '-' or '/', or ends with '/' or '.'")
    } else if name.contains("..") || name.contains("@{") || name.contains("//") {
        Some("contains '..', '@{' or '//'")
    } else if name.chars().any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c)) {
        Some("contains a space, a control character or one of ~ ^ : ? * [ \\")
    } else if name.split('/').any(|part| part.starts_with('.') || part.ends_with(".lock")) {
        Some("a component starts with '.' or ends with '.lock'")
    } else {
        None
    };
    match reason {
        Some(r) => Err(WorkspaceError::InvalidName { what: "branch", value: name.to_string(), reason: r.into() }),
        None => Ok(()),
    }
}

/// A task id names a directory: letters, digits, '-', '_' and '.', not a dot name.
pub fn check_task_id(id: &str) -> Result<(), WorkspaceError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(WorkspaceError::InvalidName {
            what: "task id",
            value: id.to_string(),
            reason: "expected letters, digits, '-', '_' and '.', not starting with '.'".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_url_templates_take_plain_repositories() {
        assert_eq!(
            git_url("https://github.com/{repo}.git", "octo/hello").unwrap(),
            "https://github.com/octo/hello.git"
        );
        assert_eq!(git_url("https://gl.example/{repo}.git", "g/sub/p").unwrap(), "https://gl.example/g/sub/p.git");
        assert!(git_url("https://github.com/octo/x.git", "octo/hello").is_err());
        for bad in ["", "octo/../x", "octo//x", "-x/y", "a b/c", "o/r?x"] {
            assert!(git_url("https://h/{repo}", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_branch_uses_the_random_end_of_the_task_id() {
        let id = "0190f6a2-7c1e-7b3d-9a4f-1234abcd5678";
        assert_eq!(branch_name(DEFAULT_BRANCH_TEMPLATE, 7, id).unwrap(), "agent/7-abcd5678");
        assert!(branch_name("agent/{number} {short_id}", 7, id).is_err());
    }

    #[test]
    fn branch_rules() {
        for good in ["main", "feature/x-1", "agent/7-abc", "a.b", "user@host"] {
            assert!(check_branch(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "@",
            "-x",
            "/x",
            "x/",
            "x.",
            "a..b",
            "a@{1}",
            "a//b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            ".x",
            "x/.y",
            "x.lock",
            "x/y.lock/z",
            "a\u{7f}",
        ] {
            assert!(check_branch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn task_ids_are_directory_names() {
        assert!(check_task_id("0190f6a2-7c1e-7b3d-9a4f-1234abcd5678").is_ok());
        for bad in ["", ".", "..", ".x", "a/b", "a b"] {
            assert!(check_task_id(bad).is_err(), "{bad:?}");
        }
    }
}
