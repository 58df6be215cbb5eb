//! Standalone mode (`master` given): mvnet-cni makes the macvlan itself,
//! with `mvnet network create`'s rules for the parent and the mode, and
//! delegates addresses to the IPAM plugin of `ipam.type` (host-local,
//! static, dhcp, ...).
use std::{collections::BTreeMap, net::IpAddr, path::Path, sync::mpsc};

use serde_json::{json, Value};

use super::{
    chained,
    config::{NetConf, Role},
    delegate, result, sandbox,
    spec::{CniError, CniResult, Code, Env},
};
use crate::{
    controller::{datapath::DeviceRegistration, Controller},
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
) -> CniResult<netlink::Link> {
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
    let link = netlink::run(None, move |nl| async move { nl.link(&name).await }).map_err(io)?;
    let Some(link) = link else {
        return invalid(format!(
            "\"master\" interface was not found in mvnet-cni's network namespace: {master}; list interfaces with `ip link` (mvnet-cni does not create 802.1Q sub-interfaces: create {master} first)"
        ));
    };
    let id = chained::network_id(&conf.name);
    if let Some(own) = ctl.state.networks.get(&id) {
        let used = ctl.state.containers.on_network(&id).next().is_some();
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
    Ok(link)
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

/// The MAC the new macvlan gets: passthru takes its parent's (the kernel
/// gives it that), the others a random one, chosen before the device
/// exists so that its classifier entry, and with it the device's ifindex,
/// can be too.
fn choose_mac(parent: &netlink::Link, mode: MacvlanMode) -> CniResult<Mac> {
    if mode != MacvlanMode::Passthru {
        return Ok(crate::ipam::random_mac());
    }
    parent.mac.ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            format!(
                "\"master\" {} has no MAC address; a passthru macvlan takes its parent's",
                parent.name
            ),
        )
    })
}

/// Makes the macvlan in the container (created there directly, under a
/// temporary name then renamed where the kernel looks the new name up in
/// the creating namespace: before 6.11), with `mac`, addressed, up, with
/// its default routes. With a `registration`, the device gets its source checks
/// before it is up, as `mvnet run`'s endpoints do; they know it by its
/// slot (the classid of its filter), so the kernel numbers it (see
/// `datapath::devices`).
fn plumb(
    sandbox: &mut SandboxThread<'_>,
    parent: u32,
    mode: MacvlanMode,
    mac: Mac,
    ifname: &str,
    a: &Addressing,
    registration: Option<DeviceRegistration>,
) -> CniResult<()> {
    let tmp = format!("mvc{}", std::process::id());
    let ns = sandbox.ns;
    let target = ns.clone();
    let indexes: Vec<Option<u32>> = match &registration {
        Some(r) if r.chooses_ifindex() => r.ifindex_candidates().map(Some).collect(),
        _ => vec![None],
    };
    if indexes.is_empty() {
        return Err(CniError::new(
            Code::Mvnet,
            format!("every ifindex mvnet would give {ifname}'s device is taken by a device the classifier already knows; run `mvnet restore` and ADD again"),
        ));
    }
    // passthru: the kernel gives the device its parent's MAC, `mac`.
    let asked = (mode != MacvlanMode::Passthru).then_some(mac);
    let wanted = ifname.to_owned();
    // The device is made under its final name where the kernel looks the
    // name up in the sandbox (6.11+), which spares the rename and the RCU
    // grace period it waits for (`dev_change_name`); an older kernel finds
    // the name in our namespace (our own eth0) and refuses with EEXIST:
    // then under the temporary name, renamed below.
    let made = netlink::run(None, move |nl| async move {
        let mut result = Err(netlink::NetlinkError::LinkNotFound(wanted.clone()));
        for index in indexes {
            for name in [&wanted, &tmp] {
                result = nl
                    .add_macvlan_at(name, parent, mode, asked, &target, index)
                    .await
                    .map(|()| name.clone());
                if !matches!(&result, Err(e) if matches!(e.errno(), Some(libc::EEXIST | libc::EBUSY)))
                {
                    return result;
                }
            }
            // Taken in the sandbox (or, for the kernel's first lookup, in
            // ours): the next candidate.
        }
        result
    })
    .map_err(io)?;
    let ifname = ifname.to_owned();
    let ips: Vec<_> = a.ips.iter().map(|(a, p, _)| (*a, *p)).collect();
    let gws = a.default_gateways.clone();
    let job = move || {
        netlink::run_inside(ns, move |nl| async move {
            let link = nl.require_link(&made).await?;
            let result: netlink::Result<()> = async {
                if made != ifname {
                    nl.rename(link.index, &ifname).await?;
                }
                if let Some(r) = &registration {
                    r.register(link.index, &ifname).map_err(|e| {
                        netlink::NetlinkError::Request {
                            op: format!("source checks on {ifname}"),
                            message: format!("{e:#}"),
                            errno: None,
                        }
                    })?;
                }
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
            result
        })
    };
    sandbox.run(Box::new(job)).map_err(io)
}

/// Plumbing run inside the sandbox.
type Job<'scope> = Box<dyn FnOnce() -> netlink::Result<()> + Send + 'scope>;

/// A thread inside the sandbox's namespace for the whole ADD: it first
/// answers whether the interface's name is taken there, then runs the
/// plumbing it is given. One thread, and one connection there, for both:
/// a thread each cost a stack mapped and unmapped and a wake-up more. (The
/// look-up is waited for before anything else: side by side with the
/// state's opening it made both slower on two cores, 1.2 ms for the 1.3 ms
/// they took one after the other.)
struct SandboxThread<'scope> {
    taken: mpsc::Receiver<netlink::Result<bool>>,
    jobs: mpsc::Sender<Job<'scope>>,
    done: mpsc::Receiver<netlink::Result<()>>,
    /// Joined when it ends before its time, for the reason.
    thread: Option<crate::netns::Spawned<'scope, ()>>,
    ns: &'scope NetNs,
}

impl<'scope> SandboxThread<'scope> {
    /// Starts the thread, which looks `ifname` up at once. It ends when
    /// the `SandboxThread` is dropped.
    fn start(
        scope: &'scope std::thread::Scope<'scope, '_>,
        ns: &'scope NetNs,
        ifname: &str,
    ) -> CniResult<SandboxThread<'scope>> {
        let (taken_tx, taken) = mpsc::channel();
        let (jobs, jobs_rx) = mpsc::channel::<Job<'scope>>();
        let (done_tx, done) = mpsc::channel();
        let name = ifname.to_owned();
        let thread =
            crate::netns::spawn_in(scope, Some(ns), move || {
                let found = netlink::run_inside(ns, move |nl| async move {
                    Ok(nl.link(&name).await?.is_some())
                });
                if taken_tx.send(found).is_err() {
                    return;
                }
                for job in jobs_rx {
                    if done_tx.send(job()).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| CniError::new(Code::Io, format!("{e}")))?;
        Ok(SandboxThread {
            taken,
            jobs,
            done,
            thread: Some(thread),
            ns,
        })
    }

    /// Whether the sandbox has an interface of that name.
    fn taken(&mut self) -> netlink::Result<bool> {
        match self.taken.recv() {
            Ok(found) => found,
            Err(_) => Err(self.ended()),
        }
    }

    /// Runs `job` on the thread and waits for it.
    fn run(&mut self, job: Job<'scope>) -> netlink::Result<()> {
        if self.jobs.send(job).is_err() {
            return Err(self.ended());
        }
        match self.done.recv() {
            Ok(result) => result,
            Err(_) => Err(self.ended()),
        }
    }

    /// Why the thread ended before its time: it could not enter the
    /// sandbox, or it panicked.
    fn ended(&mut self) -> netlink::NetlinkError {
        let reason = match self.thread.take().map(crate::netns::Spawned::join) {
            Some(Err(e)) => format!("{e}"),
            _ => "it ended early".to_owned(),
        };
        netlink::NetlinkError::Request {
            op: "the sandbox's thread".into(),
            message: reason,
            errno: None,
        }
    }
}

/// Deletes `ifname` in `ns` if both are there.
fn unplumb(netns: &str, ifname: &str) -> CniResult<()> {
    let Some(ns) = sandbox_if_there(netns) else {
        return Ok(());
    };
    std::thread::scope(|scope| start_unplumb(scope, &ns, ifname)?.join().map_err(io))
}

/// The sandbox's namespace, unless the runtime removed it already.
fn sandbox_if_there(netns: &str) -> Option<NetNs> {
    super::netns_exists(netns).then(|| NetNs::from_path(netns))
}

/// Starts deleting `ifname` in `ns` on a new thread of `scope`.
fn start_unplumb<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    ns: &'s NetNs,
    ifname: &str,
) -> CniResult<netlink::Pending<'s, ()>> {
    let name = ifname.to_owned();
    netlink::spawn(scope, ns, move |nl| async move {
        nl.delete_named(&name).await?;
        Ok(())
    })
    .map_err(io)
}

/// A netlink failure as CNI reports it.
fn io(e: netlink::NetlinkError) -> CniError {
    CniError::new(Code::Io, format!("{e}"))
}

/// ADD: the IPAM plugin's addresses on a new macvlan of `master`, then
/// registered as in chained mode.
pub fn add(conf: &NetConf, env: &Env) -> CniResult<Value> {
    let ns = sandbox::open(Path::new(&env.netns))?;
    std::thread::scope(|scope| {
        add_with(
            conf,
            env,
            &mut SandboxThread::start(scope, &ns, &env.ifname)?,
        )
    })
}

/// [`add`] with its thread in the sandbox.
fn add_with(conf: &NetConf, env: &Env, sandbox: &mut SandboxThread<'_>) -> CniResult<Value> {
    let (master, mode, ipam) = standalone(conf);
    if sandbox.taken().map_err(io)? {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!(
                "the container already has an interface {}; give another CNI_IFNAME",
                env.ifname
            ),
        ));
    }
    let mut ctl = chained::open(conf)?;
    let parent = check_master(&ctl, conf, master, mode)?;
    let mac = choose_mac(&parent, mode)?;
    let ipam_result = delegate::ipam(env, ipam, "ADD", &conf.raw)?.unwrap_or_default();
    let release = |e: CniError| {
        let _ = unplumb(&env.netns, &env.ifname);
        let _ = delegate::ipam(env, ipam, "DEL", &conf.raw);
        e
    };
    let a = addressing(&ipam_result).map_err(release)?;
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
    // In the classifier's table first, as `mvnet run` does: its slot
    // decides the device's ifindex.
    chained::register(
        &mut ctl,
        conf,
        env,
        master,
        mode,
        mac,
        &addresses,
        options,
        chained::Device::MadeNext,
    )
    .map_err(release)?;
    let registration = device_registration(&ctl, conf, env).map_err(release);
    let plumbed = registration
        .and_then(|r| plumb(sandbox, parent.index, mode, mac, &env.ifname, &a, r).map_err(release));
    if let Err(e) = plumbed {
        let _ = ctl.forget_endpoint(&env.container_id, &chained::network_id(&conf.name));
        return Err(e);
    }
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

/// What registering the new endpoint's device takes (`None`: nothing to
/// register, e.g. passthru).
fn device_registration(
    ctl: &Controller,
    conf: &NetConf,
    env: &Env,
) -> CniResult<Option<DeviceRegistration>> {
    let id = chained::network_id(&conf.name);
    let net = &ctl.state.networks[&id];
    let ep = &ctl.state.containers[&env.container_id].endpoints[&id];
    DeviceRegistration::of(net, ep).map_err(CniError::mvnet)
}

/// DEL: the addresses back to IPAM, the macvlan gone (when the namespace
/// still is there), the endpoint forgotten. Idempotent.
///
/// The link's deletion is most of a DEL's time, and it is the kernel's
/// waiting: RTM_DELLINK returns after `unregister_netdevice_many`'s
/// `synchronize_net` and `netdev_run_todo`'s `rcu_barrier` (10-30 ms, as
/// for the reference plugin, longer under load). So it starts first, on
/// the thread that enters the sandbox, and the addresses go back to IPAM
/// and mvnet's state is locked and read meanwhile on this one; the
/// endpoint leaves the classifier's table only once its device is gone, as
/// on `mvnet rm` (its source checks never see their identity go while the
/// device can still send).
pub fn del(conf: &NetConf, env: &Env) -> CniResult<()> {
    let (_, _, ipam) = standalone(conf);
    let ns = sandbox_if_there(&env.netns);
    std::thread::scope(|scope| {
        let unplumbed = ns
            .as_ref()
            .map(|ns| start_unplumb(scope, ns, &env.ifname))
            .transpose()?;
        let state = delegate::ipam(env, ipam, "DEL", &conf.raw).and_then(|_| chained::open(conf));
        let unplumbed = unplumbed.map(netlink::Pending::join).transpose();
        let mut ctl = state?;
        unplumbed.map_err(io)?;
        chained::forget(&mut ctl, conf, env)
    })
}
