//! A real CNI runtime: Debian's Podman (4.3, CNI backend) with runc, run
//! inside the lab's host namespace with its own storage, run root and
//! conflist directory (through CONTAINERS_CONF), an image imported from a
//! busybox-static tarball. `podman run --network` calls the reference
//! macvlan plugin and mvnet-cni (chained, or standalone as `mvnet`);
//! mvnet then counts and verifies those containers exactly, and
//! `podman rm` takes them out of its table.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use mvnet::model::Mac;
use serde_json::{json, Value};

use crate::{
    cni::{Harness, NET},
    common::cli::cni_bin,
};

pub const PODMAN: &str = "/usr/bin/podman";
const BUSYBOX: &str = "/bin/busybox";
const IMAGE: &str = "localhost/mvnet-cni-bb:latest";

/// Podman with everything of its own under one directory; its containers
/// and mounts are removed on drop.
pub struct Podman {
    dir: PathBuf,
    netns: mvnet::netns::NetNs,
}

impl Podman {
    /// Writes containers.conf and the plugin directory (mvnet-cni as
    /// `mvnet-cni` and `mvnet`), imports the image.
    pub fn new(h: &Harness) -> Podman {
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
        let dir = std::env::temp_dir().join(format!("{}-podman", h.lab.id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        for name in ["mvnet-cni", "mvnet"] {
            std::os::unix::fs::symlink(cni_bin(), bin.join(name)).unwrap();
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
            netns: h.lab.host().clone(),
        };
        p.import_busybox();
        p
    }

    /// `podman ARGS` in the lab's host namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut full: Vec<String> = [
            "--root",
            &self.dir.join("root").display().to_string(),
            "--runroot",
            &self.dir.join("runroot").display().to_string(),
            "--tmpdir",
            &self.dir.join("tmp").display().to_string(),
            "--storage-driver",
            "vfs",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        full.extend(args.iter().map(|s| s.to_string()));
        let conf = self.dir.join("containers.conf");
        self.netns
            .run(move || {
                Command::new(PODMAN)
                    .env("CONTAINERS_CONF", conf)
                    .args(full)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap()
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
        for applet in ["sh", "sleep", "cat", "ip"] {
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

/// Two containers on `network`: counted exactly, verified, then removed
/// from mvnet's table by `podman rm`.
fn count_verify_remove(h: &Harness, p: &Podman, network: &str) {
    let names: Vec<String> = ["a", "b"]
        .iter()
        .map(|n| format!("{}-{network}-{n}", h.lab.id()))
        .collect();
    let ids: Vec<String> = names.iter().map(|n| p.start(network, n)).collect();
    let macs: Vec<Mac> = names.iter().map(|n| p.mac(n)).collect();
    let mut want: Vec<(String, String)> = ids
        .iter()
        .zip(&macs)
        .map(|(id, m)| (id.clone(), m.to_string()))
        .collect();
    want.sort();
    assert_eq!(h.endpoints(), want);
    assert_eq!(h.table_len(), 2);
    // Shown with the runtime's name (podman passes it as K8S_POD_NAME).
    let doc: Value = serde_json::from_str(&h.s.ok(&["stats", "--json"])).unwrap();
    let shown: Vec<&str> = doc["networks"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["container"].as_str().unwrap())
        .collect();
    for n in &names {
        assert!(
            shown.iter().any(|s| s.ends_with(n.as_str())),
            "{n} not in {shown:?}"
        );
    }
    h.send_to(macs[0], 41);
    h.send_to(macs[1], 7);
    assert_eq!(h.rx_wire(&ids[0]), 41);
    assert_eq!(h.rx_wire(&ids[1]), 7);
    h.s.ok(&["verify"]);

    p.ok(&["rm", "-f", "-t", "0", &names[0]]);
    assert_eq!(h.endpoints(), vec![(ids[1].clone(), macs[1].to_string())]);
    assert_eq!(h.table_len(), 1);
    p.ok(&["rm", "-f", "-t", "0", &names[1]]);
    assert_eq!(h.endpoints(), vec![]);
    assert_eq!(h.table_len(), 0);
}

#[test]
fn podman_chained_containers_are_counted_verified_and_removed() {
    let h = Harness::new();
    let p = Podman::new(&h);
    p.conflist(
        NET,
        json!([
            {"type": "macvlan", "master": "eth0", "ipam": h.ipam("10.65.0.0/24")},
            {"type": "mvnet-cni", "stateDir": h.s.state_dir}
        ]),
    );
    count_verify_remove(&h, &p, NET);
}

#[test]
fn podman_standalone_containers_are_counted_verified_and_removed() {
    let h = Harness::new();
    let p = Podman::new(&h);
    p.conflist(
        NET,
        json!([
            {"type": "mvnet", "master": "eth0", "mode": "bridge",
             "stateDir": h.s.state_dir, "ipam": h.ipam("10.66.0.0/24")}
        ]),
    );
    count_verify_remove(&h, &p, NET);
}
