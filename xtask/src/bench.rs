//! `cargo xtask bench [NAME...]`: the benchmarks in `tests/benches`, built
//! with `cargo bench --no-run` and run as root against a release `mvnet`,
//! holding the lab lock (as `test` does). A bench prints its measurements;
//! it fails only if an operation failed, not when a target is missed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::setup::{self, Env};
use crate::{bench_deps, cargo, util};

/// Prefix of every lab network namespace.
const NETNS_PREFIX: &str = "mvl-";

#[derive(Debug)]
pub struct Bench {
    /// The name on the command line.
    pub name: &'static str,
    /// The `[[bench]]` target of macvlan-tests.
    target: &'static str,
    pub about: &'static str,
}

/// Every bench `cargo xtask bench` knows, in the order it runs them.
pub const BENCHES: &[Bench] = &[
    Bench {
        name: "control-plane",
        target: "control_plane",
        about: "mvnet network connect/disconnect against the CNI macvlan plugin (ADD/DEL), \
            100 each, plus mvnet run/stop; mvnet-cni standalone ADD/DEL against the macvlan \
            plugin; podman run with macvlan alone and with mvnet-cni chained; Docker sync \
            and watch; one run/container rm with 1, 100, 1000 and 4000 endpoints on the network",
    },
    Bench {
        name: "datapath",
        target: "datapath",
        about: "the classifier per frame (BPF_PROG_TEST_RUN) at 1, 64 and 4096 endpoints \
                against a pass-only program and xdp-tools' xdp-filter",
    },
    Bench {
        name: "e2e",
        target: "e2e",
        about: "frames per second delivered to macvlan endpoints through a veth parent with \
                no program, a pass-only program, the classifier observing and enforcing",
    },
    Bench {
        name: "observability",
        target: "observability",
        about: "with 4096 endpoints: one full read of every counter, one /metrics scrape \
                of mvnet serve, the exporter's RSS, and scrapes while 500 idle and 50 \
                slow-loris clients hold connections",
    },
];

fn known() -> String {
    BENCHES
        .iter()
        .map(|b| format!("  {:<16}{}", b.name, b.about))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The benches named (all of them for none), in `BENCHES` order.
fn select(names: &[String]) -> Result<Vec<&'static Bench>> {
    for name in names {
        if !BENCHES.iter().any(|b| b.name == name) {
            bail!(
                "unknown bench {name:?}\nknown benches (`cargo xtask bench` runs them all):\n{}",
                known()
            );
        }
    }
    Ok(BENCHES
        .iter()
        .filter(|b| names.is_empty() || names.iter().any(|n| n == b.name))
        .collect())
}

pub fn bench(names: &[String]) -> Result<i32> {
    let selected = select(names)?;
    if !util::is_root() {
        bail!(
            "cargo xtask bench needs root: the benches build network namespaces and links\n\
             fix: run it as root (e.g. `sudo -i`, then `cargo xtask bench` in {})",
            util::workspace_root().display()
        );
    }
    let env = setup::setup(true)?;
    if selected.iter().any(|b| b.name == "control-plane") {
        bench_deps::ensure_cni_plugins()?;
        // Podman, runc and busybox-static for the podman rows.
        crate::host_deps::ensure()?;
    }
    if selected.iter().any(|b| b.name == "datapath") {
        bench_deps::ensure_xdp_tools();
    }
    if selected.iter().any(|b| b.name == "e2e") {
        bench_deps::ensure_nftables()?;
    }
    let mvnet = cargo::build_mvnet(&env, true).context("building mvnet (release) failed")?;
    let exes = build_benches(&env, &selected)?;
    let _lock = util::lock_labs()?;
    lab_clean(&mvnet)?;

    let mut failed = Vec::new();
    for (bench, exe) in selected.iter().zip(&exes) {
        eprintln!("\n=== bench {} ===", bench.name);
        if let Err(e) = run_bench(exe, &mvnet) {
            eprintln!("error: bench {}: {e:#}", bench.name);
            failed.push(bench.name);
        }
    }
    if !failed.is_empty() {
        eprintln!("\nbenches FAILED: {}", failed.join(", "));
        return Ok(1);
    }
    Ok(0)
}

/// `cargo bench --no-run` of the selected targets; their executables.
fn build_benches(env: &Env, selected: &[&Bench]) -> Result<Vec<PathBuf>> {
    let mut cmd = env.cargo();
    cmd.args(["bench", "--package", "macvlan-tests", "--no-run"]);
    for b in selected {
        cmd.args(["--bench", b.target]);
    }
    let found = cargo::artifacts(&mut cmd)?;
    selected
        .iter()
        .map(|b| cargo::executable(&found, "macvlan-tests", b.target, "bench"))
        .collect()
}

/// Runs one bench executable; fails if it fails or leaves lab namespaces.
fn run_bench(exe: &Path, mvnet: &Path) -> Result<()> {
    let mut cmd = Command::new(exe);
    cmd.arg("--bench")
        .env("MVNET_BIN", mvnet)
        .current_dir(util::workspace_root());
    util::announce(&cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {}", exe.display()))?;
    let pid = child.id();
    let status = child.wait()?;
    let leaked = lab_namespaces(&format!("{NETNS_PREFIX}{pid}-"));
    let clean = lab_clean(mvnet);
    if !status.success() {
        bail!("`{}` failed ({})", util::show(&cmd), util::describe(status));
    }
    if !leaked.is_empty() {
        bail!(
            "the bench left network namespaces behind: {}",
            leaked.join(" ")
        );
    }
    clean
}

/// Network namespaces under /run/netns whose names start with `prefix`.
fn lab_namespaces(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// `mvnet lab clean`: removes namespaces of lab processes that are gone.
fn lab_clean(mvnet: &Path) -> Result<()> {
    let status = util::status(Command::new(mvnet).args(["lab", "clean"]))?;
    if !status.success() {
        bail!("`mvnet lab clean` failed ({})", util::describe(status));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_benches() {
        let all = select(&[]).unwrap();
        assert_eq!(all.len(), BENCHES.len());
        let one = select(&["control-plane".into()]).unwrap();
        assert_eq!(one[0].target, "control_plane");
        let e = select(&["nope".into()]).unwrap_err().to_string();
        assert!(e.contains("unknown bench \"nope\""), "{e}");
        assert!(e.contains("control-plane"), "{e}");
    }
}
