//! mvnet's lab, on top of the mvnet library (which never imports it):
//! * [`lab`] — throwaway topologies for tests, demos and benchmarks;
//! * [`traffic`] — traffic runs (pktgen or an AF_PACKET TX ring) with exact
//!   accounting;
//! * [`cli`] — the `mvnet-lab` binary behind `mvnet lab …` and
//!   `mvnet pktgen`.
pub mod cli;
pub mod lab;
pub mod traffic;

use std::path::PathBuf;

use anyhow::{bail, Result};

/// The `mvnet` binary: beside this executable (where cargo and
/// `cargo xtask build` put both), else in PATH.
pub fn mvnet_bin() -> Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("mvnet")));
    if let Some(bin) = beside.as_ref().filter(|b| b.is_file()) {
        return Ok(bin.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(bin) = std::env::split_paths(&path)
        .map(|d| d.join("mvnet"))
        .find(|b| b.is_file())
    {
        return Ok(bin);
    }
    bail!(
        "the mvnet binary is not beside {} nor in PATH; build both with `cargo xtask build`",
        beside.map_or_else(|| "this executable".into(), |b| b.display().to_string())
    )
}
