//! Debian's Docker engine (docker.io, 20.10) inside a lab's host namespace,
//! with its own data root, exec root, socket and pid file in a temp dir, and
//! a busybox image imported from a tarball (no registry). Used by the
//! parity suite and the Docker tests.
//!
//! `/usr/local/bin/docker` on some machines is an unrelated client: the
//! binaries are always called by their Debian paths.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

pub const DOCKERD: &str = "/usr/sbin/dockerd";
pub const DOCKER: &str = "/usr/bin/docker";
pub const BUSYBOX: &str = "/bin/busybox";
/// The image every Docker container of the suites runs.
pub const IMAGE: &str = "mvnet-parity-bb:latest";
/// Options of every `docker run`: no AppArmor profile (the VM's kernel has
/// AppArmor on but no `apparmor_parser` to load Docker's; the host's has
/// it off, where this changes nothing).
pub const RUN_OPTIONS: &[&str] = &["--security-opt", "apparmor=unconfined"];

/// Adds another parent to a lab: `parent` in its host namespace ⇄ `wire` in
/// its upstream one, both up. Docker 20.10 takes one macvlan network per
/// parent, so more networks need more parents.
pub fn add_parent(lab: &mvnet_lab::lab::Lab, parent: &str, wire: &str) -> Result<()> {
    let (p, w) = (parent.to_owned(), wire.to_owned());
    let up = lab.upstream().clone();
    mvnet::netlink::run(Some(lab.host()), |nl| async move {
        nl.add_veth(&p, &w).await?;
        let peer = nl.require_link(&w).await?;
        nl.move_to(peer.index, &up).await?;
        let link = nl.require_link(&p).await?;
        nl.set_up(link.index).await
    })?;
    let w = wire.to_owned();
    mvnet::netlink::run(Some(lab.upstream()), |nl| async move {
        let link = nl.require_link(&w).await?;
        nl.set_up(link.index).await
    })?;
    Ok(())
}

/// A running dockerd; stopped by its pid file on drop (also on panic).
pub struct Dockerd {
    dir: PathBuf,
    socket: PathBuf,
    pidfile: PathBuf,
    netns: PathBuf,
    /// The containerd the suite started (in the VM), and dockerd's options
    /// for it.
    containerd: Option<std::process::Child>,
    vm_args: Vec<String>,
    pub version: String,
    /// Set when a client call had to be killed: the engine stopped
    /// answering, and later calls fail at once until [`Dockerd::recover`].
    stuck: std::sync::atomic::AtomicBool,
}

/// How long dockerd (and in the VM its containerd) may take to start:
/// under the VM's software emulation they take minutes.
fn start_wait() -> Duration {
    let in_vm = std::env::var_os("MVNET_IN_VM").is_some();
    Duration::from_secs(if in_vm { 600 } else { 30 })
}

/// How long one `docker` client call may take: under the VM's software
/// emulation a `docker run` takes tens of seconds; on the host a few.
fn call_wait() -> Duration {
    let in_vm = std::env::var_os("MVNET_IN_VM").is_some();
    Duration::from_secs(if in_vm { 360 } else { 120 })
}

impl Dockerd {
    /// Starts dockerd in the network namespace at `netns` and waits (at
    /// most 30 s) until it answers.
    pub fn start(netns: &Path, tag: &str) -> Result<Dockerd> {
        for exe in [DOCKERD, DOCKER, BUSYBOX] {
            if !Path::new(exe).exists() {
                bail!(
                    "{exe} is missing: the Docker tests need Debian's docker.io and \
                     busybox-static; install them with `cargo xtask setup` \
                     (or apt-get install docker.io busybox-static)"
                );
            }
        }
        let dir = std::env::temp_dir().join(format!("{tag}-docker"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut d = Dockerd {
            socket: dir.join("docker.sock"),
            pidfile: dir.join("docker.pid"),
            netns: netns.to_owned(),
            containerd: None,
            vm_args: Vec::new(),
            dir,
            version: String::new(),
            stuck: Default::default(),
        };
        if std::env::var_os("MVNET_IN_VM").is_some() {
            d.start_containerd()?;
        }
        d.spawn()?;
        d.import_busybox()?;
        Ok(d)
    }

    /// Under the VM's software emulation dockerd waits less for a
    /// containerd it starts itself than that takes, so in the VM the suite
    /// starts containerd first and hands it to dockerd.
    fn start_containerd(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))?;
        let wait = start_wait();
        let socket = self.dir.join("containerd.sock");
        let child = Command::new("containerd")
            .arg("--config")
            .arg("/dev/null")
            .arg("--root")
            .arg(self.dir.join("containerd-root"))
            .arg("--state")
            .arg(self.dir.join("containerd-state"))
            .arg("--address")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        self.containerd = Some(child);
        let deadline = Instant::now() + wait;
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!("containerd made no socket within {} s", wait.as_secs());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.vm_args
            .push(format!("--containerd={}", socket.display()));
        // The VM's /tmp is an overlayfs, which overlay2 cannot stack on;
        // the image is one busybox layer, so plain copies do.
        self.vm_args.push("--storage-driver=vfs".to_owned());
        Ok(())
    }

    /// Starts dockerd on this engine's directories and waits (30 s, in the
    /// VM 600 s) until it answers.
    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))?;
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .arg(DOCKERD)
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--pidfile")
            .arg(&self.pidfile)
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
            ])
            .args(&self.vm_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd under nsenter")?;
        let wait = start_wait();
        let deadline = Instant::now() + wait;
        loop {
            let out = self.docker(&["version", "--format", "{{.Server.Version}}"]);
            if out.status.success() {
                self.version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "dockerd did not answer within {} s; {}",
                    wait.as_secs(),
                    Self::log_tail(&self.log_path(), 25)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// dockerd's (and in the VM containerd's) log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// The last `n` lines of the log at `log`, under a line naming it.
    pub fn log_tail(log: &Path, n: usize) -> String {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        format!(
            "the end of {}:\n{}",
            log.display(),
            crate::common::tail(&text, n)
        )
    }

    /// dockerd's pid, from its pid file.
    fn pid(&self) -> Option<libc::pid_t> {
        std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The engine's socket, as `DOCKER_HOST` / `--docker-host` take it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Stops dockerd (SIGTERM, as `systemctl stop docker` does) and starts
    /// it again on the same data; waits until it answers.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// SIGTERM to dockerd, SIGKILL after 15 s; returns when it is gone.
    fn stop(&self) {
        let Some(pid) = self.pid() else {
            return;
        };
        // dockerd removes its containers' links and namespaces on a clean
        // stop.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if Path::new(&format!("/proc/{pid}")).exists() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// `docker ARGS` against this engine, bounded in time: a client that
    /// has not finished within [`call_wait`] is killed, and the failed
    /// output says so, with what dockerd and containerd were doing (the end
    /// of their log and their processes' states), instead of hanging the
    /// suite.
    ///
    /// Once a call has been killed the engine is stuck: later calls fail at
    /// once (exit status 1, saying so) instead of each waiting out its
    /// limit, until [`Dockerd::recover`].
    pub fn docker(&self, args: &[&str]) -> Output {
        use std::sync::atomic::Ordering;
        let what = format!("docker {}", args.join(" "));
        if self.stuck.load(Ordering::SeqCst) {
            crate::common::trace(&format!("skip  {what}: the engine is stuck"));
            return Output {
                status: std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
                stdout: Vec::new(),
                stderr: format!(
                    "`{what}` was not run: an earlier docker call did not finish in time"
                )
                .into_bytes(),
            };
        }
        let mut cmd = Command::new(DOCKER);
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .args(args);
        crate::common::output_within(&mut cmd, call_wait(), &what, || {
            self.stuck.store(true, Ordering::SeqCst);
            self.diagnose()
        })
    }

    /// SIGSTOP to dockerd: from now on it answers nothing, as a stuck
    /// engine (to exercise [`Dockerd::recover`]).
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: signals this engine's dockerd, by its own pid file.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
    }

    /// Whether a call had to be killed since the engine (re)started.
    pub fn is_stuck(&self) -> bool {
        self.stuck.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Replaces a stuck engine with a new one: every process of the old
    /// engine is killed (dockerd, containerd, shims, runc, and the
    /// containers' own processes), its mounts and directory removed, and a
    /// fresh dockerd (with, in the VM, its containerd) started in the same
    /// network namespace with the image imported again. Starting again on
    /// the old data does not work: the new containerd waits on the dead
    /// containers' runc processes.
    pub fn recover(&mut self) -> Result<()> {
        self.kill_everything();
        let tag = format!(
            "{}-again",
            self.dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix("-docker"))
                .unwrap_or("mvnet-parity")
        );
        let fresh = Dockerd::start(&self.netns, &tag)?;
        // The old one's Drop finds nothing left to stop and removes its
        // directory.
        drop(std::mem::replace(self, fresh));
        Ok(())
    }

    /// SIGKILL to every process of this engine: those whose command line
    /// names its directory (dockerd, containerd, the shims, runc) and the
    /// containers' processes (whose root is under it); then its mounts are
    /// detached.
    fn kill_everything(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        if let Some(mut containerd) = self.containerd.take() {
            let _ = containerd.kill();
            let _ = containerd.wait();
        }
        let me = std::process::id().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let root = std::fs::read_link(entry.path().join("root")).unwrap_or_default();
            if cmdline.contains(&dir) || root.starts_with(&self.dir) {
                if let Ok(pid) = pid.parse::<libc::pid_t>() {
                    // SAFETY: signals a process of this engine, found above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::fs::remove_file(&self.pidfile);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
            .collect();
        points.sort_unstable_by_key(|m| std::cmp::Reverse(m.len()));
        for m in points {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }

    /// What the engine was doing: the end of dockerd's (and containerd's)
    /// log and the state of every docker/containerd/runc process.
    fn diagnose(&self) -> String {
        let log = Self::log_tail(&self.log_path(), 30);
        // In the VM every process and the kernel's view; on the host the
        // engine's own processes.
        let processes = if crate::common::tracing() {
            crate::common::kernel_diagnosis()
        } else {
            format!(
                "processes:\n{}",
                crate::common::processes(&["docker", "containerd", "runc"])
            )
        };
        format!("{log}\n{processes}")
    }

    /// `docker import` of a root with busybox and its applets.
    fn import_busybox(&self) -> Result<()> {
        let root = self.dir.join("image");
        std::fs::create_dir_all(root.join("bin"))?;
        std::fs::copy(BUSYBOX, root.join("bin/busybox"))?;
        for applet in ["sh", "sleep", "ip", "cat", "ping"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
        let tar = self.dir.join("image.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()?;
        if !st.success() {
            bail!("tar of the busybox root failed");
        }
        let out = self.docker(&["import", &tar.to_string_lossy(), IMAGE]);
        if !out.status.success() {
            bail!(
                "docker import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut containerd) = self.containerd.take() {
            let _ = containerd.kill();
            let _ = containerd.wait();
        }
        // containerd-shims outlive a killed dockerd; their namespaces go with
        // the lab. The exec root may hold mounts: unmount before removing.
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.join("exec"))
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
