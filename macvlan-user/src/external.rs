//! `mvnet lab …` and `mvnet pktgen …`: run by the `mvnet-lab` binary (the
//! lab crate, which the product never links), the way git and cargo run
//! their external subcommands: found beside this executable, else in PATH,
//! and exec'd with the arguments as given, so its exit status is ours.
use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, Error};

/// The lab binary's file name.
pub const LAB_BIN: &str = "mvnet-lab";

/// Where `mvnet-lab` is looked for: beside `exe`, then in each of `path`'s
/// directories.
fn candidates(exe: Option<&Path>, path: &std::ffi::OsStr) -> Vec<PathBuf> {
    exe.and_then(Path::parent)
        .into_iter()
        .map(Path::to_path_buf)
        .chain(std::env::split_paths(path))
        .map(|dir| dir.join(LAB_BIN))
        .collect()
}

/// Replaces this process with `mvnet-lab [--state-dir DIR] SUBCOMMAND ARGS…`;
/// returns only on failure, with an error naming where it looked and the fix.
pub fn exec_lab(subcommand: &str, state_dir: &Path, args: &[String]) -> Error {
    let exe = std::env::current_exe().ok();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let looked = candidates(exe.as_deref(), &path);
    let Some(bin) = looked.iter().find(|p| p.is_file()) else {
        let beside = exe
            .as_deref()
            .and_then(Path::parent)
            .map_or_else(|| "(unknown)".to_owned(), |d| d.display().to_string());
        return anyhow!(
            "`mvnet {subcommand}` is run by the {LAB_BIN} binary, which is neither beside mvnet \
             (in {beside}) nor in PATH; build both binaries with `cargo xtask build` \
             (or `cargo build -p macvlan-user -p mvnet-lab`)"
        );
    };
    let err = Command::new(bin)
        .arg("--state-dir")
        .arg(state_dir)
        .arg(subcommand)
        .args(args)
        .exec();
    anyhow!("running {} failed: {err}", bin.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beside_the_executable_first_then_path() {
        let found = candidates(
            Some(Path::new("/opt/mvnet/bin/mvnet")),
            std::ffi::OsStr::new("/usr/local/bin:/usr/bin"),
        );
        assert_eq!(
            found,
            [
                PathBuf::from("/opt/mvnet/bin/mvnet-lab"),
                PathBuf::from("/usr/local/bin/mvnet-lab"),
                PathBuf::from("/usr/bin/mvnet-lab"),
            ]
        );
    }
}
