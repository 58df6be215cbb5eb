//! Faults behind mvnet's back: a parent downed, renamed or deleted, a
//! container's namespace deleted, its link renamed, a full or read-only
//! state directory. Each gives a clear message naming the fix, and once
//! the fault is gone `restore` converges (a second `restore --check` has
//! nothing to do). Also: a command run from another network namespace than
//! the state's says so.
use std::{path::Path, process::Command};

use mvnet::{
    netlink,
    netns::{self, NetNs},
};
use mvnet_lab::lab::{Lab, PARENT, UPSTREAM_IF};

use crate::common::{cli::Session, require_root};

const CONVERGED: &str = "nothing to do: the kernel matches the state\n";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `ip ARGS` in `ns`, asserting success.
fn ip(ns: &NetNs, args: &[&str]) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = ns
        .run(move || Command::new("ip").args(&args).output().unwrap())
        .unwrap();
    assert!(out.status.success(), "ip: {}", stderr(&out));
}

/// `restore --check` reports nothing to do and `verify` is clean.
fn assert_converged(s: &Session) {
    assert_eq!(s.ok(&["restore", "--check"]), CONVERGED);
    let v = s.run(&["verify"]);
    assert!(v.status.success(), "verify: {}", stderr(&v));
    assert_eq!(stderr(&v), "");
}

/// A network `nf` on the lab's parent with one container; returns its name.
fn one_container(lab: &Lab, s: &Session) -> String {
    s.network("nf", "10.130.0.0/24", PARENT, &[]);
    let name = format!("{}-f", lab.id());
    s.container("nf", &name, &[]);
    name
}

#[test]
fn a_downed_parent_is_flagged_until_it_is_up() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let c = one_container(&lab, &s);
    ip(lab.host(), &["link", "set", PARENT, "down"]);
    let v = s.run(&["verify"]);
    assert_eq!(v.status.code(), Some(1));
    assert_eq!(
        stderr(&v),
        "mvnet: verify: network nf: parent eth0 is down, so its endpoints receive nothing; \
         bring it up with `ip link set eth0 up`\n"
    );
    ip(lab.host(), &["link", "set", PARENT, "up"]);
    assert_converged(&s);
    s.ok(&["container", "rm", "--force", &c]);
    s.ok(&["network", "rm", "nf"]);
}

#[test]
fn a_renamed_parent_is_named_and_converges_once_renamed_back() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let c = one_container(&lab, &s);
    ip(lab.host(), &["link", "set", PARENT, "down"]);
    ip(lab.host(), &["link", "set", PARENT, "name", "eth9"]);
    ip(lab.host(), &["link", "set", "eth9", "up"]);
    let v = s.run(&["verify"]);
    assert_eq!(v.status.code(), Some(1));
    assert_eq!(
        stderr(&v),
        "mvnet: verify: network nf: parent eth0 was renamed to eth9; rename it back with \
         `ip link set eth9 name eth0`\n"
    );
    // Nothing of mvnet's is touched on the renamed device.
    let r = s.run(&["restore"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        stderr(&r).contains(
            "network nf: parent eth0 is missing and was not created by mvnet; bring it back, then run `mvnet restore` again"
        ),
        "{}",
        stderr(&r)
    );
    ip(lab.host(), &["link", "set", "eth9", "down"]);
    ip(lab.host(), &["link", "set", "eth9", "name", PARENT]);
    ip(lab.host(), &["link", "set", PARENT, "up"]);
    assert_eq!(s.ok(&["restore"]), CONVERGED);
    assert_converged(&s);
    s.ok(&["container", "rm", "--force", &c]);
    s.ok(&["network", "rm", "nf"]);
}

#[test]
fn a_deleted_parent_is_flagged_and_restore_rebuilds_on_the_new_one() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let c = one_container(&lab, &s);
    // Deleting the veth takes its macvlan children (the endpoint) along.
    ip(lab.host(), &["link", "delete", PARENT]);
    let v = s.run(&["verify"]);
    assert_eq!(v.status.code(), Some(1));
    assert!(
        stderr(&v).contains(
            "mvnet: verify: network nf: parent eth0 is gone; bring it back, then run `mvnet restore`\n"
        ),
        "{}",
        stderr(&v)
    );
    let check = s.run(&["restore", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    let attached = || {
        let v: serde_json::Value =
            serde_json::from_str(&s.ok(&["network", "inspect", "nf"])).unwrap();
        v[0]["Classifier"]["Attached"].clone()
    };
    assert_eq!(attached(), false);
    // The fault removed: a new eth0.
    let upstream = lab.upstream().clone();
    netlink::run(Some(lab.host()), |nl| async move {
        nl.add_veth(PARENT, UPSTREAM_IF).await?;
        let peer = nl.require_link(UPSTREAM_IF).await?;
        nl.move_to(peer.index, &upstream).await?;
        let parent = nl.require_link(PARENT).await?;
        nl.set_up(parent.index).await
    })
    .unwrap();
    let out = s.ok(&["restore"]);
    assert!(
        out.contains("adopted parent eth0 of network nf as the new device"),
        "{out}"
    );
    assert!(
        out.contains("re-attached the classifier to eth0 (pins without an attached program)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("recreated endpoint {c}/eth0 on nf")),
        "{out}"
    );
    assert_converged(&s);
    assert_eq!(attached(), true);
    let addr = s.ok(&["exec", &c, "ip", "addr", "show", "eth0"]);
    assert!(addr.contains("inet 10.130.0.2/24"), "{addr}");
    s.ok(&["container", "rm", "--force", &c]);
    s.ok(&["network", "rm", "nf"]);
}

/// An endpoint MAC whose bit in the classifier's source filter is clear
/// (a writer that does not keep the filter, such as an older mvnet on
/// these pins) is found by `restore --check` and marked by `restore`.
#[test]
fn an_endpoint_mac_missing_from_the_source_filter_is_marked_again() {
    require_root();
    use macvlan_common::{direct, mac_word, map_names, DEFAULT_ENDPOINTS};
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let _c = one_container(&lab, &s);
    let mac = [0x02, 0x42, 0x0a, 0x82, 0x00, 0x02];
    let path = crate::datapath_cp::pin_dir(&lab).join(map_names::ENDPOINT_INDEX);
    let data = aya::maps::MapData::from_pin(&path).unwrap();
    let mut index: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
    let (at, bit) = direct::source_bit(mac_word(&mac), direct::source_words(DEFAULT_ENDPOINTS));
    let word = index.get(&at, 0).unwrap();
    assert_eq!(word >> bit & 1, 1, "`run` marked the endpoint's MAC");
    index.set(at, word & !(1 << bit), 0).unwrap();
    let check = s.run(&["restore", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        "would mark 1 endpoint MAC in the source filter of eth0's classifier (written by a \
         writer that does not keep the filter)\n"
    );
    assert_eq!(
        s.ok(&["restore"]),
        "marked 1 endpoint MAC in the source filter of eth0's classifier (written by a \
         writer that does not keep the filter)\n"
    );
    assert_eq!(index.get(&at, 0).unwrap() >> bit & 1, 1);
    assert_converged(&s);
}

/// Two endpoint entries on one slot (a writer killed between its change of
/// the table and of the count that says which slots are taken) and a device
/// entry whose endpoint is gone (one killed between removing an entry and
/// its devices): `restore` gives each endpoint a slot of its own again,
/// with its device registered under it, and removes the orphan.
#[test]
fn entries_sharing_a_slot_and_orphaned_device_entries_are_repaired() {
    require_root();
    use aya::maps::{HashMap, Map, MapData};
    use macvlan_common::{map_names, DeviceIdentity, Endpoint, EndpointKey, VLAN_ANY};
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let a = one_container(&lab, &s);
    let b = format!("{}-g", lab.id());
    s.container("nf", &b, &[]);
    let (mac_a, mac_b) = (
        [0x02, 0x42, 0x0a, 0x82, 0x00, 0x02],
        [0x02, 0x42, 0x0a, 0x82, 0x00, 0x03],
    );
    let dir = crate::datapath_cp::pin_dir(&lab);
    let open = |name| Map::HashMap(MapData::from_pin(dir.join(name)).unwrap());
    let mut table: HashMap<_, EndpointKey, Endpoint> =
        HashMap::try_from(open(map_names::ENDPOINTS)).unwrap();
    let slot_a = table.get(&EndpointKey::new(mac_a, 0), 0).unwrap().slot;
    for vlan in [0, VLAN_ANY] {
        let key = EndpointKey::new(mac_b, vlan);
        let mut v = table.get(&key, 0).unwrap();
        assert_ne!(v.slot, slot_a);
        v.slot = slot_a;
        table.insert(key, v, 0).unwrap();
    }
    let mut devices: HashMap<_, u32, DeviceIdentity> =
        HashMap::try_from(open(map_names::ENDPOINT_DEVICES)).unwrap();
    let gone = DeviceIdentity {
        mac: [0x02, 0x42, 0x0a, 0x82, 0x00, 0x63],
        slot: 40,
        ..Default::default()
    };
    devices.insert(0x7fff_fff0, gone, 0).unwrap();
    let actions = |verb: [&str; 3]| {
        format!(
            "{} classifier entry 02:42:0a:82:00:02 (VLAN 0) on eth0, which shared slot \
             {slot_a} with another\n\
             {} classifier entry 02:42:0a:82:00:03 (VLAN 0) on eth0, which shared slot \
             {slot_a} with another\n\
             {} 2 device entries of eth0's classifier whose endpoint is gone\n\
             {} classifier entry 02:42:0a:82:00:02 of container {a} on eth0\n\
             {} classifier entry 02:42:0a:82:00:03 of container {b} on eth0\n",
            verb[0], verb[0], verb[0], verb[1], verb[2]
        )
    };
    let check = s.run(&["restore", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        actions(["would remove", "would add", "would add"])
    );
    assert_eq!(s.ok(&["restore"]), actions(["removed", "added", "added"]));
    // Each endpoint on a slot of its own, its device registered under it,
    // and no other device entry.
    let slot = |mac| table.get(&EndpointKey::new(mac, 0), 0).unwrap().slot;
    let (slot_a, slot_b) = (slot(mac_a), slot(mac_b));
    assert_ne!(slot_a, slot_b);
    for mac in [mac_a, mac_b] {
        assert_eq!(
            table.get(&EndpointKey::new(mac, VLAN_ANY), 0).unwrap().slot,
            slot(mac)
        );
    }
    let mut held: Vec<([u8; 6], u32)> = devices
        .iter()
        .map(|r| r.unwrap().1)
        .map(|id| (id.mac, id.slot))
        .collect();
    held.sort();
    assert_eq!(held, [(mac_a, slot_a), (mac_b, slot_b)]);
    assert_converged(&s);
    s.ok(&["container", "rm", "--force", &a, &b]);
    s.ok(&["network", "rm", "nf"]);
}

/// A writer killed after registering an endpoint's device but before its
/// check was attached and its entry marked (the mark comes last) leaves the
/// device unchecked: `restore` attaches the check and marks the entry.
#[test]
fn a_device_left_unchecked_by_a_killed_writer_gets_its_check_back() {
    require_root();
    use aya::maps::{HashMap, Map, MapData};
    use macvlan_common::{endpoint_flags, map_names, Endpoint, EndpointKey, VLAN_ANY};
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let c = one_container(&lab, &s);
    let mac = [0x02, 0x42, 0x0a, 0x82, 0x00, 0x02];
    let dir = crate::datapath_cp::pin_dir(&lab);
    let mut table: HashMap<_, EndpointKey, Endpoint> = HashMap::try_from(Map::HashMap(
        MapData::from_pin(dir.join(map_names::ENDPOINTS)).unwrap(),
    ))
    .unwrap();
    let flags = |t: &HashMap<_, EndpointKey, Endpoint>| {
        [0, VLAN_ANY].map(|v| t.get(&EndpointKey::new(mac, v), 0).unwrap().flags)
    };
    assert_eq!(
        flags(&table).map(|f| f & endpoint_flags::DEVICE_CHECKED != 0),
        [true; 2]
    );
    for vlan in [0, VLAN_ANY] {
        let key = EndpointKey::new(mac, vlan);
        let mut v = table.get(&key, 0).unwrap();
        v.flags &= !endpoint_flags::DEVICE_CHECKED;
        table.insert(key, v, 0).unwrap();
    }
    let ns = NetNs::named(&c).unwrap();
    let detached = ns
        .run(|| {
            let index = mvnet::sys::net::if_index("eth0").unwrap();
            mvnet::datapath::devices::detach_all(index, "eth0").unwrap()
        })
        .unwrap();
    assert_eq!(detached, 1);
    assert!(crate::enforce::endpoint_programs(&ns, "eth0").is_empty());
    let line = |verb| {
        format!("{verb} the source checks of 02:42:0a:82:00:02 on eth0 of container {c} (eth0)\n")
    };
    let check = s.run(&["restore", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&check.stdout), line("would attach"));
    assert_eq!(s.ok(&["restore"]), line("attached"));
    assert_eq!(crate::enforce::endpoint_programs(&ns, "eth0").len(), 1);
    assert_eq!(
        flags(&table).map(|f| f & endpoint_flags::DEVICE_CHECKED != 0),
        [true; 2]
    );
    assert_converged(&s);
    s.ok(&["container", "rm", "--force", &c]);
    s.ok(&["network", "rm", "nf"]);
}

/// A writer killed between saving a network's policy and writing it (or
/// before clearing a removed network's VLAN) leaves the classifier
/// enforcing what the state observes or the reverse: `restore` says so and
/// sets it back. The operator's override (CONFIG bit 0, set with bpftool)
/// survives every policy write.
#[test]
fn a_policy_a_killed_writer_left_is_set_back_and_the_override_is_kept() {
    require_root();
    use aya::maps::{Array, Map, MapData};
    use macvlan_common::{config_flags, map_names, vlan_policy, Config};
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("nf", "10.130.0.0/24", PARENT, &["--policy", "enforce"]);
    let dir = crate::datapath_cp::pin_dir(&lab);
    let mut policy: Array<_, u32> = Array::try_from(Map::Array(
        MapData::from_pin(dir.join(map_names::VLAN_POLICY)).unwrap(),
    ))
    .unwrap();
    let mut config: Array<_, Config> = Array::try_from(Map::Array(
        MapData::from_pin(dir.join(map_names::CONFIG)).unwrap(),
    ))
    .unwrap();
    let flags = |c: &Array<_, Config>| c.get(&0, 0).unwrap().flags;
    assert_eq!(policy.get(&0, 0).unwrap(), vlan_policy::ENFORCE);
    assert_eq!(flags(&config), config_flags::DROP_MALFORMED);
    policy.set(0, 0, 0).unwrap();
    policy
        .set(7, vlan_policy::ENFORCE | vlan_policy::DROP_BROADCAST, 0)
        .unwrap();
    config.set(0, Config { flags: 0, _pad: 0 }, 0).unwrap();
    let lines = |verb: &str| {
        format!(
            "{verb} the policy of VLAN 0 in eth0's classifier to enforce (it was observe)\n\
             {verb} the policy of VLAN 7 in eth0's classifier to observe (it was enforce, \
             dropping broadcast)\n\
             {verb} eth0's classifier to drop malformed frames and foreign source MACs (it \
             passed them)\n"
        )
    };
    let check = s.run(&["restore", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&check.stdout), lines("would set"));
    assert_eq!(s.ok(&["restore"]), lines("set"));
    assert_eq!(policy.get(&0, 0).unwrap(), vlan_policy::ENFORCE);
    assert_eq!(policy.get(&7, 0).unwrap(), 0);
    assert_eq!(flags(&config), config_flags::DROP_MALFORMED);
    assert_converged(&s);

    let all = config_flags::ENFORCE | config_flags::DROP_MALFORMED;
    config
        .set(
            0,
            Config {
                flags: all,
                _pad: 0,
            },
            0,
        )
        .unwrap();
    s.network("ng", "10.131.0.0/24", PARENT, &[]);
    s.ok(&["network", "update", "--policy", "observe", "nf"]);
    assert_eq!(flags(&config), config_flags::ENFORCE);
    s.ok(&["network", "update", "--policy", "enforce", "nf"]);
    assert_eq!(flags(&config), all);
    assert_converged(&s);
    assert_eq!(flags(&config), all);
    s.ok(&["network", "rm", "ng", "nf"]);
}

/// An endpoint the classifier has no entry for (a writer killed between
/// saving the state and adding it) counts nothing: `verify` fails, naming
/// the fix, until `restore` adds it back.
#[test]
fn verify_fails_on_an_endpoint_without_a_classifier_entry() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let c = one_container(&lab, &s);
    let mac = [0x02, 0x42, 0x0a, 0x82, 0x00, 0x02];
    let dir = crate::datapath_cp::pin_dir(&lab);
    let mut maps = mvnet::datapath::pinned::PinnedMaps::open(&dir).unwrap();
    let slot = maps.endpoints_ro().unwrap().get(mac, 0).unwrap().slot;
    maps.remove_devices(slot).unwrap();
    maps.endpoints().unwrap().remove(mac, 0).unwrap();
    let v = s.run(&["verify"]);
    assert_eq!(v.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&v.stdout)
            .contains("the classifier on eth0 has no entry for this endpoint; run `mvnet restore`"),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    assert_eq!(
        stderr(&v),
        "mvnet: verify: 1 endpoint(s) the kernel does not have as the state does; run `mvnet \
         restore`\n"
    );
    let out = s.ok(&["restore"]);
    assert!(
        out.contains(&format!(
            "added classifier entry 02:42:0a:82:00:02 of container {c} on eth0"
        )),
        "{out}"
    );
    assert_converged(&s);
    s.ok(&["container", "rm", "--force", &c]);
    s.ok(&["network", "rm", "nf"]);
}

#[test]
fn a_container_namespace_deleted_or_left_as_a_stale_file_is_purged() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let c = one_container(&lab, &s);
    netns::delete(&c).unwrap();
    let check = s.run(&["restore", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        format!(
            "would purge container {c} (its namespace is gone)\n\
             would release address 10.130.0.2 on network nf (no endpoint has it)\n\
             would remove stale classifier entry 02:42:0a:82:00:02 (VLAN 0) on eth0\n"
        )
    );
    assert_eq!(
        s.ok(&["restore"]),
        format!(
            "purged container {c} (its namespace is gone)\n\
             released address 10.130.0.2 on network nf (no endpoint has it)\n\
             removed stale classifier entry 02:42:0a:82:00:02 (VLAN 0) on eth0\n"
        )
    );
    assert_converged(&s);
    // An interrupted `ip netns delete`: unmounted, the file left.
    let c2 = format!("{}-g", lab.id());
    s.container("nf", &c2, &[]);
    let path = Path::new(netns::NETNS_RUN_DIR).join(&c2);
    let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::umount2(cpath.as_ptr(), libc::MNT_DETACH) },
        0
    );
    assert!(path.exists() && !netns::is_namespace(&path));
    let out = s.ok(&["restore"]);
    assert!(
        out.starts_with(&format!(
            "removed the stale namespace file {}\npurged container {c2}",
            path.display()
        )),
        "{out}"
    );
    assert!(!path.exists());
    assert_converged(&s);
    s.ok(&["network", "rm", "nf"]);
}

#[test]
fn a_renamed_container_link_is_explained_and_renamed_back() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let c = one_container(&lab, &s);
    let cns = NetNs::named(&c).unwrap();
    ip(&cns, &["link", "set", "eth0", "down"]);
    ip(&cns, &["link", "set", "eth0", "name", "foo"]);
    ip(&cns, &["link", "set", "foo", "up"]);
    let v = s.run(&["verify"]);
    assert_eq!(v.status.code(), Some(1));
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(
        out.contains("eth0 is gone from the container; run `mvnet restore`"),
        "{out}"
    );
    assert_eq!(
        stderr(&v),
        "mvnet: verify: 1 endpoint(s) the kernel does not have as the state does; run `mvnet \
         restore`\n"
    );
    // Setting the link down took its default route with it.
    assert_eq!(
        s.ok(&["restore"]),
        format!(
            "renamed link foo of container {c} back to eth0\n\
             set the default routes of container {c}: IPv4 via 10.130.0.1 dev eth0\n"
        )
    );
    assert_converged(&s);
    let addr = s.ok(&["exec", &c, "ip", "addr", "show", "eth0"]);
    assert!(addr.contains("inet 10.130.0.2/24"), "{addr}");
    assert_eq!(
        s.ok(&["exec", &c, "ip", "route", "show", "default"]),
        "default via 10.130.0.1 dev eth0 \n"
    );
    s.ok(&["container", "rm", "--force", &c]);
    s.ok(&["network", "rm", "nf"]);
}

/// A tmpfs mounted on the session's state directory, unmounted on drop.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, size: &str) -> Tmpfs<'a> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", stderr(&out));
        Tmpfs(dir)
    }

    fn remount(&self, opt: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount: {}", stderr(&out));
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn a_full_state_filesystem_is_a_clear_error_that_changes_nothing() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let fs = Tmpfs::mount(&s.state_dir, "64k");
    s.network("nf", "10.130.0.0/24", PARENT, &[]);
    // Fill it up.
    let filler = s.state_dir.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=64"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    // A save appends a line to the state journal, which fits in the page
    // the file already has until it does not: run containers until one
    // fails (a line is about 1.5 KiB, a page 4 KiB).
    let mut made = Vec::new();
    let (c, err, before) = loop {
        assert!(made.len() < 8, "8 runs on a full filesystem all succeeded");
        let c = format!("{}-full{}", lab.id(), made.len());
        let before = s.state();
        let out = s.run(&["run", "-d", "--network", "nf", "--name", &c]);
        if out.status.success() {
            made.push(c);
            continue;
        }
        break (c, stderr(&out), before);
    };
    assert!(
        err.contains("No space left on device (os error 28); free space on that filesystem and retry; nothing was changed"),
        "{err}"
    );
    assert_eq!(s.state(), before);
    assert!(!netns::list().contains(&c));
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(s.ok(&["restore"]), CONVERGED);
    s.container("nf", &c, &[]);
    assert_converged(&s);
    s.ok(&["container", "rm", "--force", &c]);
    for c in &made {
        s.ok(&["container", "rm", "--force", c]);
    }
    s.ok(&["network", "rm", "nf"]);
    drop(fs);
}

#[test]
fn a_read_only_state_dir_is_a_clear_error_and_readers_still_read() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let fs = Tmpfs::mount(&s.state_dir, "1m");
    s.network("nf", "10.130.0.0/24", PARENT, &[]);
    fs.remount("ro");
    let c = format!("{}-ro", lab.id());
    let err = stderr(&s.run(&["run", "-d", "--network", "nf", "--name", &c]));
    assert!(
        err.contains("Read-only file system (os error 30); the filesystem is read-only: remount it read-write or give another --state-dir; nothing was changed"),
        "{err}"
    );
    assert!(!netns::list().contains(&c));
    assert!(s.ok(&["network", "ls"]).contains("nf"));
    assert_eq!(s.ok(&["restore", "--check"]), CONVERGED);
    fs.remount("rw");
    assert_eq!(s.ok(&["restore"]), CONVERGED);
    s.container("nf", &c, &[]);
    assert_converged(&s);
    s.ok(&["container", "rm", "--force", &c]);
    s.ok(&["network", "rm", "nf"]);
    drop(fs);
}

#[test]
fn a_command_from_another_namespace_says_where_the_state_lives() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("nf", "10.130.0.0/24", PARENT, &[]);
    let host = format!("{}-host", lab.id());
    let ino = netns::inode(&Path::new(netns::NETNS_RUN_DIR).join(&host)).unwrap();
    // The same state, from the lab's upstream namespace.
    let bin = crate::common::cli::mvnet_bin();
    let dir = s.state_dir.clone();
    for args in [
        vec!["stats"],
        vec!["verify"],
        vec!["restore"],
        vec!["network", "rm", "nf"],
    ] {
        let (bin, dir) = (bin.clone(), dir.clone());
        let a = args.clone();
        let out = lab
            .upstream()
            .run(move || {
                Command::new(bin)
                    .arg("--state-dir")
                    .arg(dir)
                    .args(&a)
                    .output()
                    .unwrap()
            })
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "belongs to network namespace {ino} ({host}), where network nf and its parent eth0 live, but this command runs in namespace "
            )) && err.contains(&format!("run `nsenter --net=/run/netns/{host} mvnet ...`")),
            "{args:?}: {err}"
        );
    }
    assert!(s.ok(&["network", "ls"]).contains("nf"));
    s.ok(&["network", "rm", "nf"]);
}

#[test]
fn restore_removes_orphan_links_with_our_mark_and_nothing_else() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let c = one_container(&lab, &s);
    let cns = NetNs::named(&c).unwrap();
    // An endpoint link of ours whose record is gone (marked, unknown id),
    // and a link the user made (no mark): only the first goes.
    ip(
        &cns,
        &[
            "link", "add", "link", "eth0", "name", "eth7", "type", "macvlan",
        ],
    );
    ip(
        &cns,
        &["link", "set", "eth7", "alias", "mvnet:0123456789abcdef"],
    );
    ip(
        &cns,
        &[
            "link", "add", "link", "eth0", "name", "mine0", "type", "macvlan",
        ],
    );
    let check = s.run(&["restore", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        format!("would delete leftover link eth7 in container {c}\n")
    );
    assert_eq!(
        s.ok(&["restore"]),
        format!("deleted leftover link eth7 in container {c}\n")
    );
    let names: Vec<String> = netlink::run(Some(&cns), |nl| async move { nl.links().await })
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&"mine0".to_owned()), "{names:?}");
    assert!(!names.contains(&"eth7".to_owned()), "{names:?}");
    assert_eq!(s.ok(&["restore", "--check"]), CONVERGED);
    s.ok(&["container", "rm", "--force", &c]);
    s.ok(&["network", "rm", "nf"]);
}

#[test]
fn a_namespace_made_again_under_a_container_name_is_not_touched() {
    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    let c = one_container(&lab, &s);
    // Deleted behind mvnet's back, and another namespace made under the
    // same name (by someone else): it is not the container's.
    netns::delete(&c).unwrap();
    let other = netns::create(&c).unwrap();
    let other_ino = netns::inode(other.path()).unwrap();
    assert_eq!(
        s.ok(&["restore"]),
        format!(
            "purged container {c} (its namespace was replaced by another one, left alone)\n\
             released address 10.130.0.2 on network nf (no endpoint has it)\n\
             removed stale classifier entry 02:42:0a:82:00:02 (VLAN 0) on eth0\n"
        )
    );
    assert_eq!(netns::inode(other.path()), Some(other_ino));
    assert_eq!(s.ok(&["restore", "--check"]), CONVERGED);
    netns::delete(&c).unwrap();
    s.ok(&["network", "rm", "nf"]);
}

/// `restore` whose `bpf` calls or netlink requests fail (each thread's
/// k-th, for k over the calls of a clean run) while it has an entry to
/// put back forgets no container that lives and resets no count: the next
/// `restore` converges, both containers keep their endpoints, and the
/// frames counted for the one it did not touch are still counted. A
/// restore that took a failed lookup for a gone link or entry would
/// forget a live endpoint, or make its entry again from zero.
#[test]
fn restore_failing_at_any_call_forgets_nothing_that_lives() {
    use mvnet::datapath::pinned::PinnedMaps;
    use mvnet_lab::lab::frames::FrameSpec;

    use crate::datapath_cp::{json, mac_of, pin_dir, send, wire_hook};

    require_root();
    let lab = Lab::new().unwrap();
    let s = Session::new(&lab);
    s.network("nr", "10.131.0.0/24", PARENT, &[]);
    let (a, b) = (format!("{}-ra", lab.id()), format!("{}-rb", lab.id()));
    s.container("nr", &a, &[]);
    s.container("nr", &b, &[]);
    let (ma, mb) = (mac_of(&s, &a, "nr"), mac_of(&s, &b, "nr"));
    let dir = pin_dir(&lab);
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF).unwrap();
    send(
        &PinnedMaps::open(&dir).unwrap(),
        lab.upstream(),
        UPSTREAM_IF,
        wire_hook(&dir),
        FrameSpec::udp4(ma, src).build().unwrap(),
        7,
    );
    // The work for restore: b's entry removed behind mvnet's back.
    let lose_b = || {
        let mut maps = PinnedMaps::open(&dir).unwrap();
        let mut t = maps.endpoints().unwrap();
        if t.get(mb, 0).is_some() {
            t.remove(mb, 0).unwrap();
        }
    };
    let rx_of = |name: &str| -> Option<u64> {
        let stats = json(&s.ok(&["stats", "--json"]));
        stats["networks"][0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["container"] == name)
            .map(|e| e["rx"]["wire"]["frames"].as_u64().unwrap())
    };
    let trace = std::env::temp_dir().join(format!("{}-restore.trace", lab.id()));
    let mut tried = 0;
    for class in ["bpf", "sendto"] {
        lose_b();
        let calls = s.calls_of(&["restore"], class, &trace);
        assert!(calls > 5, "{calls} {class} calls in restore");
        for k in crate::common::spread(calls, 30) {
            tried += 1;
            lose_b();
            let code = s.failing_at(&["restore"], class, k, &trace);
            let when = format!("restore with {class} call {k} of {calls} failed (exit {code:?})");
            assert!(matches!(code, Some(0 | 1)), "{when}");
            let again = s.run(&["restore"]);
            assert!(
                again.status.success(),
                "{when}, then restore: {}",
                stderr(&again)
            );
            assert_eq!(s.ok(&["restore", "--check"]), CONVERGED, "{when}");
            assert_eq!(rx_of(&a), Some(7), "{when}: a's count is kept");
            assert_eq!(rx_of(&b), Some(0), "{when}: b is still there");
        }
    }
    let _ = std::fs::remove_file(&trace);
    eprintln!("{tried} points");
    assert_converged(&s);
}
