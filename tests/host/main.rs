//! Host integration tests: real topologies in network namespaces on this
//! machine's kernel. Run by `cargo xtask test` (as root).
#[path = "../common/mod.rs"]
mod common;

mod classifier;
mod control_plane;
mod datapath;
mod datapath_cp;
mod lab;
mod observability;
mod scripting;
mod state_dir;
mod top;
mod traffic;
