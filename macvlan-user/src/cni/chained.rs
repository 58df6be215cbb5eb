//! Chained mode: after the reference `macvlan` plugin, registers the
//! interface it made with the classifier of its root device, through the
//! reconciling core's foreign records (owner `cni:<network name>`).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use serde_json::Value;

use super::{
    config::{NetConf, Role},
    delegate,
    result::{self, SandboxInterface},
    sandbox,
    spec::{CniError, CniResult, Code, Env},
};
use crate::{
    controller::{
        datapath::{attachment, pin_dir, Attachment},
        foreign::{ForeignContainer, ForeignEndpoint, ForeignNetwork},
        Controller,
    },
    datapath::pinned::PinnedMaps,
    model::{MacvlanMode, Owner},
};

/// The id of the mvnet network that stands for CNI network `name`.
pub fn network_id(name: &str) -> String {
    format!("cni-{name}")
}

fn owner(conf: &NetConf) -> Owner {
    Owner::Cni {
        network: conf.name.clone(),
    }
}

/// The writer's controller on the config's state directory (the lock
/// serialises parallel ADDs and DELs). It saves without fsync: what ADD,
/// DEL and GC record is of the sandbox's namespace and link, which a power
/// loss takes too, and `mvnet restore` and the runtime's GC converge the
/// records again; a killed plugin still leaves the old or the new state.
pub fn open(conf: &NetConf) -> CniResult<Controller> {
    let mut ctl = Controller::open(&conf.state_dir).map_err(|e| {
        CniError::new(
            Code::Io,
            format!(
                "opening mvnet's state in {}: {e:#}",
                conf.state_dir.display()
            ),
        )
    })?;
    ctl.skip_fsync();
    Ok(ctl)
}

/// The container as the core records it.
pub fn container(env: &Env) -> CniResult<ForeignContainer> {
    let pod = env.pod()?;
    let short: String = env.container_id.chars().take(12).collect();
    Ok(ForeignContainer {
        // The runtime's, not this network's: a pod may be on several.
        owner: Owner::cni_runtime(),
        id: env.container_id.clone(),
        name: pod.clone().unwrap_or(short),
        netns: env.netns.clone().into(),
        pod,
    })
}

/// Whether the endpoint's device exists when it is registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// Made by the plugin before (chained): its counts are read and its
    /// source checks registered now.
    Exists,
    /// Made by mvnet-cni right after (standalone), which registers it.
    MadeNext,
}

/// Records the network (parent, mode, policy) and the endpoint.
#[allow(clippy::too_many_arguments)]
pub fn register(
    ctl: &mut Controller,
    conf: &NetConf,
    env: &Env,
    parent: &str,
    mode: MacvlanMode,
    mac: crate::model::Mac,
    addresses: &[(IpAddr, u8)],
    options: BTreeMap<String, String>,
    device: Device,
) -> CniResult<()> {
    let id = network_id(&conf.name);
    ctl.adopt_network(ForeignNetwork {
        owner: owner(conf),
        id: id.clone(),
        name: conf.name.clone(),
        parent: parent.to_owned(),
        mode,
        policy: conf.policy,
        xdp_mode: conf.xdp_mode,
        max_endpoints: conf.max_endpoints,
        options,
    })
    .map_err(CniError::mvnet)?;
    let ipv4 = addresses.iter().find_map(|(a, _)| match a {
        IpAddr::V4(v) => Some(*v),
        _ => None,
    });
    let ipv6 = addresses.iter().find_map(|(a, _)| match a {
        IpAddr::V6(v) => Some(*v),
        _ => None,
    });
    let ep = ForeignEndpoint {
        network_id: id,
        ifname: env.ifname.clone(),
        mac,
        ipv4,
        ipv6,
    };
    match device {
        Device::Exists => ctl.adopt_endpoint(&container(env)?, ep),
        Device::MadeNext => ctl.adopt_endpoint_before_device(&container(env)?, ep),
    }
    .map_err(CniError::mvnet)
}

/// The previous result, which chained mode needs.
fn prev_result(conf: &NetConf) -> CniResult<&Value> {
    conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "mvnet-cni without \"master\" is a chained plugin and needs the macvlan plugin's prevResult; put it after {\"type\": \"macvlan\"} in a conflist, or give \"master\" to create the macvlan itself",
        )
    })
}

/// ADD: finds the macvlan, registers it, passes prevResult on.
pub fn add(conf: &NetConf, env: &Env) -> CniResult<Value> {
    let prev = prev_result(conf)?;
    let SandboxInterface { addresses, .. } = result::sandbox_interface(prev, &env.ifname)?;
    let ns = sandbox::open(Path::new(&env.netns))?;
    let link = sandbox::find(&ns, &env.ifname)?;
    let options = BTreeMap::from([
        ("parent".to_owned(), link.parent.clone()),
        ("macvlan_mode".to_owned(), link.mode.as_str().to_owned()),
        ("cni.plugin".to_owned(), "chained".to_owned()),
    ]);
    let mut ctl = open(conf)?;
    register(
        &mut ctl,
        conf,
        env,
        &link.parent,
        link.mode,
        link.mac,
        &addresses,
        options,
        Device::Exists,
    )?;
    // The macvlan plugin's gratuitous ARP left before the registration
    // above; where the root enforces it was dropped as a stranger's frame.
    // Once more now that the device's checks pass it (after the state's
    // lock is let go).
    let enforces = ctl.root_of_enforces(&network_id(&conf.name));
    drop(ctl);
    if enforces {
        let v4: Vec<Ipv4Addr> = addresses
            .iter()
            .filter_map(|(a, _)| match a {
                IpAddr::V4(v) => Some(*v),
                IpAddr::V6(_) => None,
            })
            .collect();
        if !v4.is_empty() {
            if let Err(e) = sandbox::announce(&ns, &env.ifname, link.mac, &v4) {
                // As the plugin does with its own: not worth failing the ADD.
                eprintln!("mvnet-cni: {e}");
            }
        }
    }
    result::convert(prev, conf.version)
}

/// DEL: forgets the endpoint. Idempotent; needs neither the namespace nor
/// the interface. The device, which the plugin before mvnet-cni deletes
/// after this DEL (a chain is deleted in reverse), loses its source check
/// first (see `Controller::forget_endpoint`).
pub fn del(conf: &NetConf, env: &Env) -> CniResult<()> {
    forget(&mut open(conf)?, conf, env)
}

/// Forgets the endpoint of `env`'s attachment on `conf`'s network, through
/// the writer's controller `ctl` ([`open`]).
pub fn forget(ctl: &mut Controller, conf: &NetConf, env: &Env) -> CniResult<()> {
    ctl.forget_endpoint(&env.container_id, &network_id(&conf.name))
        .map_err(CniError::mvnet)
}

/// CHECK: the record, the interface's MAC, the attached classifier and its
/// table entry must all be there.
pub fn check(conf: &NetConf, env: &Env) -> CniResult<()> {
    let id = network_id(&conf.name);
    let ctl = Controller::snapshot(&conf.state_dir).map_err(CniError::mvnet)?;
    let missing = || {
        CniError::new(
            Code::UnknownContainer,
            format!(
                "container {} has no mvnet endpoint {} on CNI network {}; ADD it again",
                env.container_id, env.ifname, conf.name
            ),
        )
    };
    let net = ctl.state.networks.get(&id).ok_or_else(missing)?;
    let ep = ctl
        .state
        .containers
        .get(&env.container_id)
        .and_then(|c| c.endpoints.get(&id))
        .filter(|e| e.ifname == env.ifname)
        .ok_or_else(missing)?;
    let ns = sandbox::open(Path::new(&env.netns))?;
    match sandbox::mac_of(&ns, &env.ifname)? {
        Some(mac) if mac == ep.mac => {}
        Some(mac) => {
            return Err(CniError::new(
                Code::ClassifierMissing,
                format!(
                    "{} has MAC {mac} but mvnet counts {} for it; ADD it again",
                    env.ifname, ep.mac
                ),
            ))
        }
        None => {
            return Err(CniError::new(
                Code::UnknownContainer,
                format!("there is no interface {} in {}", env.ifname, env.netns),
            ))
        }
    }
    let (root, vlan) = net.root();
    if attachment(root).map_err(CniError::mvnet)? != Attachment::Attached {
        return Err(CniError::new(
            Code::ClassifierMissing,
            format!("the classifier is not attached to {root} (the kernel has no mvnet program there); run `mvnet restore`"),
        ));
    }
    let dir = pin_dir(root).map_err(CniError::mvnet)?;
    let present = PinnedMaps::open(&dir)
        .ok()
        .and_then(|m| {
            m.endpoints_ro()
                .map(|t| t.get(ep.mac.octets(), vlan).is_some())
        })
        .unwrap_or(false);
    if !present {
        return Err(CniError::new(
            Code::ClassifierMissing,
            format!(
                "{} ({}) is not in the classifier's table on {root}; run `mvnet restore`",
                env.ifname, ep.mac
            ),
        ));
    }
    Ok(())
}

/// GC: forgets this network's endpoints the runtime no longer lists, and
/// the network itself when none is left.
pub fn gc(conf: &NetConf, env: &Env) -> CniResult<()> {
    let Some(valid) = &conf.valid_attachments else {
        return Err(CniError::new(
            Code::InvalidConfig,
            "GC needs \"cni.dev/valid-attachments\" (the attachments still in use)",
        ));
    };
    let valid: BTreeSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let id = network_id(&conf.name);
    let mut ctl = open(conf)?;
    let stale: Vec<(String, String)> = ctl
        .state
        .containers
        .values()
        .filter(|c| c.owner.same_runtime(&owner(conf)))
        .filter(|c| {
            c.endpoints
                .get(&id)
                .is_some_and(|e| !valid.contains(&(c.id.as_str(), e.ifname.as_str())))
        })
        .map(|c| (c.id.clone(), c.endpoints[&id].ifname.to_string()))
        .collect();
    for (c, ifname) in stale {
        if let Role::Standalone { ipam, .. } = &conf.role {
            // Its addresses go back to the IPAM plugin, as on DEL.
            let attachment = Env {
                container_id: c.clone(),
                ifname,
                netns: String::new(),
                ..env.clone()
            };
            delegate::ipam(&attachment, ipam, "DEL", &conf.raw)?;
        }
        ctl.forget_endpoint(&c, &id).map_err(CniError::mvnet)?;
    }
    let used = ctl.state.containers.on_network(&id).next().is_some();
    if !used {
        ctl.forget_network(&id).map_err(CniError::mvnet)?;
    }
    Ok(())
}
