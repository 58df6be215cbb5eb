//! bpf-linker built against the nightly toolchain's own libLLVM.
//!
//! No packaged LLVM matches the nightly's, but the toolchain ships
//! `lib/libLLVM.so.<ver>-rust-<release>`. bpf-linker's build only needs an
//! LLVM prefix with an executable `bin/llvm-config` (not parsed) and `lib/`
//! holding `libLLVM.so` and the exact soname file, both links to the
//! toolchain's library. The result lives in
//! `<cache>/bpf-linker-<nightly commit>/` with that prefix next to it (the
//! binary's RUNPATH points into it), so a new nightly gets a new build.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::toolchain::Nightly;
use crate::util;

/// The bpf-linker release we build (checked with nightly 1.97 / LLVM 22).
pub const VERSION: &str = "0.13.0";

/// The directory holding `bpf-linker`, for the front of PATH.
pub fn ensure(nightly: &Nightly) -> Result<PathBuf> {
    let root = util::cache_dir()?.join(format!("bpf-linker-{}", nightly.short_hash()));
    let bin_dir = root.join("bin");
    let prefix = root.join("llvm");
    let soname = llvm_soname(nightly)?;
    if is_installed(&root, &prefix, &soname) {
        eprintln!(
            "ok: bpf-linker {VERSION} for LLVM {} ({})",
            nightly.llvm_major,
            bin_dir.join("bpf-linker").display()
        );
        return Ok(bin_dir);
    }
    eprintln!(
        "installing: bpf-linker {VERSION} for LLVM {} into {} (takes about a minute)",
        nightly.llvm_major,
        root.display()
    );
    make_llvm_prefix(nightly, &prefix, &soname)?;
    let mut cmd = Command::new(util::cargo_program());
    cmd.current_dir(root.parent().expect("cache dir has a parent"))
        .env("LLVM_PREFIX", &prefix)
        .args([
            "install",
            "bpf-linker",
            "--version",
            VERSION,
            "--locked",
            "--force",
        ])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{}", nightly.llvm_major))
        .arg("--root")
        .arg(&root);
    util::run(&mut cmd).context(
        "building bpf-linker failed\n\
         fix: it needs crates.io and a C++ toolchain (apt-get install build-essential); see the error above",
    )?;
    if !is_installed(&root, &prefix, &soname) {
        bail!(
            "cargo install finished but {} is missing",
            bin_dir.join("bpf-linker").display()
        );
    }
    eprintln!("ok: bpf-linker {VERSION} for LLVM {}", nightly.llvm_major);
    Ok(bin_dir)
}

fn is_installed(root: &Path, prefix: &Path, soname: &str) -> bool {
    let crates = fs::read_to_string(root.join(".crates.toml")).unwrap_or_default();
    util::is_executable(&root.join("bin/bpf-linker"))
        && crates.contains(&format!("\"bpf-linker {VERSION} "))
        // The link must still resolve: the binary loads libLLVM through it.
        && prefix.join("lib").join(soname).is_file()
}

/// The file name of the nightly's libLLVM (its soname), e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`.
fn llvm_soname(nightly: &Nightly) -> Result<String> {
    let lib = nightly.sysroot.join("lib");
    let mut names: Vec<String> = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_type()
                .map(|t| t.is_file() || t.is_symlink())
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("libLLVM.so."))
        .collect();
    names.sort();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(anyhow!(
            "the nightly toolchain has no {}/libLLVM.so.* (bpf-linker links against it)\n\
             fix: reinstall it: `rustup toolchain uninstall nightly && cargo xtask setup`",
            lib.display()
        )),
        many => Err(anyhow!(
            "the nightly toolchain has several libLLVM.so.* in {}: {many:?}; cannot tell which one rustc uses",
            lib.display()
        )),
    }
}

fn make_llvm_prefix(nightly: &Nightly, prefix: &Path, soname: &str) -> Result<()> {
    let bin = prefix.join("bin");
    let lib = prefix.join("lib");
    for dir in [&bin, &lib] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let llvm_config = bin.join("llvm-config");
    fs::write(
        &llvm_config,
        format!("#!/bin/sh\necho {}\n", nightly.llvm_version),
    )
    .with_context(|| format!("writing {}", llvm_config.display()))?;
    fs::set_permissions(&llvm_config, fs::Permissions::from_mode(0o755))?;
    let target = nightly.sysroot.join("lib").join(soname);
    for name in ["libLLVM.so", soname] {
        let link = lib.join(name);
        match fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", link.display())),
        }
        symlink(&target, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), target.display()))?;
    }
    Ok(())
}
