//! The classifier as the control plane runs it: attached and pinned with
//! the first network on a root, fed with every endpoint, counting exactly,
//! enforcing, and gone with the last network.
use std::time::Duration;

use macvlan_common::{Hook, Verdict};
use mvnet::{
    datapath::pinned::{self, PinnedMaps},
    netlink,
    netns::NetNs,
};
use mvnet_lab::lab::{
    frames::FrameSpec,
    wire::{self, SendPlan},
    Lab, PARENT, UPSTREAM_IF,
};
use serde_json::Value;

use crate::common::{cli::Session, require_root};

pub(crate) fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

pub(crate) fn mac_of(s: &Session, container: &str, net: &str) -> [u8; 6] {
    let i = json(&s.ok(&["container", "inspect", container]));
    let m = i[0]["NetworkSettings"]["Networks"][net]["MacAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    m.parse::<mvnet::model::Mac>().unwrap().octets()
}

/// `--xdp-mode native`: for the tests that assert XDP's counts and drops.
/// Under the default (auto) the classifier runs on TC alone on the lab's
/// veth parent (see `tc_only`), which counts the same frames at TC ingress.
pub(crate) const XDP_NATIVE: [&str; 2] = ["--xdp-mode", "native"];

/// The hook that counts frames from the wire on the classifier pinned in
/// `dir`: XDP, or TC ingress when it runs on TC alone.
pub(crate) fn wire_hook(dir: &std::path::Path) -> Hook {
    if dir.join(pinned::LINK_XDP).exists() {
        Hook::XdpIngress
    } else {
        Hook::TcIngress
    }
}

pub(crate) fn pin_dir(lab: &Lab) -> std::path::PathBuf {
    pinned::pin_dir(pinned::netns_inode(Some(lab.host())).unwrap(), PARENT)
}

fn rx_packets(ns: &NetNs) -> u64 {
    netlink::run(Some(ns), |nl| async move {
        let l = nl.require_link("eth0").await?;
        nl.stats(l.index).await
    })
    .unwrap()
    .rx_packets
}

/// Sends `n` copies of `frame` out of `iface` in `ns`, waiting after each
/// burst until `hook` has classified them all.
pub(crate) fn send(maps: &PinnedMaps, ns: &NetNs, iface: &str, hook: Hook, frame: Vec<u8>, n: u64) {
    let total = |m: &PinnedMaps| m.counters().unwrap().verdicts.total(hook).frames;
    let base = total(maps);
    let frames = [frame];
    wire::send(
        ns,
        iface,
        &SendPlan {
            frames: &frames,
            rounds: n,
            deadline: Duration::from_secs(30),
            burst: 32,
        },
        |sent| total(maps) - base >= sent,
    )
    .unwrap();
}

/// Frames from upstream to `dst` that got past the parent's XDP while `send` ran, as a
/// packet socket on the parent sees them (taps run after XDP, before TC
/// ingress). TC ingress no longer tells: it counts only what XDP did not.
/// Waits up to 2 s for `want` frames.
pub(crate) fn passed_xdp(lab: &Lab, dst: [u8; 6], want: u64, send: impl FnOnce()) -> u64 {
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    std::thread::scope(|s| {
        let capture = s.spawn(|| {
            wire::capture(lab.host(), PARENT, want, Duration::from_secs(2), |f| {
                f.len() >= 12 && f[..6] == dst && f[6..12] == src
            })
        });
        // The socket opens in the capturing thread.
        std::thread::sleep(Duration::from_millis(300));
        send();
        capture.join().unwrap().unwrap()
    })
}

#[test]
fn three_endpoints_on_two_networks_are_counted_exactly_then_enforced() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = pin_dir(&lab);
    s.network("na", "10.91.0.0/24", "eth0", &XDP_NATIVE);
    assert!(
        pinned::is_attached(&dir),
        "classifier not pinned at {}",
        dir.display()
    );
    s.network("nb", "10.92.0.0/24", "eth0", &XDP_NATIVE);
    let names: Vec<String> = ["a1", "a2", "b1"].iter().map(|n| s.name(n)).collect();
    s.container("na", &names[0], &[]);
    s.container("na", &names[1], &[]);
    s.container("nb", &names[2], &[]);
    let macs = [
        mac_of(&s, &names[0], "na"),
        mac_of(&s, &names[1], "na"),
        mac_of(&s, &names[2], "nb"),
    ];
    let mut maps = PinnedMaps::open(&dir).unwrap();
    let slots: Vec<u32> = macs
        .iter()
        .map(|m| {
            maps.endpoints()
                .unwrap()
                .get(*m, 0)
                .expect("endpoint in the map")
                .slot
        })
        .collect();
    assert_eq!(maps.endpoints().unwrap().len(), 3);
    let nss: Vec<NetNs> = names.iter().map(|n| NetNs::named(n).unwrap()).collect();
    let before_rx: Vec<u64> = nss.iter().map(rx_packets).collect();
    let c0 = maps.counters().unwrap();

    // From the wire: a different count to each endpoint and to an unknown MAC.
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let unknown = [0x02, 0x42, 0x0a, 0x5b, 0x00, 0x63];
    for (mac, n) in [(macs[0], 101), (macs[1], 37), (macs[2], 59), (unknown, 23)] {
        send(
            &maps,
            lab.upstream(),
            UPSTREAM_IF,
            Hook::XdpIngress,
            FrameSpec::udp4(mac, src).build().unwrap(),
            n,
        );
    }
    // Bridge mode, locally: a1 sends 13 frames to a2; they re-enter the
    // parent through dev_forward_skb and only TC ingress sees them.
    send(
        &maps,
        &nss[0],
        "eth0",
        Hook::TcIngress,
        FrameSpec::udp4(macs[1], macs[0]).build().unwrap(),
        13,
    );

    let c = maps.counters().unwrap();
    let d = |h, v| c.verdicts.get(h, v).frames - c0.verdicts.get(h, v).frames;
    let ep = |i: usize| {
        let (a, b) = (c.endpoint(slots[i]), c0.endpoint(slots[i]));
        (
            a.rx_wire.frames - b.rx_wire.frames,
            a.rx_local.frames - b.rx_local.frames,
        )
    };
    assert_eq!(ep(0), (101, 0));
    assert_eq!(ep(1), (37, 13));
    assert_eq!(ep(2), (59, 0));
    assert_eq!(d(Hook::XdpIngress, Verdict::Delivered), 101 + 37 + 59);
    assert_eq!(d(Hook::XdpIngress, Verdict::UnknownMac), 23);
    // Each frame counted once: the wire frames at XDP, which marked them
    // for TC ingress; the bridge-mode frames at TC ingress, never at XDP.
    assert_eq!(d(Hook::TcIngress, Verdict::Delivered), 13);
    assert_eq!(
        c.verdicts.total(Hook::TcIngress).frames - c0.verdicts.total(Hook::TcIngress).frames,
        13
    );
    assert_eq!(
        c.vlan(0).rx_xdp.frames - c0.vlan(0).rx_xdp.frames,
        101 + 37 + 59 + 23
    );
    // The kernel delivered exactly as counted.
    let rx: Vec<u64> = nss
        .iter()
        .zip(&before_rx)
        .map(|(ns, b)| rx_packets(ns) - b)
        .collect();
    assert_eq!(rx, [101, 37 + 13, 59]);

    // Enforce on na (both networks share VLAN 0 of eth0, so frames to
    // unknown MACs there are dropped at XDP): valid frames still arrive.
    s.ok(&["network", "update", "--policy", "enforce", "na"]);
    let c1 = maps.counters().unwrap();
    let passed = passed_xdp(&lab, unknown, 29, || {
        send(
            &maps,
            lab.upstream(),
            UPSTREAM_IF,
            Hook::XdpIngress,
            FrameSpec::udp4(unknown, src).build().unwrap(),
            29,
        )
    });
    assert_eq!(passed, 0, "frames to an unknown MAC dropped at XDP");
    send(
        &maps,
        lab.upstream(),
        UPSTREAM_IF,
        Hook::XdpIngress,
        FrameSpec::udp4(macs[2], src).build().unwrap(),
        7,
    );
    let c2 = maps.counters().unwrap();
    let dd = |h, v| c2.verdicts.get(h, v).frames - c1.verdicts.get(h, v).frames;
    assert_eq!(dd(Hook::XdpIngress, Verdict::UnknownMac), 29);
    assert_eq!(dd(Hook::XdpIngress, Verdict::Delivered), 7);
    assert_eq!(
        c2.verdicts.total(Hook::TcIngress).frames - c1.verdicts.total(Hook::TcIngress).frames,
        0
    );
    assert_eq!(rx_packets(&nss[2]) - before_rx[2], 59 + 7);
    s.ok(&["network", "update", "--policy", "observe", "na"]);
    let c3 = maps.counters().unwrap();
    let passed = passed_xdp(&lab, unknown, 3, || {
        send(
            &maps,
            lab.upstream(),
            UPSTREAM_IF,
            Hook::XdpIngress,
            FrameSpec::udp4(unknown, src).build().unwrap(),
            3,
        )
    });
    assert_eq!(passed, 3, "observe again: frames to unknown MACs pass");
    let c4 = maps.counters().unwrap();
    assert_eq!(
        c4.verdicts
            .get(Hook::XdpIngress, Verdict::UnknownMac)
            .frames
            - c3.verdicts
                .get(Hook::XdpIngress, Verdict::UnknownMac)
                .frames,
        3
    );

    // Endpoints leave the map with their links; the classifier leaves with
    // the last network on eth0.
    s.ok(&["container", "stop", &names[0]]);
    assert!(maps.endpoints().unwrap().get(macs[0], 0).is_none());
    for n in &names[1..] {
        s.ok(&["container", "stop", n]);
    }
    for n in &names {
        s.ok(&["container", "rm", n]);
    }
    assert_eq!(maps.endpoints().unwrap().len(), 0);
    s.ok(&["network", "rm", "na"]);
    assert!(pinned::is_attached(&dir));
    s.ok(&["network", "rm", "nb"]);
    assert!(!dir.exists(), "pins left at {}", dir.display());
}

#[test]
fn restore_reattaches_a_lost_classifier_with_its_endpoints() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = pin_dir(&lab);
    s.network(
        "nr",
        "10.93.0.0/24",
        "eth0",
        &["--policy", "enforce", XDP_NATIVE[0], XDP_NATIVE[1]],
    );
    let name = format!("{}-r1", lab.id());
    s.container("nr", &name, &[]);
    let mac = mac_of(&s, &name, "nr");
    // A reboot empties bpffs: detach and unpin behind mvnet's back.
    lab.host()
        .run(|| pinned::detach(PARENT, &dir))
        .unwrap()
        .unwrap();
    assert!(!pinned::is_attached(&dir));
    let out = s.ok(&["restore"]);
    assert!(out.contains("re-attached the classifier to eth0"), "{out}");
    let mut maps = PinnedMaps::open(&dir).unwrap();
    let ep = maps
        .endpoints()
        .unwrap()
        .get(mac, 0)
        .expect("endpoint restored");
    assert_eq!(
        ep.flags & macvlan_common::endpoint_flags::ENFORCE,
        macvlan_common::endpoint_flags::ENFORCE
    );
    // And it classifies again.
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    send(
        &maps,
        lab.upstream(),
        UPSTREAM_IF,
        Hook::XdpIngress,
        FrameSpec::udp4(mac, src).build().unwrap(),
        17,
    );
    assert_eq!(
        maps.counters().unwrap().endpoint(ep.slot).rx_wire.frames,
        17
    );
    // A container whose namespace is gone for good is purged, and its
    // entry leaves the classifier with it.
    mvnet::netns::delete(&name).unwrap();
    let out = s.ok(&["restore"]);
    assert!(out.contains("purged container"), "{out}");
    assert!(maps.endpoints().unwrap().get(mac, 0).is_none());
    s.ok(&["network", "rm", "nr"]);
    assert!(!dir.exists());
}

#[test]
fn verify_reconciles_classifier_and_kernel_counts() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = pin_dir(&lab);
    s.network("nv", "10.94.0.0/24", "eth0", &XDP_NATIVE);
    let a = format!("{}-va", lab.id());
    let b = format!("{}-vb", lab.id());
    s.container("nv", &a, &[]);
    s.container("nv", &b, &[]);
    let (ma, mb) = (mac_of(&s, &a, "nv"), mac_of(&s, &b, "nv"));
    let mut maps = PinnedMaps::open(&dir).unwrap();
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let up = lab.upstream().clone();
    send(
        &maps,
        &up,
        UPSTREAM_IF,
        Hook::XdpIngress,
        FrameSpec::udp4(ma, src).build().unwrap(),
        40,
    );
    send(
        &maps,
        &up,
        UPSTREAM_IF,
        Hook::XdpIngress,
        FrameSpec::udp4(mb, src).build().unwrap(),
        25,
    );
    let na = NetNs::named(&a).unwrap();
    send(
        &maps,
        &na,
        "eth0",
        Hook::TcIngress,
        FrameSpec::udp4(mb, ma).build().unwrap(),
        5,
    );

    let row = |out: &str, name: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name} in {out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let out = s.ok(&["verify", "nv"]);
    assert_eq!(row(&out, &a)[3..6], ["40", "40", "0"], "{out}");
    assert_eq!(row(&out, &b)[3..6], ["30", "30", "0"], "{out}");

    // b's link goes down: the classifier counts 11 more, the kernel drops them.
    let nb = NetNs::named(&b).unwrap();
    netlink::run(Some(&nb), |nl| async move {
        let l = nl.require_link("eth0").await?;
        nl.set_down(l.index).await
    })
    .unwrap();
    send(
        &maps,
        &up,
        UPSTREAM_IF,
        Hook::XdpIngress,
        FrameSpec::udp4(mb, src).build().unwrap(),
        11,
    );
    let out = s.ok(&["verify", "nv"]);
    let rb = row(&out, &b);
    assert_eq!(rb[3..6], ["41", "30", "-11"], "{out}");
    assert!(out.contains("is down"), "{out}");

    // Unexplained: a's entry vanishes behind mvnet's back while 9 frames
    // arrive (the kernel delivers them, the classifier calls them unknown),
    // then comes back at its slot.
    let entry = maps.endpoints().unwrap().get(ma, 0).unwrap();
    maps.endpoints().unwrap().remove(ma, 0).unwrap();
    send(
        &maps,
        &up,
        UPSTREAM_IF,
        Hook::XdpIngress,
        FrameSpec::udp4(ma, src).build().unwrap(),
        9,
    );
    maps.endpoints()
        .unwrap()
        .insert_at(
            mvnet::datapath::EndpointEntry {
                mac: ma,
                vlan: 0,
                ipv4: None,
                ipv6: None,
                enforce: false,
            },
            entry.slot,
        )
        .unwrap();
    let out = s.run(&["verify", "nv"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(row(&text, &a)[3..6], ["40", "49", "9"], "{text}");
    assert!(text.contains("UNEXPLAINED"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("1 endpoint(s) with a difference that has no explanation"));

    for n in [&a, &b] {
        s.ok(&["container", "stop", n]);
        s.ok(&["container", "rm", n]);
    }
    s.ok(&["network", "rm", "nv"]);
}

#[test]
fn forged_source_mac_or_ip_is_counted_and_blocked_when_enforcing() {
    use mvnet_lab::lab::frames::Payload;
    use std::net::{Ipv4Addr, Ipv6Addr};
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = pin_dir(&lab);
    s.network("ns1", "10.95.0.0/24", "eth0", &XDP_NATIVE);
    let name = format!("{}-sp", lab.id());
    s.container("ns1", &name, &["--ip", "10.95.0.2"]);
    let mac = mac_of(&s, &name, "ns1");
    let maps = PinnedMaps::open(&dir).unwrap();
    let ns = NetNs::named(&name).unwrap();
    let up = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let own4 = Ipv4Addr::new(10, 95, 0, 2);
    let gw4 = Ipv4Addr::new(10, 95, 0, 1);
    let udp4 = |src_mac, src| {
        FrameSpec::udp4(up, src_mac)
            .payload(Payload::Udp4 { src, dst: gw4 })
            .build()
            .unwrap()
    };
    let v6 = |src: &str| {
        FrameSpec::udp4(up, mac)
            .payload(Payload::Udp6 {
                src: src.parse::<Ipv6Addr>().unwrap(),
                dst: "2001:db8::1".parse().unwrap(),
            })
            .build()
            .unwrap()
    };
    // (frame, count, spoofed?)
    let cases: Vec<(Vec<u8>, u64, bool)> = vec![
        (udp4(mac, own4), 21, false),
        (udp4([0x02, 0x66, 0, 0, 0, 1], own4), 5, true),
        (udp4(mac, Ipv4Addr::new(10, 95, 0, 77)), 7, true),
        (
            FrameSpec::udp4([0xff; 6], mac)
                .payload(Payload::Arp {
                    sender: Ipv4Addr::new(10, 95, 0, 88),
                    target: gw4,
                })
                .build()
                .unwrap(),
            3,
            true,
        ),
        (
            FrameSpec::udp4([0xff; 6], mac)
                .payload(Payload::Arp {
                    sender: own4,
                    target: gw4,
                })
                .build()
                .unwrap(),
            4,
            false,
        ),
        (v6("2001:db8::66"), 2, true),
        (v6("fe80::42:aff:fe5f:2"), 6, false),
    ];
    let arrivals = |frame: &[u8], n: u64| -> u64 {
        let upns = lab.upstream().clone();
        let want = frame.to_vec();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|sc| {
            let cap = sc.spawn(move || {
                wire::capture_when_ready(
                    &upns,
                    UPSTREAM_IF,
                    n,
                    Duration::from_secs(3),
                    |f, _| f == want.as_slice(),
                    move || tx.send(()).unwrap(),
                )
                .unwrap()
            });
            rx.recv_timeout(Duration::from_secs(30))
                .expect("capture socket ready");
            let (ok, dropped) = wire::send_each_once(&ns, "eth0", frame, n).unwrap();
            assert_eq!(ok + dropped, n);
            cap.join().unwrap()
        })
    };
    for policy in ["observe", "enforce"] {
        s.ok(&["network", "update", "--policy", policy, "ns1"]);
        for (frame, n, spoofed) in &cases {
            let c0 = maps.counters().unwrap();
            let got = arrivals(frame, *n);
            let c1 = maps.counters().unwrap();
            let d = |v| {
                c1.verdicts.get(Hook::TcEgress, v).frames
                    - c0.verdicts.get(Hook::TcEgress, v).frames
            };
            let (want_spoofed, want_valid) = if *spoofed { (*n, 0) } else { (0, *n) };
            assert_eq!(
                d(Verdict::Spoofed),
                want_spoofed,
                "{policy}: spoofed count for {frame:02x?}"
            );
            assert_eq!(
                d(Verdict::Delivered),
                want_valid,
                "{policy}: valid count for {frame:02x?}"
            );
            let expect_arrivals = if policy == "enforce" && *spoofed {
                0
            } else {
                *n
            };
            assert_eq!(
                got, expect_arrivals,
                "{policy}: arrivals upstream for {frame:02x?}"
            );
        }
    }
    s.ok(&["container", "stop", &name]);
    s.ok(&["container", "rm", &name]);
    s.ok(&["network", "rm", "ns1"]);
}

#[test]
fn monitor_streams_rate_limited_anomaly_events() {
    use mvnet_lab::lab::frames::{Payload, Tag};
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("nm", "10.96.0.0/24", "eth0", &XDP_NATIVE);
    let name = format!("{}-mo", lab.id());
    s.container("nm", &name, &["--ip", "10.96.0.2"]);
    let mac = mac_of(&s, &name, "nm");
    let maps = PinnedMaps::open(&pin_dir(&lab)).unwrap();
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let unknown = [0x02, 0x42, 0x0a, 0x60, 0x00, 0x63];
    let ns = NetNs::named(&name).unwrap();
    let out = std::thread::scope(|sc| {
        let mon = sc.spawn(|| s.run(&["monitor", "--duration", "5"]));
        std::thread::sleep(Duration::from_millis(1500));
        // Floods: 50 frames each, one event each (per source and kind).
        send(
            &maps,
            lab.upstream(),
            UPSTREAM_IF,
            Hook::XdpIngress,
            FrameSpec::udp4(unknown, src).build().unwrap(),
            50,
        );
        let tagged = FrameSpec::udp4(mac, src)
            .tagged(&[Tag::dot1q(10)])
            .build()
            .unwrap();
        send(
            &maps,
            lab.upstream(),
            UPSTREAM_IF,
            Hook::XdpIngress,
            tagged,
            50,
        );
        let forged = FrameSpec::udp4(src, mac)
            .payload(Payload::Udp4 {
                src: "10.96.0.66".parse().unwrap(),
                dst: "10.96.0.1".parse().unwrap(),
            })
            .build()
            .unwrap();
        wire::send_each_once(&ns, "eth0", &forged, 50).unwrap();
        mon.join().unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    let fmt = |m: &[u8; 6]| mvnet::model::Mac::new(*m).to_string();
    assert_eq!(
        count(&format!(
            "unknown_mac dst={} src={} vlan=0",
            fmt(&unknown),
            fmt(&src)
        )),
        1,
        "{text}"
    );
    assert_eq!(
        count(&format!(
            "vlan_mismatch dst={} src={} vlan=10",
            fmt(&mac),
            fmt(&src)
        )),
        1,
        "{text}"
    );
    assert_eq!(
        count(&format!("spoofed src={} vlan=0", fmt(&mac))),
        1,
        "{text}"
    );
    assert!(text.lines().all(|l| l.contains(" eth0 warn ")), "{text}");
    s.ok(&["container", "stop", &name]);
    s.ok(&["container", "rm", &name]);
    s.ok(&["network", "rm", "nm"]);
}

#[test]
fn host_traffic_to_the_parent_passes_under_enforce() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network(
        "ne",
        "10.97.0.0/24",
        "eth0",
        &["--policy", "enforce", XDP_NATIVE[0], XDP_NATIVE[1]],
    );
    let maps = PinnedMaps::open(&pin_dir(&lab)).unwrap();
    let parent = lab.mac_of(lab.host(), PARENT).unwrap();
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let c0 = maps.counters().unwrap();
    let passed = passed_xdp(&lab, parent, 19, || {
        send(
            &maps,
            lab.upstream(),
            UPSTREAM_IF,
            Hook::XdpIngress,
            FrameSpec::udp4(parent, src).build().unwrap(),
            19,
        )
    });
    let c1 = maps.counters().unwrap();
    let d = |h, v| c1.verdicts.get(h, v).frames - c0.verdicts.get(h, v).frames;
    assert_eq!(d(Hook::XdpIngress, Verdict::Delivered), 19);
    // Not dropped at XDP, and counted there only.
    assert_eq!(passed, 19);
    assert_eq!(d(Hook::TcIngress, Verdict::Delivered), 0);
    s.ok(&["network", "rm", "ne"]);
}

#[test]
fn broadcast_and_multicast_follow_the_configured_rule_under_enforce() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network(
        "nb",
        "10.99.0.0/24",
        "eth0",
        &[
            "--policy",
            "enforce",
            "--multicast",
            "drop",
            XDP_NATIVE[0],
            XDP_NATIVE[1],
        ],
    );
    let maps = PinnedMaps::open(&pin_dir(&lab)).unwrap();
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let mcast = FrameSpec::udp4([0x01, 0x00, 0x5e, 0, 0, 7], src)
        .build()
        .unwrap();
    let bcast = FrameSpec::udp4([0xff; 6], src).build().unwrap();
    // Returns (counted at XDP, got past XDP) for n frames; TC ingress
    // counts none of them (XDP did).
    let through = |frame: &[u8], v: Verdict, n: u64| {
        let c0 = maps.counters().unwrap();
        let dst: [u8; 6] = frame[..6].try_into().unwrap();
        let passed = passed_xdp(&lab, dst, n, || {
            send(
                &maps,
                lab.upstream(),
                UPSTREAM_IF,
                Hook::XdpIngress,
                frame.to_vec(),
                n,
            )
        });
        let c1 = maps.counters().unwrap();
        assert_eq!(
            c1.verdicts.total(Hook::TcIngress).frames - c0.verdicts.total(Hook::TcIngress).frames,
            0
        );
        (
            c1.verdicts.get(Hook::XdpIngress, v).frames
                - c0.verdicts.get(Hook::XdpIngress, v).frames,
            passed,
        )
    };
    assert_eq!(
        through(&mcast, Verdict::Multicast, 9),
        (9, 0),
        "multicast dropped"
    );
    assert_eq!(
        through(&bcast, Verdict::Broadcast, 8),
        (8, 8),
        "broadcast passes"
    );
    s.ok(&[
        "network",
        "update",
        "--broadcast",
        "drop",
        "--multicast",
        "pass",
        "nb",
    ]);
    assert_eq!(through(&mcast, Verdict::Multicast, 7), (7, 7));
    assert_eq!(through(&bcast, Verdict::Broadcast, 6), (6, 0));
    // Under observe the rule is inert.
    s.ok(&["network", "update", "--policy", "observe", "nb"]);
    assert_eq!(through(&bcast, Verdict::Broadcast, 5), (5, 5));
    let err = s.fails(&["network", "update", "--multicast", "sometimes", "nb"]);
    assert!(
        err.starts_with(
            "error: invalid value 'sometimes' for '--multicast <MULTICAST>'\n  \
             [possible values: pass, drop]\n"
        ),
        "{err}"
    );
    s.ok(&["network", "rm", "nb"]);
}

#[test]
fn a_full_endpoint_table_is_a_clear_error() {
    require_root();
    let mut ebpf = mvnet::datapath::load().unwrap();
    let mut table = mvnet::datapath::endpoint_table(&mut ebpf).unwrap();
    let entry = |i: u32| {
        let b = i.to_be_bytes();
        mvnet::datapath::EndpointEntry {
            mac: [0x02, 0x42, b[0], b[1], b[2], b[3]],
            vlan: 0,
            ipv4: None,
            ipv6: None,
            enforce: false,
        }
    };
    for i in 0..macvlan_common::DEFAULT_ENDPOINTS {
        table.insert_at(entry(i), i).unwrap();
    }
    let err = table
        .insert(entry(macvlan_common::DEFAULT_ENDPOINTS))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "all 4096 endpoint slots of this parent's classifier are in use (its --max-endpoints is \
         4096); remove an endpoint, or remove the parent's networks and create them again with \
         a larger --max-endpoints (up to 65536)"
    );
}

/// `--max-endpoints`: the first network on a root sizes its classifier
/// (the pinned maps' `max_entries` record it, `inspect` and `stats` show
/// it); another network on that root with another value is refused and
/// leaves nothing; a full table names the option; `restore` attaches
/// the classifier again with the recorded capacity.
#[test]
fn max_endpoints_sizes_the_root_once_and_a_full_table_names_it() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = pin_dir(&lab);
    let err = s.fails(&[
        "network",
        "create",
        "--subnet=10.95.0.0/24",
        "--max-endpoints",
        "70000",
        "-o",
        "parent=eth0",
        "nbad",
    ]);
    assert_eq!(
        err.trim_end(),
        "mvnet: error: --max-endpoints 70000 is out of range; give a capacity from 1 to 65536 (default 4096)"
    );
    assert!(!dir.exists(), "a refused create attached the classifier");
    s.network("m4", "10.95.0.0/24", "eth0", &["--max-endpoints", "4"]);
    assert_eq!(PinnedMaps::open(&dir).unwrap().capacity().unwrap(), 4);
    let inspect = json(&s.ok(&["network", "inspect", "m4"]));
    assert_eq!(inspect[0]["Classifier"]["MaxEndpoints"], 4, "{inspect}");

    let err = s.fails(&[
        "network",
        "create",
        "--subnet=10.96.0.0/24",
        "--max-endpoints",
        "8",
        "-o",
        "parent=eth0",
        "m8",
    ]);
    assert_eq!(
        err.trim_end(),
        "mvnet: error: the classifier on eth0 was attached with --max-endpoints 4 (shared by network m4), \
         and every network on one root device shares it; omit --max-endpoints or give 4, or \
         remove the networks on eth0 first to attach it with 8"
    );
    assert!(!s.ok(&["network", "ls"]).contains("m8"));
    // Without the option a second network takes the root's capacity.
    s.network("m4b", "10.96.0.0/24", "eth0", &[]);
    let inspect = json(&s.ok(&["network", "inspect", "m4b"]));
    assert_eq!(inspect[0]["Classifier"]["MaxEndpoints"], 4, "{inspect}");

    let names: Vec<String> = (0..5).map(|i| s.name(&format!("m{i}"))).collect();
    for (i, n) in names[..4].iter().enumerate() {
        s.container(if i % 2 == 0 { "m4" } else { "m4b" }, n, &[]);
    }
    let err = s.fails(&["run", "-d", "--network", "m4", "--name", &names[4]]);
    assert!(
        err.contains(
            "all 4 endpoint slots of this parent's classifier are in use (its --max-endpoints \
             is 4); remove an endpoint, or remove the parent's networks and create them again \
             with a larger --max-endpoints (up to 65536)"
        ),
        "{err}"
    );
    assert!(!s.ok(&["container", "ls", "-a"]).contains(&names[4]));
    assert!(!mvnet::netns::list().contains(&names[4]));
    let stats = s.ok(&["stats"]);
    assert!(
        stats.contains("ROOT eth0: classifier attached, 4 of 4 endpoint slots in use"),
        "{stats}"
    );

    // A reboot empties bpffs: restore attaches it again with 4 slots.
    lab.host()
        .run(|| pinned::detach(PARENT, &dir))
        .unwrap()
        .unwrap();
    let out = s.ok(&["restore"]);
    assert!(out.contains("re-attached the classifier to eth0"), "{out}");
    let mut maps = PinnedMaps::open(&dir).unwrap();
    assert_eq!(maps.capacity().unwrap(), 4);
    assert_eq!(maps.endpoints().unwrap().len(), 4);
    drop(maps);
    for n in &names[..4] {
        s.ok(&["container", "stop", n]);
        s.ok(&["container", "rm", n]);
    }
    s.ok(&["network", "rm", "m4"]);
    s.ok(&["network", "rm", "m4b"]);
    assert!(!dir.exists(), "pins left at {}", dir.display());
}
