//! Running the real `mvnet` binary inside a lab's host namespace, with a
//! state directory of its own.
use std::{
    path::PathBuf,
    process::{Command, Output},
};

use mvnet::netns::NetNs;
use mvnet_lab::lab::Lab;

/// The `mvnet` binary next to this test binary (cargo xtask test builds it
/// first). `MVNET_BIN` overrides.
pub fn mvnet_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MVNET_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("mvnet");
    assert!(
        bin.exists(),
        "mvnet binary not found at {}; build it (and mvnet-lab beside it) with `cargo build -p macvlan-user -p mvnet-lab` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// The `mvnet-cni` plugin binary, beside `mvnet` (built with it).
pub fn cni_bin() -> PathBuf {
    let bin = mvnet_bin().with_file_name("mvnet-cni");
    assert!(
        bin.exists(),
        "mvnet-cni not found at {}; build it with `cargo build -p macvlan-user` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// How long one `mvnet` command may take before a test calls it hung:
/// minutes under the VM's software emulation.
fn call_wait() -> std::time::Duration {
    let in_vm = std::env::var_os("MVNET_IN_VM").is_some();
    std::time::Duration::from_secs(if in_vm { 1200 } else { 300 })
}

/// A CLI session: a lab host namespace and a private state directory.
pub struct Session {
    pub ns: NetNs,
    pub state_dir: PathBuf,
    /// Container names start with this; their namespaces are removed on drop.
    prefix: String,
    /// The lab's own namespaces, which start with it too: the lab removes
    /// them, after the classifier pins of their devices (named by their
    /// inode, which it can only tell while they exist).
    spare: Vec<String>,
}

impl Session {
    /// `mvnet ARGS` under `strace -f`, its calls of `class` traced into
    /// `trace`, with each thread's k-th call of `class` failed with ENOMEM
    /// (`k` 0: none). Its exit code (`None`: killed by a signal).
    pub fn failing_at(
        &self,
        args: &[&str],
        class: &str,
        k: usize,
        trace: &std::path::Path,
    ) -> Option<i32> {
        let mut argv: Vec<String> = ["-f", "-qq", "-e", &format!("trace={class}"), "-o"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        argv.push(trace.display().to_string());
        if k > 0 {
            argv.extend(["-e".into(), format!("inject={class}:error=ENOMEM:when={k}")]);
        }
        argv.push(mvnet_bin().display().to_string());
        argv.push("--state-dir".into());
        argv.push(self.state_dir.display().to_string());
        argv.extend(args.iter().map(|a| a.to_string()));
        self.ns
            .run(move || Command::new("strace").args(&argv).output().unwrap())
            .unwrap()
            .status
            .code()
    }

    /// How many calls of `class` `mvnet ARGS` makes (run once under
    /// strace, which must succeed), its trace written to `trace`.
    pub fn calls_of(&self, args: &[&str], class: &str, trace: &std::path::Path) -> usize {
        assert_eq!(
            self.failing_at(args, class, 0, trace),
            Some(0),
            "mvnet {args:?} under strace"
        );
        std::fs::read_to_string(trace)
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("{class}(")))
            .count()
    }

    pub fn new(lab: &Lab) -> Session {
        Self::with_state_dir(lab, format!("{}-state", lab.id()))
    }

    /// A second session on the lab, with a state directory of its own
    /// (`<lab id>-state-SUFFIX`).
    pub fn another(lab: &Lab, suffix: &str) -> Session {
        Self::with_state_dir(lab, format!("{}-state-{suffix}", lab.id()))
    }

    fn with_state_dir(lab: &Lab, name: String) -> Session {
        let state_dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&state_dir);
        Session {
            ns: lab.host().clone(),
            state_dir,
            prefix: format!("{}-", lab.id()),
            spare: [lab.host(), lab.upstream()]
                .iter()
                .filter_map(|ns| ns.name().map(str::to_owned))
                .collect(),
        }
    }

    /// Runs `mvnet ARGS` in the host namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        let bin = mvnet_bin();
        let state = self.state_dir.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.ns
            .run(move || {
                let what = format!("mvnet {}", args.join(" "));
                super::output_within(
                    Command::new(bin).arg("--state-dir").arg(state).args(&args),
                    call_wait(),
                    &what,
                    || format!("processes:\n{}", super::processes(&["mvnet"])),
                )
            })
            .unwrap()
    }

    /// Starts `mvnet ARGS` in the host namespace without waiting, output
    /// piped.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        let bin = mvnet_bin();
        let state = self.state_dir.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.ns
            .run(move || {
                Command::new(bin)
                    .arg("--state-dir")
                    .arg(state)
                    .args(&args)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .unwrap()
    }

    /// Runs `mvnet ARGS`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "mvnet {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `mvnet ARGS`, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "mvnet {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// `mvnet network create --subnet=SUBNET -o parent=PARENT [EXTRA...] NAME`,
    /// asserting success.
    pub fn network(&self, name: &str, subnet: &str, parent: &str, extra: &[&str]) -> String {
        let subnet = format!("--subnet={subnet}");
        let parent = format!("parent={parent}");
        let mut args = vec!["network", "create", &subnet];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", &parent, name]);
        self.ok(&args)
    }

    /// `mvnet run -d --network NET --name NAME [EXTRA...]`, asserting
    /// success; returns the container id.
    pub fn container(&self, net: &str, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--network", net, "--name", name];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    /// `<lab id>-SHORT`: a container name this session removes on drop.
    pub fn name(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// The saved state (the state file with its journal applied) as
    /// pretty JSON ("" if nothing was saved yet).
    pub fn state(&self) -> String {
        if !self.state_dir.join(mvnet::store::STATE_FILE).exists() {
            return String::new();
        }
        let state = mvnet::store::peek(&self.state_dir).expect("the saved state reads");
        serde_json::to_string_pretty(&state).expect("the state serialises")
    }

    /// Names of the links in the host namespace, sorted.
    pub fn links(&self) -> Vec<String> {
        let mut names: Vec<String> =
            mvnet::netlink::run(Some(&self.ns), |nl| async move { nl.links().await })
                .unwrap()
                .into_iter()
                .map(|l| l.name)
                .collect();
        names.sort();
        names
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Containers a failed test left: their namespaces are named after them.
        for name in mvnet::netns::list() {
            if name.starts_with(&self.prefix) && !self.spare.contains(&name) {
                let _ = mvnet::netns::delete(&name);
            }
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
