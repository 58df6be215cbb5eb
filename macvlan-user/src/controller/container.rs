//! Containers: a network namespace with one endpoint per network, and
//! optionally a process started in it. `run`, `stop`, `rm`, `exec`,
//! `network connect` and `network disconnect`.
use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use super::{endpoint, Controller};
use crate::{
    ipam,
    model::{self, Container, Endpoint, Intent, Mac, Network, Owner},
    netns::{self, NetNs},
};

/// Addresses asked for on one network.
#[derive(Clone, Debug, Default)]
pub struct AddressRequest {
    pub ip: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Addr>,
    pub mac: Option<Mac>,
}

/// What `mvnet run` was asked for.
#[derive(Clone, Debug, Default)]
pub struct RunSpec {
    pub name: Option<String>,
    pub network: String,
    pub addresses: AddressRequest,
    pub auto_remove: bool,
    pub detach: bool,
    pub command: Vec<String>,
    /// `--label KEY=VALUE`.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Docker's `IPAMConfig` of an endpoint: what --ip/--ip6 asked for.
pub(super) fn requested_ipam(
    net_id: &str,
    req: &AddressRequest,
) -> std::collections::BTreeMap<String, model::IpamConfig> {
    if req.ip.is_none() && req.ip6.is_none() {
        return Default::default();
    }
    let cfg = model::IpamConfig {
        ipv4: req.ip,
        ipv6: req.ip6,
    };
    [(net_id.to_owned(), cfg)].into()
}

/// Refuses the parent's own MAC for an endpoint: the kernel rejects a
/// macvlan with its lower device's address (EADDRINUSE).
fn refuse_parent_mac(parent: &str, mac: Mac) -> Result<()> {
    let name = parent.to_owned();
    let link = crate::netlink::run(None, |nl| async move { nl.link(&name).await })?;
    if link.and_then(|l| l.mac) == Some(mac) {
        bail!(
            "MAC address {mac} is the address of the parent {parent}; an endpoint needs its own: \
             pick another --mac-address, or leave it out to get one"
        );
    }
    Ok(())
}

/// How a `run` ended.
pub enum RunOutcome {
    /// The container is up (detached, or no command).
    Started(String),
    /// The foreground command exited with this code.
    Exited(i32),
}

impl Controller {
    /// Allocates addresses and a MAC for a new endpoint on `net_id`.
    pub(super) fn allocate_endpoint(
        &mut self,
        net_id: &str,
        req: &AddressRequest,
        ifname: &str,
    ) -> Result<Endpoint> {
        super::foreign::refuse_foreign_network(
            &self.state.networks[net_id],
            "attach containers to",
        )?;
        if self.state.networks[net_id].mode == model::MacvlanMode::Passthru {
            let holder = self
                .state
                .containers
                .on_network(net_id)
                .next()
                .map(|(id, _)| &self.state.containers[id]);
            if let Some(c) = holder {
                let net = &self.state.networks[net_id].name;
                bail!(
                    "network {net} is in passthru mode, which takes one endpoint, and container \
                     {} has it; disconnect it (`mvnet network disconnect {net} {}`) or remove it \
                     first, or use a bridge-mode network for several containers",
                    c.name,
                    c.name
                );
            }
        }
        let net = self.state.networks.get_mut(net_id).expect("network exists");
        if req.ip6.is_some() && !net.enable_ipv6 {
            bail!("--ip6 given, but network {} has no IPv6 (create it with --ipv6 and an IPv6 --subnet)", net.name);
        }
        if req.ip.is_some() && !net.pools.iter().any(|p| p.config.subnet.is_ipv4()) {
            bail!("--ip given, but network {} has no IPv4 subnet", net.name);
        }
        let (ipv4, ipv6) = net
            .allocate_addresses(req.ip, req.ip6)
            .map_err(|e| anyhow!("{e}"))?;
        let release = |net: &mut Network| {
            net.release(ipv4.map(IpAddr::V4).into_iter().chain(ipv6.map(IpAddr::V6)))
        };
        let mac = match req.mac {
            Some(mac) => {
                let checked = ipam::validate_mac(mac)
                    .map_err(|e| anyhow!("{e}"))
                    .and_then(|()| refuse_parent_mac(&net.parent, mac));
                if let Err(e) = checked {
                    release(net);
                    return Err(e);
                }
                mac
            }
            None => match ipv4 {
                Some(a) => ipam::mac_for_ipv4(a),
                None => ipam::random_mac(),
            },
        };
        let net_id = net.id.clone();
        let dup = self
            .state
            .containers
            .mac_holder(&net_id, mac)
            .map(str::to_owned);
        if let Some(other) = dup {
            release(
                self.state
                    .networks
                    .get_mut(net_id.as_str())
                    .expect("exists"),
            );
            bail!(
                "MAC address {mac} is already in use on this network by container {other}; pick another --mac-address"
            );
        }
        if let Err(e) = self.refuse_mac_on_parent(&net_id, mac, req.mac.is_none()) {
            release(
                self.state
                    .networks
                    .get_mut(net_id.as_str())
                    .expect("exists"),
            );
            return Err(e);
        }
        Ok(Endpoint {
            id: model::new_id(),
            network_id: net_id,
            ifname: ifname.into(),
            mac,
            ipv4,
            ipv6,
            rx_base: 0,
        })
    }

    /// Refuses `mac` for an endpoint on network `net_id` when an endpoint of
    /// another network on the same parent device has it: the kernel brings
    /// up only one macvlan device per MAC on a parent (EADDRINUSE), and the
    /// classifier's table has one entry per MAC and VLAN of a root, which
    /// the new endpoint would take from the other. (Networks on other
    /// VLANs of one root are other parents: there a MAC may repeat.)
    /// `derived`: the MAC was made from the endpoint's IPv4 address.
    fn refuse_mac_on_parent(&self, net_id: &str, mac: Mac, derived: bool) -> Result<()> {
        let net = &self.state.networks[net_id];
        let root = net.root();
        let holder = self
            .state
            .networks
            .values()
            .filter(|n| n.id != net_id && n.root() == root)
            .find_map(|n| {
                let c = self.state.containers.mac_holder(&n.id, mac)?;
                Some((c.to_owned(), n.name.clone()))
            });
        let Some((other, other_net)) = holder else {
            return Ok(());
        };
        let fix = if derived {
            "give this container another --ip, or a --mac-address of its own"
        } else {
            "pick another --mac-address"
        };
        bail!(
            "MAC address {mac} is already in use on parent {} by container {other} (network \
             {other_net}), and the kernel allows each MAC once per parent device; {fix}",
            net.parent
        )
    }

    /// Takes an endpoint out of the classifier (its link is gone by now)
    /// and gives its addresses back.
    pub(super) fn release_endpoint(&mut self, ep: &Endpoint) {
        if let Some(net) = self.state.networks.get(&ep.network_id).cloned() {
            let _ = self.datapath_remove(&net, ep);
        }
        if let Some(net) = self.state.networks.get_mut(&ep.network_id) {
            net.release(ep.addresses());
        }
    }

    /// Moves the default routes of container `c` (a namespace of ours) to
    /// its gateway endpoint ([`endpoint::gateway_endpoint`]), as Docker
    /// does on connect and disconnect; a namespace attached with --netns
    /// keeps its own.
    pub(super) fn route_via_gateway_endpoint(&self, c: &Container) -> Result<()> {
        if !c.netns_owned || !c.netns_alive() {
            return Ok(());
        }
        let gateway = endpoint::gateway_endpoint(
            c.endpoints
                .values()
                .filter_map(|ep| Some((self.state.networks.get(&ep.network_id)?, ep))),
        );
        endpoint::set_default_routes(&NetNs::from_path(&c.netns), gateway)
    }

    /// `mvnet run`. On any error (or a crash) nothing is left behind: the
    /// run is recorded as an intent first (see [`super::intent`]).
    pub fn run(&mut self, spec: RunSpec) -> Result<RunOutcome> {
        let net_id = self.network(&spec.network)?.id.clone();
        let id = model::new_id();
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| format!("mvnet-{}", &id[..12]));
        model::validate_name("container", &name).map_err(|e| anyhow!(e))?;
        if self.state.containers.id_by_name(&name).is_some() {
            bail!("container name {name} is already in use; remove it with `mvnet container rm {name}` or pick another --name");
        }
        if netns::is_named(&name) {
            bail!("a network namespace named {name} already exists; pick another --name or remove it with `ip netns delete {name}`");
        }
        let ep = self.allocate_endpoint(&net_id, &spec.addresses, "eth0")?;
        let container = Container {
            id: id.clone(),
            name: name.clone(),
            created: model::now_rfc3339(),
            netns: std::path::Path::new(netns::NETNS_RUN_DIR).join(&name),
            netns_owned: true,
            netns_inode: None,
            auto_remove: spec.auto_remove,
            command: spec.command.clone(),
            pid: None,
            running: true,
            endpoints: [(net_id.clone(), ep.clone())].into(),
            labels: spec.labels.clone(),
            ipam_config: requested_ipam(&net_id, &spec.addresses),
            stopped_endpoints: Default::default(),
            driver_opts: Default::default(),
            owner: Owner::Mvnet,
            pod: None,
        };
        if let Err(e) = self.begin(Intent::Run {
            container: container.clone(),
        }) {
            self.release_endpoint(&ep);
            return Err(e);
        }
        let foreground = match self.run_apply(container, &spec) {
            Ok(child) => child,
            Err(e) => return Err(self.fail(e)),
        };
        match foreground {
            None => Ok(RunOutcome::Started(id)),
            Some(mut child) => {
                // Other commands (a second `run`, `stop` of this very
                // container) go on while the command runs.
                self.unlock();
                let status = child
                    .wait()
                    .context("waiting for the container's command")?;
                let code = exit_code(status);
                self.relock()?;
                // Stopped or removed meanwhile by another command: its
                // state is theirs.
                let Some(c) = self
                    .state
                    .containers
                    .get_mut(&id)
                    .filter(|c| c.pid == Some(child.id()))
                else {
                    return Ok(RunOutcome::Exited(code));
                };
                c.running = false;
                c.pid = None;
                self.save()?;
                if spec.auto_remove {
                    self.remove_container(&id, true)?;
                }
                Ok(RunOutcome::Exited(code))
            }
        }
    }

    /// The kernel side of `run`, after its intent; returns the foreground
    /// command.
    fn run_apply(
        &mut self,
        mut container: Container,
        spec: &RunSpec,
    ) -> Result<Option<std::process::Child>> {
        let (net_id, ep) = container
            .endpoints
            .iter()
            .next()
            .map(|(n, e)| (n.clone(), e.clone()))
            .expect("one endpoint");
        let net = &self.state.networks[net_id.as_str()];
        // Into the classifier's table before the link goes up.
        self.datapath_add(net, &ep)?;
        let ns = netns::create(&container.name)?;
        container.netns_inode = netns::inode(ns.path());
        endpoint::loopback_up(&ns, net.enable_ipv6)?;
        endpoint::plumb(net, &ep, &ns)?;
        let mut foreground = None;
        if !spec.command.is_empty() {
            let log = match spec.detach {
                true => Some(self.state_files()?.create_log(&log_name(&container.id))?),
                false => None,
            };
            let child = spawn_in(&ns, &spec.command, log)?;
            container.pid = Some(child.id());
            if !spec.detach {
                foreground = Some(child);
            }
        }
        self.state
            .containers
            .insert(container.id.clone(), container);
        self.commit()?;
        Ok(foreground)
    }

    /// `mvnet container stop`: ends every process in the container's
    /// namespace, tears the network down and releases the addresses; with
    /// `--rm` at run, removes the container.
    pub fn stop(&mut self, key: &str) -> Result<String> {
        super::foreign::refuse_foreign_container(self.container(key)?, "stop")?;
        let id = self.container(key)?.id.clone();
        self.begin(Intent::Stop {
            container_id: id.clone(),
        })?;
        self.stop_apply(&id).map_err(|e| self.fail(e))
    }

    pub(super) fn stop_apply(&mut self, id: &str) -> Result<String> {
        let c = self.state.containers[id].clone();
        self.end_processes(&c)?;
        self.teardown_network(&c)?;
        let stored = self.state.containers.get_mut(&c.id).expect("exists");
        stored.running = false;
        stored.pid = None;
        // Kept for inspect and `start`; a second stop keeps the first's.
        if !stored.endpoints.is_empty() {
            stored.stopped_endpoints = std::mem::take(&mut stored.endpoints);
        }
        if c.auto_remove {
            self.state.containers.remove(&c.id);
        }
        self.commit()?;
        if c.auto_remove {
            self.remove_log(&c.id);
        }
        Ok(c.name)
    }

    /// Removes a container's log file; a failure is reported, not fatal
    /// (the container is gone from the state by then).
    pub(super) fn remove_log(&self, id: &str) {
        let removed = self
            .state_files()
            .and_then(|dir| Ok(dir.remove(&log_name(id))?));
        if let Err(e) = removed {
            eprintln!("mvnet: warning: {e:#}");
        }
    }

    /// Ends the container's processes: in a namespace of ours, every
    /// process in it (found by the namespace's inode, not only the recorded
    /// pid: a shell's children are in it too); in one given with --netns,
    /// only the recorded pid (the namespace belongs to someone else).
    fn end_processes(&self, c: &Container) -> Result<()> {
        if c.netns_owned && c.netns_alive() {
            if let Some(ino) = netns::inode(&c.netns) {
                let left = netns::kill_all(ino, Duration::from_secs(10));
                if !left.is_empty() {
                    bail!(
                        "processes {left:?} in container {} do not end even with SIGKILL; \
                         try again once they are gone",
                        c.name
                    );
                }
            }
        }
        if let Some(pid) = c.pid {
            kill_gracefully(pid, Duration::from_secs(10));
        }
        Ok(())
    }

    fn teardown_network(&mut self, c: &Container) -> Result<()> {
        let ns = NetNs::from_path(&c.netns);
        if c.netns_owned {
            if let Some(name) = ns.name() {
                // Also a file left by an interrupted create or delete,
                // which is no namespace any more; but not a namespace made
                // again under that name, which is not ours.
                if c.netns.exists() && !c.netns_replaced() {
                    // The links first, waiting for the kernel (as Docker's
                    // driver deletes its links): with the namespace, they
                    // would go in the background, after `stop` returned.
                    if c.netns_alive() {
                        endpoint::delete_links(
                            &c.name,
                            c.endpoints.values(),
                            &ns,
                            endpoint::LINK_DELETE_TIMEOUT,
                        )?;
                    }
                    netns::delete(name)?;
                }
            }
        } else if c.netns_alive() {
            endpoint::delete_links(
                &c.name,
                c.endpoints.values(),
                &ns,
                endpoint::LINK_DELETE_TIMEOUT,
            )?;
        }
        for ep in c.endpoints.values() {
            self.release_endpoint(ep);
        }
        Ok(())
    }

    /// `mvnet container rm`: removes a stopped container (running ones with
    /// `force`).
    pub fn remove_container(&mut self, key: &str, force: bool) -> Result<String> {
        let c = self.container(key)?.clone();
        super::foreign::refuse_foreign_container(&c, "remove")?;
        if c.running && !force {
            bail!("container {} is running; stop it first with `mvnet container stop {}` or use --force", c.name, c.name);
        }
        self.begin(Intent::Remove {
            container_id: c.id.clone(),
        })?;
        self.remove_apply(&c.id).map_err(|e| self.fail(e))
    }

    pub(super) fn remove_apply(&mut self, id: &str) -> Result<String> {
        let c = self.state.containers[id].clone();
        self.end_processes(&c)?;
        self.teardown_network(&c)?;
        self.state.containers.remove(&c.id);
        self.commit()?;
        self.remove_log(&c.id);
        Ok(c.name)
    }

    /// `mvnet network connect`: attaches a container (ours, or an existing
    /// namespace given by path) to another network.
    pub fn connect(
        &mut self,
        network: &str,
        container: Option<&str>,
        netns_path: Option<PathBuf>,
        req: AddressRequest,
    ) -> Result<String> {
        let net_id = self.network(network)?.id.clone();
        super::foreign::refuse_foreign_network(
            &self.state.networks[&net_id],
            "connect containers to",
        )?;
        let (cid, new) = match (container, netns_path) {
            (Some(key), None) => {
                super::foreign::refuse_foreign_container(self.container(key)?, "connect")?;
                (self.container(key)?.id.clone(), None)
            }
            (name, Some(path)) => {
                if !path.exists() {
                    bail!("network namespace {} not found; give a path such as /proc/PID/ns/net or /run/netns/NAME", path.display());
                }
                if !netns::is_network_namespace(&path).unwrap_or(false) {
                    bail!("{} is not a network namespace; give a path such as /proc/PID/ns/net or /run/netns/NAME", path.display());
                }
                if let Some(id) = self.state.containers.id_by_netns(&path) {
                    (id.to_owned(), None)
                } else {
                    let id = model::new_id();
                    let name = name
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("netns-{}", &id[..12]));
                    model::validate_name("container", &name).map_err(|e| anyhow!(e))?;
                    if self.state.containers.id_by_name(&name).is_some() {
                        bail!("container name {name} is already in use; pick another --name");
                    }
                    let c = Container {
                        id: id.clone(),
                        name,
                        created: model::now_rfc3339(),
                        netns_inode: netns::inode(&path),
                        netns: path,
                        netns_owned: false,
                        auto_remove: true,
                        command: Vec::new(),
                        pid: None,
                        running: true,
                        ..Default::default()
                    };
                    (id, Some(c))
                }
            }
            (None, None) => bail!("network connect needs a container name or --netns PATH"),
        };
        let existing = new
            .as_ref()
            .or_else(|| self.state.containers.get(&cid))
            .expect("exists")
            .clone();
        if existing.endpoints.contains_key(&net_id) {
            bail!(
                "container {} is already connected to network {}",
                existing.name,
                network
            );
        }
        if !existing.netns_alive() {
            bail!(
                "container {} is not running (its namespace is gone); start a new one with `mvnet run`",
                existing.name
            );
        }
        // Past the highest ethN in use, as Docker's sandbox counts: after a
        // disconnect, the count of endpoints can name a link that exists.
        let next = existing
            .endpoints
            .values()
            .filter_map(|e| e.ifname.strip_prefix("eth")?.parse::<u32>().ok())
            .max()
            .map_or(0, |n| n + 1);
        let ifname = format!("eth{next}");
        let ep = self.allocate_endpoint(&net_id, &req, &ifname)?;
        if let Err(e) = self.begin(Intent::Connect {
            container_id: cid.clone(),
            netns: existing.netns.clone(),
            endpoint: ep.clone(),
        }) {
            self.release_endpoint(&ep);
            return Err(e);
        }
        let connected = (|| -> Result<String> {
            let ns = NetNs::from_path(&existing.netns);
            let net = &self.state.networks[&net_id];
            self.datapath_add(net, &ep)?;
            endpoint::plumb(net, &ep, &ns)?;
            let mut c = existing;
            // docker/cli's `network connect` always sends an IPAMConfig:
            // `{}` without --ip/--ip6.
            let asked = model::IpamConfig {
                ipv4: req.ip,
                ipv6: req.ip6,
            };
            c.ipam_config.insert(net_id.clone(), asked);
            c.driver_opts.insert(net_id.clone(), Default::default());
            c.endpoints.insert(net_id, ep.clone());
            self.route_via_gateway_endpoint(&c)?;
            let name = c.name.clone();
            self.state.containers.insert(cid.clone(), c);
            self.commit()?;
            Ok(name)
        })();
        connected.map_err(|e| self.fail(e))
    }

    /// `mvnet network disconnect`: removes the container's endpoint on a
    /// network; a namespace attached with --netns is forgotten once it has
    /// no endpoint left.
    pub fn disconnect(&mut self, network: &str, container: &str) -> Result<String> {
        let net_id = self.network(network)?.id.clone();
        let key = match self.container(container) {
            Ok(c) => c.id.clone(),
            Err(e) => {
                let path = PathBuf::from(container);
                self.state
                    .containers
                    .id_by_netns(&path)
                    .map(str::to_owned)
                    .ok_or(e)?
            }
        };
        let c = &self.state.containers[&key];
        super::foreign::refuse_foreign_container(c, "disconnect")?;
        if !c.endpoints.contains_key(&net_id) {
            bail!("container {} is not connected to network {network}", c.name);
        }
        self.begin(Intent::Disconnect {
            container_id: key.clone(),
            network_id: net_id.clone(),
        })?;
        self.disconnect_apply(&net_id, &key)
            .map_err(|e| self.fail(e))
    }

    pub(super) fn disconnect_apply(&mut self, net_id: &str, key: &str) -> Result<String> {
        let c = self.state.containers[key].clone();
        let ep = c.endpoints[net_id].clone();
        if c.netns_alive() {
            // Waiting for the kernel, as stop and rm do: a passthru
            // endpoint can then be made on the parent at once.
            let ns = NetNs::from_path(&c.netns);
            endpoint::delete_links(&c.name, [&ep], &ns, endpoint::LINK_DELETE_TIMEOUT)?;
        }
        self.release_endpoint(&ep);
        let stored = self.state.containers.get_mut(key).expect("exists");
        stored.endpoints.remove(net_id);
        stored.ipam_config.remove(net_id);
        stored.driver_opts.remove(net_id);
        if !stored.netns_owned && stored.endpoints.is_empty() {
            self.state.containers.remove(key);
        } else {
            let c = stored.clone();
            self.route_via_gateway_endpoint(&c)?;
        }
        self.commit()?;
        Ok(c.name)
    }
}

/// A container's command that could not be started, with the exit code
/// Docker (and a shell) gives it: 127 when it is not found, 126 when it
/// cannot be executed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CommandNotStarted {
    /// 126 or 127.
    pub code: i32,
    message: String,
}

impl CommandNotStarted {
    /// Classifies `spawn`'s error for `program`; None for an error that is
    /// not about the program itself (e.g. out of memory).
    fn from_spawn(program: &str, e: &std::io::Error) -> Option<CommandNotStarted> {
        let searched = !program.contains('/');
        let (code, message) = match e.raw_os_error()? {
            libc::ENOENT if searched => (
                127,
                format!(
                    "executable file {program:?} not found in $PATH on the host; mvnet has no \
                     images: it runs host programs in the container's network namespace. \
                     Install it, or give its full path"
                ),
            ),
            libc::ENOENT | libc::ENOTDIR => (
                127,
                format!(
                    "{program:?}: no such file or directory on the host (mvnet runs host \
                     programs in the container's network namespace); check the path"
                ),
            ),
            libc::EACCES | libc::EPERM => (
                126,
                format!(
                    "{program:?} cannot be executed: permission denied (a directory, or a file \
                     without execute permission); give a program, or make it executable \
                     with `chmod +x`"
                ),
            ),
            libc::ENOEXEC => (
                126,
                format!(
                    "{program:?} cannot be executed: exec format error (not a binary for this \
                     machine, or a script without a #! line)"
                ),
            ),
            _ => return None,
        };
        Some(CommandNotStarted { code, message })
    }
}

/// The exit code Docker's CLI gives when the container's command could
/// not be started (127 or 126), if that is what `error` is about.
pub fn not_started_code(error: &anyhow::Error) -> Option<i32> {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<CommandNotStarted>())
        .map(|c| c.code)
}

/// Starts `command` inside `ns`: detached (new session, output to `log`) or
/// in the foreground (inheriting stdio), with a private mount namespace
/// whose /sys shows the container's links. A program that is missing or
/// not executable is a [`CommandNotStarted`].
pub(super) fn spawn_in(
    ns: &NetNs,
    command: &[String],
    log: Option<File>,
) -> Result<std::process::Child> {
    let command = command.to_vec();
    ns.run(move || -> Result<std::process::Child> {
        // The command inherits this thread's namespaces: a /sys of the
        // container's network namespace, as `ip netns exec` gives.
        crate::sys::mount::private_sysfs()
            .context("mounting a sysfs of the container's network namespace on /sys")?;
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..]);
        if let Some(out) = log {
            cmd.stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            crate::sys::process::new_session_on_exec(&mut cmd);
        }
        cmd.spawn()
            .map_err(|e| match CommandNotStarted::from_spawn(&command[0], &e) {
                Some(not_started) => anyhow!(not_started),
                None => anyhow!(e).context(format!("starting {:?} in the container", command[0])),
            })
    })?
}

/// Runs `command` inside the container's namespace with inherited stdio and
/// returns its exit code (`mvnet exec`).
pub fn exec(c: &Container, command: &[String]) -> Result<i32> {
    if command.is_empty() {
        bail!(
            "exec needs a command, e.g. `mvnet exec {} ip addr show eth0`",
            c.name
        );
    }
    if !c.netns.exists() {
        bail!(
            "container {} is not running (its namespace is gone); start a new one with `mvnet run`",
            c.name
        );
    }
    let ns = NetNs::from_path(&c.netns);
    let mut child = spawn_in(&ns, command, None)?;
    let status = child.wait()?;
    Ok(exit_code(status))
}

/// A command's exit code as a shell gives it: 128 + the signal that ended
/// it (143 for SIGTERM), as Docker does.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(libc::SIGKILL))
}

pub(super) fn kill_gracefully(pid: u32, grace: Duration) {
    let pid = pid as libc::pid_t;
    use crate::sys::process;
    let _ = process::kill(pid, libc::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < grace {
        // Reap if it is our child; harmless otherwise.
        process::reap_nohang(pid);
        if !process::exists(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = process::kill(pid, libc::SIGKILL);
}

/// The name of container `id`'s log file in the state directory.
pub fn log_name(id: &str) -> String {
    format!("{id}.log")
}
