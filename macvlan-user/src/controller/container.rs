//! Containers: a network namespace with one endpoint per network, and
//! optionally a process started in it. `run`, `stop`, `rm`, `exec`,
//! `network connect` and `network disconnect`.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use super::{endpoint, Controller};
use crate::{
    ipam,
    model::{self, Container, Endpoint, Network},
    netns::{self, NetNs},
};

/// Addresses asked for on one network.
#[derive(Clone, Debug, Default)]
pub struct AddressRequest {
    pub ip: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Addr>,
    pub mac: Option<[u8; 6]>,
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
    fn allocate_endpoint(
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
        let (ipv4, ipv6) = net
            .allocate_addresses(req.ip, req.ip6)
            .map_err(|e| anyhow!("{e}"))?;
        let release = |net: &mut Network| {
            net.release(ipv4.map(IpAddr::V4).into_iter().chain(ipv6.map(IpAddr::V6)))
        };
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
                "MAC address {} is already in use on this network by container {other}; pick another --mac-address",
                crate::lab::frames::format_mac(&mac)
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
            if let Err(e) = endpoint::loopback_up(&ns, net.enable_ipv6)
                .and_then(|()| endpoint::plumb(net, &ep, &ns))
            {
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
        };
        let mut foreground = None;
        if !spec.command.is_empty() {
            let log = self.state_dir().join(format!("{id}.log"));
            match spawn_in(&ns, &spec.command, spec.detach.then_some(log)) {
                Ok(child) => {
                    container.pid = Some(child.id());
                    if !spec.detach {
                        foreground = Some(child);
                    }
                }
                Err(e) => {
                    let _ = netns::delete(&name);
                    self.release_endpoint(&ep);
                    return Err(e);
                }
            }
        }
        self.state.containers.insert(id.clone(), container);
        if let Err(e) = self.save() {
            self.state.containers.remove(&id);
            let _ = netns::delete(&name);
            self.release_endpoint(&ep);
            return Err(e);
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
        if let Some(pid) = c.pid {
            kill_gracefully(pid, Duration::from_secs(10));
        }
        self.teardown_network(&c)?;
        let stored = self.state.containers.get_mut(&c.id).expect("exists");
        stored.running = false;
        stored.pid = None;
        stored.endpoints.clear();
        if c.auto_remove {
            self.state.containers.remove(&c.id);
        }
        self.save()?;
        Ok(c.name)
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
        if c.running && !force {
            bail!("container {} is running; stop it first with `mvnet container stop {}` or use --force", c.name, c.name);
        }
        if let Some(pid) = c.pid {
            kill_gracefully(pid, Duration::from_secs(10));
        }
        self.teardown_network(&c)?;
        self.state.containers.remove(&c.id);
        self.save()?;
        let _ = std::fs::remove_file(self.state_dir().join(format!("{}.log", c.id)));
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
                        endpoints: Default::default(),
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
        let ns = NetNs::from_path(&existing.netns);
        let added = self.datapath_add(&self.state.networks[&net_id], &ep);
        if let Err(e) =
            added.and_then(|()| endpoint::plumb(&self.state.networks[&net_id], &ep, &ns))
        {
            self.release_endpoint(&ep);
            return Err(e);
        }
        let mut c = existing;
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
            return Err(e);
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
        let Some(ep) = c.endpoints.get(&net_id).cloned() else {
            bail!("container {} is not connected to network {network}", c.name);
        };
        let ns = NetNs::from_path(&c.netns);
        if c.netns.exists() {
            endpoint::unplumb_detached(&ep, &ns)?;
        }
        self.release_endpoint(&ep);
        let stored = self.state.containers.get_mut(&key).expect("exists");
        stored.endpoints.remove(&net_id);
        if !stored.netns_owned && stored.endpoints.is_empty() {
            self.state.containers.remove(&key);
        }
        self.save()?;
        Ok(c.name)
    }
}

/// Starts `command` inside `ns`: detached (new session, output to `log`) or
/// in the foreground (inheriting stdio).
fn spawn_in(ns: &NetNs, command: &[String], log: Option<PathBuf>) -> Result<std::process::Child> {
    let command = command.to_vec();
    ns.run(move || -> Result<std::process::Child> {
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..]);
        if let Some(log) = log {
            let out = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
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

fn kill_gracefully(pid: u32, grace: Duration) {
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
