//! Crash injection: each mutating command (network create and rm, run,
//! connect, disconnect, stop, start, container rm) is killed with SIGKILL at the
//! k-th occurrence of each class of syscall it makes, by strace's fault
//! injection. Then `mvnet restore` must exit 0, the kernel must match the
//! state exactly (namespaces, links with their names, MACs, addresses and
//! state, the programs on the parent, the pins, the classifier's endpoint
//! entries, IPAM), `restore --check` must find nothing left to do, and the
//! command must retry cleanly with the same names. The same again with the
//! k-th netlink request or BPF call failed (ENOMEM) instead: the command
//! must then report the error (or succeed without the call), never panic.
use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, process::Command};

use mvnet::{
    datapath::{
        pinned::{self, PinnedMaps},
        sys,
    },
    model::State,
    netlink,
    netns::{self, NetNs},
};
use mvnet_lab::lab::{Lab, PARENT, UPSTREAM_IF};
use serde_json::Value;

use crate::common::{
    cli::{mvnet_bin, Session},
    require_root,
};

/// The syscall classes a command is killed at: netlink requests, the state
/// file's rename, pin and namespace file removal, BPF, file opens, writes
/// (state, pins, stdout), a record's write to the state journal and its
/// sync, and the namespace bind mount and unmount.
const CLASSES: &[&str] = &[
    "sendto",
    "rename",
    "unlink",
    "bpf",
    "openat",
    "write",
    "pwrite64",
    "fdatasync",
    "mount",
    "umount2",
];
/// The syscall classes whose k-th call is also failed (ENOMEM), the
/// command left to handle the error: netlink requests and BPF, where the
/// kernel's transient failures come from. The command must fail with a
/// message (or succeed, where the call was optional), never panic, and
/// leave what `restore` converges.
const ERROR_CLASSES: &[&str] = &["sendto", "bpf"];

/// What strace does at the chosen call.
#[derive(Clone, Copy, Debug)]
enum Inject {
    /// SIGKILL.
    Kill,
    /// The call fails with ENOMEM.
    Error,
}

/// Points per command and class at most, spread evenly over the
/// occurrences (first and last included).
const MAX_POINTS: usize = 11;
/// The suite must try at least this many points in total.
const MIN_POINTS: usize = 200;

/// One command under test, with the lab state it starts from.
struct Case {
    what: &'static str,
    /// Brings the lab to the state before the command (idempotent).
    setup: fn(&Fx),
    args: fn(&Fx) -> Vec<String>,
    /// Whether the command's effect is complete (it was killed after its
    /// last save), and then the error a retry gives (None: the retry
    /// succeeds anyway).
    done: fn(&Fx) -> Option<Option<String>>,
    /// Undoes the command's effect (back to what `setup` made).
    reset: fn(&Fx),
}

/// A lab, a session on it, and the container's name.
struct Fx {
    lab: Lab,
    s: Session,
    c: String,
    /// Another container on network `n`, with [`BYSTANDER_FRAMES`]
    /// counted, once made ([`Fx::ensure_bystander`]).
    bystander: std::cell::RefCell<Option<String>>,
}

/// Frames counted for the bystander, which no point may lose.
const BYSTANDER_FRAMES: u64 = 5;

impl Fx {
    fn new() -> Fx {
        let lab = Lab::new().unwrap();
        let s = Session::new(&lab);
        let c = s.name("c");
        Fx {
            lab,
            s,
            c,
            bystander: Default::default(),
        }
    }

    /// A container on network `n` (made already) beside the one under
    /// test, with frames counted: a command on `n` that fails or is killed
    /// must leave its entry and counts alone (a transient error once had a
    /// command attach an empty classifier over the root's entries).
    fn ensure_bystander(&self) {
        if self.bystander.borrow().is_some() {
            return;
        }
        let name = self.s.name("by");
        self.s.container("n", &name, &["--", "sleep", "600"]);
        let mac = crate::datapath_cp::mac_of(&self.s, &name, "n");
        let dir = crate::datapath_cp::pin_dir(&self.lab);
        let src = self.lab.mac_of(self.lab.upstream(), UPSTREAM_IF).unwrap();
        crate::datapath_cp::send(
            &PinnedMaps::open(&dir).unwrap(),
            self.lab.upstream(),
            UPSTREAM_IF,
            crate::datapath_cp::wire_hook(&dir),
            mvnet_lab::lab::frames::FrameSpec::udp4(mac, src)
                .build()
                .unwrap(),
            BYSTANDER_FRAMES,
        );
        *self.bystander.borrow_mut() = Some(name);
    }

    /// What is wrong with the bystander, if there is one: not in `stats`,
    /// or its count is not [`BYSTANDER_FRAMES`].
    fn bystander_problem(&self) -> Option<String> {
        let name = self.bystander.borrow().clone()?;
        let stats: Value = serde_json::from_str(&self.s.ok(&["stats", "--json"])).unwrap();
        let rx = stats["networks"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|n| n["endpoints"].as_array().unwrap().iter())
            .find(|e| e["container"] == name.as_str())
            .map(|e| e["rx"]["wire"]["frames"].as_u64().unwrap());
        (rx != Some(BYSTANDER_FRAMES))
            .then(|| format!("the bystander on n counts {rx:?} frames, not {BYSTANDER_FRAMES}"))
    }

    fn state(&self) -> State {
        let text = self.s.state();
        if text.is_empty() {
            return State::default();
        }
        serde_json::from_str(&text).unwrap()
    }

    fn has_network(&self, name: &str) -> bool {
        self.state().networks.values().any(|n| n.name == name)
    }

    fn container(&self) -> Option<mvnet::model::Container> {
        self.state()
            .containers
            .into_values()
            .find(|c| c.name == self.c)
    }

    fn connected(&self, net: &str) -> bool {
        let state = self.state();
        let Some(id) = state
            .networks
            .values()
            .find(|n| n.name == net)
            .map(|n| n.id.clone())
        else {
            return false;
        };
        self.container()
            .is_some_and(|c| c.endpoints.contains_key(&id))
    }

    fn ensure_network(&self, name: &str, subnet: &str) {
        if !self.has_network(name) {
            self.s.network(name, subnet, PARENT, &[]);
        }
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "network create",
            setup: |_| {},
            args: |_| {
                strs(&[
                    "network",
                    "create",
                    "--subnet=10.120.0.0/24",
                    "--policy",
                    "enforce",
                    "-o",
                    "parent=eth0",
                    "cn",
                ])
            },
            done: |f| {
                f.has_network("cn")
                    .then(|| Some("network with name cn already exists".to_owned()))
            },
            reset: |f| {
                if f.has_network("cn") {
                    f.s.ok(&["network", "rm", "cn"]);
                }
            },
        },
        Case {
            what: "network rm",
            setup: |f| f.ensure_network("rn", "10.121.0.0/24"),
            args: |_| strs(&["network", "rm", "rn"]),
            done: |f| (!f.has_network("rn")).then(|| Some("network rn not found".to_owned())),
            reset: |f| f.ensure_network("rn", "10.121.0.0/24"),
        },
        Case {
            what: "run",
            setup: |f| {
                f.ensure_network("n", "10.122.0.0/24");
                f.ensure_bystander();
            },
            args: |f| strs(&["run", "-d", "--network", "n", "--name", &f.c]),
            done: |f| {
                f.container()
                    .map(|_| Some(format!("container name {} is already in use", f.c)))
            },
            reset: |f| {
                if f.container().is_some() {
                    f.s.ok(&["container", "rm", "--force", &f.c]);
                }
            },
        },
        // The network connected (and disconnected) sorts first: the
        // command moves the default route too.
        Case {
            what: "network connect",
            setup: |f| {
                f.ensure_network("n1", "10.123.0.0/24");
                f.ensure_network("n2", "10.124.0.0/24");
                if f.container().is_none() {
                    f.s.container("n2", &f.c, &[]);
                }
            },
            args: |f| strs(&["network", "connect", "n1", &f.c]),
            done: |f| {
                f.connected("n1").then(|| {
                    Some(format!(
                        "container {} is already connected to network n1",
                        f.c
                    ))
                })
            },
            reset: |f| {
                if f.connected("n1") {
                    f.s.ok(&["network", "disconnect", "n1", &f.c]);
                }
            },
        },
        Case {
            what: "network disconnect",
            setup: |f| {
                f.ensure_network("n1", "10.125.0.0/24");
                f.ensure_network("n2", "10.126.0.0/24");
                if f.container().is_none() {
                    f.s.container("n2", &f.c, &[]);
                }
                if !f.connected("n1") {
                    f.s.ok(&["network", "connect", "n1", &f.c]);
                }
            },
            args: |f| strs(&["network", "disconnect", "n1", &f.c]),
            done: |f| {
                (!f.connected("n1"))
                    .then(|| Some(format!("container {} is not connected to network n1", f.c)))
            },
            reset: |f| {
                if !f.connected("n1") {
                    f.s.ok(&["network", "connect", "n1", &f.c]);
                }
            },
        },
        Case {
            what: "container stop",
            setup: |f| {
                f.ensure_network("n", "10.127.0.0/24");
                f.ensure_bystander();
                if f.container().is_none() {
                    f.s.container("n", &f.c, &["--", "sleep", "60"]);
                }
            },
            args: |f| strs(&["container", "stop", &f.c]),
            // Stopping a stopped container succeeds.
            done: |f| f.container().filter(|c| !c.running).map(|_| None),
            reset: |f| {
                if f.container().is_some_and(|c| !c.running) {
                    f.s.ok(&["container", "rm", &f.c]);
                }
            },
        },
        Case {
            what: "container start",
            setup: |f| {
                f.ensure_network("n", "10.129.0.0/24");
                f.ensure_bystander();
                // A command that ends at once: strace -f waits for every
                // process it traced, the started command too.
                if f.container().is_none() {
                    f.s.container("n", &f.c, &["--", "true"]);
                }
                if f.container().is_some_and(|c| c.running) {
                    f.s.ok(&["container", "stop", &f.c]);
                }
            },
            args: |f| strs(&["container", "start", &f.c]),
            // Starting a running container succeeds.
            done: |f| f.container().filter(|c| c.running).map(|_| None),
            reset: |f| {
                if f.container().is_some_and(|c| c.running) {
                    f.s.ok(&["container", "stop", &f.c]);
                }
            },
        },
        Case {
            what: "container rm",
            setup: |f| {
                f.ensure_network("n", "10.128.0.0/24");
                f.ensure_bystander();
                if f.container().is_none() {
                    f.s.container("n", &f.c, &["--", "sleep", "60"]);
                }
            },
            args: |f| strs(&["container", "rm", "--force", &f.c]),
            done: |f| {
                f.container()
                    .is_none()
                    .then(|| Some(format!("container {} not found", f.c)))
            },
            reset: |_| {},
        },
    ]
}

/// `mvnet ARGS` under strace in the lab's host namespace, killed at (or
/// failed at) the k-th syscall of `class`. Returns the exit code (None:
/// killed) and stderr.
fn strace(f: &Fx, args: &[String], class: &str, k: usize, how: Inject) -> (Option<i32>, String) {
    let inject = match how {
        Inject::Kill => "signal=SIGKILL",
        Inject::Error => "error=ENOMEM",
    };
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        &format!("trace={class}"),
    ])
    .args(["-e", &format!("inject={class}:{inject}:when={k}")])
    .arg(mvnet_bin())
    .arg("--state-dir")
    .arg(&f.s.state_dir)
    .args(args);
    let out = f.s.ns.run(move || cmd.output().unwrap()).unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How often `args` makes a syscall of `class` (run to completion).
fn occurrences(f: &Fx, args: &[String], class: &str) -> usize {
    let file = std::env::temp_dir().join(format!("{}-strace", f.lab.id()));
    let bin = mvnet_bin();
    let state = f.s.state_dir.clone();
    let args = args.to_vec();
    let class = class.to_owned();
    let path = file.clone();
    let out =
        f.s.ns
            .run(move || {
                Command::new("strace")
                    .args(["-f", "-qq", "-e", &format!("trace={class}"), "-o"])
                    .arg(&path)
                    .arg(bin)
                    .arg("--state-dir")
                    .arg(state)
                    .args(&args)
                    .output()
                    .unwrap()
            })
            .unwrap();
    assert!(
        out.status.success(),
        "counting run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = std::fs::read_to_string(&file).unwrap().lines().count();
    let _ = std::fs::remove_file(&file);
    n
}

/// The points k of a class with `n` occurrences.
fn points(n: usize) -> Vec<usize> {
    crate::common::spread(n, MAX_POINTS)
}

/// A link as `ip -j addr` shows it.
struct IfInfo {
    name: String,
    mac: String,
    up: bool,
    /// Addresses with their prefix length (not link-local ones).
    addrs: BTreeSet<(IpAddr, u8)>,
}

/// `ip -j addr` in `ns`.
fn ip_addrs(ns: &NetNs) -> Vec<IfInfo> {
    let out = ns
        .run(|| Command::new("ip").args(["-j", "addr"]).output().unwrap())
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .map(|links| {
            links
                .iter()
                .map(|l| {
                    let up = l["flags"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|x| x == "UP"));
                    let addrs = l["addr_info"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter(|i| i["scope"] != "link")
                                .filter_map(|i| {
                                    Some((
                                        i["local"].as_str()?.parse().ok()?,
                                        i["prefixlen"].as_u64()? as u8,
                                    ))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    IfInfo {
                        name: l["ifname"].as_str().unwrap_or("").to_owned(),
                        mac: l["address"].as_str().unwrap_or("").to_owned(),
                        up,
                        addrs,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The programs attached to the parent: the XDP programs bpftool lists,
/// and which of the pinned tcx links the kernel says are attached to the
/// parent's ifindex (this bpftool does not list tcx).
fn programs_on_parent(f: &Fx, dir: &std::path::Path) -> (usize, Vec<&'static str>) {
    use std::os::fd::AsFd as _;
    let out =
        f.s.ns
            .run(|| {
                Command::new("bpftool")
                    .args(["-j", "net", "show", "dev", PARENT])
                    .output()
                    .unwrap()
            })
            .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let xdp = v[0]["xdp"].as_array().map_or(0, |a| a.len());
    let ifindex = netlink::run(Some(f.lab.host()), |nl| async move {
        nl.require_link(PARENT).await
    })
    .unwrap()
    .index;
    let tc = [pinned::LINK_TC_INGRESS, pinned::LINK_TC_EGRESS]
        .into_iter()
        .filter(|pin| {
            sys::obj_get(&dir.join(pin))
                .and_then(|fd| sys::link_info(fd.as_fd()))
                .is_ok_and(|i| i.kind == sys::BPF_LINK_TYPE_TCX && i.ifindex == ifindex)
        })
        .collect();
    (xdp, tc)
}

/// Everything in which the kernel and the state disagree.
fn inconsistencies(f: &Fx) -> Vec<String> {
    let mut bad = Vec::new();
    let state = f.state();
    if !state.pending.is_empty() {
        bad.push(format!("pending intents left: {:?}", state.pending));
    }
    // The host namespace holds the parent and nothing of ours.
    let host = f.s.links();
    if host != ["eth0", "lo"] {
        bad.push(format!("links in the host namespace: {host:?}"));
    }
    // Namespaces: exactly those of running containers, all real.
    let lab_ns = [format!("{}-up", f.lab.id()), format!("{}-host", f.lab.id())];
    let prefix = format!("{}-", f.lab.id());
    let listed: BTreeSet<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix) && !lab_ns.contains(n))
        .collect();
    let running: BTreeSet<String> = state
        .containers
        .values()
        .filter(|c| c.running && c.netns_owned)
        .map(|c| c.name.clone())
        .collect();
    if listed != running {
        bad.push(format!(
            "namespaces {listed:?} but running containers {running:?}"
        ));
    }
    for name in &listed {
        let path = PathBuf::from(netns::NETNS_RUN_DIR).join(name);
        if !netns::is_namespace(&path) {
            bad.push(format!(
                "{} is a stale file, not a namespace",
                path.display()
            ));
        }
    }
    // Each container's links, MACs, addresses and state.
    for c in state.containers.values() {
        if !c.running {
            if !c.endpoints.is_empty() {
                bad.push(format!("stopped container {} keeps endpoints", c.name));
            }
            continue;
        }
        if !netns::is_namespace(&c.netns) {
            continue;
        }
        let links = ip_addrs(&NetNs::from_path(&c.netns));
        let names: BTreeSet<&str> = links.iter().map(|l| l.name.as_str()).collect();
        let want: BTreeSet<&str> = std::iter::once("lo")
            .chain(c.endpoints.values().map(|e| e.ifname.as_str()))
            .collect();
        if names != want {
            bad.push(format!(
                "container {} has links {names:?}, wants {want:?}",
                c.name
            ));
        }
        // The default route: via the gateway of the network that sorts
        // first (each network here has one, .1 of its subnet).
        let first = c
            .endpoints
            .values()
            .map(|ep| (&state.networks[&ep.network_id], ep))
            .min_by(|a, b| a.0.name.cmp(&b.0.name));
        let want_route = first.map(|(net, ep)| {
            format!(
                "default via {} dev {}",
                net.pools[0].config.gateway.unwrap(),
                ep.ifname
            )
        });
        let route = default_route(&c.netns);
        if route != want_route {
            bad.push(format!(
                "container {}: default route {route:?}, wants {want_route:?}",
                c.name
            ));
        }
        let marks = netlink::run(Some(&NetNs::from_path(&c.netns)), |nl| async move {
            nl.links().await
        })
        .unwrap_or_default();
        for ep in c.endpoints.values() {
            let Some(l) = links.iter().find(|l| l.name == ep.ifname) else {
                continue;
            };
            let mark = mvnet::controller::endpoint::mark(ep);
            let alias = marks
                .iter()
                .find(|m| m.name == ep.ifname)
                .and_then(|m| m.alias.clone());
            if alias.as_deref() != Some(mark.as_str()) {
                bad.push(format!(
                    "container {} link {}: alias {alias:?}, wants {mark}",
                    c.name, l.name
                ));
            }
            let net = &state.networks[&ep.network_id];
            let mac = ep.mac.to_string();
            let addrs: BTreeSet<(IpAddr, u8)> = ep
                .addresses()
                .map(|a| {
                    let p = net
                        .pools
                        .iter()
                        .find(|p| p.config.subnet.contains(a))
                        .unwrap();
                    (a, p.config.subnet.prefix())
                })
                .collect();
            if l.mac != mac || !l.up || l.addrs != addrs {
                bad.push(format!(
                    "container {} link {}: MAC {} up {} addresses {:?}; wants MAC {mac}, up, {addrs:?}",
                    c.name, l.name, l.mac, l.up, l.addrs
                ));
            }
        }
    }
    // IPAM: allocated = the endpoints' addresses.
    for net in state.networks.values() {
        let used: BTreeSet<IpAddr> = state
            .containers
            .values()
            .flat_map(|c| c.endpoints.values())
            .filter(|e| e.network_id == net.id)
            .flat_map(|e| e.addresses().collect::<Vec<_>>())
            .collect();
        let allocated: BTreeSet<IpAddr> = net.pools.iter().flat_map(|p| p.allocated()).collect();
        if used != allocated {
            bad.push(format!(
                "network {}: IPAM holds {allocated:?}, endpoints have {used:?}",
                net.name
            ));
        }
    }
    // The classifier: attached to the parent (tcx ingress and egress)
    // exactly while a network uses it, its pins likewise, and its
    // entries exactly the live endpoints.
    let ino = pinned::netns_inode(Some(f.lab.host())).unwrap();
    let pins: Vec<String> = std::fs::read_dir(pinned::PIN_ROOT)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{ino}-")))
                .collect()
        })
        .unwrap_or_default();
    let dir = pinned::pin_dir(ino, PARENT);
    let (xdp, tc) = programs_on_parent(f, &dir);
    if state.networks.is_empty() {
        if !pins.is_empty() || xdp != 0 || !tc.is_empty() {
            bad.push(format!(
                "no network, but pins {pins:?}, {xdp} XDP program(s), TC {tc:?}"
            ));
        }
        return bad;
    }
    // `--xdp-mode auto` on the lab's veth parent: TC alone, no XDP program.
    if pins != [format!("{ino}-{PARENT}")]
        || xdp != 0
        || tc != [pinned::LINK_TC_INGRESS, pinned::LINK_TC_EGRESS]
    {
        bad.push(format!(
            "networks, but pins {pins:?}, {xdp} XDP program(s), TC {tc:?}"
        ));
        return bad;
    }
    let table = match PinnedMaps::open(&dir) {
        Ok(maps) => maps.endpoints_ro().unwrap().entries().unwrap(),
        Err(e) => {
            bad.push(format!("pinned maps: {e}"));
            return bad;
        }
    };
    let entries: BTreeSet<([u8; 6], u16)> = table.iter().map(|(k, _)| (k.mac, k.vlan)).collect();
    // Each endpoint on a slot of its own (its counters and device checks).
    let slots: BTreeSet<u32> = table.iter().map(|(_, v)| v.slot).collect();
    if slots.len() != table.len() {
        bad.push(format!("classifier entries share slots: {table:?}"));
    }
    let want: BTreeSet<([u8; 6], u16)> = state
        .containers
        .values()
        .filter(|c| c.running)
        .flat_map(|c| c.endpoints.values())
        .map(|e| (e.mac.octets(), 0))
        .collect();
    if entries != want {
        bad.push(format!(
            "classifier entries {entries:02x?}, endpoints {want:02x?}"
        ));
    }
    bad
}

/// `ip route show default` in the named namespace at `path`
/// (/run/netns/NAME), its lines joined (None: no default route).
fn default_route(path: &std::path::Path) -> Option<String> {
    let name = path.file_name().unwrap().to_str().unwrap();
    let out = Command::new("ip")
        .args(["-n", name, "route", "show", "default"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    match lines[..] {
        [] => None,
        _ => Some(lines.join("; ")),
    }
}

/// Runs one point; returns its inconsistencies (empty: converged and the
/// retry behaved).
fn point(f: &Fx, case: &Case, class: &str, k: usize, how: Inject) -> Vec<String> {
    let args = (case.args)(f);
    let (code, stderr) = strace(f, &args, class, k, how);
    let mut bad = Vec::new();
    if let Inject::Error = how {
        // An error the command reports, or one it could do without.
        match code {
            Some(0) => {}
            // 125: `run`'s own failure, as Docker's CLI.
            Some(1 | 125) if stderr.contains("mvnet: ") => {}
            _ => bad.push(format!(
                "a failed {class} call should give an error message, exit 1: exit {code:?}: {stderr}"
            )),
        }
    }
    let restore = f.s.run(&["restore"]);
    if !restore.status.success() {
        bad.push(format!(
            "restore exited {:?}: {}",
            restore.status.code(),
            String::from_utf8_lossy(&restore.stderr)
        ));
    }
    bad.extend(inconsistencies(f));
    let check = f.s.run(&["restore", "--check"]);
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    if !check.status.success() || said != "nothing to do: the kernel matches the state\n" {
        bad.push(format!("restore is not idempotent: --check says {said:?}"));
    }
    // The retry, with the same names.
    let done = (case.done)(f);
    let retry =
        f.s.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&retry.stderr).into_owned();
    match done {
        Some(Some(want)) => {
            if retry.status.success() || !err.contains(&want) {
                bad.push(format!(
                    "the command had finished; its retry should fail with {want:?}, got {:?}: {err}",
                    retry.status.code()
                ));
            }
        }
        _ => {
            if !retry.status.success() {
                bad.push(format!("retry failed: {err}"));
            }
        }
    }
    if bad.is_empty() {
        bad.extend(
            inconsistencies(f)
                .into_iter()
                .map(|e| format!("after the retry: {e}")),
        );
    }
    bad.extend(f.bystander_problem());
    if !bad.is_empty() {
        eprintln!(
            "crash: {} {} at {class} #{k} (exit {code:?}): {} inconsistencies",
            case.what,
            match how {
                Inject::Kill => "killed",
                Inject::Error => "failed",
            },
            bad.len()
        );
        for b in &bad {
            eprintln!("    {b}");
        }
    }
    (case.reset)(f);
    (case.setup)(f);
    bad
}

/// Runs every point of `case` in a lab of its own; returns (points,
/// inconsistent points).
fn run_case(case: &Case) -> (usize, usize) {
    let f = Fx::new();
    (case.setup)(&f);
    let args = (case.args)(&f);
    let (mut tried, mut inconsistent) = (0, 0);
    let runs = CLASSES
        .iter()
        .map(|c| (c, Inject::Kill))
        .chain(ERROR_CLASSES.iter().map(|c| (c, Inject::Error)));
    for (class, how) in runs {
        let n = occurrences(&f, &args, class);
        (case.reset)(&f);
        (case.setup)(&f);
        for k in points(n) {
            tried += 1;
            if !point(&f, case, class, k, how).is_empty() {
                inconsistent += 1;
            }
        }
    }
    eprintln!(
        "crash: {}: {tried} points, {inconsistent} inconsistent",
        case.what
    );
    (case.reset)(&f);
    let _ = f.s.run(&["container", "rm", "--force", &f.c]);
    if let Some(b) = f.bystander.borrow().as_deref() {
        f.s.ok(&["container", "rm", "--force", b]);
    }
    for n in f.state().networks.values() {
        f.s.ok(&["network", "rm", &n.name]);
    }
    (tried, inconsistent)
}

#[test]
fn crash_injection_converges_at_every_point() {
    require_root();
    // One lab per command, the commands side by side (most of a point's
    // time is spent waiting for the kernel), the points of one in turn.
    let cases = cases();
    let results: Vec<(usize, usize)> = std::thread::scope(|sc| {
        let handles: Vec<_> = cases
            .iter()
            .map(|case| sc.spawn(move || run_case(case)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let tried: usize = results.iter().map(|r| r.0).sum();
    let inconsistent: usize = results.iter().map(|r| r.1).sum();
    eprintln!("crash injection: {tried} points tried, {inconsistent} inconsistent");
    assert!(
        tried >= MIN_POINTS,
        "only {tried} points tried; want at least {MIN_POINTS}"
    );
    assert_eq!(
        inconsistent, 0,
        "{inconsistent} of {tried} points left inconsistencies"
    );
}
