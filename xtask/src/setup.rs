//! `cargo xtask setup`: everything the build and the tests need, checked in
//! well under a second when present, installed when not.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::{bpf_linker, toolchain, util, vm, vm_deps};

/// What setup found: how to build (PATH with bpf-linker) and how to boot the VM.
pub struct Env {
    pub bpf_linker_bin: PathBuf,
    pub vm: Option<vm::Vm>,
}

impl Env {
    /// The PATH every cargo invocation that builds macvlan-user must use:
    /// our bpf-linker's directory in front of the current PATH.
    pub fn path(&self) -> OsString {
        util::path_with(&self.bpf_linker_bin)
    }

    /// `cargo` (the one running xtask) in the workspace root, with `path()`.
    pub fn cargo(&self) -> Command {
        let mut cmd = Command::new(util::cargo_program());
        cmd.current_dir(util::workspace_root())
            .env("PATH", self.path());
        cmd
    }
}

/// The host part (toolchain, rust-src, bpf-linker) and, unless `host_only`,
/// the VM part (apt packages, Debian kernel, virtme-ng).
pub fn setup(host_only: bool) -> Result<Env> {
    let nightly = toolchain::ensure_nightly()?;
    toolchain::ensure_rust_src(&nightly)?;
    let bpf_linker_bin = bpf_linker::ensure(&nightly)?;
    let vm = if host_only {
        None
    } else {
        vm_deps::ensure_packages()?;
        let kernels = vm::find_kernels()?;
        for kernel in &kernels {
            eprintln!("ok: VM kernel ({})", kernel.display());
        }
        let vng = vm_deps::ensure_vng()?;
        Some(vm::Vm { vng, kernels })
    };
    Ok(Env { bpf_linker_bin, vm })
}
