//! The two engines under comparison, driven by the same Docker-shaped
//! command lines: Docker (through its CLI) and mvnet (its binary), each in
//! its own lab.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Output},
};

use mvnet_lab::lab::Lab;
use serde_json::Value;

use crate::{common::cli::Session, docker::Dockerd};

/// Parents of every lab: `eth0` ⇄ `wire0` and `eth1` ⇄ `wire1` (Docker
/// 20.10 takes one network per parent, so two networks need two).
pub const PARENTS: [(&str, &str); 2] = [("eth0", "wire0"), ("eth1", "wire1")];

pub enum Kind {
    Docker(Dockerd),
    Mvnet(Session),
}

pub struct Engine {
    /// "docker" or "mvnet", for messages.
    pub name: &'static str,
    pub lab: Lab,
    pub kind: Kind,
    /// The parents' MACs as the lab made them.
    pub parent_macs: BTreeMap<String, String>,
}

/// What a command did.
pub struct Outcome {
    pub ok: bool,
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Outcome {
    fn from(o: Output) -> Outcome {
        Outcome {
            ok: o.status.success(),
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("running ip")
}

impl Engine {
    pub fn new(name: &'static str, lab: Lab, kind: Kind) -> Engine {
        Engine {
            name,
            lab,
            kind,
            parent_macs: BTreeMap::new(),
        }
    }

    fn host_name(&self) -> String {
        self.lab
            .host()
            .name()
            .expect("named lab namespace")
            .to_owned()
    }

    /// Deletes and recreates the parents, so each scenario starts from
    /// fresh links (passthru may change a parent's MAC).
    pub fn reset_parents(&mut self) {
        let host = self.host_name();
        let up = self.lab.upstream().name().unwrap().to_owned();
        self.parent_macs.clear();
        for (parent, wire) in PARENTS {
            let _ = ip(&["-n", &host, "link", "del", parent]);
            let out = ip(&[
                "-n", &host, "link", "add", parent, "type", "veth", "peer", "name", wire, "netns",
                &up,
            ]);
            assert!(
                out.status.success(),
                "{}: creating {parent} in {host}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(ip(&["-n", &host, "link", "set", parent, "up"])
                .status
                .success());
            assert!(ip(&["-n", &up, "link", "set", wire, "up"]).status.success());
            let mac = self.lab.mac_of(self.lab.host(), parent).unwrap();
            self.parent_macs.insert(
                parent.to_owned(),
                mac.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            );
        }
    }

    /// The engine's name for the scenario's container `short`.
    pub fn container_name(&self, short: &str) -> String {
        match &self.kind {
            Kind::Docker(_) => short.to_owned(),
            Kind::Mvnet(s) => s.name(short),
        }
    }

    /// Runs a Docker-shaped command line; `%NAME` is a container name.
    pub fn cmd(&self, argv: &[&str]) -> Outcome {
        let argv: Vec<String> = argv
            .iter()
            .map(|a| match a.strip_prefix('%') {
                Some(short) => self.container_name(short),
                None => (*a).to_owned(),
            })
            .collect();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        match &self.kind {
            Kind::Docker(d) if argv.starts_with(&["network", "create"]) => {
                docker_network_create(d, &argv)
            }
            Kind::Docker(d) => d.docker(&argv).into(),
            Kind::Mvnet(s) => s.run(&argv).into(),
        }
    }

    /// `run` a detached container `short` with `args` (network, addresses).
    pub fn run(&self, short: &str, args: &[&str]) -> Outcome {
        let name = format!("%{short}");
        let mut argv = vec!["run", "-d", "--name", &name];
        argv.extend_from_slice(args);
        if let Kind::Docker(_) = self.kind {
            argv.extend_from_slice(crate::docker::RUN_OPTIONS);
            argv.extend_from_slice(&["-it", crate::docker::IMAGE, "/bin/sh"]);
        }
        self.cmd(&argv)
    }

    /// `run --name short ARGS` with the command `argv`, in the foreground
    /// unless ARGS has `-d`.
    pub fn run_command(&self, short: &str, args: &[&str], argv: &[&str]) -> Outcome {
        let name = format!("%{short}");
        let mut all = vec!["run", "--name", &name];
        all.extend_from_slice(args);
        match self.kind {
            Kind::Docker(_) => {
                all.extend_from_slice(crate::docker::RUN_OPTIONS);
                all.push(crate::docker::IMAGE)
            }
            Kind::Mvnet(_) => all.push("--"),
        }
        all.extend_from_slice(argv);
        self.cmd(&all)
    }

    /// `WHAT inspect NAME`'s one object, or None when it does not exist.
    pub fn inspect(&self, what: &str, name: &str) -> Option<Value> {
        let out = self.cmd(&[what, "inspect", name]);
        if !out.ok {
            return None;
        }
        let v: Value = serde_json::from_str(&out.stdout).expect("inspect JSON");
        Some(v[0].clone())
    }

    /// The network namespace of a running container.
    pub fn netns_of(&self, short: &str, inspect: &Value) -> Option<PathBuf> {
        let path: PathBuf = match &self.kind {
            Kind::Docker(_) => match inspect["State"]["Pid"].as_u64() {
                Some(pid) if pid > 0 => format!("/proc/{pid}/ns/net").into(),
                _ => return None,
            },
            Kind::Mvnet(s) => format!("/run/netns/{}", s.name(short)).into(),
        };
        path.exists().then_some(path)
    }

    /// Names of the links in the lab's host namespace.
    pub fn host_links(&self) -> Vec<String> {
        let v: Value =
            serde_json::from_slice(&ip(&["-n", &self.host_name(), "-j", "link", "show"]).stdout)
                .unwrap();
        let mut names: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l["ifname"].as_str().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names
    }

    /// Everything a refused command must leave as it was: the engine's
    /// networks, containers and namespaces, and the host namespace's links.
    pub fn snapshot(&self) -> String {
        let links = self.host_links().join(",");
        match &self.kind {
            Kind::Docker(d) => {
                let nets = Outcome::from(d.docker(&["network", "ls", "--format", "{{.Name}}"]));
                // Running containers only: a refused `docker run` leaves a
                // container in state Created, which holds no link, address
                // or namespace (docker run = create + start). Docker's
                // namespace files under its exec root are collected lazily,
                // so they are not a reliable measure; the running
                // containers are.
                let ctrs = Outcome::from(d.docker(&["ps", "--format", "{{.Names}}"]));
                format!(
                    "links [{links}] networks [{}] containers [{}]",
                    sorted_lines(&nets.stdout),
                    sorted_lines(&ctrs.stdout),
                )
            }
            Kind::Mvnet(s) => {
                let mine = format!("{}-", self.lab.id());
                let nss: Vec<String> = mvnet::netns::list()
                    .into_iter()
                    .filter(|n| {
                        n.starts_with(&mine) && !n.ends_with("-host") && !n.ends_with("-up")
                    })
                    .collect();
                format!(
                    "links [{links}] state [{}] namespaces [{}]",
                    s.state(),
                    nss.join(",")
                )
            }
        }
    }

    /// What is left of the engine's own objects: networks and containers
    /// besides Docker's built-in ones, and for mvnet the container
    /// namespaces and the classifier's pins of the lab's parents. "none"
    /// after a scenario's cleanup.
    pub fn leftovers(&self) -> String {
        let mut left: Vec<String> = Vec::new();
        match &self.kind {
            Kind::Docker(d) => {
                let nets = Outcome::from(d.docker(&["network", "ls", "--format", "{{.Name}}"]));
                left.extend(
                    nets.stdout
                        .lines()
                        .filter(|n| !["host", "none"].contains(n))
                        .map(|n| format!("network {n}")),
                );
                let ctrs = Outcome::from(d.docker(&["ps", "-a", "--format", "{{.Names}}"]));
                left.extend(ctrs.stdout.lines().map(|c| format!("container {c}")));
            }
            Kind::Mvnet(s) => {
                let state: Value = serde_json::from_str(&s.state()).unwrap_or_default();
                for kind in ["networks", "containers"] {
                    for v in state[kind].as_object().into_iter().flat_map(|m| m.values()) {
                        left.push(format!("{kind} {}", v["name"].as_str().unwrap_or("?")));
                    }
                }
                let mine = format!("{}-", self.lab.id());
                left.extend(
                    mvnet::netns::list()
                        .into_iter()
                        .filter(|n| {
                            n.starts_with(&mine) && !n.ends_with("-host") && !n.ends_with("-up")
                        })
                        .map(|n| format!("namespace {n}")),
                );
                let ino = std::fs::metadata(self.lab.host().path())
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                    .unwrap_or(0);
                left.extend(
                    std::fs::read_dir("/sys/fs/bpf/mvnet")
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.starts_with(&format!("{ino}-")))
                        .map(|n| format!("pins /sys/fs/bpf/mvnet/{n}")),
                );
            }
        }
        if left.is_empty() {
            "none".into()
        } else {
            left.join(", ")
        }
    }

    /// Whether this is Docker and a call to it had to be killed.
    pub fn is_stuck(&self) -> bool {
        matches!(&self.kind, Kind::Docker(d) if d.is_stuck())
    }

    /// Removes the scenario's containers and networks (whatever exists).
    pub fn cleanup(&self, containers: &[&str], networks: &[&str]) {
        for c in containers {
            let _ = self.cmd(&["container", "rm", "-f", &format!("%{c}")]);
        }
        for n in networks {
            let _ = self.cmd(&["network", "rm", n]);
        }
    }
}

fn sorted_lines(s: &str) -> String {
    let mut v: Vec<&str> = s.lines().filter(|l| !l.is_empty()).collect();
    v.sort();
    v.join(",")
}

/// `docker network create` with the subnets in command-line order.
///
/// Docker 20.10's CLI builds IPAM.Config by iterating a Go map
/// (docker/cli `consolidateIpam`), so with several subnets their order is
/// random, and the order decides which subnet a container without --ip gets
/// its address from. mvnet keeps the command line's order; to compare the
/// two deterministically, the network is recreated (at most 40 times) until
/// Docker's order of each family's subnets is the command line's.
fn docker_network_create(d: &Dockerd, argv: &[&str]) -> Outcome {
    let name = argv[argv.len() - 1];
    let wanted: Vec<&str> = argv
        .windows(2)
        .filter(|w| w[0] == "--subnet")
        .map(|w| w[1])
        .chain(argv.iter().filter_map(|a| a.strip_prefix("--subnet=")))
        .collect();
    let family_order = |subnets: &[String]| -> (Vec<String>, Vec<String>) {
        subnets.iter().cloned().partition(|s| !s.contains(':'))
    };
    let want = family_order(&wanted.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let mut out: Outcome = d.docker(argv).into();
    for _ in 0..40 {
        if !out.ok || wanted.len() < 2 {
            break;
        }
        let inspect = d.docker(&["network", "inspect", name]);
        let v: Value = serde_json::from_slice(&inspect.stdout).unwrap_or_default();
        let got: Vec<String> = v[0]["IPAM"]["Config"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["Subnet"].as_str().unwrap_or_default().to_owned())
            .collect();
        if family_order(&got) == want {
            break;
        }
        let _ = d.docker(&["network", "rm", name]);
        out = d.docker(argv).into();
    }
    out
}
