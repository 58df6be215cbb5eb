//! Clear refusals, no panics: a closed output pipe ends every listing
//! quietly with status 0; out-of-range numbers, the parent's own MAC, a MAC
//! another network on the parent uses and a file that is not a network
//! namespace are refused at once, with the problem and the fix, and change
//! nothing.
use std::{
    os::fd::{FromRawFd as _, OwnedFd},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mvnet_lab::lab::Lab;

use crate::common::{
    cli::{mvnet_bin, Session},
    require_root,
};

/// Runs `mvnet ARGS` in the session's namespace with standard output a pipe
/// whose reader has already gone: (exit code, stderr).
fn into_closed_pipe(s: &Session, args: &[&str]) -> (Option<i32>, String) {
    let mut fds = [0; 2];
    // SAFETY: valid output array for two fds.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two fresh fds we own.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    let mut cmd = Command::new(mvnet_bin());
    cmd.arg("--state-dir")
        .arg(&s.state_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped());
    let out = s.ns.run(move || cmd.output().unwrap()).unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn listings_into_a_closed_pipe_exit_quietly() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("pipe", "10.84.0.0/24", "eth0", &[]);
    let c = s.name("p1");
    s.container("pipe", &c, &[]);
    for args in [
        &["network", "ls"][..],
        &["network", "inspect", "pipe"],
        &["container", "ls"],
        &["container", "inspect", &c],
        &["verify"],
        &["stats"],
        &["stats", "--json"],
        &["stats", "--watch", "0.1", "--count", "2"],
        &["top", "--plain", "--interval", "0.1", "--count", "2"],
    ] {
        assert_eq!(
            into_closed_pipe(&s, args),
            (Some(0), String::new()),
            "mvnet {args:?} | true"
        );
    }
    s.ok(&["container", "stop", &c]);
    s.ok(&["container", "rm", &c]);
    s.ok(&["network", "rm", "pipe"]);
}

#[test]
fn out_of_range_intervals_are_refused_with_the_range() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    for v in ["1e300", "NaN", "-1", "0", "3601"] {
        let out = s.run(&["stats", &format!("--watch={v}")]);
        assert_eq!(out.status.code(), Some(2), "--watch={v}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!(
                "error: invalid value '{v}' for '--watch [<SECS>]': {v} is out of range; \
                 give seconds between 0.1 and 3600, e.g. 1 or 0.5\n"
            )),
            "{err}"
        );
    }
    let out = s.run(&["top", "--interval", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("invalid interval \"0\"; give seconds between 0.1 and 3600"));
    assert_eq!(s.state(), "", "a refusal wrote the state");
}

#[test]
fn the_parents_own_mac_is_refused_at_once() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("pmac", "10.85.0.0/24", "eth0", &[]);
    let before = s.state();
    let links = s.links();
    let parent = mvnet::model::Mac::new(lab.mac_of(lab.host(), "eth0").unwrap()).to_string();
    let c = s.name("m1");
    let t = Instant::now();
    let err = s.fails(&[
        "run",
        "-d",
        "--network",
        "pmac",
        "--name",
        &c,
        "--mac-address",
        &parent,
    ]);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        err.trim(),
        format!(
            "mvnet: error: MAC address {parent} is the address of the parent eth0; an endpoint \
             needs its own: pick another --mac-address, or leave it out to get one"
        )
    );
    assert_eq!(s.state(), before, "the refusal changed the state");
    assert_eq!(s.links(), links);
    assert!(
        !mvnet::netns::list().contains(&c),
        "a namespace was left behind"
    );
    s.ok(&["network", "rm", "pmac"]);
}

/// A MAC is unique per network, but two networks on one parent share the
/// parent's MAC space: the kernel brings up one macvlan device per MAC on
/// it, and the classifier keeps one entry per MAC and VLAN. `run` and
/// `connect` with another network's endpoint's MAC on that parent are
/// refused at once and change nothing; that endpoint keeps its entry.
#[test]
fn a_mac_another_network_on_the_parent_uses_is_refused() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("ma", "10.86.0.0/24", "eth0", &[]);
    s.network("mb", "10.87.0.0/24", "eth0", &[]);
    let mac = "02:00:00:00:86:0a";
    let a = s.name("a");
    s.container("ma", &a, &["--mac-address", mac]);
    let octets = [0x02, 0, 0, 0, 0x86, 0x0a];
    let entry = || {
        mvnet::datapath::pinned::PinnedMaps::open(&crate::datapath_cp::pin_dir(&lab))
            .unwrap()
            .endpoints_ro()
            .unwrap()
            .get(octets, 0)
    };
    let held = entry().expect("a's entry");
    let before = s.state();
    let links = s.links();
    let want = format!(
        "mvnet: error: MAC address {mac} is already in use on parent eth0 by container {a} \
         (network ma), and the kernel allows each MAC once per parent device; pick another \
         --mac-address"
    );
    let b = s.name("b");
    let err = s.fails(&[
        "run",
        "-d",
        "--network",
        "mb",
        "--name",
        &b,
        "--mac-address",
        mac,
    ]);
    assert_eq!(err.trim(), want);
    assert!(!mvnet::netns::list().contains(&b), "a namespace was left");
    // Through `connect` too, for a container already on another network.
    let c = s.name("c");
    s.container("ma", &c, &[]);
    let before_connect = s.state();
    let err = s.fails(&["network", "connect", "--mac-address", mac, "mb", &c]);
    assert_eq!(err.trim(), want);
    assert_eq!(s.state(), before_connect, "the refusal changed the state");
    s.ok(&["container", "rm", "--force", &c]);
    assert_eq!(s.state(), before, "the refusals changed the state");
    assert_eq!(s.links(), links);
    assert_eq!(entry(), Some(held), "a's classifier entry changed");
    let v = s.run(&["verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    // On the network's own parent's other networks only: once a is gone,
    // the MAC is free for mb.
    s.ok(&["container", "rm", "--force", &a]);
    s.container("mb", &b, &["--mac-address", mac]);
    s.ok(&["container", "rm", "--force", &b]);
    s.ok(&["network", "rm", "ma", "mb"]);
}

/// A root's classifier is one table, which one state directory (under one
/// lock) accounts for: a network on that root from another state
/// directory is refused, and that directory's `restore` leaves the
/// classifier (which it would otherwise remove as unused) alone.
#[test]
fn a_root_another_state_directory_keeps_is_refused_and_left_alone() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("ka", "10.88.0.0/24", "eth0", &[]);
    let a = s.name("a");
    s.container("ka", &a, &[]);
    let other = Session::another(&lab, "b");
    let links = s.links();
    let err = other.fails(&[
        "network",
        "create",
        "--subnet",
        "10.89.0.0/24",
        "-o",
        "parent=eth0",
        "kb",
    ]);
    assert_eq!(
        err.trim(),
        format!(
            "mvnet: error: the classifier on eth0 is kept by another mvnet state directory than \
             {}; every network on one root device must be kept in one: use the state directory \
             of the other networks on eth0 (for mvnet-cni, the same \"stateDir\" in every \
             network config whose master is on eth0; the default is /var/lib/mvnet), or, if \
             that directory was moved here, hand the classifier over with `rmdir {}`",
            other.state_dir.display(),
            crate::datapath_cp::pin_dir(&lab)
                .join(mvnet::datapath::pinned::owner_mark(&s.state_dir))
                .display()
        )
    );
    assert_eq!(other.ok(&["network", "ls", "-q"]), "");
    assert_eq!(s.links(), links);
    // Its restore has no network, so no use for the root's pins: they stay.
    other.ok(&["restore"]);
    assert_eq!(
        s.ok(&["restore", "--check"]),
        "nothing to do: the kernel matches the state\n"
    );
    let v = s.run(&["verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    s.ok(&["container", "rm", "--force", &a]);
    s.ok(&["network", "rm", "ka"]);
    // Once the keeper has let go, the other directory may take the root.
    other.ok(&[
        "network",
        "create",
        "--subnet",
        "10.89.0.0/24",
        "-o",
        "parent=eth0",
        "kb",
    ]);
    other.ok(&["network", "rm", "kb"]);
}

#[test]
fn connect_netns_refuses_a_file_that_is_not_a_network_namespace() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("nsf", "10.86.0.0/24", "eth0", &[]);
    let before = s.state();
    for path in ["/etc/passwd", "/proc/self/ns/mnt"] {
        let err = s.fails(&["network", "connect", "--netns", path, "nsf"]);
        assert_eq!(
            err.trim(),
            format!(
                "mvnet: error: {path} is not a network namespace; give a path such as \
                 /proc/PID/ns/net or /run/netns/NAME"
            )
        );
    }
    assert_eq!(s.state(), before, "the refusal changed the state");
    s.ok(&["network", "rm", "nsf"]);
}
