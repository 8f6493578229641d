//! The one owner of the terminal. `Guard::enter` switches to the alternate screen in raw mode
//! and installs ratatui's panic hook (which restores the terminal before the panic message is
//! printed); dropping the guard restores it on every other way out.

pub struct Guard(());

impl Guard {
    pub fn enter() -> std::io::Result<(Guard, ratatui::DefaultTerminal)> {
        let terminal = ratatui::try_init()?;
        Ok((Guard(()), terminal))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}
