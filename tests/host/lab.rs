//! The lab harness itself: topology, teardown, frame sender and capture.
use std::time::Duration;

use mvnet::netns;
use mvnet_lab::lab::{
    frames::FrameSpec,
    wire::{self, SendPlan},
    Lab, PARENT, UPSTREAM_IF,
};

use crate::common::require_root;

#[test]
fn lab_builds_and_tears_down_without_trace() {
    require_root();
    let names;
    {
        let mut lab = Lab::new().unwrap();
        let c = lab.add_container("c1").unwrap();
        names = [
            lab.upstream().name().unwrap().to_owned(),
            lab.host().name().unwrap().to_owned(),
            c.name().unwrap().to_owned(),
        ];
        for n in &names {
            assert!(netns::list().contains(n), "namespace {n} missing");
        }
        // The parent is in the host namespace, up; the wire end upstream.
        let parent = mvnet::netlink::run(Some(lab.host()), |nl| async move {
            nl.require_link(PARENT).await
        })
        .unwrap();
        assert!(parent.up);
        let wire = mvnet::netlink::run(Some(lab.upstream()), |nl| async move {
            nl.require_link(UPSTREAM_IF).await
        })
        .unwrap();
        assert!(wire.up);
        // Nothing of the lab in the root namespace.
        let root = mvnet::netlink::run(None, |nl| async move { nl.links().await }).unwrap();
        assert!(!root.iter().any(|l| l.name == UPSTREAM_IF));
    }
    for n in &names {
        assert!(!netns::list().contains(n), "namespace {n} left behind");
    }
}

#[test]
fn lab_is_removed_when_a_test_panics() {
    require_root();
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::new().unwrap();
        let name = lab.host().name().unwrap().to_owned();
        panic!("{name}");
    });
    let name = *result.unwrap_err().downcast::<String>().unwrap();
    assert!(
        !netns::list().contains(&name),
        "namespace {name} left behind"
    );
}

#[test]
fn sender_and_capture_count_exact_frames() {
    require_root();
    let lab = Lab::new().unwrap();
    let dst = lab.mac_of(lab.host(), PARENT).unwrap();
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let frames = vec![FrameSpec::udp4(dst, src).build().unwrap()];
    let host = lab.host().clone();
    std::thread::scope(|s| {
        let cap = s.spawn(|| {
            wire::capture(&host, PARENT, 300, Duration::from_secs(20), |f| {
                f[0..6] == dst && f[6..12] == src
            })
            .unwrap()
        });
        // Give the capture socket time to bind before sending.
        std::thread::sleep(Duration::from_millis(200));
        let sent = wire::send(
            lab.upstream(),
            UPSTREAM_IF,
            &SendPlan {
                frames: &frames,
                rounds: 300,
                deadline: Duration::from_secs(20),
                burst: 300,
            },
            |_| true,
        )
        .unwrap();
        assert_eq!(sent, 300);
        assert_eq!(cap.join().unwrap(), 300);
    });
}

#[test]
fn netns_names_are_validated() {
    let err = netns::create("../etc").unwrap_err();
    assert!(err.to_string().contains("is invalid"), "{err}");
}

#[test]
fn capture_reports_the_vlan_tag_the_kernel_stripped() {
    require_root();
    use mvnet_lab::lab::frames::Tag;
    let lab = Lab::new().unwrap();
    let dst = lab.mac_of(lab.host(), PARENT).unwrap();
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    let tagged = vec![FrameSpec::udp4(dst, src)
        .tagged(&[Tag::dot1q(10)])
        .build()
        .unwrap()];
    let untagged = vec![FrameSpec::udp4(dst, src).build().unwrap()];
    let host = lab.host().clone();
    let seen_untagged = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        let cap = s.spawn(|| {
            wire::capture_with_vlan(&host, PARENT, 50, Duration::from_secs(20), |f, tag| {
                if f[6..12] != src {
                    return false;
                }
                let inline = f[12..14] == [0x81, 0x00];
                match (tag, inline) {
                    (Some(t), false) => t.vid == 10 && t.tpid == 0x8100,
                    (None, true) => u16::from_be_bytes([f[14], f[15]]) & 0xfff == 10,
                    _ => {
                        seen_untagged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        false
                    }
                }
            })
            .unwrap()
        });
        std::thread::sleep(Duration::from_millis(200));
        for (frames, n) in [(&untagged, 30), (&tagged, 50)] {
            wire::send(
                lab.upstream(),
                UPSTREAM_IF,
                &SendPlan {
                    frames,
                    rounds: n,
                    deadline: Duration::from_secs(20),
                    burst: 10,
                },
                |_| true,
            )
            .unwrap();
        }
        assert_eq!(cap.join().unwrap(), 50);
    });
    assert_eq!(seen_untagged.load(std::sync::atomic::Ordering::Relaxed), 30);
}

/// `mvnet lab` and `mvnet pktgen` run the mvnet-lab binary from beside
/// mvnet, else from PATH; with neither, the error says where it looked and
/// how to build it, and nothing runs.
#[test]
fn mvnet_without_mvnet_lab_says_where_it_looked() {
    let dir = std::env::temp_dir().join(format!("mvl-{}-alone", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("mvnet");
    let src = crate::common::cli::mvnet_bin();
    std::fs::hard_link(&src, &bin)
        .or_else(|_| std::fs::copy(&src, &bin).map(drop))
        .unwrap();
    for sub in ["lab", "pktgen"] {
        let out = std::process::Command::new(&bin)
            .args([sub, "--help"])
            .env("PATH", &dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "mvnet: error: `mvnet {sub}` is run by the mvnet-lab binary, which is neither \
                 beside mvnet (in {}) nor in PATH; build both binaries with `cargo xtask build` \
                 (or `cargo build -p macvlan-user -p mvnet-lab`)\n",
                dir.display()
            )
        );
        assert!(out.stdout.is_empty());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
