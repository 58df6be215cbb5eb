//! `cargo xtask test`: unit tests, host integration tests, the parity
//! suite against Docker, `mvnet docker sync|watch` against Docker, VM
//! tests, in that order, stopping at the first failure. After each host
//! part, `mvnet lab clean` runs and no `mvl-*` network namespace may be
//! left (the VM's guest script checks its own namespaces).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::setup::{self, Env};
use crate::{cargo, host_deps, util};

/// Prefix of every lab/test network namespace.
const NETNS_PREFIX: &str = "mvl-";

pub struct Opts {
    pub host_only: bool,
    pub vm_only: bool,
    /// Passed to every test binary (filters, --nocapture, ...).
    pub args: Vec<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Part {
    Unit,
    Host,
    Parity,
    Docker,
    Vm,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Unit => "unit tests",
            Part::Host => "host integration tests",
            Part::Parity => "parity with Docker",
            Part::Docker => "Docker's networks",
            Part::Vm => "VM tests",
        }
    }
}

enum Outcome {
    Passed(u64),
    Failed(String),
    Skipped(&'static str),
}

pub fn test(opts: Opts) -> Result<i32> {
    if !util::is_root() {
        bail!(
            "cargo xtask test needs root: the host integration tests and the VM tests build \
             network namespaces and load eBPF programs\n\
             fix: run it as root (e.g. `sudo -i`, then `cargo xtask test` in {})",
            util::workspace_root().display()
        );
    }
    let env = setup::setup(opts.host_only)?;
    if !opts.vm_only {
        host_deps::ensure_tmux()?;
        host_deps::ensure()?;
        host_deps::ensure_kubernetes_validate()?;
    }
    let _lock = util::lock_labs()?;
    let selected = |p: Part| match p {
        Part::Unit | Part::Host | Part::Parity | Part::Docker => !opts.vm_only,
        Part::Vm => !opts.host_only,
    };
    // mvnet is needed for `lab clean` and by the tests (MVNET_BIN).
    let mvnet = cargo::build_mvnet(&env, false).context("building mvnet failed")?;
    // The VM part makes no namespace on the host (the guest has its own
    // kernel and checks its own): with --vm-only the host's labs, other
    // runs' included, are left alone.
    if !opts.vm_only {
        clean_stale(&mvnet)?;
    }

    let mut results: Vec<(Part, Outcome)> = Vec::new();
    let mut failed = false;
    for part in [Part::Unit, Part::Host, Part::Parity, Part::Docker, Part::Vm] {
        let outcome = if !selected(part) {
            Outcome::Skipped(if opts.vm_only {
                "--vm-only"
            } else {
                "--host-only"
            })
        } else if failed {
            Outcome::Skipped("an earlier part failed")
        } else {
            eprintln!("\n=== {} ===", part.name());
            let started = Instant::now();
            let result = run_part(part, &env, &mvnet, &opts.args);
            // Clean up after failures too, but report the part's own error first.
            let clean = if part == Part::Vm {
                Ok(())
            } else {
                check_clean(part, &mvnet)
            };
            match (result, clean) {
                (Ok(()), Ok(())) => Outcome::Passed(started.elapsed().as_secs()),
                (Err(e), clean) => {
                    if let Err(clean) = clean {
                        eprintln!("error: {clean:#}");
                    }
                    failed = true;
                    Outcome::Failed(format!("{e:#}"))
                }
                (Ok(()), Err(clean)) => {
                    failed = true;
                    Outcome::Failed(format!("{clean:#}"))
                }
            }
        };
        results.push((part, outcome));
    }

    eprintln!("\n=== summary ===");
    for (part, outcome) in &results {
        match outcome {
            Outcome::Passed(secs) => eprintln!("  {:<24} passed ({secs} s)", part.name()),
            Outcome::Failed(why) => eprintln!("  {:<24} FAILED: {why}", part.name()),
            Outcome::Skipped(why) => eprintln!("  {:<24} skipped ({why})", part.name()),
        }
    }
    Ok(if failed { 1 } else { 0 })
}

fn run_part(part: Part, env: &Env, mvnet: &Path, args: &[String]) -> Result<()> {
    match part {
        Part::Unit => {
            let mut cmd = env.cargo();
            cmd.args([
                "test",
                "--workspace",
                "--exclude",
                "macvlan-ebpf",
                "--lib",
                "--bins",
            ]);
            util::run(with_test_args(&mut cmd, args))?;
            let mut cmd = env.cargo();
            cmd.args(["test", "--package", "macvlan-common"]);
            util::run(with_test_args(&mut cmd, args))
        }
        Part::Host => {
            let mut cmd = env.cargo();
            cmd.args(["test", "--package", "macvlan-tests", "--test", "host"])
                .env("MVNET_BIN", mvnet);
            util::run(with_test_args(&mut cmd, args))
        }
        Part::Parity => {
            // tests/parity: the differential suite against Debian's Docker
            // engine, started by the suite in a lab namespace.
            let mut cmd = env.cargo();
            cmd.args(["test", "--package", "macvlan-tests", "--test", "parity"])
                .env("MVNET_BIN", mvnet);
            util::run(with_test_args(&mut cmd, args))
        }
        Part::Docker => {
            // tests/docker: `mvnet docker sync|watch` against Docker's own
            // macvlan driver, each test with its own dockerd in a lab.
            let mut cmd = env.cargo();
            cmd.args(["test", "--package", "macvlan-tests", "--test", "docker"])
                .env("MVNET_BIN", mvnet);
            util::run(with_test_args(&mut cmd, args))
        }
        Part::Vm => {
            let vm = env.vm.as_ref().expect("setup prepared the VM part");
            let exe = build_test_binary(env, "vm")?;
            let parity = build_test_binary(env, "parity")?;
            // The VM sees the host's filesystem but with a fresh /tmp, so a
            // checkout under /tmp is invisible there: stage the binaries
            // in our cache directory (under $HOME, which the VM shares).
            let stage = vm_stage_dir()?;
            let staged_exe = stage.join("vm-tests");
            let staged_parity = stage.join("parity");
            let staged_mvnet = stage.join("mvnet");
            for (from, to) in [(&exe, &staged_exe), (&parity, &staged_parity)] {
                std::fs::copy(from, to)
                    .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            }
            // mvnet runs `mvnet-lab` (lab, pktgen) from beside itself; the
            // tests find `mvnet-cni` beside mvnet.
            let lab = mvnet.with_file_name("mvnet-lab");
            let cni = mvnet.with_file_name("mvnet-cni");
            for (from, to) in [
                (mvnet.to_path_buf(), staged_mvnet.clone()),
                (lab, stage.join("mvnet-lab")),
                (cni, stage.join("mvnet-cni")),
            ] {
                std::fs::copy(&from, &to)
                    .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            }
            // The parity suite's 802.1Q and no-parent scenarios run in
            // every boot, after the VM tests; MVNET_VM_PARITY=0 leaves them
            // out (a quicker VM run while working on something else).
            let parity = std::env::var_os("MVNET_VM_PARITY")
                .is_none_or(|v| v != "0")
                .then_some(staged_parity.as_path());
            let script = vm_script(&staged_exe, parity, &staged_mvnet, args);
            // Each kernel in turn (6.1, 6.12): every one must pass.
            let mut failed = Vec::new();
            for kernel in &vm.kernels {
                let code = vm.exec(kernel, &script, &stage)?;
                if code != 0 {
                    failed.push(format!("{} (exit status {code})", kernel.display()));
                }
            }
            if !failed.is_empty() {
                bail!("the VM tests failed on {}", failed.join(", "));
            }
            Ok(())
        }
    }
}

/// `cmd -- ARGS` (nothing added without ARGS).
fn with_test_args<'a>(cmd: &'a mut Command, args: &[String]) -> &'a mut Command {
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    cmd
}

/// Builds the test binary `name` of macvlan-tests without running it: the
/// VM tests, and the parity suite (in the VM it runs the scenarios that
/// need 802.1Q and dummy links; the host part runs the others).
fn build_test_binary(env: &Env, name: &str) -> Result<PathBuf> {
    let mut cmd = env.cargo();
    cmd.args([
        "test",
        "--package",
        "macvlan-tests",
        "--test",
        name,
        "--no-run",
    ]);
    let found = cargo::artifacts(&mut cmd)?;
    cargo::executable(&found, "macvlan-tests", name, "test")
}

fn sh_quote(s: impl AsRef<OsStr>) -> String {
    format!("'{}'", s.as_ref().to_string_lossy().replace('\'', r"'\''"))
}

/// The guest script: the VM test binary, then (in the same boot, with
/// `parity`) the parity suite's 802.1Q and no-parent scenarios, each run
/// whatever the other gave, then a check that they removed their
/// namespaces (they would vanish with the VM and hide the leak otherwise).
fn vm_script(exe: &Path, parity: Option<&Path>, mvnet: &Path, args: &[String]) -> String {
    let mut env = format!("env MVNET_IN_VM=1 MVNET_BIN={}", sh_quote(mvnet));
    // The guest does not inherit our environment: pass on the parity
    // suite's knobs when they are set.
    for var in [
        "MVNET_PARITY_BUDGET",
        "MVNET_PARITY_FREEZE_DOCKERD",
        "PARITY_VERBOSE",
    ] {
        if let Some(v) = std::env::var_os(var) {
            env += &format!(" {var}={}", sh_quote(v));
        }
    }
    let mut run = format!("{env} {} --test-threads=1", sh_quote(exe));
    let mut suite = parity
        .map(|p| format!("{env} {}", sh_quote(p)))
        .unwrap_or_default();
    for arg in args {
        for line in [&mut run, &mut suite] {
            if !line.is_empty() {
                line.push(' ');
                line.push_str(&sh_quote(arg));
            }
        }
    }
    if !suite.is_empty() {
        suite.push_str(" || rc=1\n");
    }
    format!(
        "{run}\n\
         rc=$?\n\
         {suite}\
         left=$(ip netns list 2>/dev/null | awk '$1 ~ /^{NETNS_PREFIX}/ {{print $1}}' | tr '\\n' ' ')\n\
         if [ -n \"$left\" ]; then echo \"error: the VM tests left network namespaces behind: $left\" >&2; [ $rc -ne 0 ] || rc=1; fi\n\
         exit $rc"
    )
}

/// A directory the VM can see: `$XDG_CACHE_HOME/mvnet/vm-run` or
/// `~/.cache/mvnet/vm-run`.
fn vm_stage_dir() -> Result<PathBuf> {
    let dir = util::cache_dir()?.join("vm-run");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Names of `mvl-*` network namespaces on this machine.
fn lab_namespaces() -> Result<Vec<String>> {
    let list = util::stdout_of(Command::new("ip").args(["netns", "list"]))
        .context("fix: install iproute2")?;
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(NETNS_PREFIX))
        .map(str::to_string)
        .collect())
}

fn lab_clean(mvnet: &Path) -> Result<()> {
    let status = util::status(Command::new(mvnet).args(["lab", "clean"]))?;
    if !status.success() {
        bail!("`mvnet lab clean` failed ({})", util::describe(status));
    }
    Ok(())
}

/// Before the first part: remove what killed runs left behind.
fn clean_stale(mvnet: &Path) -> Result<()> {
    let stale = lab_namespaces()?;
    if !stale.is_empty() {
        eprintln!(
            "note: removing lab namespaces left by an earlier run: {}",
            stale.join(" ")
        );
    }
    lab_clean(mvnet)?;
    let left = lab_namespaces()?;
    if !left.is_empty() {
        bail!(
            "`mvnet lab clean` did not remove these namespaces: {}\nfix: remove them with `ip netns delete NAME`",
            left.join(" ")
        );
    }
    Ok(())
}

/// After a part: the part must have removed its namespaces; `mvnet lab clean`
/// must succeed and leave none.
fn check_clean(part: Part, mvnet: &Path) -> Result<()> {
    let leaked = lab_namespaces()?;
    let clean = lab_clean(mvnet);
    let left = lab_namespaces()?;
    if !leaked.is_empty() {
        bail!(
            "the {} left network namespaces behind: {}",
            part.name(),
            leaked.join(" ")
        );
    }
    clean?;
    if !left.is_empty() {
        bail!(
            "namespaces remain after `mvnet lab clean`: {}",
            left.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_script_quotes_and_checks_leftovers() {
        let s = vm_script(
            Path::new("/t/vm-1"),
            Some(Path::new("/t/parity")),
            Path::new("/t/mvnet"),
            &["it's".into()],
        );
        assert!(s.starts_with(
            "env MVNET_IN_VM=1 MVNET_BIN='/t/mvnet' '/t/vm-1' --test-threads=1 'it'\\''s'\n\
             rc=$?\n\
             env MVNET_IN_VM=1 MVNET_BIN='/t/mvnet' '/t/parity' 'it'\\''s' || rc=1\n\
             left="
        ));
        let s = vm_script(Path::new("/t/vm-1"), None, Path::new("/t/mvnet"), &[]);
        assert!(s.starts_with(
            "env MVNET_IN_VM=1 MVNET_BIN='/t/mvnet' '/t/vm-1' --test-threads=1\n\
             rc=$?\n\
             left="
        ));
        assert!(s.contains("/^mvl-/"));
        assert!(s.ends_with("exit $rc"));
    }
}
