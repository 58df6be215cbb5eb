//! VM integration tests: run by `cargo xtask test` inside a virtme-ng VM,
//! once on each Debian kernel (6.1, which has no tcx so TC programs go
//! through clsact, and 6.12); both have 802.1Q and pktgen as modules.
//! Built with `test = false`; a plain `cargo test` does not run them.
#[path = "../common/mod.rs"]
mod common;

use std::process::Command;

use std::{net::UdpSocket, time::Duration};

use common::cli::Session;
use mvnet::{
    datapath::{Classifier, XdpMode},
    netlink, netns,
};
use mvnet_lab::lab::{smoke, Lab, PARENT, UPSTREAM_IF};
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON ({e}): {s}"))
}

fn in_vm() {
    common::require_root();
    assert!(
        std::env::var_os("MVNET_IN_VM").is_some(),
        "the VM tests need 802.1Q and pktgen; run them with `cargo xtask test` (it boots a Debian kernel)"
    );
}

fn modprobe(module: &str) {
    let status = Command::new("modprobe").arg(module).status().unwrap();
    assert!(status.success(), "modprobe {module} failed");
}

/// Frames classified from the wire on the root whose pins `maps` are, by
/// XDP or TC ingress (each frame at one: with 802.1Q networks on the root
/// XDP leaves tagged frames to TC), every verdict.
fn ingress_frames(maps: &mvnet::datapath::pinned::PinnedMaps) -> u64 {
    let v = maps.counters().unwrap().verdicts;
    v.total(macvlan_common::Hook::XdpIngress).frames
        + v.total(macvlan_common::Hook::TcIngress).frames
}

/// Sends `frames` `rounds` times from the lab's upstream to the parent,
/// each burst only once the classifier has counted what was sent before it.
fn send_from_upstream(
    lab: &Lab,
    maps: &mvnet::datapath::pinned::PinnedMaps,
    frames: &[Vec<u8>],
    rounds: u64,
) {
    use mvnet_lab::lab::wire::{self, SendPlan};
    let base = ingress_frames(maps);
    wire::send(
        lab.upstream(),
        UPSTREAM_IF,
        &SendPlan {
            frames,
            rounds,
            deadline: Duration::from_secs(60),
            burst: 16,
        },
        |sent| ingress_frames(maps) - base >= sent,
    )
    .unwrap();
}

#[test]
fn kernel_is_the_debian_one() {
    in_vm();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(release.trim().ends_with("-amd64"), "running {release}");
}

#[test]
fn programs_load_and_attach_on_this_kernel() {
    in_vm();
    let lab = Lab::new().unwrap();
    let dp = Classifier::attach(Some(lab.host()), PARENT, XdpMode::Auto).unwrap();
    // Auto on a veth: TC alone where tcx links can be pinned (6.6+, the
    // 6.12 guest), native XDP before (6.1).
    let tcx = aya::util::KernelVersion::current()
        .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
    let want = if tcx { None } else { Some(XdpMode::Native) };
    assert_eq!(dp.xdp_mode(), want);
    assert!(dp.is_attached());
    dp.detach().unwrap();
}

#[test]
fn smoke_native_xdp_counts_exactly() {
    in_vm();
    let report = smoke::run(XdpMode::Native, 1000, 500).unwrap();
    print!("{}", report.render());
    assert_eq!(report.child_rx_wire, 1000);
    assert_eq!(report.xdp_unknown_mac, 500);
    assert_eq!(report.kernel_rx_after - report.kernel_rx_before, 1000);
    report.check().unwrap();
}

#[test]
fn vlan_link_is_created_by_our_netlink_code() {
    in_vm();
    modprobe("8021q");
    let lab = Lab::new().unwrap();
    let link = netlink::run(Some(lab.host()), |nl| async move {
        let parent = nl.require_link(PARENT).await?;
        nl.add_vlan("eth0.10", parent.index, 10).await?;
        let vlan = nl.require_link("eth0.10").await?;
        nl.set_up(vlan.index).await?;
        nl.require_link("eth0.10").await
    })
    .unwrap();
    assert_eq!(link.name, "eth0.10");
    assert!(link.up);
    // Checked with iproute2 too: it is an 802.1Q link with id 10.
    let out = Command::new("nsenter")
        .arg(format!("--net={}", lab.host().path().display()))
        .args(["ip", "-d", "link", "show", "eth0.10"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("vlan protocol 802.1Q id 10"), "{text}");
}

#[test]
fn pktgen_can_be_loaded() {
    in_vm();
    modprobe("pktgen");
    assert!(std::path::Path::new("/proc/net/pktgen/pgctrl").exists());
}

/// A network without parent gets a dummy of its own and is otherwise as any
/// other, as Docker 20.10's driver makes it (the parity suite's
/// `nil-parent`, moby `testMacvlanNilParent`): not internal, its gateway in
/// inspect and a default route via it. With `--internal` neither (moby
/// `testMacvlanInternalMode`).
#[test]
fn network_without_parent_gets_a_dummy() {
    in_vm();
    modprobe("dummy");
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let mut dummies = Vec::new();
    for (net, internal) in [("open-net", false), ("internal-net", true)] {
        let subnet = if internal {
            "--subnet=10.78.0.0/24"
        } else {
            "--subnet=10.77.0.0/24"
        };
        let mut args = vec!["network", "create", subnet];
        if internal {
            args.push("--internal");
        }
        args.push(net);
        let id = s.ok(&args);
        let dummy = format!("dm-{}", &id.trim()[..12]);
        assert!(s.links().contains(&dummy), "{:?}", s.links());
        let n = json(&s.ok(&["network", "inspect", net]));
        assert_eq!(n[0]["Internal"], internal, "{net}");
        // Options as given (none), as Docker's inspect shows them.
        assert_eq!(n[0]["Options"], serde_json::json!({}), "{net}");
        dummies.push(dummy);
        let name = format!("{}-{net}", lab.id());
        s.container(net, &name, &[]);
        let c = json(&s.ok(&["container", "inspect", &name]));
        let route = s.ok(&["exec", &name, "ip", "-4", "route", "show", "default"]);
        if internal {
            assert_eq!(c[0]["NetworkSettings"]["Networks"][net]["Gateway"], "");
            assert_eq!(route.trim(), "", "internal network got a default route");
        } else {
            assert_eq!(
                c[0]["NetworkSettings"]["Networks"][net]["Gateway"],
                "10.77.0.1"
            );
            // (`ip` omits `proto boot`, and adds `linkdown` if the link is.)
            let words: Vec<&str> = route.split_whitespace().collect();
            assert_eq!(route.lines().count(), 1, "{route}");
            assert_eq!(
                words[..5],
                ["default", "via", "10.77.0.1", "dev", "eth0"],
                "{route}"
            );
        }
        s.ok(&["container", "stop", &name]);
        s.ok(&["container", "rm", &name]);
    }
    for (net, dummy) in ["open-net", "internal-net"].iter().zip(&dummies) {
        s.ok(&["network", "rm", net]);
        assert!(!s.links().contains(dummy), "{:?}", s.links());
    }
    assert_eq!(s.links(), ["eth0", "lo"]);
}

/// Unicast frames the kernel delivered to `eth0` in `ns` (a macvlan
/// counts broadcast and multicast copies in `multicast`), as `verify`
/// reads them.
fn unicast_rx(ns: &netns::NetNs) -> u64 {
    let st = netlink::run(Some(ns), |nl| async move {
        let l = nl.require_link("eth0").await?;
        nl.stats(l.index).await
    })
    .unwrap();
    st.rx_packets - st.multicast
}

/// Gives upstream a VLAN `vid` interface with `gateway/24`, as a trunk port
/// of a real switch would carry.
fn upstream_vlan(lab: &Lab, vid: u16, gateway: &str) {
    let gw: std::net::IpAddr = gateway.parse().unwrap();
    netlink::run(Some(lab.upstream()), move |nl| async move {
        let wire = nl.require_link(UPSTREAM_IF).await?;
        let name = format!("wire0.{vid}");
        nl.add_vlan(&name, wire.index, vid).await?;
        let l = nl.require_link(&name).await?;
        nl.add_address(l.index, gw, 24).await?;
        nl.set_up(l.index).await
    })
    .unwrap();
}

/// UDP round trip from container `name` to `gateway`:4789 in upstream.
/// Returns whether the echo came back within the timeout.
fn round_trip(lab: &Lab, name: &str, gateway: &str) -> bool {
    let gw = gateway.to_owned();
    let server = lab
        .upstream()
        .run(move || {
            let s = UdpSocket::bind(format!("{gw}:4789")).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .unwrap();
    let cns = netns::NetNs::named(name).unwrap();
    let gw = gateway.to_owned();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut buf = [0u8; 64];
            if let Ok((n, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&buf[..n], from);
            }
        });
        cns.run(move || {
            let c = UdpSocket::bind("0.0.0.0:0").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.send_to(b"ping", format!("{gw}:4789")).unwrap();
            let mut buf = [0u8; 64];
            matches!(c.recv(&mut buf), Ok(4))
        })
        .unwrap()
    })
}

/// A peer that sends through a VLAN device of its own (a trunk port, as
/// `upstream_vlan` builds it) hands the veth its tag in skb metadata, where
/// XDP cannot see it. On an enforcing 802.1Q network with XDP attached,
/// XDP used to take such a frame for an untagged one to a VLAN 10
/// endpoint's MAC and drop it as a VLAN mismatch: nothing on VLAN 10 got
/// in. XDP now leaves frames off its fast path to TC ingress, which sees
/// the tag: the round trip works and every frame the kernel delivered is
/// counted once.
#[test]
fn an_enforcing_vlan_network_takes_the_tags_a_peer_leaves_in_metadata() {
    use macvlan_common::{Hook, Verdict};
    use mvnet::datapath::pinned::{self, PinnedMaps};
    in_vm();
    modprobe("8021q");
    let lab = Lab::new().unwrap();
    upstream_vlan(&lab, 10, "172.16.10.1");
    let s = Session::new(&lab);
    s.network(
        "e10",
        "172.16.10.0/24",
        "eth0.10",
        &[
            "--gateway=172.16.10.1",
            "--policy",
            "enforce",
            "--xdp-mode",
            "native",
        ],
    );
    let c = format!("{}-e10", lab.id());
    s.container("e10", &c, &[]);
    let dir = pinned::pin_dir(pinned::netns_inode(Some(lab.host())).unwrap(), PARENT);
    let maps = PinnedMaps::open(&dir).unwrap();
    let slot = maps
        .endpoints_ro()
        .unwrap()
        .get([0x02, 0x42, 0xac, 0x10, 0x0a, 0x02], 10)
        .expect("entry on VLAN 10")
        .slot;
    let ns = netns::NetNs::named(&c).unwrap();
    let rx = || unicast_rx(&ns);
    let (rx0, c0) = (rx(), maps.counters().unwrap());
    for round in 0..3 {
        assert!(
            round_trip(&lab, &c, "172.16.10.1"),
            "no round trip on enforcing VLAN 10 (round {round})"
        );
    }
    let (rx1, c1) = (rx(), maps.counters().unwrap());
    let d = |h, v| c1.verdicts.get(h, v).frames - c0.verdicts.get(h, v).frames;
    // The ARP reply and three echoes at least, all counted at TC ingress
    // on VLAN 10 for the container, none at XDP, none a mismatch.
    let delivered = c1.endpoint(slot).rx_wire.frames - c0.endpoint(slot).rx_wire.frames;
    assert!(delivered >= 4, "{delivered}");
    assert_eq!(delivered, rx1 - rx0, "counted = delivered by the kernel");
    assert_eq!(d(Hook::TcIngress, Verdict::Delivered), delivered);
    assert_eq!(
        c1.vlan(10).rx_tc.frames - c0.vlan(10).rx_tc.frames,
        delivered
    );
    for v in [
        Verdict::Delivered,
        Verdict::VlanMismatch,
        Verdict::UnknownMac,
    ] {
        assert_eq!(d(Hook::XdpIngress, v), 0, "{v:?} at XDP");
    }
    assert_eq!(d(Hook::TcIngress, Verdict::VlanMismatch), 0);
    let out = s.ok(&["verify"]);
    assert!(!out.contains("UNEXPLAINED"), "{out}");
    drop(maps);
    s.ok(&["container", "rm", "--force", &c]);
    s.ok(&["network", "rm", "e10"]);
    assert!(!dir.exists());
}

#[test]
fn tutorial_8021q_trunked_example_end_to_end() {
    in_vm();
    modprobe("8021q");
    let lab = Lab::new().unwrap();
    upstream_vlan(&lab, 10, "172.16.10.1");
    upstream_vlan(&lab, 20, "172.16.20.1");
    let s = Session::new(&lab);
    s.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet=172.16.10.0/24",
        "--gateway=172.16.10.1",
        "-o",
        "parent=eth0.10",
        "my-8021q-macvlan-net",
    ]);
    assert!(s.links().contains(&"eth0.10".to_owned()), "{:?}", s.links());
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", lab.host().path().display()))
        .args(["ip", "-d", "link", "show", "eth0.10"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("vlan protocol 802.1Q id 10"), "{text}");
    s.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet=172.16.20.0/24",
        "--gateway=172.16.20.1",
        "-o",
        "parent=eth0.20",
        "my-8021q-macvlan-net-20",
    ]);
    let c10 = format!("{}-c10", lab.id());
    let c20 = format!("{}-c20", lab.id());
    s.ok(&[
        "run",
        "--rm",
        "-dit",
        "--network",
        "my-8021q-macvlan-net",
        "--name",
        &c10,
    ]);
    s.ok(&[
        "run",
        "--rm",
        "-dit",
        "--network",
        "my-8021q-macvlan-net-20",
        "--name",
        &c20,
    ]);
    let i = json(&s.ok(&["container", "inspect", &c10]));
    let n = &i[0]["NetworkSettings"]["Networks"]["my-8021q-macvlan-net"];
    assert_eq!(n["IPAddress"], "172.16.10.2");
    assert_eq!(n["MacAddress"], "02:42:ac:10:0a:02");
    // Tagged traffic: the container reaches the gateway that only exists
    // on upstream's VLAN 10 interface; on the wire, every frame from the
    // container carries tag 10 (checked by capture on upstream's wire0).
    let c10_mac = [0x02, 0x42, 0xac, 0x10, 0x0a, 0x02];
    let untagged = std::sync::atomic::AtomicU64::new(0);
    let up = lab.upstream().clone();
    let tagged = std::thread::scope(|sc| {
        let cap = sc.spawn(|| {
            mvnet_lab::lab::wire::capture_with_vlan(
                &up,
                UPSTREAM_IF,
                2,
                Duration::from_secs(15),
                |f, tag| {
                    if f.len() < 16 || f[6..12] != c10_mac {
                        return false;
                    }
                    let vid = match tag {
                        Some(t) => Some(t.vid),
                        None if f[12..14] == [0x81, 0x00] => {
                            Some(u16::from_be_bytes([f[14], f[15]]) & 0xfff)
                        }
                        None => None,
                    };
                    if vid.is_none() {
                        untagged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    vid == Some(10)
                },
            )
            .unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            round_trip(&lab, &c10, "172.16.10.1"),
            "no round trip on VLAN 10"
        );
        cap.join().unwrap()
    });
    // The ARP request and the UDP datagram at least, all tagged 10.
    assert!(
        tagged >= 2,
        "only {tagged} frames tagged 10 seen on the wire"
    );
    assert_eq!(
        untagged.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "untagged frames from the VLAN 10 container on the wire"
    );
    assert!(
        round_trip(&lab, &c20, "172.16.20.1"),
        "no round trip on VLAN 20"
    );
    // The two VLAN networks are isolated: c10 cannot reach c20.
    let to_other = s.run(&["exec", &c10, "ip", "route", "get", "172.16.20.2"]);
    assert!(String::from_utf8_lossy(&to_other.stdout).contains("via 172.16.10.1"));
    s.ok(&["container", "stop", &c10]);
    s.ok(&["container", "stop", &c20]);
    s.ok(&["network", "rm", "my-8021q-macvlan-net"]);
    assert!(
        !s.links().contains(&"eth0.10".to_owned()),
        "eth0.10 left behind"
    );
    s.ok(&["network", "rm", "my-8021q-macvlan-net-20"]);
    assert_eq!(s.links(), ["eth0", "lo"]);
}

#[test]
fn tutorial_walkthrough_runs_both_examples() {
    in_vm();
    modprobe("8021q");
    let out = std::process::Command::new(common::cli::mvnet_bin())
        .args(["lab", "tutorial"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("\"MacAddress\": \"02:42:ac:10:56:02\""),
        "{text}"
    );
    assert!(text.contains("$ mvnet network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0.10 my-8021q-macvlan-net"), "{text}");
    assert!(text.contains("default via 172.16.86.1 dev eth0"), "{text}");
    // The bridge example's traffic: 100 frames to the container, counted
    // and delivered exactly, and verify agreeing.
    assert!(
        text.contains("exact accounting: PASS (sent = counted = delivered = 100 valid frames"),
        "{text}"
    );
    assert!(text.contains("my-macvlan-alpine        my-macvlan-net   02:42:ac:10:56:02        100        100        0"), "{text}");
    assert!(!text.contains("no 802.1Q support"), "{text}");
    assert!(text.contains("Tutorial done"), "{text}");
}

#[test]
fn a_preexisting_vlan_parent_is_never_deleted() {
    in_vm();
    modprobe("8021q");
    let lab = Lab::new().unwrap();
    netlink::run(Some(lab.host()), |nl| async move {
        let p = nl.require_link(PARENT).await?;
        nl.add_vlan("eth0.30", p.index, 30).await
    })
    .unwrap();
    let s = Session::new(&lab);
    s.network("n30", "10.30.0.0/24", "eth0.30", &[]);
    s.ok(&["network", "rm", "n30"]);
    assert!(
        s.links().contains(&"eth0.30".to_owned()),
        "a pre-existing eth0.30 was deleted"
    );
}

#[test]
fn restore_recreates_a_lost_vlan_parent() {
    in_vm();
    modprobe("8021q");
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("n40", "10.40.0.0/24", "eth0.40", &[]);
    netlink::run(Some(lab.host()), |nl| async move {
        let l = nl.require_link("eth0.40").await?;
        nl.delete(l.index).await
    })
    .unwrap();
    let out = s.ok(&["restore"]);
    assert!(out.contains("recreated parent eth0.40"), "{out}");
    assert!(s.links().contains(&"eth0.40".to_owned()));
    s.ok(&["network", "rm", "n40"]);
    assert_eq!(s.links(), ["eth0", "lo"]);
}

#[test]
fn trunked_vlans_are_counted_per_vlan_and_endpoint() {
    use macvlan_common::{Hook, Verdict};
    use mvnet::datapath::pinned::{self, PinnedMaps};
    use mvnet_lab::lab::frames::{FrameSpec, Tag};
    in_vm();
    modprobe("8021q");
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    // With XDP attached (auto: TC alone on a veth from 6.6), which leaves
    // tagged frames to TC ingress on a root with 802.1Q networks.
    s.network("v10", "10.10.0.0/24", "eth0.10", &["--xdp-mode", "native"]);
    s.network("v20", "10.20.0.0/24", "eth0.20", &["--xdp-mode", "native"]);
    let c10 = format!("{}-t10", lab.id());
    let c20 = format!("{}-t20", lab.id());
    s.container("v10", &c10, &[]);
    s.container("v20", &c20, &[]);
    let (m10, m20) = (
        [0x02, 0x42, 0x0a, 0x0a, 0, 2],
        [0x02, 0x42, 0x0a, 0x14, 0, 2],
    );
    // One classifier, on eth0 where the tags are visible.
    let dir = pinned::pin_dir(pinned::netns_inode(Some(lab.host())).unwrap(), PARENT);
    let maps = PinnedMaps::open(&dir).unwrap();
    let slot = |mac, vlan| {
        maps.endpoints_ro()
            .unwrap()
            .get(mac, vlan)
            .expect("endpoint")
            .slot
    };
    let (s10, s20) = (slot(m10, 10), slot(m20, 20));
    let rx = |name: &str| {
        let ns = netns::NetNs::named(name).unwrap();
        netlink::run(Some(&ns), |nl| async move {
            let l = nl.require_link("eth0").await?;
            nl.stats(l.index).await
        })
        .unwrap()
        .rx_packets
    };
    let (rx10, rx20) = (rx(&c10), rx(&c20));
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let c0 = maps.counters().unwrap();
    for (dst, vid, n) in [
        (m10, 10, 31u64),
        (m20, 20, 17),
        (m20, 10, 11),
        ([0x02, 0x42, 0, 0, 0, 9], 10, 5),
    ] {
        let frames = [FrameSpec::udp4(dst, src)
            .tagged(&[Tag::dot1q(vid)])
            .build()
            .unwrap()];
        send_from_upstream(&lab, &maps, &frames, n);
    }
    let c = maps.counters().unwrap();
    let d =
        |v| c.verdicts.get(Hook::TcIngress, v).frames - c0.verdicts.get(Hook::TcIngress, v).frames;
    assert_eq!(d(Verdict::Delivered), 31 + 17);
    assert_eq!(
        d(Verdict::VlanMismatch),
        11,
        "VLAN 20's endpoint tagged 10 is a mismatch"
    );
    assert_eq!(d(Verdict::UnknownMac), 5);
    assert_eq!(
        c.endpoint(s10).rx_wire.frames - c0.endpoint(s10).rx_wire.frames,
        31
    );
    assert_eq!(
        c.endpoint(s20).rx_wire.frames - c0.endpoint(s20).rx_wire.frames,
        17
    );
    assert_eq!(
        c.vlan(10).rx_tc.frames - c0.vlan(10).rx_tc.frames,
        31 + 11 + 5
    );
    assert_eq!(c.vlan(20).rx_tc.frames - c0.vlan(20).rx_tc.frames, 17);
    // Counted once, at TC ingress: XDP left every tagged frame to it
    // unmarked (`VLANS_AT_TC`) and counted none of them.
    assert_eq!(
        c.verdicts.total(Hook::XdpIngress).frames - c0.verdicts.total(Hook::XdpIngress).frames,
        0
    );
    assert_eq!(c.vlan(10).rx_xdp.frames - c0.vlan(10).rx_xdp.frames, 0);
    // The kernel delivered exactly the valid ones.
    assert_eq!(rx(&c10) - rx10, 31);
    assert_eq!(rx(&c20) - rx20, 17);
    let out = s.ok(&["verify"]);
    assert!(!out.contains("UNEXPLAINED"), "{out}");
    for n in [&c10, &c20] {
        s.ok(&["container", "stop", n]);
        s.ok(&["container", "rm", n]);
    }
    s.ok(&["network", "rm", "v10", "v20"]);
    assert!(!dir.exists());
    assert_eq!(s.links(), ["eth0", "lo"]);
}

/// Two containers of one 802.1Q network talking: macvlan in bridge mode
/// hands their unicast over through `eth0.10`, never through the root, so
/// no hook there sees it; the sender's device check counts it for the
/// receiver (`rx_local`, at `tc_ingress`), invalid frames passed under
/// observe too. Each container's count equals the kernel's unicast
/// delivery, and `verify` agrees (it used to find the kernel ahead,
/// unexplained). Removing the network leaves nothing of its VLAN in the
/// classifier's policy for `restore` to set.
#[test]
fn bridge_mode_frames_between_containers_of_a_vlan_network_are_counted() {
    use macvlan_common::{Hook, Verdict};
    use mvnet::datapath::pinned::{self, PinnedMaps};
    in_vm();
    modprobe("8021q");
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    // An untagged network beside it, which stays when b10 goes.
    s.network("b0", "10.70.0.0/24", PARENT, &[]);
    s.network("b10", "10.71.0.0/24", "eth0.10", &[]);
    let (a, b) = (format!("{}-ba", lab.id()), format!("{}-bb", lab.id()));
    s.container("b10", &a, &[]);
    s.container("b10", &b, &[]);
    let dir = pinned::pin_dir(pinned::netns_inode(Some(lab.host())).unwrap(), PARENT);
    let maps = PinnedMaps::open(&dir).unwrap();
    let slot = |mac: [u8; 6]| {
        maps.endpoints_ro()
            .unwrap()
            .get(mac, 10)
            .expect("entry on VLAN 10")
            .slot
    };
    let (sa, sb) = (
        slot([0x02, 0x42, 0x0a, 0x47, 0, 2]),
        slot([0x02, 0x42, 0x0a, 0x47, 0, 3]),
    );
    let (na, nb) = (
        netns::NetNs::named(&a).unwrap(),
        netns::NetNs::named(&b).unwrap(),
    );
    let local = |c: &mvnet::datapath::CounterSnapshot, slot: u32| c.endpoint(slot).rx_local.frames;
    let (ka, kb, c0) = (unicast_rx(&na), unicast_rx(&nb), maps.counters().unwrap());
    // N valid datagrams, and M from an address a does not have (invalid,
    // passed under observe, delivered to b all the same).
    const N: u64 = 25;
    const M: u64 = 7;
    s.ok(&[
        "exec",
        &a,
        "ip",
        "addr",
        "add",
        "10.71.0.50/24",
        "dev",
        "eth0",
    ]);
    let server = nb
        .run(|| {
            let s = UdpSocket::bind("10.71.0.3:4789").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .unwrap();
    na.run(|| {
        let c = UdpSocket::bind("10.71.0.2:0").unwrap();
        for _ in 0..N {
            c.send_to(b"bridged", "10.71.0.3:4789").unwrap();
        }
        let c = UdpSocket::bind("10.71.0.50:0").unwrap();
        for _ in 0..M {
            c.send_to(b"spoofed", "10.71.0.3:4789").unwrap();
        }
    })
    .unwrap();
    let mut buf = [0u8; 16];
    for i in 0..N + M {
        assert!(
            server.recv(&mut buf).is_ok(),
            "datagram {i} of {N} not received"
        );
    }
    let c1 = maps.counters().unwrap();
    let (da, db) = (unicast_rx(&na) - ka, unicast_rx(&nb) - kb);
    assert!(db >= N + M, "{db}");
    assert_eq!(
        local(&c1, sb) - local(&c0, sb),
        db,
        "b: counted = delivered"
    );
    assert_eq!(
        local(&c1, sa) - local(&c0, sa),
        da,
        "a: counted = delivered"
    );
    assert_eq!(
        c1.verdicts.get(Hook::TcIngress, Verdict::Delivered).frames
            - c0.verdicts.get(Hook::TcIngress, Verdict::Delivered).frames,
        da + db
    );
    // Nothing of it reached the wire or the root's hooks.
    assert_eq!(
        c1.endpoint(sb).rx_wire.frames,
        c0.endpoint(sb).rx_wire.frames
    );
    let out = s.ok(&["verify"]);
    assert!(!out.contains("UNEXPLAINED"), "{out}");
    drop(maps);
    s.ok(&["container", "rm", "--force", &a, &b]);
    s.ok(&["network", "rm", "b10"]);
    // Nothing of b10 is left in the classifier's policy.
    assert_eq!(
        s.ok(&["restore", "--check"]),
        "nothing to do: the kernel matches the state\n"
    );
    s.ok(&["network", "rm", "b0"]);
}

/// `mvnet pktgen` with the kernel's pktgen: exact counts to three
/// endpoints on VLANs 10 and 20, plus unknown MACs and known MACs on the
/// other VLAN, every counter of the report exact and `mvnet verify` agreeing.
#[test]
fn pktgen_sends_exact_counts_to_three_endpoints_on_two_vlans() {
    in_vm();
    modprobe("8021q");
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    for (net, subnet, parent) in [
        ("p10", "10.110.0.0/24", "eth0.10"),
        ("p20", "10.120.0.0/24", "eth0.20"),
    ] {
        // With XDP attached (auto: TC alone on a veth from 6.6): it leaves
        // the tagged frames to TC ingress, which counts them all.
        s.network(net, subnet, parent, &["--xdp-mode", "native"]);
    }
    let names: Vec<String> = ["e1", "e2", "e3"].iter().map(|n| s.name(n)).collect();
    for (name, net) in names.iter().zip(["p10", "p10", "p20"]) {
        s.container(net, name, &[]);
    }
    let up = lab.upstream().name().unwrap().to_owned();
    let out = s.run(&[
        "pktgen",
        "--netns",
        &up,
        "--generator",
        "pktgen",
        "--count",
        "400",
        // 3,200 frames in about 3 s: under TCG on a loaded host the
        // receiving veth's NAPI can be starved for tens of ms, and its
        // ring (256 frames) must not fill meanwhile (a drop is a
        // generator error, not a counting one, but it fails the test).
        "--rate",
        "1000",
        "--unknown",
        "2",
        "--wrong-vlan",
        "3",
        "--threads",
        "2",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&stdout);
    let n = |v: &Value| v.as_u64().unwrap();
    assert_eq!(r["generator"], "pktgen");
    assert_eq!(n(&r["threads"]), 2);
    assert_eq!(n(&r["sent"]), 8 * 400);
    for e in r["endpoints"].as_array().unwrap() {
        assert_eq!(
            (n(&e["sent"]), n(&e["counted"]), n(&e["delivered"])),
            (400, 400, 400),
            "{e}"
        );
    }
    assert_eq!(n(&r["delivered_valid"]), 1200);
    assert_eq!(r["wire_hook"], "xdp+tc_ingress");
    let tc = &r["verdicts"]["tc_ingress"];
    assert_eq!(n(&tc["delivered"]), 1200, "{tc}");
    assert_eq!(n(&tc["unknown_mac"]), 800, "{tc}");
    assert_eq!(n(&tc["vlan_mismatch"]), 1200, "{tc}");
    assert_eq!(n(&tc["malformed"]), 0, "{tc}");
    let xdp = &r["verdicts"]["xdp"];
    assert!(
        xdp.as_object().unwrap().values().all(|v| n(v) == 0),
        "{xdp}"
    );
    // VLAN 10: e1, e2, one unknown flow, and e3's MAC tagged 10;
    // VLAN 20: e3, one unknown flow, and e1's and e2's MACs tagged 20.
    let vlans = r["vlans"].as_array().unwrap();
    let vlan = |id: u64| vlans.iter().find(|v| n(&v["vlan"]) == id).unwrap();
    assert_eq!(
        (n(&vlan(10)["sent"]), n(&vlan(10)["counted_tc"])),
        (1600, 1600)
    );
    assert_eq!(
        (n(&vlan(20)["sent"]), n(&vlan(20)["counted_tc"])),
        (1600, 1600)
    );
    let d = &r["kernel_drops"];
    assert_eq!(
        n(&d["generator_errors"]) + n(&d["generator_tx_dropped"]) + n(&d["root_rx_dropped"]),
        0,
        "{d}"
    );
    assert_eq!(r["verify_ok"], true);
    assert_eq!(r["exact"], true, "{:#}", r["checks"]);
    let verify = s.ok(&["verify"]);
    assert!(!verify.contains("UNEXPLAINED"), "{verify}");
    for name in &names {
        s.ok(&["container", "stop", name]);
        s.ok(&["container", "rm", name]);
    }
    s.ok(&["network", "rm", "p10", "p20"]);
}

/// mvnet-cni chained after the reference macvlan plugin on an 802.1Q
/// master (`eth0.10`, made beforehand as a CNI user would): the root and
/// the VLAN come from the link (its real device eth0, id 10), frames
/// tagged 10 are counted exactly on eth0's classifier, and DEL removes the
/// entry; GC then drops the network and the classifier, never eth0.10.
#[test]
fn cni_chained_on_an_8021q_master_counts_its_vlan_on_the_real_device() {
    use common::cni::{exec, REFERENCE_DIR};
    use macvlan_common::{Hook, Verdict};
    use mvnet::{
        datapath::pinned::{self, PinnedMaps},
        model::Mac,
    };
    use mvnet_lab::lab::frames::{FrameSpec, Tag};
    use serde_json::json;
    use std::path::Path;
    in_vm();
    modprobe("8021q");
    let mut lab = Lab::new().unwrap();
    netlink::run(Some(lab.host()), |nl| async move {
        let p = nl.require_link(PARENT).await?;
        nl.add_vlan("eth0.10", p.index, 10).await?;
        let v = nl.require_link("eth0.10").await?;
        nl.set_up(v.index).await
    })
    .unwrap();
    let s = Session::new(&lab);
    let sandbox = lab.add_container("cni10").unwrap();
    let netns = sandbox.path().display().to_string();
    let ipam_dir = std::env::temp_dir().join(format!("{}-ipam", lab.id()));
    let cni = common::cli::cni_bin();
    let cni_path = format!("{}:{REFERENCE_DIR}", cni.parent().unwrap().display());
    let env = |command: &'static str| {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_PATH", cni_path.as_str()),
            ("CNI_CONTAINERID", "vlan10"),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
        ]
    };
    let macvlan = json!({"cniVersion": "1.0.0", "name": "v10", "type": "macvlan",
        "master": "eth0.10",
        "ipam": {"type": "host-local", "subnet": "10.10.0.0/24", "dataDir": ipam_dir}});
    let reference = Path::new(REFERENCE_DIR).join("macvlan");
    let prev = exec(lab.host(), &reference, &env("ADD"), &macvlan.to_string()).ok();
    // XDP's counts are asserted (auto: TC alone on a veth from 6.6).
    let conf = json!({"cniVersion": "1.0.0", "name": "v10", "type": "mvnet-cni",
        "stateDir": s.state_dir, "xdpMode": "native", "prevResult": prev});
    exec(lab.host(), &cni, &env("ADD"), &conf.to_string()).ok();
    let mac: Mac = prev["interfaces"][0]["mac"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let doc = json(&s.ok(&["stats", "--json"]));
    let net = &doc["networks"][0];
    assert_eq!(
        (&net["parent"], &net["root"], &net["vlan"]),
        (&json!("eth0.10"), &json!("eth0"), &json!(10)),
        "{doc}"
    );
    assert_eq!(net["endpoints"][0]["owner"], "cni:v10");
    // One classifier, on eth0 where the tags are, with the entry on VLAN 10.
    let dir = pinned::pin_dir(pinned::netns_inode(Some(lab.host())).unwrap(), PARENT);
    let maps = PinnedMaps::open(&dir).unwrap();
    let slot = maps
        .endpoints_ro()
        .unwrap()
        .get(mac.octets(), 10)
        .expect("entry on VLAN 10")
        .slot;
    assert!(maps.endpoints_ro().unwrap().get(mac.octets(), 0).is_none());
    let rx = || {
        netlink::run(Some(&sandbox), |nl| async move {
            let l = nl.require_link("eth0").await?;
            nl.stats(l.index).await
        })
        .unwrap()
        .rx_packets
    };
    let rx0 = rx();
    let c0 = maps.counters().unwrap();
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    for (vid, n) in [(10, 23u64), (20, 9)] {
        let frames = [FrameSpec::udp4(mac.octets(), src)
            .tagged(&[Tag::dot1q(vid)])
            .build()
            .unwrap()];
        send_from_upstream(&lab, &maps, &frames, n);
    }
    let c = maps.counters().unwrap();
    let d =
        |v| c.verdicts.get(Hook::TcIngress, v).frames - c0.verdicts.get(Hook::TcIngress, v).frames;
    assert_eq!(d(Verdict::Delivered), 23);
    assert_eq!(d(Verdict::VlanMismatch), 9, "its MAC tagged 20");
    assert_eq!(
        c.endpoint(slot).rx_wire.frames - c0.endpoint(slot).rx_wire.frames,
        23
    );
    assert_eq!(c.vlan(10).rx_tc.frames - c0.vlan(10).rx_tc.frames, 23);
    assert_eq!(rx() - rx0, 23, "the kernel delivered the VLAN 10 frames");
    let out = s.ok(&["verify"]);
    assert!(!out.contains("UNEXPLAINED"), "{out}");

    // DEL: the entry goes; the reference plugin then removes its macvlan.
    exec(lab.host(), &cni, &env("DEL"), &conf.to_string()).ok();
    assert!(maps.endpoints_ro().unwrap().get(mac.octets(), 10).is_none());
    let doc = json(&s.ok(&["stats", "--json"]));
    assert_eq!(doc["networks"][0]["endpoints"], json!([]), "{doc}");
    exec(lab.host(), &reference, &env("DEL"), &macvlan.to_string()).ok();
    drop(maps);
    // GC with nothing valid: network and classifier gone, eth0.10 kept.
    let gc = json!({"cniVersion": "1.1.0", "name": "v10", "type": "mvnet-cni",
        "stateDir": s.state_dir, "cni.dev/valid-attachments": []});
    exec(
        lab.host(),
        &cni,
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", cni_path.as_str())],
        &gc.to_string(),
    )
    .ok();
    assert!(!dir.exists(), "classifier pins left on eth0");
    assert!(s.links().contains(&"eth0.10".to_owned()));
    let _ = std::fs::remove_dir_all(&ipam_dir);
}

/// A frame a container sends through a VLAN device of its own on its
/// endpoint (a tag in skb metadata when the endpoint's checks see it) is
/// invalid and counted at its length on the wire, tag included, by the
/// endpoint's device and by the parent's egress alike.
#[test]
fn a_tag_the_container_adds_is_counted_in_its_bytes_on_the_wire() {
    use macvlan_common::{Hook, Verdict};
    use mvnet::datapath::pinned::{self, PinnedMaps};
    use mvnet_lab::lab::{
        frames::FrameSpec,
        wire::{self, SendPlan},
    };
    in_vm();
    modprobe("8021q");
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("b5", "10.55.0.0/24", PARENT, &[]);
    let c = format!("{}-tag", lab.id());
    s.container("b5", &c, &[]);
    let ip = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["-n", &c])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&[
        "link", "add", "link", "eth0", "name", "eth0.5", "type", "vlan", "id", "5",
    ]);
    // Without IPv6 on it, the VLAN device sends nothing of its own (no
    // router solicitation, DAD or MLD report): only the test's frames.
    let status = Command::new("ip")
        .args(["netns", "exec", &c, "sysctl", "-qw"])
        .arg("net.ipv6.conf.eth0/5.disable_ipv6=1")
        .status()
        .unwrap();
    assert!(status.success(), "disabling IPv6 on eth0.5");
    ip(&["link", "set", "eth0.5", "up"]);
    let dir = pinned::pin_dir(pinned::netns_inode(Some(lab.host())).unwrap(), PARENT);
    let maps = PinnedMaps::open(&dir).unwrap();
    let mac = [0x02, 0x42, 0x0a, 0x37, 0, 2];
    let slot = maps
        .endpoints_ro()
        .unwrap()
        .get(mac, 0)
        .expect("endpoint")
        .slot;
    let frame = FrameSpec::udp4([0x02, 0x42, 0x0a, 0x37, 0, 1], mac)
        .build()
        .unwrap();
    let on_wire = frame.len() as u64 + 4;
    const N: u64 = 23;
    let c0 = maps.counters().unwrap();
    let invalid = |m: &PinnedMaps| m.tx_invalid(slot).unwrap().unwrap_or_default();
    let ns = netns::NetNs::named(&c).unwrap();
    wire::send(
        &ns,
        "eth0.5",
        &SendPlan {
            frames: &[frame],
            rounds: N,
            deadline: Duration::from_secs(60),
            burst: 1,
        },
        |sent| invalid(&maps).frames >= sent,
    )
    .unwrap();
    let got = invalid(&maps);
    assert_eq!((got.frames, got.bytes), (N, N * on_wire));
    // Observe: passed, and seen by the parent's egress on VLAN 5 at the
    // same length (a tag on the wire that is the endpoint's, not its own
    // VLAN's: spoofed).
    let c1 = maps.counters().unwrap();
    let spoofed = c1.verdicts.get(Hook::TcEgress, Verdict::Spoofed);
    let spoofed0 = c0.verdicts.get(Hook::TcEgress, Verdict::Spoofed);
    assert_eq!(
        (
            spoofed.frames - spoofed0.frames,
            spoofed.bytes - spoofed0.bytes
        ),
        (N, N * on_wire)
    );
    assert_eq!(c1.vlan(5).tx_tc.bytes - c0.vlan(5).tx_tc.bytes, N * on_wire);
    s.ok(&["container", "rm", "--force", &c]);
    s.ok(&["network", "rm", "b5"]);
}

/// One MAC on two VLANs of a root (`--mac-address` on networks on eth0.10
/// and eth0.20): after one container is removed, a frame to the MAC tagged
/// for a third VLAN is still the other's VLAN mismatch, counted for it,
/// as `rm` hands the MAC's VLAN_ANY entry over instead of deleting it.
#[test]
fn a_mac_shared_by_two_vlans_stays_a_mismatch_after_one_container_goes() {
    use macvlan_common::{Hook, Verdict};
    use mvnet::datapath::pinned::{self, PinnedMaps};
    use mvnet_lab::lab::frames::{FrameSpec, Tag};
    in_vm();
    modprobe("8021q");
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("m10", "10.61.0.0/24", "eth0.10", &["--xdp-mode", "native"]);
    s.network("m20", "10.62.0.0/24", "eth0.20", &["--xdp-mode", "native"]);
    let (a, b) = (format!("{}-ma", lab.id()), format!("{}-mb", lab.id()));
    let mac = "02:42:0a:63:00:07";
    s.container("m10", &a, &["--mac-address", mac]);
    s.container("m20", &b, &["--mac-address", mac]);
    let octets = [0x02, 0x42, 0x0a, 0x63, 0, 7];
    let dir = pinned::pin_dir(pinned::netns_inode(Some(lab.host())).unwrap(), PARENT);
    let maps = PinnedMaps::open(&dir).unwrap();
    let slot_a = maps
        .endpoints_ro()
        .unwrap()
        .get(octets, 10)
        .expect("a")
        .slot;
    s.ok(&["container", "rm", "--force", &b]);
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let frames = [FrameSpec::udp4(octets, src)
        .tagged(&[Tag::dot1q(30)])
        .build()
        .unwrap()];
    let mismatch = |m: &PinnedMaps| {
        m.counters()
            .unwrap()
            .verdicts
            .get(Hook::TcIngress, Verdict::VlanMismatch)
            .frames
    };
    let v0 = mismatch(&maps);
    let a0 = maps.mismatch(slot_a).unwrap().unwrap_or_default();
    const N: u64 = 7;
    send_from_upstream(&lab, &maps, &frames, N);
    assert_eq!(mismatch(&maps) - v0, N, "unknown MACs instead?");
    let a1 = maps.mismatch(slot_a).unwrap().unwrap_or_default();
    assert_eq!(
        a1.frames - a0.frames,
        N,
        "counted for the container that stays"
    );
    s.ok(&["container", "rm", "--force", &a]);
    s.ok(&["network", "rm", "m10", "m20"]);
}

/// A qdisc on an endpoint's own device runs after its source check: a
/// filter action there may rewrite a checked, stamped frame (here into one
/// with the root's MAC, whose frames the parent takes as the host's). The
/// stamp names the endpoint whose device checked the frame, so the parent's
/// egress calls such a frame spoofed and, under enforce, drops it. (This
/// kernel has the qdisc and actions as modules; the host's has none.)
#[test]
fn a_qdisc_on_an_endpoints_device_cannot_pass_its_frames_off_as_the_roots() {
    use macvlan_common::{Hook, Verdict};
    use mvnet::datapath::pinned::{self, PinnedMaps};
    use mvnet_lab::lab::{
        frames::{FrameSpec, Payload},
        wire,
    };
    in_vm();
    for m in ["sch_prio", "cls_matchall", "act_skbmod"] {
        modprobe(m);
    }
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("qd", "10.56.0.0/24", PARENT, &["--policy", "enforce"]);
    let c = format!("{}-qd", lab.id());
    s.container("qd", &c, &[]);
    let root = mvnet::model::Mac::new(lab.mac_of(lab.host(), PARENT).unwrap()).to_string();
    let tc = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &c, "tc"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "tc {args:?}: {out:?}");
    };
    tc(&[
        "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "prio",
    ]);
    tc(&[
        "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "all", "matchall", "action",
        "skbmod", "set", "smac", &root,
    ]);
    let dir = pinned::pin_dir(pinned::netns_inode(Some(lab.host())).unwrap(), PARENT);
    let maps = PinnedMaps::open(&dir).unwrap();
    let mac = [0x02, 0x42, 0x0a, 0x38, 0, 2];
    // Valid for the container: its MAC and address (its device stamps it).
    let frame = FrameSpec::udp4([0x02, 0x42, 0x0a, 0x38, 0, 1], mac)
        .payload(Payload::Udp4 {
            src: "10.56.0.2".parse().unwrap(),
            dst: "10.56.0.1".parse().unwrap(),
        })
        .build()
        .unwrap();
    const N: u64 = 17;
    let verdict = |v| {
        maps.counters()
            .unwrap()
            .verdicts
            .get(Hook::TcEgress, v)
            .frames
    };
    let (spoofed0, delivered0) = (verdict(Verdict::Spoofed), verdict(Verdict::Delivered));
    let ns = netns::NetNs::named(&c).unwrap();
    wire::send_each_once(&ns, "eth0", &frame, N).unwrap();
    // The qdisc sends on its own time: wait for the parent's egress.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while verdict(Verdict::Spoofed) - spoofed0 < N && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        (
            verdict(Verdict::Spoofed) - spoofed0,
            verdict(Verdict::Delivered) - delivered0
        ),
        (N, 0),
        "rewritten into the root's after the check: spoofed, none delivered"
    );
    s.ok(&["container", "rm", "--force", &c]);
    s.ok(&["network", "rm", "qd"]);
}
