//! `mvnet docker sync` (one shot) and `mvnet docker watch` (sync, then
//! follow Docker's events, re-syncing after a lost connection).
use std::{
    collections::HashMap,
    io::Write as _,
    path::PathBuf,
    time::{Duration, SystemTime},
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

/// Reads everything and converges.
async fn sync_once(engine: &Engine, opts: &Options) -> Result<Synced> {
    let started = std::time::Instant::now();
    let snap = read::snapshot(engine, opts.adopt).await?;
    let read = started.elapsed();
    report_problems(&snap);
    let dir = opts.state_dir.clone();
    let (report, snap) =
        blocking(move || apply::converge(&dir, &snap).map(|report| (report, snap))).await?;
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
        snap.networks.len(),
        snap.endpoints(),
        snap.containers.len()
    ));
    let incomplete =
        !snap.problems.is_empty() || report.lines.iter().any(|l| l.starts_with("skipped "));
    Ok(Synced { snap, incomplete })
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
            let mut events = Box::pin(engine.events(SystemTime::now()));
            let mut early = Vec::new();
            let synced = {
                let sync = sync_once(&engine, &opts);
                tokio::pin!(sync);
                loop {
                    tokio::select! {
                        biased;
                        ev = events.next() => match ev {
                            Some(ev) => early.push(ev),
                            None => break Err(anyhow!("Docker closed the event stream")),
                        },
                        r = &mut sync => break r,
                    }
                }
            };
            let lost = match synced {
                Ok(synced) => {
                    delay = BACKOFF.0;
                    let networks = synced.snap.network_names();
                    follow(&engine, &opts, networks, early, events).await
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

/// Applies the events that came while the sync that read `networks` ran
/// (`early`), then follows `events` (opened before it), applying each;
/// returns why it stopped (the connection). While an event is applied
/// (waiting for the state's lock, or for Docker's answer), the stream is
/// read on into the queue.
async fn follow<S>(
    engine: &Engine,
    opts: &Options,
    mut networks: HashMap<String, String>,
    early: Vec<Result<EventMessage, bollard::errors::Error>>,
    mut events: std::pin::Pin<Box<S>>,
) -> anyhow::Error
where
    S: futures::Stream<Item = Result<EventMessage, bollard::errors::Error>>,
{
    let mut queue: std::collections::VecDeque<_> = early.into();
    let mut open = true;
    loop {
        let ev = match queue.pop_front() {
            Some(ev) => ev,
            None if !open => break,
            None => match events.next().await {
                Some(ev) => ev,
                None => break,
            },
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => return anyhow!(e).context("the event stream of Docker broke"),
        };
        let applied = {
            let apply = on_event(engine, opts, &mut networks, &ev);
            tokio::pin!(apply);
            loop {
                tokio::select! {
                    biased;
                    next = events.next(), if open => match next {
                        Some(next) => queue.push_back(next),
                        None => open = false,
                    },
                    r = &mut apply => break r,
                }
            }
        };
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

/// What one event changes.
async fn on_event(
    engine: &Engine,
    opts: &Options,
    networks: &mut HashMap<String, String>,
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
                    blocking(move || apply::adopt_network(&dir, net)).await?;
                    // Followed once adopted: a failed adoption is retried by
                    // the next sync, not taken for done by later events.
                    networks.insert(id, name);
                    say(&line);
                }
                Err(problem) => eprintln!("mvnet: docker: {problem}"),
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
