//! `mvnet docker sync|watch` against Debian's real Docker engine (20.10),
//! started by each test in its own lab (tests/common/docker.rs): Docker's
//! own macvlan driver makes the links, mvnet counts, verifies and enforces.
//! Run by `cargo xtask test` after the parity suite (as root):
//! `cargo test -p macvlan-tests --test docker [-- FILTER]`.
#[path = "../common/mod.rs"]
mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use macvlan_common::Hook;
use mvnet::{
    datapath::pinned::{self, PinnedMaps},
    netns::NetNs,
};
use mvnet_lab::lab::{
    frames::FrameSpec,
    wire::{self, SendPlan},
    Lab, PARENT, UPSTREAM_IF,
};
use serde_json::Value;

use common::{
    cli::{mvnet_bin, Session},
    docker::{add_parent, Dockerd, IMAGE},
    require_root,
};

/// A lab with a Docker engine in its host namespace and an mvnet session
/// (state directory) there.
struct Env {
    // Dropped in this order: mvnet's state, the engine, then the lab.
    s: Session,
    d: Dockerd,
    lab: Lab,
}

impl Env {
    fn new() -> Env {
        require_root();
        let lab = Lab::new().unwrap();
        let d = Dockerd::start(lab.host().path(), lab.id()).unwrap();
        let s = Session::new(&lab);
        Env { s, d, lab }
    }

    /// `docker ARGS`, asserting success; its stdout.
    fn docker(&self, args: &[&str]) -> String {
        let out = self.d.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Docker's macvlan network `name` on the lab's parent.
    fn network(&self, name: &str, subnet: &str) -> String {
        self.network_on(name, subnet, PARENT)
    }

    /// Docker's macvlan network `name` on `parent`.
    fn network_on(&self, name: &str, subnet: &str, parent: &str) -> String {
        self.docker(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet",
            subnet,
            "-o",
            &format!("parent={parent}"),
            name,
        ])
    }

    /// `docker run -d` of a sleeping busybox on `net`; its MAC there.
    fn run(&self, name: &str, net: &str, extra: &[&str]) -> [u8; 6] {
        let mut args = vec!["run", "-d", "--name", name, "--network", net];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sleep", "3600"]);
        self.docker(&args);
        self.mac(name, net)
    }

    fn mac(&self, name: &str, net: &str) -> [u8; 6] {
        let f = format!("{{{{(index .NetworkSettings.Networks \"{net}\").MacAddress}}}}");
        self.docker(&["inspect", "-f", &f, name])
            .parse::<mvnet::model::Mac>()
            .unwrap()
            .octets()
    }

    /// The endpoint's kernel counter (rx unicast) in its sandbox.
    fn rx_unicast(&self, name: &str) -> u64 {
        let key = self.docker(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name]);
        let ns = NetNs::from_path(key);
        let s = self.lab.link_stats(&ns, "eth0").unwrap();
        s.rx_packets - s.multicast
    }

    fn pins(&self) -> PathBuf {
        self.pins_of(PARENT)
    }

    fn pins_of(&self, root: &str) -> PathBuf {
        pinned::pin_dir(pinned::netns_inode(Some(self.lab.host())).unwrap(), root)
    }

    /// Sends `n` frames to `mac` from the upstream end of the wire, waiting
    /// until the classifier has classified each burst.
    fn send(&self, mac: [u8; 6], n: u64) {
        self.send_on(PARENT, UPSTREAM_IF, mac, n)
    }

    /// As [`Env::send`], through the parent `root` (whose upstream end is
    /// `wire`).
    fn send_on(&self, root: &str, wire: &str, mac: [u8; 6], n: u64) {
        let maps = PinnedMaps::open(&self.pins_of(root)).unwrap();
        // Each frame is counted once, at XDP or (on TC alone: `docker
        // sync` without --xdp-mode on the lab's veth) at TC ingress.
        let total = |m: &PinnedMaps| {
            let v = m.counters().unwrap().verdicts;
            v.total(Hook::XdpIngress).frames + v.total(Hook::TcIngress).frames
        };
        let base = total(&maps);
        let src = self.lab.mac_of(self.lab.upstream(), wire).unwrap();
        let frames = [FrameSpec::udp4(mac, src).build().unwrap()];
        wire::send(
            self.lab.upstream(),
            wire,
            &SendPlan {
                frames: &frames,
                rounds: n,
                deadline: Duration::from_secs(30),
                burst: 32,
            },
            |sent| total(&maps) - base >= sent,
        )
        .unwrap();
    }

    fn stats(&self) -> Value {
        serde_json::from_str(&self.s.ok(&["stats", "--json"])).unwrap()
    }

    /// Polls `stats --json` (at most 20 s) until `want` holds; returns the
    /// last document.
    fn stats_until(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.stats();
            if want(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "within 20 s: {what}; stats: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes every container and network Docker has, then lets `mvnet
    /// docker sync` forget them: the classifier's pins must go too when
    /// mvnet `attached` them. (Otherwise pins may be there that a dead
    /// namespace with this inode left: inodes of namespaces are reused,
    /// and such pins are replaced by the first attach.)
    fn teardown(&self, nets: &[&str], attached: bool) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in ids.lines().filter(|l| !l.is_empty()) {
            self.docker(&["rm", "-f", id]);
        }
        for n in nets {
            self.docker(&["network", "rm", n]);
        }
        self.s
            .ok(&["docker", "sync", "--docker-host", &self.d.host()]);
        assert_eq!(self.s.ok(&["network", "ls", "-q"]), "");
        if attached {
            assert!(
                !self.pins().exists(),
                "pins left at {}",
                self.pins().display()
            );
        }
    }
}

/// The endpoints of `stats --json`: (container, owner, network, rx wire
/// frames), sorted.
fn endpoints(stats: &Value) -> Vec<(String, String, String, u64)> {
    let mut out = Vec::new();
    for n in stats["networks"].as_array().unwrap() {
        for e in n["endpoints"].as_array().unwrap() {
            out.push((
                e["container"].as_str().unwrap().to_owned(),
                e["owner"].as_str().unwrap_or("?").to_owned(),
                n["name"].as_str().unwrap().to_owned(),
                e["rx"]["wire"]["frames"].as_u64().unwrap(),
            ));
        }
    }
    out.sort();
    out
}

fn names(stats: &Value) -> Vec<String> {
    endpoints(stats).into_iter().map(|e| e.0).collect()
}

fn verdict(stats: &Value, hook: &str, verdict: &str) -> u64 {
    stats["roots"][0]["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["hook"] == hook && v["verdict"] == verdict)
        .unwrap()["frames"]
        .as_u64()
        .unwrap()
}

/// `mvnet docker watch` as a child; killed (and reaped) on drop. Its output
/// is collected as it comes.
struct Watch {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Watch {
    fn start(s: &Session, args: &[&str]) -> Watch {
        // The tests assert XDP's counts (auto: TC alone on the lab's veth).
        let mut argv = vec!["docker", "watch", "--xdp-mode", "native"];
        argv.extend_from_slice(args);
        let mut child = s.spawn(&argv);
        let out = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Watch { child, out }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits (at most 20 s) until the output holds `needle`.
    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.output().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "watch did not print {needle:?} within 20 s:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_counts_dockers_containers_exactly_and_follows_them() {
    let mut env = Env::new();
    env.network("dnet", "172.16.86.0/24");
    // --restart always: the engine starts them again after its restart
    // below; --stop-timeout 1: sleep ignores SIGTERM.
    let keep = ["--restart", "always", "--stop-timeout", "1"];
    let web = env.run("web", "dnet", &keep);
    let db = env.run("db", "dnet", &keep);
    assert_eq!(web, [0x02, 0x42, 0xac, 0x10, 0x56, 0x02], "the seed's MAC");
    let host = env.d.host();
    let w = Watch::start(&env.s, &["--docker-host", &host]);
    w.wait_for("1 macvlan network(s), 2 endpoint(s) of 2 container(s)");
    let v = env.stats();
    assert_eq!(
        endpoints(&v),
        [
            ("db".into(), "docker".into(), "dnet".into(), 0),
            ("web".into(), "docker".into(), "dnet".into(), 0)
        ]
    );
    assert_eq!(v["networks"][0]["owner"], "docker");
    assert_eq!(v["networks"][0]["policy"], "observe");

    // Exact counts per container, and the kernel agrees.
    let (web_rx, db_rx) = (env.rx_unicast("web"), env.rx_unicast("db"));
    env.send(web, 100);
    env.send(db, 50);
    env.send([0x02, 0x42, 0xac, 0x10, 0x56, 0x63], 30);
    let v = env.stats();
    assert_eq!(
        endpoints(&v),
        [
            ("db".into(), "docker".into(), "dnet".into(), 50),
            ("web".into(), "docker".into(), "dnet".into(), 100)
        ]
    );
    assert_eq!(verdict(&v, "xdp_ingress", "unknown_mac"), 30);
    assert_eq!(verdict(&v, "xdp_ingress", "delivered"), 150);
    assert_eq!(env.rx_unicast("web") - web_rx, 100);
    assert_eq!(env.rx_unicast("db") - db_rx, 50);
    let verify = env.s.ok(&["verify"]);
    assert!(verify.contains("web") && verify.contains("db"), "{verify}");

    // A container started after watch appears; its frames are counted.
    let late = env.run("late", "dnet", &[]);
    let v = env.stats_until("late appears", |v| names(v) == ["db", "late", "web"]);
    assert_eq!(endpoints(&v)[1].3, 0);
    env.send(late, 20);
    assert_eq!(
        endpoints(&env.stats())[1],
        ("late".into(), "docker".into(), "dnet".into(), 20)
    );
    // A removed one disappears, from the state and the table.
    env.docker(&["rm", "-f", "db"]);
    env.stats_until("db disappears", |v| names(v) == ["late", "web"]);
    let maps = PinnedMaps::open(&env.pins()).unwrap();
    assert!(maps.endpoints_ro().unwrap().get(db, 0).is_none());
    assert!(maps.endpoints_ro().unwrap().get(web, 0).is_some());
    drop(maps);
    w.wait_for("- container db");

    // The engine restarts: the connection is lost, watch connects again,
    // re-syncs, and the table is exactly what Docker has now (web came back
    // by its restart policy, late did not).
    env.d.restart().unwrap();
    let v = env.stats_until("the table after the restart is web alone", |v| {
        names(v) == ["web"]
    });
    let web = env.mac("web", "dnet");
    let maps = PinnedMaps::open(&env.pins()).unwrap();
    assert_eq!(
        maps.endpoints_ro().unwrap().entries().unwrap().len(),
        1,
        "{v:#}"
    );
    assert!(maps.endpoints_ro().unwrap().get(web, 0).is_some());
    assert!(maps.endpoints_ro().unwrap().get(late, 0).is_none());
    drop(maps);
    let before = endpoints(&env.stats())[0].3;
    env.send(web, 40);
    assert_eq!(endpoints(&env.stats())[0].3 - before, 40);
    env.s.ok(&["verify"]);
    let out = w.output();
    assert!(out.contains("connecting again"), "{out}");

    drop(w);
    env.teardown(&["dnet"], true);
}

/// (container, network, ifname, rx wire frames) of `stats --json`,
/// sorted.
fn placed(stats: &Value) -> Vec<(String, String, String, u64)> {
    let mut out = Vec::new();
    for n in stats["networks"].as_array().unwrap() {
        for e in n["endpoints"].as_array().unwrap() {
            out.push((
                e["container"].as_str().unwrap().to_owned(),
                n["name"].as_str().unwrap().to_owned(),
                e["ifname"].as_str().unwrap().to_owned(),
                e["rx"]["wire"]["frames"].as_u64().unwrap(),
            ));
        }
    }
    out.sort();
    out
}

/// Docker replays only its last 256 events (of every kind) to a subscriber
/// that asks for older ones, and queues at most 1024 for a subscriber that
/// does not read (it drops the rest). A watch whose first sync waits (here
/// for the state lock, which the test holds) while 4000 events happen,
/// then a container starts, then 400 more events happen, still adopts that
/// container: its event stream was opened before the sync and is read
/// while the sync waits. (It used to be opened after the sync: the
/// container's events were gone from Docker's replay. Then the sync
/// waited on the runtime's one thread: the stream was not read, and
/// dockerd dropped the container's events from its full queue.)
#[test]
fn watch_misses_no_event_while_its_first_sync_waits() {
    use std::os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _};
    let env = Env::new();
    env.network("dnet", "172.16.86.0/24");
    // A bystander for cheap events: each exec made (not started) in it is
    // one container event, `exec_create`.
    env.docker(&[
        "run",
        "-d",
        "--name",
        "idle",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "3600",
    ]);
    let socket = env.d.host().trim_start_matches("unix://").to_owned();
    let execs = |n: usize| {
        let url = "http://docker/containers/idle/exec";
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "--unix-socket",
                &socket,
                "-X",
                "POST",
            ])
            .args([
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"Cmd":["true"]}"#,
            ])
            .args(std::iter::repeat_n(url, n))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&env.s.state_dir)
        .unwrap();
    let mut lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(env.s.state_dir.join("lock"))
        .unwrap();
    // SAFETY: a valid fd.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    writeln!(lock, "{}", std::process::id()).unwrap();
    let host = env.d.host();
    let w = Watch::start(&env.s, &["--docker-host", &host]);
    w.wait_for("waiting for the state lock");
    execs(4000);
    let late = env.run("late", "dnet", &[]);
    execs(400);
    drop(lock);
    env.stats_until("late is adopted", |v| names(v) == ["late"]);
    env.send(late, 20);
    assert_eq!(
        endpoints(&env.stats()),
        [("late".into(), "docker".into(), "dnet".into(), 20)]
    );
    drop(w);
    env.teardown(&["dnet"], true);
}

#[test]
fn watch_follows_networks_created_connected_disconnected_and_destroyed() {
    let env = Env::new();
    add_parent(&env.lab, "eth1", "wire1").unwrap();
    env.network("front", "10.81.0.0/24");
    let web = env.run("web", "front", &[]);
    let w = Watch::start(&env.s, &["--docker-host", &env.d.host()]);
    w.wait_for("1 macvlan network(s), 1 endpoint(s) of 1 container(s)");

    // A network made after watch started, on another parent, then joined
    // by the running container: its second link, eth1 in its sandbox.
    env.network_on("back", "10.82.0.0/24", "eth1");
    w.wait_for("+ network back (parent eth1)");
    env.docker(&["network", "connect", "back", "web"]);
    let back_mac = env.mac("web", "back");
    let v = env.stats_until("web joins back", |v| placed(v).len() == 2);
    assert_eq!(
        placed(&v),
        [
            ("web".into(), "back".into(), "eth1".into(), 0),
            ("web".into(), "front".into(), "eth0".into(), 0)
        ]
    );
    env.send_on("eth1", "wire1", back_mac, 33);
    env.send(web, 11);
    assert_eq!(
        placed(&env.stats()),
        [
            ("web".into(), "back".into(), "eth1".into(), 33),
            ("web".into(), "front".into(), "eth0".into(), 11)
        ]
    );
    env.s.ok(&["verify"]);

    // Disconnected: that endpoint goes, the other stays.
    env.docker(&["network", "disconnect", "back", "web"]);
    let v = env.stats_until("web leaves back", |v| placed(v).len() == 1);
    assert_eq!(
        placed(&v),
        [("web".into(), "front".into(), "eth0".into(), 11)]
    );
    let maps = PinnedMaps::open(&env.pins_of("eth1")).unwrap();
    assert!(maps.endpoints_ro().unwrap().get(back_mac, 0).is_none());
    drop(maps);
    // Destroyed: the network goes, and with it the classifier of eth1.
    env.docker(&["network", "rm", "back"]);
    w.wait_for("- network back");
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.pins_of("eth1").exists() {
        assert!(Instant::now() < deadline, "eth1's classifier still pinned");
        std::thread::sleep(Duration::from_millis(50));
    }
    let nets = env.s.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(nets, "front\n");

    drop(w);
    env.teardown(&["front"], true);
}

/// A network whose adoption failed is taken by a later sync once what
/// refused it is gone: here mvnet's own networks on eth1 and eth2, whose
/// classifiers have 4096 slots where watch asks for 8192. Both a network
/// the first sync found (on eth1) and one created afterwards (on eth2: an
/// event) are refused, then adopted with their containers, without
/// restarting watch.
#[test]
fn watch_adopts_a_refused_network_once_what_refused_it_is_gone() {
    let env = Env::new();
    for (parent, wire, subnet, own) in [
        ("eth1", "wire1", "10.84.0.0/24", "own1"),
        ("eth2", "wire2", "10.87.0.0/24", "own2"),
    ] {
        add_parent(&env.lab, parent, wire).unwrap();
        env.s.ok(&[
            "network",
            "create",
            "-d",
            "macvlan",
            &format!("--subnet={subnet}"),
            "-o",
            &format!("parent={parent}"),
            own,
        ]);
    }
    env.network_on("back", "10.85.0.0/24", "eth1");
    let web = env.run("web", "back", &[]);
    let host = env.d.host();
    let w = Watch::start(&env.s, &["--docker-host", &host, "--max-endpoints", "8192"]);
    w.wait_for("skipped docker network back");
    assert!(
        w.output().contains(
            "the classifier on eth1 was attached with --max-endpoints 4096 (shared by network own1)"
        ),
        "{}",
        w.output()
    );
    // The summary counts what is in the table, not what Docker has.
    w.wait_for(": 0 macvlan network(s), 0 endpoint(s) of 0 container(s) in the classifier's table");
    env.network_on("side", "10.86.0.0/24", "eth2");
    let db = env.run("db", "side", &[]);
    w.wait_for("skipped docker network side: the classifier on eth2 was attached");
    assert_eq!(names(&env.stats()), Vec::<String>::new());

    env.s.ok(&["network", "rm", "own1", "own2"]);
    let v = env.stats_until("web and db are adopted", |v| names(v) == ["db", "web"]);
    assert_eq!(
        placed(&v),
        [
            ("db".into(), "side".into(), "eth0".into(), 0),
            ("web".into(), "back".into(), "eth0".into(), 0)
        ]
    );
    for root in ["eth1", "eth2"] {
        let maps = PinnedMaps::open(&env.pins_of(root)).unwrap();
        assert_eq!(maps.capacity().unwrap(), 8192, "{root}");
    }
    env.send_on("eth1", "wire1", web, 17);
    env.send_on("eth2", "wire2", db, 9);
    assert_eq!(
        placed(&env.stats()),
        [
            ("db".into(), "side".into(), "eth0".into(), 9),
            ("web".into(), "back".into(), "eth0".into(), 17)
        ]
    );
    env.s.ok(&["verify"]);
    drop(w);
    env.teardown(&["back", "side"], true);
}

#[test]
fn sync_enforce_drops_unknown_macs_for_dockers_containers() {
    let env = Env::new();
    env.network("enet", "10.77.0.0/24");
    let c1 = env.run("c1", "enet", &[]);
    let host = env.d.host();
    let out = env.s.ok(&[
        "docker",
        "sync",
        "--docker-host",
        &host,
        "--policy",
        "enforce",
        "--xdp-mode",
        "native",
    ]);
    assert!(
        out.contains("1 macvlan network(s), 1 endpoint(s) of 1 container(s)"),
        "{out}"
    );
    // A second sync has nothing to do.
    let again = env.s.ok(&[
        "docker",
        "sync",
        "--docker-host",
        &host,
        "--policy",
        "enforce",
        "--xdp-mode",
        "native",
    ]);
    assert!(again.starts_with("nothing to do\n"), "{again}");
    let v = env.stats();
    assert_eq!(v["networks"][0]["policy"], "enforce");
    let rx = env.rx_unicast("c1");
    env.send([0x02, 0x42, 0x0a, 0x4d, 0x00, 0x63], 40);
    env.send(c1, 25);
    let v = env.stats();
    assert_eq!(verdict(&v, "xdp_ingress", "unknown_mac"), 40);
    // Dropped at XDP: TC ingress never saw them.
    assert_eq!(verdict(&v, "tc_ingress", "unknown_mac"), 0);
    assert_eq!(
        endpoints(&v),
        [("c1".into(), "docker".into(), "enet".into(), 25)]
    );
    assert_eq!(env.rx_unicast("c1") - rx, 25);
    // Docker's device gets the source checks: frames c1 writes with a
    // stranger's source MAC are dropped on its device and named as its.
    let key = env.docker(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "c1"]);
    let up = env.lab.mac_of(env.lab.upstream(), UPSTREAM_IF).unwrap();
    let spoofed = FrameSpec::udp4(up, [0x02, 0x42, 0x0a, 0x4d, 0x00, 0x77])
        .build()
        .unwrap();
    let sent = wire::send_each_once_with(&NetNs::from_path(key), "eth0", &spoofed, 12, false);
    assert_eq!(sent.unwrap(), (0, 12), "sent, dropped on send");
    let v = env.stats();
    let e = &v["networks"][0]["endpoints"][0];
    assert_eq!(e["container"], "c1");
    assert_eq!(
        (&e["tx_invalid"]["frames"], &e["tx_invalid"]["bytes"]),
        (&Value::from(12), &Value::from(12 * spoofed.len()))
    );
    assert_eq!(verdict(&v, "tc_egress", "spoofed"), 12);
    env.s.ok(&["verify"]);
    // mvnet's own commands leave Docker's objects to Docker.
    let e = env.s.fails(&["rm", "-f", "c1"]);
    assert!(e.contains("container c1 belongs to docker"), "{e}");

    env.teardown(&["enet"], true);
}

#[test]
fn stats_top_and_serve_show_dockers_container_names() {
    let env = Env::new();
    env.network("snet", "10.78.0.0/24");
    let mac = env.run("named-by-docker", "snet", &[]);
    env.s
        .ok(&["docker", "sync", "--docker-host", &env.d.host()]);
    env.send(mac, 7);
    let stats = env.s.ok(&["stats"]);
    assert!(stats.contains("named-by-docker"), "{stats}");
    let top = env.s.ok(&["top", "--plain", "--count", "1"]);
    assert!(top.contains("named-by-docker"), "{top}");
    // The exporter, on a port of the lab's own namespace (loopback up).
    mvnet::netlink::run(Some(env.lab.host()), |nl| async move {
        let lo = nl.require_link("lo").await?;
        nl.set_up(lo.index).await
    })
    .unwrap();
    let mut serve = env
        .s
        .spawn(&["serve", "--metrics-addr", "127.0.0.1:9435", "--no-events"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let got = env
            .lab
            .host()
            .run(|| -> std::io::Result<String> {
                let mut c = std::net::TcpStream::connect("127.0.0.1:9435")?;
                c.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
                let mut s = String::new();
                c.read_to_string(&mut s)?;
                Ok(s)
            })
            .unwrap();
        match got {
            Ok(b) => break b,
            Err(e) => {
                assert!(Instant::now() < deadline, "mvnet serve did not answer: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let _ = serve.kill();
    let _ = serve.wait();
    let line = format!(
        "mvnet_endpoint_frames_total{{network=\"snet\",endpoint=\"named-by-docker\",ifname=\"eth0\",mac=\"{}\",vlan=\"0\",direction=\"rx\",path=\"wire\"}} 7",
        mvnet::model::Mac::new(mac)
    );
    assert!(body.contains(&line), "{line} not in:\n{body}");
    env.teardown(&["snet"], true);
}

/// `mvnet ARGS` in `ns` with the state in `state_dir`.
fn mvnet_in(ns: &NetNs, state_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let bin = mvnet_bin();
    let state = state_dir.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ns.run(move || {
        Command::new(bin)
            .arg("--state-dir")
            .arg(state)
            .args(&args)
            .env_remove("DOCKER_HOST")
            .envs(env)
            .output()
            .unwrap()
    })
    .unwrap()
}

#[test]
fn bad_docker_sockets_and_foreign_parents_are_clear_errors() {
    let env = Env::new();
    let dir = std::env::temp_dir().join(format!("{}-bad", env.lab.id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let absent = dir.join("absent.sock");
    let file = dir.join("file.sock");
    std::fs::write(&file, "").unwrap();
    let dead = dir.join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    // A socket that answers HTTP, but not as Docker.
    let other = dir.join("other.sock");
    let listener = std::os::unix::net::UnixListener::bind(&other).unwrap();
    std::thread::spawn(move || {
        for mut c in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nno such ap",
            );
        }
    });
    let d = |p: &Path| p.display().to_string();
    // (arguments, environment, standard error)
    type Case<'a> = (Vec<String>, Vec<(&'a str, String)>, String);
    let cases: Vec<Case> = vec![
        (
            vec!["--docker-host".into(), format!("unix://{}", d(&absent))],
            vec![],
            format!(
                "mvnet: error: no Docker socket at {} (from --docker-host): is dockerd running? \
                 Start it, or point --docker-host (or DOCKER_HOST) at its socket\n",
                d(&absent)
            ),
        ),
        (
            vec![],
            vec![("DOCKER_HOST", format!("unix://{}", d(&file)))],
            format!(
                "mvnet: error: {} (from DOCKER_HOST) is not a unix socket; point --docker-host \
                 (or DOCKER_HOST) at dockerd's socket (`-H unix://…` of dockerd)\n",
                d(&file)
            ),
        ),
        (
            vec!["--docker-host".into(), d(&dead)],
            vec![],
            format!(
                "mvnet: error: Docker socket {} (from --docker-host) refuses connections: \
                 nothing listens there (dockerd stopped or crashed?); start dockerd, or point \
                 --docker-host at the socket it listens on\n",
                d(&dead)
            ),
        ),
        (
            vec!["--docker-host".into(), format!("unix://{}", d(&other))],
            vec![],
            format!(
                "mvnet: error: {} (from --docker-host) does not speak the Docker Engine API: GET \
                 /version answered HTTP 404 \"no such ap\"; point --docker-host (or DOCKER_HOST) \
                 at dockerd's socket\n",
                d(&other)
            ),
        ),
        (
            vec!["--docker-host".into(), "tcp://127.0.0.1:2375".into()],
            vec![],
            "mvnet: error: invalid Docker host \"tcp://127.0.0.1:2375\" (from --docker-host): \
             only unix sockets are supported (mvnet reads the containers' namespaces, so it runs \
             on the engine's host); give unix:///PATH/TO/docker.sock or an absolute socket path, \
             e.g. --docker-host unix:///var/run/docker.sock\n"
                .into(),
        ),
    ];
    for (args, vars, want) in &cases {
        for verb in ["sync", "watch"] {
            let mut argv = vec!["docker", verb];
            argv.extend(args.iter().map(String::as_str));
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let out = mvnet_in(env.lab.host(), &env.s.state_dir, &argv, &vars);
            assert_eq!(out.status.code(), Some(1), "{argv:?}");
            assert_eq!(String::from_utf8_lossy(&out.stderr), *want, "{argv:?}");
            assert_eq!(env.s.state(), "", "{argv:?} changed the state");
        }
    }

    // Docker's network has its parent in Docker's namespace; mvnet run
    // from another namespace (the lab's upstream, which has no eth0)
    // reports it and adopts nothing.
    env.network("far", "10.79.0.0/24");
    env.run("f1", "far", &[]);
    let out = mvnet_in(
        env.lab.upstream(),
        &env.s.state_dir,
        &["docker", "sync", "--docker-host", &env.d.host()],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(
            "mvnet: docker: Docker network far (parent eth0): no link eth0 in this network \
             namespace (inode "
        ),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("0 macvlan network(s), 0 endpoint(s) of 0 container(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!env.s.state().contains("far"), "{}", env.s.state());
    let _ = std::fs::remove_dir_all(&dir);
    env.teardown(&["far"], false);
}

/// `mvnet docker sync` whose `bpf` calls, then its `sendto`s (netlink and
/// Docker's API), fail (each thread's k-th, for up to 25 k spread over the
/// calls of a clean run) while it has an entry to put back: it reports
/// the failure (exit 1) or does without the call, the next sync converges,
/// no container Docker runs loses its endpoint, and the frames counted for
/// the one it did not touch are still counted. A sync that took a failed
/// read for a gone container or entry would forget a live endpoint, or
/// make its entry again from zero.
#[test]
fn sync_failing_at_any_call_forgets_nothing_that_lives() {
    const CONVERGED: &str = "nothing to do: the kernel matches the state\n";
    let env = Env::new();
    env.network("fnet", "10.78.0.0/24");
    let web = env.run("web", "fnet", &[]);
    let db = env.run("db", "fnet", &[]);
    let host = env.d.host();
    let sync = ["docker", "sync", "--docker-host", host.as_str()];
    env.s.ok(&sync);
    env.send(web, 9);
    // The work for the sync: db's entry removed behind mvnet's back.
    let lose_db = || {
        let mut maps = PinnedMaps::open(&env.pins()).unwrap();
        let mut t = maps.endpoints().unwrap();
        if t.get(db, 0).is_some() {
            t.remove(db, 0).unwrap();
        }
    };
    let trace = std::env::temp_dir().join(format!("{}-sync.trace", env.lab.id()));
    let mut tried = 0;
    for class in ["bpf", "sendto"] {
        lose_db();
        let calls = env.s.calls_of(&sync, class, &trace);
        assert!(calls > 3, "{calls} {class} calls in docker sync");
        for k in common::spread(calls, 25) {
            tried += 1;
            lose_db();
            let code = env.s.failing_at(&sync, class, k, &trace);
            let when = format!("sync with {class} call {k} of {calls} failed (exit {code:?})");
            assert!(matches!(code, Some(0 | 1)), "{when}");
            env.s.ok(&sync);
            assert_eq!(env.s.ok(&["restore", "--check"]), CONVERGED, "{when}");
            let v = env.stats();
            assert_eq!(
                endpoints(&v),
                [
                    ("db".into(), "docker".into(), "fnet".into(), 0),
                    ("web".into(), "docker".into(), "fnet".into(), 9)
                ],
                "{when}"
            );
        }
    }
    let _ = std::fs::remove_file(&trace);
    eprintln!("{tried} points");
    env.s.ok(&["verify"]);
    env.teardown(&["fnet"], true);
}
