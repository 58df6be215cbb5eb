//! `start` of a stopped container, and `network prune` / `container prune`.
use anyhow::{bail, Context as _, Result};

use super::{
    container::{log_name, spawn_in, AddressRequest},
    endpoint, Controller,
};
use crate::{
    model::{Container, Endpoint, Intent},
    netns,
};

impl Controller {
    /// `mvnet start`: re-creates a stopped container's namespace and
    /// endpoints (asking for the same addresses and MAC; other ones when
    /// those were taken meanwhile) and restarts its recorded command in
    /// the background, its output appended to its log. A running
    /// container is left as it is, as `docker start` does.
    pub fn start(&mut self, key: &str) -> Result<String> {
        let c = self.container(key)?.clone();
        if c.running {
            return Ok(c.name);
        }
        if !c.netns_owned {
            bail!("container {} was a namespace attached with --netns; it cannot be started, attach it again with `mvnet network connect --netns`", c.name);
        }
        for net_id in c.stopped_endpoints.keys() {
            if !self.state.networks.contains_key(net_id.as_str()) {
                bail!("container {}'s network {} was removed; remove the container with `mvnet rm {}` and run a new one", c.name, &net_id[..12], c.name);
            }
        }
        if netns::is_named(&c.name) {
            bail!("a network namespace named {} already exists; remove it with `ip netns delete {}`, then start the container again", c.name, c.name);
        }
        let name = c.name.clone();
        // Addresses and MACs first (reserved in the pools by the intent's
        // save, as `run` does): the same as before where still free.
        let mut made: Vec<Endpoint> = Vec::new();
        for (net_id, old) in &c.stopped_endpoints {
            let same = AddressRequest {
                ip: old.ipv4,
                ip6: old.ipv6,
                mac: Some(old.mac),
            };
            let asked = c.ipam_config.get(net_id.as_str());
            let ep = self
                .allocate_endpoint(net_id, &same, &old.ifname)
                .or_else(|_| {
                    // Taken meanwhile: what --ip/--ip6 asked for, else any.
                    let req = AddressRequest {
                        ip: asked.and_then(|a| a.ipv4),
                        ip6: asked.and_then(|a| a.ipv6),
                        mac: None,
                    };
                    self.allocate_endpoint(net_id, &req, &old.ifname)
                });
            match ep {
                Ok(ep) => made.push(ep),
                Err(e) => {
                    for ep in &made {
                        self.release_endpoint(ep);
                    }
                    return Err(e.context(format!("starting container {name}")));
                }
            }
        }
        let mut started = c.clone();
        started.running = true;
        started.pid = None;
        started.netns = std::path::Path::new(netns::NETNS_RUN_DIR).join(&name);
        started.netns_inode = None;
        started.endpoints = made
            .iter()
            .map(|e| (e.network_id.clone(), e.clone()))
            .collect();
        started.stopped_endpoints.clear();
        if let Err(e) = self.begin(Intent::Start {
            container: started.clone(),
        }) {
            for ep in &made {
                self.release_endpoint(ep);
            }
            return Err(e.context(format!("starting container {name}")));
        }
        self.start_apply(started)
            .map_err(|e| self.fail(e))
            .with_context(|| format!("starting container {name}"))?;
        Ok(name)
    }

    /// The kernel side of `start`, after its intent: the namespace, its
    /// endpoints (into the classifier before their links go up), then the
    /// command, in the background with its output appended to its log.
    fn start_apply(&mut self, mut c: Container) -> Result<()> {
        let ns = netns::create(&c.name)?;
        c.netns_inode = netns::inode(ns.path());
        let ipv6 = c
            .endpoints
            .keys()
            .any(|id| self.state.networks[id.as_str()].enable_ipv6);
        endpoint::loopback_up(&ns, ipv6)?;
        for ep in c.endpoints.values() {
            let net = &self.state.networks[&ep.network_id];
            self.datapath_add(net, ep)?;
            endpoint::plumb(net, ep, &ns)?;
        }
        self.route_via_gateway_endpoint(&c)?;
        if !c.command.is_empty() {
            let log = self.state_files()?.append_log(&log_name(&c.id))?;
            c.pid = Some(spawn_in(&ns, &c.command, Some(log))?.id());
        }
        self.state.containers.insert(c.id.clone(), c);
        self.commit()
    }

    /// Names of the networks no container has an endpoint on (Docker's
    /// "unused" networks) that `keep` accepts, sorted.
    pub fn unused_networks(&self, keep: impl Fn(&crate::model::Network) -> bool) -> Vec<String> {
        let mut names: Vec<String> = self
            .state
            .networks
            .values()
            .filter(|n| self.state.containers.on_network(&n.id).next().is_none())
            .filter(|n| !n.owner.is_foreign() && keep(n))
            .map(|n| n.name.clone())
            .collect();
        names.sort();
        names
    }
}
