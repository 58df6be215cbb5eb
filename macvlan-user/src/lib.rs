//! mvnet: macvlan networks the way Docker's driver makes them, with an eBPF
//! classifier on the parent that counts, checks and (optionally) enforces
//! every frame.
//!
//! Layout (data flows one way: CLI → controller → store, netlink, datapath):
//! * [`cli`] — the `mvnet` command line; [`format`], [`filter`] and
//!   [`scripting`] — Docker's `--format`, `--filter` and list rows;
//! * [`cni`] — `mvnet-cni`, the CNI plugin (chained or standalone);
//! * [`controller`] — Docker's macvlan driver rules (networks, containers);
//! * [`ipam`] — subnets, pools, addresses and MACs;
//! * [`model`] and [`store`] — the persisted state, written atomically;
//! * [`state_dir`] — the state directory: checked, private, no symlinks;
//! * [`sys`] — the raw system calls (filesystem);
//! * [`netns`] — named network namespaces and running code inside one;
//! * [`netlink`] — the only module that speaks rtnetlink;
//! * [`datapath`] — loading, attaching and reading the eBPF classifier;
//! * [`docker`] — Docker's own macvlan networks, read through its Engine
//!   API and registered as foreign networks (`mvnet docker sync|watch`);
//! * [`stats`] — every counter joined with the endpoints it belongs to,
//!   rendered for `mvnet stats`;
//! * [`serve`] — the Prometheus exporter (`mvnet serve`);
//! * [`top`] — `mvnet top`, the live terminal view of those counters;
//! * [`external`] — `mvnet lab …` and `mvnet pktgen`, run by the separate
//!   `mvnet-lab` binary (the lab crate, built on this library; the product
//!   never imports it).
pub mod cli;
pub mod cni;
pub mod controller;
pub mod datapath;
pub mod docker;
pub mod external;
pub mod filter;
pub mod format;
pub mod ipam;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod scripting;
pub mod serve;
pub mod state_dir;
pub mod stats;
pub mod store;
pub mod sys;
pub mod top;

/// Every process built with mvnet (the binaries, its tests and benches)
/// maps blocks of 2 MiB and more on huge pages: see [`sys::alloc`].
#[global_allocator]
static ALLOCATOR: sys::alloc::Allocator = sys::alloc::Allocator;

/// Fails with a clear message unless running as root: namespaces, links and
/// BPF all need it.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !crate::sys::process::is_root() {
        anyhow::bail!(
            "{what} needs root (network namespaces, links and BPF); run it as root or with sudo"
        );
    }
    Ok(())
}
