//! Running a command in a VM: virtme-ng boots a Debian kernel (which has the
//! 8021q and pktgen modules this machine's kernel lacks) under qemu, with the
//! host's filesystem shared read-only (writes to /tmp, /etc, /var, ... go to
//! a throwaway overlay), and runs the command as root in the workspace root.
//!
//! Checked with virtme-ng 1.42, qemu 7.2 and Debian's 6.1 and 6.12 kernels on a 2-core
//! VM: boot plus a trivial command takes 30-50 s. KVM is not usable here, so
//! qemu always runs with software emulation (`--disable-kvm`). vng itself
//! propagates the command's exit status (and exits 255 on a guest panic); we
//! also have the guest print it on a marker line so a VM that dies without
//! running the command to the end cannot pass.

use std::env;
use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::util;

/// Guest memory and CPUs (qemu -m / -smp).
pub const MEMORY: &str = "2G";
pub const CPUS: &str = "2";
/// Default time limit for one VM run; override with MVNET_VM_TIMEOUT (seconds).
/// A boot runs the VM tests and the parity suite's VM scenarios: on 6.1 at
/// load 9 on 2 cores, 1170 s and 215 s per scenario plus dockerd's start
/// (a run stopped at 1800 s with one scenario to go).
const DEFAULT_TIMEOUT_SECS: u64 = 3600;
/// The guest prints this followed by the command's exit status.
const MARKER: &str = "MVNET_VM_EXIT=";

pub struct Vm {
    pub vng: PathBuf,
    /// The kernels to boot, oldest first; the VM tests run on each.
    pub kernels: Vec<PathBuf>,
}

/// The kernels to boot: MVNET_VM_KERNEL if set (one path, or several
/// separated by commas), else the newest Debian kernel in /boot of each
/// series (`vmlinuz-<release>-amd64` with modules in /lib/modules; 6.1 and
/// 6.12 on bookworm) that is not the running one, oldest series first.
pub fn find_kernels() -> Result<Vec<PathBuf>> {
    if let Some(list) = env::var_os("MVNET_VM_KERNEL") {
        let mut kernels = Vec::new();
        for kernel in list.to_string_lossy().split(',').filter(|k| !k.is_empty()) {
            let kernel = PathBuf::from(kernel);
            if !kernel.is_file() {
                bail!("MVNET_VM_KERNEL: {} is not a file", kernel.display());
            }
            kernels.push(kernel);
        }
        if kernels.is_empty() {
            bail!(
                "MVNET_VM_KERNEL is empty; give a path to a vmlinuz (or several, comma-separated)"
            );
        }
        return Ok(kernels);
    }
    let running = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut releases = Vec::new();
    for entry in std::fs::read_dir("/boot").context("reading /boot")? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(release) = name.to_str().and_then(|n| n.strip_prefix("vmlinuz-")) {
            let modules = Path::new("/lib/modules").join(release).join("modules.dep");
            if modules.is_file() {
                releases.push(release.to_owned());
            }
        }
    }
    let kernels: Vec<PathBuf> = newest_per_series(&releases, running.trim())
        .into_iter()
        .map(|r| Path::new("/boot").join(format!("vmlinuz-{r}")))
        .collect();
    if kernels.is_empty() {
        bail!(
            "no Debian kernel for the VM tests in /boot (vmlinuz-<release>-amd64 with /lib/modules/<release>)\n\
             fix: as root: apt-get install --no-install-recommends {} \
             (`cargo xtask setup` does this on Debian), or set MVNET_VM_KERNEL=/path/to/vmlinuz",
            crate::vm_deps::KERNEL_PACKAGES.join(" ")
        );
    }
    Ok(kernels)
}

/// Of Debian kernel `releases` (`6.1.0-57-amd64`, `6.12.117+deb12-amd64`),
/// the newest of each major.minor series except `running`, oldest series
/// first.
fn newest_per_series(releases: &[String], running: &str) -> Vec<String> {
    let mut best: std::collections::BTreeMap<Vec<u64>, (Vec<u64>, String)> = Default::default();
    for release in releases {
        let debian_like = release.ends_with("-amd64")
            && release.starts_with(|c: char| c.is_ascii_digit())
            && release != running;
        if !debian_like {
            continue;
        }
        let key = util::version_key(release);
        let series = key.iter().take(2).copied().collect::<Vec<_>>();
        let newer = best.get(&series).is_none_or(|(k, _)| key > *k);
        if newer {
            best.insert(series, (key, release.clone()));
        }
    }
    best.into_values().map(|(_, r)| r).collect()
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Restores the previous SIGINT/SIGTERM handlers when dropped.
struct SignalGuard([libc::sighandler_t; 2]);

impl SignalGuard {
    fn install() -> Self {
        INTERRUPTED.store(false, Ordering::SeqCst);
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            SignalGuard([
                libc::signal(libc::SIGINT, handler),
                libc::signal(libc::SIGTERM, handler),
            ])
        }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // SAFETY: restores the handlers that were installed before.
        unsafe {
            libc::signal(libc::SIGINT, self.0[0]);
            libc::signal(libc::SIGTERM, self.0[1]);
        }
    }
}

impl Vm {
    /// The vng command line that runs `script` (a /bin/sh script) in `cwd`
    /// on `kernel`.
    fn command(&self, kernel: &Path, script: &str, cwd: &Path) -> Command {
        let mut cmd = Command::new(&self.vng);
        // vng starts `virtme-run` through the shell: it must be on PATH
        // (it is not when vng lives in a venv that is not activated).
        if let Some(dir) = self.vng.parent() {
            cmd.env("PATH", util::path_with(dir));
        }
        cmd.arg("--run")
            .arg(kernel)
            .args([
                "--disable-kvm",
                "--memory",
                MEMORY,
                "--cpus",
                CPUS,
                "--user",
                "root",
            ])
            .arg("--cwd")
            .arg(cwd)
            .arg("--exec")
            .arg(script);
        cmd
    }

    /// Boots the VM on each kernel in turn and runs `script` there; the
    /// first non-zero exit status (the others still run), else 0.
    pub fn exec_on_each(&self, script: &str, cwd: &Path) -> Result<i32> {
        let mut first_failure = 0;
        for kernel in &self.kernels {
            eprintln!("vm: booting {}", kernel.display());
            let code = self.exec(kernel, script, cwd)?;
            if code != 0 && first_failure == 0 {
                first_failure = code;
            }
        }
        Ok(first_failure)
    }

    /// Boots the VM on `kernel`, runs `script` with /bin/sh as root in
    /// `cwd`, and returns its exit status. Output is streamed as it comes.
    pub fn exec(&self, kernel: &Path, script: &str, cwd: &Path) -> Result<i32> {
        if let Err(e) = File::open(kernel) {
            bail!(
                "cannot read {}: {e}\nfix: run as root (Debian installs kernels readable by root only)",
                kernel.display()
            );
        }
        let timeout = match env::var("MVNET_VM_TIMEOUT") {
            Ok(s) => s
                .parse()
                .with_context(|| format!("MVNET_VM_TIMEOUT={s} is not a number of seconds"))?,
            Err(_) => DEFAULT_TIMEOUT_SECS,
        };
        let wrapped =
            format!("(\n{script}\n)\nmvnet_vm_rc=$?\necho {MARKER}$mvnet_vm_rc\nexit $mvnet_vm_rc");
        let mut cmd = self.command(kernel, &wrapped, cwd);
        // Pipes, not inherited fds: qemu reopens /proc/self/fd/1 and 2, which
        // for a regular file gives two offsets that overwrite each other.
        // Own process group: vng -> sh -> virtme-run -> qemu, all killed together.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        util::announce(&cmd);
        let started = Instant::now();
        let _signals = SignalGuard::install();
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow!("could not start {}: {e}", self.vng.display()))?;
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let out_thread = thread::spawn(move || forward_stdout(out));
        let err_thread = thread::spawn(move || {
            let _ = io::copy(&mut BufReader::new(err), &mut io::stderr());
        });
        let waited = wait(&mut child, Duration::from_secs(timeout));
        let marker = out_thread.join().unwrap_or(None);
        let _ = err_thread.join();
        let status = waited?;
        let elapsed = started.elapsed().as_secs();
        match (marker, status.code()) {
            (Some(code), Some(vng_code)) if code == vng_code => {
                eprintln!("vm: command exited with status {code} ({elapsed} s including boot)");
                Ok(code)
            }
            (Some(code), _) => bail!(
                "vm: the command exited with status {code} but vng then failed ({}) after {elapsed} s",
                util::describe(status)
            ),
            (None, _) => bail!(
                "vm: the VM ended ({}) after {elapsed} s without the command finishing \
                 (boot failure or guest kernel panic? see the output above)",
                util::describe(status)
            ),
        }
    }
}

/// Waits for vng, killing its process group on timeout or Ctrl-C.
fn wait(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let why = if INTERRUPTED.load(Ordering::SeqCst) {
            Some("interrupted".to_string())
        } else if Instant::now() >= deadline {
            Some(format!(
                "timed out after {} s (MVNET_VM_TIMEOUT)",
                timeout.as_secs()
            ))
        } else {
            None
        };
        if let Some(why) = why {
            kill_group(child);
            bail!("vm: {why}; stopped the VM");
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn kill_group(child: &mut Child) {
    let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    for (signal, grace) in [(libc::SIGTERM, 50), (libc::SIGKILL, 50)] {
        // SAFETY: signals only the process group we created for vng.
        unsafe { libc::killpg(pgid, signal) };
        for _ in 0..grace {
            if matches!(child.try_wait(), Ok(Some(_))) {
                // vng is gone; make sure nothing else of the group survives.
                unsafe { libc::killpg(pgid, libc::SIGKILL) };
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Copies the guest's stdout to ours line by line, holding back the marker
/// line, whose status it returns.
fn forward_stdout(out: impl io::Read) -> Option<i32> {
    let mut reader = BufReader::new(out);
    let mut line = Vec::new();
    let mut marker = None;
    let stdout = io::stdout();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return marker,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        // The marker may follow output that did not end in a newline.
        if let Some(pos) = text.rfind(MARKER) {
            if let Ok(code) = text[pos + MARKER.len()..].parse() {
                marker = Some(code);
                if pos > 0 {
                    println!("{}", &text[..pos]);
                }
                continue;
            }
        }
        let mut lock = stdout.lock();
        let _ = lock.write_all(&line);
        let _ = lock.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_kernel_of_each_series_oldest_series_first() {
        let releases: Vec<String> = [
            "6.12.117+deb12-amd64",
            "6.1.0-57-amd64",
            "6.1.0-9-amd64",
            "6.12.38+deb12-amd64",
            "6.18.0-1-amd64",
            "6.1.0-57-rt-amd64x",
            "5.10.0-30-cloud-arm64",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            newest_per_series(&releases, "6.18.0-1-amd64"),
            ["6.1.0-57-amd64", "6.12.117+deb12-amd64"]
        );
    }
}
