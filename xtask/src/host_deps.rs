//! What the host integration tests (and the observability bench) need
//! besides the build: Debian's `prometheus` (the `prometheus` server and
//! `promtool`, which the observability tests run against `mvnet serve`) and
//! `bpftool` (which dumps the pinned maps). The tests fail, never skip,
//! when one is missing, so `cargo xtask test` installs them first.

use std::path::Path;

use anyhow::{bail, Context as _, Result};

use crate::{bench_deps, util};

/// (Debian package, the executables of it the tests run).
pub const PACKAGES: &[(&str, &[&str])] = &[
    ("prometheus", &["/usr/bin/prometheus", "/usr/bin/promtool"]),
    ("bpftool", &["/usr/sbin/bpftool"]),
];

fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .filter(|(_, exes)| !exes.iter().all(|e| util::is_executable(Path::new(e))))
        .map(|(p, _)| *p)
        .collect()
}

/// Installs the missing packages with apt (Debian, as root; apt does not
/// start their services in this setup, and the tests start their own
/// Prometheus on a loopback port of a lab namespace), or explains.
pub fn ensure() -> Result<()> {
    let names = PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .collect::<Vec<_>>()
        .join(", ");
    let missing = missing_packages();
    if missing.is_empty() {
        eprintln!("ok: host test tools ({names})");
        return Ok(());
    }
    let what = format!(
        "the host tests run promtool, prometheus and bpftool; missing packages: {}",
        missing.join(" ")
    );
    if util::os_id().as_deref() != Some("debian") {
        bail!("{what}\nfix: install your distribution's prometheus and bpftool packages");
    }
    if !util::is_root() {
        bail!(
            "{what}\nfix: run as root: apt-get install {}",
            missing.join(" ")
        );
    }
    eprintln!("installing: apt packages {} ({what})", missing.join(" "));
    if missing.iter().any(|p| !bench_deps::apt_knows(p)) {
        util::run(bench_deps::apt().arg("update"))
            .context("fix: check the machine's apt sources and network")?;
    }
    util::run(
        bench_deps::apt()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )
    .with_context(|| {
        format!(
            "installing {} failed; see apt's error above",
            missing.join(" ")
        )
    })?;
    let still = missing_packages();
    if !still.is_empty() {
        bail!(
            "apt-get ran, but these packages' tools are still missing: {}",
            still.join(" ")
        );
    }
    eprintln!("ok: host test tools ({names})");
    Ok(())
}
