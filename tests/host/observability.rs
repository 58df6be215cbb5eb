//! Observability: `mvnet stats --json` counts exactly what was sent, per
//! endpoint, VLAN and verdict; bpftool reads the same numbers (with BTF
//! field names) from the pins; `mvnet serve` passes `promtool check
//! metrics`, and a real Prometheus scraping it answers PromQL with exactly
//! the frames sent.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use macvlan_common::Hook;
use mvnet::{datapath::pinned::PinnedMaps, model::Mac, netns::NetNs};
use mvnet_lab::lab::{
    frames::{FrameSpec, Payload, Tag},
    wire, Lab, UPSTREAM_IF,
};
use serde_json::Value;

use crate::{
    common::{
        cli::{mvnet_bin, Session},
        require_root,
    },
    datapath_cp::{json, mac_of, pin_dir, send},
};

/// A tool the tests run; missing is a failure (`cargo xtask test`
/// installs it), never a skip.
fn tool(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found; install the Debian package {package} (`cargo xtask test` does)");
}

fn endpoint<'a>(doc: &'a Value, net: &str, container: &str) -> &'a Value {
    doc["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == net)
        .unwrap_or_else(|| panic!("no network {net} in {doc}"))["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["container"] == container)
        .unwrap_or_else(|| panic!("no endpoint {container} in {net}: {doc}"))
}

fn root<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["root"] == name)
        .unwrap_or_else(|| panic!("no root {name} in {doc}"))
}

fn verdict(doc: &Value, hook: &str, verdict: &str) -> (u64, u64) {
    let v = root(doc, "eth0")["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["hook"] == hook && v["verdict"] == verdict)
        .unwrap_or_else(|| panic!("no verdict {hook}/{verdict} in {doc}"));
    (v["frames"].as_u64().unwrap(), v["bytes"].as_u64().unwrap())
}

/// (frames, bytes) of `field` (rx_xdp, rx_tc, tx_tc) of VLAN `vid`; zeros
/// when the VLAN is absent.
fn vlan(doc: &Value, vid: u64, field: &str) -> (u64, u64) {
    root(doc, "eth0")["vlans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vlan"] == vid)
        .map(|v| {
            (
                v[field]["frames"].as_u64().unwrap(),
                v[field]["bytes"].as_u64().unwrap(),
            )
        })
        .unwrap_or((0, 0))
}

fn pair(v: &Value) -> (u64, u64) {
    (v["frames"].as_u64().unwrap(), v["bytes"].as_u64().unwrap())
}

/// `bpftool -j map dump pinned PATH`, per key, summed over CPUs: each
/// element's formatted (BTF) value, as JSON objects added field by field.
fn bpftool_dump(path: &Path) -> Vec<(u64, Value)> {
    let out = Command::new(tool("bpftool", "bpftool"))
        .args(["-j", "map", "dump", "pinned"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bpftool map dump {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let elems: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    elems
        .iter()
        .map(|e| {
            let f = e
                .get("formatted")
                .unwrap_or_else(|| panic!("no BTF-formatted element in bpftool's output: {e}"));
            let key = f["key"].as_u64().unwrap_or_else(|| panic!("key {f}"));
            // A per-CPU map: one value per CPU, summed; else the value.
            let Some(cpus) = f.get("values") else {
                return (key, f["value"].clone());
            };
            let mut sum = Value::Null;
            for cpu in cpus.as_array().unwrap() {
                add(&mut sum, &cpu["value"]);
            }
            (key, sum)
        })
        .collect()
}

/// The elements of a map striped by CPU (ENDPOINT_STATS: element
/// `cpu * capacity + slot`), as a bpftool user sums them: by slot, over
/// the stripes. There must be one stripe per possible CPU.
fn stripes_summed(elems: Vec<(u64, Value)>, capacity: u64) -> Vec<(u64, Value)> {
    let cpus = aya::util::nr_cpus().unwrap() as u64;
    assert_eq!(elems.len() as u64, cpus * capacity, "one stripe per CPU");
    let mut slots = vec![Value::Null; capacity as usize];
    for (key, v) in elems {
        add(&mut slots[(key % capacity) as usize], &v);
    }
    (0..capacity).zip(slots).collect()
}

/// `acc += v`, field by field (numbers added, objects recursed).
fn add(acc: &mut Value, v: &Value) {
    match v {
        Value::Object(m) => {
            if !acc.is_object() {
                *acc = Value::Object(Default::default());
            }
            for (k, x) in m {
                add(
                    acc.as_object_mut().unwrap().entry(k).or_insert(Value::Null),
                    x,
                );
            }
        }
        Value::Number(n) => {
            *acc = (acc.as_u64().unwrap_or(0) + n.as_u64().unwrap()).into();
        }
        other => panic!("unexpected value {other} in bpftool output"),
    }
}

#[test]
fn stats_json_counts_exactly_and_bpftool_reads_the_same_numbers() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = pin_dir(&lab);
    s.network(
        "oa",
        "10.81.0.0/24",
        "eth0",
        &crate::datapath_cp::XDP_NATIVE,
    );
    s.network(
        "ob",
        "10.82.0.0/24",
        "eth0",
        &crate::datapath_cp::XDP_NATIVE,
    );
    let [a1, a2, b1] = ["a1", "a2", "b1"].map(|n| s.name(n));
    s.container("oa", &a1, &["--ip", "10.81.0.11"]);
    s.container("oa", &a2, &["--ip", "10.81.0.12"]);
    s.container("ob", &b1, &["--ip", "10.82.0.11"]);
    let (m1, m2, mb) = (
        mac_of(&s, &a1, "oa"),
        mac_of(&s, &a2, "oa"),
        mac_of(&s, &b1, "ob"),
    );
    let maps = PinnedMaps::open(&dir).unwrap();
    let before = json(&s.ok(&["stats", "--json"]));
    assert_eq!(before["version"], 1);

    // From the wire: to each endpoint, to an unknown MAC, broadcast, and
    // to a1's MAC on VLAN 10 (a VLAN mismatch).
    let up = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let unknown = [0x02, 0x42, 0x0a, 0x51, 0x00, 0x63];
    let to = |mac| FrameSpec::udp4(mac, up).build().unwrap();
    let tagged = FrameSpec::udp4(m1, up)
        .tagged(&[Tag::dot1q(10)])
        .build()
        .unwrap();
    let len = to(m1).len() as u64;
    let tlen = tagged.len() as u64;
    for (frame, n) in [
        (to(m1), 101),
        (to(m2), 37),
        (to(mb), 59),
        (to(unknown), 23),
        (to([0xff; 6]), 8),
        (tagged, 5),
    ] {
        send(
            &maps,
            lab.upstream(),
            UPSTREAM_IF,
            Hook::XdpIngress,
            frame,
            n,
        );
    }
    // Bridge mode: a1 sends 13 to a2 over the parent (TC ingress only).
    let ns1 = NetNs::named(&a1).unwrap();
    send(
        &maps,
        &ns1,
        "eth0",
        Hook::TcIngress,
        FrameSpec::udp4(m2, m1).build().unwrap(),
        13,
    );
    // Out to the wire: 21 valid from a1, 4 with a forged source MAC from b1
    // (sent synchronously through TC egress: counted when the call returns).
    let gw = "10.81.0.1".parse().unwrap();
    let valid = FrameSpec::udp4(up, m1)
        .payload(Payload::Udp4 {
            src: "10.81.0.11".parse().unwrap(),
            dst: gw,
        })
        .build()
        .unwrap();
    assert_eq!(
        wire::send_each_once(&ns1, "eth0", &valid, 21).unwrap(),
        (21, 0)
    );
    let forged = FrameSpec::udp4(up, [0x02, 0x66, 0, 0, 0, 1])
        .payload(Payload::Udp4 {
            src: "10.82.0.11".parse().unwrap(),
            dst: "10.82.0.1".parse().unwrap(),
        })
        .build()
        .unwrap();
    let nsb = NetNs::named(&b1).unwrap();
    assert_eq!(
        wire::send_each_once(&nsb, "eth0", &forged, 4).unwrap(),
        (4, 0)
    );

    let doc = json(&s.ok(&["stats", "--json"]));
    // Per endpoint, exact (endpoints start at zero).
    let e1 = endpoint(&doc, "oa", &a1);
    assert_eq!(e1["mac"], Mac::new(m1).to_string());
    assert_eq!(e1["ipv4"], "10.81.0.11");
    assert_eq!(e1["ifname"], "eth0");
    assert_eq!(e1["vlan"], 0);
    assert_eq!(pair(&e1["rx"]["wire"]), (101, 101 * len));
    assert_eq!(pair(&e1["rx"]["local"]), (0, 0));
    // Bridge-local frames go macvlan to macvlan: TC egress never sees them.
    assert_eq!(pair(&e1["tx"]), (21, 21 * len));
    let e2 = endpoint(&doc, "oa", &a2);
    assert_eq!(pair(&e2["rx"]["wire"]), (37, 37 * len));
    assert_eq!(pair(&e2["rx"]["local"]), (13, 13 * len));
    assert_eq!(pair(&e2["tx"]), (0, 0));
    let eb = endpoint(&doc, "ob", &b1);
    assert_eq!(pair(&eb["rx"]["wire"]), (59, 59 * len));
    // A forged frame is not the endpoint's: counted as spoofed, not as tx.
    assert_eq!(pair(&eb["tx"]), (0, 0));
    let net = doc["networks"].as_array().unwrap();
    assert_eq!(net[0]["name"], "oa");
    assert_eq!(
        (net[0]["root"].as_str(), net[0]["vlan"].as_u64()),
        (Some("eth0"), Some(0))
    );
    assert_eq!(net[0]["policy"], "observe");
    assert_eq!(root(&doc, "eth0")["endpoints"], 3);
    assert_eq!(root(&doc, "eth0")["capacity"], 4096);
    assert_eq!(root(&doc, "eth0")["attached"], true);

    // Per verdict and VLAN: the differences from before are what was sent.
    let d = |hook, v| {
        let (a, b) = (verdict(&doc, hook, v), verdict(&before, hook, v));
        (a.0 - b.0, a.1 - b.1)
    };
    let unicast = 101 + 37 + 59;
    assert_eq!(d("xdp_ingress", "delivered"), (unicast, unicast * len));
    assert_eq!(d("xdp_ingress", "unknown_mac"), (23, 23 * len));
    assert_eq!(d("xdp_ingress", "broadcast"), (8, 8 * len));
    assert_eq!(d("xdp_ingress", "vlan_mismatch"), (5, 5 * tlen));
    // Each frame counted once: wire frames at XDP only, bridge-mode frames
    // at TC ingress only, bytes as on the wire at both.
    assert_eq!(d("tc_ingress", "delivered"), (13, 13 * len));
    for v in [
        "unknown_mac",
        "vlan_mismatch",
        "malformed",
        "broadcast",
        "multicast",
    ] {
        assert_eq!(d("tc_ingress", v), (0, 0), "tc_ingress {v}");
    }
    assert_eq!(
        (
            vlan(&doc, 0, "rx_tc").0 - vlan(&before, 0, "rx_tc").0,
            vlan(&doc, 0, "rx_tc").1 - vlan(&before, 0, "rx_tc").1
        ),
        (13, 13 * len)
    );
    assert_eq!(d("tc_egress", "delivered"), (21, 21 * len));
    assert_eq!(d("tc_egress", "spoofed"), (4, 4 * len));
    let dv = |vid, f| {
        let (a, b) = (vlan(&doc, vid, f), vlan(&before, vid, f));
        (a.0 - b.0, a.1 - b.1)
    };
    assert_eq!(
        dv(0, "rx_xdp"),
        (unicast + 23 + 8, (unicast + 23 + 8) * len)
    );
    assert_eq!(dv(10, "rx_xdp"), (5, 5 * tlen));
    assert_eq!(dv(0, "tx_tc"), (21 + 4, (21 + 4) * len));
    // Every hook and verdict is listed, zeros included: 3 x 7.
    assert_eq!(root(&doc, "eth0")["verdicts"].as_array().unwrap().len(), 21);

    // One network only.
    let only = json(&s.ok(&["stats", "ob", "--json"]));
    assert_eq!(only["networks"].as_array().unwrap().len(), 1);
    assert_eq!(
        pair(&endpoint(&only, "ob", &b1)["rx"]["wire"]),
        (59, 59 * len)
    );

    // bpftool, on the pins, with BTF names: the same numbers.
    let eps = stripes_summed(bpftool_dump(&dir.join("ENDPOINT_STATS")), 4096);
    assert_eq!(eps.len(), 4096);
    for (net, name) in [("oa", &a1), ("oa", &a2), ("ob", &b1)] {
        let e = endpoint(&doc, net, name);
        let slot = e["slot"].as_u64().unwrap();
        let (_, v) = eps.iter().find(|(k, _)| *k == slot).unwrap();
        assert_eq!(v["rx_wire"], e["rx"]["wire"], "{name}: bpftool {v}");
        assert_eq!(v["rx_local"], e["rx"]["local"], "{name}: bpftool {v}");
        assert_eq!(v["tx"], e["tx"], "{name}: bpftool {v}");
    }
    // ENDPOINT_MISMATCH (for verify; dashboards read it from the pin): the
    // 5 frames to a1's MAC on VLAN 10, passed under observe.
    let mismatch = bpftool_dump(&dir.join("ENDPOINT_MISMATCH"));
    for (net, name, want) in [("oa", &a1, 5), ("oa", &a2, 0), ("ob", &b1, 0)] {
        let slot = endpoint(&doc, net, name)["slot"].as_u64().unwrap();
        let (_, v) = mismatch.iter().find(|(k, _)| *k == slot).unwrap();
        assert_eq!(pair(v), (want, want * tlen), "{name}: bpftool {v}");
    }
    let verdicts = bpftool_dump(&dir.join("VERDICT_STATS"));
    for (i, v) in root(&doc, "eth0")["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let (_, b) = verdicts.iter().find(|(k, _)| *k == i as u64).unwrap();
        assert_eq!(
            (b["frames"].as_u64(), b["bytes"].as_u64()),
            (v["frames"].as_u64(), v["bytes"].as_u64()),
            "verdict {v}"
        );
    }
    let vlans = bpftool_dump(&dir.join("VLAN_STATS"));
    for v in root(&doc, "eth0")["vlans"].as_array().unwrap() {
        let (_, b) = vlans.iter().find(|(k, _)| *k == v["vlan"]).unwrap();
        for f in ["rx_xdp", "rx_tc", "tx_tc"] {
            assert_eq!(b[f], v[f], "VLAN {v}");
        }
    }

    // The table shows the same endpoints.
    let table = s.ok(&["stats"]);
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with(&a1))
        .unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols[1..7],
        [
            "eth0",
            &Mac::new(m1).to_string(),
            "0",
            "10.81.0.11",
            "-",
            "101"
        ],
        "{table}"
    );

    // `--watch NET` (NET taken as the interval) says how to write it.
    let err = s.fails(&["stats", "--watch", "oa"]);
    assert!(
        err.contains("to watch network \"oa\" put it first: `mvnet stats oa --watch [SECS]`"),
        "{err}"
    );

    // Watch: one document per line, with rates; idle, so every rate is 0.
    let out = s.ok(&["stats", "--json", "--watch", "0.5", "--count", "2"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in lines {
        let w = json(l);
        assert!(w["interval_secs"].as_f64().unwrap() > 0.4, "{l}");
        let r = &endpoint(&w, "oa", &a1)["rate"];
        assert_eq!(r["rx"]["wire"]["frames"], 0.0, "{l}");
        assert_eq!(
            pair(&endpoint(&w, "oa", &a1)["rx"]["wire"]),
            (101, 101 * len)
        );
        assert_eq!(
            root(&w, "eth0")["verdicts"][0]["rate"]["frames"],
            0.0,
            "{l}"
        );
    }

    // An unknown network: Docker's error, exit 1.
    let out = s.run(&["stats", "nosuchnet"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "mvnet: error: network nosuchnet not found; list them with `mvnet network ls`"
    );

    for n in [&a1, &a2, &b1] {
        s.ok(&["container", "stop", n]);
        s.ok(&["container", "rm", n]);
    }
    s.ok(&["network", "rm", "oa", "ob"]);
}

/// A child process killed (and reaped) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` in `ns`, output to `log`.
fn spawn_in(ns: &NetNs, mut cmd: Command, log: &Path) -> Killed {
    let f = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    Killed(ns.run(move || cmd.spawn().unwrap()).unwrap())
}

/// An HTTP/1.0 GET (no chunking) to 127.0.0.1:`port` in `ns`: (status,
/// body); `None` while nothing listens.
fn http_get(ns: &NetNs, port: u16, target: &str, accept: Option<&str>) -> Option<(u16, String)> {
    let req = format!(
        "GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n{}\r\n",
        accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default()
    );
    ns.run(move || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        c.write_all(req.as_bytes()).ok()?;
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    })
    .unwrap()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The values of an instant PromQL query, as strings.
fn promql(ns: &NetNs, port: u16, query: &str) -> Vec<String> {
    let Some((200, body)) = http_get(
        ns,
        port,
        &format!("/api/v1/query?query={}", urlencode(query)),
        None,
    ) else {
        return Vec::new();
    };
    let v = json(&body);
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| s["value"][1].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `query` until it returns exactly `want` or `timeout` passes.
fn await_promql(ns: &NetNs, port: u16, query: &str, want: &[&str], timeout: Duration) {
    let start = Instant::now();
    loop {
        let got = promql(ns, port, query);
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "PromQL {query}: {got:?} after {timeout:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_scrapes_serve_and_promql_returns_the_frames_sent() {
    require_root();
    let promtool = tool("promtool", "prometheus");
    let prometheus = tool("prometheus", "prometheus");
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let host = lab.host().clone();
    // Loopback in the lab's host namespace: serve and Prometheus meet there.
    mvnet::netlink::run(Some(&host), |nl| async move {
        let lo = nl.require_link("lo").await?;
        nl.set_up(lo.index).await
    })
    .unwrap();
    let tmp = std::env::temp_dir().join(format!("{}-prom", lab.id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("data")).unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(tmp.clone());

    // The exporter starts before any network exists.
    let (mport, pport) = (9435, 9090);
    let mut serve = Command::new(mvnet_bin());
    serve.arg("--state-dir").arg(&s.state_dir).args([
        "serve",
        "--metrics-addr",
        &format!("127.0.0.1:{mport}"),
    ]);
    let _serve = spawn_in(&host, serve, &tmp.join("serve.log"));
    let config = tmp.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: mvnet\n    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n"
        ),
    )
    .unwrap();
    let mut prom = Command::new(prometheus);
    prom.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            tmp.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{pport}"));
    let _prom = spawn_in(&host, prom, &tmp.join("prometheus.log"));
    let start = Instant::now();
    while http_get(&host, mport, "/metrics", None).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "mvnet serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(&host, mport, "/nothing", None).unwrap().0, 404);

    // Then a network, an endpoint: picked up without a restart.
    s.network(
        "op",
        "10.83.0.0/24",
        "eth0",
        &crate::datapath_cp::XDP_NATIVE,
    );
    let c = format!("{}-p1", lab.id());
    s.container("op", &c, &[]);
    let mac = Mac::new(mac_of(&s, &c, "op")).to_string();
    let sel = format!(
        "mvnet_endpoint_frames_total{{network=\"op\",endpoint=\"{c}\",mac=\"{mac}\",vlan=\"0\",direction=\"rx\",path=\"wire\"}}"
    );
    let timeout = Duration::from_secs(60);
    await_promql(&host, pport, "up{job=\"mvnet\"}", &["1"], timeout);
    await_promql(&host, pport, &sel, &["0"], timeout);

    let maps = PinnedMaps::open(&pin_dir(&lab)).unwrap();
    let up = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let m = mac_of(&s, &c, "op");
    send(
        &maps,
        lab.upstream(),
        UPSTREAM_IF,
        Hook::XdpIngress,
        FrameSpec::udp4(m, up).build().unwrap(),
        173,
    );
    let unknown = [0x02, 0x42, 0x0a, 0x53, 0x00, 0x63];
    send(
        &maps,
        lab.upstream(),
        UPSTREAM_IF,
        Hook::XdpIngress,
        FrameSpec::udp4(unknown, up).build().unwrap(),
        31,
    );
    await_promql(&host, pport, &sel, &["173"], timeout);
    await_promql(
        &host,
        pport,
        "mvnet_verdict_frames_total{root=\"eth0\",hook=\"xdp_ingress\",verdict=\"unknown_mac\"}",
        &["31"],
        timeout,
    );
    await_promql(
        &host,
        pport,
        "mvnet_network_endpoints{network=\"op\"}",
        &["1"],
        timeout,
    );

    // Frames the container's own device sends with a stranger's source
    // MAC fail its source checks: the series exists at 0 before the
    // first, so `increase()` sees it, and names the sender after.
    let invalid = |what: &str| {
        format!("mvnet_endpoint_tx_invalid_{what}_total{{network=\"op\",endpoint=\"{c}\",mac=\"{mac}\",vlan=\"0\"}}")
    };
    await_promql(&host, pport, &invalid("frames"), &["0"], timeout);
    let stranger = [0x02, 0x42, 0x0a, 0x53, 0x00, 0x77];
    let spoofed = FrameSpec::udp4(up, stranger).build().unwrap();
    let ns = NetNs::named(&c).unwrap();
    assert_eq!(
        wire::send_each_once_with(&ns, "eth0", &spoofed, 9, false).unwrap(),
        (9, 0)
    );
    await_promql(&host, pport, &invalid("frames"), &["9"], timeout);
    let bytes = (9 * spoofed.len()).to_string();
    await_promql(&host, pport, &invalid("bytes"), &[bytes.as_str()], timeout);

    // The exporter streamed the classifier's anomaly event to its log,
    // from a classifier attached after it started.
    let want = format!(
        " eth0 warn unknown_mac dst={} src={} vlan=0",
        Mac::new(unknown),
        Mac::new(up)
    );
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(tmp.join("serve.log")).unwrap_or_default();
        if log.lines().any(|l| l.ends_with(&want)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no event line ending in {want:?} in the serve log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Every query of the Grafana dashboard is valid PromQL and finds series.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/mvnet.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "10s")
                .replace("$network", ".*")
                .replace("$root", ".*");
            let q = format!("/api/v1/query?query={}", urlencode(&expr));
            let (status, body) = http_get(&host, pport, &q, None).unwrap();
            let v = json(&body);
            assert_eq!(
                (status, &v["status"]),
                (200, &Value::from("success")),
                "{expr}: {body}"
            );
            assert!(
                !v["data"]["result"].as_array().unwrap().is_empty(),
                "dashboard query {expr} found no series"
            );
            queries += 1;
        }
    }
    assert!(queries >= 13, "{queries} dashboard queries");

    // The exposition (text 0.0.4, as promtool reads it) is clean.
    let (status, body) = http_get(&host, mport, "/metrics", None).unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE mvnet_endpoint_frames_total counter"),
        "{body}"
    );
    let line = format!(
        "mvnet_endpoint_frames_total{{network=\"op\",endpoint=\"{c}\",ifname=\"eth0\",mac=\"{mac}\",vlan=\"0\",direction=\"rx\",path=\"wire\"}} 173"
    );
    assert!(body.lines().any(|l| l == line), "no line {line} in {body}");
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // OpenMetrics on request, ending in # EOF.
    let (_, om) = http_get(
        &host,
        mport,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");

    s.ok(&["container", "stop", &c]);
    s.ok(&["container", "rm", &c]);
    s.ok(&["network", "rm", "op"]);
}

/// A raw HTTP/1.1 exchange on `c`: sends `req`, reads one response with a
/// Content-Length body: (head, body).
fn exchange(c: &mut TcpStream, req: &str) -> (String, Vec<u8>) {
    c.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(c.read(&mut byte).unwrap(), 1, "closed inside the head");
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    // The metrics are streamed as they are encoded: chunked, no length.
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ntransfer-encoding: chunked\r\n"),
        "{head}"
    );
    let body = crate::common::http::read_body(c, &head).expect("a whole chunked body");
    (head, body)
}

#[test]
fn serve_cuts_off_slow_and_idle_clients_gzips_and_counts_scrape_errors() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let host = lab.host().clone();
    mvnet::netlink::run(Some(&host), |nl| async move {
        let lo = nl.require_link("lo").await?;
        nl.set_up(lo.index).await
    })
    .unwrap();
    std::fs::create_dir_all(&s.state_dir).unwrap();
    let log = s.state_dir.with_extension("serve.log");
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(log.clone());
    let port = 9437;
    // `:PORT` listens on loopback.
    let mut serve = Command::new(mvnet_bin());
    serve.arg("--state-dir").arg(&s.state_dir).args([
        "serve",
        "--no-events",
        "--metrics-addr",
        &format!(":{port}"),
    ]);
    let _serve = spawn_in(&host, serve, &log);
    let start = Instant::now();
    while http_get(&host, port, "/metrics", None).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "mvnet serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::fs::read_to_string(&log).unwrap().contains(&format!(
            "mvnet serve: metrics at http://127.0.0.1:{port}/metrics"
        )),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    let report = host
        .run(move || {
            let connect = || TcpStream::connect(("127.0.0.1", port)).unwrap();
            // 100 idle clients and 20 slow-loris ones (a byte every 500 ms).
            let idle: Vec<TcpStream> = (0..100).map(|_| connect()).collect();
            let mut slow: Vec<TcpStream> = (0..20).map(|_| connect()).collect();
            let opened = Instant::now();
            let request =
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
            let mut scrapes = Vec::new();
            let mut sent = 0;
            // Seven seconds: past the 5 s header deadline.
            while opened.elapsed() < Duration::from_secs(7) {
                for c in &mut slow {
                    let _ = c.write_all(&request[sent % request.len()..][..1]);
                }
                sent += 1;
                let t = Instant::now();
                let mut c = connect();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let (head, _) = exchange(
                    &mut c,
                    "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                );
                assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
                scrapes.push(t.elapsed());
                std::thread::sleep(Duration::from_millis(500));
            }
            // Every slow and idle client was cut off by now: the server
            // closed them (EOF or a reset) without answering a request.
            let mut closed = 0;
            for mut c in slow.into_iter().chain(idle) {
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut got = Vec::new();
                match c.read_to_end(&mut got) {
                    Ok(_) => closed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
                    Err(_) => {}
                }
                assert!(
                    !got.starts_with(b"HTTP/1.1 200"),
                    "a slow client was answered"
                );
            }
            (scrapes, closed)
        })
        .unwrap();
    let (scrapes, closed) = report;
    assert_eq!(closed, 120, "slow and idle clients still open");
    let worst = scrapes.iter().max().unwrap();
    assert!(
        scrapes.len() >= 10 && *worst < Duration::from_secs(1),
        "{} scrapes, the slowest {worst:?}",
        scrapes.len()
    );

    // Keep-alive: two scrapes on one connection, the second gzipped.
    let (plain, zipped) = host
        .run(move || {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let plain = exchange(&mut c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            let zipped = exchange(
                &mut c,
                "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
            );
            (plain, zipped)
        })
        .unwrap();
    assert!(
        !plain.0.to_ascii_lowercase().contains("content-encoding"),
        "{}",
        plain.0
    );
    assert!(
        zipped
            .0
            .to_ascii_lowercase()
            .contains("\r\ncontent-encoding: gzip\r\n"),
        "{}",
        zipped.0
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&zipped.1[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(zipped.1.len() < text.len());
    let version = env!("CARGO_PKG_VERSION");
    for body in [&String::from_utf8(plain.1).unwrap(), &text] {
        assert!(
            body.contains(&format!("\nmvnet_build_info{{version=\"{version}\"}} 1\n")),
            "{body}"
        );
        assert!(body.contains("\nmvnet_scrape_errors_total 0\n"), "{body}");
    }

    // A state file that does not parse fails the scrape (500), counted.
    std::fs::write(s.state_dir.join("state.json"), b"{not json").unwrap();
    let (status, body) = http_get(&host, port, "/metrics", None).unwrap();
    assert_eq!(status, 500, "{body}");
    std::fs::remove_file(s.state_dir.join("state.json")).unwrap();
    let (status, body) = http_get(&host, port, "/metrics", None).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\nmvnet_scrape_errors_total 1\n"), "{body}");
}
