//! `--xdp-mode auto` on a veth parent: the classifier runs on TC alone
//! (native XDP would switch veth's receive path to NAPI), TC ingress counts
//! every frame exactly once, and `network inspect` and `stats` say which
//! hooks are in use and why. `--xdp-mode native` on the same veth keeps
//! XDP (the tests that assert XDP's counts pin it).
use macvlan_common::{Hook, Verdict};
use mvnet::{
    datapath::pinned::{self, PinnedMaps},
    netlink,
    netns::NetNs,
};
use mvnet_lab::lab::{frames::FrameSpec, Lab, PARENT, UPSTREAM_IF};

use crate::{
    common::{cli::Session, require_root},
    datapath_cp::{json, mac_of, pin_dir, send},
};

const TC_ONLY: &str = "tc only: veth parent, native XDP would switch its receive path to NAPI";

fn rx_packets(ns: &NetNs) -> u64 {
    netlink::run(Some(ns), |nl| async move {
        let l = nl.require_link("eth0").await?;
        nl.stats(l.index).await
    })
    .unwrap()
    .rx_packets
}

/// Whether the kernel reports an XDP program on the lab's parent.
fn xdp_on_parent(lab: &Lab) -> bool {
    let out = std::process::Command::new("ip")
        .args([
            "-n",
            lab.host().name().unwrap(),
            "-d",
            "link",
            "show",
            "dev",
            PARENT,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.contains("prog/xdp")
}

#[test]
fn auto_on_a_veth_is_tc_only_and_counts_every_frame_once() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = pin_dir(&lab);
    s.network("ta", "10.99.0.0/24", "eth0", &[]);
    assert!(pinned::is_attached(&dir));
    assert!(!dir.join(pinned::LINK_XDP).exists());
    assert!(dir.join(pinned::PROG_TC_INGRESS).exists());
    assert!(!xdp_on_parent(&lab), "no XDP program on a veth under auto");

    let i = json(&s.ok(&["network", "inspect", "ta"]));
    let c = &i[0]["Classifier"];
    assert_eq!(c["Attached"], true);
    assert_eq!(c["XdpMode"], "auto");
    assert_eq!(c["Hooks"], serde_json::json!(["tc_ingress", "tc_egress"]));
    assert_eq!(c["HooksReason"], TC_ONLY);

    let names: Vec<String> = ["t1", "t2"].iter().map(|n| s.name(n)).collect();
    for n in &names {
        s.container("ta", n, &[]);
    }
    let macs = [mac_of(&s, &names[0], "ta"), mac_of(&s, &names[1], "ta")];
    let maps = PinnedMaps::open(&dir).unwrap();
    let slots: Vec<u32> = macs
        .iter()
        .map(|m| maps.endpoints_ro().unwrap().get(*m, 0).unwrap().slot)
        .collect();
    let nss: Vec<NetNs> = names.iter().map(|n| NetNs::named(n).unwrap()).collect();
    let before_rx: Vec<u64> = nss.iter().map(rx_packets).collect();
    let c0 = maps.counters().unwrap();

    // From the wire, and bridge mode (t1 to t2): all at TC ingress, once.
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let unknown = [0x02, 0x42, 0x0a, 0x63, 0x00, 0x63];
    for (mac, n) in [(macs[0], 41), (macs[1], 17), (unknown, 11)] {
        let frame = FrameSpec::udp4(mac, src).build().unwrap();
        send(
            &maps,
            lab.upstream(),
            UPSTREAM_IF,
            Hook::TcIngress,
            frame,
            n,
        );
    }
    let local = FrameSpec::udp4(macs[1], macs[0]).build().unwrap();
    send(&maps, &nss[0], "eth0", Hook::TcIngress, local, 13);

    let c1 = maps.counters().unwrap();
    let d = |h, v| c1.verdicts.get(h, v).frames - c0.verdicts.get(h, v).frames;
    assert_eq!(d(Hook::TcIngress, Verdict::Delivered), 41 + 17 + 13);
    assert_eq!(d(Hook::TcIngress, Verdict::UnknownMac), 11);
    assert_eq!(
        c1.verdicts.total(Hook::XdpIngress).frames,
        0,
        "nothing at XDP"
    );
    let ep = |i: usize| {
        let (a, b) = (c1.endpoint(slots[i]), c0.endpoint(slots[i]));
        (
            a.rx_wire.frames - b.rx_wire.frames,
            a.rx_local.frames - b.rx_local.frames,
        )
    };
    assert_eq!(ep(0), (41, 0));
    assert_eq!(ep(1), (17, 13));
    assert_eq!(
        c1.vlan(0).rx_tc.frames - c0.vlan(0).rx_tc.frames,
        41 + 17 + 11 + 13
    );
    assert_eq!(c1.vlan(0).rx_xdp.frames, 0);
    let rx: Vec<u64> = nss
        .iter()
        .zip(&before_rx)
        .map(|(ns, b)| rx_packets(ns) - b)
        .collect();
    assert_eq!(rx, [41, 17 + 13]);

    // Enforce: frames to an unknown MAC are dropped at TC ingress, valid
    // ones arrive.
    s.ok(&["network", "update", "--policy", "enforce", "ta"]);
    let frame = FrameSpec::udp4(unknown, src).build().unwrap();
    send(
        &maps,
        lab.upstream(),
        UPSTREAM_IF,
        Hook::TcIngress,
        frame,
        7,
    );
    let frame = FrameSpec::udp4(macs[0], src).build().unwrap();
    send(
        &maps,
        lab.upstream(),
        UPSTREAM_IF,
        Hook::TcIngress,
        frame,
        5,
    );
    let c2 = maps.counters().unwrap();
    let dd = |h, v| c2.verdicts.get(h, v).frames - c1.verdicts.get(h, v).frames;
    assert_eq!(dd(Hook::TcIngress, Verdict::UnknownMac), 7);
    assert_eq!(dd(Hook::TcIngress, Verdict::Delivered), 5);
    assert_eq!(rx_packets(&nss[0]) - before_rx[0], 41 + 5);

    // `stats` says the same as inspect, and `verify` agrees with the kernel.
    let st = json(&s.ok(&["stats", "--json"]));
    let r = &st["roots"][0];
    assert_eq!(r["hooks"], serde_json::json!(["tc_ingress", "tc_egress"]));
    assert_eq!(r["hooks_reason"], TC_ONLY);
    let table = s.ok(&["stats"]);
    assert!(table.contains(&format!("  hooks: {TC_ONLY}\n")), "{table}");
    s.ok(&["verify"]);

    for n in &names {
        s.ok(&["rm", "-f", n]);
    }
    s.ok(&["network", "rm", "ta"]);
    assert!(!dir.exists(), "pins left at {}", dir.display());
}

#[test]
fn native_on_a_veth_keeps_xdp_and_says_so() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = pin_dir(&lab);
    s.network("tn", "10.99.1.0/24", "eth0", &["--xdp-mode", "native"]);
    assert!(pinned::is_attached(&dir));
    assert!(dir.join(pinned::LINK_XDP).exists());
    assert!(xdp_on_parent(&lab));
    let i = json(&s.ok(&["network", "inspect", "tn"]));
    let c = &i[0]["Classifier"];
    assert_eq!(c["XdpMode"], "native");
    assert_eq!(
        c["Hooks"],
        serde_json::json!(["xdp", "tc_ingress", "tc_egress"])
    );
    assert_eq!(
        c["HooksReason"],
        "xdp + tc: --xdp-mode native; XDP counts wire frames, TC ingress the rest"
    );
    s.ok(&["network", "rm", "tn"]);
    assert!(!dir.exists(), "pins left at {}", dir.display());
}
