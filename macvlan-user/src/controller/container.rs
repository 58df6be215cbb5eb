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
    model::{self, Container, Endpoint, Mac, Network, Teardown},
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
        let net = self.state.networks.get_mut(net_id).expect("network exists");
        if req.ip6.is_some() && !net.enable_ipv6 {
            bail!("--ip6 given, but network {} has no IPv6 (create it with --ipv6 and an IPv6 --subnet)", net.name);
        }
        if req.ip.is_some() && !net.pools.iter().any(|p| p.config.subnet.is_ipv4()) {
            bail!("--ip given, but network {} has no IPv4 subnet", net.name);
        }
        let mut ipv4 = None;
        let mut ipv6 = None;
        let mut result = Ok(());
        for pool in net.pools.iter_mut() {
            if pool.config.subnet.is_ipv4() {
                match pool.allocate(req.ip.map(IpAddr::V4)) {
                    Ok(IpAddr::V4(a)) => ipv4 = Some(a),
                    Ok(_) => unreachable!("v4 pool"),
                    Err(e) => {
                        result = Err(anyhow!("{e}"));
                        break;
                    }
                }
            } else if net.enable_ipv6 {
                match pool.allocate(req.ip6.map(IpAddr::V6)) {
                    Ok(IpAddr::V6(a)) => ipv6 = Some(a),
                    Ok(_) => unreachable!("v6 pool"),
                    Err(e) => {
                        result = Err(anyhow!("{e}"));
                        break;
                    }
                }
            }
        }
        let release = |net: &mut Network| {
            net.release(ipv4.map(IpAddr::V4).into_iter().chain(ipv6.map(IpAddr::V6)))
        };
        if let Err(e) = result {
            release(net);
            return Err(e);
        }
        let mac = match req.mac {
            Some(mac) => {
                if let Err(e) = ipam::validate_mac(mac) {
                    release(net);
                    bail!("{e}");
                }
                mac
            }
            None => match ipv4 {
                Some(a) => ipam::mac_for_ipv4(a),
                None => ipam::random_mac(),
            },
        };
        let net_id = net.id.clone();
        let dup = self.state.containers.values().find_map(|c| {
            c.endpoints
                .values()
                .find(|e| e.network_id == net_id && e.mac == mac)
                .map(|_| c.name.clone())
        });
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
        Ok(Endpoint {
            id: model::new_id(),
            network_id: net_id,
            ifname: ifname.to_owned(),
            mac,
            ipv4,
            ipv6,
        })
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

    /// `mvnet run`. On any error nothing is left behind.
    pub fn run(&mut self, spec: RunSpec) -> Result<RunOutcome> {
        let net_id = self.network(&spec.network)?.id.clone();
        let id = model::new_id();
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| format!("mvnet-{}", &id[..12]));
        model::validate_name("container", &name).map_err(|e| anyhow!(e))?;
        if self.state.containers.values().any(|c| c.name == name) {
            bail!("container name {name} is already in use; remove it with `mvnet container rm {name}` or pick another --name");
        }
        if netns::list().contains(&name) {
            bail!("a network namespace named {name} already exists; pick another --name or remove it with `ip netns delete {name}`");
        }
        let ep = self.allocate_endpoint(&net_id, &spec.addresses, "eth0")?;
        let built = (|| -> Result<NetNs> {
            let net = &self.state.networks[&net_id];
            // Into the classifier's table before the link goes up.
            self.datapath_add(net, &ep)?;
            let ns = netns::create(&name)?;
            if let Err(e) = endpoint::plumb(net, &ep, &ns) {
                let _ = netns::delete(&name);
                return Err(e);
            }
            Ok(ns)
        })();
        let ns = match built {
            Ok(ns) => ns,
            Err(e) => {
                self.release_endpoint(&ep);
                return Err(e);
            }
        };
        let mut container = Container {
            id: id.clone(),
            name: name.clone(),
            created: model::now_rfc3339(),
            netns: ns.path().to_owned(),
            netns_owned: true,
            auto_remove: spec.auto_remove,
            command: spec.command.clone(),
            pid: None,
            running: true,
            endpoints: [(net_id.clone(), ep.clone())].into(),
            labels: spec.labels.clone(),
            ipam_config: requested_ipam(&net_id, &spec.addresses),
            stopped_endpoints: Default::default(),
        };
        let mut foreground = None;
        if !spec.command.is_empty() {
            let log = match spec.detach {
                true => self.state_files().create_log(&log_name(&id)).map(Some),
                false => Ok(None),
            };
            match log
                .map_err(anyhow::Error::from)
                .and_then(|log| spawn_in(&ns, &spec.command, log))
            {
                Ok(child) => {
                    container.pid = Some(child.id());
                    if !spec.detach {
                        foreground = Some(child);
                    }
                }
                Err(e) => {
                    let _ = self.state_files().remove(&log_name(&id));
                    let _ = netns::delete(&name);
                    self.release_endpoint(&ep);
                    return Err(e);
                }
            }
        }
        let pid = container.pid;
        self.state.containers.insert(id.clone(), container);
        if let Err(e) = self.save() {
            self.state.containers.remove(&id);
            if let Some(pid) = pid {
                kill_gracefully(pid, Duration::from_secs(10));
            }
            let _ = self.state_files().remove(&log_name(&id));
            let _ = netns::delete(&name);
            self.release_endpoint(&ep);
            return Err(e.context(format!(
                "saving container {name}; it was removed again (namespace, endpoint and process)"
            )));
        }
        match foreground {
            None => Ok(RunOutcome::Started(id)),
            Some(mut child) => {
                let status = child
                    .wait()
                    .context("waiting for the container's command")?;
                let code = status.code().unwrap_or(128 + 9);
                if let Some(c) = self.state.containers.get_mut(&id) {
                    c.running = false;
                    c.pid = None;
                }
                self.save()?;
                if spec.auto_remove {
                    self.remove_container(&id, true)?;
                }
                Ok(RunOutcome::Exited(code))
            }
        }
    }

    /// `mvnet container stop`: ends the process, tears the network down and
    /// releases the addresses; with `--rm` at run, removes the container.
    pub fn stop(&mut self, key: &str) -> Result<String> {
        let c = self.container(key)?.clone();
        self.record_teardown(&c, Teardown::Stop)?;
        self.finish_stop(&c)?;
        self.save_after_teardown(&c, "stop", &format!("mvnet container stop {}", c.name))?;
        Ok(c.name)
    }

    /// Saves the state once a teardown is done in the kernel; when that
    /// fails, the state on disk still records the teardown as under way.
    fn save_after_teardown(&self, c: &Container, what: &str, retry: &str) -> Result<()> {
        self.save().with_context(|| {
            format!(
                "the {what} of container {} is done in the kernel, but saving the state failed, so it still records the {what} as under way; once the disk has space, `{retry}` or `mvnet restore` finishes it",
                c.name
            )
        })
    }

    /// Ends the process and tears the network down, then updates the state
    /// (not saved): stopped, or gone with `--rm` (its log too).
    pub(super) fn finish_stop(&mut self, c: &Container) -> Result<()> {
        if let Some(pid) = c.pid {
            kill_gracefully(pid, Duration::from_secs(10));
        }
        self.teardown_network(c)?;
        let stored = self.state.containers.get_mut(&c.id).expect("exists");
        stored.running = false;
        stored.pid = None;
        // Kept for inspect and `start`; a second stop keeps the first's.
        if !stored.endpoints.is_empty() {
            stored.stopped_endpoints = std::mem::take(&mut stored.endpoints);
        }
        self.state.teardowns.remove(&c.id);
        if c.auto_remove {
            self.state.containers.remove(&c.id);
            self.remove_log(&c.id);
        }
        Ok(())
    }

    /// Saves that `teardown` of `c` is about to start, before it touches
    /// the kernel: when that save fails (a full disk), nothing was changed,
    /// and when a later one fails, the state says what was under way.
    fn record_teardown(&mut self, c: &Container, teardown: Teardown) -> Result<()> {
        let in_kernel = c.running || c.pid.is_some() || !c.endpoints.is_empty();
        if !in_kernel || self.state.teardowns.get(&c.id) == Some(&teardown) {
            return Ok(());
        }
        let previous = self.state.teardowns.insert(c.id.clone(), teardown);
        if let Err(e) = self.save() {
            match previous {
                Some(p) => self.state.teardowns.insert(c.id.clone(), p),
                None => self.state.teardowns.remove(&c.id),
            };
            return Err(e.context(format!(
                "recording the teardown of container {} before it starts; nothing was changed",
                c.name
            )));
        }
        Ok(())
    }

    /// Removes a container's log file; a failure is reported, not fatal
    /// (the container is gone from the state by then).
    fn remove_log(&self, id: &str) {
        if let Err(e) = self.state_files().remove(&log_name(id)) {
            eprintln!("mvnet: warning: {e}");
        }
    }

    fn teardown_network(&mut self, c: &Container) -> Result<()> {
        let ns = NetNs::from_path(&c.netns);
        if c.netns_owned {
            if let Some(name) = ns.name() {
                if c.netns.exists() {
                    // The kernel destroys the namespace's links in the
                    // background; `endpoint::plumb` waits for a MAC still
                    // taken by one of them.
                    netns::delete(name)?;
                }
            }
        } else if c.netns.exists() {
            for ep in c.endpoints.values() {
                endpoint::unplumb_detached(ep, &ns)?;
            }
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
        // A stop or rm whose last save failed is finished here.
        let stopping = matches!(
            self.state.teardowns.get(&c.id),
            Some(Teardown::Stop | Teardown::Remove)
        );
        if c.running && !force && !stopping {
            bail!("container {} is running; stop it first with `mvnet container stop {}` or use --force", c.name, c.name);
        }
        self.record_teardown(&c, Teardown::Remove)?;
        self.finish_remove(&c)?;
        self.save_after_teardown(&c, "removal", &format!("mvnet container rm {}", c.name))?;
        self.remove_log(&c.id);
        Ok(c.name)
    }

    /// Ends the process, tears the network down and takes the container out
    /// of the state (not saved).
    pub(super) fn finish_remove(&mut self, c: &Container) -> Result<()> {
        if let Some(pid) = c.pid {
            kill_gracefully(pid, Duration::from_secs(10));
        }
        self.teardown_network(c)?;
        self.state.containers.remove(&c.id);
        self.state.teardowns.remove(&c.id);
        Ok(())
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
        let (cid, new) = match (container, netns_path) {
            (Some(key), None) => (self.container(key)?.id.clone(), None),
            (name, Some(path)) => {
                if !path.exists() {
                    bail!("network namespace {} not found; give a path such as /proc/PID/ns/net or /run/netns/NAME", path.display());
                }
                if let Some(c) = self.state.containers.values().find(|c| c.netns == path) {
                    (c.id.clone(), None)
                } else {
                    let id = model::new_id();
                    let name = name
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("netns-{}", &id[..12]));
                    model::validate_name("container", &name).map_err(|e| anyhow!(e))?;
                    if self.state.containers.values().any(|c| c.name == name) {
                        bail!("container name {name} is already in use; pick another --name");
                    }
                    let c = Container {
                        id: id.clone(),
                        name,
                        created: model::now_rfc3339(),
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
        let ifname = format!("eth{}", existing.endpoints.len());
        let ep = self.allocate_endpoint(&net_id, &req, &ifname)?;
        let ns = NetNs::from_path(&existing.netns);
        let added = self.datapath_add(&self.state.networks[&net_id], &ep);
        if let Err(e) =
            added.and_then(|()| endpoint::plumb(&self.state.networks[&net_id], &ep, &ns))
        {
            self.release_endpoint(&ep);
            return Err(e);
        }
        let mut c = existing;
        c.ipam_config.extend(requested_ipam(&net_id, &req));
        c.endpoints.insert(net_id, ep.clone());
        let name = c.name.clone();
        let previous = self.state.containers.insert(cid.clone(), c);
        if let Err(e) = self.save() {
            match previous {
                Some(p) => self.state.containers.insert(cid, p),
                None => self.state.containers.remove(&cid),
            };
            let _ = endpoint::unplumb(&ep, &ns);
            self.release_endpoint(&ep);
            return Err(e.context(format!(
                "saving the connection of {name} to network {network}; it was undone"
            )));
        }
        Ok(name)
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
                    .values()
                    .find(|c| c.netns == path)
                    .map(|c| c.id.clone())
                    .ok_or(e)?
            }
        };
        let c = self.state.containers[&key].clone();
        if !c.endpoints.contains_key(&net_id) {
            bail!("container {} is not connected to network {network}", c.name);
        }
        let teardown = Teardown::Disconnect {
            network_id: net_id.clone(),
        };
        if let Some(other) = self.state.teardowns.get(&key).filter(|t| **t != teardown) {
            bail!(
                "container {} has an unfinished {} (a save failed); finish it with `mvnet restore` first",
                c.name,
                match other {
                    Teardown::Stop => "stop",
                    Teardown::Remove => "removal",
                    Teardown::Disconnect { .. } => "disconnect",
                }
            );
        }
        self.record_teardown(&c, teardown)?;
        self.finish_disconnect(&key, &net_id)?;
        self.save_after_teardown(
            &c,
            "disconnect",
            &format!("mvnet network disconnect {network} {}", c.name),
        )?;
        Ok(c.name)
    }

    /// Removes container `key`'s endpoint on network `net_id` from the
    /// kernel, then from the state (not saved); a namespace attached with
    /// --netns is forgotten once it has no endpoint left.
    pub(super) fn finish_disconnect(&mut self, key: &str, net_id: &str) -> Result<()> {
        let c = self.state.containers[key].clone();
        if let Some(ep) = c.endpoints.get(net_id) {
            let ns = NetNs::from_path(&c.netns);
            if c.netns.exists() {
                endpoint::unplumb_detached(ep, &ns)?;
            }
            self.release_endpoint(ep);
        }
        let stored = self.state.containers.get_mut(key).expect("exists");
        stored.endpoints.remove(net_id);
        stored.ipam_config.remove(net_id);
        self.state.teardowns.remove(key);
        if !stored.netns_owned && stored.endpoints.is_empty() {
            self.state.containers.remove(key);
        }
        Ok(())
    }
}

/// Starts `command` inside `ns`: detached (new session, output to `log`) or
/// in the foreground (inheriting stdio).
pub(super) fn spawn_in(
    ns: &NetNs,
    command: &[String],
    log: Option<File>,
) -> Result<std::process::Child> {
    let command = command.to_vec();
    ns.run(move || -> Result<std::process::Child> {
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..]);
        if let Some(out) = log {
            cmd.stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            // SAFETY: setsid is async-signal-safe.
            unsafe {
                use std::os::unix::process::CommandExt as _;
                cmd.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
        }
        cmd.spawn().with_context(|| {
            format!(
                "starting {:?} in the container; is it installed on the host?",
                command[0]
            )
        })
    })?
}

/// The name of container `id`'s log file in the state directory.
pub fn log_name(id: &str) -> String {
    format!("{id}.log")
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
    Ok(status.code().unwrap_or(128 + 9))
}

pub(super) fn kill_gracefully(pid: u32, grace: Duration) {
    let pid = pid as libc::pid_t;
    // SAFETY: plain signal syscalls.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    while start.elapsed() < grace {
        // Reap if it is our child; harmless otherwise.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        if unsafe { libc::kill(pid, 0) } != 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(pid, libc::SIGKILL) };
}
