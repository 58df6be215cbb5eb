//! mvnet: macvlan networks the way Docker's driver makes them, with an eBPF
//! classifier on the parent that counts, checks and (optionally) enforces
//! every frame.
//!
//! Layout (data flows one way: CLI → controller → store, netlink, datapath):
//! * [`cli`] — the `mvnet` command line;
//! * [`controller`] — Docker's macvlan driver rules (networks, containers);
//! * [`ipam`] — subnets, pools, addresses and MACs;
//! * [`model`] and [`store`] — the persisted state, written atomically;
//! * [`state_dir`] — the state directory: checked, private, no symlinks;
//! * [`sys`] — the raw system calls (filesystem);
//! * [`netns`] — named network namespaces and running code inside one;
//! * [`netlink`] — the only module that speaks rtnetlink;
//! * [`datapath`] — loading, attaching and reading the eBPF classifier;
//! * [`stats`] — every counter joined with the endpoints it belongs to,
//!   rendered for `mvnet stats`;
//! * [`serve`] — the Prometheus exporter (`mvnet serve`);
//! * [`top`] — `mvnet top`, the live terminal view of those counters;
//! * [`traffic`] — traffic runs (pktgen or an AF_PACKET TX ring) with exact accounting;
//! * [`lab`] — throwaway topologies for tests, demos and benchmarks.
pub mod cli;
pub mod controller;
pub mod datapath;
pub mod ipam;
pub mod lab;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod serve;
pub mod state_dir;
pub mod stats;
pub mod store;
pub mod sys;
pub mod top;
pub mod traffic;

/// Fails with a clear message unless running as root: namespaces, links and
/// BPF all need it.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "{what} needs root (network namespaces, links and BPF); run it as root or with sudo"
        );
    }
    Ok(())
}
