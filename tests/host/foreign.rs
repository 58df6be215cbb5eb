//! Another runtime's endpoints through the reconciling core: a macvlan
//! made behind mvnet's back (as Docker's driver or the CNI macvlan plugin
//! makes one) is adopted, counted exactly, verified, enforced, protected
//! from mvnet's own commands, converged and forgotten when it goes.
use std::{collections::BTreeMap, path::Path};

use macvlan_common::Hook;
use mvnet::{
    controller::{
        foreign::{ForeignContainer, ForeignEndpoint, ForeignNetwork, Unreadable},
        Controller,
    },
    datapath::pinned::{self, PinnedMaps},
    model::{MacvlanMode, Owner, Policy, XdpMode},
    netns::NetNs,
};
use mvnet_lab::lab::{frames::FrameSpec, Lab, UPSTREAM_IF};

use crate::{
    common::{cli::Session, require_root},
    datapath_cp::{json, passed_xdp, pin_dir, send},
};

const NET_ID: &str = "d0cce2000000000000000000000000000000000000000000000000000000beef";

fn network(policy: Policy) -> ForeignNetwork {
    ForeignNetwork {
        owner: Owner::Docker,
        id: NET_ID.into(),
        name: "dmac".into(),
        parent: "eth0".into(),
        mode: MacvlanMode::Bridge,
        policy,
        // The test asserts XDP's counts and drops (auto: TC alone on veth).
        xdp_mode: XdpMode::Native,
        max_endpoints: None,
        options: BTreeMap::from([("parent".into(), "eth0".into())]),
    }
}

fn container(id: &str, name: &str, ns: &NetNs) -> ForeignContainer {
    ForeignContainer {
        owner: Owner::Docker,
        id: id.into(),
        name: name.into(),
        netns: ns.path().to_owned(),
        pod: None,
    }
}

fn endpoint(mac: [u8; 6], ip: &str) -> ForeignEndpoint {
    ForeignEndpoint {
        network_id: NET_ID.into(),
        ifname: "eth0".into(),
        mac: mac.into(),
        ipv4: Some(ip.parse().unwrap()),
        ipv6: None,
    }
}

/// Runs `f` on a writer controller of `dir`, in the lab's host namespace.
fn with_controller<T: Send + 'static>(
    lab: &Lab,
    dir: &Path,
    f: impl FnOnce(&mut Controller) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let dir = dir.to_owned();
    lab.host()
        .run(move || {
            let mut ctl = Controller::open(&dir)?;
            f(&mut ctl)
        })
        .unwrap()
}

fn endpoints_of(stats: &serde_json::Value) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for n in stats["networks"].as_array().unwrap() {
        for e in n["endpoints"].as_array().unwrap() {
            out.push((
                e["container"].as_str().unwrap().to_owned(),
                e["owner"].as_str().unwrap().to_owned(),
                e["rx"]["wire"]["frames"].as_u64().unwrap(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn another_runtimes_endpoints_are_counted_verified_enforced_and_forgotten() {
    require_root();
    let mut lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = s.state_dir.clone();
    let (m1, m2) = (
        [0x02, 0x42, 0x0a, 0x6e, 0x00, 0x02],
        [0x02, 0x42, 0x0a, 0x6e, 0x00, 0x03],
    );
    let d1 = lab.add_container("d1").unwrap();
    let d2 = lab.add_container("d2").unwrap();
    lab.add_macvlan(&d1, m1).unwrap();
    lab.add_macvlan(&d2, m2).unwrap();
    // Traffic the classifier never saw: verify must hold only what comes
    // after the adoption against the classifier.
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();

    let (c1, c2) = (
        container(&"1".repeat(64), "web", &d1),
        container(&"2".repeat(64), "db", &d2),
    );
    {
        let (c1, c2) = (c1.clone(), c2.clone());
        with_controller(&lab, &dir, move |ctl| {
            ctl.adopt_network(network(Policy::Observe))?;
            ctl.adopt_endpoint(&c1, endpoint(m1, "10.110.0.2"))?;
            ctl.adopt_endpoint(&c2, endpoint(m2, "10.110.0.3"))?;
            // Idempotent: the same again changes nothing.
            ctl.adopt_network(network(Policy::Observe))?;
            ctl.adopt_endpoint(&c1, endpoint(m1, "10.110.0.2"))
        })
        .unwrap();
    }
    let pins = pin_dir(&lab);
    assert!(pinned::is_attached(&pins), "classifier not attached");
    let maps = PinnedMaps::open(&pins).unwrap();
    assert_eq!(maps.endpoints_ro().unwrap().entries().unwrap().len(), 2);
    for (mac, n) in [(m1, 43), (m2, 19)] {
        let frame = FrameSpec::udp4(mac, src).build().unwrap();
        send(
            &maps,
            lab.upstream(),
            UPSTREAM_IF,
            Hook::XdpIngress,
            frame,
            n,
        );
    }
    let stats = json(&s.ok(&["stats", "--json"]));
    assert_eq!(
        endpoints_of(&stats),
        [
            ("db".to_owned(), "docker".to_owned(), 19),
            ("web".to_owned(), "docker".to_owned(), 43)
        ]
    );
    assert_eq!(stats["networks"][0]["owner"], "docker");
    let verify = s.ok(&["verify"]);
    assert!(verify.contains("web") && verify.contains("db"), "{verify}");

    // mvnet's own commands leave another runtime's objects alone.
    let e = s.fails(&["rm", "-f", "web"]);
    assert!(
        e.contains("container web belongs to docker, which creates and removes it: remove it with docker, not mvnet"),
        "{e}"
    );
    let e = s.fails(&["network", "rm", "dmac"]);
    assert!(e.contains("network dmac belongs to docker"), "{e}");
    let e = s.fails(&["run", "-d", "--network", "dmac", "--name", &s.name("x")]);
    assert!(e.contains("network dmac belongs to docker"), "{e}");
    let e = s.fails(&["network", "update", "--policy", "enforce", "dmac"]);
    assert!(e.contains("mvnet docker sync --policy"), "{e}");

    // Enforce through the adoption: unknown MACs are dropped at XDP, the
    // endpoints still get theirs.
    with_controller(&lab, &dir, |ctl| {
        ctl.adopt_network(network(Policy::Enforce))
    })
    .unwrap();
    let before = lab.link_stats(&d1, "eth0").unwrap().rx_packets;
    let c0 = maps.counters().unwrap();
    let unknown = [0x02, 0x42, 0x0a, 0x6e, 0x00, 0x63];
    let passed = passed_xdp(&lab, unknown, 31, || {
        send(
            &maps,
            lab.upstream(),
            UPSTREAM_IF,
            Hook::XdpIngress,
            FrameSpec::udp4(unknown, src).build().unwrap(),
            31,
        )
    });
    assert_eq!(passed, 0, "dropped at XDP under enforce");
    send(
        &maps,
        lab.upstream(),
        UPSTREAM_IF,
        Hook::XdpIngress,
        FrameSpec::udp4(m1, src).build().unwrap(),
        7,
    );
    let c1c = maps.counters().unwrap();
    let d = |v| {
        c1c.verdicts.get(Hook::XdpIngress, v).frames - c0.verdicts.get(Hook::XdpIngress, v).frames
    };
    assert_eq!(d(macvlan_common::Verdict::UnknownMac), 31);
    assert_eq!(d(macvlan_common::Verdict::Delivered), 7);
    // Counted once, at XDP.
    assert_eq!(
        c1c.verdicts.total(Hook::TcIngress).frames - c0.verdicts.total(Hook::TcIngress).frames,
        0
    );
    assert_eq!(lab.link_stats(&d1, "eth0").unwrap().rx_packets - before, 7);

    // Not read is not gone: a container whose report could not be read,
    // and a network whose parent could not be read, keep what is recorded
    // of them (db and its endpoint, the network with both).
    let (k1, k2) = (c1.clone(), c2.id.clone());
    let report = with_controller(&lab, &dir, move |ctl| {
        let unread = Unreadable {
            containers: [k2].into(),
            ..Default::default()
        };
        ctl.converge_foreign(
            |o| *o == Owner::Docker,
            vec![network(Policy::Enforce)],
            vec![(k1, vec![endpoint(m1, "10.110.0.2")])],
            Some(std::time::SystemTime::now()),
            &unread,
        )
    })
    .unwrap();
    assert_eq!(report.to_string(), "nothing to do\n");
    let report = with_controller(&lab, &dir, move |ctl| {
        let unread = Unreadable {
            networks: [NET_ID.to_owned()].into(),
            ..Default::default()
        };
        ctl.converge_foreign(
            |o| *o == Owner::Docker,
            Vec::new(),
            Vec::new(),
            Some(std::time::SystemTime::now()),
            &unread,
        )
    })
    .unwrap();
    assert_eq!(report.to_string(), "nothing to do\n");
    assert_eq!(maps.endpoints_ro().unwrap().entries().unwrap().len(), 2);
    assert_eq!(s.ok(&["network", "ls", "-q"]).lines().count(), 1);

    // Converge to what the runtime has now: db is gone from the runtime.
    let report = with_controller(&lab, &dir, move |ctl| {
        ctl.converge_foreign(
            |o| *o == Owner::Docker,
            vec![network(Policy::Enforce)],
            vec![(c1, vec![endpoint(m1, "10.110.0.2")])],
            Some(std::time::SystemTime::now()),
            &Default::default(),
        )
    })
    .unwrap();
    assert_eq!(
        report.to_string(),
        "removed docker container db from network dmac\n"
    );
    assert_eq!(maps.endpoints_ro().unwrap().entries().unwrap().len(), 1);
    assert!(maps.endpoints_ro().unwrap().get(m2, 0).is_none());

    // The runtime removed web's namespace while nothing watched: restore
    // forgets it (and never touches another runtime's links).
    drop(d2);
    mvnet::netns::delete(d1.name().unwrap()).unwrap();
    let out = s.ok(&["restore"]);
    assert!(
        out.contains("forgot docker container web's endpoint eth0 (its namespace is gone)"),
        "{out}"
    );
    assert!(maps.endpoints_ro().unwrap().get(m1, 0).is_none(), "{out}");
    let again = s.ok(&["restore", "--check"]);
    assert!(again.contains("nothing to do"), "{again}");

    // The network goes: so does the classifier it alone used.
    with_controller(&lab, &dir, |ctl| ctl.forget_network(NET_ID)).unwrap();
    drop(maps);
    assert!(!pins.exists(), "pins left at {}", pins.display());
    assert_eq!(s.ok(&["network", "ls", "-q"]), "");
}

/// What `docker sync` and CNI register through: one batch, one result per
/// endpoint. The valid ones are adopted (entries, devices, baselines),
/// the invalid ones are refused with the reason and leave no trace, and
/// the same batch again changes nothing, not even the state file.
#[test]
fn a_batch_adopts_every_valid_endpoint_and_refuses_the_rest() {
    use mvnet::controller::adopt::Adopted;

    use crate::enforce::endpoint_programs;
    require_root();
    let mut lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = s.state_dir.clone();
    let (m1, m2) = (
        [0x02, 0x42, 0x0a, 0x6f, 0x00, 0x02],
        [0x02, 0x42, 0x0a, 0x6f, 0x00, 0x03],
    );
    let d1 = lab.add_container("b1").unwrap();
    let d2 = lab.add_container("b2").unwrap();
    let d3 = lab.add_container("b3").unwrap();
    lab.add_macvlan(&d1, m1).unwrap();
    lab.add_macvlan(&d2, m2).unwrap();
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    // Before the adoption: the kernel counts these, the classifier cannot.
    let before = lab.link_stats(&d1, "eth0").unwrap().rx_packets;
    let frames = [FrameSpec::udp4(m1, src).build().unwrap()];
    mvnet_lab::lab::wire::send(
        lab.upstream(),
        UPSTREAM_IF,
        &mvnet_lab::lab::wire::SendPlan {
            frames: &frames,
            rounds: 11,
            deadline: std::time::Duration::from_secs(30),
            burst: 32,
        },
        |sent| lab.link_stats(&d1, "eth0").unwrap().rx_packets - before >= sent,
    )
    .unwrap();
    let items = vec![
        (
            container(&"a".repeat(64), "web", &d1),
            endpoint(m1, "10.111.0.2"),
        ),
        (
            container(&"b".repeat(64), "db", &d2),
            endpoint(m2, "10.111.0.3"),
        ),
        // m1 again, from another container: would share web's entry.
        (
            container(&"c".repeat(64), "dup", &d3),
            endpoint(m1, "10.111.0.4"),
        ),
        (
            container(&"d".repeat(64), "multi", &d3),
            endpoint([0x01, 0, 0x5e, 0, 0, 1], "10.111.0.5"),
        ),
    ];
    let batch = items.clone();
    let results = with_controller(&lab, &dir, move |ctl| {
        ctl.adopt_network(network(Policy::Observe))?;
        Ok(ctl
            .adopt_endpoints(batch)
            .into_iter()
            .map(|r| r.map_err(|e| format!("{e:#}")))
            .collect::<Vec<_>>())
    })
    .unwrap();
    assert_eq!(results[0], Ok(Adopted::Added));
    assert_eq!(results[1], Ok(Adopted::Added));
    assert_eq!(
        results[2],
        Err("docker container dup: MAC 02:42:0a:6f:00:02 on eth0 (VLAN 0) is already endpoint eth0 \
             of container web (docker); the classifier tells endpoints apart by MAC and VLAN"
            .into())
    );
    assert_eq!(
        results[3],
        Err(
            "docker container multi: eth0 has the MAC 01:00:5e:00:00:01, which is not a unicast \
             address"
                .into()
        )
    );

    // The table holds the two, the state the two containers and no more.
    let pins = pin_dir(&lab);
    let maps = PinnedMaps::open(&pins).unwrap();
    let table = maps.endpoints_ro().unwrap();
    assert_eq!(table.entries().unwrap().len(), 2);
    assert!(table.get(m1, 0).is_some() && table.get(m2, 0).is_some());
    let state = json(&s.state());
    let mut names: Vec<&str> = state["containers"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["db", "web"]);
    // The runtime numbered both devices 2 in their namespaces: each has
    // the source checks all the same, known by its slot (the classid of
    // its filter), none by the ifindex they share.
    for (ns, mac) in [(&d1, m1), (&d2, m2)] {
        let slot = table.get(mac, 0).unwrap().slot;
        let key = macvlan_common::device_key_of_classid(slot as u16);
        assert_eq!(maps.device(key).unwrap().mac, mac);
        assert_eq!(endpoint_programs(ns, "eth0").len(), 1);
    }
    assert!(maps.device(2).is_none());
    // The 11 frames before the adoption are the baseline, not a mismatch.
    let web = &state["containers"][&"a".repeat(64)]["endpoints"][NET_ID];
    assert_eq!(
        web["rx_base"].as_u64().unwrap(),
        lab.link_stats(&d1, "eth0").unwrap().rx_packets
    );
    assert_eq!(web["rx_base"].as_u64().unwrap(), before + 11);
    let frame = FrameSpec::udp4(m1, src).build().unwrap();
    send(
        &maps,
        lab.upstream(),
        UPSTREAM_IF,
        Hook::XdpIngress,
        frame,
        5,
    );
    let verify = s.ok(&["verify"]);
    assert!(verify.contains("web"), "{verify}");

    // Again: nothing changes, and nothing is written.
    let modified = || {
        ["state.json", "state.journal"]
            .map(|f| std::fs::metadata(dir.join(f)).unwrap().modified().unwrap())
    };
    let written = modified();
    let results = with_controller(&lab, &dir, move |ctl| {
        Ok(ctl
            .adopt_endpoints(items)
            .into_iter()
            .map(|r| r.is_ok_and(|a| a == Adopted::Unchanged))
            .collect::<Vec<_>>())
    })
    .unwrap();
    assert_eq!(results, [true, true, false, false]);
    assert_eq!(modified(), written);
    drop(maps);
    with_controller(&lab, &dir, |ctl| ctl.forget_network(NET_ID)).unwrap();
    assert!(!pins.exists(), "pins left at {}", pins.display());
}

/// A runtime that hands its containers' addresses out anew (Docker after a
/// daemon restart, or a disconnect and connect with the addresses swapped)
/// moves MACs among endpoints it keeps: two containers that swap MACs are
/// both updated in one batch, whatever order they come in, each counted
/// for its new MAC and checked on its new device.
#[test]
fn two_adopted_containers_that_swap_macs_are_both_updated() {
    use mvnet::controller::adopt::Adopted;
    require_root();
    let mut lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = s.state_dir.clone();
    let (m1, m2) = (
        [0x02, 0x42, 0x0a, 0x70, 0x00, 0x02],
        [0x02, 0x42, 0x0a, 0x70, 0x00, 0x03],
    );
    let d1 = lab.add_container("s1").unwrap();
    let d2 = lab.add_container("s2").unwrap();
    lab.add_macvlan(&d1, m1).unwrap();
    lab.add_macvlan(&d2, m2).unwrap();
    let (web, db) = ("e".repeat(64), "f".repeat(64));
    let first = vec![
        (container(&web, "web", &d1), endpoint(m1, "10.112.0.2")),
        (container(&db, "db", &d2), endpoint(m2, "10.112.0.3")),
    ];
    let results = with_controller(&lab, &dir, move |ctl| {
        ctl.adopt_network(network(Policy::Observe))?;
        Ok(ctl
            .adopt_endpoints(first)
            .into_iter()
            .map(|r| r.map_err(|e| format!("{e:#}")))
            .collect::<Vec<_>>())
    })
    .unwrap();
    assert_eq!(results, [Ok(Adopted::Added), Ok(Adopted::Added)]);
    // The devices made again with the MACs swapped.
    for d in [&d1, &d2] {
        let out = d
            .run(|| {
                std::process::Command::new("ip")
                    .args(["link", "del", "eth0"])
                    .output()
                    .unwrap()
            })
            .unwrap();
        assert!(out.status.success());
    }
    lab.add_macvlan(&d1, m2).unwrap();
    lab.add_macvlan(&d2, m1).unwrap();
    // db (now m1, web's) first: before, it was refused as a second holder
    // of m1, and web then as one of m2.
    let swapped = vec![
        (container(&db, "db", &d2), endpoint(m1, "10.112.0.2")),
        (container(&web, "web", &d1), endpoint(m2, "10.112.0.3")),
    ];
    let results = with_controller(&lab, &dir, move |ctl| {
        Ok(ctl
            .adopt_endpoints(swapped)
            .into_iter()
            .map(|r| r.map_err(|e| format!("{e:#}")))
            .collect::<Vec<_>>())
    })
    .unwrap();
    assert_eq!(results, [Ok(Adopted::Updated), Ok(Adopted::Updated)]);
    let maps = PinnedMaps::open(&pin_dir(&lab)).unwrap();
    let table = maps.endpoints_ro().unwrap();
    assert_eq!(table.entries().unwrap().len(), 2);
    // Each device's check carries its endpoint's new identity.
    for mac in [m1, m2] {
        let slot = table.get(mac, 0).unwrap().slot;
        let id = maps
            .device(macvlan_common::device_key_of_classid(slot as u16))
            .unwrap();
        assert_eq!((id.mac, id.slot), (mac, slot));
    }
    // 5 frames to m1 are db's, 8 to m2 web's.
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    for (mac, n) in [(m1, 5), (m2, 8)] {
        send(
            &maps,
            lab.upstream(),
            UPSTREAM_IF,
            Hook::XdpIngress,
            FrameSpec::udp4(mac, src).build().unwrap(),
            n,
        );
    }
    let stats = json(&s.ok(&["stats", "--json"]));
    assert_eq!(
        endpoints_of(&stats),
        [
            ("db".to_owned(), "docker".to_owned(), 5),
            ("web".to_owned(), "docker".to_owned(), 8)
        ]
    );
    let v = s.run(&["verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

/// A sync reads the runtime without the state's lock and converges later:
/// a watcher may have applied newer events in between. A container
/// recorded since the read is not forgotten, and one whose namespace is
/// gone by the time of the converge (it stopped since) is left out, not
/// adopted over the live one that took its MAC.
#[test]
fn a_sync_applied_after_newer_events_keeps_what_they_recorded() {
    require_root();
    let mut lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = s.state_dir.clone();
    let m = [0x02, 0x42, 0x0a, 0x71, 0x00, 0x05];
    let d1 = lab.add_container("r1").unwrap();
    let d2 = lab.add_container("r2").unwrap();
    // The sync reads c1 with m, in d1, then c1 goes and c2 comes with m
    // (the same address), which the watcher adopts.
    let read_at = std::time::SystemTime::now() - std::time::Duration::from_secs(5);
    let c1 = container(&"1".repeat(64), "c1", &d1);
    let gone = d1.path().to_owned();
    mvnet::netns::delete(d1.name().unwrap()).unwrap();
    assert!(!gone.exists());
    lab.add_macvlan(&d2, m).unwrap();
    let c2 = container(&"2".repeat(64), "c2", &d2);
    with_controller(&lab, &dir, move |ctl| {
        ctl.adopt_network(network(Policy::Observe))?;
        ctl.adopt_endpoint(&c2, endpoint(m, "10.113.0.5"))
    })
    .unwrap();
    let report = with_controller(&lab, &dir, move |ctl| {
        ctl.converge_foreign(
            |o| *o == Owner::Docker,
            vec![network(Policy::Observe)],
            vec![(c1, vec![endpoint(m, "10.113.0.5")])],
            Some(read_at),
            &Default::default(),
        )
    })
    .unwrap();
    assert_eq!(
        report.to_string(),
        format!(
            "left out docker container c1: it stopped since it was read (its namespace {} is \
             gone)\n",
            gone.display()
        )
    );
    let stats = json(&s.ok(&["stats", "--json"]));
    assert_eq!(
        endpoints_of(&stats),
        [("c2".to_owned(), "docker".to_owned(), 0)]
    );
    let maps = PinnedMaps::open(&pin_dir(&lab)).unwrap();
    let slot = maps.endpoints_ro().unwrap().get(m, 0).unwrap().slot;
    let id = maps
        .device(macvlan_common::device_key_of_classid(slot as u16))
        .unwrap();
    assert_eq!((id.mac, id.ipv4), (m, [10, 113, 0, 5]));
    assert_eq!(
        s.ok(&["restore", "--check"]),
        "nothing to do: the kernel matches the state\n"
    );
}

/// Under traffic that does not pause, an adopted endpoint's base is the
/// kernel's count at the moment its classifier entry began counting: once
/// the traffic stops, `verify` finds the classifier and the kernel equal.
/// The same after `mvnet restore` re-adds an entry removed behind mvnet's
/// back while the traffic flows. (A base read before the entry exists
/// leaves the kernel ahead by the frames that arrived while the state was
/// saved and the entry added.)
#[test]
fn verify_is_exact_for_endpoints_adopted_and_restored_while_traffic_flows() {
    use std::{
        sync::atomic::{AtomicBool, Ordering},
        time::{Duration, Instant},
    };

    use mvnet_lab::lab::wire::{self, Paced};

    require_root();
    let mut lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let dir = s.state_dir.clone();
    let mac = [0x02, 0x42, 0x0a, 0x6f, 0x00, 0x02];
    let d1 = lab.add_container("d1").unwrap();
    lab.add_macvlan(&d1, mac).unwrap();
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let frame = FrameSpec::udp4(mac, src).build().unwrap();
    with_controller(&lab, &dir, |ctl| {
        ctl.adopt_network(network(Policy::Observe))
    })
    .unwrap();
    let web = container(&"1".repeat(64), "web", &d1);
    let rx = || lab.link_stats(&d1, "eth0").unwrap().rx_packets;
    let wait_for = |more: u64| {
        let (from, start) = (rx(), Instant::now());
        while rx() < from + more {
            assert!(start.elapsed() < Duration::from_secs(10), "traffic stalled");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    // Bursts with gaps, about 40,000 frames a second: hundreds arrive
    // during an adoption, and `verify`'s base read finds a gap.
    let pace = Paced {
        burst: 16,
        gap: Duration::from_micros(300),
        max: 2_000_000,
        deadline: Duration::from_secs(60),
    };
    let under_traffic = |change: &dyn Fn()| {
        let stop = AtomicBool::new(false);
        std::thread::scope(|sc| {
            let sender =
                sc.spawn(|| wire::send_until(lab.upstream(), UPSTREAM_IF, &frame, &pace, &stop));
            wait_for(200);
            change();
            wait_for(200);
            stop.store(true, Ordering::Relaxed);
            sender.join().unwrap().unwrap()
        });
        // Every frame sent is delivered (or not) before the count settles.
        let mut last = rx();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = rx();
            if now == last {
                break;
            }
            last = now;
        }
    };
    let exact = |when: &str| {
        let out = s.ok(&["verify"]);
        let row: Vec<&str> = out
            .lines()
            .find(|l| l.starts_with("web "))
            .unwrap_or_else(|| panic!("{when}: no row for web in {out}"))
            .split_whitespace()
            .collect();
        let (classified, kernel): (u64, u64) = (row[3].parse().unwrap(), row[4].parse().unwrap());
        assert!(classified >= 200, "{when}: {out}");
        assert_eq!((kernel, row[5]), (classified, "0"), "{when}: {out}");
    };

    under_traffic(&|| {
        let web = web.clone();
        with_controller(&lab, &dir, move |ctl| {
            ctl.adopt_endpoint(&web, endpoint(mac, "10.110.0.2"))
        })
        .unwrap();
    });
    exact("adopted under traffic");

    let pins = pin_dir(&lab);
    under_traffic(&|| {
        PinnedMaps::open(&pins)
            .unwrap()
            .endpoints()
            .unwrap()
            .remove(mac, 0)
            .unwrap();
        let out = s.ok(&["restore"]);
        assert!(out.contains("added classifier entry"), "{out}");
    });
    exact("restored under traffic");
}
