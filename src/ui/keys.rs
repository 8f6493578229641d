//! The keymap is data: one table says which key does what where, and the same table renders the
//! footer hints and the `?` help, so they cannot drift apart. Nothing outside this module looks
//! at key codes.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// The console's four views (the order of the tab bar and of keys `1`–`4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Events,
    Jobs,
    Queues,
    Logs,
}

impl Tab {
    pub const ALL: [Tab; 4] = [Tab::Events, Tab::Jobs, Tab::Queues, Tab::Logs];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Events => "Events",
            Tab::Jobs => "Jobs",
            Tab::Queues => "Queues",
            Tab::Logs => "Logs",
        }
    }

    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).expect("every tab is in ALL")
    }
}

/// The tui-logger widget's own commands, passed through in the Logs view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKey {
    TargetUp,
    TargetDown,
    ShowMore,
    ShowLess,
    CaptureMore,
    CaptureLess,
    ToggleTargets,
    PageUp,
    PageDown,
    EndPaging,
}

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    NextTab,
    ShowTab(Tab),
    Up,
    Down,
    Top,
    Bottom,
    PageUp,
    PageDown,
    Open,
    Back,
    Filter,
    Replay,
    Drop,
    Pause,
    Confirm,
    Cancel,
    SwitchFocus,
    /// Activates the focused button of the confirm popup.
    Press,
    Log(LogKey),
    /// Filter input: a typed character, erase one, apply, abandon.
    Type(char),
    Erase,
    Apply,
    Abandon,
}

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every context, popups and the filter input included.
    Always,
    /// Every view (not popups, not the filter input).
    Global,
    /// The Events and Jobs lists.
    List,
    Events,
    Jobs,
    Logs,
    /// A delivery's timeline or a job's log.
    Detail,
    Confirm,
    Help,
    FilterInput,
}

impl Scope {
    pub fn title(self) -> &'static str {
        match self {
            Scope::Always => "Always",
            Scope::Global => "Everywhere",
            Scope::List => "Events and Jobs lists",
            Scope::Events => "Events",
            Scope::Jobs => "Jobs",
            Scope::Logs => "Logs",
            Scope::Detail => "Delivery timeline / job log",
            Scope::Confirm => "Confirm popup",
            Scope::Help => "This help",
            Scope::FilterInput => "Filter input",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Key {
    code: KeyCode,
    ctrl: bool,
}

const fn k(c: char) -> Key {
    Key { code: KeyCode::Char(c), ctrl: false }
}

const fn ctrl(c: char) -> Key {
    Key { code: KeyCode::Char(c), ctrl: true }
}

const fn code(code: KeyCode) -> Key {
    Key { code, ctrl: false }
}

impl Key {
    fn matches(&self, ev: &KeyEvent) -> bool {
        self.code == ev.code && self.ctrl == ev.modifiers.contains(KeyModifiers::CONTROL)
    }

    pub fn label(&self) -> String {
        let base = match self.code {
            KeyCode::Char(' ') => "Space".to_string(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::Enter => "Enter".into(),
            KeyCode::Esc => "Esc".into(),
            KeyCode::Tab => "Tab".into(),
            KeyCode::BackTab => "S-Tab".into(),
            KeyCode::Up => "↑".into(),
            KeyCode::Down => "↓".into(),
            KeyCode::Left => "←".into(),
            KeyCode::Right => "→".into(),
            KeyCode::PageUp => "PgUp".into(),
            KeyCode::PageDown => "PgDn".into(),
            KeyCode::Home => "Home".into(),
            KeyCode::End => "End".into(),
            KeyCode::Backspace => "Backspace".into(),
            other => format!("{other:?}"),
        };
        if self.ctrl { format!("Ctrl-{base}") } else { base }
    }
}

pub struct Binding {
    pub scope: Scope,
    pub keys: &'static [Key],
    pub action: Action,
    /// Short text for the footer; `None` keeps the binding out of the footer (still in help).
    pub hint: Option<&'static str>,
    pub help: &'static str,
    /// An action that changes the pipeline: disabled by `--read-only`.
    pub mutates: bool,
}

const fn bind(
    scope: Scope,
    keys: &'static [Key],
    action: Action,
    hint: Option<&'static str>,
    help: &'static str,
) -> Binding {
    Binding { scope, keys, action, hint, help, mutates: false }
}

const fn mutating(
    scope: Scope,
    keys: &'static [Key],
    action: Action,
    hint: &'static str,
    help: &'static str,
) -> Binding {
    Binding { scope, keys, action, hint: Some(hint), help, mutates: true }
}

use Scope::*;

/// Every key the console knows, in the order help lists them.
pub const KEYMAP: &[Binding] = &[
    bind(Global, &[k('?')], Action::Help, Some("help"), "show or hide this help"),
    bind(Always, &[ctrl('c')], Action::Quit, None, "quit, even from a popup or the filter input"),
    bind(Global, &[k('q')], Action::Quit, Some("quit"), "quit; in-flight work finishes first"),
    bind(Global, &[code(KeyCode::Tab)], Action::NextTab, Some("next view"), "next view"),
    bind(Global, &[k('1')], Action::ShowTab(Tab::Events), None, "Events: deliveries and decisions"),
    bind(Global, &[k('2')], Action::ShowTab(Tab::Jobs), None, "Jobs: tasks and their handler runs"),
    bind(Global, &[k('3')], Action::ShowTab(Tab::Queues), None, "Queues: depths, rates, outbox"),
    bind(Global, &[k('4')], Action::ShowTab(Tab::Logs), None, "Logs: agentctl's own log"),
    bind(Events, &[k('p')], Action::Pause, Some("pause"), "pause or resume the live feed"),
    bind(List, &[k('j'), code(KeyCode::Down)], Action::Down, Some("move"), "select the next row"),
    bind(List, &[k('k'), code(KeyCode::Up)], Action::Up, None, "select the previous row"),
    bind(List, &[k('g'), code(KeyCode::Home)], Action::Top, None, "first row (and follow new ones)"),
    bind(List, &[k('G'), code(KeyCode::End)], Action::Bottom, None, "last row"),
    bind(List, &[code(KeyCode::PageUp)], Action::PageUp, None, "one page up"),
    bind(List, &[code(KeyCode::PageDown)], Action::PageDown, None, "one page down"),
    bind(List, &[code(KeyCode::Enter)], Action::Open, Some("details"), "open the selected row"),
    bind(List, &[k('/')], Action::Filter, Some("filter"), "filter the list by text"),
    mutating(Events, &[k('r')], Action::Replay, "replay", "replay the delivery: verify, filter, queue"),
    mutating(Events, &[k('d')], Action::Drop, "drop task", "drop the task the delivery created"),
    mutating(Jobs, &[k('r')], Action::Replay, "replay", "replay a dead, dropped or done job"),
    mutating(Jobs, &[k('d')], Action::Drop, "drop", "drop the job (a running one is cancelled)"),
    bind(
        Logs,
        &[k('j'), code(KeyCode::Down)],
        Action::Log(LogKey::TargetDown),
        Some("target"),
        "select the next log target",
    ),
    bind(Logs, &[k('k'), code(KeyCode::Up)], Action::Log(LogKey::TargetUp), None, "select the previous log target"),
    bind(Logs, &[k('+')], Action::Log(LogKey::ShowMore), Some("level"), "show more detail for the target"),
    bind(Logs, &[k('-')], Action::Log(LogKey::ShowLess), None, "show less detail for the target"),
    bind(Logs, &[code(KeyCode::Right)], Action::Log(LogKey::CaptureMore), None, "record more detail for the target"),
    bind(Logs, &[code(KeyCode::Left)], Action::Log(LogKey::CaptureLess), None, "record less detail for the target"),
    bind(Logs, &[k('h')], Action::Log(LogKey::ToggleTargets), Some("targets"), "hide or show the target list"),
    bind(Logs, &[code(KeyCode::PageUp)], Action::Log(LogKey::PageUp), Some("scroll"), "scroll back"),
    bind(Logs, &[code(KeyCode::PageDown)], Action::Log(LogKey::PageDown), None, "scroll forward"),
    bind(Logs, &[code(KeyCode::Esc)], Action::Log(LogKey::EndPaging), None, "back to the live tail"),
    bind(Detail, &[k('j'), code(KeyCode::Down)], Action::Down, Some("scroll"), "scroll down"),
    bind(Detail, &[k('k'), code(KeyCode::Up)], Action::Up, None, "scroll up"),
    bind(Detail, &[k('g'), code(KeyCode::Home)], Action::Top, None, "top"),
    bind(Detail, &[k('G'), code(KeyCode::End)], Action::Bottom, None, "bottom (and follow)"),
    bind(Detail, &[code(KeyCode::PageUp)], Action::PageUp, None, "one page up"),
    bind(Detail, &[code(KeyCode::PageDown)], Action::PageDown, None, "one page down"),
    bind(Detail, &[code(KeyCode::Esc)], Action::Back, Some("back"), "back to the list"),
    bind(Confirm, &[k('y')], Action::Confirm, Some("yes, do it"), "do what the popup says"),
    bind(Confirm, &[k('n'), code(KeyCode::Esc)], Action::Cancel, Some("cancel"), "cancel"),
    bind(
        Confirm,
        &[code(KeyCode::Tab), code(KeyCode::Left), code(KeyCode::Right)],
        Action::SwitchFocus,
        None,
        "move between Cancel and Confirm",
    ),
    bind(
        Confirm,
        &[code(KeyCode::Enter)],
        Action::Press,
        Some("press focused"),
        "press the focused button (Cancel at first)",
    ),
    bind(Help, &[k('?'), code(KeyCode::Esc), k('q')], Action::Back, Some("close"), "close the help"),
    bind(
        FilterInput,
        &[code(KeyCode::Enter)],
        Action::Apply,
        Some("keep filter"),
        "keep the filter and go back to the list",
    ),
    bind(FilterInput, &[code(KeyCode::Esc)], Action::Abandon, Some("clear"), "clear the filter"),
    bind(FilterInput, &[code(KeyCode::Backspace)], Action::Erase, None, "erase a character"),
];

/// The scopes active in a situation, most specific first.
pub fn scopes(ctx: Context) -> &'static [Scope] {
    match ctx {
        Context::Confirm => &[Confirm, Always],
        Context::Help => &[Help, Always],
        Context::FilterInput => &[FilterInput, Always],
        Context::Detail => &[Detail, Global, Always],
        Context::Tab(Tab::Events) => &[Events, List, Global, Always],
        Context::Tab(Tab::Jobs) => &[Jobs, List, Global, Always],
        Context::Tab(Tab::Queues) => &[Global, Always],
        Context::Tab(Tab::Logs) => &[Logs, Global, Always],
    }
}

/// What has the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Tab(Tab),
    Detail,
    Confirm,
    Help,
    FilterInput,
}

/// The action for a key press in `ctx`, if any. Key releases and repeats of modifiers are
/// ignored.
pub fn lookup(ctx: Context, ev: &KeyEvent) -> Option<Action> {
    if ev.kind == KeyEventKind::Release {
        return None;
    }
    for scope in scopes(ctx) {
        if let Some(b) = KEYMAP.iter().find(|b| b.scope == *scope && b.keys.iter().any(|key| key.matches(ev))) {
            return Some(b.action);
        }
    }
    match (ctx, ev.code) {
        (Context::FilterInput, KeyCode::Char(c)) if !ev.modifiers.contains(KeyModifiers::CONTROL) => {
            Some(Action::Type(c))
        }
        _ => None,
    }
}

/// Whether an action changes the pipeline (and so is refused by `--read-only`).
pub fn mutates(action: Action) -> bool {
    KEYMAP.iter().any(|b| b.action == action && b.mutates)
}

/// Footer hints for `ctx`: `(keys, hint)`, most specific scope first; mutating ones left out
/// when `read_only`.
pub fn hints(ctx: Context, read_only: bool) -> Vec<(String, &'static str)> {
    scopes(ctx)
        .iter()
        .flat_map(|scope| KEYMAP.iter().filter(move |b| b.scope == *scope))
        .filter(|b| !(read_only && b.mutates))
        .filter_map(|b| b.hint.map(|h| (keys_label(b), h)))
        .collect()
}

/// The help: one section per scope, each `(keys, what it does)`.
pub fn help_sections(read_only: bool) -> Vec<(&'static str, Vec<(String, String)>)> {
    let order = [Always, Global, List, Events, Jobs, Logs, Detail, Confirm, FilterInput, Help];
    order
        .iter()
        .map(|scope| {
            let rows = KEYMAP
                .iter()
                .filter(|b| b.scope == *scope)
                .map(|b| {
                    let help = if read_only && b.mutates {
                        format!("{} (off: read-only)", b.help)
                    } else {
                        b.help.to_string()
                    };
                    (keys_label(b), help)
                })
                .collect();
            (scope.title(), rows)
        })
        .collect()
}

fn keys_label(b: &Binding) -> String {
    b.keys.iter().map(Key::label).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn every_view_key_resolves_where_it_should() {
        let events = Context::Tab(Tab::Events);
        assert_eq!(lookup(events, &press(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(lookup(events, &KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Quit));
        assert_eq!(lookup(events, &press(KeyCode::Char('c'))), None);
        assert_eq!(lookup(events, &press(KeyCode::Char('r'))), Some(Action::Replay));
        assert_eq!(lookup(Context::Tab(Tab::Queues), &press(KeyCode::Char('r'))), None);
        assert_eq!(lookup(events, &KeyEvent::new(KeyCode::Char('G'), KeyModifiers::SHIFT)), Some(Action::Bottom));
        assert_eq!(lookup(Context::Tab(Tab::Logs), &press(KeyCode::Char('+'))), Some(Action::Log(LogKey::ShowMore)));
        assert_eq!(lookup(events, &press(KeyCode::Char('3'))), Some(Action::ShowTab(Tab::Queues)));
    }

    #[test]
    fn popups_take_the_keyboard() {
        // `q` in the confirm popup does not quit, and Enter presses the focused button.
        assert_eq!(lookup(Context::Confirm, &press(KeyCode::Char('q'))), None);
        assert_eq!(lookup(Context::Confirm, &press(KeyCode::Enter)), Some(Action::Press));
        assert_eq!(lookup(Context::Help, &press(KeyCode::Char('q'))), Some(Action::Back));
        // The filter input types what other contexts would treat as commands.
        assert_eq!(lookup(Context::FilterInput, &press(KeyCode::Char('q'))), Some(Action::Type('q')));
        assert_eq!(lookup(Context::FilterInput, &press(KeyCode::Esc)), Some(Action::Abandon));
        // Ctrl-c quits from anywhere (raw mode turns it into a key, not a signal).
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        for ctx in [Context::Confirm, Context::Help, Context::FilterInput, Context::Detail, Context::Tab(Tab::Logs)] {
            assert_eq!(lookup(ctx, &ctrl_c), Some(Action::Quit), "{ctx:?}");
        }
    }

    #[test]
    fn read_only_hides_the_mutating_hints_and_marks_them_in_help() {
        let ctx = Context::Tab(Tab::Jobs);
        assert!(hints(ctx, false).iter().any(|(_, h)| *h == "replay"));
        assert!(!hints(ctx, true).iter().any(|(_, h)| *h == "replay" || *h == "drop"));
        let help = help_sections(true);
        let jobs = &help.iter().find(|(t, _)| *t == "Jobs").expect("a Jobs section").1;
        assert!(jobs.iter().all(|(_, h)| h.ends_with("(off: read-only)")));
        assert!(mutates(Action::Drop) && !mutates(Action::Quit));
    }

    #[test]
    fn no_key_is_bound_twice_in_one_context() {
        let contexts = [
            Context::Tab(Tab::Events),
            Context::Tab(Tab::Jobs),
            Context::Tab(Tab::Queues),
            Context::Tab(Tab::Logs),
            Context::Detail,
            Context::Confirm,
            Context::Help,
            Context::FilterInput,
        ];
        for ctx in contexts {
            let mut seen = Vec::new();
            for scope in scopes(ctx) {
                for b in KEYMAP.iter().filter(|b| b.scope == *scope) {
                    for key in b.keys {
                        let label = key.label();
                        // A more specific scope may shadow a general one on purpose (j/k in Logs);
                        // within one scope a key means one thing.
                        assert!(!seen.contains(&(label.clone(), *scope)), "{label} bound twice in {scope:?}");
                        seen.push((label, *scope));
                    }
                }
            }
        }
    }
}
