//! `mvnet docker sync` (one shot) and `mvnet docker watch` (sync, then
//! follow Docker's events, re-syncing after a lost connection).
use std::{
    collections::{HashMap, VecDeque},
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{anyhow, Context as _, Result};
use bollard::models::{EventMessage, EventMessageTypeEnum};
use futures::StreamExt as _;

use super::{
    apply,
    client::{DockerHost, Engine},
    read::{self, Adopt, Seen, Snapshot},
};

/// What `sync` and `watch` are told.
pub struct Options {
    pub host: DockerHost,
    pub adopt: Adopt,
    pub state_dir: PathBuf,
}

/// First and longest wait before connecting again after a lost connection.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// First and longest wait before syncing again while a network Docker has
/// is not adopted or its parent could not be read.
const RETRY: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(60));

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Prints a line to standard output now (watch's output is read live).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn report_problems(snap: &Snapshot) {
    for p in &snap.problems {
        eprintln!("mvnet: docker: {p}");
    }
}

/// What one sync did: the snapshot it applied, and whether anything of it
/// had to be left out (reported on standard error, or by the core as
/// `skipped …` lines).
struct Synced {
    snap: Snapshot,
    table: apply::InTable,
    incomplete: bool,
}

/// Runs a state change (which may wait for the state's lock) off the
/// runtime's one thread, so that `watch` reads Docker's events while it
/// waits: events it does not read wait in dockerd's queue for it, which
/// drops them once 1024 are queued.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("a state change failed: {e}"))?
}

impl Synced {
    /// The networks to follow (those of the snapshot the state holds after
    /// the sync: the others' adoption failed), and whether a later sync
    /// may take more: a network was not adopted, or its parent could not
    /// be read. (A container whose report does not map is not retried: it
    /// would not map the next time either, and its records are kept; its
    /// next event reads it again.)
    fn followed(&self) -> (HashMap<String, String>, bool) {
        let mut networks = self.snap.network_names();
        let all = networks.len();
        networks.retain(|id, _| self.table.networks.contains(id));
        let retry = networks.len() < all || !self.snap.unread.networks.is_empty();
        (networks, retry)
    }
}

/// Reads everything and converges.
async fn sync_once(engine: &Engine, opts: &Options) -> Result<Synced> {
    let started = std::time::Instant::now();
    let snap = read::snapshot(engine, opts.adopt).await?;
    let read = started.elapsed();
    report_problems(&snap);
    let dir = opts.state_dir.clone();
    let (report, table, snap) =
        blocking(move || apply::converge(&dir, &snap).map(|(report, table)| (report, table, snap)))
            .await?;
    log::info!(
        "docker sync: read {} endpoint(s) from Docker in {:.1} ms, converged in {:.1} ms",
        snap.endpoints(),
        read.as_secs_f64() * 1e3,
        (started.elapsed() - read).as_secs_f64() * 1e3
    );
    let text = report.to_string();
    if !text.trim().is_empty() {
        say(text.trim_end());
    }
    say(&format!(
        "docker {} at {}: {} macvlan network(s), {} endpoint(s) of {} container(s) in the \
         classifier's table",
        engine.version,
        engine.host(),
        table.networks.len(),
        table.endpoints,
        table.containers
    ));
    let incomplete =
        !snap.problems.is_empty() || report.lines.iter().any(|l| l.starts_with("skipped "));
    Ok(Synced {
        snap,
        table,
        incomplete,
    })
}

/// `mvnet docker sync`: exit 1 when a network or endpoint was left out
/// (each is reported).
pub fn sync(opts: Options) -> Result<i32> {
    runtime()?.block_on(async {
        let engine = Engine::connect(&opts.host).await?;
        let synced = sync_once(&engine, &opts).await?;
        Ok(if synced.incomplete { 1 } else { 0 })
    })
}

/// `mvnet docker watch`: runs until killed. The first connection must
/// succeed (a wrong socket is an error at once); a connection lost later is
/// retried with backoff, and every new connection starts with a full sync,
/// so what happened meanwhile (a daemon restart included) is converged.
pub fn watch(opts: Options) -> Result<i32> {
    runtime()?.block_on(async {
        let mut engine = Engine::connect(&opts.host).await?;
        let mut delay = BACKOFF.0;
        loop {
            // The event stream is opened before the sync reads Docker and
            // read while it runs: Docker replays only its last 256 events
            // (of every kind) to a subscriber that asks for older ones, so
            // a stream opened after a long sync (or one that waited for
            // the state lock) would miss what happened meanwhile.
            let mut stream = Stream {
                events: Box::pin(engine.events(SystemTime::now())),
                queue: VecDeque::new(),
                open: true,
            };
            let lost = match stream.reading(sync_once(&engine, &opts)).await {
                Ok(synced) => {
                    delay = BACKOFF.0;
                    follow(&engine, &opts, synced, stream).await
                }
                Err(e) => e,
            };
            eprintln!("mvnet: docker watch: {lost:#}; connecting again");
            engine = loop {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF.1);
                match Engine::connect(&opts.host).await {
                    Ok(e) => break e,
                    Err(e) => eprintln!(
                        "mvnet: docker watch: {e}; trying again in {:.1} s",
                        delay.as_secs_f64()
                    ),
                }
            };
        }
    })
}

type Event = Result<EventMessage, bollard::errors::Error>;

/// Docker's event stream, and the events read from it ahead of the one
/// being applied.
struct Stream<S> {
    events: std::pin::Pin<Box<S>>,
    queue: VecDeque<Event>,
    /// Until Docker ends the stream.
    open: bool,
}

impl<S: futures::Stream<Item = Event>> Stream<S> {
    /// Awaits `work` (a sync, or an event's change, which may wait for the
    /// state's lock or for Docker) while reading the stream on into the
    /// queue: dockerd drops events for a subscriber that leaves 1024
    /// unread.
    async fn reading<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                next = self.events.next(), if self.open => match next {
                    Some(next) => self.queue.push_back(next),
                    None => self.open = false,
                },
                r = &mut work => return r,
            }
        }
    }
}

/// What `follow` waits for next.
enum Next {
    Event(Event),
    Closed,
    Retry,
}

/// Sleeps until `at`, or for ever.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Applies the events that came while `synced` ran (queued in `stream`),
/// then follows the stream, applying each event; returns why it stopped
/// (the connection). While a network Docker has is not adopted (its
/// adoption failed: a classifier to attach with another capacity, a full
/// table) or its parent could not be read, it syncs again, after 2 s and
/// then at doubling intervals up to a minute, until all are in.
async fn follow<S: futures::Stream<Item = Event>>(
    engine: &Engine,
    opts: &Options,
    synced: Synced,
    mut stream: Stream<S>,
) -> anyhow::Error {
    let (mut networks, wanted) = synced.followed();
    let mut retry = Retry::default();
    retry.after(wanted);
    loop {
        let next = match stream.queue.pop_front() {
            Some(ev) => Next::Event(ev),
            None if !stream.open => Next::Closed,
            None => tokio::select! {
                next = stream.events.next() => next.map_or(Next::Closed, Next::Event),
                () = until(retry.at) => Next::Retry,
            },
        };
        let ev = match next {
            Next::Event(Ok(ev)) => ev,
            Next::Event(Err(e)) => return anyhow!(e).context("the event stream of Docker broke"),
            Next::Closed => break,
            Next::Retry => {
                match stream.reading(sync_once(engine, opts)).await {
                    Ok(synced) => {
                        let wanted;
                        (networks, wanted) = synced.followed();
                        retry.after(wanted);
                    }
                    Err(e) if e.downcast_ref::<super::client::DockerError>().is_some() => return e,
                    Err(e) => {
                        eprintln!("mvnet: docker watch: syncing again: {e:#}");
                        retry.after(true);
                    }
                }
                continue;
            }
        };
        let mut adoption_failed = false;
        let applied = stream
            .reading(on_event(
                engine,
                opts,
                &mut networks,
                &mut adoption_failed,
                &ev,
            ))
            .await;
        if adoption_failed && retry.at.is_none() {
            retry.after(true);
        }
        match applied {
            Ok(()) => {}
            // Docker did not answer: the connection is gone.
            Err(e) if e.downcast_ref::<super::client::DockerError>().is_some() => return e,
            // The state or kernel refused one change (a full table, a
            // stopped classifier): said, and the next event goes on.
            Err(e) => eprintln!("mvnet: docker watch: {e:#}"),
        }
    }
    anyhow!("Docker closed the event stream")
}

/// When `follow` syncs again, and how long it waits after that.
struct Retry {
    at: Option<Instant>,
    wait: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            at: None,
            wait: RETRY.0,
        }
    }
}

impl Retry {
    /// Schedules the next sync if `wanted` (each wait twice the last, up
    /// to a minute), else none (and the next wait is the first again).
    fn after(&mut self, wanted: bool) {
        if wanted {
            self.at = Some(Instant::now() + self.wait);
            self.wait = (self.wait * 2).min(RETRY.1);
        } else {
            *self = Retry::default();
        }
    }
}

/// What one event changes.
async fn on_event(
    engine: &Engine,
    opts: &Options,
    networks: &mut HashMap<String, String>,
    adoption_failed: &mut bool,
    ev: &EventMessage,
) -> Result<()> {
    let (Some(kind), Some(action), Some(actor)) = (&ev.typ, &ev.action, &ev.actor) else {
        return Ok(());
    };
    let id = actor.id.clone().unwrap_or_default();
    let attr = |k: &str| {
        actor
            .attributes
            .as_ref()
            .and_then(|a| a.get(k))
            .cloned()
            .unwrap_or_default()
    };
    let state_dir = &opts.state_dir;
    match (kind, action.as_str()) {
        (EventMessageTypeEnum::NETWORK, "create") if attr("type") == "macvlan" => {
            let Some(n) = engine.network(&id).await? else {
                return Ok(());
            };
            match read::network(&n, opts.adopt) {
                Ok(net) => {
                    let line = format!("+ network {} (parent {})", net.name, net.parent);
                    let (id, name) = (net.id.clone(), net.name.clone());
                    let dir = state_dir.to_owned();
                    if let Err(e) = blocking(move || apply::adopt_network(&dir, net)).await {
                        *adoption_failed = true;
                        return Err(e.context(format!("skipped docker network {name}")));
                    }
                    // Followed once adopted: a failed adoption is retried by
                    // a sync (`Retry`), not taken for done by later events.
                    networks.insert(id, name);
                    say(&line);
                }
                Err(problem) => {
                    *adoption_failed |= matches!(problem, read::LeftOut::Unread(_));
                    eprintln!("mvnet: docker: {problem}");
                }
            }
        }
        (EventMessageTypeEnum::NETWORK, "destroy") => {
            if let Some(name) = networks.remove(&id) {
                let (dir, id) = (state_dir.to_owned(), id.clone());
                blocking(move || apply::forget_network(&dir, &id)).await?;
                say(&format!("- network {name}"));
            }
        }
        (EventMessageTypeEnum::NETWORK, "connect") if networks.contains_key(&id) => {
            refresh(engine, opts, networks, &attr("container")).await?;
        }
        (EventMessageTypeEnum::NETWORK, "disconnect") if networks.contains_key(&id) => {
            let container = attr("container");
            if apply::knows_container(state_dir, &container) {
                let (dir, c, n) = (state_dir.to_owned(), container.clone(), id.clone());
                blocking(move || apply::forget_endpoint(&dir, &c, &n)).await?;
                say(&format!(
                    "- endpoint of {} on {}",
                    &container[..container.len().min(12)],
                    networks[&id]
                ));
            }
        }
        (EventMessageTypeEnum::CONTAINER, "start") => {
            refresh(engine, opts, networks, &id).await?;
        }
        (EventMessageTypeEnum::CONTAINER, "die" | "destroy") => {
            forget(state_dir, &id, &attr("name")).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Reads one container again and makes its endpoints in the state match.
async fn refresh(
    engine: &Engine,
    opts: &Options,
    networks: &HashMap<String, String>,
    id: &str,
) -> Result<()> {
    match read::container(engine, id, networks).await? {
        Seen::Gone => forget(&opts.state_dir, id, id).await,
        Seen::Unreadable(problem) => {
            eprintln!("mvnet: docker: {problem}");
            Ok(())
        }
        Seen::Running {
            container,
            endpoints,
            problems,
        } => {
            for p in &problems {
                eprintln!("mvnet: docker: {p}");
            }
            if endpoints.is_empty() && !apply::knows_container(&opts.state_dir, id) {
                return Ok(());
            }
            let dir = opts.state_dir.clone();
            let lines = blocking(move || apply::container(&dir, &container, endpoints)).await?;
            for line in lines {
                say(&line);
            }
            Ok(())
        }
    }
}

async fn forget(state_dir: &std::path::Path, id: &str, name: &str) -> Result<()> {
    if apply::knows_container(state_dir, id) {
        let (dir, id) = (state_dir.to_owned(), id.to_owned());
        blocking(move || apply::forget_container(&dir, &id)).await?;
        say(&format!("- container {name}"));
    }
    Ok(())
}
