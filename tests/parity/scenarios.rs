//! The scenarios: moby's `integration/network/macvlan` tests and Docker's
//! macvlan documentation. 802.1Q and no-parent networks need a kernel with
//! 8021q and dummy links: those scenarios run in the VM (`cargo xtask
//! test`), where both engines can make them.
pub enum Step {
    /// A Docker-shaped command line (`%c1` is container c1); both engines'
    /// success or refusal is compared, and a refusal must change nothing.
    Cmd(&'static [&'static str]),
    /// `run -d --name C ARGS` (Docker adds the busybox image and a shell).
    Run(&'static str, &'static [&'static str]),
    /// `run --name C ARGS` with the command ARGV (Docker runs it in the
    /// busybox image, mvnet on the host): compare success or refusal and
    /// the exit code.
    RunCommand(
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
    ),
    /// Compare the container's interfaces, routes and inspect fields.
    Container(&'static str),
    /// Compare the network's inspect fields.
    Network(&'static str),
    /// `exec C ARGV`: compare its standard output and exit code (Docker
    /// runs busybox's applet, mvnet the host's command of that name).
    Exec(&'static str, &'static [&'static str]),
}

pub struct Scenario {
    pub name: &'static str,
    /// Where the case comes from.
    pub source: &'static str,
    pub steps: Vec<Step>,
    /// Needs 802.1Q and dummy links: runs only in the VM.
    pub needs_vm: bool,
}

use Step::*;

fn s(name: &'static str, source: &'static str, steps: Vec<Step>) -> Scenario {
    Scenario {
        name,
        source,
        steps,
        needs_vm: false,
    }
}

/// A scenario with 802.1Q or no-parent networks (the VM's kernel).
fn vm(name: &'static str, source: &'static str, steps: Vec<Step>) -> Scenario {
    Scenario {
        needs_vm: true,
        ..s(name, source, steps)
    }
}

/// `network create -d macvlan ARGS` as a static command line.
macro_rules! create {
    ($($a:expr),* $(,)?) => {
        Cmd(&["network", "create", "-d", "macvlan", $($a),*])
    };
}

pub fn all() -> Vec<Scenario> {
    vec![
        s(
            "bridge",
            "Docker docs, macvlan bridge mode (the seed tutorial)",
            vec![
                create!(
                    "--subnet=172.16.86.0/24",
                    "--gateway=172.16.86.1",
                    "-o",
                    "parent=eth0",
                    "my-macvlan-net"
                ),
                Run("c1", &["--network", "my-macvlan-net"]),
                Network("my-macvlan-net"),
                Container("c1"),
            ],
        ),
        s(
            "ip-range-aux",
            "Docker docs, --ip-range and --aux-address",
            vec![
                create!(
                    "--subnet=192.168.32.0/24",
                    "--ip-range=192.168.32.128/25",
                    "--gateway=192.168.32.254",
                    "--aux-address",
                    "my-router=192.168.32.129",
                    "-o",
                    "parent=eth0",
                    "macnet32"
                ),
                Run("c1", &["--network", "macnet32"]),
                Run("c2", &["--network", "macnet32"]),
                Network("macnet32"),
                Container("c1"),
                Container("c2"),
            ],
        ),
        s(
            "static-ip-mac",
            "Docker docs, run --ip and --mac-address",
            vec![
                create!(
                    "--subnet=172.16.87.0/24",
                    "--gateway=172.16.87.1",
                    "-o",
                    "parent=eth0",
                    "staticnet"
                ),
                Run(
                    "c1",
                    &[
                        "--network",
                        "staticnet",
                        "--ip",
                        "172.16.87.10",
                        "--mac-address",
                        "02:42:ac:10:57:99",
                    ],
                ),
                Run("c2", &["--network", "staticnet", "--ip", "172.16.87.10"]),
                Run("c3", &["--network", "staticnet", "--ip", "172.16.87.1"]),
                Run("c4", &["--network", "staticnet", "--ip", "172.16.88.4"]),
                Container("c1"),
            ],
        ),
        s(
            "dual-stack-no-v4-gateway",
            "moby testMacvlanAddressing",
            vec![
                create!(
                    "--ipv6",
                    "-o",
                    "macvlan_mode=bridge",
                    "--subnet",
                    "172.28.130.0/24",
                    "--subnet",
                    "2001:db8:abca::/64",
                    "--gateway",
                    "2001:db8:abca::254",
                    "-o",
                    "parent=eth0",
                    "dualstackbridge"
                ),
                Run("c1", &["--network", "dualstackbridge"]),
                Network("dualstackbridge"),
                Container("c1"),
            ],
        ),
        s(
            "dual-stack",
            "Docker docs, dual-stack macvlan",
            vec![
                create!(
                    "--ipv6",
                    "--subnet",
                    "192.168.40.0/24",
                    "--gateway",
                    "192.168.40.1",
                    "--subnet",
                    "2001:db8:abc8::/64",
                    "--gateway",
                    "2001:db8:abc8::10",
                    "-o",
                    "parent=eth0",
                    "v6net"
                ),
                Run("c1", &["--network", "v6net"]),
                Run(
                    "c2",
                    &[
                        "--network",
                        "v6net",
                        "--ip",
                        "192.168.40.20",
                        "--ip6",
                        "2001:db8:abc8::20",
                    ],
                ),
                Network("v6net"),
                Container("c1"),
                Container("c2"),
            ],
        ),
        s(
            "multi-subnet",
            "moby testMacvlanMultiSubnetWithParent",
            vec![
                create!(
                    "--ipv6",
                    "--subnet",
                    "172.28.100.0/24",
                    "--subnet",
                    "172.28.102.0/24",
                    "--gateway",
                    "172.28.102.254",
                    "--subnet",
                    "2001:db8:abc2::/64",
                    "--subnet",
                    "2001:db8:abc4::/64",
                    "--gateway",
                    "2001:db8:abc4::254",
                    "-o",
                    "parent=eth0",
                    "dualstackbridge"
                ),
                Run(
                    "c1",
                    &[
                        "--network",
                        "dualstackbridge",
                        "--ip",
                        "172.28.100.20",
                        "--ip6",
                        "2001:db8:abc2::20",
                    ],
                ),
                Run(
                    "c2",
                    &[
                        "--network",
                        "dualstackbridge",
                        "--ip",
                        "172.28.100.21",
                        "--ip6",
                        "2001:db8:abc2::21",
                    ],
                ),
                Run(
                    "c3",
                    &[
                        "--network",
                        "dualstackbridge",
                        "--ip",
                        "172.28.102.20",
                        "--ip6",
                        "2001:db8:abc4::20",
                    ],
                ),
                Run(
                    "c4",
                    &[
                        "--network",
                        "dualstackbridge",
                        "--ip",
                        "172.28.102.21",
                        "--ip6",
                        "2001:db8:abc4::21",
                    ],
                ),
                Network("dualstackbridge"),
                Container("c1"),
                Container("c3"),
            ],
        ),
        s(
            "multi-subnet-auto",
            "issue 14 item 1 (no --ip on two IPv4 subnets)",
            vec![
                create!(
                    "--subnet",
                    "172.28.100.0/24",
                    "--subnet",
                    "172.28.102.0/24",
                    "--gateway",
                    "172.28.102.254",
                    "-o",
                    "parent=eth0",
                    "twosubnets"
                ),
                Run("c1", &["--network", "twosubnets"]),
                Network("twosubnets"),
                Container("c1"),
            ],
        ),
        s(
            "multi-subnet-exhaust",
            "issue 14 item 1 (two /30 subnets: first free, release on removal)",
            vec![
                create!(
                    "--subnet",
                    "10.61.0.0/30",
                    "--subnet",
                    "10.61.0.4/30",
                    "-o",
                    "parent=eth0",
                    "small"
                ),
                Run("c1", &["--network", "small"]),
                Container("c1"),
                Cmd(&["container", "rm", "-f", "%c1"]),
                Run("c2", &["--network", "small"]),
                Container("c2"),
                Run("c3", &["--network", "small"]),
                Container("c3"),
                Run("c4", &["--network", "small"]),
            ],
        ),
        s(
            "internal",
            "moby testMacvlanInternalMode (with a parent)",
            vec![
                create!(
                    "--internal",
                    "--subnet",
                    "10.62.0.0/24",
                    "-o",
                    "parent=eth0",
                    "dm-internal"
                ),
                Run("c1", &["--network", "dm-internal"]),
                Run("c2", &["--network", "dm-internal"]),
                Network("dm-internal"),
                Container("c1"),
                Container("c2"),
            ],
        ),
        s(
            "point-to-point-31",
            "moby TestPointToPoint (/31, internal)",
            vec![
                create!(
                    "--internal",
                    "--subnet",
                    "10.63.0.0/31",
                    "-o",
                    "parent=eth0",
                    "p2p"
                ),
                Run("c1", &["--network", "p2p"]),
                Run("c2", &["--network", "p2p"]),
                Network("p2p"),
                Container("c1"),
                Container("c2"),
            ],
        ),
        s(
            "point-to-point-32",
            "moby TestPointToPoint (/32, internal)",
            vec![
                create!(
                    "--internal",
                    "--subnet",
                    "10.64.0.7/32",
                    "-o",
                    "parent=eth0",
                    "host32"
                ),
                Run("c1", &["--network", "host32"]),
                Network("host32"),
                Container("c1"),
            ],
        ),
        s(
            "mode-vepa",
            "Docker docs, macvlan_mode",
            vec![
                create!(
                    "--subnet",
                    "10.65.1.0/24",
                    "--gateway",
                    "10.65.1.1",
                    "-o",
                    "parent=eth0",
                    "-o",
                    "macvlan_mode=vepa",
                    "vepanet"
                ),
                Run("c1", &["--network", "vepanet"]),
                Network("vepanet"),
                Container("c1"),
            ],
        ),
        s(
            "mode-private",
            "Docker docs, macvlan_mode",
            vec![
                create!(
                    "--subnet",
                    "10.65.2.0/24",
                    "--gateway",
                    "10.65.2.1",
                    "-o",
                    "parent=eth0",
                    "-o",
                    "macvlan_mode=private",
                    "privnet"
                ),
                Run("c1", &["--network", "privnet"]),
                Network("privnet"),
                Container("c1"),
            ],
        ),
        s(
            "mode-passthru",
            "Docker docs, macvlan_mode; issue 14 items 5 and 8",
            vec![
                create!(
                    "--subnet",
                    "10.65.3.0/24",
                    "--gateway",
                    "10.65.3.1",
                    "-o",
                    "parent=eth0",
                    "-o",
                    "macvlan_mode=passthru",
                    "ptnet"
                ),
                Run("c1", &["--network", "ptnet"]),
                Network("ptnet"),
                Container("c1"),
                Exec("c1", &["cat", "/sys/class/net/eth0/address"]),
                // One endpoint per passthru network: by run and by connect.
                Run("c2", &["--network", "ptnet"]),
                create!("--subnet", "10.65.5.0/24", "-o", "parent=eth1", "other"),
                Run("c3", &["--network", "other"]),
                Cmd(&["network", "connect", "ptnet", "%c3"]),
                Container("c1"),
            ],
        ),
        s(
            "passthru-rerun",
            "issue 14 item 6 (a passthru endpoint right after the last one is removed)",
            vec![
                create!(
                    "--subnet",
                    "10.65.4.0/24",
                    "--gateway",
                    "10.65.4.1",
                    "-o",
                    "parent=eth0",
                    "-o",
                    "macvlan_mode=passthru",
                    "ptagain"
                ),
                Run("c1", &["--network", "ptagain"]),
                Cmd(&["container", "rm", "-f", "%c1"]),
                Run("c2", &["--network", "ptagain"]),
                Container("c2"),
            ],
        ),
        s(
            "connect-disconnect",
            "Docker docs, network connect/disconnect; issue 14 item 4",
            vec![
                create!(
                    "--subnet",
                    "10.70.1.0/24",
                    "--gateway",
                    "10.70.1.1",
                    "-o",
                    "parent=eth0",
                    "front"
                ),
                create!(
                    "--subnet",
                    "10.70.2.0/24",
                    "--gateway",
                    "10.70.2.1",
                    "-o",
                    "parent=eth1",
                    "back"
                ),
                Run("c1", &["--network", "front"]),
                Cmd(&["network", "connect", "back", "%c1"]),
                Container("c1"),
                Cmd(&["network", "disconnect", "front", "%c1"]),
                Container("c1"),
                Cmd(&["network", "connect", "--ip", "10.70.1.50", "front", "%c1"]),
                Container("c1"),
            ],
        ),
        s(
            "exec-sysfs",
            "issue 14 item 9 (exec sees the container's /sys)",
            vec![
                create!("--subnet", "10.74.0.0/24", "-o", "parent=eth0", "execnet"),
                Run("c1", &["--network", "execnet"]),
                Exec("c1", &["cat", "/sys/class/net/eth0/address"]),
            ],
        ),
        s(
            "exec-missing",
            "issue 14 item 10 (exit code of a missing command)",
            vec![
                create!("--subnet", "10.75.0.0/24", "-o", "parent=eth0", "execnet"),
                Run("c1", &["--network", "execnet"]),
                Exec("c1", &["mvnet-parity-no-such-command"]),
            ],
        ),
        s(
            "exit-codes",
            "issue 14 item 10; Docker docs, run's exit status (125, 126, 127)",
            vec![
                create!("--subnet", "10.76.0.0/24", "-o", "parent=eth0", "exitnet"),
                RunCommand("c1", &["--network", "exitnet"], &["/nonexistent"]),
                RunCommand(
                    "c2",
                    &["--network", "exitnet"],
                    &["mvnet-parity-no-such-command"],
                ),
                RunCommand("c3", &["-d", "--network", "exitnet"], &["/nonexistent"]),
                // A file without execute permission (procfs is mounted in
                // Docker's container as on the host).
                RunCommand("c4", &["--network", "exitnet"], &["/proc/version"]),
                RunCommand("c5", &["--network", "exitnet"], &["/etc"]),
                RunCommand("c6", &["--network", "missing"], &["sh", "-c", "exit 0"]),
                RunCommand("c7", &["--network", "exitnet"], &["sh", "-c", "exit 3"]),
                Run("c8", &["--network", "exitnet"]),
                Exec("c8", &["/proc/version"]),
                Exec("c8", &["sh", "-c", "exit 4"]),
            ],
        ),
        vm(
            "vlan-8021q",
            "moby testMacvlan8021q; Docker docs, 802.1Q trunk bridge mode",
            vec![
                create!(
                    "--subnet=192.168.50.0/24",
                    "--gateway=192.168.50.1",
                    "-o",
                    "parent=eth0.50",
                    "macvlan50"
                ),
                Run("c1", &["--network", "macvlan50"]),
                Network("macvlan50"),
                Container("c1"),
                // The 802.1Q link the network made goes with the network.
                Cmd(&["container", "rm", "-f", "%c1"]),
                Cmd(&["network", "rm", "macvlan50"]),
            ],
        ),
        vm(
            "vlan-two-networks",
            "Docker docs, two 802.1Q sub-interfaces of one parent",
            vec![
                create!(
                    "--subnet=192.168.60.0/24",
                    "--gateway=192.168.60.1",
                    "-o",
                    "parent=eth0.60",
                    "macvlan60"
                ),
                create!(
                    "--subnet=192.168.70.0/24",
                    "--gateway=192.168.70.1",
                    "-o",
                    "parent=eth0.70",
                    "macvlan70"
                ),
                Run("c1", &["--network", "macvlan60"]),
                Run("c2", &["--network", "macvlan70"]),
                Cmd(&["network", "connect", "macvlan60", "%c2"]),
                Container("c1"),
                Container("c2"),
            ],
        ),
        vm(
            "nil-parent",
            "moby testMacvlanNilParent",
            vec![
                create!("--subnet", "10.91.0.0/24", "nilparent"),
                Run("c1", &["--network", "nilparent"]),
                Run("c2", &["--network", "nilparent"]),
                Network("nilparent"),
                Container("c1"),
                Container("c2"),
            ],
        ),
        vm(
            "nil-parent-internal",
            "moby testMacvlanInternalMode",
            vec![
                create!("--internal", "--subnet", "10.92.0.0/24", "dm-internal"),
                Run("c1", &["--network", "dm-internal"]),
                Network("dm-internal"),
                Container("c1"),
            ],
        ),
        s(
            "overlap-parent",
            "moby testMacvlanOverlapParent / OverlapKeepExisting",
            vec![
                create!("--subnet", "10.71.1.0/24", "-o", "parent=eth0", "first"),
                create!("--subnet", "10.71.2.0/24", "-o", "parent=eth0", "second"),
            ],
        ),
        s(
            "overlap-parent-passthru",
            "moby testMacvlanOverlapParentPassthruFirst / Second",
            vec![
                create!(
                    "--subnet",
                    "10.72.1.0/24",
                    "-o",
                    "parent=eth0",
                    "-o",
                    "macvlan_mode=passthru",
                    "pt-first"
                ),
                create!("--subnet", "10.72.2.0/24", "-o", "parent=eth0", "after-pt"),
                create!(
                    "--subnet",
                    "10.72.3.0/24",
                    "-o",
                    "parent=eth1",
                    "bridge-first"
                ),
                create!(
                    "--subnet",
                    "10.72.4.0/24",
                    "-o",
                    "parent=eth1",
                    "-o",
                    "macvlan_mode=passthru",
                    "pt-second"
                ),
            ],
        ),
        s(
            "overlap-subnets",
            "two parents, the same subnet",
            vec![
                create!("--subnet", "10.73.0.0/24", "-o", "parent=eth0", "left"),
                create!("--subnet", "10.73.0.0/24", "-o", "parent=eth1", "right"),
            ],
        ),
        s(
            "errors-create",
            "refusals of network create",
            vec![
                create!(
                    "--subnet",
                    "10.80.0.0/24",
                    "--gateway",
                    "10.81.0.1",
                    "-o",
                    "parent=eth0",
                    "e1"
                ),
                create!("--subnet", "10.80.0.0/24", "-o", "parent=eth9", "e2"),
                create!(
                    "--subnet",
                    "10.80.0.0/24",
                    "-o",
                    "parent=eth0",
                    "-o",
                    "macvlan_mode=bogus",
                    "e3"
                ),
                create!("--subnet", "10.80.0.0/24", "-o", "parent=lo", "e4"),
                create!(
                    "--subnet",
                    "10.80.0.0/24",
                    "--ip-range",
                    "10.82.0.0/25",
                    "-o",
                    "parent=eth0",
                    "e5"
                ),
                create!(
                    "--subnet",
                    "10.80.0.0/24",
                    "--aux-address",
                    "r=10.82.0.1",
                    "-o",
                    "parent=eth0",
                    "e6"
                ),
                create!("--subnet", "10.80.0.0/33", "-o", "parent=eth0", "e7"),
                Cmd(&[
                    "network",
                    "create",
                    "-d",
                    "bogus",
                    "--subnet",
                    "10.80.0.0/24",
                    "-o",
                    "parent=eth0",
                    "e8",
                ]),
                create!("--subnet", "10.80.0.0/24", "-o", "parent=eth0", "ok"),
                create!("--subnet", "10.83.0.0/24", "-o", "parent=eth1", "ok"),
            ],
        ),
        s(
            "errors-run",
            "refusals of run, connect and network rm",
            vec![
                create!(
                    "--subnet",
                    "10.84.0.0/24",
                    "--gateway",
                    "10.84.0.1",
                    "-o",
                    "parent=eth0",
                    "net"
                ),
                Run("c1", &["--network", "missing"]),
                Run(
                    "c2",
                    &["--network", "net", "--mac-address", "zz:42:ac:10:57:99"],
                ),
                Run("c3", &["--network", "net", "--ip6", "2001:db8::5"]),
                Run("c4", &["--network", "net"]),
                Run("c4", &["--network", "net"]),
                Cmd(&["network", "rm", "net"]),
                Cmd(&["network", "connect", "net", "%c4"]),
                Cmd(&["network", "disconnect", "missing", "%c4"]),
            ],
        ),
    ]
}
