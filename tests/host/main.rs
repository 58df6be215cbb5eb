//! Host integration tests: real topologies in network namespaces on this
//! machine's kernel. Run by `cargo xtask test` (as root).
#[path = "../common/mod.rs"]
mod common;

mod classifier;
mod cni;
mod control_plane;
mod crash;
mod datapath;
mod datapath_cp;
mod enforce;
mod faults;
mod foreign;
mod kubernetes;
mod lab;
mod observability;
mod podman;
mod refusals;
mod rng;
mod scripting;
mod source_checks;
mod source_model;
mod state_dir;
mod tc_only;
mod top;
mod traffic;
