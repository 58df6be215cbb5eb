//! Running commands (each one printed as `+ cmd args` before it runs), paths
//! and small helpers shared by the subcommands.

use std::env;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use anyhow::{anyhow, bail, Context as _, Result};

/// The workspace root (the directory holding the root Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `$XDG_CACHE_HOME/mvnet`, or `~/.cache/mvnet`.
pub fn cache_dir() -> Result<PathBuf> {
    let base = match env::var_os("XDG_CACHE_HOME") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        _ => {
            let home = env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    anyhow!("neither XDG_CACHE_HOME nor HOME is set; set one of them")
                })?;
            Path::new(&home).join(".cache")
        }
    };
    Ok(base.join("mvnet"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The cargo that runs xtask (cargo sets `CARGO` for `cargo run`), else `cargo`.
pub fn cargo_program() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Finds an executable on PATH.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

pub fn is_executable(p: &Path) -> bool {
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `dir` prepended to the current PATH.
pub fn path_with(dir: &Path) -> OsString {
    let mut path = dir.as_os_str().to_os_string();
    if let Some(rest) = env::var_os("PATH").filter(|p| !p.is_empty()) {
        path.push(":");
        path.push(rest);
    }
    path
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%^".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A shell-like rendering of `cmd`, with the environment it sets.
pub fn show(cmd: &Command) -> String {
    let mut parts = Vec::new();
    if let Some(dir) = cmd.get_current_dir() {
        if env::current_dir().ok().as_deref() != Some(dir) {
            parts.push(format!("cd {} &&", quote(dir.as_os_str())));
        }
    }
    let current_path = format!(":{}", env::var("PATH").unwrap_or_default());
    for (key, value) in cmd.get_envs() {
        let Some(value) = value else { continue };
        let prefix = value.to_str().and_then(|v| v.strip_suffix(&current_path));
        match prefix {
            Some(prefix) if key == "PATH" => {
                parts.push(format!("PATH={}:$PATH", quote(prefix.as_ref())))
            }
            _ => parts.push(format!("{}={}", key.to_string_lossy(), quote(value))),
        }
    }
    let program = cmd.get_program();
    if Some(program) == env::var_os("CARGO").as_deref() {
        parts.push("cargo".to_string());
    } else {
        parts.push(quote(program));
    }
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

pub fn announce(cmd: &Command) {
    eprintln!("+ {}", show(cmd));
}

fn spawn_error(cmd: &Command, err: std::io::Error) -> anyhow::Error {
    let program = cmd.get_program().to_string_lossy().into_owned();
    if err.kind() == ErrorKind::NotFound {
        anyhow!("`{program}` not found (is it installed and on PATH?)")
    } else {
        anyhow!("could not start `{program}`: {err}")
    }
}

/// "exit status 3" / "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Prints and runs `cmd` with inherited stdio; returns its status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    announce(cmd);
    cmd.status().map_err(|e| spawn_error(cmd, e))
}

/// Prints and runs `cmd`; fails unless it succeeds.
pub fn run(cmd: &mut Command) -> Result<()> {
    let st = status(cmd)?;
    if !st.success() {
        bail!("`{}` failed ({})", show(cmd), describe(st));
    }
    Ok(())
}

/// Prints and runs `cmd`, capturing stdout and stderr; does not check the status.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    announce(cmd);
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(cmd, e))
}

/// Prints and runs `cmd`, returns its stdout; fails (showing stderr) unless it succeeds.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = capture(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            show(cmd),
            describe(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", show(cmd)))
}

/// Reads `/etc/os-release`'s ID (e.g. "debian").
pub fn os_id() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("ID="))
        .map(|v| v.trim_matches('"').to_string())
}

/// Parses the leading "a.b.c" numbers of a version string.
pub fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// An exclusive lock on the machine's `mvl-*` lab namespaces, held while
/// `cargo xtask test` or `cargo xtask lab clean` runs: both remove every lab
/// namespace, so two of them at once would break each other. Released on drop.
pub struct LabLock(#[allow(dead_code)] File);

pub fn lock_labs() -> Result<LabLock> {
    let dir = Path::new("/run/lock");
    let path = if dir.is_dir() { dir } else { Path::new("/tmp") }.join("mvnet-labs.lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let fd = file.as_raw_fd();
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        eprintln!(
            "waiting: another `cargo xtask test` or `lab clean` is using the lab namespaces \
             (lock {}, last taken by pid {})",
            path.display(),
            holder.trim()
        );
        // SAFETY: as above, blocking this time.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    write!(file, "{}", std::process::id())?;
    Ok(LabLock(file))
}

/// `apt-get`, non-interactive.
pub fn apt() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Whether apt knows an installable version of `package` (false before the
/// first `apt-get update` of a fresh machine).
pub fn apt_knows(package: &str) -> bool {
    capture(Command::new("apt-cache").args(["policy", package]))
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Candidate:"))
                .any(|c| c.trim() != "(none)")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote(OsStr::new("abc-1.2/x")), "abc-1.2/x");
        assert_eq!(quote(OsStr::new("a b")), "'a b'");
        assert_eq!(quote(OsStr::new("it's")), r"'it'\''s'");
        assert_eq!(quote(OsStr::new("")), "''");
    }

    #[test]
    fn versions() {
        assert!(version_key("6.12.9-1-amd64") > version_key("6.1.0-56-amd64"));
        assert!(version_key("6.1.0-56-amd64") > version_key("6.1.0-9-amd64"));
    }
}
