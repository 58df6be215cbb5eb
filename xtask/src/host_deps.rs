//! What the host integration tests need besides the build: tmux, the
//! pseudo-terminal in which they drive `mvnet top` (Debian package `tmux`).

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
