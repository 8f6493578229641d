//! `agentctl config init`: the commented example config with fresh random secrets, mode 0600.

use super::Secret;
use super::secrets_file::write_private;
use anyhow::bail;
use std::path::Path;

const TEMPLATE: &str = include_str!("../../config.toml.example");

/// The example config with a fresh secret for each webhook route.
pub fn render_template() -> String {
    let mut text = TEMPLATE.to_string();
    for line in ["webhook_secret = \"\"", "webhook_token = \"\"", "system_hook_token = \"\""] {
        let key = line.split(' ').next().expect("the line has a key");
        let filled = format!("{key} = \"{}\"", Secret::generate().expose());
        assert!(text.contains(line), "the example config has the line {line}");
        text = text.replacen(line, &filled, 1);
    }
    text
}

/// Writes the rendered template to `path`; refuses to overwrite unless `force`.
pub fn init_config(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!("{} already exists; pass --force to replace it (its secrets will change)", path.display());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    write_private(path, &render_template())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, load};

    #[test]
    fn rendered_config_loads_with_fresh_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        init_config(&path, false).unwrap();
        let c = load(Some(&path), &Env::new()).unwrap();
        assert_eq!(c.github.webhook_secret.expose().len(), 64);
        assert_ne!(c.github.webhook_secret, c.gitlab.webhook_token);
        assert!(c.gitlab.signing_token.is_empty());
        assert!(init_config(&path, false).is_err());
        init_config(&path, true).unwrap();
        let again = load(Some(&path), &Env::new()).unwrap();
        assert_ne!(c.github.webhook_secret, again.github.webhook_secret);
    }

    #[test]
    fn example_matches_the_defaults() {
        let from_example: crate::config::Config = toml::from_str(TEMPLATE).unwrap();
        let example = toml::Value::try_from(&from_example).unwrap();
        let defaults = toml::Value::try_from(crate::config::Config::default()).unwrap();
        assert_eq!(example, defaults, "config.toml.example documents every key with its default");
    }
}
