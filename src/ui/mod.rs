//! The terminal console: a reader of the same event stream the headless printer reads. Three
//! places, as in bottom: the pipeline's events and the operator's keys come in (`run`), the
//! state is updated (`state`, `console`), and a frame is drawn (`view`) — only when something
//! changed, at most ~30 times a second, after draining a bounded batch of events.
//!
//! The console never slows the pipeline: it reads the bus (a bounded broadcast channel) and,
//! when it falls behind, the bus drops the oldest events for it and says how many; the header
//! shows that count. Replays and drops run on their own tasks and report back. On a shared
//! journal, the fleet watcher (`fleet`) reads what the other instances do from the journal every
//! second and sends it on a bounded channel of its own (drop and count; see there).

pub mod console;
mod effects;
pub mod fleet;
pub mod keys;
mod popup;
pub mod state;
mod terminal;
pub mod view;

use crate::cli::Mode;
use crate::config::{Config, redact_url};
use crate::event::{Bus, Event};
use anyhow::Context as _;
use console::{Console, Detail, Effect};
use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use state::{Limits, Millis, State};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use view::{Chrome, Scene};

/// At most this many events are applied before a frame is drawn.
const BATCH: usize = 4096;
/// The shortest time between two frames (~30 fps).
const FRAME: Duration = Duration::from_millis(33);
/// How often a running job's log file is re-read while its tail is open.
const LOG_REFRESH: Duration = Duration::from_millis(500);

pub fn now_ms() -> Millis {
    crate::store::unix_now_ms()
}

/// Sends tracing to the console's Logs view instead of stderr (which the screen owns).
pub fn init_tracing() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn"));
    tracing_subscriber::registry().with(filter).with(tui_logger::TuiTracingSubscriberLayer).init();
    // The env filter above decides what is recorded; the widget shows all of it by default.
    let _ = tui_logger::init_logger(tui_logger::LevelFilter::Trace);
    tui_logger::set_default_level(tui_logger::LevelFilter::Trace);
}

/// Runs agentctl (`app::run`) with the console in this terminal until `q`, a signal, or the
/// service stopping on its own. The terminal is restored on every way out, panics included.
pub async fn run(
    config: Config,
    mode: Mode,
    read_only: bool,
    bus: Bus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let limits = Limits { deliveries: config.ui.history_deliveries, jobs: config.ui.history_jobs };
    let mut state = State::new(limits);
    // The service opens first (its errors reach the terminal before the screen is taken); the
    // console acts through its journal and broker handles.
    let service = crate::app::Service::open(config.clone(), mode).await?;
    let ops = Arc::new(service.ops());
    effects::seed(&ops, &mut state).await;
    effects::seed_cost(&ops, &mut state).await;
    // On a shared journal the fleet watcher runs beside the service, on this runtime.
    let fleet_stop = CancellationToken::new();
    let (fleet, fleet_rx) = if ops.journal.shared() {
        state.share(service.instance());
        let cursor = state.deliveries.iter().filter_map(|d| d.journal_id).max();
        let followed = state.jobs.values().filter(|j| j.state.is_live() && j.state != state::JobState::Queued);
        let watcher = fleet::Watcher::new(
            ops.journal.clone(),
            cursor,
            limits.deliveries,
            followed.map(|j| j.task_id.clone()).collect::<Vec<_>>(),
        );
        let (tx, rx) = mpsc::channel(fleet::CHANNEL);
        (Some(tokio::spawn(watcher.run(tx, fleet_stop.clone()))), Some(rx))
    } else {
        (None, None)
    };
    let chrome = Chrome {
        mode: format!("{mode:?}").to_lowercase(),
        broker: if config.broker.url.is_empty() { "embedded".into() } else { redact_url(&config.broker.url) },
        listen: if matches!(mode, Mode::All | Mode::Webhook) { config.listen.addr.clone() } else { "-".into() },
        started_at: now_ms(),
        data_dir: config.storage.data_dir(),
    };
    // Subscribe before the service starts so its first events are seen.
    let events = bus.subscribe();
    // The log lines the headless mode prints go to the Logs view.
    let printer_stop = CancellationToken::new();
    let printer = tokio::spawn(crate::headless::run(bus.clone(), printer_stop.clone()));
    let mut service = tokio::spawn(service.run(bus.clone(), shutdown.clone()));

    // The console runs on a thread of its own, so a key press is answered promptly even when a
    // flood of deliveries keeps every runtime worker busy; its actions run on the main runtime.
    // The service stays owned here, so it is stopped and waited for however the console ends.
    let service_ended = CancellationToken::new();
    let parts = Parts {
        state,
        chrome,
        read_only,
        ops,
        bus: bus.clone(),
        shutdown: shutdown.clone(),
        service_ended: service_ended.clone(),
        events,
        fleet: fleet_rx,
        runtime: tokio::runtime::Handle::current(),
    };
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(terminal::CONSOLE_THREAD.into())
        .spawn(move || {
            let looped = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(async {
                    let (guard, mut terminal) = terminal::Guard::enter().map_err(|e| {
                        anyhow::Error::new(e).context("while opening the terminal console (try --no-tui)")
                    })?;
                    let looped = event_loop(&mut terminal, parts).await;
                    drop(guard);
                    looped
                }),
                Err(e) => Err(anyhow::Error::new(e).context("while starting the console's runtime")),
            };
            let _ = done_tx.send(looped);
        })
        .context("while starting the console thread")?;
    let mut served = None;
    let looped = loop {
        tokio::select! {
            looped = &mut done_rx => break looped.unwrap_or_else(|_| Err(anyhow::anyhow!("the console panicked"))),
            result = &mut service, if served.is_none() => {
                served = Some(result.unwrap_or_else(|e| Err(anyhow::anyhow!("agentctl panicked: {e}"))));
                service_ended.cancel();
            }
        }
    };
    // However the console ended, the service stops and is waited for.
    shutdown.cancel();
    fleet_stop.cancel();
    if let Some(fleet) = fleet {
        let _ = fleet.await;
    }
    let served = match served {
        Some(served) => served,
        None => {
            eprintln!("agentctl: console closed; waiting for in-flight deliveries and handlers to finish…");
            service.await.unwrap_or_else(|e| Err(anyhow::anyhow!("agentctl panicked: {e}")))
        }
    };
    printer_stop.cancel();
    let _ = printer.await;
    looped.and(served)
}

/// What the console's loop owns.
struct Parts {
    state: State,
    chrome: Chrome,
    read_only: bool,
    ops: Arc<crate::ops::Ops>,
    bus: Bus,
    shutdown: CancellationToken,
    /// Cancelled when the service has stopped (on its own, or after `shutdown`).
    service_ended: CancellationToken,
    events: broadcast::Receiver<Event>,
    /// The fleet watcher's reads, on a shared journal.
    fleet: Option<mpsc::Receiver<fleet::FleetEvent>>,
    /// The main runtime, where actions run.
    runtime: tokio::runtime::Handle,
}

/// Terminal input errors in a row after which the console gives up (the terminal is gone).
const MAX_INPUT_ERRORS: u32 = 10;

/// Draws and reacts until the service has ended or the terminal's input is gone.
async fn event_loop(terminal: &mut ratatui::DefaultTerminal, parts: Parts) -> anyhow::Result<()> {
    let Parts { mut state, chrome, read_only, ops, bus, shutdown, service_ended, mut events, mut fleet, runtime } =
        parts;
    let chrome = &chrome;
    let mut console = Console::new(read_only);
    let logger = tui_logger::TuiWidgetState::new().set_default_display_level(tui_logger::LevelFilter::Info);
    let (results_tx, mut results) = mpsc::channel(64);
    let mut keys = EventStream::new();
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut log_refresh = tokio::time::interval(LOG_REFRESH);
    log_refresh.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // One re-read of a job's log at a time.
    let mut log_loading = false;
    let mut input_errors = 0;
    let mut dirty = true;
    // A key press is answered at once, not at the next frame slot.
    let mut urgent = false;
    let mut last_draw = tokio::time::Instant::now() - FRAME;
    let spawn = |effect| effects::spawn(&runtime, effect, ops.clone(), bus.clone(), results_tx.clone());
    loop {
        if dirty && (urgent || last_draw.elapsed() >= FRAME) {
            let now = now_ms();
            let mut drawn = view::Drawn::default();
            terminal.draw(|frame| {
                drawn = view::draw(frame, &Scene { state: &state, console: &console, chrome, now, logger: &logger });
            })?;
            console.page = drawn.page.max(1);
            console.detail_max = drawn.detail_max;
            last_draw = tokio::time::Instant::now();
            dirty = false;
            urgent = false;
        }
        let next_frame = last_draw + FRAME;
        let job_log_live = match &console.detail {
            Some(Detail::JobLog { task_id, .. }) => state.jobs.get(task_id).is_none_or(|j| j.state.is_live()),
            _ => false,
        };
        // The rare inputs first: under a flood the bus always has an event ready.
        tokio::select! {
            biased;
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(key))) => {
                    input_errors = 0;
                    let Some(action) = keys::lookup(console.context(), &key) else { continue };
                    dirty = true;
                    urgent = true;
                    let opened_log = !matches!(console.detail, Some(Detail::JobLog { .. }));
                    match console.handle(action, &state, now_ms()) {
                        Some(Effect::Quit) => {
                            console.say("shutting down: finishing in-flight deliveries and handlers…", now_ms());
                            shutdown.cancel();
                        }
                        Some(Effect::Log(key)) => logger.transition(effects::log_event(key)),
                        Some(effect @ Effect::LoadJobLog(_)) => {
                            if opened_log {
                                log_refresh.reset();
                            }
                            log_loading = true;
                            spawn(effect);
                        }
                        Some(effect) => spawn(effect),
                        None => {}
                    }
                }
                Some(Ok(TermEvent::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    input_errors += 1;
                    tracing::warn!("terminal input failed: {e}");
                    if input_errors >= MAX_INPUT_ERRORS {
                        shutdown.cancel();
                        return Err(anyhow::Error::new(e).context("the terminal's input failed repeatedly"));
                    }
                }
                None => return Ok(()),
            },
            _ = service_ended.cancelled() => return Ok(()),
            Some(result) = results.recv() => {
                if matches!(result, effects::Outcome::JobLog(..)) {
                    log_loading = false;
                }
                effects::apply(result, &mut state, &mut console, now_ms());
                dirty = true;
            }
            Some(read) = recv_fleet(&mut fleet) => {
                dirty |= state.apply_fleet(read, now_ms());
            }
            _ = second.tick() => {
                state.tick(now_ms());
                // Uptime, elapsed times and "next attempt in" move every second.
                dirty = true;
            }
            _ = log_refresh.tick(), if job_log_live && !log_loading => {
                if let Some(Detail::JobLog { task_id, .. }) = &console.detail {
                    log_loading = true;
                    spawn(Effect::LoadJobLog(task_id.clone()));
                }
            }
            received = events.recv() => {
                dirty |= apply(&mut state, received, &mut events);
            }
            _ = tokio::time::sleep_until(next_frame), if dirty => {}
        }
    }
}

/// The fleet watcher's next read; never, on a journal of this instance alone (or once the
/// watcher has stopped).
async fn recv_fleet(fleet: &mut Option<mpsc::Receiver<fleet::FleetEvent>>) -> Option<fleet::FleetEvent> {
    match fleet {
        Some(rx) => match rx.recv().await {
            Some(read) => Some(read),
            None => {
                *fleet = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Applies one received event and then up to `BATCH` more that are already waiting.
fn apply(
    state: &mut State,
    first: Result<Event, broadcast::error::RecvError>,
    rx: &mut broadcast::Receiver<Event>,
) -> bool {
    let now = now_ms();
    let mut changed = false;
    let mut take = |state: &mut State, r: Result<Event, _>| match r {
        Ok(e) => changed |= state.apply(e, now),
        Err(broadcast::error::RecvError::Lagged(n)) => {
            state.note_dropped(n);
            changed = true;
        }
        Err(_) => {}
    };
    take(state, first);
    for _ in 0..BATCH {
        match rx.try_recv() {
            Ok(e) => take(state, Ok(e)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => take(state, Err(broadcast::error::RecvError::Lagged(n))),
            Err(_) => break,
        }
    }
    changed
}

#[cfg(test)]
mod render_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_that_falls_behind_counts_what_the_bus_dropped_and_drains_a_batch() {
        let bus = Bus::new(4);
        let mut rx = bus.subscribe();
        for _ in 0..10 {
            bus.emit(Event::DeliveryReceived {
                source: crate::task::Source::Github,
                event: "issues".into(),
                action: None,
            });
        }
        let mut state = State::new(Limits { deliveries: 10, jobs: 10 });
        let first = rx.try_recv().map_err(|e| match e {
            broadcast::error::TryRecvError::Lagged(n) => broadcast::error::RecvError::Lagged(n),
            _ => broadcast::error::RecvError::Closed,
        });
        assert!(apply(&mut state, first, &mut rx));
        // The channel kept the last 4; the 6 before them were dropped for this reader.
        assert_eq!(state.dropped_events, 6);
        assert_eq!(state.counters.received, 4);
    }
}
