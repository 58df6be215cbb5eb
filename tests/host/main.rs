//! Host integration tests: real topologies in network namespaces on this
//! machine's kernel. Run by `cargo xtask test` (as root).
#[path = "../common/mod.rs"]
mod common;

mod classifier;
mod control_plane;
mod datapath;
mod datapath_cp;
mod enforce;
mod lab;
mod observability;
mod source_checks;
mod source_model;
mod top;
mod traffic;
