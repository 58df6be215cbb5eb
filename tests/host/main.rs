//! Host integration tests: real topologies in network namespaces on this
//! machine's kernel. Run by `cargo xtask test` (as root).
#[path = "../common/mod.rs"]
mod common;

mod classifier;
mod control_plane;
mod crash;
mod datapath;
mod datapath_cp;
mod enforce;
mod faults;
mod foreign;
mod lab;
mod observability;
mod refusals;
mod scripting;
mod source_checks;
mod source_model;
mod state_dir;
mod top;
mod traffic;
