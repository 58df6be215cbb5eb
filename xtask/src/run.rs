//! `cargo xtask run` and `cargo xtask lab clean`: build mvnet, run it.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::{cargo, setup, util};

/// Environment variables handed to mvnet when it is run through sudo.
const KEEP_ENV: &[&str] = &["RUST_LOG", "RUST_BACKTRACE"];

/// Exit code of a finished process (128 + signal when killed, like a shell).
pub fn code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Runs `mvnet ARGS` as root: directly when we are root, else through sudo.
pub fn mvnet_as_root(mvnet: &Path, args: &[&str]) -> Result<i32> {
    let mut cmd = if util::is_root() {
        Command::new(mvnet)
    } else {
        eprintln!(
            "mvnet {} needs root (network namespaces, eBPF); running it through sudo",
            args.join(" ")
        );
        let mut cmd = Command::new("sudo");
        cmd.args(["--", "env"]);
        for key in KEEP_ENV {
            if let Ok(value) = std::env::var(key) {
                cmd.arg(format!("{key}={value}"));
            }
        }
        cmd.arg(mvnet);
        cmd
    };
    cmd.args(args);
    let status = util::status(&mut cmd).context("fix: run as root, or install sudo")?;
    Ok(code(status))
}

/// `cargo xtask run [--release] [-- ARGS]`.
pub fn run(release: bool, args: Vec<OsString>) -> Result<i32> {
    let env = setup::setup(true)?;
    let mvnet = cargo::build_mvnet(&env, release)?;
    if args.is_empty() {
        let code = mvnet_as_root(&mvnet, &["lab", "smoke"])?;
        if code != 0 {
            return Ok(code);
        }
        return mvnet_as_root(&mvnet, &["lab", "tutorial"]);
    }
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| anyhow::anyhow!("argument {a:?} is not UTF-8"))
        })
        .collect::<Result<_>>()?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mvnet_as_root(&mvnet, &args)
}

/// `cargo xtask lab clean`.
pub fn lab_clean() -> Result<i32> {
    let env = setup::setup(true)?;
    let mvnet = cargo::build_mvnet(&env, false)?;
    // Without root the lock file may not be writable; sudo'd mvnet runs unlocked then.
    let _lock = if util::is_root() {
        Some(util::lock_labs()?)
    } else {
        None
    };
    mvnet_as_root(&mvnet, &["lab", "clean"])
}
