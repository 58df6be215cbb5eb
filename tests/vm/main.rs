//! VM integration tests: run by `cargo xtask test` inside a virtme-ng VM
//! booting a Debian kernel (6.1), which has 802.1Q and pktgen as modules and
//! no tcx (so TC programs go through clsact). Built with `test = false`; a
//! plain `cargo test` does not run them.
#[path = "../common/mod.rs"]
mod common;

use std::process::Command;

use mvnet::{
    datapath::{AttachOptions, Datapath, XdpMode},
    lab::{smoke, Lab, PARENT},
    netlink,
};

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
    let dp = Datapath::attach(Some(lab.host()), PARENT, AttachOptions::default()).unwrap();
    assert_eq!(dp.xdp_mode, Some(XdpMode::Native));
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
