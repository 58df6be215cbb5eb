//! `mvnet top`: a live view of the classifier's counters, refreshed every
//! interval from the pinned maps (through a [`RosterCache`]), rates by
//! [`Rates::between`].
//!
//! * [`model`] — what to show (sorted rows, sparkline histories, alarms),
//!   without a terminal;
//! * [`view`] — drawing it with ratatui, or as plain text.
//!
//! On a terminal it takes the alternate screen in raw mode and gives both
//! back on every way out: `q`, Esc, Ctrl-C, SIGINT/SIGTERM/SIGHUP, an error,
//! a panic. When stdout is not a terminal, or `TERM` is unset or `dumb`, it
//! prints the same rows as plain text once per interval instead.
#[cfg(test)]
mod fixtures;
pub mod model;
pub mod view;

use std::{
    io::{self, IsTerminal as _, Write as _},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use ratatui::{
    backend::CrosstermBackend,
    crossterm::{
        cursor,
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
    Terminal,
};

use crate::{
    controller::Controller,
    stats::{Rates, RosterCache, Snapshot},
};
use model::Model;

/// Samples of history kept per endpoint (the widest sparkline).
const HISTORY: usize = 120;

/// What `mvnet top` was asked for.
pub struct Options {
    pub state_dir: PathBuf,
    /// Only this network (name or id).
    pub network: Option<String>,
    pub interval: Duration,
    /// Stop after this many refreshes (default: until quit).
    pub count: Option<u64>,
    /// Plain text even on a capable terminal.
    pub plain: bool,
}

/// Whether to draw a screen: stdout is a terminal and `TERM` names one
/// that is not `dumb`.
pub fn terminal_capable() -> bool {
    let term = std::env::var("TERM").unwrap_or_default();
    io::stdout().is_terminal() && !term.is_empty() && term != "dumb"
}

pub fn run(opts: Options) -> Result<()> {
    let source = Source {
        state_dir: opts.state_dir.clone(),
        network: opts.network.clone(),
        cache: RosterCache::default(),
    };
    // Read once before taking the screen, so that an unknown network or an
    // unreadable map is reported on a normal terminal.
    let first = source.collect()?;
    let model = Model::new(opts.interval, HISTORY);
    if opts.plain || !terminal_capable() {
        run_plain(&source, first, model, &opts)
    } else {
        run_screen(&source, first, model, &opts)
    }
}

/// Reads a snapshot per refresh: the state (without the lock, so other
/// `mvnet` commands are not held up, and new endpoints show up) when it
/// was saved since the last refresh, then the counters.
struct Source {
    state_dir: PathBuf,
    network: Option<String>,
    cache: RosterCache,
}

impl Source {
    fn collect(&self) -> Result<Snapshot> {
        let load = || {
            let ctl = Controller::snapshot(&self.state_dir)?;
            let only = match &self.network {
                Some(n) => Some(ctl.network(n)?.id.clone()),
                None => None,
            };
            Ok((ctl.state, only))
        };
        self.cache.get(&self.state_dir, load)?.read()
    }
}

fn run_plain(source: &Source, first: Snapshot, model: Model, opts: &Options) -> Result<()> {
    let mut out = io::stdout().lock();
    let mut prev: Option<Snapshot> = None;
    let mut first = Some(first);
    let mut done = 0;
    let mut next = Instant::now();
    loop {
        let cur = match first.take() {
            Some(s) => s,
            None => source.collect()?,
        };
        let rates = prev.as_ref().map(|p| Rates::between(p, &cur));
        let text = view::plain(&model.view(&cur, rates.as_ref()));
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            // The reader went away (`| head`): done.
            return Ok(());
        }
        prev = Some(cur);
        done += 1;
        if opts.count.is_some_and(|c| done >= c) {
            return Ok(());
        }
        next = (next + opts.interval).max(Instant::now());
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// Set by SIGINT, SIGTERM and SIGHUP while the screen is up.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// The terminal in raw mode on the alternate screen; restored on drop and
/// on panic.
struct Screen {
    terminal: Terminal<CrosstermBackend<io::Stdout>>,
}

impl Screen {
    fn enter() -> Result<Screen> {
        // The handler only stores to an atomic.
        crate::sys::process::on_signals(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP], on_signal);
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            hook(info);
        }));
        // crossterm's event poll never returns once the tty hangs up (its
        // reads return 0 bytes and it retries at once), so neither the
        // signal flag nor the loop's own checks are seen again: a watchdog
        // ends the process when the terminal is gone, or when a stop was
        // asked for and the loop has not ended it within a second.
        std::thread::spawn(|| {
            let mut stop_seen: Option<Instant> = None;
            loop {
                std::thread::sleep(Duration::from_millis(200));
                if terminal_gone() {
                    std::process::exit(0);
                }
                if STOP.load(Ordering::Relaxed) {
                    let since = *stop_seen.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_secs(1) {
                        restore();
                        std::process::exit(0);
                    }
                }
            }
        });
        terminal::enable_raw_mode().context("putting the terminal in raw mode")?;
        let mut stdout = io::stdout();
        if let Err(e) = execute!(stdout, EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e).context("entering the alternate screen");
        }
        let terminal = Terminal::new(CrosstermBackend::new(stdout)).inspect_err(|_| restore())?;
        Ok(Screen { terminal })
    }
}

/// Whether our terminal has hung up (an SSH session or tmux server gone
/// without a SIGHUP reaching us): a hung-up tty answers every ioctl with
/// EIO, while its reads return at once with nothing, which would otherwise
/// spin this loop forever.
fn terminal_gone() -> bool {
    !crate::sys::term::tty_answers(libc::STDOUT_FILENO)
}

/// Gives the terminal back: cooked mode, main screen, cursor shown.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

fn run_screen(source: &Source, first: Snapshot, mut model: Model, opts: &Options) -> Result<()> {
    let mut screen = Screen::enter()?;
    let mut cur = first;
    let mut rates: Option<Rates> = None;
    let mut done = 1;
    let mut next = Instant::now() + opts.interval;
    loop {
        let view = model.view(&cur, rates.as_ref());
        screen.terminal.draw(|f| view::draw(f, &view))?;
        // Wait for the next refresh, a key, or a signal.
        loop {
            if STOP.load(Ordering::Relaxed) || terminal_gone() {
                return Ok(());
            }
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if !event::poll(left.min(Duration::from_millis(200)))? {
                continue;
            }
            // A hung-up tty polls readable forever and crossterm's read
            // then never returns: check before reading.
            if terminal_gone() {
                return Ok(());
            }
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release => match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(())
                    }
                    KeyCode::Char('s') | KeyCode::Right => model.next_sort(),
                    KeyCode::Left => model.prev_sort(),
                    KeyCode::Char('r') => model.toggle_reverse(),
                    KeyCode::Char('n') => model.next_network(&cur),
                    _ => continue,
                },
                Event::Resize(..) => {}
                _ => continue,
            }
            let view = model.view(&cur, rates.as_ref());
            screen.terminal.draw(|f| view::draw(f, &view))?;
        }
        if opts.count.is_some_and(|c| done >= c) {
            return Ok(());
        }
        let fresh = source.collect()?;
        let r = Rates::between(&cur, &fresh);
        model.record(&r);
        rates = Some(r);
        cur = fresh;
        done += 1;
        next = (next + opts.interval).max(Instant::now());
    }
}
