//! `start` of a stopped container, and `network prune` / `container prune`.
use anyhow::{bail, Result};

use super::{
    container::{kill_gracefully, log_name, spawn_in, AddressRequest},
    endpoint, Controller,
};
use crate::{model::Endpoint, netns};

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
        if self.state.teardowns.contains_key(&c.id) {
            bail!("container {} has an unfinished teardown; finish it with `mvnet container stop {}` first", c.name, c.name);
        }
        for net_id in c.stopped_endpoints.keys() {
            if !self.state.networks.contains_key(net_id) {
                bail!("container {}'s network {} was removed; remove the container with `mvnet rm {}` and run a new one", c.name, &net_id[..12], c.name);
            }
        }
        let name = c.name.clone();
        let mut made: Vec<Endpoint> = Vec::new();
        let undo = |ctl: &mut Controller, made: &[Endpoint]| {
            let _ = netns::delete(&name);
            for ep in made {
                ctl.release_endpoint(ep);
            }
        };
        let ns = netns::create(&name)?;
        for (net_id, old) in &c.stopped_endpoints {
            let same = AddressRequest {
                ip: old.ipv4,
                ip6: old.ipv6,
                mac: Some(old.mac),
            };
            let asked = c.ipam_config.get(net_id);
            let ep = match self.allocate_endpoint(net_id, &same, &old.ifname) {
                Ok(ep) => ep,
                // Taken meanwhile: what --ip/--ip6 asked for, else any.
                Err(_) => {
                    let req = AddressRequest {
                        ip: asked.and_then(|a| a.ipv4),
                        ip6: asked.and_then(|a| a.ipv6),
                        mac: None,
                    };
                    match self.allocate_endpoint(net_id, &req, &old.ifname) {
                        Ok(ep) => ep,
                        Err(e) => {
                            undo(self, &made);
                            return Err(e.context(format!("starting container {name}")));
                        }
                    }
                }
            };
            let net = &self.state.networks[net_id];
            let plumbed = self
                .datapath_add(net, &ep)
                .and_then(|()| endpoint::plumb(net, &ep, &ns));
            made.push(ep);
            if let Err(e) = plumbed {
                undo(self, &made);
                return Err(e.context(format!("starting container {name}")));
            }
        }
        let mut pid = None;
        if !c.command.is_empty() {
            let spawned = self
                .state_files()
                .append_log(&log_name(&c.id))
                .map_err(anyhow::Error::from)
                .and_then(|log| spawn_in(&ns, &c.command, Some(log)));
            match spawned {
                Ok(child) => pid = Some(child.id()),
                Err(e) => {
                    undo(self, &made);
                    return Err(e.context(format!("starting container {name}")));
                }
            }
        }
        let stored = self.state.containers.get_mut(&c.id).expect("exists");
        stored.running = true;
        stored.pid = pid;
        stored.netns = ns.path().to_owned();
        stored.endpoints = made
            .iter()
            .map(|e| (e.network_id.clone(), e.clone()))
            .collect();
        stored.stopped_endpoints.clear();
        if let Err(e) = self.save() {
            let stored = self.state.containers.get_mut(&c.id).expect("exists");
            *stored = c.clone();
            if let Some(pid) = pid {
                kill_gracefully(pid, std::time::Duration::from_secs(10));
            }
            undo(self, &made);
            return Err(e.context(format!(
                "saving container {name} after its start; it was stopped again"
            )));
        }
        Ok(name)
    }

    /// Names of the networks no container has an endpoint on (Docker's
    /// "unused" networks) that `keep` accepts, sorted.
    pub fn unused_networks(&self, keep: impl Fn(&crate::model::Network) -> bool) -> Vec<String> {
        let mut names: Vec<String> = self
            .state
            .networks
            .values()
            .filter(|n| {
                !self
                    .state
                    .containers
                    .values()
                    .any(|c| c.endpoints.contains_key(&n.id))
            })
            .filter(|n| keep(n))
            .map(|n| n.name.clone())
            .collect();
        names.sort();
        names
    }
}
