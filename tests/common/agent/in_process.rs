//! agentctl started in-process (`app::run` through the shared harness) with the agent runner.

use super::rig::Rig;
use super::{AUTHOR_EMAIL, AUTHOR_NAME};
use crate::common::fake_forge::GITHUB_PAT;
use crate::common::{Backend, Harness};
use agentctl::agent::profile::ProfileKind;
use agentctl::config::{AgentProfile, Config, Secret};
use std::path::Path;

/// agentctl in-process (`--mode all`: listener, publisher, worker, label drainer) with the agent
/// runner on `cli`, against the rig's forge.
pub async fn start(rig: &Rig, profile: ProfileKind, cli: &Path, tweak: impl FnOnce(&mut Config)) -> Harness {
    start_on(Backend::Embedded, rig, profile, cli, tweak).await
}

pub async fn start_on(
    backend: Backend,
    rig: &Rig,
    profile: ProfileKind,
    cli: &Path,
    tweak: impl FnOnce(&mut Config),
) -> Harness {
    let (api, git_url, ws) = (rig.fake.github_url(), rig.git_url(), rig.workspace.display().to_string());
    Harness::start_all(backend, move |c| {
        c.github.token = Secret::new(GITHUB_PAT);
        c.github.api_url = api;
        c.github.git_url = git_url;
        c.agent.profile = AgentProfile(Some(profile));
        c.agent.program = cli.display().to_string();
        c.agent.workspace_dir = ws;
        c.agent.author_name = AUTHOR_NAME.into();
        c.agent.author_email = AUTHOR_EMAIL.into();
        c.agent.comment_interval_secs = 5;
        c.worker.max_attempts = 2;
        c.worker.backoff_secs = vec![1];
        tweak(c);
    })
    .await
}
