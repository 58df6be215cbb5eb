//! What the host integration tests need besides the build, installed by
//! `cargo xtask test` (the tests fail, never skip, without them):
//! * tmux, the pseudo-terminal in which they drive `mvnet top` (Debian
//!   package `tmux`);
//! * Debian's `prometheus` (the `prometheus` server and `promtool`, which the
//!   observability tests run against `mvnet serve`), `bpftool` (which
//!   dumps the pinned maps) and `strace` (whose fault injection kills
//!   commands at every syscall in the crash suite);
//! * Debian's `docker.io` (20.10) and `busybox-static`, for the parity suite
//!   (tests/parity), which compares mvnet with Docker's macvlan driver, and
//!   the Docker tests (tests/docker), where `mvnet docker sync|watch` serves
//!   that driver's networks;
//! * Debian's `podman` (4.3, CNI backend), `runc` and
//!   `containernetworking-plugins`, for the CNI tests (tests/host/cni.rs,
//!   tests/host/podman.rs): mvnet-cni beside the reference macvlan plugin,
//!   and real `podman run` in a lab namespace.

use std::path::Path;

use anyhow::{bail, Context as _, Result};

use crate::util;

pub const TMUX_PACKAGE: &str = "tmux";

/// Installs tmux with apt when it is missing (Debian, as root), or
/// explains what to install.
pub fn ensure_tmux() -> Result<()> {
    if let Some(path) = util::find_in_path("tmux") {
        eprintln!("ok: tmux ({})", path.display());
        return Ok(());
    }
    let what = "the host tests run `mvnet top` inside tmux, which is not installed";
    if util::os_id().as_deref() != Some("debian") {
        bail!("{what}\nfix: install tmux with your distribution's package manager");
    }
    if !util::is_root() {
        bail!("{what}\nfix: run as root: apt-get install {TMUX_PACKAGE}");
    }
    eprintln!("installing: apt package {TMUX_PACKAGE} ({what})");
    if !util::apt_knows(TMUX_PACKAGE) {
        util::run(util::apt().arg("update"))
            .context("fix: check the machine's apt sources and network")?;
    }
    util::run(
        util::apt()
            .args(["install", "-y", "--no-install-recommends"])
            .arg(TMUX_PACKAGE),
    )
    .with_context(|| format!("installing {TMUX_PACKAGE} failed; see apt's error above"))?;
    match util::find_in_path("tmux") {
        Some(path) => {
            eprintln!("ok: tmux ({})", path.display());
            Ok(())
        }
        None => bail!("apt-get installed {TMUX_PACKAGE} but tmux is still not on PATH"),
    }
}

// Observability tools.

/// (Debian package, the executables of it the tests run).
pub const PACKAGES: &[(&str, &[&str])] = &[
    ("prometheus", &["/usr/bin/prometheus", "/usr/bin/promtool"]),
    ("bpftool", &["/usr/sbin/bpftool"]),
    ("strace", &["/usr/bin/strace"]),
    // The parity suite (tests/parity) and the Docker tests (tests/docker)
    // start their own dockerd in a lab namespace (apt's policy here does not start the system service) and
    // imports a busybox image from a tarball.
    ("docker.io", &["/usr/sbin/dockerd", "/usr/bin/docker"]),
    ("busybox-static", &["/bin/busybox"]),
    // The CNI tests: the reference plugins mvnet-cni chains after and is
    // compared with, and a real runtime calling them (runc: crun fails in
    // this machine's hybrid cgroup setup).
    (
        "containernetworking-plugins",
        &["/usr/lib/cni/macvlan", "/usr/lib/cni/host-local"],
    ),
    ("podman", &["/usr/bin/podman"]),
    ("runc", &["/usr/sbin/runc"]),
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
        "the host tests run promtool, prometheus, bpftool, strace, podman and the CNI plugins, the parity suite and the Docker tests dockerd and busybox; missing packages: {}",
        missing.join(" ")
    );
    if util::os_id().as_deref() != Some("debian") {
        bail!("{what}\nfix: install your distribution's prometheus, bpftool, strace, docker (20.10), busybox-static, podman, runc and containernetworking-plugins packages");
    }
    if !util::is_root() {
        bail!(
            "{what}\nfix: run as root: apt-get install {}",
            missing.join(" ")
        );
    }
    eprintln!("installing: apt packages {} ({what})", missing.join(" "));
    if missing.iter().any(|p| !util::apt_knows(p)) {
        util::run(util::apt().arg("update"))
            .context("fix: check the machine's apt sources and network")?;
    }
    util::run(
        util::apt()
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

// Kubernetes manifests (deploy/kubernetes).

/// The schema validator the manifest test runs (PyPI; it ships the
/// Kubernetes JSON schemas, so no cluster and no network are needed).
pub const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// Installs kubernetes-validate into a venv under the cache
/// (`~/.cache/mvnet/k8s-validate`, where tests/host/kubernetes.rs looks).
pub fn ensure_kubernetes_validate() -> Result<()> {
    let venv = util::cache_dir()?.join("k8s-validate");
    let exe = venv.join("bin/kubernetes-validate");
    if util::is_executable(&exe) {
        eprintln!("ok: kubernetes-validate ({})", exe.display());
        return Ok(());
    }
    eprintln!(
        "installing: {KUBERNETES_VALIDATE} into {} (the Kubernetes manifest test)",
        venv.display()
    );
    let python = util::find_in_path("python3").context(
        "python3 not found\nfix: apt-get install python3-venv (or install python 3 by other means)",
    )?;
    util::run(
        std::process::Command::new(python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )
    .context("fix: on Debian, apt-get install python3-venv")?;
    util::run(std::process::Command::new(venv.join("bin/pip")).args([
        "install",
        "--disable-pip-version-check",
        "--quiet",
        KUBERNETES_VALIDATE,
    ]))
    .context("installing kubernetes-validate from PyPI failed; see pip's error above")?;
    if !util::is_executable(&exe) {
        bail!(
            "pip installed kubernetes-validate but {} is missing",
            exe.display()
        );
    }
    eprintln!("ok: kubernetes-validate ({})", exe.display());
    Ok(())
}
