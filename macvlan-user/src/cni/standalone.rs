//! Standalone mode (`master` given): mvnet-cni makes the macvlan itself,
//! with `mvnet network create`'s rules for the parent and the mode, and
//! delegates addresses to the IPAM plugin of `ipam.type` (host-local,
//! static, dhcp, ...).
use std::{collections::BTreeMap, net::IpAddr, path::Path};

use serde_json::{json, Value};

use super::{
    chained,
    config::{NetConf, Role},
    delegate, result, sandbox,
    spec::{CniError, CniResult, Code, Env},
};
use crate::{
    controller::Controller,
    model::{Mac, MacvlanMode},
    netlink,
    netns::NetNs,
};

/// Linux interface names are at most 15 bytes.
const IFNAMSIZ: usize = 15;

fn standalone(conf: &NetConf) -> (&str, MacvlanMode, &Value) {
    match &conf.role {
        Role::Standalone { master, mode, ipam } => (master, *mode, ipam),
        Role::Chained => unreachable!("standalone verbs run with \"master\""),
    }
}

/// `network create`'s checks of the parent and the mode, against the
/// state (passthru needs its parent to itself) and the kernel.
fn check_master(
    ctl: &Controller,
    conf: &NetConf,
    master: &str,
    mode: MacvlanMode,
) -> CniResult<u32> {
    let invalid = |m: String| Err(CniError::new(Code::InvalidConfig, m));
    if master == "lo" {
        return invalid("loopback interface is not a valid macvlan parent link".into());
    }
    if master.is_empty() || master.len() > IFNAMSIZ {
        return invalid(format!(
            "\"master\" {master:?} is not an interface name (1 to {IFNAMSIZ} characters)"
        ));
    }
    let name = master.to_owned();
    let link = netlink::run(None, move |nl| async move { nl.link(&name).await })
        .map_err(|e| CniError::new(Code::Io, format!("{e}")))?;
    let Some(link) = link else {
        return invalid(format!(
            "\"master\" interface was not found in mvnet-cni's network namespace: {master}; list interfaces with `ip link` (mvnet-cni does not create 802.1Q sub-interfaces: create {master} first)"
        ));
    };
    let id = chained::network_id(&conf.name);
    if let Some(own) = ctl.state.networks.get(&id) {
        let used = ctl
            .state
            .containers
            .values()
            .any(|c| c.endpoints.contains_key(&id));
        if used && (own.parent != master || own.mode != mode) {
            return invalid(format!(
                "CNI network {} has containers on {} in {} mode; its config now says {master} in {} mode: remove those containers before changing \"master\" or \"mode\"",
                conf.name,
                own.parent,
                own.mode.as_str(),
                mode.as_str()
            ));
        }
    }
    for other in ctl.state.networks.values() {
        if other.id != id
            && other.parent == master
            && (other.mode == MacvlanMode::Passthru || mode == MacvlanMode::Passthru)
        {
            return invalid(format!(
                "parent interface {master} is already used by network {}{}; a passthru network needs its parent to itself",
                other.name,
                if other.mode == MacvlanMode::Passthru { " in passthru mode" } else { "" }
            ));
        }
    }
    Ok(link.index)
}

/// An IPAM result's addresses (with prefix and gateway) and default routes.
struct Addressing {
    ips: Vec<(IpAddr, u8, Option<IpAddr>)>,
    default_gateways: Vec<IpAddr>,
}

fn addressing(ipam: &Value) -> CniResult<Addressing> {
    let mut ips = Vec::new();
    for ip in ipam
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let parsed = ip
            .get("address")
            .and_then(Value::as_str)
            .and_then(|a| a.split_once('/'))
            .and_then(|(a, p)| Some((a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?)));
        let Some((addr, prefix)) = parsed else {
            return Err(CniError::new(
                Code::Decode,
                format!("the IPAM plugin's result has an invalid address: {ip}"),
            ));
        };
        let gw = ip
            .get("gateway")
            .and_then(Value::as_str)
            .and_then(|g| g.parse().ok());
        ips.push((addr, prefix, gw));
    }
    let mut default_gateways = Vec::new();
    for route in ipam
        .get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let dst = route.get("dst").and_then(Value::as_str).unwrap_or_default();
        let v4 = match dst {
            "0.0.0.0/0" => true,
            "::/0" => false,
            _ => {
                return Err(CniError::new(
                    Code::UnsupportedField,
                    format!("the IPAM plugin asks for a route to {dst}; mvnet-cni sets default routes only (0.0.0.0/0, ::/0): leave other routes out of \"ipam\""),
                ))
            }
        };
        let gw = route
            .get("gw")
            .and_then(Value::as_str)
            .and_then(|g| g.parse::<IpAddr>().ok())
            .or_else(|| {
                ips.iter()
                    .find_map(|(a, _, g)| g.filter(|_| a.is_ipv4() == v4))
            });
        match gw {
            Some(g) => default_gateways.push(g),
            None => {
                return Err(CniError::new(
                    Code::InvalidConfig,
                    format!("the default route {dst} has no gateway; give \"gw\" or a \"gateway\" in \"ipam\""),
                ))
            }
        }
    }
    Ok(Addressing {
        ips,
        default_gateways,
    })
}

/// Makes the macvlan in the container (created there directly under a
/// temporary name, then renamed: kernels before 6.11 look the new name up
/// in the creating namespace), addressed, up, with its default routes.
fn plumb(
    ns: &NetNs,
    parent: u32,
    mode: MacvlanMode,
    ifname: &str,
    a: &Addressing,
) -> CniResult<Mac> {
    let tmp = format!("mvc{}", std::process::id());
    let target = ns.clone();
    let name = tmp.clone();
    netlink::run(None, move |nl| async move {
        nl.add_macvlan_in(&name, parent, mode, None, &target).await
    })
    .map_err(|e| CniError::new(Code::Io, format!("{e}")))?;
    let ifname = ifname.to_owned();
    let ips: Vec<_> = a.ips.iter().map(|(a, p, _)| (*a, *p)).collect();
    let gws = a.default_gateways.clone();
    netlink::run(Some(ns), move |nl| async move {
        let link = nl.require_link(&tmp).await?;
        let result: netlink::Result<()> = async {
            nl.rename(link.index, &ifname).await?;
            for (addr, prefix) in &ips {
                nl.add_address(link.index, *addr, *prefix).await?;
            }
            nl.set_up(link.index).await?;
            for gw in &gws {
                nl.add_default_route(link.index, *gw).await?;
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = nl.delete(link.index).await;
        }
        result?;
        nl.require_link(&ifname).await
    })
    .map_err(|e| CniError::new(Code::Io, format!("{e}")))?
    .mac
    .ok_or_else(|| CniError::new(Code::Io, "the new macvlan has no MAC address"))
}

/// Deletes `ifname` in `ns` if both are there.
fn unplumb(netns: &str, ifname: &str) -> CniResult<()> {
    if !super::netns_exists(netns) {
        return Ok(());
    }
    let ns = NetNs::from_path(netns);
    let name = ifname.to_owned();
    netlink::run(Some(&ns), move |nl| async move {
        if let Some(l) = nl.link(&name).await? {
            match nl.delete(l.index).await {
                Err(e) if e.errno() == Some(libc::ENODEV) => {}
                other => other?,
            }
        }
        Ok(())
    })
    .map_err(|e| CniError::new(Code::Io, format!("{e}")))
}

/// ADD: the IPAM plugin's addresses on a new macvlan of `master`, then
/// registered as in chained mode.
pub fn add(conf: &NetConf, env: &Env) -> CniResult<Value> {
    let (master, mode, ipam) = standalone(conf);
    let ns = sandbox::open(Path::new(&env.netns))?;
    let name = env.ifname.clone();
    let taken = netlink::run(Some(&ns), move |nl| async move { nl.link(&name).await })
        .map_err(|e| CniError::new(Code::Io, format!("{e}")))?;
    if taken.is_some() {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!(
                "the container already has an interface {}; give another CNI_IFNAME",
                env.ifname
            ),
        ));
    }
    let mut ctl = chained::open(conf)?;
    let parent_index = check_master(&ctl, conf, master, mode)?;
    let ipam_result = delegate::ipam(env, ipam, "ADD", &conf.raw)?.unwrap_or_default();
    let release = |e: CniError| {
        let _ = unplumb(&env.netns, &env.ifname);
        let _ = delegate::ipam(env, ipam, "DEL", &conf.raw);
        e
    };
    let a = addressing(&ipam_result).map_err(release)?;
    let mac = plumb(&ns, parent_index, mode, &env.ifname, &a).map_err(release)?;
    let options = BTreeMap::from([
        ("parent".to_owned(), master.to_owned()),
        ("macvlan_mode".to_owned(), mode.as_str().to_owned()),
        ("cni.plugin".to_owned(), "standalone".to_owned()),
        (
            "ipam".to_owned(),
            ipam.get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        ),
    ]);
    let addresses: Vec<(IpAddr, u8)> = a.ips.iter().map(|(a, p, _)| (*a, *p)).collect();
    chained::register(&mut ctl, conf, env, master, mode, mac, &addresses, options)
        .map_err(release)?;
    let ips: Vec<Value> = ipam_result
        .get("ips")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut ip| {
            ip["interface"] = json!(0);
            ip
        })
        .collect();
    let out = json!({
        "cniVersion": conf.version_str,
        "interfaces": [{"name": env.ifname, "mac": mac.to_string(), "sandbox": env.netns}],
        "ips": ips,
        "routes": ipam_result.get("routes").cloned().unwrap_or(json!([])),
        "dns": ipam_result.get("dns").cloned().unwrap_or(json!({})),
    });
    result::convert(&out, conf.version)
}

/// DEL: the addresses back to IPAM, the macvlan gone (when the namespace
/// still is there), the endpoint forgotten. Idempotent.
pub fn del(conf: &NetConf, env: &Env) -> CniResult<()> {
    let (_, _, ipam) = standalone(conf);
    delegate::ipam(env, ipam, "DEL", &conf.raw)?;
    unplumb(&env.netns, &env.ifname)?;
    chained::del(conf, env)
}
