//! `mvnet pktgen` on this kernel, which has no pktgen: the AF_PACKET
//! TX-ring generator sends exact counts to three endpoints on two
//! networks, to unknown MACs and to known MACs on a wrong VLAN, from the
//! lab's upstream side; the JSON report must match to the frame, and
//! `mvnet verify` must agree.
use serde_json::Value;

use crate::common::{cli::Session, require_root};
use mvnet_lab::lab::Lab;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON ({e}): {s}"))
}

/// Three endpoints: a1, a2 on `na`, b1 on `nb`, all on eth0 (VLAN 0: this
/// kernel has no 802.1Q). Returns the container names.
fn three_endpoints(s: &Session, policy: &str) -> Vec<String> {
    for (net, subnet) in [("na", "10.93.0.0/24"), ("nb", "10.94.0.0/24")] {
        // The tests assert XDP's counts (auto: TC alone on the lab's veth).
        let native = crate::datapath_cp::XDP_NATIVE;
        s.network(
            net,
            subnet,
            "eth0",
            &["--policy", policy, native[0], native[1]],
        );
    }
    let names: Vec<String> = ["a1", "a2", "b1"].iter().map(|n| s.name(n)).collect();
    for (name, net) in names.iter().zip(["na", "na", "nb"]) {
        s.container(net, name, &[]);
    }
    names
}

fn pktgen(lab: &Lab, s: &Session, extra: &[&str]) -> (Value, String) {
    let up = lab.upstream().name().unwrap().to_owned();
    let mut args = vec!["pktgen", "--netns", &up, "--json"];
    args.extend_from_slice(extra);
    let out = s.run(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "mvnet {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    (json(&stdout), stderr)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Checks the parts of a report every run shares: each endpoint got
/// `count` valid frames, counted and delivered; nothing dropped; verify ok.
fn check_endpoints(r: &Value, names: &[String], count: u64) {
    let eps = r["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 3, "{r:#}");
    for name in names {
        let e = eps
            .iter()
            .find(|e| e["container"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} missing from {r:#}"));
        assert_eq!(u(&e["sent"]), count, "{e}");
        assert_eq!(u(&e["counted"]), count, "{e}");
        assert_eq!(u(&e["delivered"]), count, "{e}");
    }
    for k in ["sent_valid", "counted_valid", "delivered_valid"] {
        assert_eq!(u(&r[k]), 3 * count, "{k}");
    }
    let d = &r["kernel_drops"];
    assert_eq!(
        u(&d["generator_tx_dropped"]) + u(&d["root_rx_dropped"]) + u(&d["generator_errors"]),
        0,
        "{d}"
    );
    assert_eq!(r["verify_ok"], true, "{:#}", r["verify"]);
    assert_eq!(r["verify"].as_array().unwrap().len(), 3);
    assert_eq!(r["exact"], true, "{:#}", r["checks"]);
    assert!(r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["ok"] == true));
}

#[test]
fn fallback_generator_accounts_exactly_under_enforce() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let names = three_endpoints(&s, "enforce");

    // Asked for pktgen on a kernel without it: a clear error.
    let up = lab.upstream().name().unwrap().to_owned();
    let e = s.fails(&["pktgen", "--netns", &up, "--generator", "pktgen"]);
    assert!(e.contains("this kernel has no pktgen"), "{e}");

    let (r, stderr) = pktgen(&lab, &s, &["--count", "500", "--unknown", "2"]);
    // auto chose the fallback and said why.
    assert!(
        stderr.contains("this kernel has no pktgen") && stderr.contains("AF_PACKET TX-ring"),
        "{stderr}"
    );
    assert_eq!(r["generator"], "af_packet_tx_ring");
    assert_eq!(u(&r["requested"]), 5 * 500);
    assert_eq!(u(&r["sent"]), 5 * 500);
    assert_eq!(r["flows"].as_array().unwrap().len(), 5);
    check_endpoints(&r, &names, 500);
    let xdp = &r["verdicts"]["xdp"];
    assert_eq!(u(&xdp["delivered"]), 1500, "{xdp}");
    assert_eq!(u(&xdp["unknown_mac"]), 1000, "{xdp}");
    assert_eq!(u(&xdp["vlan_mismatch"]), 0, "{xdp}");
    assert_eq!(u(&xdp["malformed"]), 0, "{xdp}");
    // Each frame counted once, at XDP: TC ingress counts none again.
    let tc = &r["verdicts"]["tc_ingress"];
    assert!(tc.as_object().unwrap().values().all(|n| u(n) == 0), "{tc}");
    let vlans = r["vlans"].as_array().unwrap();
    assert_eq!(vlans.len(), 1, "{vlans:?}");
    assert_eq!(u(&vlans[0]["vlan"]), 0);
    assert_eq!(u(&vlans[0]["sent"]), 2500);
    assert_eq!(u(&vlans[0]["counted_xdp"]), 2500);

    let verify = s.ok(&["verify"]);
    assert!(!verify.contains("UNEXPLAINED"), "{verify}");
    // The table form carries the same verdict.
    let out = s.run(&[
        "pktgen",
        "--netns",
        &up,
        "--generator",
        "fallback",
        "--count",
        "100",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("exact accounting: PASS"), "{text}");
    for n in &names {
        s.ok(&["container", "stop", n]);
        s.ok(&["container", "rm", n]);
    }
    s.ok(&["network", "rm", "na", "nb"]);
}

#[test]
fn fallback_generator_accounts_exactly_under_observe_at_a_set_rate() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let names = three_endpoints(&s, "observe");
    // 4 flows at 20 000 frames/s for 0.5 s: 2500 frames per flow.
    let (r, stderr) = pktgen(
        &lab,
        &s,
        &[
            "--generator",
            "fallback",
            "--rate",
            "20000",
            "--duration",
            "0.5",
            "--unknown",
            "1",
            "--size",
            "128",
        ],
    );
    assert_eq!(u(&r["sent"]), 4 * 2500);
    assert_eq!(
        stderr,
        "mvnet pktgen: --duration 0.5 s at --rate 20000 fps sets 2500 frames per flow over 4 flows, \
         in place of --count 1000\n\
         mvnet pktgen: the AF_PACKET TX-ring generator, as asked (--generator fallback)\n"
    );
    assert_eq!(u(&r["frame_size"]), 128);
    check_endpoints(&r, &names, 2500);
    let xdp = &r["verdicts"]["xdp"];
    assert_eq!(u(&xdp["delivered"]), 7500, "{xdp}");
    assert_eq!(u(&xdp["unknown_mac"]), 2500, "{xdp}");
    // Counted once, at XDP.
    assert_eq!(u(&r["verdicts"]["tc_ingress"]["unknown_mac"]), 0);
    let rate = r["rate_achieved"].as_f64().unwrap();
    assert!(rate <= 20000.0 * 1.05, "paced at {rate} fps");
    s.ok(&["verify"]);

    // Unpaced, larger: still exact (the window holds the sender back).
    let (r, _) = pktgen(&lab, &s, &["--generator", "fallback", "--count", "20000"]);
    check_endpoints(&r, &names, 20000);
    s.ok(&["verify"]);
    for n in &names {
        s.ok(&["container", "stop", n]);
        s.ok(&["container", "rm", n]);
    }
    s.ok(&["network", "rm", "na", "nb"]);
}

/// On a kernel without 802.1Q, a frame tagged with a VLAN no network uses,
/// sent to an endpoint's MAC, is handed to that endpoint by macvlan. The
/// classifier counts it as a VLAN mismatch. Under enforce it drops it (the
/// endpoint's own network enforces), so the run is exact; under observe it
/// passes, and the report's exact check catches it to the frame and says
/// why; `mvnet verify` sees the difference and explains it from the
/// classifier's per-endpoint count of passed mismatches.
#[test]
fn wrong_vlan_frames_are_dropped_under_enforce_and_reported_under_observe() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let names = three_endpoints(&s, "enforce");
    let up = lab.upstream().name().unwrap().to_owned();
    let run = |s: &Session| {
        s.run(&[
            "pktgen",
            "--netns",
            &up,
            "--json",
            "--count",
            "300",
            "--wrong-vlan",
            "1",
        ])
    };

    // Enforce: dropped, exact.
    let out = run(&s);
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert_eq!(r["exact"], true);
    assert_eq!(u(&r["sent"]), 4 * 300);
    let xdp = &r["verdicts"]["xdp"];
    assert_eq!(u(&xdp["delivered"]), 900, "{xdp}");
    assert_eq!(u(&xdp["vlan_mismatch"]), 300, "{xdp}");
    for e in r["endpoints"].as_array().unwrap() {
        assert_eq!(u(&e["sent"]), 300, "{e}");
        assert_eq!(u(&e["counted"]), 300, "{e}");
        assert_eq!(u(&e["delivered"]), 300, "{e}");
    }
    let v = s.run(&["verify"]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );

    // Observe: delivered by MAC, expected and explained by the report
    // (exact, with the extra delivery in its check) and by verify.
    s.ok(&["network", "update", "--policy", "observe", "na"]);
    s.ok(&["network", "update", "--policy", "observe", "nb"]);
    let out = run(&s);
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert_eq!(r["exact"], true);
    assert_eq!(u(&r["sent"]), 4 * 300);
    let xdp = &r["verdicts"]["xdp"];
    assert_eq!(u(&xdp["delivered"]), 900, "{xdp}");
    assert_eq!(u(&xdp["vlan_mismatch"]), 300, "{xdp}");
    let wrong = r["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "wrong_vlan")
        .unwrap();
    assert_eq!(u(&wrong["vlan"]), 4094);
    let victim = wrong["endpoint"].as_str().unwrap();
    for e in r["endpoints"].as_array().unwrap() {
        assert_eq!(u(&e["sent"]), 300);
        assert_eq!(u(&e["counted"]), 300);
        let extra = if e["container"] == victim { 300 } else { 0 };
        assert_eq!(u(&e["delivered"]), 300 + extra, "{e}");
        assert_eq!(u(&e["wrong_vlan_delivered"]), extra, "{e}");
    }
    let check = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["what"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{victim}: kernel delivered"))
        })
        .unwrap();
    assert_eq!(
        check["what"],
        format!("{victim}: kernel delivered = valid frames sent + wrong-VLAN frames to its MAC (see note)")
    );
    assert_eq!((u(&check["expected"]), u(&check["actual"])), (600, 600));
    assert_eq!(check["ok"], true);
    let note = r["notes"][0].as_str().unwrap();
    assert!(note.contains("no VLAN device for that tag"), "{note}");
    assert!(note.contains("only observes"), "{note}");
    let row = r["verify"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["container"] == victim)
        .unwrap();
    assert_eq!(row["diff"], 300, "{row}");
    let why = row["explanation"].as_str().unwrap();
    assert!(
        why.starts_with("300 frames to this MAC tagged for another VLAN were passed"),
        "{why}"
    );
    let v = s.run(&["verify"]);
    let table = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(0), "{table}");
    let line = table.lines().find(|l| l.starts_with(victim)).unwrap();
    assert!(
        line.contains("delivered by MAC: no VLAN device on eth0"),
        "{line}"
    );
    for n in &names {
        s.ok(&["container", "stop", n]);
        s.ok(&["container", "rm", n]);
    }
    s.ok(&["network", "rm", "na", "nb"]);
}

/// A sending device that does not lead to the root: the fallback sender
/// notices that the classifier sees nothing and stops with a clear error
/// instead of waiting for its deadline.
#[test]
fn a_device_not_wired_to_the_root_is_reported() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("nc", "10.95.0.0/24", "eth0", &[]);
    let name = format!("{}-c1", lab.id());
    s.container("nc", &name, &[]);
    mvnet::netlink::run(Some(lab.upstream()), |nl| async move {
        nl.add_veth("vx0", "vx1").await?;
        for n in ["vx0", "vx1"] {
            let l = nl.require_link(n).await?;
            nl.set_up(l.index).await?;
        }
        Ok(())
    })
    .unwrap();
    let up = lab.upstream().name().unwrap().to_owned();
    let start = std::time::Instant::now();
    let e = s.fails(&["pktgen", "--netns", &up, "--dev", "vx0", "--count", "1000"]);
    assert!(e.contains("and none for"), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
    s.ok(&["container", "stop", &name]);
    s.ok(&["container", "rm", &name]);
    s.ok(&["network", "rm", "nc"]);
}

/// Issue 13: `--size 100000` panicked building the frame and
/// `--unknown 4294967295` tried to allocate 10 GiB. Every number outside
/// its documented range is now refused by name (exit 2), before the lab
/// binary reads any state or touches the kernel.
#[test]
fn out_of_range_numbers_are_refused_before_anything_runs() {
    let state = std::env::temp_dir().join(format!("mvl-{}-no-state", std::process::id()));
    for (args, want) in [
        (
            &["pktgen", "--size", "100000"][..],
            "error: invalid value '100000' for '--size <SIZE>': 100000 is not in 60..=1514\n",
        ),
        (
            &["pktgen", "--unknown", "4294967295"][..],
            "error: invalid value '4294967295' for '--unknown <UNKNOWN>': 4294967295 is not in 0..=4096\n",
        ),
        (
            &["pktgen", "--count", "0"][..],
            "error: invalid value '0' for '--count <COUNT>': 0 is not in 1..=1000000000\n",
        ),
        (
            &["pktgen", "--rate", "10", "--duration", "inf"][..],
            "error: invalid value 'inf' for '--duration <DURATION>': \"inf\" is not a number of seconds from 0.001 to 3600\n",
        ),
        (
            &["lab", "smoke", "--to-unknown", "1000001"][..],
            "error: invalid value '1000001' for '--to-unknown <TO_UNKNOWN>': 1000001 is not in 0..=1000000\n",
        ),
    ] {
        let out = std::process::Command::new(crate::common::cli::mvnet_bin())
            .arg("--state-dir")
            .arg(&state)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!state.exists(), "{args:?} created the state directory");
    }
}
