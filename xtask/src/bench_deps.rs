//! What the benches need besides the build: the CNI reference plugins the
//! control-plane bench compares mvnet against (Debian package
//! `containernetworking-plugins`, binaries in /usr/lib/cni), xdp-tools for
//! the datapath bench and nftables for the e2e bench.

use std::path::Path;

use anyhow::{bail, Context as _, Result};

use crate::util::{self, apt, apt_knows};

pub const CNI_PACKAGE: &str = "containernetworking-plugins";
pub const CNI_DIR: &str = "/usr/lib/cni";
/// The plugins the control-plane bench executes.
const CNI_PLUGINS: &[&str] = &["macvlan", "host-local"];

fn missing_plugins() -> Vec<&'static str> {
    CNI_PLUGINS
        .iter()
        .copied()
        .filter(|p| !util::is_executable(&Path::new(CNI_DIR).join(p)))
        .collect()
}

/// Installs the CNI plugins with apt when they are missing (Debian, as
/// root), or explains what to install.
pub fn ensure_cni_plugins() -> Result<()> {
    let missing = missing_plugins();
    if missing.is_empty() {
        eprintln!("ok: CNI plugins ({CNI_DIR}: {})", CNI_PLUGINS.join(", "));
        return Ok(());
    }
    let what = format!(
        "the control-plane bench compares mvnet against the CNI reference plugins, \
         but {CNI_DIR} lacks {}",
        missing.join(", ")
    );
    if util::os_id().as_deref() != Some("debian") {
        bail!(
            "{what}\nfix: install the CNI plugins (https://github.com/containernetworking/plugins) \
             so that {CNI_DIR}/macvlan and {CNI_DIR}/host-local exist"
        );
    }
    if !util::is_root() {
        bail!("{what}\nfix: run as root: apt-get install {CNI_PACKAGE}");
    }
    eprintln!("installing: apt package {CNI_PACKAGE} ({what})");
    if !apt_knows(CNI_PACKAGE) {
        util::run(apt().arg("update"))
            .context("fix: check the machine's apt sources and network")?;
    }
    util::run(
        apt()
            .args(["install", "-y", "--no-install-recommends"])
            .arg(CNI_PACKAGE),
    )
    .with_context(|| format!("installing {CNI_PACKAGE} failed; see apt's error above"))?;
    let still = missing_plugins();
    if !still.is_empty() {
        bail!(
            "apt-get installed {CNI_PACKAGE} but {CNI_DIR} still lacks {}",
            still.join(", ")
        );
    }
    eprintln!("ok: CNI plugins ({CNI_DIR}: {})", CNI_PLUGINS.join(", "));
    Ok(())
}

/// xdp-tools' xdp-filter object the datapath bench compares against.
pub const XDP_FILTER_OBJECT: &str = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_dny_eth.o";
pub const XDP_TOOLS_PACKAGE: &str = "xdp-tools";

/// Installs xdp-tools when its xdp-filter object is missing (Debian, as
/// root). Not fatal: the datapath bench then says it measured no xdp-filter.
pub fn ensure_xdp_tools() {
    if Path::new(XDP_FILTER_OBJECT).exists() {
        eprintln!("ok: xdp-filter ({XDP_FILTER_OBJECT})");
        return;
    }
    if util::os_id().as_deref() != Some("debian") || !util::is_root() {
        eprintln!(
            "note: {XDP_FILTER_OBJECT} is missing, so the datapath bench cannot compare against \
             xdp-filter; install the {XDP_TOOLS_PACKAGE} package (apt-get install {XDP_TOOLS_PACKAGE})"
        );
        return;
    }
    eprintln!("installing: apt package {XDP_TOOLS_PACKAGE} (xdp-filter, for the datapath bench)");
    if !apt_knows(XDP_TOOLS_PACKAGE) {
        let _ = util::run(apt().arg("update"));
    }
    if let Err(e) = util::run(
        apt()
            .args(["install", "-y", "--no-install-recommends"])
            .arg(XDP_TOOLS_PACKAGE),
    ) {
        eprintln!(
            "note: installing {XDP_TOOLS_PACKAGE} failed ({e:#}); xdp-filter will not be measured"
        );
    }
}

/// Debian's nftables: the e2e bench's per-MAC counting peer.
pub const NFT_BINARY: &str = "/usr/sbin/nft";
pub const NFTABLES_PACKAGE: &str = "nftables";

/// Installs nftables when `nft` is missing (Debian, as root); the e2e
/// bench fails without it, naming the package.
pub fn ensure_nftables() -> Result<()> {
    if Path::new(NFT_BINARY).exists() {
        eprintln!("ok: nftables ({NFT_BINARY})");
        return Ok(());
    }
    if util::os_id().as_deref() != Some("debian") || !util::is_root() {
        bail!(
            "{NFT_BINARY} is missing: the e2e bench compares mvnet with an nftables per-MAC \
             counter set\nfix: apt-get install {NFTABLES_PACKAGE}"
        );
    }
    eprintln!("installing: apt package {NFTABLES_PACKAGE} (nft, for the e2e bench)");
    if !apt_knows(NFTABLES_PACKAGE) {
        let _ = util::run(apt().arg("update"));
    }
    util::run(
        apt()
            .args(["install", "-y", "--no-install-recommends"])
            .arg(NFTABLES_PACKAGE),
    )
    .with_context(|| format!("apt-get install {NFTABLES_PACKAGE}"))?;
    Ok(())
}
