//! Debian's Podman (4.3, CNI backend) with runc inside a lab namespace,
//! with its own storage, run root and conflist directory (through
//! CONTAINERS_CONF), and an image imported from busybox-static: for the CNI
//! tests and the control-plane bench.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use mvnet::{model::Mac, netns::NetNs};
use serde_json::{json, Value};

pub const PODMAN: &str = "/usr/bin/podman";
const BUSYBOX: &str = "/bin/busybox";
pub const IMAGE: &str = "localhost/mvnet-cni-bb:latest";

/// Podman with everything of its own under one directory; its containers
/// and mounts are removed on drop.
pub struct Podman {
    dir: PathBuf,
    netns: mvnet::netns::NetNs,
}

impl Podman {
    /// Podman in `netns`, its files under `dir` (made here, removed on
    /// drop); `plugin` (mvnet-cni) is installed as `mvnet-cni` and `mvnet`
    /// in front of the reference plugins. Writes containers.conf, imports
    /// the image.
    pub fn new(netns: &NetNs, dir: PathBuf, plugin: &Path) -> Podman {
        for (exe, package) in [
            (PODMAN, "podman"),
            ("/usr/sbin/runc", "runc"),
            (BUSYBOX, "busybox-static"),
        ] {
            assert!(
                Path::new(exe).exists(),
                "{exe} not found; install {package} (`cargo xtask setup` does)"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        for name in ["mvnet-cni", "mvnet"] {
            std::os::unix::fs::symlink(plugin, bin.join(name)).unwrap();
        }
        // default_ulimits: podman's defaults exceed this machine's hard
        // limits; runc: crun fails with hybrid cgroups.
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile=10000:10000", "nproc=1000:1000"]
[network]
network_backend = "cni"
network_config_dir = "{net}"
cni_plugin_dirs = ["{bin}", "/usr/lib/cni"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"#,
            net = dir.join("net.d").display(),
            bin = bin.display()
        );
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        let p = Podman {
            dir,
            netns: netns.clone(),
        };
        p.import_busybox();
        p
    }

    /// `podman ARGS`, to be started from a thread inside the namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(PODMAN);
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// `podman ARGS` in the namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        let cmd = self.command(args);
        self.netns
            .run(move || {
                let mut cmd = cmd;
                cmd.output().unwrap()
            })
            .unwrap()
    }

    /// `podman ARGS`, which must succeed; its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Writes the conflist `name`.
    pub fn conflist(&self, name: &str, plugins: Value) {
        let list = json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
        std::fs::write(
            self.dir.join("net.d").join(format!("{name}.conflist")),
            list.to_string(),
        )
        .unwrap();
    }

    fn import_busybox(&self) {
        let root = self.dir.join("image");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "cat", "ip", "true"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = self.dir.join("image.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success(), "tar of the busybox root failed");
        self.ok(&["import", &tar.display().to_string(), IMAGE]);
    }

    /// `podman run -d --network NET --name NAME IMAGE sleep 600`: its id.
    pub fn start(&self, network: &str, name: &str) -> String {
        self.ok(&[
            "run",
            "-d",
            "--network",
            network,
            "--name",
            name,
            IMAGE,
            "sleep",
            "600",
        ])
    }

    /// The MAC of `name`'s eth0, as the container itself sees it.
    pub fn mac(&self, name: &str) -> Mac {
        self.ok(&["exec", name, "cat", "/sys/class/net/eth0/address"])
            .parse()
            .unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Removing the containers runs the plugins' DEL (and stops runc's
        // processes); then the storage's mounts go.
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.join("runroot"))
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
