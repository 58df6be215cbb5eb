//! A real CNI runtime: Debian's Podman (4.3, CNI backend) with runc, run
//! inside the lab's host namespace (tests/common/podman.rs).
//! `podman run --network` calls the reference macvlan plugin and mvnet-cni
//! (chained, or standalone as `mvnet`); mvnet then counts and verifies
//! those containers exactly, and `podman rm` takes them out of its table.
use mvnet::{model::Mac, netns::NetNs};
use mvnet_lab::lab::{frames::FrameSpec, wire, UPSTREAM_IF};
use serde_json::{json, Value};

use crate::{
    cni::{Harness, NET},
    common::{cli::cni_bin, podman::Podman},
};

fn podman(h: &Harness) -> Podman {
    Podman::new(
        h.lab.host(),
        std::env::temp_dir().join(format!("{}-podman", h.lab.id())),
        &cni_bin(),
    )
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
    // The device podman's plugins made gets the source checks: frames `a`
    // writes with a stranger's source MAC pass (observe) and are counted
    // as its own invalid ones, none as `b`'s.
    let key = p.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.SandboxKey}}",
        &names[0],
    ]);
    let up = h.lab.mac_of(h.lab.upstream(), UPSTREAM_IF).unwrap();
    let spoofed = FrameSpec::udp4(up, [0x02, 0x42, 0x0a, 0x41, 0x00, 0x77])
        .build()
        .unwrap();
    let sent = wire::send_each_once_with(&NetNs::from_path(key.trim()), "eth0", &spoofed, 5, false);
    assert_eq!(sent.unwrap(), (5, 0));
    let doc: Value = serde_json::from_str(&h.s.ok(&["stats", "--json"])).unwrap();
    let invalid = |cid: &str| {
        let e = doc["networks"][0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["container_id"] == cid)
            .unwrap();
        (
            e["tx_invalid"]["frames"].as_u64(),
            e["tx_invalid"]["bytes"].as_u64(),
        )
    };
    let bytes = 5 * spoofed.len() as u64;
    assert_eq!(invalid(&ids[0]), (Some(5), Some(bytes)), "{doc}");
    assert_eq!(invalid(&ids[1]), (Some(0), Some(0)), "{doc}");

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
    let p = podman(&h);
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
    let p = podman(&h);
    p.conflist(
        NET,
        json!([
            {"type": "mvnet", "master": "eth0", "mode": "bridge",
             "stateDir": h.s.state_dir, "ipam": h.ipam("10.66.0.0/24")}
        ]),
    );
    count_verify_remove(&h, &p, NET);
}

/// Chained under enforce: the macvlan plugin's gratuitous ARP leaves the
/// container before mvnet-cni has registered its device, from a MAC the
/// classifier does not know yet, and the root's egress drops it as a
/// stranger's frame; mvnet-cni then announces the address once more, from
/// the checked device. The wire sees exactly one announcement of a new
/// container's address (none without mvnet-cni's).
#[test]
fn podman_chained_under_enforce_announces_each_address_once_checked() {
    let h = Harness::new();
    let p = podman(&h);
    p.conflist(
        NET,
        json!([
            {"type": "macvlan", "master": "eth0", "ipam": h.ipam("10.67.0.0/24")},
            {"type": "mvnet-cni", "stateDir": h.s.state_dir, "policy": "enforce"}
        ]),
    );
    // The first container attaches the classifier (its own announcement
    // goes out before there is one to drop it).
    p.start(NET, &format!("{}-first", h.lab.id()));
    // host-local gives the next container 10.67.0.3.
    let ip = [10, 67, 0, 3];
    let announces = move |f: &[u8]| {
        f.len() >= 42
            && f[12..14] == [0x08, 0x06]
            && f[20..22] == [0, 1]
            && f[28..32] == ip
            && f[38..42] == ip
    };
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let upstream = h.lab.upstream().clone();
    let capture = std::thread::spawn(move || {
        wire::capture_when_ready(
            &upstream,
            UPSTREAM_IF,
            2,
            std::time::Duration::from_secs(3),
            move |f, _| announces(f),
            move || ready_tx.send(()).unwrap(),
        )
    });
    ready.recv().unwrap();
    let second = format!("{}-second", h.lab.id());
    p.start(NET, &second);
    let seen = capture.join().unwrap().unwrap();
    let doc: Value = serde_json::from_str(&h.s.ok(&["stats", "--json"])).unwrap();
    let e = doc["networks"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["container"].as_str().unwrap().ends_with(&second))
        .unwrap();
    assert_eq!(e["ipv4"], "10.67.0.3", "{doc}");
    assert_eq!(doc["networks"][0]["policy"], "enforce");
    assert_eq!(seen, 1, "announcements of 10.67.0.3 on the wire");
}
