//! Docker's macvlan networking tutorial, command for command, on mvnet, in a
//! lab: the bridge example, then the 802.1Q trunked example where the kernel
//! has 802.1Q. Every command is printed with its output, as a user would see
//! it; the lab and all state are removed at the end.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use super::{pin_sysctls, Lab, UPSTREAM_IF};
use mvnet::{
    netlink,
    netns::{self, NetNs},
};

/// One tutorial step: the mvnet arguments and what the tutorial says.
struct Step {
    args: &'static [&'static str],
    comment: &'static str,
}

const BRIDGE: &[Step] = &[
    Step {
        args: &[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet=172.16.86.0/24",
            "--gateway=172.16.86.1",
            "-o",
            "parent=eth0",
            "my-macvlan-net",
        ],
        comment: "Create a macvlan network on the parent eth0",
    },
    Step {
        args: &["network", "ls"],
        comment: "The network exists",
    },
    Step {
        args: &[
            "run",
            "--rm",
            "-dit",
            "--network",
            "my-macvlan-net",
            "--name",
            "my-macvlan-alpine",
        ],
        comment: "Start a container attached to it",
    },
    Step {
        args: &["container", "inspect", "my-macvlan-alpine"],
        comment: "Its MAC (02:42 + IPv4) and IP address",
    },
    Step {
        args: &["exec", "my-macvlan-alpine", "ip", "addr", "show", "eth0"],
        comment: "Its eth0, as the container sees it",
    },
    Step {
        args: &["exec", "my-macvlan-alpine", "ip", "route"],
        comment: "Its routing table",
    },
];

/// The bridge example, after the traffic.
const BRIDGE_END: &[Step] = &[
    Step {
        args: &["stats", "my-macvlan-net"],
        comment: "What the classifier on eth0 counted (`--json` for scripts, `mvnet top` live)",
    },
    Step {
        args: &["verify", "my-macvlan-net"],
        comment: "Held against the kernel's own counters of the container's macvlan",
    },
    Step {
        args: &["container", "stop", "my-macvlan-alpine"],
        comment: "Stop it (--rm removes it)",
    },
    Step {
        args: &["network", "rm", "my-macvlan-net"],
        comment: "Remove the network",
    },
];

const TRUNKED: &[Step] = &[
    Step {
        args: &[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet=172.16.86.0/24",
            "--gateway=172.16.86.1",
            "-o",
            "parent=eth0.10",
            "my-8021q-macvlan-net",
        ],
        comment: "Create a network on eth0.10: mvnet creates the 802.1Q sub-interface",
    },
    Step {
        args: &["network", "ls"],
        comment: "The network exists",
    },
    Step {
        args: &[
            "run",
            "--rm",
            "-itd",
            "--network",
            "my-8021q-macvlan-net",
            "--name",
            "my-second-macvlan-alpine",
        ],
        comment: "Start a container on VLAN 10",
    },
    Step {
        args: &["container", "inspect", "my-second-macvlan-alpine"],
        comment: "Its MAC and IP address",
    },
    Step {
        args: &[
            "exec",
            "my-second-macvlan-alpine",
            "ip",
            "addr",
            "show",
            "eth0",
        ],
        comment: "Its eth0",
    },
    Step {
        args: &["exec", "my-second-macvlan-alpine", "ip", "route"],
        comment: "Its routing table",
    },
    Step {
        args: &["container", "stop", "my-second-macvlan-alpine"],
        comment: "Stop it",
    },
    Step {
        args: &["network", "rm", "my-8021q-macvlan-net"],
        comment: "Remove the network: mvnet deletes the eth0.10 it created",
    },
];

/// Runs `mvnet ARGS` (the binary beside this one) in the lab's host namespace.
fn mvnet(lab: &Lab, state: &Path, args: &[&str]) -> Result<()> {
    println!("\n$ mvnet {}", args.join(" "));
    let exe = crate::mvnet_bin()?;
    let state = state.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = lab.host().run(move || {
        Command::new(exe)
            .arg("--state-dir")
            .arg(state)
            .args(&args)
            .output()
    })??;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("the step failed ({})", out.status);
    }
    Ok(())
}

fn run_steps(lab: &Lab, state: &Path, steps: &[Step]) -> Result<()> {
    for step in steps {
        println!("\n# {}", step.comment);
        mvnet(lab, state, step.args)?;
    }
    Ok(())
}

/// Puts `addr/24` on `iface` in upstream, creating `iface` as VLAN `vid`
/// of the wire if given. Returns false if the kernel has no 802.1Q.
fn upstream_gateway(lab: &Lab, iface: &str, vid: Option<u16>, addr: IpAddr) -> Result<bool> {
    let iface = iface.to_owned();
    let made = netlink::run(Some(lab.upstream()), move |nl| async move {
        if let Some(vid) = vid {
            let wire = nl.require_link(UPSTREAM_IF).await?;
            if let Err(e) = nl.add_vlan(&iface, wire.index, vid).await {
                if e.errno() == Some(libc::EOPNOTSUPP) {
                    return Ok(false);
                }
                return Err(e);
            }
        }
        let link = nl.require_link(&iface).await?;
        nl.add_address(link.index, addr, 24).await?;
        nl.set_up(link.index).await?;
        Ok(true)
    })?;
    Ok(made)
}

fn remove_address(lab: &Lab, iface: &str, addr: IpAddr) -> Result<()> {
    let iface = iface.to_owned();
    netlink::run(Some(lab.upstream()), move |nl| async move {
        let link = nl.require_link(&iface).await?;
        nl.del_address(link.index, addr).await
    })?;
    Ok(())
}

/// Runs the tutorial in a fresh lab.
pub fn run() -> Result<()> {
    for name in ["my-macvlan-alpine", "my-second-macvlan-alpine"] {
        if netns::list().iter().any(|n| n == name) {
            bail!("a network namespace named {name} exists already (a container of the tutorial?); remove it with `ip netns delete {name}` first");
        }
    }
    let lab = Lab::new().context("building the lab")?;
    let state: PathBuf = std::env::temp_dir().join(format!("{}-tutorial-state", lab.id()));
    let result = (|| -> Result<()> {
        println!("Lab {}: namespace {} holds the parent eth0; namespace {} is the rest of the L2 network, with the gateway 172.16.86.1 on {UPSTREAM_IF}.",
            lab.id(), lab.host().name().unwrap_or_default(), lab.upstream().name().unwrap_or_default());
        let gw: IpAddr = "172.16.86.1".parse().expect("valid");
        upstream_gateway(&lab, UPSTREAM_IF, None, gw)?;
        println!("\n=== Bridge example ===");
        run_steps(&lab, &state, BRIDGE)?;
        // The container's namespace inherits the root's IPv4 settings, as a
        // Docker container's does; on a Docker host that includes
        // forwarding, and the container would route the frames below back
        // out (see lab::PINNED_SYSCTLS).
        println!("\n# (lab) Pin forwarding, redirects and IPv6 autoconfiguration off in the container's namespace");
        pin_sysctls(&NetNs::named("my-macvlan-alpine")?)?;
        // Traffic from the rest of the L2 network: exact frame counts to
        // the container and to a MAC nobody has, sent from the lab's wire.
        let up = lab.upstream().name().unwrap_or_default().to_owned();
        println!("\n# Send it 100 frames from the L2 network, and 100 to a MAC nobody has");
        mvnet(
            &lab,
            &state,
            &["pktgen", "--netns", &up, "--count", "100", "--unknown", "1"],
        )?;
        run_steps(&lab, &state, BRIDGE_END)?;

        println!("\n=== 802.1Q trunked bridge example ===");
        // The gateway moves to upstream's VLAN 10 interface, as on a trunk.
        remove_address(&lab, UPSTREAM_IF, gw)?;
        if !upstream_gateway(&lab, "wire0.10", Some(10), gw)? {
            println!(
                "note: this kernel has no 802.1Q support (CONFIG_VLAN_8021Q), so the trunked example is skipped here.\n\
                 `cargo xtask test` runs it in a VM booting a Debian kernel; on your own machine, `modprobe 8021q` enables it."
            );
            return Ok(());
        }
        run_steps(&lab, &state, TRUNKED)
    })();
    let _ = std::fs::remove_dir_all(&state);
    for name in ["my-macvlan-alpine", "my-second-macvlan-alpine"] {
        if netns::list().iter().any(|n| n == name) {
            let _ = netns::delete(name);
        }
    }
    drop(lab);
    result?;
    println!("\nTutorial done; the lab and its state are removed.");
    Ok(())
}
