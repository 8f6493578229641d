use super::*;

const PROMPT: &str = "/data/runs/42/prompt.md";
const WORKDIR: &str = "/data/work/octo-hello-7";

fn build(kind: ProfileKind, opts: &ProfileOptions) -> Result<Invocation, ProfileError> {
    Invocation::build(kind, opts, Path::new(PROMPT), Path::new(WORKDIR))
}

fn argv(inv: &Invocation) -> Vec<String> {
    inv.args.iter().map(|a| a.to_str().expect("test args are UTF-8").to_string()).collect()
}

/// The prompt's text must never be in argv; its file path may be (aider, custom).
fn assert_prompt_not_in_argv(inv: &Invocation) {
    let secret = "Fix the bug described in issue #7";
    assert!(argv(inv).iter().all(|a| !a.contains(secret)));
}

#[test]
fn profile_names_round_trip() {
    for kind in ProfileKind::ALL {
        assert_eq!(kind.to_string().parse::<ProfileKind>(), Ok(kind));
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
    }
    assert_eq!("Claude".parse::<ProfileKind>(), Err(ProfileError::UnknownProfile("Claude".into())));
    assert_eq!("bypass".parse::<Permission>(), Ok(Permission::Bypass));
    assert!("yolo".parse::<Permission>().unwrap_err().to_string().contains("edit, bypass"));
    assert_eq!(serde_json::from_str::<ProfileKind>("\"aider\"").unwrap(), ProfileKind::Aider);
}

#[test]
fn claude_reads_the_prompt_from_stdin_and_streams_json() {
    let opts = ProfileOptions {
        model: Some("claude-sonnet-4-5".into()),
        max_turns: Some(30),
        extra_args: vec!["--append-system-prompt".into(), "Be brief.".into()],
        ..ProfileOptions::default()
    };
    let inv = build(ProfileKind::Claude, &opts).unwrap();
    assert_eq!(inv.program, PathBuf::from("claude"));
    assert_eq!(
        argv(&inv),
        [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "acceptEdits",
            "--max-turns",
            "30",
            "--model",
            "claude-sonnet-4-5",
            "--append-system-prompt",
            "Be brief."
        ]
    );
    assert_eq!(inv.stdin.as_deref(), Some(Path::new(PROMPT)));
    assert_eq!(inv.cwd, PathBuf::from(WORKDIR));
    assert!(!argv(&inv).iter().any(|a| a == PROMPT), "claude gets the prompt on stdin only");
    assert_prompt_not_in_argv(&inv);
}

#[test]
fn bypass_needs_the_sandbox() {
    let opts = ProfileOptions { permission: Permission::Bypass, ..ProfileOptions::default() };
    for kind in [ProfileKind::Claude, ProfileKind::Codex] {
        let err = build(kind, &opts).unwrap_err();
        assert_eq!(err, ProfileError::BypassOutsideSandbox(kind));
        assert!(err.to_string().contains("sandbox = \"bwrap\""), "{err}");
    }
    let opts = ProfileOptions { sandboxed: true, ..opts };
    let claude = argv(&build(ProfileKind::Claude, &opts).unwrap());
    assert!(claude.contains(&"--dangerously-skip-permissions".to_string()));
    assert!(!claude.contains(&"--permission-mode".to_string()));
    let codex = argv(&build(ProfileKind::Codex, &opts).unwrap());
    assert!(codex.contains(&"--dangerously-bypass-approvals-and-sandbox".to_string()));
    assert!(!codex.contains(&"--sandbox".to_string()));
    let err = build(ProfileKind::Aider, &opts).unwrap_err();
    assert!(err.to_string().starts_with("permission: the aider profile"), "{err}");
}

#[test]
fn codex_execs_once_with_the_prompt_on_stdin() {
    let opts = ProfileOptions {
        model: Some("gpt-5-codex".into()),
        program: Some("/opt/codex/bin/codex".into()),
        extra_args: vec!["-c".into(), "model_reasoning_effort=\"high\"".into()],
        ..ProfileOptions::default()
    };
    let inv = build(ProfileKind::Codex, &opts).unwrap();
    assert_eq!(inv.program, PathBuf::from("/opt/codex/bin/codex"));
    assert_eq!(
        argv(&inv),
        [
            "exec",
            "--json",
            "--color",
            "never",
            "--sandbox",
            "workspace-write",
            "--cd",
            WORKDIR,
            "--model",
            "gpt-5-codex",
            "-c",
            "model_reasoning_effort=\"high\"",
            "-"
        ]
    );
    assert_eq!(inv.stdin.as_deref(), Some(Path::new(PROMPT)));
    assert_prompt_not_in_argv(&inv);

    let err = build(ProfileKind::Codex, &ProfileOptions { max_turns: Some(5), ..opts }).unwrap_err();
    assert!(err.to_string().starts_with("max_turns: the codex profile has no such setting"), "{err}");
}

#[test]
fn aider_gets_a_message_file_and_answers_nothing_interactively() {
    let opts = ProfileOptions { model: Some("anthropic/claude-sonnet-4-5".into()), ..ProfileOptions::default() };
    let inv = build(ProfileKind::Aider, &opts).unwrap();
    let args = argv(&inv);
    assert_eq!(inv.program, PathBuf::from("aider"));
    assert_eq!(&args[..2], ["--message-file", PROMPT]);
    for flag in
        ["--yes-always", "--no-auto-commits", "--no-gitignore", "--no-pretty", "--no-stream", "--no-detect-urls"]
    {
        assert!(args.iter().any(|a| a == flag), "{flag} missing from {args:?}");
    }
    assert_eq!(&args[args.len() - 2..], ["--model", "anthropic/claude-sonnet-4-5"]);
    assert_eq!(inv.stdin, None, "aider reads the message file; stdin stays empty");
    assert_prompt_not_in_argv(&inv);
    assert!(matches!(
        build(ProfileKind::Aider, &ProfileOptions { max_turns: Some(3), ..opts }),
        Err(ProfileError::Unsupported { profile: ProfileKind::Aider, option: "max_turns", .. })
    ));
}

#[test]
fn custom_templates_substitute_inside_arguments_without_a_shell() {
    let opts = ProfileOptions {
        model: Some("local-7b".into()),
        template: vec![
            "{workdir}/.agent/run.sh".into(),
            "--prompt={prompt_file}".into(),
            "--model".into(),
            "{model}".into(),
            "literal {{braces}} and $(not a shell) ; rm -rf /".into(),
        ],
        extra_args: vec!["--verbose".into()],
        ..ProfileOptions::default()
    };
    let inv = build(ProfileKind::Custom, &opts).unwrap();
    assert_eq!(inv.program, PathBuf::from(format!("{WORKDIR}/.agent/run.sh")));
    assert_eq!(
        argv(&inv),
        [
            format!("--prompt={PROMPT}").as_str(),
            "--model",
            "local-7b",
            "literal {braces} and $(not a shell) ; rm -rf /",
            "--verbose"
        ]
    );
    assert_eq!(inv.stdin.as_deref(), Some(Path::new(PROMPT)));
    assert_eq!(inv.cwd, PathBuf::from(WORKDIR));
}

#[test]
fn custom_template_errors_name_the_argument() {
    let with = |template: &[&str], model: Option<&str>| {
        let opts = ProfileOptions {
            model: model.map(String::from),
            template: template.iter().map(|s| s.to_string()).collect(),
            ..ProfileOptions::default()
        };
        build(ProfileKind::Custom, &opts)
    };
    let err = with(&["agent", "--text={prompt}"], None).unwrap_err();
    assert!(matches!(&err, ProfileError::Template { index: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("unknown placeholder {prompt}"), "{err}");
    assert!(with(&["agent", "{workdir"], None).unwrap_err().to_string().contains("without its '}'"));
    assert!(with(&["agent", "a}b"], None).unwrap_err().to_string().contains("lone '}'"));
    assert_eq!(
        with(&["agent", "-m", "{model}"], None),
        Err(ProfileError::MissingModel { index: 2, arg: "{model}".into() })
    );
    assert_eq!(with(&[], None), Err(ProfileError::MissingTemplate));
    let opts =
        ProfileOptions { template: vec!["x".into()], program: Some("/bin/x".into()), ..ProfileOptions::default() };
    assert!(build(ProfileKind::Custom, &opts).unwrap_err().to_string().starts_with("program: the custom profile"));
    let opts = ProfileOptions { template: vec!["x".into()], ..ProfileOptions::default() };
    assert!(build(ProfileKind::Claude, &opts).unwrap_err().to_string().starts_with("template: the claude profile"));
}

#[test]
fn options_that_would_break_argv_are_refused() {
    for bad in ["", "--dangerously-skip-permissions", "sonnet 4", "a\u{1b}b"] {
        let opts = ProfileOptions { model: Some(bad.into()), ..ProfileOptions::default() };
        assert_eq!(build(ProfileKind::Claude, &opts), Err(ProfileError::BadModel(bad.into())));
    }
    let opts = ProfileOptions { extra_args: vec!["a\0b".into()], ..ProfileOptions::default() };
    assert_eq!(build(ProfileKind::Codex, &opts), Err(ProfileError::Nul("extra_args")));
    let opts = ProfileOptions { max_turns: Some(0), ..ProfileOptions::default() };
    assert_eq!(build(ProfileKind::Claude, &opts), Err(ProfileError::ZeroTurns));
    let err =
        Invocation::build(ProfileKind::Claude, &ProfileOptions::default(), Path::new("prompt.md"), Path::new(WORKDIR))
            .unwrap_err();
    assert!(matches!(err, ProfileError::RelativePath { which: "prompt file", .. }), "{err:?}");
}

#[test]
fn non_utf8_paths_arrive_intact() {
    use std::os::unix::ffi::OsStrExt;
    let workdir = Path::new(OsStr::from_bytes(b"/data/work/\xffodd"));
    let opts = ProfileOptions { template: vec!["run".into(), "--in={workdir}/x".into()], ..ProfileOptions::default() };
    let inv = Invocation::build(ProfileKind::Custom, &opts, Path::new(PROMPT), workdir).unwrap();
    assert_eq!(inv.args[0].as_bytes(), b"--in=/data/work/\xffodd/x");
}
