//! The one owner of the terminal. `Guard::enter` switches to the alternate screen in raw mode
//! and installs a panic hook; dropping the guard restores the terminal on every other way out.
//!
//! The hook restores the terminal only for a panic on the console's own thread (then the
//! message is printed on the normal screen, as usual). A panic elsewhere — a request handler,
//! the worker — is caught by its runtime and does not end the console, so restoring the terminal
//! there would leave the console drawing on a cooked screen; it is logged to the Logs view
//! instead of being printed over the console.

use std::sync::Once;

/// The name of the console's thread.
pub const CONSOLE_THREAD: &str = "agentctl-console";

pub struct Guard(());

impl Guard {
    pub fn enter() -> std::io::Result<(Guard, ratatui::DefaultTerminal)> {
        let terminal = match ratatui::try_init() {
            Ok(t) => t,
            Err(e) => {
                // Raw mode or the alternate screen may be half set up.
                ratatui::restore();
                return Err(e);
            }
        };
        install_panic_hook();
        Ok((Guard(()), terminal))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // ratatui's hook: restore the terminal, then the previous hook (which prints).
        let restore_then_print = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(CONSOLE_THREAD) {
                restore_then_print(info);
            } else {
                let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
                tracing::error!("a task panicked on thread {thread}: {info}");
            }
        }));
    });
}
