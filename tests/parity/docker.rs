//! Debian's Docker engine (docker.io, 20.10) inside a lab's host namespace,
//! with its own data root, exec root, socket and pid file in a temp dir, and
//! a busybox image imported from a tarball (no registry).
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
/// The image every Docker container of the suite runs.
pub const IMAGE: &str = "mvnet-parity-bb:latest";
/// Options of every `docker run`: no AppArmor profile (the VM's kernel has
/// AppArmor on but no `apparmor_parser` to load Docker's; the host's has
/// it off, where this changes nothing).
pub const RUN_OPTIONS: &[&str] = &["--security-opt", "apparmor=unconfined"];

/// A running dockerd; stopped by its pid file on drop (also on panic).
pub struct Dockerd {
    dir: PathBuf,
    socket: PathBuf,
    pidfile: PathBuf,
    /// The containerd the suite started (in the VM).
    containerd: Option<std::process::Child>,
    pub version: String,
}

impl Dockerd {
    /// Starts dockerd in the network namespace at `netns` and waits (at
    /// most 30 s) until it answers.
    pub fn start(netns: &Path, tag: &str) -> Result<Dockerd> {
        for exe in [DOCKERD, DOCKER, BUSYBOX] {
            if !Path::new(exe).exists() {
                bail!(
                    "{exe} is missing: the parity suite needs Debian's docker.io and \
                     busybox-static; install them with `cargo xtask setup` \
                     (or apt-get install docker.io busybox-static)"
                );
            }
        }
        let dir = std::env::temp_dir().join(format!("{tag}-docker"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let d = Dockerd {
            socket: dir.join("docker.sock"),
            pidfile: dir.join("docker.pid"),
            containerd: None,
            dir,
            version: String::new(),
        };
        let log = std::fs::File::create(d.dir.join("dockerd.log"))?;
        let mut d = d;
        // Under the VM's software emulation dockerd and its containerd take
        // minutes to start; dockerd waits less than that for a containerd
        // it starts itself, so in the VM the suite starts containerd first.
        let in_vm = std::env::var_os("MVNET_IN_VM").is_some();
        let wait = Duration::from_secs(if in_vm { 600 } else { 30 });
        let mut vm_args = Vec::new();
        if in_vm {
            let socket = d.dir.join("containerd.sock");
            let child = Command::new("containerd")
                .arg("--config")
                .arg("/dev/null")
                .arg("--root")
                .arg(d.dir.join("containerd-root"))
                .arg("--state")
                .arg(d.dir.join("containerd-state"))
                .arg("--address")
                .arg(&socket)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log.try_clone()?)
                .spawn()
                .context("starting containerd")?;
            d.containerd = Some(child);
            let deadline = Instant::now() + wait;
            while !socket.exists() {
                if Instant::now() > deadline {
                    bail!("containerd made no socket within {} s", wait.as_secs());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            vm_args.push(format!("--containerd={}", socket.display()));
            // The VM's /tmp is an overlayfs, which overlay2 cannot stack
            // on; the image is one busybox layer, so plain copies do.
            vm_args.push("--storage-driver=vfs".to_owned());
        }
        Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg(DOCKERD)
            .arg("--data-root")
            .arg(d.dir.join("data"))
            .arg("--exec-root")
            .arg(d.dir.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", d.socket.display()))
            .arg("--pidfile")
            .arg(&d.pidfile)
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
            ])
            .args(&vm_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd under nsenter")?;
        let deadline = Instant::now() + wait;
        loop {
            let out = d.docker(&["version", "--format", "{{.Server.Version}}"]);
            if out.status.success() {
                d.version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "dockerd did not answer within {} s; the end of its log ({}):\n{}",
                    wait.as_secs(),
                    d.dir.join("dockerd.log").display(),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        d.import_busybox()?;
        Ok(d)
    }

    /// `docker ARGS` against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running /usr/bin/docker")
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
        self.stop_dockerd();
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

impl Dockerd {
    /// SIGTERM to dockerd (by its pid file), SIGKILL after 15 s.
    fn stop_dockerd(&self) {
        let Some(pid) = std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            return;
        };
        // SIGTERM, then SIGKILL after 15 s: dockerd removes its containers'
        // links and namespaces on a clean stop.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if Path::new(&format!("/proc/{pid}")).exists() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
