//! What the VM tests need besides the toolchain: qemu, a Debian kernel with
//! 8021q and pktgen modules, the tools the tests call, and virtme-ng.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::util;

/// The kernels the VM tests boot, one after the other: bookworm's default
/// (6.1) and its 6.12 (bookworm-security ships it by this name).
pub const KERNEL_PACKAGES: &[&str] = &["linux-image-amd64", "linux-image-6.12-amd64"];

/// Debian packages for the VM tests (python3-venv: to install virtme-ng in a
/// venv; docker.io: the parity suite's 802.1Q and no-parent scenarios run
/// Docker's engine in the VM), besides [`KERNEL_PACKAGES`].
pub const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "linux-image-amd64",
    "linux-image-6.12-amd64",
    "docker.io",
    "busybox-static",
    "bpftool",
    "tcpdump",
    "iproute2",
    "python3-venv",
];

/// The virtme-ng release checked with these flags (see `vm.rs`).
pub const VIRTME_NG: &str = "virtme-ng==1.42";

/// Commands that stand for the packages on a non-Debian system.
const COMMANDS: &[&str] = &[
    "qemu-system-x86_64",
    "dockerd",
    "busybox",
    "bpftool",
    "tcpdump",
    "ip",
];

fn apt_command_lines(missing: &[&str]) -> String {
    format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    )
}

/// Installs the missing Debian packages (as root), or explains what to install.
pub fn ensure_packages() -> Result<()> {
    if util::os_id().as_deref() != Some("debian") {
        let missing: Vec<&str> = COMMANDS
            .iter()
            .copied()
            .filter(|c| util::find_in_path(c).is_none())
            .collect();
        if !missing.is_empty() {
            bail!(
                "the VM tests need {} (missing: {})\n\
                 fix: `cargo xtask setup` installs them only on Debian (there: {}); \
                 install your distribution's equivalents and a Debian-style kernel in /boot \
                 (or set MVNET_VM_KERNEL), or run `cargo xtask test --host-only`",
                COMMANDS.join(", "),
                missing.join(", "),
                apt_command_lines(APT_PACKAGES)
            );
        }
        eprintln!("ok: VM tools ({})", COMMANDS.join(", "));
        return Ok(());
    }
    let missing = missing_packages()?;
    if missing.is_empty() {
        eprintln!("ok: apt packages ({})", APT_PACKAGES.join(", "));
        return Ok(());
    }
    if !util::is_root() {
        bail!(
            "missing Debian packages for the VM tests: {}\n\
             fix: run as root: {}\n\
             (or run `cargo xtask setup --host-only` / `cargo xtask test --host-only`)",
            missing.join(", "),
            apt_command_lines(&missing)
        );
    }
    eprintln!("installing: apt packages ({})", missing.join(", "));
    let apt = || {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    util::run(apt().arg("update")).context("fix: check the machine's apt sources and network")?;
    util::run(
        apt()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )
    .context("installing the VM test packages failed; see apt's error above")?;
    let still = missing_packages()?;
    if !still.is_empty() {
        bail!(
            "apt-get install succeeded but these are still not installed: {}",
            still.join(", ")
        );
    }
    Ok(())
}

fn missing_packages() -> Result<Vec<&'static str>> {
    // dpkg-query fails (and says so on stderr) for unknown packages: expected.
    let out = util::capture(
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Package} ${db:Status-Status}\\n"])
            .args(APT_PACKAGES),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !text.lines().any(|l| l == format!("{p} installed")))
        .collect())
}

/// Finds `vng`: our venv in the cache, else PATH; else installs virtme-ng into the venv.
pub fn ensure_vng() -> Result<PathBuf> {
    let venv = util::cache_dir()?.join("virtme-ng");
    let venv_vng = venv.join("bin/vng");
    if let Some(vng) = Some(venv_vng.clone())
        .filter(|p| util::is_executable(p))
        .or_else(|| util::find_in_path("vng"))
    {
        eprintln!("ok: virtme-ng ({})", vng.display());
        return Ok(vng);
    }
    eprintln!(
        "installing: virtme-ng ({VIRTME_NG}) into {}",
        venv.display()
    );
    let python = util::find_in_path("python3").context(
        "python3 not found\nfix: apt-get install python3-venv (or install python 3 by other means)",
    )?;
    util::run(
        Command::new(python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )
    .context("fix: on Debian, apt-get install python3-venv")?;
    util::run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--disable-pip-version-check",
        "--quiet",
        VIRTME_NG,
    ]))
    .context("installing virtme-ng from PyPI failed; see pip's error above")?;
    if !util::is_executable(&venv_vng) {
        bail!(
            "pip installed virtme-ng but {} is missing",
            venv_vng.display()
        );
    }
    eprintln!("ok: virtme-ng ({})", venv_vng.display());
    Ok(venv_vng)
}
