//! The nightly toolchain (aya-build runs `rustup run nightly cargo build -Z build-std=core`)
//! and its rust-src component.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::util;

/// LLVM majors that bpf-linker (see `bpf_linker::VERSION`) has a feature for.
pub const SUPPORTED_LLVM: &[u32] = &[21, 22, 23];

#[derive(Debug)]
pub struct Nightly {
    /// e.g. "1.97.0-nightly"
    pub release: String,
    pub commit_hash: String,
    /// e.g. "22.1.4"
    pub llvm_version: String,
    pub llvm_major: u32,
    pub sysroot: PathBuf,
}

impl Nightly {
    /// The first 9 hex digits of the commit hash, as `rustc -V` prints it.
    pub fn short_hash(&self) -> &str {
        &self.commit_hash[..self.commit_hash.len().min(9)]
    }
}

fn rustc_nightly() -> Command {
    let mut cmd = Command::new("rustc");
    cmd.arg("+nightly");
    cmd
}

/// `Ok(None)` when `rustc +nightly` does not run (toolchain not installed).
fn probe() -> Result<Option<Nightly>> {
    let out = util::capture(rustc_nightly().arg("-vV")).map_err(|e| {
        anyhow!("{e}\nfix: install rustup (https://rustup.rs), which provides `rustc +TOOLCHAIN`")
    })?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| anyhow!("`rustc +nightly -vV` printed no `{name}` line:\n{text}"))
    };
    let release = field("release:")?;
    let commit_hash = field("commit-hash:")?;
    let llvm_version = field("LLVM version:")?;
    let llvm_major = llvm_version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| anyhow!("cannot parse LLVM version `{llvm_version}`"))?;
    let sysroot = util::stdout_of(rustc_nightly().args(["--print", "sysroot"]))?;
    Ok(Some(Nightly {
        release,
        commit_hash,
        llvm_version,
        llvm_major,
        sysroot: PathBuf::from(sysroot.trim()),
    }))
}

/// Makes sure `rustc +nightly` works (installing the toolchain if needed).
pub fn ensure_nightly() -> Result<Nightly> {
    let nightly = match probe()? {
        Some(n) => n,
        None => {
            eprintln!("installing: nightly toolchain (rustup toolchain install nightly --profile minimal)");
            util::run(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]))
            .context(
                "installing the nightly toolchain failed\n\
                 fix: make sure static.rust-lang.org is reachable (or set RUSTUP_DIST_SERVER to a mirror), \
                 then run `rustup toolchain install nightly --profile minimal --component rust-src`",
            )?;
            probe()?.ok_or_else(|| {
                anyhow!("`rustc +nightly -vV` still fails after installing the nightly toolchain; try `rustup toolchain uninstall nightly` and run setup again")
            })?
        }
    };
    if !SUPPORTED_LLVM.contains(&nightly.llvm_major) {
        bail!(
            "the nightly toolchain ({}) uses LLVM {}, but bpf-linker {} supports only LLVM {:?}\n\
             fix: set `bpf_linker::VERSION` in xtask/src/bpf_linker.rs to a bpf-linker release that has an \
             `llvm-{}` feature (and add {} to `SUPPORTED_LLVM`)",
            nightly.release,
            nightly.llvm_version,
            crate::bpf_linker::VERSION,
            SUPPORTED_LLVM,
            nightly.llvm_major,
            nightly.llvm_major,
        );
    }
    eprintln!(
        "ok: nightly toolchain (rustc {} {}, LLVM {})",
        nightly.release,
        nightly.short_hash(),
        nightly.llvm_version
    );
    Ok(nightly)
}

/// Makes sure the nightly has rust-src (needed by `-Z build-std=core`).
pub fn ensure_rust_src(nightly: &Nightly) -> Result<()> {
    let src = nightly.sysroot.join("lib/rustlib/src/rust/library/core");
    if src.is_dir() {
        eprintln!("ok: rust-src on nightly");
        return Ok(());
    }
    eprintln!("installing: rust-src on nightly");
    util::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("fix: make sure static.rust-lang.org is reachable, then run `rustup component add rust-src --toolchain nightly`")?;
    if !src.is_dir() {
        bail!("rust-src was added but {} does not exist", src.display());
    }
    Ok(())
}
