//! `cargo xtask run` on a Docker host (issue 14): a Docker engine sets
//! `net.ipv4.ip_forward=1` in the root namespace, and new namespaces copy
//! it. The tutorial's exact accounting must not depend on that.
//!
//! Here rather than in tests/host: it flips a sysctl of the root namespace,
//! which the host binary's tests, running in parallel threads, would
//! inherit; this binary runs one thing at a time.
use std::process::Command;

use anyhow::{bail, ensure, Context as _, Result};
use mvnet_lab::lab::Lab;

use crate::common::cli::mvnet_bin;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// A root-namespace sysctl set for as long as this lives; the original
/// value is written back on drop, also when a check fails or panics.
struct RootSysctl {
    path: &'static str,
    original: String,
}

impl RootSysctl {
    fn set(path: &'static str, value: &str) -> Result<RootSysctl> {
        let original = std::fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .trim()
            .to_owned();
        std::fs::write(path, value).with_context(|| format!("writing {value} to {path}"))?;
        Ok(RootSysctl { path, original })
    }
}

impl Drop for RootSysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.path, &self.original) {
            eprintln!(
                "could not restore {} to {}: {e}; restore it by hand",
                self.path, self.original
            );
        }
    }
}

fn forwarding_in(ns: &mvnet::netns::NetNs) -> Result<String> {
    Ok(ns
        .run(|| std::fs::read_to_string(IP_FORWARD))??
        .trim()
        .to_owned())
}

/// With forwarding on in the root namespace: a lab's namespaces have it
/// off, and `mvnet lab tutorial` (what `cargo xtask run` walks through)
/// counts exactly the 100 frames it sends.
pub fn tutorial_with_forwarding_on() -> Result<()> {
    let before = std::fs::read_to_string(IP_FORWARD)?.trim().to_owned();
    {
        let _forwarding = RootSysctl::set(IP_FORWARD, "1")?;
        let lab = Lab::new()?;
        for (what, ns) in [("host", lab.host()), ("upstream", lab.upstream())] {
            let v = forwarding_in(ns)?;
            ensure!(
                v == "0",
                "the lab's {what} namespace has ip_forward {v}, inherited from the root"
            );
        }
        drop(lab);
        let out = Command::new(mvnet_bin())
            .args(["lab", "tutorial"])
            .output()
            .context("running mvnet lab tutorial")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success()
            || !stdout
                .contains("exact accounting: PASS (sent = counted = delivered = 100 valid frames")
        {
            bail!(
                "mvnet lab tutorial with ip_forward=1 in the root namespace: {}\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let after = std::fs::read_to_string(IP_FORWARD)?.trim().to_owned();
    ensure!(
        after == before,
        "{IP_FORWARD} is {after} after the check, was {before}"
    );
    Ok(())
}
