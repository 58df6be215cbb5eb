//! What the classifier has counted, joined with what mvnet knows about each
//! endpoint: one [`Snapshot`] is everything `mvnet stats`, `mvnet top` and
//! `mvnet serve` show. It is read from the pinned maps, so any `mvnet`
//! process sees the same numbers as the one that attached the classifier.
//!
//! [`table`] and [`json`] render a snapshot (and rates) for `mvnet stats`.
mod cache;
pub mod json;
mod name;
mod rates;
mod snapshot;
pub mod table;

use std::{
    io::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

pub use cache::RosterCache;
pub use name::Name;
pub use rates::{EndpointRates, Rate, Rates, VlanRates};
pub use snapshot::{collect, EndpointStats, NetworkStats, RootStats, Roster, Snapshot};

use crate::{model::State, store};

/// How `mvnet stats` prints.
#[derive(Clone, Debug, Default)]
pub struct StatsOptions {
    /// Only this network (name, id or id prefix).
    pub network: Option<String>,
    pub json: bool,
    /// Print rates over this interval, again and again.
    pub watch: Option<Duration>,
    /// Under `watch`: stop after this many updates.
    pub count: Option<u64>,
}

/// The id of network `key` in `state` (Docker's lookup: name, id, prefix).
fn network_id(state: &State, key: &str) -> Result<String> {
    if let Some(n) = state.networks.values().find(|n| n.name == key) {
        return Ok(n.id.clone());
    }
    let matches: Vec<&str> = state
        .networks
        .keys()
        .filter(|id| !key.is_empty() && id.starts_with(key))
        .map(String::as_str)
        .collect();
    match matches.as_slice() {
        [id] => Ok((*id).to_owned()),
        [] => bail!("network {key} not found; list them with `mvnet network ls`"),
        _ => bail!(
            "network id prefix {key} is ambiguous ({} matches); give more characters",
            matches.len()
        ),
    }
}

/// Reads the state (without waiting for the state lock) and the counters.
fn read(state_dir: &Path, network: Option<&str>) -> Result<Snapshot> {
    let (state, only) = load(state_dir, network)?;
    collect(&state, only.as_deref())
}

/// The state, and the id of network `network` in it.
fn load(state_dir: &Path, network: Option<&str>) -> Result<(State, Option<String>)> {
    let state = store::peek(state_dir)?;
    let only = network.map(|n| network_id(&state, n)).transpose()?;
    Ok((state, only))
}

fn print(snap: &Snapshot, rates: Option<&Rates>, json: bool, pretty: bool) -> Result<()> {
    // Buffered: standard output writes each line as it ends, and pretty
    // JSON of 65,536 endpoints is over a million lines (2-3 s of system
    // calls, `cargo xtask bench observability`).
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if json {
        let doc = json::document(snap, rates);
        if pretty {
            serde_json::to_writer_pretty(&mut out, &doc)?;
        } else {
            serde_json::to_writer(&mut out, &doc)?;
        }
        writeln!(out)?;
    } else {
        write!(out, "{}", table::render(snap, rates))?;
    }
    out.flush()?;
    Ok(())
}

/// `mvnet stats`: one snapshot, or under `watch` one set of rates per
/// interval (JSON: one document per line) until `count` or interrupted.
pub fn run(state_dir: &Path, opts: &StatsOptions) -> Result<()> {
    let network = opts.network.as_deref();
    let Some(interval) = opts.watch else {
        return print(&read(state_dir, network)?, None, opts.json, true);
    };
    if interval.is_zero() {
        bail!("--watch needs an interval above 0 seconds, e.g. `--watch 1`");
    }
    // Again and again: the state is read again only when it was saved
    // since, the counters every time.
    let cache = RosterCache::default();
    let read = || cache.get(state_dir, || load(state_dir, network))?.read();
    let mut prev = read()?;
    let mut next = Instant::now() + interval;
    let mut done = 0u64;
    while opts.count.is_none_or(|c| done < c) {
        // On the grid of `interval`, but never less than `interval` after
        // the previous snapshot: a read slowed by the machine's load must
        // not leave the next rate over a fraction of the interval.
        next = next.max(prev.at + interval);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += interval;
        // Through the cache: networks and endpoints come and go.
        let cur = read()?;
        let rates = Rates::between(&prev, &cur);
        if !opts.json {
            writeln!(
                std::io::stdout().lock(),
                "--- {} (per second over {:.1} s)",
                crate::model::rfc3339(cur.taken),
                rates.secs
            )?;
        }
        print(&cur, Some(&rates), opts.json, false)?;
        if !opts.json {
            writeln!(std::io::stdout().lock())?;
        }
        prev = cur;
        done += 1;
    }
    Ok(())
}
